//! Reading a delivered todo event, or recognising it as poison (answered `DROP`).

use serde_json::Value;

use crate::catalog::{SCHEMA_MAJOR_VERSION, TodoEventData, TodoEventType};

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
}
