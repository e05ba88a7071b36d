//! The publish API: daprd's status codes and error JSON, the API token, health and metadata.

use serde_json::{Value, json};

use crate::helpers::{RunningSidecar, TempDir, TestApp, redis_component, sidecar_config, unique};

async fn sidecar_without_app(api_token: Option<&str>) -> (RunningSidecar, TempDir) {
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let mut config = sidecar_config(&unique("publisher"), None, &resources);
    config.dapr_api_token = api_token.map(str::to_owned);
    (RunningSidecar::start(config).await, resources)
}

#[tokio::test]
async fn publish_answers_with_daprds_codes_and_error_bodies() {
    let (sidecar, _resources) = sidecar_without_app(None).await;
    let topic = unique("orders");
    let ok = sidecar.publish(&topic, "application/json", r#"{"a":1}"#).await;
    assert_eq!(ok.status(), 204);
    assert!(ok.bytes().await.unwrap().is_empty());

    let unknown =
        sidecar.http.post(format!("{}/v1.0/publish/nope/{topic}", sidecar.url)).body("{}").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_PUBSUB_NOT_FOUND");
    assert_eq!(body["message"], "pubsub nope is not found");
    assert_eq!(body["details"][0]["reason"], "DAPR_PUBSUB_NOT_FOUND");
    assert_eq!(body["details"].as_array().unwrap().len(), 1, "not-found errors carry no ResourceInfo");

    // An empty topic is no publish route at all: daprd's router reads the path as a service
    // invocation without an app id.
    let empty_topic = sidecar.http.post(format!("{}/v1.0/publish/pubsub/", sidecar.url)).send().await.unwrap();
    assert_eq!(empty_topic.status(), 404);
    assert_eq!(empty_topic.json::<Value>().await.unwrap()["errorCode"], "ERR_DIRECT_INVOKE");

    let bad_raw = sidecar
        .http
        .post(format!("{}/v1.0/publish/pubsub/{topic}?metadata.rawPayload=yes", sidecar.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_raw.status(), 400);
    let body: Value = bad_raw.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_PUBSUB_REQUEST_METADATA");
    let resource =
        body["details"].as_array().unwrap().iter().find(|d| d["@type"].as_str().unwrap().ends_with("ResourceInfo"));
    assert_eq!(resource.expect("a ResourceInfo detail")["resource_name"], "pubsub", "{body}");

    // daprd takes bodies up to 4 MiB by default.
    let large = format!("\"{}\"", "x".repeat(3 * 1024 * 1024));
    assert_eq!(sidecar.publish(&topic, "application/json", &large).await.status(), 204);

    let not_object = sidecar.publish(&topic, "application/cloudevents+json", "[1,2]").await;
    assert_eq!(not_object.status(), 500);
    assert_eq!(not_object.json::<Value>().await.unwrap()["errorCode"], "ERR_PUBSUB_CLOUD_EVENTS_SER");
    sidecar.stop().await;
}

#[tokio::test]
async fn the_api_token_guards_everything_but_health() {
    let (sidecar, _resources) = sidecar_without_app(Some("s3cret")).await;
    let topic = unique("guarded");
    let denied = sidecar.publish(&topic, "application/json", "{}").await;
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.text().await.unwrap(), "invalid api token\n");
    let metadata = sidecar.http.get(format!("{}/v1.0/metadata", sidecar.url)).send().await.unwrap();
    assert_eq!(metadata.status(), 401, "metadata is not exempt");
    for health in ["/v1.0/healthz", "/v1.0/healthz/outbound"] {
        let response = sidecar.http.get(format!("{}{health}", sidecar.url)).send().await.unwrap();
        assert_eq!(response.status(), 204, "{health} is exempt");
    }
    let allowed = sidecar
        .http
        .post(format!("{}/v1.0/publish/pubsub/{topic}", sidecar.url))
        .header("dapr-api-token", "s3cret")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 204);
    sidecar.stop().await;
}

#[tokio::test]
async fn outbound_health_is_ready_before_the_app_while_full_health_waits_for_it() {
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    // An app port nothing listens on yet: the sidecar waits for it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut options = sidecar_config(&unique("slow-app"), None, &resources);
    options.app_port = Some(port);
    let daprd = service_kit::testing::daprd::Daprd::spawn(options);
    let url = daprd.url.clone();
    let http = reqwest::Client::new();
    crate::helpers::eventually("outbound health", || async {
        let response = http.get(format!("{url}/v1.0/healthz/outbound")).send().await.ok()?;
        (response.status() == 204).then_some(())
    })
    .await;
    let health = http.get(format!("{url}/v1.0/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 500);
    assert_eq!(health.json::<Value>().await.unwrap()["errorCode"], "ERR_HEALTH_NOT_READY");
    // Readiness is answered before the app id is compared.
    let wrong_app = http.get(format!("{url}/v1.0/healthz?appid=other")).send().await.unwrap();
    assert_eq!(wrong_app.json::<Value>().await.unwrap()["errorCode"], "ERR_HEALTH_NOT_READY");
}

#[tokio::test]
async fn metadata_lists_components_and_subscriptions() {
    let topic = unique("listed");
    let app = TestApp::start(json!([
        {"pubsubname": "pubsub", "topic": topic, "routes": {"rules": [{"match": "event.type == \"a\"", "path": "/a"}], "default": "/all"}, "deadLetterTopic": "dlq"}
    ]))
    .await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let app_id = unique("listed-app");
    let sidecar = RunningSidecar::start(sidecar_config(&app_id, Some(&app), &resources)).await;
    let metadata: Value =
        sidecar.http.get(format!("{}/v1.0/metadata", sidecar.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(metadata["id"], app_id);
    assert_eq!(metadata["components"][0]["name"], "pubsub");
    assert_eq!(metadata["components"][0]["type"], "pubsub.redis");
    let subscription = &metadata["subscriptions"][0];
    assert_eq!(subscription["topic"], topic);
    assert_eq!(subscription["type"], "PROGRAMMATIC");
    assert_eq!(subscription["deadLetterTopic"], "dlq");
    assert_eq!(subscription["rules"], json!([{"match": "event.type == \"a\"", "path": "/a"}, {"path": "/all"}]));
    assert_eq!(app.subscribe_headers().unwrap()["dapr-app-id"], app_id.as_str());
    sidecar.stop().await;
}

/// The stream entries of `topic`, as envelopes.
async fn stored_envelopes(topic: &str) -> Vec<Value> {
    let mut redis = crate::helpers::redis().await;
    let entries: redis::streams::StreamRangeReply = redis::AsyncCommands::xrange_all(&mut redis, topic).await.unwrap();
    let _: () = redis::AsyncCommands::del(&mut redis, topic).await.unwrap();
    entries
        .ids
        .iter()
        .map(|entry| match entry.map.get("data") {
            Some(redis::Value::BulkString(bytes)) => serde_json::from_slice(bytes).unwrap_or(Value::Null),
            other => panic!("no data field: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn envelopes_follow_daprds_rules_per_content_type() {
    let (sidecar, _resources) = sidecar_without_app(None).await;
    let topic = unique("envelopes");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let publish = |content_type: Option<&'static str>, body: &'static str, query: &'static str| {
        let mut request = sidecar.http.post(format!("{}/v1.0/publish/pubsub/{topic}{query}", sidecar.url)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move { assert_eq!(request.header("traceparent", traceparent).send().await.unwrap().status(), 204) }
    };
    publish(Some("application/json"), r#"{"a":1}"#, "").await;
    publish(None, r#"{"a":1}"#, "").await;
    publish(Some("application/octet-stream"), "hi", "").await;
    publish(
        Some("application/cloudevents+json"),
        r#"{"id":"mine","source":"s","type":"t","specversion":"1.0","data":1}"#,
        "",
    )
    .await;
    publish(Some("application/json"), "1", "?metadata.cloudevent.id=custom&metadata.ttlInSeconds=60").await;
    publish(Some("text/plain"), "raw bytes", "?metadata.rawPayload=true").await;
    publish(Some(""), r#"{"a":1}"#, "").await;

    let stored = stored_envelopes(&topic).await;
    assert_eq!(stored[0]["data"], json!({"a": 1}));
    assert_eq!(stored[0]["traceparent"], traceparent);
    assert_eq!(stored[0]["topic"], topic.as_str());
    assert_eq!(stored[1]["data"], r#"{"a":1}"#, "without a content type JSON arrives as a string");
    assert_eq!(stored[1]["datacontenttype"], "text/plain");
    assert_eq!(stored[2]["data_base64"], "aGk=");
    assert_eq!(stored[3]["id"], "mine");
    assert_eq!(stored[3]["traceparent"], traceparent, "a CloudEvent without traceid gets the request's trace");
    assert_eq!(stored[4]["id"], "custom");
    assert!(stored[4]["expiration"].is_string());
    assert_eq!(stored[5], Value::Null, "a raw payload is stored as sent, not as JSON");
    assert_eq!(stored[6]["datacontenttype"], "text/plain", "an empty Content-Type is none");
    assert_eq!(stored[6]["data"], r#"{"a":1}"#);
    sidecar.stop().await;
}

/// The relay's bulk publish (`dapr_events::DaprPublisher::publish_bulk`): each CloudEvent entry
/// is stored as a single publish would store it, and what daprd refuses as a whole answers as
/// a single publish would.
#[tokio::test]
async fn bulk_publish_stores_each_cloudevent_as_a_single_publish_would() {
    let (sidecar, _resources) = sidecar_without_app(None).await;
    let topic = unique("bulk");
    let request_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let event_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let bulk = |pubsub: &str, entries: Value| {
        sidecar
            .http
            .post(format!("{}/v1.0-alpha1/publish/bulk/{pubsub}/{topic}", sidecar.url))
            .header("content-type", "application/json")
            .header("traceparent", request_trace)
            .body(entries.to_string())
            .send()
    };
    let event = |id: &str, trace: Option<&str>| {
        let mut event = json!({"id": id, "source": "todo", "type": "t", "specversion": "1.0", "data": {"id": id}});
        if let Some(trace) = trace {
            event["traceid"] = json!(trace);
            event["traceparent"] = json!(trace);
        }
        event
    };
    let entries = json!([
        {"entryId": "1", "event": event("event-1", Some(event_trace)), "contentType": "application/cloudevents+json", "metadata": {"partitionKey": "todo-1"}},
        {"entryId": "2", "event": event("event-2", None), "contentType": "application/cloudevents+json", "metadata": {"partitionKey": "todo-2"}},
    ]);
    let published = bulk("pubsub", entries.clone()).await.unwrap();
    assert_eq!(published.status(), 204);
    assert!(published.bytes().await.unwrap().is_empty());

    let stored = stored_envelopes(&topic).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    let by_id = |id: &str| stored.iter().find(|e| e["id"] == id).unwrap_or_else(|| panic!("{id} in {stored:?}"));
    assert_eq!(by_id("event-1")["traceparent"], event_trace, "an entry's own trace context is kept");
    assert_eq!(by_id("event-1")["data"], json!({"id": "event-1"}));
    assert_eq!(by_id("event-1")["topic"], topic.as_str());
    // Without one, the entry gets daprd's producer span for it, a child of the request's; this
    // daprd records no spans (no tracing Configuration), so that is the request's context.
    assert_eq!(by_id("event-2")["traceparent"], request_trace);

    let unknown = bulk("nope", entries).await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap()["errorCode"], "ERR_PUBSUB_NOT_FOUND");
    let no_entry_id =
        bulk("pubsub", json!([{"event": event("e", None), "contentType": "application/cloudevents+json"}]));
    let no_entry_id = no_entry_id.await.unwrap();
    assert_eq!(no_entry_id.status(), 400);
    assert_eq!(no_entry_id.json::<Value>().await.unwrap()["errorCode"], "ERR_PUBSUB_EVENTS_SER");
    sidecar.stop().await;
}
