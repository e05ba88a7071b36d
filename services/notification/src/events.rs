//! The routes the Dapr sidecar calls: `GET /dapr/subscribe`, `GET /dapr/config`, the event
//! deliveries and the dead-letter deliveries. Every answer is one of daprd's three:
//!
//! | What happened | Answer |
//! | --- | --- |
//! | notification written (or written before: a duplicate), webhook called (or done before), or an event not worth telling | `SUCCESS` |
//! | database unavailable or failing, webhook 5xx / timeout / unreachable | `RETRY` (the resiliency policy retries, then the dead-letter topic) |
//! | not a CloudEvent, unknown type, unsupported schema major version, invalid data, webhook 4xx | `DROP` (to the dead-letter topic) |
//!
//! Order: a notification is an immutable record of one event, so out-of-order deliveries cannot
//! make anything regress; ids carry the time of the change, so lists are in change order
//! whatever the arrival order, and a gap (a missing earlier event) delays nothing.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use dapr_events::TodoEventType;
use dapr_events::subscriber::{self, DeliveryStatus, Poison, Subscription, dead_letter_topic};
use serde_json::Value;
use service_kit::consumer::note_failure;

use crate::notifications;
use crate::startup::AppState;
use crate::webhook::WebhookError;

/// The topics this service consumes.
pub const TOPICS: [TodoEventType; 2] = [TodoEventType::Created, TodoEventType::Completed];

/// Every topic with its dead-letter topic, and every dead-letter topic with a route of its own.
pub fn subscriptions(pubsub_name: &str, app_id: &str) -> Vec<Subscription> {
    let mut list = Vec::new();
    for topic in TOPICS.map(TodoEventType::topic) {
        let dead = dead_letter_topic(app_id, topic);
        list.push(Subscription {
            pubsubname: pubsub_name.to_owned(),
            topic: topic.to_owned(),
            route: format!("/events/{topic}"),
            dead_letter_topic: Some(dead.clone()),
            metadata: Default::default(),
        });
        list.push(Subscription {
            pubsubname: pubsub_name.to_owned(),
            topic: dead,
            route: format!("/dead-letters/{topic}"),
            dead_letter_topic: None,
            metadata: Default::default(),
        });
    }
    list
}

/// The routes daprd calls; the caller puts them behind the app-token check.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dapr/subscribe", get(subscribe))
        .route("/dapr/config", get(|| async { Json(serde_json::json!({})) }))
        .route("/events/{topic}", post(deliver))
        .route("/dead-letters/{topic}", post(dead_letter))
}

async fn subscribe(State(state): State<AppState>) -> Json<Vec<Subscription>> {
    Json(subscriptions(&state.pubsub_name, &state.app_id))
}

/// What a log line says about a delivery, even one that is not a valid event.
fn identify(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    (text("id"), text("type"), text("correlationid"))
}

async fn refuse(state: &AppState, body: &[u8], status: DeliveryStatus, reason: &str) -> DeliveryStatus {
    let (event_id, event_type, correlation_id) = identify(body);
    tracing::warn!(?status, event_id, event_type, correlation_id, reason, "delivery not processed");
    if let Some(event_id) = event_id {
        note_failure(&state.db, &event_id, reason).await;
    }
    status
}

async fn deliver(State(state): State<AppState>, Path(topic): Path<String>, body: Bytes) -> DeliveryStatus {
    let event = match subscriber::read_todo_event(&body) {
        Ok(event) => event,
        Err(Poison(reason)) => return refuse(&state, &body, DeliveryStatus::Drop, &reason).await,
    };
    let Some((kind, message)) = notifications::text_for(&event) else {
        tracing::debug!(%topic, event_id = %event.id, "not an event worth a notification");
        return DeliveryStatus::Success;
    };
    let notification = match notifications::record(&state.db, &event, kind, &message).await {
        Ok(notification) => notification,
        Err(error) => return refuse(&state, &body, DeliveryStatus::Retry, &format!("database: {error}")).await,
    };
    if let Some(webhook) = &state.webhook {
        match webhook.deliver_once(&state.db, &notification).await {
            Ok(()) => {}
            Err(error @ WebhookError::Transient(_)) => {
                return refuse(&state, &body, DeliveryStatus::Retry, &error.to_string()).await;
            }
            Err(error @ WebhookError::Permanent(_)) => {
                return refuse(&state, &body, DeliveryStatus::Drop, &error.to_string()).await;
            }
        }
    }
    tracing::info!(event_id = %event.id, correlation_id = event.correlation_id.as_deref(), kind, "notified");
    DeliveryStatus::Success
}

async fn dead_letter(State(state): State<AppState>, Path(topic): Path<String>, body: Bytes) -> DeliveryStatus {
    state.admin.receive(&body, &topic).await
}
