//! The todo service's metrics move as it works: a create raises the outbox's depth and lag, a
//! failing sidecar shows as failed publishes and retrying events, and once daprd accepts, the
//! outbox drains. Served on the metrics port only.

use axum::http::StatusCode;
use service_kit::testing::prometheus::sample;

use crate::helpers::{Backend, DEADLINE, FakeSidecar, TestApp, TestDb, assert_problem, eventually};
use crate::on_both_backends;

on_both_backends!(the_outbox_metrics_follow_a_publish_that_fails_then_succeeds, requests_are_counted_by_route_template);

async fn the_outbox_metrics_follow_a_publish_that_fails_then_succeeds(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    sidecar.respond_with(|_, _| Some(StatusCode::INTERNAL_SERVER_ERROR));
    let app = TestApp::spawn_with(std::sync::Arc::new(TestDb::new(backend).await), &sidecar, &[]).await;
    let before = app.scrape().await;
    let published_before =
        sample(&before, "dapr_todo_relay_publishes_total", &[("outcome", "published")]).unwrap_or(0.0);
    assert_eq!(sample(&before, "dapr_todo_outbox_pending_events", &[]), Some(0.0), "{before}");
    assert_eq!(sample(&before, "dapr_todo_outbox_lag_seconds", &[]), Some(0.0), "{before}");

    app.create_todo("ada", "watched").await;
    let failing = eventually("a failed publish to show", DEADLINE, || async {
        let metrics = app.scrape().await;
        (sample(&metrics, "dapr_todo_outbox_retrying_events", &[]) == Some(1.0)).then_some(metrics)
    })
    .await;
    assert_eq!(sample(&failing, "dapr_todo_outbox_pending_events", &[]), Some(1.0), "{failing}");
    assert!(sample(&failing, "dapr_todo_outbox_lag_seconds", &[]).unwrap() > 0.0, "{failing}");
    assert!(sample(&failing, "dapr_todo_relay_publishes_total", &[("outcome", "failed")]).unwrap() >= 1.0);
    assert!(sample(&failing, "dapr_todo_relay_publish_duration_seconds_count", &[]).unwrap() >= 1.0);

    sidecar.respond_with(|_, _| Some(StatusCode::NO_CONTENT));
    let drained = eventually("the outbox to drain", DEADLINE, || async {
        let metrics = app.scrape().await;
        (sample(&metrics, "dapr_todo_outbox_pending_events", &[]) == Some(0.0)).then_some(metrics)
    })
    .await;
    assert_eq!(sample(&drained, "dapr_todo_outbox_lag_seconds", &[]), Some(0.0), "{drained}");
    assert_eq!(sample(&drained, "dapr_todo_outbox_retrying_events", &[]), Some(0.0), "{drained}");
    let published = sample(&drained, "dapr_todo_relay_publishes_total", &[("outcome", "published")]).unwrap();
    assert!(published > published_before, "{published} publishes, {published_before} before");
    app.stop().await;
}

async fn requests_are_counted_by_route_template(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let todo = app.create_todo("ada", "counted").await;
    let id = todo["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/todos/{id}")).await.status(), 200);
    let metrics = app.scrape().await;
    let got = [("method", "GET"), ("route", "/todos/{id}"), ("status", "200")];
    assert!(sample(&metrics, "dapr_todo_http_requests_total", &got).unwrap() >= 1.0, "{metrics}");
    assert!(sample(&metrics, "dapr_todo_http_request_duration_seconds_count", &got).unwrap() >= 1.0);
    let created = [("method", "POST"), ("route", "/todos"), ("status", "201")];
    assert!(sample(&metrics, "dapr_todo_http_requests_total", &created).unwrap() >= 1.0, "{metrics}");
    // A path no route matches is counted under one label, whatever the path.
    let random = app.get("/no/such/path/4f1c").await;
    assert_eq!(random.status(), 404);
    let metrics = app.scrape().await;
    assert!(!metrics.contains("/no/such/path"), "paths are never labels");
    assert!(sample(&metrics, "dapr_todo_http_requests_total", &[("route", "unmatched")]).unwrap() >= 1.0);
    // The API port, which an ingress reaches, does not serve them.
    assert_problem(app.get("/metrics").await, 404, None).await;
    app.stop().await;
}
