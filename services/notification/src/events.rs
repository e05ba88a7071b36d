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
use axum::extract::State;
use axum::routing::{get, post};
use dapr_events::TodoEventType;
use dapr_events::subscriber::{self, DeliveryStatus, Poison, Subscription};
use service_kit::consumer::refuse;
use service_kit::problem::PathText;

use crate::notifications;
use crate::startup::AppState;
use crate::webhook::WebhookError;

/// The topics this service consumes.
pub const TOPICS: [TodoEventType; 2] = [TodoEventType::Created, TodoEventType::Completed];

/// The routes daprd calls; the caller puts them behind the app-token check.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dapr/subscribe", get(subscribe))
        .route("/dapr/config", get(|| async { Json(serde_json::json!({})) }))
        .route("/events/{topic}", post(deliver))
        .route("/dead-letters/{topic}", post(dead_letter))
}

async fn subscribe(State(state): State<AppState>) -> Json<Vec<Subscription>> {
    Json(subscriber::with_dead_letters(&state.pubsub_name, &state.app_id, TOPICS.map(TodoEventType::topic)))
}

async fn deliver(State(state): State<AppState>, PathText(topic): PathText, body: Bytes) -> DeliveryStatus {
    let event = match subscriber::read_todo_event(&body) {
        Ok(event) => event,
        Err(Poison(reason)) => return refuse(&state.db, &body, DeliveryStatus::Drop, &reason).await,
    };
    let Some((kind, message)) = notifications::text_for(&event) else {
        tracing::debug!(%topic, event_id = %event.id, "not an event worth a notification");
        return DeliveryStatus::Success;
    };
    let notification = match notifications::record(&state.db, &event, kind, &message).await {
        Ok(notification) => notification,
        Err(error) => return refuse(&state.db, &body, DeliveryStatus::Retry, &format!("database: {error}")).await,
    };
    if let Some(webhook) = &state.webhook {
        match webhook.deliver_once(&state.db, &notification).await {
            Ok(()) => {}
            Err(error @ WebhookError::Transient(_)) => {
                return refuse(&state.db, &body, DeliveryStatus::Retry, &error.to_string()).await;
            }
            Err(error @ WebhookError::Permanent(_)) => {
                return refuse(&state.db, &body, DeliveryStatus::Drop, &error.to_string()).await;
            }
        }
    }
    tracing::info!(event_id = %event.id, correlation_id = event.correlation_id.as_deref(), kind, "notified");
    DeliveryStatus::Success
}

async fn dead_letter(State(state): State<AppState>, PathText(topic): PathText, body: Bytes) -> DeliveryStatus {
    state.admin.receive(&body, &topic).await
}
