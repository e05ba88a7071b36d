//! What only the cluster's Kafka setup promises (always on Kafka, whatever `TEST_PUBSUB` says):
//! - a todo's events share one partition, keyed by the todo id, so a consumer gets them in the
//!   order they happened. Redis gives no such promise (daprd delivers a stream's entries
//!   concurrently), which is why the consumers never rely on order; this checks the cluster
//!   gives it anyway;
//! - the component really authenticates with SCRAM: the broker refuses a wrong password;
//! - sidecars stop although their broker is gone.

use reqwest::Method;
use serde_json::json;
use service_kit::testing::daprd::{self, Daprd};
use service_kit::testing::{DEADLINE, TempDir, eventually};
use sqlx::Row;

use crate::broker::kafka::PASSWORD;
use crate::broker::{Broker, BrokerKind};
use crate::harness::{Extra, Kind, System};
use crate::on_both_backends;

on_both_backends!(a_todos_events_share_one_partition_and_arrive_in_the_order_they_happened);

const UPDATES: i64 = 12;

async fn a_todos_events_share_one_partition_and_arrive_in_the_order_they_happened(backend: crate::harness::DbBackend) {
    let system = System::start_on(BrokerKind::Kafka, backend, Extra::default()).await;
    let Broker::Kafka(kafka) = &system.broker else { unreachable!("started on Kafka") };
    let todo = system.todo_call(Method::POST, "/todos", Some(json!({"userId": "ida", "title": "Draft 0"}))).await;
    let id = todo["id"].as_str().unwrap().to_owned();
    // Other todos' updates interleave, on their own keys.
    let other = system.todo_call(Method::POST, "/todos", Some(json!({"userId": "ida", "title": "Other 0"}))).await;
    let other = other["id"].as_str().unwrap().to_owned();
    for n in 1..=UPDATES {
        for todo in [&id, &other] {
            system
                .todo_call(Method::PATCH, &format!("/todos/{todo}"), Some(json!({"title": format!("Draft {n}")})))
                .await;
        }
    }
    system.todo_call(Method::POST, &format!("/todos/{id}/complete"), None).await;
    eventually("the outbox to drain", DEADLINE, || async {
        let history = system.todo_call(Method::GET, &format!("/todos/{id}/events"), None).await;
        history["events"].as_array()?.iter().all(|e| !e["publishedAt"].is_null()).then_some(())
    })
    .await;
    system.broker.wait_until_consumed("todos.task.updated", "analytics").await;

    // On the broker: every update of the todo is keyed by its id, in one partition, in order.
    let records = kafka.records("todos.task.updated").await;
    let ours: Vec<_> = records.iter().filter(|(_, _, event)| event["subject"] == id.as_str()).collect();
    assert_eq!(ours.len() as i64, UPDATES, "one record per update");
    assert!(ours.iter().all(|(_, key, _)| key.as_deref() == Some(id.as_str())), "the record key is the todo id");
    assert!(ours.iter().all(|(partition, _, _)| *partition == ours[0].0), "one partition: {ours:?}");
    let versions: Vec<i64> = ours.iter().map(|(_, _, event)| event["data"]["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, (2..=UPDATES + 1).collect::<Vec<_>>(), "published in the order they happened");

    // At the consumer: analytics logged them in that order, each once.
    let database = system.databases[&Kind::Analytics].connect(analytics::startup::MIGRATIONS).await;
    let logged: Vec<i64> = sqlx::query(&format!(
        "SELECT version FROM event_log WHERE todo_id = '{id}' AND event_type = 'todos.task.updated' \
         ORDER BY received_at"
    ))
    .fetch_all(&database.reader)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get::<i64, _>("version"))
    .collect();
    assert_eq!(logged, versions, "delivered in partition order");
    eventually("ida's figures: 2 created, 1 completed", DEADLINE, || async {
        let figures = system.get(Kind::Analytics, "/analytics/users/ida").await;
        (figures["created"] == 2 && figures["completed"] == 1).then_some(())
    })
    .await;
}

/// With the right password the cluster's component connects and a publish is acknowledged;
/// with a wrong one the broker refuses the SCRAM exchange and daprd, which cannot initialise a
/// component it was given, exits and names the failure. A mechanism daprd does not know as
/// SCRAM (anything but SHA-512/SHA-256, components-contrib `common/component/kafka/auth.go`)
/// would be SASL PLAIN, which the broker does not offer: this fails then too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_component_authenticates_with_scram_and_a_wrong_password_is_refused() {
    let broker = Broker::start(BrokerKind::Kafka).await;
    let Broker::Kafka(kafka) = &broker else { unreachable!("started on Kafka") };

    let resources = TempDir::new();
    kafka.write_component_with_password(&resources.path, PASSWORD);
    let mut sidecar = Daprd::start(daprd::Options::new("todo", None, &resources.path)).await;
    let published = reqwest::Client::new()
        .post(format!("{}/v1.0/publish/pubsub/todos.task.created", sidecar.url))
        .json(&json!({"probe": "right password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 204, "{}", published.text().await.unwrap());
    sidecar.stop().await;

    let resources = TempDir::new();
    kafka.write_component_with_password(&resources.path, "not-the-password");
    let mut refused = Daprd::spawn(daprd::Options::new("todo", None, &resources.path));
    let status = refused.wait_for_exit(DEADLINE).await;
    assert!(!status.success(), "daprd does not run without its pub/sub component");
    let log = refused.log();
    assert!(log.contains("pubsub") && log.to_lowercase().contains("sasl"), "the log names the failure: {log}");
}

/// Stopping with the broker gone: one consumer's daprd gets SIGTERM and must exit although its
/// Kafka client cannot leave the group or commit (`Daprd::stop` allows 15 s), and its app must
/// stop after it. The rest is dropped with the runtime (its daprd processes are killed).
#[test]
fn consumers_and_their_sidecars_stop_promptly_when_the_broker_is_gone() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let mut system =
                System::start_on(BrokerKind::Kafka, crate::harness::DbBackend::Sqlite, Extra::default()).await;
            system.todo_call(Method::POST, "/todos", Some(json!({"userId": "jo", "title": "Consumed"}))).await;
            // The consumers have joined their groups and consumed: there is a group to leave
            // and an offset to commit when they stop.
            eventually("both consumers to see jo's todo", DEADLINE, || async {
                let counted = system.get(Kind::Analytics, "/analytics/users/jo").await["created"] == 1;
                let notified =
                    !system.get(Kind::Notification, "/notifications?userId=jo").await["items"].as_array()?.is_empty();
                (counted && notified).then_some(())
            })
            .await;
            let Broker::Kafka(kafka) = &mut system.broker else { unreachable!("started on Kafka") };
            kafka.kill();
            tokio::time::timeout(DEADLINE, system.stop(Kind::Analytics))
                .await
                .expect("the sidecar and the app stop without the broker answering");
            // The rest (todo, notification) is dropped with the runtime, mid-flight.
        });
        drop(runtime);
        let _ = done.send(());
    });
    finished
        .recv_timeout(DEADLINE * 3)
        .expect("the system and its runtime are gone soon after the broker (a blocked close would hang here)");
}
