//! The routes daprd calls on a consumer, and the answer to each delivery:
//!
//! | What happened | Answer |
//! | --- | --- |
//! | the handler applied it, or had before (a duplicate), or it is not of interest | `SUCCESS` |
//! | the handler refused it as transient (database unavailable, a downstream 5xx) | `RETRY`: the resiliency policy retries, then the dead-letter topic |
//! | not a CloudEvent, unknown type, unsupported schema major version, invalid data, or the handler refused it for good | `DROP`: to the dead-letter topic |
//!
//! Every refusal is logged with the event's id, type and correlation id, and its reason is
//! noted for the dead letter that may follow. The answer is always HTTP 200 with
//! `{"status": …}` (contract §3.4): daprd reads the status only from a 2xx answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dapr_events::TodoEventType;
use dapr_events::delivery::{self, Poison};
use dapr_events::subscription::{self, DeliveryStatus, Subscription};
use serde_json::Value;
use service_kit::db::run_to_completion;
use service_kit::problem::PathText;

use crate::dead_letters::DeadLetters;
use crate::handler::{EventHandler, Refusal};

#[derive(Clone)]
struct Deliveries<H> {
    handler: H,
    dead_letters: DeadLetters,
    pubsub_name: Arc<str>,
    app_id: Arc<str>,
}

/// `GET /dapr/subscribe`, `GET /dapr/config`, `POST /events/{topic}` (to `handler`) and
/// `POST /dead-letters/{topic}` (to the store). The caller puts them behind the app token.
pub fn routes<H: EventHandler>(handler: H, dead_letters: DeadLetters, pubsub_name: &str, app_id: &str) -> Router {
    Router::new()
        .route("/dapr/subscribe", get(subscribe::<H>))
        .route("/dapr/config", get(|| async { Json(serde_json::json!({})) }))
        .route("/events/{topic}", post(deliver::<H>))
        .route("/dead-letters/{topic}", post(dead_letter::<H>))
        .with_state(Deliveries { handler, dead_letters, pubsub_name: pubsub_name.into(), app_id: app_id.into() })
}

/// Each of the handler's topics delivered to `/events/<topic>`, with its dead-letter topic
/// delivered to `/dead-letters/<topic>`.
async fn subscribe<H: EventHandler>(State(deliveries): State<Deliveries<H>>) -> Json<Vec<Subscription>> {
    Json(subscription::with_dead_letters(
        &deliveries.pubsub_name,
        &deliveries.app_id,
        H::TOPICS.iter().copied().map(TodoEventType::topic),
    ))
}

async fn deliver<H: EventHandler>(State(deliveries): State<Deliveries<H>>, body: Bytes) -> Answer {
    let refusal = match delivery::read_todo_event(&body) {
        Err(Poison(reason)) => Refusal::Drop(reason),
        // To its end even if daprd gives up waiting and closes the connection: a unit of work
        // is never abandoned half-way (see `service_kit::db::run_to_completion`).
        Ok(event) => match run_to_completion({
            let handler = deliveries.handler.clone();
            async move { handler.handle(&event).await }
        })
        .await
        {
            Ok(()) => return Answer(DeliveryStatus::Success),
            Err(refusal) => refusal,
        },
    };
    let (status, reason) = match refusal {
        Refusal::Retry(reason) => (DeliveryStatus::Retry, reason),
        Refusal::Drop(reason) => (DeliveryStatus::Drop, reason),
    };
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = |name: &str| envelope.get(name).and_then(Value::as_str).map(str::to_owned);
    let (event_id, event_type, correlation_id) = (text("id"), text("type"), text("correlationid"));
    tracing::warn!(?status, event_id, event_type, correlation_id, reason, "delivery not processed");
    if let Some(event_id) = event_id {
        deliveries.dead_letters.note_failure(&event_id, &reason).await;
    }
    Answer(status)
}

/// Parks what arrives on a dead-letter topic. SUCCESS once stored; RETRY when the database is
/// unavailable (the letter is not lost: daprd delivers it again).
async fn dead_letter<H: EventHandler>(
    State(deliveries): State<Deliveries<H>>,
    PathText(topic): PathText,
    body: Bytes,
) -> Answer {
    match deliveries.dead_letters.park(&body, &topic).await {
        Ok(()) => Answer(DeliveryStatus::Success),
        Err(error) => {
            tracing::error!(%error, %topic, "could not store a dead letter; asking daprd to retry");
            Answer(DeliveryStatus::Retry)
        }
    }
}

/// A delivery's answer as daprd reads it.
struct Answer(DeliveryStatus);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (StatusCode::OK, Json(serde_json::json!({ "status": self.0 }))).into_response()
    }
}
