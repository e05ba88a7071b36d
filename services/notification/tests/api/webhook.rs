//! The webhook channel: once per notification; 408, 429 (after its `Retry-After`), 5xx and
//! unreachable retried; every other 4xx dropped.

use std::time::Instant;

use axum::http::StatusCode;
use service_kit::testing::{DEADLINE, eventually};
use uuid::Uuid;

use crate::helpers::{Backend, Options, WebhookReceiver, notifications, spawn, todo_event};
use crate::on_both_backends;

on_both_backends!(
    a_failing_webhook_is_retried_and_called_once_per_notification,
    a_refusing_or_missing_webhook,
    timeouts_and_throttling_are_transient,
);

async fn timeouts_and_throttling_are_transient(backend: Backend) {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_next([StatusCode::REQUEST_TIMEOUT, StatusCode::GATEWAY_TIMEOUT]);
    let app = spawn(backend, Options { webhook_url: Some(receiver.url.clone()), ..Options::default() }).await;
    let event = todo_event("todos.task.created", Uuid::now_v7(), "ada", "t", 1, 1);
    assert_eq!(app.deliver(&event).await, "RETRY", "408: the receiver may take it later");
    assert_eq!(app.deliver(&event).await, "RETRY", "504 likewise");
    assert_eq!(app.deliver(&event).await, "SUCCESS");
    assert_eq!(receiver.calls().len(), 3);

    receiver.answer_next_with_retry_after(StatusCode::TOO_MANY_REQUESTS, "1");
    let throttled = todo_event("todos.task.created", Uuid::now_v7(), "ada", "u", 1, 2);
    let asked = Instant::now();
    assert_eq!(app.deliver(&throttled).await, "RETRY", "429 is transient");
    assert_eq!(app.deliver(&throttled).await, "RETRY", "within its Retry-After");
    assert_eq!(receiver.calls().len(), 4, "nothing is sent before the Retry-After has passed");
    eventually("the notification goes through after the Retry-After", DEADLINE, || async {
        (app.deliver(&throttled).await == "SUCCESS").then_some(())
    })
    .await;
    assert!(asked.elapsed().as_millis() >= 1000, "not before the second the receiver asked for");
    assert_eq!(receiver.calls().len(), 5, "one more call, once the wait was over");
    app.stop().await;
}

async fn a_failing_webhook_is_retried_and_called_once_per_notification(backend: Backend) {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_next([StatusCode::SERVICE_UNAVAILABLE]);
    let app = spawn(backend, Options { webhook_url: Some(receiver.url.clone()), ..Options::default() }).await;
    let event = todo_event("todos.task.created", Uuid::now_v7(), "ada", "Ship it", 1, 1);
    assert_eq!(app.deliver(&event).await, "RETRY", "a 5xx from the webhook is transient");
    assert_eq!(app.deliver(&event).await, "SUCCESS", "the redelivery calls it again");
    assert_eq!(app.deliver(&event).await, "SUCCESS", "a duplicate calls nothing");
    let calls = receiver.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0["idempotency-key"], calls[1].0["idempotency-key"], "the receiver can deduplicate");
    assert_eq!(calls[1].1["message"], "New todo: Ship it");
    assert_eq!(
        notifications(&app, "userId=ada").await["items"].as_array().unwrap().len(),
        1,
        "one in-app notification"
    );
    app.stop().await;
}

async fn a_refusing_or_missing_webhook(backend: Backend) {
    let receiver = WebhookReceiver::start().await;
    let refusals = [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND, StatusCode::GONE, StatusCode::UNPROCESSABLE_ENTITY];
    receiver.answer_next(refusals);
    let app = spawn(backend, Options { webhook_url: Some(receiver.url.clone()), ..Options::default() }).await;
    for (minute, refusal) in refusals.iter().enumerate() {
        let event = todo_event("todos.task.completed", Uuid::now_v7(), "ada", "t", 2, minute as u32);
        assert_eq!(app.deliver(&event).await, "DROP", "a {refusal} will never be accepted");
    }
    app.stop().await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let app =
        spawn(backend, Options { webhook_url: Some(format!("http://{closed}/hook")), ..Options::default() }).await;
    let event = todo_event("todos.task.created", Uuid::now_v7(), "ada", "t", 1, 1);
    assert_eq!(app.deliver(&event).await, "RETRY", "an unreachable webhook is transient");
    app.stop().await;
}
