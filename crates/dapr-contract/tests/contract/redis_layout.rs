//! daprd's Redis Streams layout, read and written both ways.

use std::collections::HashMap;

use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use serde_json::{Value, json};

use crate::helpers::{RunningSidecar, TempDir, TestApp, eventually, redis, redis_component, sidecar_config, unique};

fn field(entry: &redis::streams::StreamId, name: &str) -> Vec<u8> {
    match entry.map.get(name) {
        Some(redis::Value::BulkString(bytes)) => bytes.clone(),
        other => panic!("field {name}: {other:?}"),
    }
}

#[tokio::test]
async fn publish_writes_daprds_stream_entry_and_group() {
    let topic = unique("layout");
    let app = TestApp::start(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}])).await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let app_id = unique("layout-app");
    let sidecar = RunningSidecar::start(sidecar_config(&app_id, Some(&app), &resources)).await;
    let published = sidecar
        .http
        .post(format!("{}/v1.0/publish/pubsub/{topic}?metadata.partitionKey=k1", sidecar.url))
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 204);
    let delivered = app.wait_for_deliveries(1).await;

    let mut redis = redis().await;
    let entries: StreamRangeReply = redis.xrange_all(&topic).await.unwrap();
    assert_eq!(entries.ids.len(), 1, "one XADD to the stream named after the topic");
    let entry = &entries.ids[0];
    assert_eq!(field(entry, "data"), delivered[0].body.to_vec(), "the app gets the stored bytes unchanged");
    let metadata: HashMap<String, String> = serde_json::from_slice(&field(entry, "metadata")).unwrap();
    assert_eq!(metadata, HashMap::from([("partitionKey".to_owned(), "k1".to_owned())]));
    let envelope: Value = serde_json::from_slice(&field(entry, "data")).unwrap();
    assert_eq!(envelope["data"], json!({"n": 1}));
    assert_eq!(envelope["source"], app_id);

    // Consumer group and consumer are both named after the app id, and the entry was acked.
    let groups: redis::streams::StreamInfoGroupsReply = redis.xinfo_groups(&topic).await.unwrap();
    assert_eq!(groups.groups[0].name, app_id);
    eventually("the entry to be acknowledged", || async {
        let pending: redis::streams::StreamPendingReply = redis.clone().xpending(&topic, &app_id).await.unwrap();
        (pending.count() == 0).then_some(())
    })
    .await;
    sidecar.stop().await;
    let _: () = redis.del(&topic).await.unwrap();
}

#[tokio::test]
async fn entries_written_the_way_daprd_writes_them_are_delivered() {
    let topic = unique("from-daprd");
    let app = TestApp::start(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}])).await;
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    let sidecar = RunningSidecar::start(sidecar_config(&unique("reader"), Some(&app), &resources)).await;
    // An entry as a real daprd publishes it: envelope in `data`, metadata as a JSON object.
    let envelope = json!({"data": {"k": "v"}, "datacontenttype": "application/json", "id": "d1",
        "pubsubname": "pubsub", "source": "other-app", "specversion": "1.0", "time": "2026-11-22T10:00:00Z",
        "topic": topic, "traceid": "", "traceparent": "", "tracestate": "", "type": "com.dapr.event.sent"});
    let mut redis = redis().await;
    let _: String = redis
        .xadd(&topic, "*", &[("data", envelope.to_string()), ("metadata", r#"{"custom":"x"}"#.to_owned())])
        .await
        .unwrap();
    let delivered = app.wait_for_deliveries(1).await;
    assert_eq!(delivered[0].json(), envelope);
    assert_eq!(delivered[0].headers["custom"], "x", "message metadata becomes headers");
    sidecar.stop().await;
    let _: () = redis.del(&topic).await.unwrap();
}
