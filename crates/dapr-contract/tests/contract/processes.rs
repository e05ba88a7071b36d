//! daprd as a process: `kill -9` mid-delivery loses nothing, SIGTERM is a clean stop, and a
//! component it cannot initialise stops it; a file it cannot parse is only a warning.

use axum::http::StatusCode;
use redis::AsyncCommands;
use serde_json::json;
use service_kit::testing::daprd::Daprd;

use crate::helpers::{DEADLINE, HANG, TempDir, TestApp, eventually, redis, redis_component, sidecar_config, unique};

#[tokio::test]
async fn a_message_in_flight_when_daprd_is_killed_is_delivered_after_restart() {
    let topic = unique("killed");
    let app_id = unique("survivor");
    let resources = TempDir::new();
    // Reclaim entries idle for 1 s, looking every 200 ms.
    resources.write(
        "pubsub.yaml",
        &redis_component("  - name: processingTimeout\n    value: 1s\n  - name: redeliverInterval\n    value: 200ms\n"),
    );
    let subscription = json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}]);
    let stuck_app = TestApp::start(subscription.clone()).await;
    stuck_app.answer_next([(StatusCode::from_u16(HANG).unwrap(), String::new())]);
    let mut first = Daprd::start(sidecar_config(&app_id, Some(&stuck_app), &resources)).await;
    let published = reqwest::Client::new()
        .post(format!("{}/v1.0/publish/pubsub/{topic}", first.url))
        .json(&json!({"survives": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 204);
    stuck_app.wait_for_deliveries(1).await;
    first.kill().await;

    let mut redis = redis().await;
    let pending: redis::streams::StreamPendingReply = redis.xpending(&topic, &app_id).await.unwrap();
    assert_eq!(pending.count(), 1, "the killed daprd left the entry unacknowledged");

    let healthy_app = TestApp::start(subscription).await;
    let mut second = Daprd::start(sidecar_config(&app_id, Some(&healthy_app), &resources)).await;
    let redelivered = healthy_app.wait_for_deliveries(1).await;
    assert_eq!(redelivered[0].json()["data"], json!({"survives": true}));
    eventually("the redelivered entry to be acknowledged", || async {
        let pending: redis::streams::StreamPendingReply = redis.clone().xpending(&topic, &app_id).await.unwrap();
        (pending.count() == 0).then_some(())
    })
    .await;
    let stopped = second.stop().await;
    assert!(stopped.success(), "SIGTERM is a clean stop: {stopped:?}");
    let _: () = redis.del(&topic).await.unwrap();
}

#[tokio::test]
async fn a_component_daprd_cannot_initialise_stops_it_naming_the_component() {
    let resources = TempDir::new();
    // Nothing listens on port 1: the Redis component cannot connect.
    resources.write("pubsub.yaml", &redis_component("").replace(&crate::helpers::redis_host(), "127.0.0.1:1"));
    let mut daprd = Daprd::spawn(sidecar_config("broken", None, &resources));
    let status = daprd.wait_for_exit(DEADLINE * 3).await;
    assert!(!status.success());
    let log = daprd.log();
    assert!(log.contains("pubsub") && log.contains("127.0.0.1:1"), "{log}");
}

/// A file daprd cannot parse is skipped with a warning, not a failure: daprd runs without what
/// it held. So a broken component file shows as a missing component (a publish answering
/// ERR_PUBSUB_NOT_FOUND), and scripts/validate-k8s.sh checks the files before they ship.
#[tokio::test]
async fn a_resource_file_that_is_not_yaml_is_skipped_with_a_warning_naming_it() {
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component(""));
    resources.write("broken.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: [unclosed\n");
    let daprd = Daprd::start(sidecar_config("broken-file", None, &resources)).await;
    let log = daprd.log();
    let warning = log.lines().find(|l| l.contains("broken.yaml")).expect("a line naming the file");
    assert!(warning.contains("level=warning"), "{warning}");
    let published = reqwest::Client::new()
        .post(format!("{}/v1.0/publish/pubsub/{}", daprd.url, unique("still-works")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 204, "the other files are loaded");
}
