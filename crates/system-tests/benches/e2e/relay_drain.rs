//! The relay against a backlog, and the todo service while its sidecar is down.
//!
//! With both consumers' sidecars stopped (so only publishing is measured):
//! 1. creates as fast as 32 connections get them answered, sidecar up, then the same with the
//!    todo service's sidecar stopped: the rate must hold while the relay waits, and the log
//!    must not grow per event;
//! 2. a backlog of 2,000 todos × 10 events (a create and 9 updates), made while the sidecar is
//!    down, drained once it is back: the time from healthy to the first published event, and
//!    the drain rate, from the outbox queue's depth polled every 20 ms;
//! 3. the ceiling: the same 20,000 CloudEvents, fetched from `GET /todos/{id}/events` and
//!    serialised into bulk requests of 500 and of 1,000 entries beforehand, published to the
//!    same daprd by a client that does nothing else, 1 and 4 requests at a time; its best.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dapr_events::TodoEventType;
use serde::Serialize;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use uuid::Uuid;

use service_kit::testing::eventually;

use crate::load;
use crate::system::{Kind, System};

const TODOS: u64 = 2_000;
const EVENTS_PER_TODO: u64 = 10;
const WORKERS: u64 = 32;
const CREATES_PER_RATE: u64 = 5_000;
/// The trivial client's request shapes: entries per request (the relay's `RELAY_BATCH_SIZE`
/// default, and twice it), and requests at a time. Its best is the ceiling.
const TRIVIAL_CLIENT_ENTRIES: [usize; 2] = [500, 1000];
const TRIVIAL_CLIENT_CONCURRENCY: [usize; 2] = [1, 4];
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// One run's figures; the report gives the median of each over the runs.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RelayRun {
    pub creates_per_second_sidecar_up: f64,
    pub creates_per_second_sidecar_down: f64,
    pub failed_creates_sidecar_down: u64,
    /// What the todo service logged while its sidecar was down, for 5,000 creates.
    pub log_bytes_sidecar_down: u64,
    pub log_lines_sidecar_down: u64,
    pub backlog_events: u64,
    /// From the sidecar answering healthy to the queue's first drop.
    pub first_publish_after_healthy_ms: f64,
    /// From the sidecar answering healthy to an empty queue.
    pub drained_after_healthy_ms: f64,
    /// Events per second from the first drop to an empty queue.
    pub drain_events_per_second: f64,
    /// The fastest second-long window of the drain.
    pub drain_peak_events_per_second: f64,
    /// The trivial client's rate with each request shape it tried.
    pub trivial_client: Vec<TrivialClientRun>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct TrivialClientRun {
    pub entries_per_request: usize,
    pub requests_at_a_time: usize,
    pub events_per_second: f64,
}

impl RelayRun {
    /// The trivial client's best.
    pub fn ceiling(&self) -> &TrivialClientRun {
        self.trivial_client
            .iter()
            .max_by(|a, b| a.events_per_second.total_cmp(&b.events_per_second))
            .expect("a trivial client run")
    }
}

/// `runs` runs, each: creates with the sidecar up then down, then a backlog drained and the
/// trivial client on the same events. Interleaved so that the machine's drift from minute to
/// minute (a quarter, on this one) falls on both sides of each ratio.
pub async fn run(system: &mut System, http: &reqwest::Client, runs: usize) -> Vec<RelayRun> {
    let queue = Queue::open(&system.todo.app.database).await;
    for kind in [Kind::Notification, Kind::Analytics] {
        system.stop_sidecar(kind).await;
    }
    let mut figures = Vec::new();
    for run in 1..=runs {
        eprintln!("relay, run {run} of {runs}");
        figures.push(one_run(system, http, &queue).await);
    }
    figures
}

async fn one_run(system: &mut System, http: &reqwest::Client, queue: &Queue) -> RelayRun {
    let mut figures = RelayRun::default();
    let todo_url = system.todo.app.url.clone();

    eprintln!("relay: {CREATES_PER_RATE} creates from {WORKERS} connections, sidecar up");
    let (rate, _) = creates(http, &todo_url, CREATES_PER_RATE).await;
    figures.creates_per_second_sidecar_up = rate;
    queue.wait_until_empty("the outbox to drain after the creates").await;

    eprintln!("relay: the same with the todo service's sidecar stopped");
    system.stop_sidecar(Kind::Todo).await;
    let log = system.todo.app.log_path.clone();
    let log_before = std::fs::read_to_string(&log).unwrap_or_default();
    let (rate, failed) = creates(http, &todo_url, CREATES_PER_RATE).await;
    let log_after = std::fs::read_to_string(&log).unwrap_or_default();
    figures.creates_per_second_sidecar_down = rate;
    figures.failed_creates_sidecar_down = failed;
    figures.log_bytes_sidecar_down = log_after.len().saturating_sub(log_before.len()) as u64;
    figures.log_lines_sidecar_down = log_after.get(log_before.len()..).unwrap_or("").lines().count() as u64;
    system.start_sidecar(Kind::Todo).await;
    queue.wait_until_empty("the outbox to drain after the outage").await;

    eprintln!("relay: a backlog of {TODOS} todos × {EVENTS_PER_TODO} events with the sidecar stopped");
    system.stop_sidecar(Kind::Todo).await;
    let ids = backlog(http, &todo_url).await;
    figures.backlog_events = queue.depth().await;
    eprintln!("relay: {} events queued; starting the sidecar", figures.backlog_events);
    system.start_sidecar(Kind::Todo).await;
    let healthy = Instant::now();
    let drain = queue.watch_drain(figures.backlog_events).await;
    figures.first_publish_after_healthy_ms = (drain.first_drop - healthy).as_secs_f64() * 1e3;
    figures.drained_after_healthy_ms = (drain.empty - healthy).as_secs_f64() * 1e3;
    figures.drain_events_per_second = figures.backlog_events as f64 / (drain.empty - drain.first_drop).as_secs_f64();
    figures.drain_peak_events_per_second = drain.peak_per_second;

    eprintln!("relay: the trivial client, publishing the same events");
    let histories = histories(http, &todo_url, &ids).await;
    let publish_url = format!("{}/v1.0-alpha1/publish/bulk/pubsub", system.todo.sidecar.url);
    for entries_per_request in TRIVIAL_CLIENT_ENTRIES {
        let requests = Arc::new(bulk_requests(&histories, entries_per_request));
        for requests_at_a_time in TRIVIAL_CLIENT_CONCURRENCY {
            let events_per_second = trivial_client(http, &publish_url, requests.clone(), requests_at_a_time).await;
            figures.trivial_client.push(TrivialClientRun {
                entries_per_request,
                requests_at_a_time,
                events_per_second,
            });
        }
    }
    figures
}

async fn creates(http: &reqwest::Client, todo_url: &str, n: u64) -> (f64, u64) {
    let (http, todo_url) = (http.clone(), todo_url.to_owned());
    load::closed_loop(n, WORKERS, move |i| load::create(&http, &todo_url, i)).await
}

/// 2,000 todos, then 9 updates of each (every todo's updates in order, the todos in turn).
async fn backlog(http: &reqwest::Client, todo_url: &str) -> Vec<Uuid> {
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (client, url, created) = (http.clone(), todo_url.to_owned(), ids.clone());
    load::closed_loop(TODOS, WORKERS, move |i| {
        let (request, created) = (load::create(&client, &url, i), created.clone());
        async move {
            let (status, id) = request.await;
            created.lock().unwrap().extend(id);
            (status, id)
        }
    })
    .await;
    let ids: Arc<Vec<Uuid>> = Arc::new(std::mem::take(&mut *ids.lock().unwrap()));
    assert_eq!(ids.len() as u64, TODOS, "every backlog todo is created");
    let (client, url, todos) = (http.clone(), todo_url.to_owned(), ids.clone());
    // Worker w updates todos w, w + 32, …: one todo's updates never race each other.
    let updates = TODOS * (EVENTS_PER_TODO - 1);
    let (_, failed) = load::closed_loop(updates, WORKERS, move |i| {
        let todo = todos[(i % TODOS) as usize];
        load::send(
            client
                .patch(format!("{url}/todos/{todo}"))
                .json(&serde_json::json!({"title": format!("update {}", i / TODOS)})),
        )
    })
    .await;
    assert_eq!(failed, 0, "every backlog update is accepted");
    ids.to_vec()
}

/// Each todo's events, as `GET /todos/{id}/events` shows them: the CloudEvents the relay sent.
async fn histories(http: &reqwest::Client, todo_url: &str, ids: &[Uuid]) -> Vec<Vec<Value>> {
    let mut histories = Vec::with_capacity(ids.len());
    for id in ids {
        let history: Value =
            http.get(format!("{todo_url}/todos/{id}/events")).send().await.unwrap().json().await.unwrap();
        histories.push(history["events"].as_array().expect("a todo's events").clone());
    }
    histories
}

/// The bodies of `POST /v1.0-alpha1/publish/bulk/pubsub/{topic}` holding these events,
/// `entries` at most per request and at most one event per todo per request (as the relay
/// sends them), by topic.
fn bulk_requests(histories: &[Vec<Value>], entries: usize) -> Vec<(String, Vec<u8>, usize)> {
    let mut requests = Vec::new();
    for sequence in 0..EVENTS_PER_TODO as usize {
        let events: Vec<&Value> = histories.iter().filter_map(|h| h.get(sequence)).map(|e| &e["event"]).collect();
        for chunk in events.chunks(entries) {
            let event_type = chunk[0]["type"].as_str().expect("a CloudEvent type");
            let topic = TodoEventType::from_str(event_type).expect("a todo event type").topic();
            let entries: Vec<Value> = chunk
                .iter()
                .map(|event| {
                    serde_json::json!({
                        "entryId": event["id"],
                        "event": event,
                        "contentType": "application/cloudevents+json",
                        "metadata": {"partitionKey": event["subject"]},
                    })
                })
                .collect();
            requests.push((topic.to_owned(), serde_json::to_vec(&entries).unwrap(), chunk.len()));
        }
    }
    requests
}

/// Publishes every request, `concurrency` at a time; events per second.
async fn trivial_client(
    http: &reqwest::Client,
    publish_url: &str,
    requests: Arc<Vec<(String, Vec<u8>, usize)>>,
    concurrency: usize,
) -> f64 {
    let events: usize = requests.iter().map(|(_, _, n)| n).sum();
    let count = requests.len() as u64;
    let (http, url) = (http.clone(), publish_url.to_owned());
    let (requests_per_second, failed) = load::closed_loop(count, concurrency as u64, move |i| {
        let (topic, body, _) = &requests[i as usize];
        load::send(http.post(format!("{url}/{topic}")).header("content-type", "application/json").body(body.clone()))
    })
    .await;
    assert_eq!(failed, 0, "daprd takes every bulk publish");
    requests_per_second * events as f64 / count as f64
}

/// The todo service's outbox queue, read from its database (read-only).
struct Queue {
    pool: sqlx::SqlitePool,
}

struct Drain {
    first_drop: Instant,
    empty: Instant,
    peak_per_second: f64,
}

impl Queue {
    async fn open(database: &Path) -> Self {
        let options =
            SqliteConnectOptions::from_str(&format!("sqlite://{}", database.display())).unwrap().read_only(true);
        Self {
            pool: SqlitePoolOptions::new().max_connections(1).connect_with(options).await.expect("the todo database"),
        }
    }

    async fn depth(&self) -> u64 {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox_queue").fetch_one(&self.pool).await.unwrap_or(-1)
            as u64
    }

    async fn wait_until_empty(&self, what: &str) {
        eventually(what, DRAIN_DEADLINE, || async { (self.depth().await == 0).then_some(()) }).await;
    }

    /// Polls the depth every 20 ms until the queue is empty.
    async fn watch_drain(&self, backlog: u64) -> Drain {
        let started = Instant::now();
        let mut samples: Vec<(Instant, u64)> = Vec::new();
        let mut first_drop = None;
        loop {
            let depth = self.depth().await;
            let now = Instant::now();
            samples.push((now, depth));
            if first_drop.is_none() && depth < backlog {
                first_drop = Some(now);
            }
            if depth == 0 {
                break;
            }
            assert!(
                started.elapsed() < DRAIN_DEADLINE,
                "the backlog did not drain within {DRAIN_DEADLINE:?}: {depth} left"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let peak_per_second = samples
            .iter()
            .filter_map(|(at, depth)| {
                let later = samples.iter().find(|(t, _)| *t >= *at + Duration::from_secs(1))?;
                Some((depth - later.1) as f64 / (later.0 - *at).as_secs_f64())
            })
            .fold(0.0, f64::max);
        let empty = samples.last().expect("a sample").0;
        Drain { first_drop: first_drop.unwrap_or(empty), empty, peak_per_second }
    }
}
