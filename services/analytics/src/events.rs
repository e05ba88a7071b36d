//! The routes the Dapr sidecar calls. Answers:
//!
//! | What happened | Answer |
//! | --- | --- |
//! | logged and projected, or consumed before (a duplicate) | `SUCCESS` |
//! | database unavailable or failing | `RETRY` (the resiliency policy retries, then the dead-letter topic) |
//! | not a CloudEvent, unknown type, unsupported schema major version, invalid data | `DROP` (to the dead-letter topic) |
//!
//! Out-of-order events and gaps are applied as they come (see [`crate::projection`]).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use dapr_events::TodoEventType;
use dapr_events::subscriber::{self, DeliveryStatus, Poison, Subscription};
use service_kit::consumer::refuse;
use service_kit::problem::PathText;

use crate::projection;
use crate::startup::AppState;

/// The routes daprd calls; the caller puts them behind the app-token check.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dapr/subscribe", get(subscribe))
        .route("/dapr/config", get(|| async { Json(serde_json::json!({})) }))
        .route("/events/{topic}", post(deliver))
        .route("/dead-letters/{topic}", post(dead_letter))
}

/// Every todo topic, each with its dead-letter topic.
async fn subscribe(State(state): State<AppState>) -> Json<Vec<Subscription>> {
    Json(subscriber::with_dead_letters(&state.pubsub_name, &state.app_id, TodoEventType::ALL.map(TodoEventType::topic)))
}

async fn deliver(State(state): State<AppState>, body: Bytes) -> DeliveryStatus {
    let event = match subscriber::read_todo_event(&body) {
        Ok(event) => event,
        Err(Poison(reason)) => return refuse(&state.db, &body, DeliveryStatus::Drop, &reason).await,
    };
    match projection::consume(&state.db, &event).await {
        Ok(fresh) => {
            tracing::debug!(event_id = %event.id, event_type = %event.event_type, duplicate = !fresh, "consumed");
            DeliveryStatus::Success
        }
        Err(error) => refuse(&state.db, &body, DeliveryStatus::Retry, &format!("database: {error}")).await,
    }
}

async fn dead_letter(State(state): State<AppState>, PathText(topic): PathText, body: Bytes) -> DeliveryStatus {
    state.admin.receive(&body, &topic).await
}
