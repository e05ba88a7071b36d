//! Write throughput of `POST /todos`, end to end, against a bare insert (and, optionally, the
//! FastAPI peer), and how fast the relay drains the outbox.
//!
//! Run with `make bench-write` (or `cargo bench -p todo --bench write_throughput`). For SQLite (a
//! temp file) and PostgreSQL (a fresh database on `BENCH_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, dropped at the end) it:
//!
//! 1. starts a stand-in Dapr sidecar that answers publishes (single and bulk) with 204 and
//!    counts the events, and the todo service in-process against it;
//! 2. starts the baseline beside it: a bare axum handler doing one `INSERT` per request on a
//!    database of the same kind and settings (pragmas, pool), with the same allocator;
//! 3. warms both up, then loads them in turn, `BENCH_RUNS` times each (default 3), with wrk in
//!    a process of its own (`BENCH_SECONDS` per run, default 10; `BENCH_CONCURRENCY`
//!    connections, default 32), waiting after each todo run until the relay has published
//!    every event (the drain). The median of each figure over the runs is the result.
//!
//! Without wrk on the PATH the load comes from workers in this process instead
//! (`BENCH_REQUESTS` per run, default 5000), which is said in the first line.
//! `BENCH_BACKENDS` (default `sqlite,postgres`) picks the backends. `RELAY_*`,
//! `DB_MAX_CONNECTIONS` and `MAX_CONCURRENT_REQUESTS` pass through to the service
//! (`RELAY_ENABLED=false` shows what the relay costs the API).
//!
//! With `BENCH_PEER` set to a python (`make bench-write PEER=1` passes the venv's of
//! `scripts/ensure-fastapi-peer.sh`), the FastAPI peer (bench/fastapi-peer: the same create, schema,
//! transaction, durability and relay, in Python) joins the runs, twice: uvicorn with 1 worker
//! (`fastapi-1w`) and with 2 (`fastapi-2w`), each a child process on a fresh database of the
//! backend with a stand-in sidecar of its own, warmed up and drained like the service, and
//! loaded in turn with the others (todo, baseline, fastapi-1w, fastapi-2w, todo, …). The report
//! adds `todo/fastapi best`: the service's throughput over the better of the two.
//!
//! Telemetry is set up as in the service (`service_kit::telemetry::init`: every request, unit of
//! work and publish is a span with ids). With `OTEL_EXPORTER_OTLP_ENDPOINT` set the spans are
//! exported too: `make bench-write TRACING=1` runs it against a Jaeger of its own, for the cost
//! of export; the last lines give the process's peak RSS either way.
//!
//! wrk, the service, the stub and the database share the machine's cores, so absolute figures
//! move with whatever else runs; the ratios of one run are the figures to compare.

#[path = "support/fastapi_peer.rs"]
mod fastapi_peer;
#[path = "support/scratch.rs"]
mod scratch;
#[path = "support/wrk.rs"]
mod wrk;

use scratch::{Scratch, env_number as number, redact};

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use service_kit::db::Database;
use service_kit::db::dialect::Backend;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The allocator the service binary runs on (services/todo/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WARMUP_REQUESTS: usize = 200;
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The FastAPI peer's configurations: uvicorn with this many worker processes.
const PEER_WORKERS: [usize; 2] = [1, 2];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let telemetry = service_kit::telemetry::init("todo", false).context("setting up telemetry")?;
    println!("spans exported: {}", if telemetry.exporting() { "yes (OTEL_EXPORTER_OTLP_ENDPOINT)" } else { "no" });
    match &config.load {
        LoadGenerator::Wrk { seconds, .. } => println!(
            "write_throughput: wrk, {} connections, {seconds} s per run, {} runs per service interleaved, \
             after {WARMUP_REQUESTS} warm-up requests",
            config.concurrency, config.runs
        ),
        LoadGenerator::InProcess { requests } => println!(
            "write_throughput: no wrk on the PATH, so load from this process: {requests} requests per run, \
             {} concurrent workers, {} runs per service interleaved, after {WARMUP_REQUESTS} warm-up requests",
            config.concurrency, config.runs
        ),
    }
    if let Some(python) = &config.peer {
        println!("FastAPI peer: bench/fastapi-peer under uvicorn with {PEER_WORKERS:?} workers, {}", python.display());
    }
    // One client for every request: keep-alive connections, as a real caller would have.
    let client = reqwest::Client::builder().no_proxy().build().context("building the HTTP client")?;
    let mut report = Report::default();

    if config.backends.contains("sqlite") {
        let mut sqlite = Scratch::sqlite()?;
        let result = bench_backend(&mut sqlite, &config, &client, &mut report).await;
        sqlite.cleanup().await;
        result.context("SQLite benchmark")?;
    }

    if config.backends.contains("postgres") {
        match Scratch::postgres(&config.postgres_url).await {
            Ok(mut postgres) => {
                let result = bench_backend(&mut postgres, &config, &client, &mut report).await;
                postgres.cleanup().await;
                result.context("PostgreSQL benchmark")?;
            }
            Err(error) => {
                let line = format!("PostgreSQL skipped: {} is unreachable ({error:#})", redact(&config.postgres_url));
                println!("\n{line}");
                report.notes.push(line);
            }
        }
    }

    report.print();
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    println!("peak RSS of this process (service, stub{}): {}", config.load.in_process_note(), peak_rss());
    Ok(())
}

/// `VmHWM` of /proc/self/status: the most resident memory the process has had.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown (no /proc)".to_owned())
}

/// Where the measured load comes from.
enum LoadGenerator {
    /// wrk in a process of its own, for `seconds` per run.
    Wrk { wrk: PathBuf, script: PathBuf, seconds: u64 },
    /// Workers in this process, `requests` per run: when there is no wrk.
    InProcess { requests: usize },
}

impl LoadGenerator {
    fn in_process_note(&self) -> &'static str {
        match self {
            Self::Wrk { .. } => "",
            Self::InProcess { .. } => ", load",
        }
    }

    async fn run(
        &self,
        client: &reqwest::Client,
        url: &str,
        concurrency: usize,
        first: usize,
    ) -> anyhow::Result<Stats> {
        match self {
            Self::Wrk { wrk, script, seconds } => {
                let run = wrk::run(wrk, script, url, concurrency, Duration::from_secs(*seconds)).await?;
                Ok(Stats::from_wrk(run))
            }
            Self::InProcess { requests } => {
                Ok(Stats::from_load(run_load(client, url, first..first + requests, concurrency).await))
            }
        }
    }
}

struct Config {
    load: LoadGenerator,
    concurrency: usize,
    runs: usize,
    /// `BENCH_BACKENDS` (default `sqlite,postgres`).
    backends: String,
    postgres_url: String,
    /// `BENCH_PEER`: the python of the FastAPI peer's venv, when it is to run too.
    peer: Option<PathBuf>,
    _scripts: tempfile_dir::TempDir,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let scripts = tempfile_dir::TempDir::new()?;
        let load = match wrk::find() {
            Some(wrk) => LoadGenerator::Wrk {
                wrk,
                script: wrk::create_script(&scripts.0)?,
                seconds: number("BENCH_SECONDS", 10)? as u64,
            },
            None => LoadGenerator::InProcess { requests: number("BENCH_REQUESTS", 5000)? },
        };
        let config = Self {
            load,
            concurrency: number("BENCH_CONCURRENCY", 32)?,
            runs: number("BENCH_RUNS", 3)?,
            backends: std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into()),
            postgres_url: std::env::var("BENCH_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into()),
            peer: std::env::var_os("BENCH_PEER").filter(|p| !p.is_empty()).map(PathBuf::from),
            _scripts: scripts,
        };
        if config.concurrency == 0 || config.runs == 0 {
            bail!("BENCH_CONCURRENCY and BENCH_RUNS must be at least 1");
        }
        if let Some(python) = &config.peer
            && !python.is_file()
        {
            bail!(
                "BENCH_PEER={} is not a file (scripts/ensure-fastapi-peer.sh prints the python to use)",
                python.display()
            );
        }
        Ok(config)
    }
}

/// A directory removed when dropped (wrk's script).
mod tempfile_dir {
    pub struct TempDir(pub std::path::PathBuf);

    impl TempDir {
        pub fn new() -> anyhow::Result<Self> {
            let dir = std::env::temp_dir().join(format!("todo-bench-wrk-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir)?;
            Ok(Self(dir))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs the todo service and the baseline (and the FastAPI peer, with `BENCH_PEER`) on fresh
/// databases of one backend, side by side, their runs interleaved (todo, baseline, peers, todo,
/// …) so a drift of the machine hits each; the median of each figure over the runs is reported.
async fn bench_backend(
    scratch: &mut Scratch,
    config: &Config,
    client: &reqwest::Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let backend = scratch.name();
    println!("\n== {backend} ==");
    let todo = TodoUnderTest::start(&scratch.fresh_database("todo").await?, config, client).await?;
    let baseline = BaselineUnderTest::start(&scratch.fresh_database("baseline").await?, config, client).await?;
    let mut peers = Vec::new();
    if let Some(python) = &config.peer {
        for workers in PEER_WORKERS {
            let url = scratch.fresh_database(&format!("fastapi-{workers}w")).await?;
            peers.push(PeerUnderTest::start(python, workers, &url, config, client).await?);
        }
    }
    let (mut todo_runs, mut baseline_runs, mut drains) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = WARMUP_REQUESTS;
    for run in 1..=config.runs {
        let load_started = Instant::now();
        let todo_run = config.load.run(client, &todo.endpoint, config.concurrency, next).await?;
        let load_ended = Instant::now();
        next += todo_run.requests as usize;
        let drain = todo.drain(load_started, load_ended, todo_run.requests - todo_run.errors).await?;
        let drain_text = drain.as_ref().map_or_else(|| "relay disabled".to_owned(), ToString::to_string);
        println!("{backend} run {run} todo:     {todo_run}\n{backend} run {run} drain:    {drain_text}");
        let baseline_run = config.load.run(client, &baseline.endpoint, config.concurrency, next).await?;
        println!("{backend} run {run} baseline: {baseline_run}");
        next += baseline_run.requests as usize;
        todo_runs.push(todo_run);
        baseline_runs.push(baseline_run);
        drains.extend(drain);
        for peer in &mut peers {
            next += peer.run_once(config, client, next).await.with_context(|| format!("{} run {run}", peer.name))?;
            let (peer_run, drain) = (peer.runs.last().expect("a run"), peer.drains.last().expect("a drain"));
            println!("{backend} run {run} {}: {peer_run}\n{backend} run {run} drain:      {drain}", peer.name);
        }
    }
    todo.stop().await;
    baseline.stop().await;
    let (todo, baseline) = (Stats::median(todo_runs), Stats::median(baseline_runs));
    println!("{backend} todo (median):     {todo}\n{backend} baseline (median): {baseline}");
    for drain in &drains {
        report.notes.push(format!("{backend} drain: {drain}"));
    }
    report.notes.push(format!("{backend} todo/baseline: {}", Ratio(&todo, &baseline)));
    let mut peer_medians = Vec::new();
    for peer in peers {
        let (name, runs, drains) = peer.stop().await;
        let median = Stats::median(runs);
        println!("{backend} {name} (median): {median}");
        for drain in &drains {
            report.notes.push(format!("{backend} {name} drain: {drain}"));
        }
        peer_medians.push((name, median));
    }
    // The service against the better of the peer's configurations: its best figure counts.
    let best = peer_medians.iter().max_by(|a, b| a.1.throughput.partial_cmp(&b.1.throughput).expect("comparable"));
    if let Some((name, peer)) = best {
        report.notes.push(format!(
            "{backend} todo/fastapi best: x{:.2} (best: {name}, {:.0} req/s; {})",
            todo.throughput / peer.throughput,
            peer.throughput,
            Ratio(&todo, peer)
        ));
    }
    report.rows.push((backend, "todo", todo));
    report.rows.push((backend, "baseline", baseline));
    for (name, median) in peer_medians {
        report.rows.push((backend, name, median));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The todo service, its stand-in sidecar, and the drain
// ---------------------------------------------------------------------------------------------

struct TodoUnderTest {
    endpoint: String,
    sidecar: StubSidecar,
    /// A handle on the service's own pools, to watch the outbox empty.
    db: Database,
    relay_enabled: bool,
    /// Events the stub should have seen once the outbox is drained.
    expected: std::sync::atomic::AtomicU64,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), service_kit::startup::StartError>>,
}

impl TodoUnderTest {
    async fn start(url: &str, config: &Config, client: &reqwest::Client) -> anyhow::Result<Self> {
        let sidecar = StubSidecar::start().await?;
        let settings = todo::config::Settings::from_lookup(|name| match name {
            "APP_HOST" => Some("127.0.0.1".into()),
            "APP_PORT" | "METRICS_PORT" => Some("0".into()),
            "DATABASE_URL" => Some(url.to_owned()),
            "DAPR_HTTP_PORT" => Some(sidecar.addr.port().to_string()),
            _ if name.starts_with("RELAY_") || name == "DB_MAX_CONNECTIONS" || name == "MAX_CONCURRENT_REQUESTS" => {
                std::env::var(name).ok()
            }
            _ => None,
        })
        .context("todo settings")?;
        let relay_enabled = settings.relay.enabled;
        let app = todo::startup::Application::build(settings).await.context("starting the todo service")?;
        let endpoint = format!("http://{}/todos", app.local_addr());
        let db = app.database().clone();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        // Warm-up: connections, prepared statements, the relay's first rounds. Drained before
        // the measured load so the relay starts it idle.
        let warmup = run_load(client, &endpoint, 0..WARMUP_REQUESTS, config.concurrency).await;
        ensure_no_errors("todo warm-up", &warmup)?;
        if relay_enabled {
            sidecar.wait_for(WARMUP_REQUESTS as u64, DRAIN_DEADLINE).await.context("draining the warm-up events")?;
            wait_for_empty_outbox(&db, DRAIN_DEADLINE).await.context("draining the warm-up events")?;
        }
        let expected = (WARMUP_REQUESTS as u64).into();
        Ok(Self { endpoint, sidecar, db, relay_enabled, expected, shutdown, server })
    }

    /// Waits until the relay published what a run created.
    async fn drain(&self, load_started: Instant, load_ended: Instant, created: u64) -> anyhow::Result<Option<Drain>> {
        if !self.relay_enabled {
            return Ok(None);
        }
        let before = self.expected.load(Ordering::SeqCst);
        let drain = measure_drain(&self.sidecar, &self.db, before, load_started, load_ended, created).await?;
        // wrk does not count the requests still in flight when it stops; the service served
        // them, so the stub's count is the one to go on from.
        self.expected.store(self.sidecar.published(), Ordering::SeqCst);
        Ok(Some(drain))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => println!("warning: the todo service stopped with an error: {error}"),
            Ok(Err(error)) => println!("warning: the todo service task failed: {error}"),
            Err(_) => println!("warning: the todo service did not stop within 30 s"),
        }
        self.sidecar.stop().await;
    }
}

/// Waits until the stub has seen every event of the measured load (`created`: one per
/// successful create), then until the relay has marked them all published.
async fn measure_drain(
    sidecar: &StubSidecar,
    db: &Database,
    before: u64,
    load_started: Instant,
    load_ended: Instant,
    created: u64,
) -> anyhow::Result<Drain> {
    let published_during_load = sidecar.published().saturating_sub(before);
    let expected = before + created;
    let last_publish = sidecar.wait_for(expected, DRAIN_DEADLINE).await.context("draining the outbox")?;
    // The relay marks an event published only after daprd answered, so the outbox empties a
    // little after the last publish. An empty outbox also proves the stub's count was not
    // inflated by duplicates.
    wait_for_empty_outbox(db, DRAIN_DEADLINE).await.context("draining the outbox")?;
    let outbox_empty = Instant::now();
    Ok(Drain {
        events: created,
        published_during_load,
        after_load: last_publish.saturating_duration_since(load_ended),
        load_start_to_drained: last_publish.saturating_duration_since(load_started),
        empty_after_load: outbox_empty.saturating_duration_since(load_ended),
    })
}

/// Polls until no event is pending (none left in the relay's queue).
async fn wait_for_empty_outbox(db: &Database, deadline: Duration) -> anyhow::Result<()> {
    let give_up = Instant::now() + deadline;
    loop {
        let pending = todo::outbox::queue::pending_count(&db.reader).await.context("counting pending events")?;
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > give_up {
            bail!("{pending} events still pending after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How the relay kept up.
struct Drain {
    events: u64,
    published_during_load: u64,
    /// From the last response of the load to the last publish.
    after_load: Duration,
    load_start_to_drained: Duration,
    /// From the last response of the load until no row was pending any more.
    empty_after_load: Duration,
}

impl std::fmt::Display for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events; {} published during the load; last published {:.0} ms after the load ended \
             (outbox empty after {:.0} ms); {:.0} events/s from load start to last publish",
            self.events,
            self.published_during_load,
            ms(self.after_load),
            ms(self.empty_after_load),
            self.events as f64 / self.load_start_to_drained.as_secs_f64(),
        )
    }
}

/// Answers like daprd for the two calls the relay makes, and counts publishes.
struct StubSidecar {
    addr: SocketAddr,
    counters: Arc<SidecarCounters>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
}

struct SidecarCounters {
    epoch: Instant,
    published: AtomicU64,
    /// Nanoseconds after `epoch` of the latest publish.
    last_publish_nanos: AtomicU64,
}

impl StubSidecar {
    async fn start() -> anyhow::Result<Self> {
        let counters = Arc::new(SidecarCounters {
            epoch: Instant::now(),
            published: AtomicU64::new(0),
            last_publish_nanos: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/v1.0/healthz/outbound", get(|| async { StatusCode::NO_CONTENT }))
            .route("/v1.0/publish/{pubsub}/{*topic}", post(stub_publish))
            .route("/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}", post(stub_bulk_publish))
            .with_state(counters.clone());
        let (addr, shutdown, server) = serve(router).await?;
        Ok(Self { addr, counters, shutdown, server })
    }

    fn published(&self) -> u64 {
        self.counters.published.load(Ordering::SeqCst)
    }

    /// Polls until `expected` publishes were counted; returns when the last one arrived.
    async fn wait_for(&self, expected: u64, deadline: Duration) -> anyhow::Result<Instant> {
        let give_up = Instant::now() + deadline;
        while self.published() < expected {
            if Instant::now() > give_up {
                bail!("only {} of {expected} events published after {deadline:?}", self.published());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let nanos = self.counters.last_publish_nanos.load(Ordering::SeqCst);
        Ok(self.counters.epoch + Duration::from_nanos(nanos))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}

/// Reads the whole body (as daprd would) before answering.
async fn stub_publish(State(counters): State<Arc<SidecarCounters>>, _body: axum::body::Bytes) -> StatusCode {
    counters.count(1);
    StatusCode::NO_CONTENT
}

/// Parses the entries (as daprd would) and counts each as a publish.
async fn stub_bulk_publish(State(counters): State<Arc<SidecarCounters>>, body: axum::body::Bytes) -> StatusCode {
    match serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body) {
        Ok(entries) => {
            counters.count(entries.len() as u64);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

impl SidecarCounters {
    fn count(&self, published: u64) {
        let nanos = self.epoch.elapsed().as_nanos() as u64;
        self.last_publish_nanos.fetch_max(nanos, Ordering::SeqCst);
        self.published.fetch_add(published, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// The baseline: one INSERT per request, nothing else
// ---------------------------------------------------------------------------------------------

struct BaselineUnderTest {
    endpoint: String,
    db: Database,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
}

impl BaselineUnderTest {
    async fn start(url: &str, config: &Config, client: &reqwest::Client) -> anyhow::Result<Self> {
        // Same pool setup as the service (pragmas, single SQLite writer); its migrations run
        // too, which is harmless.
        let db = todo::startup::connect_database(url, 10).await.context("connecting the baseline database")?;
        let collate = if db.backend == Backend::Postgres { r#"COLLATE "C""# } else { "" };
        sqlx::query(&format!(
            "CREATE TABLE bench_baseline (id TEXT {collate} PRIMARY KEY NOT NULL, user_id TEXT NOT NULL, \
             title TEXT NOT NULL, created_at TEXT NOT NULL)"
        ))
        .execute(&db.writer)
        .await
        .context("creating bench_baseline")?;
        let router = Router::new().route("/baseline", post(baseline_insert)).with_state(db.clone());
        let (addr, shutdown, server) = serve(router).await?;
        let endpoint = format!("http://{addr}/baseline");
        let warmup = run_load(client, &endpoint, 0..WARMUP_REQUESTS, config.concurrency).await;
        ensure_no_errors("baseline warm-up", &warmup)?;
        Ok(Self { endpoint, db, shutdown, server })
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        self.db.close().await;
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BaselineRequest {
    user_id: String,
    title: String,
}

async fn baseline_insert(
    State(db): State<Database>,
    axum::Json(request): axum::Json<BaselineRequest>,
) -> axum::response::Response {
    let id = uuid::Uuid::now_v7().to_string();
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let inserted = sqlx::query("INSERT INTO bench_baseline (id, user_id, title, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(request.user_id)
        .bind(request.title)
        .bind(created_at)
        .execute(&db.writer)
        .await;
    match inserted {
        Ok(_) => (StatusCode::CREATED, axum::Json(serde_json::json!({ "id": id }))).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// The FastAPI peer (bench/fastapi-peer): the same create in Python, for comparison
// ---------------------------------------------------------------------------------------------

/// One configuration of the peer (uvicorn with `workers` processes), its stand-in sidecar, and
/// what its runs measured.
struct PeerUnderTest {
    name: &'static str,
    process: fastapi_peer::PeerProcess,
    sidecar: StubSidecar,
    /// A connection of our own to the peer's database, to watch its outbox empty.
    db: Database,
    /// Events the stub should have seen once the outbox is drained.
    expected: u64,
    runs: Vec<Stats>,
    drains: Vec<Drain>,
}

impl PeerUnderTest {
    async fn start(
        python: &Path,
        workers: usize,
        url: &str,
        config: &Config,
        client: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let name = match workers {
            1 => "fastapi-1w",
            2 => "fastapi-2w",
            _ => bail!("no report name for a peer with {workers} workers"),
        };
        let sidecar = StubSidecar::start().await?;
        let mut process = fastapi_peer::PeerProcess::start(python, workers, url, sidecar.addr.port())?;
        process.wait_ready(client).await.with_context(|| format!("starting {name}"))?;
        let db = peer_database(url).await.with_context(|| format!("connecting to {name}'s database"))?;
        // Warm-up, as for the service: every worker's connections and statements, the relays'
        // first rounds; drained before the measured load.
        let warmup = run_load(client, &process.endpoint, 0..WARMUP_REQUESTS, config.concurrency).await;
        ensure_no_errors(&format!("{name} warm-up"), &warmup).with_context(|| process.log_tail())?;
        let drained = async {
            sidecar.wait_for(WARMUP_REQUESTS as u64, DRAIN_DEADLINE).await?;
            wait_for_empty_outbox(&db, DRAIN_DEADLINE).await
        };
        drained.await.with_context(|| format!("draining {name}'s warm-up events\n{}", process.log_tail()))?;
        let expected = sidecar.published();
        Ok(Self { name, process, sidecar, db, expected, runs: Vec::new(), drains: Vec::new() })
    }

    /// One measured run and its drain; returns the number of requests sent.
    async fn run_once(&mut self, config: &Config, client: &reqwest::Client, first: usize) -> anyhow::Result<usize> {
        let load_started = Instant::now();
        let run = config.load.run(client, &self.process.endpoint, config.concurrency, first).await?;
        let load_ended = Instant::now();
        let created = run.requests - run.errors;
        let drain = measure_drain(&self.sidecar, &self.db, self.expected, load_started, load_ended, created)
            .await
            .with_context(|| self.process.log_tail())?;
        // As for the service: the stub's count includes what was in flight when wrk stopped.
        self.expected = self.sidecar.published();
        let requests = run.requests as usize;
        self.runs.push(run);
        self.drains.push(drain);
        Ok(requests)
    }

    /// Stops the peer's processes and its stub; its runs and drains.
    async fn stop(self) -> (&'static str, Vec<Stats>, Vec<Drain>) {
        self.db.close().await;
        self.process.stop().await;
        self.sidecar.stop().await;
        (self.name, self.runs, self.drains)
    }
}

/// A pool of one connection on the peer's database, as a [`Database`] for
/// [`wait_for_empty_outbox`]; the peer applied the schema itself, so no migration runs.
async fn peer_database(url: &str) -> anyhow::Result<Database> {
    sqlx::any::install_default_drivers();
    let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await?;
    Ok(Database { backend, reader: pool.clone(), writer: pool })
}

/// Serves `router` on a free loopback port until the returned token is cancelled.
async fn serve(router: Router) -> anyhow::Result<(SocketAddr, CancellationToken, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone().cancelled_owned();
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
            println!("warning: server on {addr} failed: {error}");
        }
    });
    Ok((addr, shutdown, server))
}

// ---------------------------------------------------------------------------------------------
// Load generation and figures
// ---------------------------------------------------------------------------------------------

struct Load {
    elapsed: Duration,
    /// One per request, failed ones included.
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

/// Sends one create per index in `indexes`, from `concurrency` workers pulling the next index
/// from a shared counter (so a slow request does not hold back a fixed share of the work).
async fn run_load(client: &reqwest::Client, endpoint: &str, indexes: Range<usize>, concurrency: usize) -> Load {
    let next = Arc::new(AtomicUsize::new(indexes.start));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, endpoint, next, end) = (client.clone(), endpoint.to_owned(), next.clone(), indexes.end);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    let sent = Instant::now();
                    let outcome = create_once(&client, &endpoint, i).await;
                    latencies.push(sent.elapsed());
                    if let Err(error) = outcome {
                        errors.push(error);
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut load =
        Load { elapsed: Duration::ZERO, latencies: Vec::with_capacity(indexes.len()), errors: 0, first_error: None };
    for worker in workers {
        let (latencies, errors) = worker.await.expect("a load worker does not panic");
        load.latencies.extend(latencies);
        load.errors += errors.len();
        load.first_error = load.first_error.or(errors.into_iter().next());
    }
    load.elapsed = started.elapsed();
    load
}

/// One `POST`; anything but 201 is an error. The body is read so the connection is reused.
async fn create_once(client: &reqwest::Client, endpoint: &str, i: usize) -> Result<(), String> {
    let body = format!(r#"{{"userId":"user-{}","title":"bench {i}"}}"#, i % 50);
    let response = client
        .post(endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("reading the response failed: {e}"))?;
    if status != reqwest::StatusCode::CREATED {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(())
}

fn ensure_no_errors(what: &str, load: &Load) -> anyhow::Result<()> {
    if load.errors > 0 {
        bail!("{what}: {} requests failed, first: {}", load.errors, load.first_error.as_deref().unwrap_or("?"));
    }
    Ok(())
}

struct Stats {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    throughput: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn from_wrk(run: wrk::WrkRun) -> Self {
        Self {
            requests: run.requests,
            errors: run.errors,
            first_error: None,
            throughput: run.throughput,
            p50: run.p50,
            p90: run.p90,
            p99: run.p99,
            max: run.max,
        }
    }

    /// Each figure's median over `runs` (requests and errors summed).
    fn median(runs: Vec<Stats>) -> Self {
        fn middle<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
            values.sort_by(|a, b| a.partial_cmp(b).expect("comparable figures"));
            values[values.len() / 2]
        }
        Self {
            requests: runs.iter().map(|r| r.requests).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            first_error: runs.iter().find_map(|r| r.first_error.clone()),
            throughput: middle(runs.iter().map(|r| r.throughput).collect()),
            p50: middle(runs.iter().map(|r| r.p50).collect()),
            p90: middle(runs.iter().map(|r| r.p90).collect()),
            p99: middle(runs.iter().map(|r| r.p99).collect()),
            max: middle(runs.iter().map(|r| r.max).collect()),
        }
    }

    fn from_load(mut load: Load) -> Self {
        load.latencies.sort_unstable();
        let latencies = &load.latencies;
        // Nearest-rank percentile.
        let percentile = |p: f64| {
            let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1]
        };
        Self {
            requests: latencies.len() as u64,
            errors: load.errors as u64,
            first_error: load.first_error,
            throughput: latencies.len() as f64 / load.elapsed.as_secs_f64(),
            p50: percentile(50.0),
            p90: percentile(90.0),
            p99: percentile(99.0),
            max: *latencies.last().expect("at least one request"),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {:.0} req/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
            self.requests,
            self.throughput,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            self.errors
        )?;
        if let Some(error) = &self.first_error {
            write!(f, " (first: {error})")?;
        }
        Ok(())
    }
}

/// The todo service's figures relative to another's (the baseline's, the peer's).
struct Ratio<'a>(&'a Stats, &'a Stats);

impl std::fmt::Display for Ratio<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (todo, baseline) = (self.0, self.1);
        write!(
            f,
            "throughput x{:.2}, p50 x{:.2}, p99 x{:.2}",
            todo.throughput / baseline.throughput,
            ms(todo.p50) / ms(baseline.p50),
            ms(todo.p99) / ms(baseline.p99),
        )
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<(&'static str, &'static str, Stats)>,
    notes: Vec<String>,
}

impl Report {
    fn print(&self) {
        println!(
            "\n{:<9} | {:<10} | {:>7} | {:>7} | {:>7} | {:>7} | {:>7} | errors",
            "backend", "service", "req/s", "p50 ms", "p90", "p99", "max"
        );
        println!("{}", "-".repeat(82));
        for (backend, service, s) in &self.rows {
            println!(
                "{backend:<9} | {service:<10} | {:>7.0} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {}",
                s.throughput,
                ms(s.p50),
                ms(s.p90),
                ms(s.p99),
                ms(s.max),
                s.errors
            );
        }
        println!();
        for note in &self.notes {
            println!("{note}");
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
