//! The subscriber side of the Dapr pub/sub HTTP contract (https://docs.dapr.io/reference/api/pubsub_api/,
//! pinned against daprd in `crates/dapr-contract`): what an app answers to `GET /dapr/subscribe`, how it answers each delivery
//! (`SUCCESS`, `RETRY`, `DROP`), the `APP_API_TOKEN` check on every route the sidecar calls, and
//! reading a delivered todo event — or recognising it as poison.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{SCHEMA_MAJOR_VERSION, TodoEventData, TodoEventType};
use crate::publish::API_TOKEN_HEADER;

/// One entry of the app's `GET /dapr/subscribe` answer (v1 shape: one route per topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub pubsubname: String,
    pub topic: String,
    pub route: String,
    /// Where daprd sends what this subscription drops or cannot deliver; without one a failed
    /// delivery is acknowledged and gone (contract §3.5, §11).
    #[serde(rename = "deadLetterTopic", skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The dead-letter topic of `topic` for consumer `app_id`: `<topic>.<app_id>.deadletter`. One
/// per consumer, because every app id receives every message of a topic it subscribes to: a
/// shared dead-letter topic would put one consumer's poison in every consumer's store.
pub fn dead_letter_topic(app_id: &str, topic: &str) -> String {
    format!("{topic}.{app_id}.deadletter")
}

/// A consumer's programmatic subscriptions: each topic delivered to `/events/<topic>` with its
/// dead-letter topic, and each dead-letter topic delivered to `/dead-letters/<topic>` (the
/// original topic's name, so the store knows where a replay goes).
pub fn with_dead_letters<'a>(
    pubsub_name: &str,
    app_id: &str,
    topics: impl IntoIterator<Item = &'a str>,
) -> Vec<Subscription> {
    let mut list = Vec::new();
    for topic in topics {
        let dead = dead_letter_topic(app_id, topic);
        list.push(Subscription {
            pubsubname: pubsub_name.to_owned(),
            topic: topic.to_owned(),
            route: format!("/events/{topic}"),
            dead_letter_topic: Some(dead.clone()),
            metadata: BTreeMap::new(),
        });
        list.push(Subscription {
            pubsubname: pubsub_name.to_owned(),
            topic: dead,
            route: format!("/dead-letters/{topic}"),
            dead_letter_topic: None,
            metadata: BTreeMap::new(),
        });
    }
    list
}

/// What the app tells daprd about one delivery (contract §3.4). Always sent with HTTP 200:
/// daprd reads the status only from a 2xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Processed (or already processed before): acknowledge.
    Success,
    /// A transient failure: deliver again per the resiliency policy, then dead-letter.
    Retry,
    /// Poison: never deliverable; daprd sends it to the dead-letter topic.
    Drop,
}

impl IntoResponse for DeliveryStatus {
    fn into_response(self) -> Response {
        (StatusCode::OK, Json(serde_json::json!({ "status": self }))).into_response()
    }
}

/// The token daprd sends as `dapr-api-token` when it runs with `APP_API_TOKEN` (contract §8.2).
#[derive(Debug, Clone, Default)]
pub struct AppToken(pub Option<Arc<str>>);

/// Middleware for the routes daprd calls: with a token configured, a request without the same
/// `dapr-api-token` gets 401 and is not handled. Health routes stay outside it (daprd's health
/// probe carries no token).
pub async fn require_app_token(State(token): State<AppToken>, request: Request, next: Next) -> Response {
    let Some(expected) = token.0 else { return next.run(request).await };
    let presented = request.headers().get(API_TOKEN_HEADER).and_then(|v| v.to_str().ok());
    if !token_matches(presented, &expected) {
        tracing::warn!(path = %request.uri().path(), "request without a valid dapr-api-token refused");
        let problem = serde_json::json!({
            "type": "https://dapr-todo.example/problems/unauthorized",
            "title": "Unauthorized",
            "status": 401,
            "detail": "This route is called by the Dapr sidecar and needs its dapr-api-token header.",
            "errors": [{"field": API_TOKEN_HEADER, "detail": "missing or wrong"}]
        });
        let mut response = (StatusCode::UNAUTHORIZED, Json(problem)).into_response();
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/problem+json"));
        return response;
    }
    next.run(request).await
}

/// Whether a presented token equals the expected one, compared in constant time (for equal
/// lengths) so response timing does not reveal how much of a guess was right.
pub fn token_matches(presented: Option<&str>, expected: &str) -> bool {
    presented.is_some_and(|p| {
        p.len() == expected.len() && p.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

/// A delivered todo event, checked: what a consumer acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct TodoEvent {
    /// The CloudEvent id: the idempotency key (stable across redeliveries and re-publishing).
    pub id: String,
    pub event_type: TodoEventType,
    pub data: TodoEventData,
    pub correlation_id: Option<String>,
    /// The whole envelope as delivered, for an audit log or a dead-letter store.
    pub envelope: Value,
}

/// Why a delivery can never be processed: answered with DROP (and logged with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Poison(pub String);

/// Reads a delivery body as a todo event (tolerant of unknown fields), or says why it is
/// poison: not a CloudEvent, an unknown type, a schema major version we do not read, or data
/// that does not validate.
pub fn read_todo_event(body: &[u8]) -> Result<TodoEvent, Poison> {
    let envelope: Value = serde_json::from_slice(body).map_err(|e| Poison(format!("the body is not JSON: {e}")))?;
    let Value::Object(attributes) = &envelope else {
        return Err(Poison("the body is not a CloudEvent (not a JSON object)".into()));
    };
    let text = |name: &str| attributes.get(name).and_then(Value::as_str).filter(|v| !v.is_empty());
    for required in ["id", "source", "type", "specversion"] {
        if text(required).is_none() {
            return Err(Poison(format!("the CloudEvent has no {required}")));
        }
    }
    let id = text("id").expect("checked").to_owned();
    let event_type: TodoEventType =
        text("type").expect("checked").parse().map_err(|e: crate::catalog::UnknownEventType| Poison(e.to_string()))?;
    if let Some(schema) = text("dataschema") {
        match schema_major_version(schema) {
            Some(SCHEMA_MAJOR_VERSION) => {}
            Some(major) => return Err(Poison(format!("schema major version {major} is not supported ({schema})"))),
            None => return Err(Poison(format!("dataschema {schema:?} names no major version"))),
        }
    }
    let data = attributes.get("data").ok_or_else(|| Poison("the CloudEvent has no data".into()))?;
    let data: TodoEventData =
        serde_path_to_error::deserialize(data).map_err(|e| Poison(format!("data.{}: {}", e.path(), e.inner())))?;
    validate(&data, event_type)?;
    Ok(TodoEvent { id, event_type, correlation_id: text("correlationid").map(str::to_owned), data, envelope })
}

/// `…/<type>/v<major>.json` → major.
fn schema_major_version(schema: &str) -> Option<u32> {
    schema.rsplit('/').next()?.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
}

/// What the schema promises beyond types: a positive version, a title, a user, and a status
/// that agrees with the event.
fn validate(data: &TodoEventData, event_type: TodoEventType) -> Result<(), Poison> {
    let fail = |field: &str, detail: &str| Err(Poison(format!("data.{field}: {detail}")));
    if data.version < 1 {
        return fail("version", "must be at least 1");
    }
    if data.user_id.is_empty() {
        return fail("userId", "must not be empty");
    }
    if data.title.trim().is_empty() {
        return fail("title", "must not be empty");
    }
    match event_type {
        TodoEventType::Completed if data.completed_at.is_none() => fail("completedAt", "a completed todo has one"),
        TodoEventType::Deleted if data.deleted_at.is_none() => fail("deletedAt", "a deleted todo has one"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(overrides: Value) -> Value {
        let mut event = json!({
            "specversion": "1.0", "id": "e1", "source": "todo", "type": "todos.task.completed",
            "dataschema": "https://dapr-todo.example/schemas/events/todos.task.completed/v1.json",
            "correlationid": "c1", "topic": "todos.task.completed", "pubsubname": "pubsub",
            "data": {"todoId": "0190f2a4-8c1e-7d3a-9b7e-2f1c3d4e5f60", "userId": "ada", "title": "t",
                     "description": null, "dueAt": null, "status": "completed", "version": 2,
                     "createdAt": "2026-11-22T10:00:00Z", "updatedAt": "2026-11-22T11:00:00Z",
                     "completedAt": "2026-11-22T11:00:00Z", "futureField": 1}
        });
        let (Value::Object(target), Value::Object(changes)) = (&mut event, overrides) else { unreachable!() };
        for (key, value) in changes {
            if key == "data" {
                for (k, v) in value.as_object().unwrap() {
                    target["data"][k] = v.clone();
                }
            } else if value.is_null() {
                target.remove(&key);
            } else {
                target.insert(key, value);
            }
        }
        event
    }

    fn read(value: Value) -> Result<TodoEvent, Poison> {
        read_todo_event(value.to_string().as_bytes())
    }

    #[test]
    fn reads_a_valid_event_tolerating_unknown_fields() {
        let event = read(event(json!({}))).unwrap();
        assert_eq!((event.id.as_str(), event.event_type), ("e1", TodoEventType::Completed));
        assert_eq!(event.correlation_id.as_deref(), Some("c1"));
        assert_eq!(event.data.version, 2);
    }

    #[test]
    fn poison_is_named() {
        let reason = |value: Value| read(value).unwrap_err().0;
        assert!(read_todo_event(b"not json").unwrap_err().0.contains("not JSON"));
        assert!(reason(json!([1])).contains("not a JSON object"));
        assert!(reason(event(json!({"id": null}))).contains("no id"));
        assert!(reason(event(json!({"type": "todos.task.exploded"}))).contains("todos.task.exploded"));
        assert!(
            reason(event(json!({"dataschema": "https://x/todos.task.completed/v2.json"}))).contains("major version 2")
        );
        assert!(reason(event(json!({"data": {"version": "two"}}))).contains("data.version"));
        assert!(reason(event(json!({"data": {"version": 0}}))).contains("data.version"));
        assert!(reason(event(json!({"data": {"completedAt": null}}))).contains("data.completedAt"));
        assert!(reason(event(json!({"data": {"todoId": "nope"}}))).contains("data.todoId"));
    }

    #[test]
    fn answers_and_subscriptions_have_daprs_shape() {
        let subscription = Subscription {
            pubsubname: "pubsub".into(),
            topic: "todos.task.created".into(),
            route: "/events/created".into(),
            dead_letter_topic: Some(dead_letter_topic("notification", "todos.task.created")),
            metadata: BTreeMap::new(),
        };
        assert_eq!(
            serde_json::to_value(&subscription).unwrap(),
            json!({"pubsubname": "pubsub", "topic": "todos.task.created", "route": "/events/created",
                   "deadLetterTopic": "todos.task.created.notification.deadletter"})
        );
        assert_eq!(serde_json::to_value(DeliveryStatus::Retry).unwrap(), json!("RETRY"));
    }
}
