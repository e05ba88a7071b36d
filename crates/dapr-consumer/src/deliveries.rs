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
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use dapr_events::delivery::{self, Poison, TodoEvent};
use dapr_events::schema::EventSchemas;
use dapr_events::subscription::{self, DeliveryStatus, Subscription};
use dapr_events::{TodoEventType, timestamp};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use service_kit::db::run_to_completion;
use service_kit::openapi::SidecarProblems;
use service_kit::problem::PathText;
use service_kit::telemetry;
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dead_letters::DeadLetters;
use crate::handler::{EventHandler, Refusal};
use crate::metrics::{self, Progress};

/// The OpenAPI tag of these routes.
pub const TAG: &str = "dapr";

/// A handler with its type erased, so the routes need no type parameter.
type Handle = Arc<dyn Fn(TodoEvent) -> BoxFuture<'static, Result<(), Refusal>> + Send + Sync>;

#[derive(Clone)]
struct Deliveries {
    handle: Handle,
    topics: &'static [TodoEventType],
    schemas: Arc<EventSchemas>,
    dead_letters: DeadLetters,
    pubsub_name: Arc<str>,
    app_id: Arc<str>,
    progress: Arc<Progress>,
}

/// `GET /dapr/subscribe`, `GET /dapr/config`, `POST /events/{topic}` (to `handler`, each
/// delivery checked against `schemas` first) and `POST /dead-letters/{topic}` (to the store).
/// The caller puts them behind the app token.
pub fn routes<H: EventHandler>(
    handler: H,
    schemas: Arc<EventSchemas>,
    dead_letters: DeadLetters,
    pubsub_name: &str,
    app_id: &str,
    progress: Arc<Progress>,
) -> OpenApiRouter {
    metrics::register(H::TOPICS);
    let handle: Handle = Arc::new(move |event: TodoEvent| {
        let handler = handler.clone();
        Box::pin(async move { handler.handle(&event).await })
    });
    OpenApiRouter::new()
        .routes(routes!(subscribe))
        .routes(routes!(config))
        .routes(routes!(deliver))
        .routes(routes!(dead_letter))
        .with_state(Deliveries {
            handle,
            topics: H::TOPICS,
            schemas,
            dead_letters,
            pubsub_name: pubsub_name.into(),
            app_id: app_id.into(),
            progress,
        })
}

/// The subscriptions daprd reads at start: each topic delivered to `/events/<topic>`, with its
/// dead-letter topic delivered to `/dead-letters/<topic>`.
#[utoipa::path(get, path = "/dapr/subscribe", tag = TAG, security(("app_token" = [])), responses(
    (status = 200, description = "The app's subscriptions.", body = Vec<Subscription>),
    SidecarProblems,
))]
async fn subscribe(State(deliveries): State<Deliveries>) -> Json<Vec<Subscription>> {
    Json(subscription::with_dead_letters(
        &deliveries.pubsub_name,
        &deliveries.app_id,
        deliveries.topics.iter().copied().map(TodoEventType::topic),
    ))
}

/// The app's Dapr configuration: none (the defaults).
#[utoipa::path(get, path = "/dapr/config", tag = TAG, security(("app_token" = [])), responses(
    (status = 200, description = "An empty object.", body = Object, example = json!({})),
    SidecarProblems,
))]
async fn config() -> Json<Value> {
    Json(serde_json::json!({}))
}

/// daprd's answer from the app, as the pub/sub API defines it.
#[derive(Serialize, utoipa::ToSchema)]
struct DeliveryAnswer {
    status: DeliveryStatus,
}

/// A delivery of a todo event (a CloudEvent, as daprd posts it).
///
/// `SUCCESS` once applied (or applied before); `RETRY` for a transient failure; `DROP` for what
/// can never be applied: not a CloudEvent 1.0, an unknown type, a `dataschema` major version
/// this consumer does not read, or `data` that breaks its JSON Schema (`schemas/events/`).
#[utoipa::path(post, path = "/events/{topic}", tag = TAG, security(("app_token" = [])),
    params(("topic" = String, Path, description = "The topic, the event type's own name.", example = "todos.task.created")),
    request_body(content = Option<Value>, content_type = "application/cloudevents+json", description = "A CloudEvent 1.0 of a todo event type. Any body is answered (200, `DROP` for what is not one), as the pub/sub API requires."),
    responses(
        (status = 200, description = "What daprd should do with the delivery.", body = DeliveryAnswer, example = json!({"status": "SUCCESS"})),
        SidecarProblems,
))]
async fn deliver(State(deliveries): State<Deliveries>, PathText(topic): PathText, body: Bytes) -> Answer {
    let topic = deliveries.known_topic(&topic);
    // A child of the request's server span, which continues the `traceparent` daprd sent, so
    // the handler and its transaction are in the trace of the request that changed the todo.
    let span = telemetry::consumer_span(topic);
    let started = Instant::now();
    let (status, event_time) = process(&deliveries, &body).instrument(span).await;
    deliveries.progress.delivered(topic, status, started.elapsed(), event_time);
    Answer(status)
}

/// Reads, checks and handles one delivery; its answer, and the event's time when it was read.
async fn process(deliveries: &Deliveries, body: &[u8]) -> (DeliveryStatus, Option<DateTime<Utc>>) {
    let (refusal, event_time) = match delivery::read_todo_event(body, &deliveries.schemas) {
        Err(Poison(reason)) => (Refusal::Drop(reason), None),
        Ok(event) => {
            tracing::Span::current().record("messaging.message.id", event.id.as_str());
            let event_time = event.envelope.get("time").and_then(Value::as_str).and_then(|t| timestamp::parse(t).ok());
            // To its end even if daprd gives up waiting and closes the connection: a unit of work
            // is never abandoned half-way (see `service_kit::db::run_to_completion`).
            match run_to_completion((deliveries.handle)(event).in_current_span()).await {
                Ok(()) => return (DeliveryStatus::Success, event_time),
                Err(refusal) => (refusal, event_time),
            }
        }
    };
    let (status, reason) = match refusal {
        Refusal::Retry(reason) => (DeliveryStatus::Retry, reason),
        Refusal::Drop(reason) => (DeliveryStatus::Drop, reason),
    };
    tracing::Span::current().record("otel.status_code", "ERROR");
    let envelope: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| envelope.get(name).and_then(Value::as_str).map(str::to_owned);
    let (event_id, event_type, correlation_id) = (text("id"), text("type"), text("correlationid"));
    tracing::warn!(?status, event_id, event_type, correlation_id, reason, "delivery not processed");
    if let Some(event_id) = event_id {
        deliveries.dead_letters.note_failure(&event_id, &reason).await;
    }
    (status, event_time)
}

impl Deliveries {
    /// `topic` if it is one of this consumer's, else `unknown`: a metric label must not take
    /// whatever a caller puts in the path.
    fn known_topic(&self, topic: &str) -> &'static str {
        self.topics.iter().map(|t| t.topic()).find(|known| *known == topic).unwrap_or("unknown")
    }
}

/// A delivery from a dead-letter topic, stored for an operator (`/admin/dead-letters`).
///
/// `SUCCESS` once stored; `RETRY` when the database is unavailable (the letter is not lost:
/// daprd delivers it again).
#[utoipa::path(post, path = "/dead-letters/{topic}", tag = TAG, security(("app_token" = [])),
    params(("topic" = String, Path, description = "The original topic of the dead letter.", example = "todos.task.created")),
    request_body(content = Option<Value>, content_type = "application/cloudevents+json", description = "The CloudEvent that was dropped or could not be delivered; any body is stored."),
    responses(
        (status = 200, description = "What daprd should do with the delivery.", body = DeliveryAnswer, example = json!({"status": "SUCCESS"})),
        SidecarProblems,
))]
async fn dead_letter(State(deliveries): State<Deliveries>, PathText(topic): PathText, body: Bytes) -> Answer {
    match deliveries.dead_letters.park(&body, &topic).await {
        Ok(()) => {
            metrics::dead_letter_received(deliveries.known_topic(&topic));
            Answer(DeliveryStatus::Success)
        }
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
        (StatusCode::OK, Json(DeliveryAnswer { status: self.0 })).into_response()
    }
}
