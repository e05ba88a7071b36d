//! The webhook channel: once per notification, 5xx and unreachable retried, 4xx dropped.

use axum::http::StatusCode;
use uuid::Uuid;

use crate::helpers::{Backend, Options, WebhookReceiver, notifications, spawn, todo_event};
use crate::on_both_backends;

on_both_backends!(a_failing_webhook_is_retried_and_called_once_per_notification, a_refusing_or_missing_webhook);

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
    receiver.answer_next([StatusCode::BAD_REQUEST]);
    let app = spawn(backend, Options { webhook_url: Some(receiver.url.clone()), ..Options::default() }).await;
    let event = todo_event("todos.task.completed", Uuid::now_v7(), "ada", "t", 2, 1);
    assert_eq!(app.deliver(&event).await, "DROP", "a 4xx will never be accepted");
    app.stop().await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let app =
        spawn(backend, Options { webhook_url: Some(format!("http://{closed}/hook")), ..Options::default() }).await;
    let event = todo_event("todos.task.created", Uuid::now_v7(), "ada", "t", 1, 1);
    assert_eq!(app.deliver(&event).await, "RETRY", "an unreachable webhook is transient");
    app.stop().await;
}
