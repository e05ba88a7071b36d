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
