//! Two instances of every service on one database each: two relays share the todo outbox, and
//! two consumers of one app id compete for deliveries. Every effect still happens exactly once.
//! PostgreSQL only: replicas are the cluster's setup; a SQLite file serves one instance (two
//! processes writing one file collide on SQLite's lock upgrade and answer 503).

use serde_json::{Value, json};
use service_kit::testing::{DEADLINE, eventually};

use crate::harness::{DbBackend, Extra, Kind, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_every_service_share_the_work_exactly_once_on_postgres() {
    let mut system = System::start(DbBackend::Postgres, Extra::default()).await;
    let second_todo = system.add_replica(Kind::Todo).await.url.clone();
    let second_notification = system.add_replica(Kind::Notification).await.url.clone();
    system.add_replica(Kind::Analytics).await;
    let todo_urls = [system.todo.url.clone(), second_todo];

    let mut ids = Vec::new();
    for n in 0..12 {
        let created: Value = system
            .http
            .post(format!("{}/todos", todo_urls[n % 2]))
            .json(&json!({"userId": "gus", "title": format!("Shared {n}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    // Every other todo completed through the instance that did not create it.
    for (n, id) in ids.iter().enumerate().filter(|(n, _)| n % 2 == 0) {
        let completed =
            system.http.post(format!("{}/todos/{id}/complete", todo_urls[(n + 1) % 2])).send().await.unwrap();
        assert_eq!(completed.status(), 200);
    }

    let count = |url: String| {
        let http = system.http.clone();
        async move {
            let listed: Value =
                http.get(format!("{url}/notifications?userId=gus&limit=100")).send().await.ok()?.json().await.ok()?;
            Some(listed["items"].as_array()?.len())
        }
    };
    eventually("18 notifications (12 created, 6 completed)", DEADLINE, || async {
        (count(second_notification.clone()).await? == 18).then_some(())
    })
    .await;
    eventually("the analytics figures", DEADLINE, || async {
        let figures = system.get(Kind::Analytics, "/analytics/users/gus").await;
        (figures["created"] == 12 && figures["completed"] == 6).then_some(())
    })
    .await;
    for topic in ["todos.task.created", "todos.task.completed"] {
        for group in ["notification", "analytics"] {
            system.broker.wait_until_consumed(topic, group).await;
        }
    }
    assert_eq!(count(system.consumer(Kind::Notification).url.clone()).await, Some(18), "no effect twice");
    let figures = system.get(Kind::Analytics, "/analytics/users/gus").await;
    assert_eq!((&figures["created"], &figures["completed"], &figures["open"]), (&json!(12), &json!(6), &json!(6)));
}
