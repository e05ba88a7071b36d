//! Deliveries and their answers, idempotency, order, the app token, and the notifications API.

use serde_json::{Value, json};
use service_kit::testing::prometheus::sample;
use uuid::Uuid;

use crate::helpers::{Backend, Options, notifications, spawn, todo_event};
use crate::on_both_backends;

on_both_backends!(
    subscribe_names_every_topic_with_a_dead_letter_topic,
    created_and_completed_notify_once_in_change_order,
    poison_is_dropped_and_other_events_are_ignored,
    the_sidecar_routes_need_the_app_token,
    the_api_validates_its_input,
    deliveries_are_counted_by_topic_and_answer,
);

async fn subscribe_names_every_topic_with_a_dead_letter_topic(backend: Backend) {
    let app = spawn(backend, Options::default()).await;
    let subscriptions: Value = app.http.get(app.url("/dapr/subscribe")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        subscriptions,
        json!([
            {"pubsubname": "pubsub", "topic": "todos.task.created", "route": "/events/todos.task.created",
             "deadLetterTopic": "todos.task.created.notification.deadletter"},
            {"pubsubname": "pubsub", "topic": "todos.task.created.notification.deadletter", "route": "/dead-letters/todos.task.created"},
            {"pubsubname": "pubsub", "topic": "todos.task.completed", "route": "/events/todos.task.completed",
             "deadLetterTopic": "todos.task.completed.notification.deadletter"},
            {"pubsubname": "pubsub", "topic": "todos.task.completed.notification.deadletter", "route": "/dead-letters/todos.task.completed"}
        ])
    );
    let config = app.http.get(app.url("/dapr/config")).send().await.unwrap();
    assert_eq!(config.status(), 200);
    assert_eq!(config.json::<Value>().await.unwrap(), json!({}));
    app.stop().await;
}

async fn created_and_completed_notify_once_in_change_order(backend: Backend) {
    let app = spawn(backend, Options::default()).await;
    let todo = Uuid::now_v7();
    let created = todo_event("todos.task.created", todo, "ada", "Write notes", 1, 1);
    let completed = todo_event("todos.task.completed", todo, "ada", "Write notes", 2, 5);
    // Out of order, and each delivered twice (at-least-once).
    for event in [&completed, &created, &completed, &created] {
        assert_eq!(app.deliver(event).await, "SUCCESS");
    }
    let listed = notifications(&app, "userId=ada").await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "one notification per event: {listed}");
    assert_eq!(items[0]["kind"], "completed", "newest change first, whatever the arrival order");
    assert_eq!(items[0]["message"], "Completed: Write notes");
    assert_eq!(items[1]["kind"], "created");
    assert_eq!(items[1]["eventId"], created["id"]);
    assert_eq!(notifications(&app, "userId=someone-else").await["items"], json!([]));

    let id = items[1]["id"].as_str().unwrap();
    let read = app.http.post(app.url(&format!("/notifications/{id}/read"))).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let first_read: Value = read.json().await.unwrap();
    assert!(first_read["readAt"].is_string());
    let again: Value =
        app.http.post(app.url(&format!("/notifications/{id}/read"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["readAt"], first_read["readAt"], "reading twice keeps the first time");
    let unread = notifications(&app, "userId=ada&unread=true").await;
    assert_eq!(unread["items"].as_array().unwrap().len(), 1);
    assert_eq!(unread["items"][0]["kind"], "completed");

    let first_page = notifications(&app, "userId=ada&limit=1").await;
    assert_eq!(first_page["items"][0]["kind"], "completed");
    let cursor = first_page["nextCursor"].as_str().expect("a next page");
    let second_page = notifications(&app, &format!("userId=ada&limit=1&cursor={cursor}")).await;
    assert_eq!(second_page["items"][0]["kind"], "created");
    assert_eq!(second_page["nextCursor"], Value::Null);
    app.stop().await;
}

async fn poison_is_dropped_and_other_events_are_ignored(backend: Backend) {
    let app = spawn(backend, Options::default()).await;
    let todo = Uuid::now_v7();
    let mut wrong_version = todo_event("todos.task.created", todo, "ada", "t", 1, 1);
    wrong_version["dataschema"] = json!("https://dapr-todo.example/schemas/events/todos.task.created/v2.json");
    let mut invalid = todo_event("todos.task.created", todo, "ada", "t", 1, 1);
    invalid["data"]["version"] = json!(0);
    let mut unknown = todo_event("todos.task.created", todo, "ada", "t", 1, 1);
    unknown["type"] = json!("todos.task.archived");
    for poison in [wrong_version, invalid, unknown, json!([1, 2]), json!({"hello": "world"})] {
        let (status, answer) = app.deliver_raw("todos.task.created", poison.to_string(), None).await;
        assert_eq!((status, answer.as_deref()), (200, Some("DROP")), "{poison}");
    }
    let (status, answer) = app.deliver_raw("todos.task.created", "not json".into(), None).await;
    assert_eq!((status, answer.as_deref()), (200, Some("DROP")));
    let updated = todo_event("todos.task.updated", todo, "ada", "t", 2, 2);
    assert_eq!(app.deliver(&updated).await, "SUCCESS", "an event not worth telling is acknowledged");
    assert_eq!(notifications(&app, "userId=ada").await["items"], json!([]));
    app.stop().await;
}

async fn the_sidecar_routes_need_the_app_token(backend: Backend) {
    let app = spawn(backend, Options { app_token: Some("app-secret"), ..Options::default() }).await;
    let event = todo_event("todos.task.created", Uuid::now_v7(), "ada", "t", 1, 1);
    let (status, _) = app.deliver_raw("todos.task.created", event.to_string(), None).await;
    assert_eq!(status, 401);
    let (status, _) = app.deliver_raw("todos.task.created", event.to_string(), Some("wrong")).await;
    assert_eq!(status, 401);
    for path in ["/dapr/subscribe", "/dapr/config"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
    let dead_letter =
        app.http.post(app.url("/dead-letters/todos.task.created")).body(event.to_string()).send().await.unwrap();
    assert_eq!(dead_letter.status(), 401);
    assert_eq!(notifications(&app, "userId=ada").await["items"], json!([]), "nothing was processed");
    let (status, answer) = app.deliver_raw("todos.task.created", event.to_string(), Some("app-secret")).await;
    assert_eq!((status, answer.as_deref()), (200, Some("SUCCESS")));
    let subscribed =
        app.http.get(app.url("/dapr/subscribe")).header("dapr-api-token", "app-secret").send().await.unwrap();
    assert_eq!(subscribed.status(), 200);
    for health in ["/healthz", "/readyz"] {
        assert_eq!(app.http.get(app.url(health)).send().await.unwrap().status(), 200, "{health} needs no token");
    }
    app.stop().await;
}

async fn the_api_validates_its_input(backend: Backend) {
    let app = spawn(backend, Options::default()).await;
    for (query, field) in [
        ("", "userId"),
        ("userId=a%20b", "userId"),
        ("userId=ada&unread=yes", "unread"),
        ("userId=ada&limit=0", "limit"),
        ("userId=ada&limit=101", "limit"),
        ("userId=ada&cursor=nope", "cursor"),
        ("userId=ada&colour=red", "colour"),
    ] {
        let response = app.http.get(app.url(&format!("/notifications?{query}"))).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let missing = app.http.post(app.url(&format!("/notifications/{}/read", Uuid::now_v7()))).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let malformed = app.http.post(app.url("/notifications/42/read")).send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    let undecodable = app.http.post(app.url("/notifications/%FF/read")).send().await.unwrap();
    assert_eq!(undecodable.status(), 400);
    assert_eq!(undecodable.headers()["content-type"], "application/problem+json");
    assert_eq!(undecodable.json::<Value>().await.unwrap()["errors"][0]["field"], "id");
    assert_eq!(app.http.get(app.url("/nowhere")).send().await.unwrap().status(), 404);
    assert_eq!(app.http.delete(app.url("/notifications")).send().await.unwrap().status(), 405);
    app.stop().await;
}

async fn deliveries_are_counted_by_topic_and_answer(backend: Backend) {
    let app = spawn(backend, Options::default()).await;
    // Counters are the process's: other tests of this binary add to them, so only growth counts.
    let deliveries = |metrics: &str, answer: &str| {
        let labels = [("topic", "todos.task.created"), ("answer", answer)];
        sample(metrics, "dapr_todo_deliveries_total", &labels).unwrap_or(0.0)
    };
    let before = app.scrape().await;
    let duplicates_before = sample(&before, "dapr_todo_duplicates_skipped_total", &[]).unwrap_or(0.0);
    let created = todo_event("todos.task.created", Uuid::now_v7(), "ada", "Counted", 1, 1);
    assert_eq!(app.deliver(&created).await, "SUCCESS");
    assert_eq!(app.deliver(&created).await, "SUCCESS", "a redelivery");
    let mut poison = todo_event("todos.task.created", Uuid::now_v7(), "ada", "Counted", 1, 1);
    poison["data"]["version"] = json!(0);
    assert_eq!(app.deliver(&poison).await, "DROP");

    let after = app.scrape().await;
    assert!(deliveries(&after, "SUCCESS") >= deliveries(&before, "SUCCESS") + 2.0, "{after}");
    assert!(deliveries(&after, "DROP") >= deliveries(&before, "DROP") + 1.0, "{after}");
    assert!(sample(&after, "dapr_todo_duplicates_skipped_total", &[]).unwrap() >= duplicates_before + 1.0);
    let took = sample(&after, "dapr_todo_delivery_duration_seconds_count", &[("topic", "todos.task.created")]);
    assert!(took.unwrap() >= 3.0, "{after}");
    // The events happened on 2026-11-23 (todo_event): the effects are that far behind now.
    let lag = sample(&after, "dapr_todo_projection_lag_seconds", &[]).expect("a lag once an event was applied");
    let event_age = (chrono::Utc::now() - "2026-11-23T10:01:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap())
        .num_seconds() as f64;
    assert!((lag - event_age).abs() < 120.0, "lag {lag} s, event age {event_age} s");
    let last = sample(&after, "dapr_todo_last_delivery_timestamp_seconds", &[]).unwrap();
    assert!((chrono::Utc::now().timestamp() as f64 - last).abs() < 60.0, "last delivery at {last}");
    app.stop().await;
}
