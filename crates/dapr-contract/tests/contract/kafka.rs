//! `pubsub.kafka` against Apache Kafka (`TEST_KAFKA_BROKERS`, with SCRAM-SHA-512 as the cluster's
//! listener: `TEST_KAFKA_USER`, `TEST_KAFKA_PASSWORD`; `make test-kafka` starts the broker with
//! scripts/ensure-kafka.sh): records keyed by `partitionKey` with the metadata as headers,
//! Kafka's metadata on delivery, order within a partition, the component's own retries, and
//! catch-up from the committed offset after a restart.

use crate::helpers::{RunningSidecar, TempDir, TestApp, sidecar_config, unique};
use axum::http::StatusCode;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::json;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn brokers() -> String {
    setting("TEST_KAFKA_BROKERS", "127.0.0.1:59092")
}

fn user() -> String {
    setting("TEST_KAFKA_USER", "dapr-todo")
}

fn password() -> String {
    setting("TEST_KAFKA_PASSWORD", "dapr-todo-local")
}

/// Topics are not auto-created (as in the cluster): each test makes its own, 3 partitions.
async fn create_topic(name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", user())
        .set("sasl.password", password())
        .create()
        .expect("an admin client");
    let results = admin
        .create_topics(&[NewTopic::new(name, 3, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("a Kafka broker at {} (TEST_KAFKA_BROKERS) is needed: {e}", brokers()));
    for result in results {
        result.unwrap_or_else(|(topic, error)| panic!("creating {topic}: {error}"));
    }
}

/// SASL with SCRAM-SHA-512 as the cluster's component (k8s/base/dapr/pubsub.yaml), the
/// password given inline rather than from a secret store.
fn kafka_component(extra: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.kafka\n  version: v1\n  metadata:\n  - name: brokers\n    value: {}\n  - name: authType\n    value: password\n  - name: saslUsername\n    value: {}\n  - name: saslPassword\n    value: {}\n  - name: saslMechanism\n    value: SHA-512\n  - name: disableTls\n    value: \"true\"\n  - name: initialOffset\n    value: oldest\n  - name: backOffDuration\n    value: 50ms\n{extra}",
        brokers(),
        user(),
        password()
    )
}

async fn consumer(topic: &str, app_id: &str, resources: &TempDir) -> (TestApp, RunningSidecar) {
    let app = TestApp::start(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}])).await;
    let sidecar = RunningSidecar::start(sidecar_config(app_id, Some(&app), resources)).await;
    (app, sidecar)
}

async fn publish(sidecar: &RunningSidecar, topic: &str, key: &str, n: i64) {
    let response = sidecar
        .http
        .post(format!("{}/v1.0/publish/pubsub/{topic}?metadata.partitionKey={key}&metadata.origin=test", sidecar.url))
        .header("content-type", "application/json")
        .body(json!({"n": n}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_the_key_and_metadata_and_arrive_in_partition_order() {
    let topic = unique("kafka-order");
    create_topic(&topic).await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &kafka_component(""));
    let (app, sidecar) = consumer(&topic, &unique("kafka-app"), &resources).await;
    for n in 0..20 {
        publish(&sidecar, &topic, "todo-1", n).await;
    }
    let deliveries = app.wait_for_deliveries(20).await;
    let order: Vec<i64> = deliveries.iter().map(|d| d.json()["data"]["n"].as_i64().unwrap()).collect();
    assert_eq!(order, (0..20).collect::<Vec<_>>(), "one key, one partition, delivered in order");
    let first = &deliveries[0];
    assert_eq!(first.headers["__key"], "todo-1", "partitionKey is the record key");
    assert_eq!(first.headers["__topic"], topic.as_str());
    assert!(first.headers.contains_key("__partition") && first.headers.contains_key("__offset"));
    assert_eq!(first.headers["origin"], "test", "publish metadata travels as record headers");
    assert_eq!(first.json()["topic"], topic.as_str());
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_is_retried_by_the_component_and_blocks_its_partition() {
    let topic = unique("kafka-retry");
    create_topic(&topic).await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &kafka_component("  - name: backOffMaxRetries\n    value: \"5\"\n"));
    let (app, sidecar) = consumer(&topic, &unique("kafka-app"), &resources).await;
    app.answer_next([
        (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
        (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
    ]);
    publish(&sidecar, &topic, "same", 1).await;
    publish(&sidecar, &topic, "same", 2).await;
    let deliveries = app.wait_for_deliveries(4).await;
    let order: Vec<i64> = deliveries.iter().map(|d| d.json()["data"]["n"].as_i64().unwrap()).collect();
    assert_eq!(order, [1, 1, 1, 2], "two failures retried by the component before the next message");
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_continues_from_its_committed_offset() {
    let topic = unique("kafka-restart");
    create_topic(&topic).await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &kafka_component(""));
    let app_id = unique("kafka-app");
    let (app, sidecar) = consumer(&topic, &app_id, &resources).await;
    publish(&sidecar, &topic, "k", 1).await;
    app.wait_for_deliveries(1).await;
    sidecar.stop().await;

    let publisher = RunningSidecar::start(sidecar_config(&unique("publisher"), None, &resources)).await;
    for n in 2..=4 {
        publish(&publisher, &topic, "k", n).await;
    }
    let (app, sidecar) = consumer(&topic, &app_id, &resources).await;
    let deliveries = app.wait_for_deliveries(3).await;
    let seen: Vec<i64> = deliveries.iter().map(|d| d.json()["data"]["n"].as_i64().unwrap()).collect();
    // Same key, same partition, in order: a redelivered first message would come first.
    assert_eq!(seen, [2, 3, 4], "nothing lost while it was down, nothing delivered twice");
    sidecar.stop().await;
    publisher.stop().await;
}

/// The relay's bulk publish on Kafka (native: one producer batch): each entry's
/// `metadata.partitionKey` is its record key, so a todo's events, one per request, stay on one
/// partition in the order the requests were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_entries_are_keyed_by_their_own_partition_key() {
    let topic = unique("kafka-bulk");
    create_topic(&topic).await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &kafka_component(""));
    let (app, sidecar) = consumer(&topic, &unique("kafka-app"), &resources).await;
    for n in 0..5 {
        let entries: Vec<_> = ["todo-a", "todo-b", "todo-c"]
            .iter()
            .map(|key| {
                let event = json!({"id": format!("{key}-{n}"), "source": "todo", "type": "t", "specversion": "1.0", "data": {"key": key, "n": n}});
                json!({"entryId": key, "event": event, "contentType": "application/cloudevents+json", "metadata": {"partitionKey": key}})
            })
            .collect();
        let response = sidecar
            .http
            .post(format!("{}/v1.0-alpha1/publish/bulk/pubsub/{topic}", sidecar.url))
            .header("content-type", "application/json")
            .body(serde_json::Value::from(entries).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    let deliveries = app.wait_for_deliveries(15).await;
    for key in ["todo-a", "todo-b", "todo-c"] {
        let mine: Vec<_> = deliveries.iter().filter(|d| d.json()["data"]["key"] == key).collect();
        assert!(mine.iter().all(|d| d.headers["__key"] == key), "{key}'s entries are keyed by it");
        let order: Vec<i64> = mine.iter().map(|d| d.json()["data"]["n"].as_i64().unwrap()).collect();
        assert_eq!(order, (0..5).collect::<Vec<_>>(), "{key}'s events arrive in request order");
        assert_eq!(mine[0].json()["id"], format!("{key}-0"), "the CloudEvent id is kept");
    }
    sidecar.stop().await;
}
