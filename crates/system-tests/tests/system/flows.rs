//! Changes made through the todo API reach both consumers, exactly once.

use reqwest::Method;
use serde_json::{Value, json};
use service_kit::testing::{DEADLINE, eventually};

use crate::harness::{ADMIN_TOKEN, DbBackend, Extra, Kind, System};
use crate::on_both_backends;

on_both_backends!(
    create_update_complete_and_delete_reach_notifications_and_analytics,
    a_republished_event_with_the_same_id_has_no_second_effect,
    a_consumer_stopped_while_todos_change_catches_up_after_restart
);

async fn notifications_of(system: &System, user: &str) -> Vec<Value> {
    system.get(Kind::Notification, &format!("/notifications?userId={user}")).await["items"].as_array().unwrap().clone()
}

async fn wait_for_figures(system: &System, user: &str, expected: Value) {
    eventually(&format!("analytics of {user} to be {expected}"), DEADLINE, || async {
        let figures = system.get(Kind::Analytics, &format!("/analytics/users/{user}")).await;
        let matches = ["created", "completed", "open", "deleted"].iter().all(|k| figures[k] == expected[k]);
        matches.then_some(())
    })
    .await;
}

async fn create_update_complete_and_delete_reach_notifications_and_analytics(backend: DbBackend) {
    let system = System::start(backend, Extra::default()).await;
    let kept = system.todo_call(Method::POST, "/todos", Some(json!({"userId": "ada", "title": "Write notes"}))).await;
    let gone = system.todo_call(Method::POST, "/todos", Some(json!({"userId": "ada", "title": "Old idea"}))).await;
    let (kept, gone) = (kept["id"].as_str().unwrap().to_owned(), gone["id"].as_str().unwrap().to_owned());
    system.todo_call(Method::PATCH, &format!("/todos/{kept}"), Some(json!({"title": "Write the notes"}))).await;
    system.todo_call(Method::POST, &format!("/todos/{kept}/complete"), None).await;
    system.http.delete(format!("{}/todos/{gone}", system.todo.url)).send().await.unwrap();

    let notifications = eventually("three notifications for ada", DEADLINE, || async {
        let items = notifications_of(&system, "ada").await;
        (items.len() == 3).then_some(items)
    })
    .await;
    let messages: Vec<&str> = notifications.iter().map(|n| n["message"].as_str().unwrap()).collect();
    assert_eq!(messages[0], "Completed: Write the notes", "{messages:?}");
    assert!(messages.contains(&"New todo: Write notes") && messages.contains(&"New todo: Old idea"), "{messages:?}");
    wait_for_figures(&system, "ada", json!({"created": 2, "completed": 1, "open": 0, "deleted": 1})).await;
    // Nothing more arrives later: every stream fully consumed, still three notifications.
    for topic in ["todos.task.created", "todos.task.completed"] {
        system.broker.wait_until_consumed(topic, "notification").await;
    }
    assert_eq!(notifications_of(&system, "ada").await.len(), 3);
}

async fn a_republished_event_with_the_same_id_has_no_second_effect(backend: DbBackend) {
    let system = System::start(backend, Extra::default()).await;
    let todo = system.todo_call(Method::POST, "/todos", Some(json!({"userId": "bea", "title": "Once"}))).await;
    let id = todo["id"].as_str().unwrap();
    system.todo_call(Method::POST, &format!("/todos/{id}/complete"), None).await;
    wait_for_figures(&system, "bea", json!({"created": 1, "completed": 1, "open": 0, "deleted": 0})).await;
    eventually("two notifications", DEADLINE, || async {
        (notifications_of(&system, "bea").await.len() == 2).then_some(())
    })
    .await;

    // Exactly the CloudEvent subscribers got (same id), published again as a new stream entry.
    let history = system.todo_call(Method::GET, &format!("/todos/{id}/events"), None).await;
    let completed =
        history["events"].as_array().unwrap().iter().find(|e| e["event"]["type"] == "todos.task.completed").unwrap();
    let again = system
        .http
        .post(format!("{}/v1.0/publish/pubsub/todos.task.completed", system.todo.sidecar.url))
        .header("content-type", "application/cloudevents+json")
        .body(completed["event"].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);
    for group in ["notification", "analytics"] {
        system.broker.wait_until_consumed("todos.task.completed", group).await;
    }
    assert_eq!(notifications_of(&system, "bea").await.len(), 2, "no second notification");
    let figures = system.get(Kind::Analytics, "/analytics/users/bea").await;
    assert_eq!((&figures["created"], &figures["completed"]), (&json!(1), &json!(1)), "no double count");
    let rebuilt = system
        .http
        .post(format!("{}/admin/projections/rebuild", system.consumer(Kind::Analytics).url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(rebuilt.json::<Value>().await.unwrap()["replayedEvents"], 2, "the duplicate was not logged");
}

async fn a_consumer_stopped_while_todos_change_catches_up_after_restart(backend: DbBackend) {
    let mut system = System::start(backend, Extra::default()).await;
    let first = system.todo_call(Method::POST, "/todos", Some(json!({"userId": "cai", "title": "Before"}))).await;
    wait_for_figures(&system, "cai", json!({"created": 1, "completed": 0, "open": 1, "deleted": 0})).await;

    system.stop(Kind::Analytics).await;
    for n in 0..5 {
        system
            .todo_call(Method::POST, "/todos", Some(json!({"userId": "cai", "title": format!("While away {n}")})))
            .await;
    }
    let first = first["id"].as_str().unwrap();
    system.todo_call(Method::POST, &format!("/todos/{first}/complete"), None).await;
    // The todo service published all of it while analytics was down.
    eventually("the outbox to drain", DEADLINE, || async {
        let history = system.todo_call(Method::GET, &format!("/todos/{first}/events"), None).await;
        history["events"].as_array()?.iter().all(|e| !e["publishedAt"].is_null()).then_some(())
    })
    .await;

    system.restart(Kind::Analytics).await;
    wait_for_figures(&system, "cai", json!({"created": 6, "completed": 1, "open": 5, "deleted": 0})).await;
    for topic in ["todos.task.created", "todos.task.completed"] {
        system.broker.wait_until_consumed(topic, "analytics").await;
    }
    let figures = system.get(Kind::Analytics, "/analytics/users/cai").await;
    assert_eq!(figures["created"], 6, "nothing lost and nothing double-counted: {figures}");
}
