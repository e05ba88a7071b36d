//! Events daprd refuses for good are parked, visibly, without breaking per-todo order; an
//! operator retries or discards them. A token mismatch (401) is never parked.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use service_kit::testing::prometheus::sample;

use crate::helpers::{Backend, DEADLINE, FakeSidecar, Recorded, SendJson, TestApp, TestDb, eventually};
use crate::on_both_backends;

on_both_backends!(
    a_refused_event_is_parked_and_its_todo_waits_until_an_operator_retries_it,
    a_discarded_event_lets_its_todo_flow_again,
    a_token_mismatch_is_retried_and_never_parked
);

const ADMIN: &str = "admin-secret";
const SETTINGS: [(&str, &str); 2] = [("RELAY_PARK_AFTER_MS", "300"), ("ADMIN_TOKEN", ADMIN)];

fn title(record: &Recorded) -> String {
    record.json()["data"]["title"].as_str().unwrap_or_default().to_owned()
}

async fn parked(app: &TestApp) -> Vec<Value> {
    app.http.get(app.url("/admin/outbox/parked")).bearer_auth(ADMIN).send_json().await.as_array().unwrap().clone()
}

async fn admin_post(app: &TestApp, path: &str) -> u16 {
    app.http.post(app.url(path)).bearer_auth(ADMIN).send().await.unwrap().status().as_u16()
}

/// A sidecar whose publishing scopes forbid the events of todos titled "forbidden".
fn forbid(sidecar: &FakeSidecar, status: StatusCode) {
    sidecar.respond_with(move |record, _| {
        Some(if title(record) == "forbidden" { status } else { StatusCode::NO_CONTENT })
    });
}

async fn a_refused_event_is_parked_and_its_todo_waits_until_an_operator_retries_it(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    forbid(&sidecar, StatusCode::FORBIDDEN);
    let app = TestApp::spawn_with(Arc::new(TestDb::new(backend).await), &sidecar, &SETTINGS).await;
    let stuck = app.create_todo("ada", "forbidden").await;
    let stuck_id = stuck["id"].as_str().unwrap().to_owned();
    assert_eq!(app.post_empty(&format!("/todos/{stuck_id}/complete")).await.status(), 200);
    let other = app.create_todo("ada", "allowed").await;

    let parked_now = eventually("the refused event to be parked", DEADLINE, || async {
        let list = parked(&app).await;
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(parked_now.len(), 1, "{parked_now:?}");
    assert_eq!(parked_now[0]["todoId"], stuck_id.as_str());
    assert_eq!(parked_now[0]["sequence"], 1);
    assert_eq!(parked_now[0]["waitingBehind"], 1, "the completion waits behind the creation");
    assert!(parked_now[0]["reason"].as_str().unwrap().contains("403"), "{parked_now:?}");
    let metrics = app.scrape().await;
    assert!(metrics.contains("dapr_todo_outbox_parked_events 1"), "{metrics}");
    // The completion waits behind the parked creation; the parked one is not pending.
    assert!(metrics.contains("dapr_todo_outbox_pending_events 1"), "{metrics}");
    let parked_publishes = sample(&metrics, "dapr_todo_relay_publishes_total", &[("outcome", "parked")]);
    assert!(parked_publishes.unwrap() >= 1.0, "{metrics}");
    // Other todos flow; the parked todo's later event was never even tried.
    sidecar.wait_for_accepted(1).await;
    assert_eq!(sidecar.accepted()[0].todo_id(), other["id"].as_str().unwrap());
    assert!(sidecar.recorded().iter().all(|r| r.todo_id() != stuck_id || r.version() == 1));
    // Parked means the relay stopped trying. An absence can only be watched for a while: 500 ms
    // is 25 of the tests' shortest retry delays (RELAY_RETRY_INITIAL_MS 20).
    let attempts = sidecar.recorded().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sidecar.recorded().len(), attempts, "a parked event was tried again");

    // The scopes are fixed; the operator retries.
    sidecar.respond_with(|_, _| Some(StatusCode::NO_CONTENT));
    assert_eq!(
        admin_post(&app, &format!("/admin/outbox/{}/retry", parked_now[0]["eventId"].as_str().unwrap())).await,
        204
    );
    eventually("the parked todo's events to be published in order", DEADLINE, || async {
        let versions: Vec<i64> = sidecar.accepted_by_todo().get(&stuck_id)?.iter().map(Recorded::version).collect();
        (versions == [1, 2]).then_some(())
    })
    .await;
    assert!(parked(&app).await.is_empty());
    assert_eq!(admin_post(&app, &format!("/admin/outbox/{}/retry", uuid::Uuid::now_v7())).await, 404);
    let anonymous = app.http.get(app.url("/admin/outbox/parked")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

async fn a_discarded_event_lets_its_todo_flow_again(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    sidecar.respond_with(|record, _| {
        Some(if record.version() == 1 { StatusCode::NOT_FOUND } else { StatusCode::NO_CONTENT })
    });
    let app = TestApp::spawn_with(Arc::new(TestDb::new(backend).await), &sidecar, &SETTINGS).await;
    let todo = app.create_todo("ada", "created on a missing component").await;
    let id = todo["id"].as_str().unwrap().to_owned();
    assert_eq!(app.post_empty(&format!("/todos/{id}/complete")).await.status(), 200);
    let event_id = eventually("the creation to be parked", DEADLINE, || async {
        parked(&app).await.first().map(|p| p["eventId"].as_str().unwrap().to_owned())
    })
    .await;

    assert_eq!(admin_post(&app, &format!("/admin/outbox/{event_id}/discard")).await, 204);
    let accepted = sidecar.wait_for_accepted(1).await;
    assert_eq!((accepted[0].todo_id(), accepted[0].version()), (id.clone(), 2), "the completion went out");
    let history = app.get(&format!("/todos/{id}/events")).await.json::<Value>().await.unwrap();
    assert!(history["events"][0]["discardedAt"].is_string(), "{history}");
    assert!(history["events"][0]["publishedAt"].is_null(), "{history}");
}

async fn a_token_mismatch_is_retried_and_never_parked(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    forbid(&sidecar, StatusCode::UNAUTHORIZED);
    let app = TestApp::spawn_with(Arc::new(TestDb::new(backend).await), &sidecar, &SETTINGS).await;
    let created = std::time::Instant::now();
    app.create_todo("ada", "forbidden").await;
    // An attempt answered well past the 300 ms after which a refusal would be parked: a
    // refusal would be parked by now, and the relay must still be trying.
    let attempts_then = eventually("an attempt 600 ms after the first", DEADLINE, || async {
        let attempts = sidecar.recorded().len();
        (created.elapsed() > Duration::from_millis(600) && attempts >= 4).then_some(attempts)
    })
    .await;
    assert!(parked(&app).await.is_empty(), "a 401 is a configuration alarm, never parked");
    eventually("the relay to keep trying", DEADLINE, || async {
        (sidecar.recorded().len() > attempts_then).then_some(())
    })
    .await;
}
