//! The read model: figures from out-of-order and duplicated deliveries, daily counts, input
//! validation, poison, and a rebuild from the event log with identical results.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, spawn, todo_event};
use crate::on_both_backends;

on_both_backends!(
    figures_follow_the_latest_state_whatever_the_delivery_order,
    a_rebuild_from_the_event_log_gives_identical_figures,
    poison_is_dropped_and_bad_queries_are_named,
    subscribe_names_every_todo_topic_with_a_dead_letter_topic,
);

/// Four todos: ada's A (completed after 2 min), B (completed after 6, reopened), C (deleted),
/// bob's D (completed after 4 min); delivered out of order and twice each.
async fn deliver_history(app: &TestApp) -> usize {
    let (a, b, c, d) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let events = [
        todo_event("todos.task.completed", a, "ada", "A", 2, 2),
        todo_event("todos.task.created", a, "ada", "A", 1, 0),
        todo_event("todos.task.created", b, "ada", "B", 1, 0),
        todo_event("todos.task.reopened", b, "ada", "B", 3, 7),
        todo_event("todos.task.completed", b, "ada", "B", 2, 6),
        todo_event("todos.task.created", c, "ada", "C", 1, 0),
        todo_event("todos.task.deleted", c, "ada", "C", 2, 3),
        todo_event("todos.task.created", d, "bob", "D", 1, 0),
        todo_event("todos.task.completed", d, "bob", "D", 2, 4),
    ];
    for event in events.iter().chain(events.iter().rev()) {
        assert_eq!(app.deliver(event).await, "SUCCESS", "{event}");
    }
    events.len()
}

async fn figures_follow_the_latest_state_whatever_the_delivery_order(backend: Backend) {
    let app = spawn(backend).await;
    deliver_history(&app).await;
    let (status, ada) = app.get_json("/analytics/users/ada").await;
    assert_eq!(status, 200);
    assert_eq!(
        ada,
        json!({"userId": "ada", "created": 3, "completed": 1, "open": 1, "deleted": 1, "completionRate": 0.5,
               "meanTimeToCompleteSeconds": 120.0, "medianTimeToCompleteSeconds": 120.0})
    );
    let (_, bob) = app.get_json("/analytics/users/bob").await;
    assert_eq!(
        (&bob["completed"], &bob["completionRate"], &bob["meanTimeToCompleteSeconds"]),
        (&json!(1), &json!(1.0), &json!(240.0))
    );
    let (_, nobody) = app.get_json("/analytics/users/nobody").await;
    assert_eq!((&nobody["created"], &nobody["completionRate"]), (&json!(0), &Value::Null));
    let (_, summary) = app.get_json("/analytics/summary").await;
    assert_eq!(
        summary,
        json!({"users": 2, "created": 4, "completed": 2, "open": 1, "deleted": 1, "completionRate": 2.0 / 3.0,
               "meanTimeToCompleteSeconds": 180.0, "medianTimeToCompleteSeconds": 180.0})
    );
    let (status, daily) = app.get_json("/analytics/daily?from=2026-11-22&to=2026-11-24").await;
    assert_eq!(status, 200);
    assert_eq!(
        daily["days"],
        json!([{"date": "2026-11-22", "created": 0, "completed": 0},
               {"date": "2026-11-23", "created": 4, "completed": 2},
               {"date": "2026-11-24", "created": 0, "completed": 0}])
    );
    let (_, ada_daily) = app.get_json("/analytics/daily?from=2026-11-23&to=2026-11-23&userId=ada").await;
    assert_eq!(ada_daily["days"], json!([{"date": "2026-11-23", "created": 3, "completed": 1}]));
    app.stop().await;
}

async fn a_rebuild_from_the_event_log_gives_identical_figures(backend: Backend) {
    let app = spawn(backend).await;
    let delivered = deliver_history(&app).await;
    let paths = [
        "/analytics/users/ada",
        "/analytics/users/bob",
        "/analytics/summary",
        "/analytics/daily?from=2026-11-20&to=2026-11-26",
    ];
    let mut before = Vec::new();
    for path in paths {
        before.push(app.get_json(path).await.1);
    }
    let anonymous = app.http.post(app.url("/admin/projections/rebuild")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let rebuilt = app.http.post(app.url("/admin/projections/rebuild")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(rebuilt.status(), 200);
    assert_eq!(
        rebuilt.json::<Value>().await.unwrap(),
        json!({"replayedEvents": delivered}),
        "duplicates were logged once"
    );
    for (path, expected) in paths.iter().zip(&before) {
        assert_eq!(&app.get_json(path).await.1, expected, "{path} after the rebuild");
    }
    assert_eq!(before[2]["created"], 4, "the figures were not empty to begin with");
    app.stop().await;
}

async fn poison_is_dropped_and_bad_queries_are_named(backend: Backend) {
    let app = spawn(backend).await;
    let mut invalid = todo_event("todos.task.completed", Uuid::now_v7(), "ada", "t", 2, 1);
    invalid["data"]["completedAt"] = Value::Null;
    assert_eq!(app.deliver(&invalid).await, "DROP");
    assert_eq!(
        app.deliver_raw("todos.task.created", "{\"not\": \"an event\"}".into(), None).await.1.as_deref(),
        Some("DROP")
    );
    assert_eq!(app.get_json("/analytics/summary").await.1["created"], 0);
    for (path, field) in [
        ("/analytics/users/a%20b", "userId"),
        ("/analytics/users/%FF", "userId"),
        ("/analytics/daily?to=2026-11-01", "from"),
        ("/analytics/daily?from=2026-11-02&to=2026-11-01", "to"),
        ("/analytics/daily?from=2026-13-01&to=2026-11-01", "from"),
        ("/analytics/daily?from=2025-01-01&to=2026-11-01", "to"),
        ("/analytics/daily?from=2026-11-01&to=2026-11-01&week=1", "week"),
        ("/analytics/daily?from=2026-11-01&to=2026-11-01&userId=a%20b", "userId"),
    ] {
        let (status, problem) = app.get_json(path).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(problem["errors"][0]["field"], field, "{path}: {problem}");
    }
    app.stop().await;
}

async fn subscribe_names_every_todo_topic_with_a_dead_letter_topic(backend: Backend) {
    let app = spawn(backend).await;
    let (_, subscriptions) = app.get_json("/dapr/subscribe").await;
    let list = subscriptions.as_array().unwrap();
    assert_eq!(list.len(), 10);
    for topic in [
        "todos.task.created",
        "todos.task.updated",
        "todos.task.completed",
        "todos.task.reopened",
        "todos.task.deleted",
    ] {
        let entry = list.iter().find(|s| s["topic"] == topic).expect(topic);
        assert_eq!(entry["deadLetterTopic"], format!("{topic}.analytics.deadletter"));
        assert_eq!(entry["route"], format!("/events/{topic}"));
        assert!(
            list.iter().any(|s| s["topic"] == format!("{topic}.analytics.deadletter")
                && s["route"] == format!("/dead-letters/{topic}"))
        );
    }
    app.stop().await;
}
