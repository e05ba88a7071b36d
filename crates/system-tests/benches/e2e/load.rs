//! Open-loop load: request `i` is due at `start + i / rate` whatever became of the ones before
//! it, and its latency counts from when it was due, so a system that stalls is charged for the
//! requests it held up (no coordinated omission). The schedule is kept with tokio's timer
//! (1 ms resolution): at 2,000/s requests leave in pairs each millisecond.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use uuid::Uuid;

/// In flight at most; a request due while this many are outstanding is not sent and is
/// counted as `skipped` (the load generator would otherwise run out of sockets).
const MAX_IN_FLIGHT: usize = 4_096;

/// Users the load spreads its todos (and reads) over.
pub const USERS: usize = 100;

#[derive(Debug, Clone)]
pub struct Outcome {
    /// When the request was due, on the wall clock the consumers stamp their rows with.
    pub due: SystemTime,
    /// From when it was due to the end of the answer.
    pub latency: Duration,
    /// The HTTP status; 0 when the request failed without one.
    pub status: u16,
    /// The created todo, for creates that succeeded.
    pub todo_id: Option<Uuid>,
}

#[derive(Debug, Default, Clone)]
pub struct Run {
    pub outcomes: Vec<Outcome>,
    pub skipped: u64,
    pub elapsed: Duration,
}

impl Run {
    pub fn succeeded(&self) -> usize {
        self.outcomes.iter().filter(|o| (200..300).contains(&o.status)).count()
    }
}

/// How many requests have been answered so far, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub answered: AtomicU64,
    pub failed: AtomicU64,
}

/// Sends `rate` requests per second for `duration`, each made by `request(i)`.
pub async fn open_loop<F, Fut>(rate: f64, duration: Duration, progress: Arc<Progress>, request: F) -> Run
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = (u16, Option<Uuid>)> + Send + 'static,
{
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let (start, wall_start) = (tokio::time::Instant::now(), SystemTime::now());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut skipped = 0;
    for i in 0..total {
        let offset = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(start + offset).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (due, due_wall) = (start + offset, wall_start + offset);
        let answer = request(i);
        let progress = progress.clone();
        tasks.spawn(async move {
            let (status, todo_id) = answer.await;
            drop(permit);
            let counter = if (200..300).contains(&status) { &progress.answered } else { &progress.failed };
            counter.fetch_add(1, Ordering::Relaxed);
            Outcome { due: due_wall, latency: due.elapsed(), status, todo_id }
        });
    }
    let mut outcomes = Vec::with_capacity(total as usize);
    while let Some(outcome) = tasks.join_next().await {
        outcomes.push(outcome.expect("a request task"));
    }
    Run { outcomes, skipped, elapsed: start.elapsed() }
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
}

/// `POST /todos` for user `i % USERS`; the status and, on 201, the new todo's id.
pub fn create(
    http: &reqwest::Client,
    todo_url: &str,
    i: u64,
) -> impl Future<Output = (u16, Option<Uuid>)> + Send + use<> {
    let request = http.post(format!("{todo_url}/todos")).json(
        &serde_json::json!({"userId": format!("user-{}", i as usize % USERS), "title": format!("bench todo {i}")}),
    );
    async move {
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let id = response.json::<Created>().await.ok().map(|c| c.id);
                (status, id)
            }
            Err(_) => (0, None),
        }
    }
}

/// A GET whose body is read and dropped: the read load's request.
pub fn get(http: &reqwest::Client, url: String) -> impl Future<Output = (u16, Option<Uuid>)> + Send + use<> {
    send(http.get(url))
}

/// Sends `request` and reads its answer through; its status (0 when none came).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Option<Uuid>) {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            (status, None)
        }
        Err(_) => (0, None),
    }
}

/// `n` requests made by `request(i)` from `workers` connections as fast as they are answered
/// (closed loop): for building a backlog and for the rate of creates with the sidecar up or
/// down. Returns the requests answered 2xx per second and how many failed.
pub async fn closed_loop<F, Fut>(n: u64, workers: u64, request: F) -> (f64, u64)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (u16, Option<Uuid>)> + Send + 'static,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (request, next, ok, failed) = (request.clone(), next.clone(), ok.clone(), failed.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let (status, _) = request(i).await;
                let counter = if (200..300).contains(&status) { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(), failed.load(Ordering::Relaxed))
}
