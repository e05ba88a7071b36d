//! Shutdown is bounded: SIGTERM ends the service within its grace period even when a publish
//! hangs, and what was not published stays in the outbox for the next start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::helpers::{Backend, FakeSidecar, TestApp, TestDb};
use crate::on_both_backends;

on_both_backends!(a_hanging_publish_does_not_hold_up_shutdown_and_its_event_is_published_after_restart);

async fn a_hanging_publish_does_not_hold_up_shutdown_and_its_event_is_published_after_restart(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    // daprd accepts the connection and never answers, for longer than the grace period.
    sidecar.respond_with(|_, _| None);
    let test_db = Arc::new(TestDb::new(backend).await);
    let slow = [("RELAY_PUBLISH_TIMEOUT_MS", "20000"), ("RELAY_LEASE_MS", "60000"), ("SHUTDOWN_GRACE_MS", "500")];
    let app = TestApp::spawn_with(test_db.clone(), &sidecar, &slow).await;
    let todo = app.create_todo("ada", "stuck in a publish").await;
    crate::helpers::eventually("the publish to hang", crate::helpers::DEADLINE, || async {
        (!sidecar.recorded().is_empty()).then_some(())
    })
    .await;

    let asked = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), app.stop()).await.expect("the app stops within 5 s");
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?} with a 500 ms grace period");

    let db = test_db.connect(todo::startup::MIGRATIONS).await;
    let queued = sqlx::query("SELECT todo_id, lease_owner FROM outbox_queue").fetch_all(&db.reader).await.unwrap();
    assert_eq!(queued.len(), 1, "the unpublished event stays queued");
    assert_eq!(queued[0].get::<String, _>("todo_id"), todo["id"].as_str().unwrap());
    assert_eq!(queued[0].get::<Option<String>, _>("lease_owner"), None, "the stopped relay released its lease");
    db.close().await;

    // The next start publishes it at once, not when a 60 s lease runs out.
    sidecar.respond_with(|_, _| Some(axum::http::StatusCode::NO_CONTENT));
    let restarted = TestApp::spawn_with(test_db, &sidecar, &slow).await;
    let accepted = sidecar.wait_for_accepted(1).await;
    assert_eq!(accepted[0].todo_id(), todo["id"].as_str().unwrap());
    restarted.stop().await;
}
