//! The chaos suite (`make chaos`): under a steady load of creates and completions it crashes,
//! at random moments, each app and each daprd (SIGKILL to daprd, the app's task dropped where
//! it stands), starts them again, and restarts the broker once. Then it checks against the todo
//! API's own record that every todo and every completion reached analytics exactly once, that
//! every one has exactly one notification, that the outbox is empty and that nothing was
//! dead-lettered. It prints what it injected and how long the system took to settle.
//!
//! `CHAOS_SECONDS` (default 60) bounds the faulty phase; `CHAOS_SEED` replays a run (every run
//! prints its seed). Ignored by `make test`: `make chaos` runs it, `.ci/run` a short round.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use service_kit::testing::eventually;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerKind;
use crate::harness::{DbBackend, Extra, Kind, System};

const SETTLE_DEADLINE: Duration = Duration::from_secs(180);
const USER: &str = "chaos";

struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[derive(Default)]
struct LoadFigures {
    sent: AtomicUsize,
    failed: AtomicUsize,
}

/// Creates a todo every 25 ms and completes every other one, against whichever todo instance
/// runs now; requests that fail (the instance is down) are counted, not retried.
async fn load(todo_url: Arc<Mutex<String>>, figures: Arc<LoadFigures>, stop: CancellationToken) {
    // A connection per request, as from many clients: a pooled connection would outlive the
    // crash of the instance it was opened to.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).pool_max_idle_per_host(0).build().unwrap();
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let url = todo_url.lock().unwrap().clone();
        figures.sent.fetch_add(1, Ordering::Relaxed);
        let created =
            http.post(format!("{url}/todos")).json(&json!({"userId": USER, "title": format!("todo {n}")})).send().await;
        match created {
            Ok(response) if response.status() == 201 => {
                let todo: Value = response.json().await.unwrap_or(Value::Null);
                if n.is_multiple_of(2)
                    && let Some(id) = todo["id"].as_str()
                {
                    figures.sent.fetch_add(1, Ordering::Relaxed);
                    let completed = http.post(format!("{url}/todos/{id}/complete")).send().await;
                    if !completed.is_ok_and(|r| r.status() == 200) {
                        figures.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {
                figures.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The todo API's own record: how many todos the user has, and how many of them are completed.
async fn ground_truth(system: &System) -> (usize, usize) {
    let (mut created, mut completed, mut cursor) = (0, 0, None::<String>);
    loop {
        let path = match &cursor {
            None => format!("/todos?userId={USER}&limit=100"),
            Some(cursor) => format!("/todos?userId={USER}&limit=100&cursor={cursor}"),
        };
        let page = system.todo_call(reqwest::Method::GET, &path, None).await;
        for todo in page["items"].as_array().unwrap() {
            created += 1;
            completed += usize::from(todo["status"] == "completed");
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (created, completed),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the chaos suite: run by `make chaos` (and a short round by .ci/run)"]
async fn under_crashes_and_a_broker_restart_every_change_is_applied_exactly_once() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    eprintln!("chaos: CHAOS_SEED={seed} CHAOS_SECONDS={seconds}");
    let mut random = Random(seed);
    // One todo instance, restarted under the same relay name, as k8s/ does with the pod's name
    // (a container restart keeps it): the restarted relay releases the leases it died with
    // instead of its events waiting out RELAY_LEASE_MS.
    let named = Extra { env: [("RELAY_INSTANCE", "todo-chaos".to_owned())].into(), ..Extra::default() };
    let mut system = System::start_on(BrokerKind::from_env(), DbBackend::Sqlite, named).await;
    let todo_url = Arc::new(Mutex::new(system.todo.url.clone()));
    let figures = Arc::new(LoadFigures::default());
    let stop_load = CancellationToken::new();
    let load = tokio::spawn(load(todo_url.clone(), figures.clone(), stop_load.clone()));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let broker_restart_at = started + Duration::from_secs(seconds / 2);
    let mut broker_restarted = false;
    let mut injected = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1_000 + random.below(3_000))).await;
        let at = started.elapsed().as_secs_f32();
        if !broker_restarted && Instant::now() >= broker_restart_at {
            system.broker.stop().await;
            tokio::time::sleep(Duration::from_millis(500 + random.below(2_500))).await;
            system.broker.start_again().await;
            broker_restarted = true;
            injected.push(format!("{at:.1}s broker restarted"));
            continue;
        }
        let kind = [Kind::Todo, Kind::Notification, Kind::Analytics][random.below(3) as usize];
        let app_first = random.below(2) == 0;
        system.crash_and_restart(kind, app_first).await;
        if kind == Kind::Todo {
            *todo_url.lock().unwrap() = system.todo.url.clone();
        }
        let first = if app_first { "app" } else { "daprd" };
        injected.push(format!("{at:.1}s {kind:?} killed ({first} first) and restarted"));
    }
    if !broker_restarted {
        system.broker.stop().await;
        system.broker.start_again().await;
        injected.push(format!("{:.1}s broker restarted", started.elapsed().as_secs_f32()));
    }
    stop_load.cancel();
    load.await.expect("the load ran");
    let quiet = Instant::now();

    let (created, completed) = ground_truth(&system).await;
    let expected = json!({"created": created, "completed": completed});
    // Analytics' figures alone can be complete before its log is: a todo's state travels in each
    // event, so a completion delivered while the creation's redelivery is still on its way
    // already counts both. Settled means every event reached the log too.
    let analytics = system.databases[&Kind::Analytics].connect(analytics::startup::MIGRATIONS).await;
    let (settled, logged) = eventually("the system to settle", SETTLE_DEADLINE, || async {
        let metrics = reqwest::get(format!("{}/metrics", system.todo.metrics_url)).await.ok()?.text().await.ok()?;
        let figures = system.get(Kind::Analytics, &format!("/analytics/users/{USER}")).await;
        let notified = system.notification_count(USER).await;
        let logged: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM event_log").fetch_one(&analytics.reader).await.ok()?;
        (metrics.contains("dapr_todo_outbox_pending_events 0")
            && figures["created"] == expected["created"]
            && figures["completed"] == expected["completed"]
            && notified >= created + completed
            && logged as usize >= created + completed)
            .then_some((notified, logged))
    })
    .await;
    let settle_time = quiet.elapsed();
    analytics.close().await;
    let mut parked = 0;
    for kind in [Kind::Notification, Kind::Analytics] {
        parked += system.get(kind, "/admin/dead-letters?status=parked").await["items"].as_array().unwrap().len();
    }
    eprintln!(
        "chaos: {} requests sent ({} failed while an instance was down) over {seconds} s; {created} todos created and \
         {completed} completed by the todo API's record; {} events; faults: {}; {} notifications, {logged} events in \
         analytics' log, {parked} dead letters; settled {settle_time:?} after the load ended",
        figures.sent.load(Ordering::Relaxed),
        figures.failed.load(Ordering::Relaxed),
        created + completed,
        injected.join(", "),
        settled,
    );
    assert_eq!(settled, created + completed, "notifications: one per creation and completion");
    assert_eq!(logged as usize, created + completed, "analytics logged each event exactly once");
    assert_eq!(parked, 0, "nothing may be dead-lettered");
}
