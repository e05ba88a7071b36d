//! Shutdown is bounded: SIGTERM ends the service within its grace period even when a publish
//! hangs, and what was not published stays in the outbox for the next start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::helpers::{Backend, FakeSidecar, TestApp, TestDb};
use crate::on_both_backends;

on_both_backends!(a_hanging_publish_does_not_hold_up_shutdown_and_its_event_is_published_after_restart);

/// The database stops answering (PostgreSQL behind a proxy that stops passing anything on) with
/// a create waiting on it: shutdown still ends within the grace period and the pools' 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_database_does_not_hold_up_shutdown() {
    let sidecar = FakeSidecar::start().await;
    let test_db = Arc::new(TestDb::new(Backend::Postgres).await);
    let (user_host, rest) = test_db.url.split_once('@').expect("a user in the URL");
    let (host_port, name) = rest.split_once('/').expect("a database name in the URL");
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = crate::helpers::proxy(host_port.to_owned(), Duration::ZERO, frozen.clone()).await;
    let url = format!("{user_host}@127.0.0.1:{port}/{name}");
    let app =
        TestApp::spawn_with(test_db.clone(), &sidecar, &[("DATABASE_URL", &url), ("SHUTDOWN_GRACE_MS", "500")]).await;
    app.create_todo("ada", "before the database hung").await;

    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let (http, create_url) = (app.http.clone(), app.url("/todos"));
    let hanging = tokio::spawn(async move {
        http.post(create_url).json(&serde_json::json!({"userId": "ada", "title": "into a hung database"})).send().await
    });
    crate::helpers::eventually("the create to be waiting on the database", crate::helpers::DEADLINE, || async {
        (!hanging.is_finished()).then_some(())
    })
    .await;

    let asked = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), app.stop()).await.expect("the app stops within 8 s");
    let took = asked.elapsed();
    // 500 ms of grace, at most 1 s for releasing leases and 2 s for closing the pools.
    assert!(took < Duration::from_secs(5), "shutdown took {took:?} with the database hung");
    let answer = hanging.await.expect("the client task");
    assert!(
        answer.is_err() || answer.is_ok_and(|r| !r.status().is_success()),
        "a create into a hung database succeeded"
    );
}

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
