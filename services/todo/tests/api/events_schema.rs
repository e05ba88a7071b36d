//! Every event the service emits validates against its JSON Schema in `schemas/events/`.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(every_emitted_event_matches_its_schema);

fn schema_for(event_type: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/events").join(event_type).join("v1.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no schema at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

async fn every_emitted_event_matches_its_schema(backend: Backend) {
    let (app, sidecar) = TestApp::spawn(backend).await;
    let todo = app
        .post_json(
            "/todos",
            &json!({"userId": "schema", "title": "t", "description": "d", "dueAt": "2026-12-24T18:00:00Z"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let path = format!("/todos/{}", todo["id"].as_str().unwrap());
    app.patch_json(&path, &json!({"title": "t2", "dueAt": null})).await;
    app.post_empty(&format!("{path}/complete")).await;
    app.post_empty(&format!("{path}/reopen")).await;
    app.http.delete(app.url(&path)).send().await.unwrap();
    let published = sidecar.wait_for_accepted(5).await;

    let time_format = regex_lite_time();
    let mut types = Vec::new();
    for record in &published {
        let event = record.json();
        let event_type = event["type"].as_str().unwrap().to_owned();
        let schema = schema_for(&event_type);
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let errors: Vec<String> =
            validator.iter_errors(&event["data"]).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "{event_type} does not match its schema: {errors:?}\n{event}");
        assert_eq!(event["dataschema"], schema["$id"], "dataschema names the schema file");
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(record.topic, event_type, "published to the topic of the same name");
        assert!(time_format(event["time"].as_str().unwrap()), "time has sub-second precision: {}", event["time"]);

        // The validator really checks: the same data with a field removed must fail.
        let mut broken = event["data"].clone();
        broken.as_object_mut().unwrap().remove("version");
        assert!(!validator.is_valid(&broken), "{event_type} schema accepted data without a version");
        types.push(event_type);
    }
    assert_eq!(
        types,
        [
            "todos.task.created",
            "todos.task.updated",
            "todos.task.completed",
            "todos.task.reopened",
            "todos.task.deleted"
        ]
    );
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn regex_lite_time() -> impl Fn(&str) -> bool {
    |t: &str| {
        t.len() == 27 && t.ends_with('Z') && t.as_bytes()[19] == b'.' && chrono::DateTime::parse_from_rfc3339(t).is_ok()
    }
}
