//! Reading a delivered todo event, or recognising it as poison (answered `DROP`): the
//! envelope and the `data` are checked against the published schemas (`crate::schema`), so what
//! a consumer accepts is exactly what the contract promises.

use serde_json::Value;

use crate::catalog::{SCHEMA_BASE_URI, SCHEMA_MAJOR_VERSION, TodoEventData, TodoEventType};
use crate::schema::EventSchemas;

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

/// Why a delivery can never be processed: answered with DROP, logged, and kept as the dead
/// letter's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Poison(pub String);

/// Reads a delivery body as a todo event, or says why it is poison: not JSON, an envelope that
/// breaks `cloudevent.json`, an unknown type, a `dataschema` this consumer does not read, or
/// `data` that breaks the (open reading of the) schema of its type and major version.
pub fn read_todo_event(body: &[u8], schemas: &EventSchemas) -> Result<TodoEvent, Poison> {
    let envelope: Value = serde_json::from_slice(body).map_err(|e| Poison(format!("the body is not JSON: {e}")))?;
    let violations = schemas.envelope_errors(&envelope);
    if !violations.is_empty() {
        return Err(Poison(format!("not a CloudEvent 1.0 (cloudevent.json): {}", violations.join("; "))));
    }
    let text = |name: &str| envelope.get(name).and_then(Value::as_str);
    let id = text("id").unwrap_or_default().to_owned();
    let event_type: TodoEventType = text("type")
        .unwrap_or_default()
        .parse()
        .map_err(|e: crate::catalog::UnknownEventType| Poison(e.to_string()))?;
    let major = match text("dataschema") {
        None => SCHEMA_MAJOR_VERSION,
        Some(uri) => schema_major_version(uri, event_type)
            .ok_or_else(|| Poison(format!("dataschema {uri:?} is not a schema of {event_type}")))?,
    };
    if !schemas.reads_major(event_type, major) {
        return Err(Poison(format!("{event_type} schema major version {major} is not supported")));
    }
    let data = &envelope["data"];
    let violations = schemas.data_errors(event_type, major, data).unwrap_or_default();
    if !violations.is_empty() {
        return Err(Poison(format!("data breaks {event_type}/v{major}.json: {}", violations.join("; "))));
    }
    let data: TodoEventData =
        serde_path_to_error::deserialize(data).map_err(|e| Poison(format!("data.{}: {}", e.path(), e.inner())))?;
    let correlation_id = text("correlationid").map(str::to_owned);
    Ok(TodoEvent { id, event_type, correlation_id, data, envelope })
}

/// `{SCHEMA_BASE_URI}/<type>/v<major>.json` → major, for `event_type`'s own schemas only.
fn schema_major_version(uri: &str, event_type: TodoEventType) -> Option<u32> {
    let file = uri.strip_prefix(SCHEMA_BASE_URI)?.strip_prefix('/')?.strip_prefix(event_type.as_str())?;
    file.strip_prefix("/v")?.strip_suffix(".json")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::LazyLock;

    static SCHEMAS: LazyLock<EventSchemas> = LazyLock::new(|| EventSchemas::load().unwrap());

    fn event(overrides: Value) -> Value {
        let mut event = json!({
            "specversion": "1.0", "id": "e1", "source": "todo", "type": "todos.task.completed",
            "dataschema": "https://dapr-todo.example/schemas/events/todos.task.completed/v1.json",
            "datacontenttype": "application/json",
            "correlationid": "c1", "topic": "todos.task.completed", "pubsubname": "pubsub",
            "data": {"todoId": "0190f2a4-8c1e-7d3a-9b7e-2f1c3d4e5f60", "userId": "ada", "title": "t",
                     "description": null, "dueAt": null, "status": "completed", "version": 2,
                     "createdAt": "2026-11-22T10:00:00.000000Z", "updatedAt": "2026-11-22T11:00:00.000000Z",
                     "completedAt": "2026-11-22T11:00:00.000000Z", "futureField": 1}
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
        read_todo_event(value.to_string().as_bytes(), &SCHEMAS)
    }

    #[test]
    fn reads_a_valid_event_tolerating_unknown_fields() {
        let event = read(event(json!({}))).unwrap();
        assert_eq!((event.id.as_str(), event.event_type), ("e1", TodoEventType::Completed));
        assert_eq!(event.correlation_id.as_deref(), Some("c1"));
        assert_eq!(event.data.version, 2);
        assert!(read(event_without_dataschema()).is_ok(), "no dataschema reads as the current major");
    }

    fn event_without_dataschema() -> Value {
        event(json!({"dataschema": null}))
    }

    #[test]
    fn poison_is_named() {
        let reason = |value: Value| read(value).unwrap_err().0;
        assert!(read_todo_event(b"not json", &SCHEMAS).unwrap_err().0.contains("not JSON"));
        assert!(reason(json!([1])).contains("not a CloudEvent"));
        assert!(reason(event(json!({"id": null}))).contains("\"id\""));
        assert!(reason(event(json!({"specversion": "0.3"}))).contains("/specversion"));
        assert!(reason(event(json!({"type": "todos.task.exploded"}))).contains("todos.task.exploded"));
        assert!(
            reason(event(
                json!({"dataschema": "https://dapr-todo.example/schemas/events/todos.task.completed/v2.json"})
            ))
            .contains("major version 2")
        );
        assert!(
            reason(event(json!({"dataschema": "https://dapr-todo.example/schemas/events/todos.task.created/v1.json"})))
                .contains("not a schema of todos.task.completed")
        );
        assert!(reason(event(json!({"data": {"version": "two"}}))).contains("/version"));
        assert!(reason(event(json!({"data": {"version": 0}}))).contains("/version"));
        assert!(reason(event(json!({"data": {"completedAt": null}}))).contains("/completedAt"));
        assert!(reason(event(json!({"data": {"todoId": "nope"}}))).contains("/todoId"));
    }

    /// What a hostile producer sent with a valid app token, each answered SUCCESS before the
    /// consumers read through the schemas.
    #[test]
    fn schema_breaking_data_is_poison() {
        let reason = |data: Value| read(event(json!({"data": data}))).unwrap_err().0;
        assert!(reason(json!({"userId": "ada lovelace"})).contains("/userId"));
        assert!(reason(json!({"title": "t".repeat(100_000)})).contains("/title"));
        assert!(reason(json!({"title": "nul\u{0}inside"})).contains("/title"));
        assert!(reason(json!({"description": "bell\u{7}"})).contains("/description"));
        assert!(reason(json!({"updatedAt": "+10000-01-01T00:00:00.000000Z"})).contains("/updatedAt"));
        assert!(reason(json!({"status": "open"})).contains("/status"));
    }
}
