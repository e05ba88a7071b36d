//! Delivery to the app: headers and body, how answers are read, retries, dead letters, routes.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{RunningSidecar, TempDir, TestApp, redis, redis_component, sidecar_config, unique};

/// Retries every 10 ms, at most `max_retries` times, for deliveries from `pubsub`.
fn inbound_retries(max_retries: u32) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: retries\nspec:\n  policies:\n    retries:\n      quick:\n        policy: constant\n        duration: 10ms\n        maxRetries: {max_retries}\n  targets:\n    components:\n      pubsub:\n        inbound:\n          retry: quick\n"
    )
}

async fn cleanup(topics: &[&str]) {
    let mut redis = redis().await;
    for topic in topics {
        let _: () = redis::AsyncCommands::del(&mut redis, *topic).await.unwrap();
    }
}

#[tokio::test]
async fn delivers_the_stored_envelope_with_daprs_headers() {
    let topic = unique("shape");
    let app = TestApp::start(json!([{"pubsubname": "pubsub", "topic": topic, "route": "events/in"}])).await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let mut config = sidecar_config(&unique("shape-app"), Some(&app), &resources);
    config.app_api_token = Some("app-secret".into());
    let sidecar = RunningSidecar::start(config).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let event = json!({"specversion": "1.0", "id": "evt-1", "source": "todo", "type": "todos.task.created",
                       "datacontenttype": "application/json", "data": {"title": "t"}, "traceid": traceparent,
                       "traceparent": traceparent, "correlationid": "c-1"});
    let published = sidecar
        .http
        .post(format!("{}/v1.0/publish/pubsub/{topic}?metadata.partitionKey=todo-1", sidecar.url))
        .header("content-type", "application/cloudevents+json")
        .header("traceparent", traceparent)
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 204);
    let delivery = &app.wait_for_deliveries(1).await[0];
    assert_eq!(delivery.path, "/events/in", "a route without a leading slash gets one");
    assert_eq!(delivery.headers["content-type"], "application/cloudevents+json");
    assert_eq!(delivery.headers["traceparent"], traceparent);
    assert_eq!(delivery.headers["pubsubname"], "pubsub");
    assert_eq!(delivery.headers["dapr-api-token"], "app-secret");
    assert_eq!(delivery.headers["partitionkey"], "todo-1", "publish metadata becomes headers");
    let body = delivery.json();
    assert_eq!(body["id"], "evt-1", "the caller's CloudEvent keeps its id");
    assert_eq!(body["correlationid"], "c-1", "and its extensions");
    assert_eq!(body["topic"], topic.as_str());
    assert_eq!(body["pubsubname"], "pubsub");
    assert_eq!(app.subscribe_headers().unwrap()["dapr-api-token"], "app-secret");
    sidecar.stop().await;
    cleanup(&[&topic]).await;
}

#[tokio::test]
async fn drop_and_404_go_to_the_dead_letter_topic_with_the_original_bytes() {
    let topic = unique("poison");
    let dead = format!("{topic}-dlq");
    let app = TestApp::start(json!([
        {"pubsubname": "pubsub", "topic": topic, "route": "/in", "deadLetterTopic": dead},
        {"pubsubname": "pubsub", "topic": dead, "route": "/dead"}
    ]))
    .await;
    // Answers are consumed in delivery order: the original, its dead letter, the second
    // original, its dead letter (then the default SUCCESS).
    app.answer_next([
        (StatusCode::OK, r#"{"status":"DROP"}"#.to_owned()),
        (StatusCode::OK, r#"{"status":"SUCCESS"}"#.to_owned()),
        (StatusCode::NOT_FOUND, String::new()),
    ]);
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let sidecar = RunningSidecar::start(sidecar_config(&unique("poison-app"), Some(&app), &resources)).await;
    sidecar.publish(&topic, "application/json", r#"{"n":1}"#).await;
    let first = app.wait_for_deliveries(2).await;
    sidecar.publish(&topic, "application/json", r#"{"n":2}"#).await;
    let all = app.wait_for_deliveries(4).await;
    let dead_letters: Vec<_> = all.iter().filter(|d| d.path == "/dead").collect();
    let originals: Vec<_> = all.iter().filter(|d| d.path == "/in").collect();
    assert_eq!((originals.len(), dead_letters.len()), (2, 2), "{first:?}");
    for dead_letter in dead_letters {
        let original = originals.iter().find(|o| o.json()["data"] == dead_letter.json()["data"]).unwrap();
        assert_eq!(dead_letter.body, original.body, "the dead letter is the original bytes");
        assert_eq!(dead_letter.json()["topic"], topic.as_str(), "topic inside still names the original topic");
    }
    sidecar.stop().await;
    cleanup(&[&topic, &dead]).await;
}

#[tokio::test]
async fn retry_answers_are_retried_per_the_inbound_policy_then_dead_lettered() {
    let topic = unique("flaky");
    let dead = format!("{topic}-dlq");
    let app = TestApp::start(json!([
        {"pubsubname": "pubsub", "topic": topic, "route": "/in", "deadLetterTopic": dead},
        {"pubsubname": "pubsub", "topic": dead, "route": "/dead"}
    ]))
    .await;
    let retry = (StatusCode::OK, r#"{"status":"RETRY"}"#.to_owned());
    app.answer_next([retry.clone(), (StatusCode::SERVICE_UNAVAILABLE, String::new()), retry.clone()]);
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    resources.write("resiliency.yaml", &inbound_retries(2));
    let sidecar = RunningSidecar::start(sidecar_config(&unique("flaky-app"), Some(&app), &resources)).await;
    sidecar.publish(&topic, "application/json", r#"{"n":1}"#).await;
    let deliveries = app.wait_for_deliveries(4).await;
    let paths: Vec<&str> = deliveries.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["/in", "/in", "/in", "/dead"], "1 attempt + 2 retries, then the dead-letter topic");

    // A message that succeeds on a retry never reaches the dead-letter topic.
    app.answer_next([retry]);
    sidecar.publish(&topic, "application/json", r#"{"n":2}"#).await;
    let deliveries = app.wait_for_deliveries(6).await;
    let later: Vec<&str> = deliveries[4..].iter().map(|d| d.path.as_str()).collect();
    assert_eq!(later, ["/in", "/in"]);
    sidecar.stop().await;
    assert_eq!(app.deliveries().len(), 6, "nothing more arrived");
    cleanup(&[&topic, &dead]).await;
}

#[tokio::test]
async fn without_an_inbound_policy_there_is_exactly_one_attempt() {
    let topic = unique("once");
    let dead = format!("{topic}-dlq");
    let app = TestApp::start(json!([
        {"pubsubname": "pubsub", "topic": topic, "route": "/in", "deadLetterTopic": dead},
        {"pubsubname": "pubsub", "topic": dead, "route": "/dead"}
    ]))
    .await;
    app.answer_next([(StatusCode::INTERNAL_SERVER_ERROR, String::new())]);
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let sidecar = RunningSidecar::start(sidecar_config(&unique("once-app"), Some(&app), &resources)).await;
    sidecar.publish(&topic, "application/json", "{}").await;
    let deliveries = app.wait_for_deliveries(2).await;
    let paths: Vec<&str> = deliveries.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["/in", "/dead"]);
    sidecar.stop().await;
    cleanup(&[&topic, &dead]).await;
}

#[tokio::test]
async fn cel_rules_route_and_unmatched_messages_are_dropped() {
    let topic = unique("routed");
    let app = TestApp::start(json!([{"pubsubname": "pubsub", "topic": topic, "routes": {"rules": [
        {"match": "event.type == \"todos.task.completed\"", "path": "/completed"},
        {"match": "event.data.priority > 2", "path": "/urgent"}
    ]}}]))
    .await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let sidecar = RunningSidecar::start(sidecar_config(&unique("router"), Some(&app), &resources)).await;
    let publish = |event_type: &str, priority: i64| {
        let body = json!({"specversion": "1.0", "id": unique("e"), "source": "t", "type": event_type, "data": {"priority": priority}});
        let (sidecar, topic) = (&sidecar, &topic);
        async move { sidecar.publish(topic, "application/cloudevents+json", &body.to_string()).await }
    };
    publish("todos.task.completed", 1).await;
    publish("todos.task.created", 5).await;
    publish("todos.task.created", 1).await; // matches nothing: acked and dropped
    publish("todos.task.completed", 9).await;
    let deliveries = app.wait_for_deliveries(3).await;
    let mut paths: Vec<&str> = deliveries.iter().map(|d| d.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/completed", "/completed", "/urgent"]);
    sidecar.stop().await;
    cleanup(&[&topic]).await;
}

#[tokio::test]
async fn declarative_subscriptions_load_from_yaml_and_programmatic_ones_replace_them() {
    let (declared_topic, both_topic) = (unique("declared"), unique("both"));
    let app = TestApp::start(json!([{"pubsubname": "pubsub", "topic": both_topic, "route": "/programmatic"}])).await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let app_id = unique("declarer");
    resources.write(
        "subscriptions.yaml",
        &format!(
            "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: declared\nspec:\n  pubsubname: pubsub\n  topic: {declared_topic}\n  routes:\n    default: /declared\nscopes:\n- {app_id}\n---\napiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: overridden\nspec:\n  pubsubname: pubsub\n  topic: {both_topic}\n  route: /declarative\n---\napiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: other-app\nspec:\n  pubsubname: pubsub\n  topic: {declared_topic}\n  route: /not-mine\nscopes:\n- someone-else\n"
        ),
    );
    let sidecar = RunningSidecar::start(sidecar_config(&app_id, Some(&app), &resources)).await;
    sidecar.publish(&declared_topic, "application/json", "{}").await;
    sidecar.publish(&both_topic, "application/json", "{}").await;
    let deliveries = app.wait_for_deliveries(2).await;
    let mut paths: Vec<&str> = deliveries.iter().map(|d| d.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/declared", "/programmatic"]);
    let metadata: Value =
        sidecar.http.get(format!("{}/v1.0/metadata", sidecar.url)).send().await.unwrap().json().await.unwrap();
    let kinds: Vec<(String, String)> = metadata["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["topic"].as_str().unwrap().to_owned(), s["type"].as_str().unwrap().to_owned()))
        .collect();
    assert!(kinds.contains(&(declared_topic.clone(), "DECLARATIVE".to_owned())));
    assert!(kinds.contains(&(both_topic.clone(), "PROGRAMMATIC".to_owned())));
    sidecar.stop().await;
    cleanup(&[&declared_topic, &both_topic]).await;
}

#[tokio::test]
async fn expired_messages_skip_the_app_and_go_to_the_dead_letter_topic() {
    let topic = unique("expiring");
    let dead = format!("{topic}-dlq");
    // Nobody subscribes to the dead-letter topic: the dead letter keeps its past expiration, so
    // a subscriber there would drop it as expired too (as daprd does). We read the stream.
    let app =
        TestApp::start(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in", "deadLetterTopic": dead}]))
            .await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let sidecar = RunningSidecar::start(sidecar_config(&unique("expiry-app"), Some(&app), &resources)).await;
    let expired = json!({"specversion": "1.0", "id": "old", "source": "s", "type": "t", "expiration": "2020-01-01T00:00:00Z", "data": 1});
    sidecar.publish(&topic, "application/cloudevents+json", &expired.to_string()).await;
    let fresh = json!({"specversion": "1.0", "id": "new", "source": "s", "type": "t", "data": 2});
    sidecar.publish(&topic, "application/cloudevents+json", &fresh.to_string()).await;
    let deliveries = app.wait_for_deliveries(1).await;
    assert_eq!(deliveries[0].json()["id"], "new");
    let redis = redis().await;
    let dead_letters = crate::helpers::eventually("the dead letter", || async {
        let entries: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut redis.clone(), &dead).await.ok()?;
        (!entries.ids.is_empty()).then_some(entries.ids)
    })
    .await;
    let Some(redis::Value::BulkString(data)) = dead_letters[0].map.get("data") else { panic!("no data field") };
    assert_eq!(serde_json::from_slice::<Value>(data).unwrap()["id"], "old");
    sidecar.stop().await;
    assert_eq!(app.deliveries().len(), 1, "the expired message never reached the app");
    cleanup(&[&topic, &dead]).await;
}

#[tokio::test]
async fn matching_limits_retries_to_the_listed_statuses() {
    let topic = unique("matching");
    let dead = format!("{topic}-dlq");
    let app = TestApp::start(json!([
        {"pubsubname": "pubsub", "topic": topic, "route": "/in", "deadLetterTopic": dead},
        {"pubsubname": "pubsub", "topic": dead, "route": "/dead"}
    ]))
    .await;
    // 503 is listed and retried; 400 is not, so it ends the loop at once.
    app.answer_next([(StatusCode::SERVICE_UNAVAILABLE, String::new()), (StatusCode::BAD_REQUEST, String::new())]);
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    resources.write(
        "resiliency.yaml",
        &inbound_retries(5).replace(
            "        maxRetries: 5\n",
            "        maxRetries: 5\n        matching:\n          httpStatusCodes: 500-599\n",
        ),
    );
    let sidecar = RunningSidecar::start(sidecar_config(&unique("matching-app"), Some(&app), &resources)).await;
    sidecar.publish(&topic, "application/json", "{}").await;
    let deliveries = app.wait_for_deliveries(3).await;
    let paths: Vec<&str> = deliveries.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["/in", "/in", "/dead"]);
    sidecar.stop().await;
    cleanup(&[&topic, &dead]).await;
}

#[tokio::test]
async fn a_failed_delivery_without_dead_letter_topic_is_acknowledged_like_daprd_1_17() {
    let topic = unique("lost");
    let app_id = unique("lost-app");
    let app = TestApp::start(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}])).await;
    app.answer_next([(StatusCode::INTERNAL_SERVER_ERROR, String::new())]);
    let resources = TempDir::new();
    // Fast reclaim, so a wrongly pending entry would show up as a second delivery.
    resources.write(
        "pubsub.yaml",
        &redis_component(
            "  - name: processingTimeout\n    value: 200ms\n  - name: redeliverInterval\n    value: \"100\"\n",
        ),
    );
    let sidecar = RunningSidecar::start(sidecar_config(&app_id, Some(&app), &resources)).await;
    sidecar.publish(&topic, "application/json", "{}").await;
    app.wait_for_deliveries(1).await;
    let mut redis = redis().await;
    crate::helpers::eventually("the failed entry to be acknowledged", || async {
        let pending: redis::streams::StreamPendingReply =
            redis::AsyncCommands::xpending(&mut redis.clone(), &topic, &app_id).await.unwrap();
        (pending.count() == 0).then_some(())
    })
    .await;
    // A marker message delivered after the failed one proves the reclaim loop had its chance.
    sidecar.publish(&topic, "application/json", r#"{"marker":true}"#).await;
    let deliveries = app.wait_for_deliveries(2).await;
    assert_eq!(deliveries[1].json()["data"], json!({"marker": true}), "the failed message was not redelivered");
    sidecar.stop().await;
    assert_eq!(app.deliveries().len(), 2);
    let _: () = redis::AsyncCommands::del(&mut redis, &topic).await.unwrap();
}

#[tokio::test]
async fn raw_payload_subscriptions_get_the_stored_bytes_base64_in_a_fresh_envelope() {
    let topic = unique("raw");
    let app = TestApp::start(
        json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in", "metadata": {"rawPayload": "true"}}]),
    )
    .await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let sidecar = RunningSidecar::start(sidecar_config(&unique("raw-app"), Some(&app), &resources)).await;
    let published = sidecar
        .http
        .post(format!("{}/v1.0/publish/pubsub/{topic}?metadata.rawPayload=true", sidecar.url))
        .body("plain bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 204);
    let delivery = &app.wait_for_deliveries(1).await[0];
    let body = delivery.json();
    assert_eq!(body["data_base64"], "cGxhaW4gYnl0ZXM=");
    assert_eq!(body["datacontenttype"], "application/octet-stream");
    assert_eq!(body["source"], "Dapr");
    assert_eq!(delivery.headers["content-type"], "application/cloudevents+json");
    sidecar.stop().await;
    cleanup(&[&topic]).await;
}

#[tokio::test]
async fn the_in_memory_component_delivers_in_order_within_one_sidecar() {
    let topic = unique("memory");
    let app = TestApp::start(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}])).await;
    let resources = TempDir::new();
    resources.write(
        "pubsub.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata: []\n",
    );
    let sidecar = RunningSidecar::start(sidecar_config(&unique("memory-app"), Some(&app), &resources)).await;
    for n in 0..20 {
        assert_eq!(sidecar.publish(&topic, "application/json", &json!({"n": n}).to_string()).await.status(), 204);
    }
    let deliveries = app.wait_for_deliveries(20).await;
    let order: Vec<i64> = deliveries.iter().map(|d| d.json()["data"]["n"].as_i64().unwrap()).collect();
    assert_eq!(order, (0..20).collect::<Vec<_>>(), "one delivery at a time, in publish order");
    sidecar.stop().await;
}

#[tokio::test]
async fn an_open_circuit_breaker_sends_deliveries_straight_to_the_dead_letter_topic() {
    let topic = unique("breaker");
    let dead = format!("{topic}-dlq");
    // No subscriber on the dead-letter topic: it would go through the same component's open
    // breaker (as in daprd). We read the dead-letter stream instead.
    let app =
        TestApp::start(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in", "deadLetterTopic": dead}]))
            .await;
    let failure = (StatusCode::INTERNAL_SERVER_ERROR, String::new());
    app.answer_next([failure.clone(), failure]);
    let resources = TempDir::new();
    // One worker, so the two messages are handled one after the other.
    resources.write("pubsub.yaml", &redis_component("  - name: concurrency\n    value: \"1\"\n"));
    resources.write(
        "resiliency.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: breaker\nspec:\n  policies:\n    retries:\n      quick: {policy: constant, duration: 10ms, maxRetries: 5}\n    circuitBreakers:\n      appCB: {maxRequests: 1, timeout: 60s, trip: consecutiveFailures > 1}\n  targets:\n    components:\n      pubsub:\n        inbound: {retry: quick, circuitBreaker: appCB}\n",
    );
    let sidecar = RunningSidecar::start(sidecar_config(&unique("breaker-app"), Some(&app), &resources)).await;
    sidecar.publish(&topic, "application/json", r#"{"n":1}"#).await;
    sidecar.publish(&topic, "application/json", r#"{"n":2}"#).await;
    let redis = redis().await;
    let dead_letters = crate::helpers::eventually("both messages in the dead-letter stream", || async {
        let entries: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut redis.clone(), &dead).await.ok()?;
        (entries.ids.len() == 2).then_some(entries.ids)
    })
    .await;
    assert_eq!(dead_letters.len(), 2);
    sidecar.stop().await;
    assert_eq!(
        app.deliveries().len(),
        2,
        "two failures opened the breaker: the retries of the first message and the second message never reached the app"
    );
    cleanup(&[&topic, &dead]).await;
}
