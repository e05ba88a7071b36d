//! The compatibility rules of `schemas/events/README.md`, checked against the examples each
//! schema version records (`<type>/examples/v<major>-*.json`: events as the producer published
//! them, never edited or removed once committed):
//!
//! - every example still validates against its version's schema, closed: a change that
//!   removes or renames a field, makes one required, changes a type or tightens a constraint
//!   past what was published breaks an example, and must be a new major version instead;
//! - every field the schema names appears in some example: a field added in a minor version
//!   comes with an example of it;
//! - the consumers' open reading accepts every example with a field it has never seen, which is
//!   what a producer one minor version ahead sends during a rolling deploy;
//! - the major version the code reads and publishes is the newest file of each type.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dapr_events::TodoEventType;
use dapr_events::catalog::SCHEMA_MAJOR_VERSION;
use dapr_events::delivery::read_todo_event;
use dapr_events::schema::{EventSchemas, open_reading};
use serde_json::{Value, json};

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/events")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (major, schema path) for every `v<major>.json` of `event_type`.
fn versions(event_type: TodoEventType) -> Vec<(u32, PathBuf)> {
    let dir = schemas_dir().join(event_type.as_str());
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name()?.to_str()?;
            let major = name.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()?;
            Some((major, path))
        })
        .collect();
    found.sort();
    found
}

fn examples(event_type: TodoEventType, major: u32) -> Vec<(PathBuf, Value)> {
    let dir = schemas_dir().join(event_type.as_str()).join("examples");
    let prefix = format!("v{major}-");
    let mut found: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
                .map(|p| {
                    let value = read_json(&p);
                    (p, value)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options().should_validate_formats(true).build(schema).expect("a valid schema")
}

#[test]
fn every_published_example_still_validates_against_its_schema_closed() {
    let envelope = validator(&read_json(&schemas_dir().join("cloudevent.json")));
    for event_type in TodoEventType::ALL {
        for (major, path) in versions(event_type) {
            let schema = read_json(&path);
            let closed = validator(&schema);
            let examples = examples(event_type, major);
            assert!(!examples.is_empty(), "{event_type} v{major} records no example");
            for (file, example) in &examples {
                let errors: Vec<String> = envelope.iter_errors(example).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{}: envelope: {errors:?}", file.display());
                assert_eq!(example["type"], event_type.as_str(), "{}", file.display());
                let errors: Vec<String> =
                    closed.iter_errors(&example["data"]).map(|e| format!("{}: {e}", e.instance_path)).collect();
                assert!(
                    errors.is_empty(),
                    "{} no longer validates against {}: {errors:?}",
                    file.display(),
                    path.display()
                );
            }
        }
    }
}

#[test]
fn every_field_of_a_schema_appears_in_an_example() {
    for event_type in TodoEventType::ALL {
        for (major, path) in versions(event_type) {
            let schema = read_json(&path);
            let named: BTreeSet<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
            let examples = examples(event_type, major);
            let shown: BTreeSet<String> = examples
                .iter()
                .flat_map(|(_, example)| example["data"].as_object().unwrap().keys().cloned().collect::<Vec<_>>())
                .collect();
            let missing: Vec<&&str> = named.iter().filter(|field| !shown.contains(**field)).collect();
            assert!(missing.is_empty(), "{}: no example shows {missing:?}; add one", path.display());
        }
    }
}

#[test]
fn consumers_read_every_example_with_a_field_from_a_newer_minor_version() {
    let schemas = EventSchemas::load().unwrap();
    for event_type in TodoEventType::ALL {
        for (major, path) in versions(event_type) {
            let open = validator(&open_reading(read_json(&path)));
            for (file, mut example) in examples(event_type, major) {
                example["data"]["fieldFromANewerMinorVersion"] = json!({"any": ["shape"]});
                assert!(open.is_valid(&example["data"]), "{}: the open reading refuses an added field", file.display());
                if major == SCHEMA_MAJOR_VERSION {
                    let read = read_todo_event(example.to_string().as_bytes(), &schemas);
                    assert!(read.is_ok(), "{}: a consumer drops it: {read:?}", file.display());
                }
            }
        }
    }
}

#[test]
fn the_code_reads_and_publishes_the_newest_major_version() {
    for event_type in TodoEventType::ALL {
        let newest = versions(event_type).last().map(|(major, _)| *major);
        assert_eq!(newest, Some(SCHEMA_MAJOR_VERSION), "{event_type}");
        assert!(event_type.schema_uri().ends_with(&format!("/v{SCHEMA_MAJOR_VERSION}.json")));
    }
}

/// The check can fail: a field removed from a schema breaks the examples that carry it.
#[test]
fn removing_a_field_breaks_the_examples() {
    let path = schemas_dir().join("todos.task.created/v1.json");
    let mut schema = read_json(&path);
    schema["properties"].as_object_mut().unwrap().remove("description");
    schema["required"] =
        json!(schema["required"].as_array().unwrap().iter().filter(|f| *f != "description").collect::<Vec<_>>());
    let closed = validator(&schema);
    let (_, example) = &examples(TodoEventType::Created, 1)[0];
    assert!(!closed.is_valid(&example["data"]), "a removed field must break a published example");
}
