//! What a hostile client tried: a date range that overflowed the calendar (a panic, so no
//! answer at all), and events that break the published schema (counted before).

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Backend, spawn, todo_event};
use crate::on_both_backends;

on_both_backends!(dates_past_year_9999_are_refused, schema_breaking_events_are_dropped_and_not_counted);

async fn dates_past_year_9999_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    for query in [
        "from=%2B262142-12-31&to=%2B262142-12-31",
        "from=2026-01-01&to=%2B10000-01-01",
        "from=99999-01-01&to=99999-01-02",
    ] {
        let (status, problem) = app.get_json(&format!("/analytics/daily?{query}")).await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert!(problem["errors"][0]["field"].is_string(), "{problem}");
    }
    let (status, body) = app.get_json("/analytics/daily?from=9999-12-31&to=9999-12-31").await;
    assert_eq!(status, 200, "the last day there is: {body}");
    assert_eq!(body["days"], json!([{"date": "9999-12-31", "created": 0, "completed": 0}]));
    app.stop().await;
}

async fn schema_breaking_events_are_dropped_and_not_counted(backend: Backend) {
    let app = spawn(backend).await;
    let mut spaced = todo_event("todos.task.created", Uuid::now_v7(), "ada", "t", 1, 1);
    spaced["data"]["userId"] = json!("ada lovelace");
    let mut out_of_range = todo_event("todos.task.created", Uuid::now_v7(), "ada", "t", 1, 1);
    out_of_range["data"]["dueAt"] = json!("+10000-01-01T00:00:00.000000Z");
    for event in [spaced, out_of_range] {
        assert_eq!(app.deliver(&event).await, "DROP", "{event}");
    }
    let valid = todo_event("todos.task.created", Uuid::now_v7(), "ada", "t", 1, 1);
    assert_eq!(app.deliver(&valid).await, "SUCCESS");
    let (_, summary): (u16, Value) = app.get_json("/analytics/summary").await;
    assert_eq!(summary["created"], 1, "only the valid event counts: {summary}");
    app.stop().await;
}
