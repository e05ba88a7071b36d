//! A broker outage under load: the broker stopped for ten seconds while todos keep being created
//! and completed, then started again with its data (Redis with its append-only file, as a real
//! deployment runs it; Kafka with its log directory).
//! Nothing may be lost and nothing applied twice: the todo service keeps accepting writes and
//! its relay retries, daprd reconnects on both sides, and what was in flight is redelivered
//! (`redeliverInterval` in `components/pubsub.yaml`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use service_kit::testing::eventually;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerKind;
use crate::harness::{DbBackend, Extra, Kind, System};

const OUTAGE: Duration = Duration::from_secs(10);
/// How long the system may take to apply everything once the broker is back.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(90);

#[derive(Default)]
struct Sent {
    created: usize,
    completed: usize,
}

/// Creates a todo every 40 ms and completes every other one, until `stop`.
async fn load(todo_url: String, sent: Arc<Mutex<Sent>>, stop: CancellationToken) {
    let http = reqwest::Client::new();
    let mut n = 0;
    while !stop.is_cancelled() {
        let created = http
            .post(format!("{todo_url}/todos"))
            .json(&json!({"userId": "outage", "title": format!("todo {n}")}))
            .send()
            .await
            .expect("the todo service answers");
        assert_eq!(created.status(), 201, "the todo service accepts writes while the broker is down");
        let todo: Value = created.json().await.unwrap();
        sent.lock().unwrap().created += 1;
        if n % 2 == 0 {
            let id = todo["id"].as_str().expect("an id");
            let completed = http.post(format!("{todo_url}/todos/{id}/complete")).send().await.unwrap();
            assert_eq!(completed.status(), 200);
            sent.lock().unwrap().completed += 1;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_under_load_loses_nothing_and_applies_nothing_twice() {
    an_outage_under_load_loses_nothing_and_applies_nothing_twice(BrokerKind::Redis).await
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_outage_under_load_loses_nothing_and_applies_nothing_twice() {
    an_outage_under_load_loses_nothing_and_applies_nothing_twice(BrokerKind::Kafka).await
}

async fn an_outage_under_load_loses_nothing_and_applies_nothing_twice(broker: BrokerKind) {
    let mut system = System::start_on(broker, DbBackend::Sqlite, Extra::default()).await;
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop_load = CancellationToken::new();
    let load = tokio::spawn(load(system.todo.url.clone(), sent.clone(), stop_load.clone()));

    tokio::time::sleep(Duration::from_secs(2)).await;
    system.broker.stop().await;
    tokio::time::sleep(OUTAGE).await;
    system.broker.start_again().await;
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_load.cancel();
    load.await.expect("the load ran without a failed request");
    let last_write = Instant::now();

    let (created, completed) = {
        let sent = sent.lock().unwrap();
        (sent.created, sent.completed)
    };
    let expected = json!({"created": created, "completed": completed, "open": created - completed, "deleted": 0});
    eventually("analytics to count every todo once", RECOVERY_DEADLINE, || async {
        let figures = system.get(Kind::Analytics, "/analytics/users/outage").await;
        ["created", "completed", "open", "deleted"].iter().all(|k| figures[k] == expected[k]).then_some(())
    })
    .await;
    eventually("a notification for every creation and completion", RECOVERY_DEADLINE, || async {
        (system.notification_count("outage").await >= created + completed).then_some(())
    })
    .await;
    eprintln!(
        "{created} todos created and {completed} completed around a {OUTAGE:?} {broker:?} outage; everything \
         applied {:?} after the broker was back (the load ran on for 2 s of it), {:?} after the last write",
        back.elapsed(),
        last_write.elapsed()
    );

    // Exactly once: no notification twice, no event twice in analytics' log, no dead letter.
    assert_eq!(system.notification_count("outage").await, created + completed, "a notification was written twice");
    let analytics = system.databases[&Kind::Analytics].connect(analytics::startup::MIGRATIONS).await;
    let logged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_log").fetch_one(&analytics.reader).await.unwrap();
    assert_eq!(logged as usize, created + completed, "analytics logged an event twice, or missed one");
    analytics.close().await;
    for kind in [Kind::Notification, Kind::Analytics] {
        let parked = system.get(kind, "/admin/dead-letters?status=parked").await;
        assert_eq!(parked["items"], json!([]), "{kind:?} dead-lettered something: {parked}");
    }
}
