//! The published event schemas (`schemas/events/`) as the consumers' contract: the envelope
//! every delivery must be (`cloudevent.json`) and, per event type and major version, the JSON
//! Schema its `data` must satisfy. They are compiled into the binary and compiled as validators
//! once, at start ([`EventSchemas::load`]).
//!
//! The schema files are closed (`additionalProperties: false`), which is right for checking
//! what the producer emits and wrong for a consumer: a producer one minor version ahead may add
//! an optional field (schemas/events/README.md), and a consumer reading closed would dead-letter
//! every such event during a rolling deploy. Consumers therefore get the *open reading* of each
//! schema ([`open_reading`]): the same constraints on every known field, unknown fields allowed.

use std::collections::HashMap;

use jsonschema::{PatternOptions, Validator};
use serde_json::Value;

use crate::catalog::TodoEventType;

/// The envelope schema.
pub const ENVELOPE: &str = include_str!("../../../schemas/events/cloudevent.json");

/// Every published data schema: (event type, major version, the file's text).
pub const DATA_SCHEMAS: [(TodoEventType, u32, &str); 5] = [
    (TodoEventType::Created, 1, include_str!("../../../schemas/events/todos.task.created/v1.json")),
    (TodoEventType::Updated, 1, include_str!("../../../schemas/events/todos.task.updated/v1.json")),
    (TodoEventType::Completed, 1, include_str!("../../../schemas/events/todos.task.completed/v1.json")),
    (TodoEventType::Reopened, 1, include_str!("../../../schemas/events/todos.task.reopened/v1.json")),
    (TodoEventType::Deleted, 1, include_str!("../../../schemas/events/todos.task.deleted/v1.json")),
];

/// Why a schema could not be compiled: a defect of this repository, found at start.
#[derive(Debug, thiserror::Error)]
#[error("event schema {name}: {detail}")]
pub struct SchemaError {
    pub name: String,
    pub detail: String,
}

/// The compiled validators a consumer checks each delivery with.
pub struct EventSchemas {
    envelope: Validator,
    data: HashMap<(TodoEventType, u32), Validator>,
}

impl std::fmt::Debug for EventSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSchemas").field("data", &self.data.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl EventSchemas {
    /// Compiles the envelope schema and the open reading of every data schema.
    pub fn load() -> Result<Self, SchemaError> {
        let envelope = compile("cloudevent.json", ENVELOPE, false)?;
        let mut data = HashMap::new();
        for (event_type, major, text) in DATA_SCHEMAS {
            data.insert((event_type, major), compile(&format!("{event_type}/v{major}.json"), text, true)?);
        }
        Ok(Self { envelope, data })
    }

    /// The envelope's violations, each as `<path>: <what>`; empty when it is valid.
    pub fn envelope_errors(&self, envelope: &Value) -> Vec<String> {
        errors(&self.envelope, envelope)
    }

    /// The violations of `data` under the open reading of `event_type`'s schema at `major`, or
    /// `None` when no such schema is published.
    pub fn data_errors(&self, event_type: TodoEventType, major: u32, data: &Value) -> Option<Vec<String>> {
        self.data.get(&(event_type, major)).map(|validator| errors(validator, data))
    }

    /// Whether this consumer reads `event_type` at `major`: whether [`DATA_SCHEMAS`] has it.
    pub fn reads_major(&self, event_type: TodoEventType, major: u32) -> bool {
        self.data.contains_key(&(event_type, major))
    }
}

fn compile(name: &str, text: &str, open: bool) -> Result<Validator, SchemaError> {
    let error = |detail: String| SchemaError { name: name.to_owned(), detail };
    let mut schema: Value = serde_json::from_str(text).map_err(|e| error(e.to_string()))?;
    if open {
        schema = open_reading(schema);
    }
    jsonschema::options()
        // `format` is an annotation only unless asked for: the `uuid` and `date-time` formats
        // are part of the contract.
        .should_validate_formats(true)
        // Linear-time matching: a delivery's strings come from outside.
        .with_pattern_options(PatternOptions::regex())
        .build(&schema)
        .map_err(|e| error(e.to_string()))
}

/// `schema` with every `additionalProperties: false` and `unevaluatedProperties: false`
/// removed, at any depth: what a consumer reads tolerantly.
pub fn open_reading(mut schema: Value) -> Value {
    fn open(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for keyword in ["additionalProperties", "unevaluatedProperties"] {
                    if map.get(keyword) == Some(&Value::Bool(false)) {
                        map.remove(keyword);
                    }
                }
                map.values_mut().for_each(open);
            }
            Value::Array(items) => items.iter_mut().for_each(open),
            _ => {}
        }
    }
    open(&mut schema);
    schema
}

/// At most this many violations are named in a reason: enough to fix the producer, short
/// enough for a log line and a dead letter's reason.
const MAX_ERRORS: usize = 5;

fn errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .take(MAX_ERRORS)
        .map(|error| {
            let path = error.instance_path.to_string();
            let message = truncated(&error.to_string(), 200);
            if path.is_empty() { message } else { format!("{path}: {message}") }
        })
        .collect()
}

fn truncated(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_compiles_and_reads_open() {
        let schemas = EventSchemas::load().unwrap();
        for t in TodoEventType::ALL {
            assert!(schemas.reads_major(t, 1), "{t}");
            assert!(!schemas.reads_major(t, 2), "{t}");
        }
        let closed: Value = serde_json::from_str(DATA_SCHEMAS[0].2).unwrap();
        assert_eq!(closed["additionalProperties"], json!(false));
        assert!(open_reading(closed).get("additionalProperties").is_none());
    }

    #[test]
    fn long_values_are_cut_in_reasons() {
        assert_eq!(truncated("abcdef", 3), "abc…");
        assert_eq!(truncated("abc", 3), "abc");
    }
}
