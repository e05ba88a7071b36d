//! `make bench-e2e`: the whole system under load, as users run it — the three services' release
//! binaries, a daprd beside each, Redis — on this machine's cores.
//!
//! For each offered rate (`BENCH_RATES`, creates per second, open loop), once alone and once
//! while clients read the analytics and the notification APIs at `BENCH_READ_RATE` requests per
//! second each: the rate achieved, each create's HTTP latency, each created todo's latency to
//! being applied by analytics and by notification (see `applied.rs` for the method), the read
//! latency, CPU and peak RSS per process, and the size of analytics' SQLite WAL. Then a search
//! for the rate where the system stops holding (`BENCH_SATURATION=0` skips it), and the relay
//! against a backlog and a sidecar outage (`relay_drain.rs`; `BENCH_RELAY=0` skips it).
//!
//! Figures go to stdout as Markdown tables, and to `target/bench/`: `e2e.json`, `e2e.md` and
//! the chart `e2e-latency.svg`.

mod applied;
mod chart;
mod load;
mod relay_drain;
mod system;
mod usage;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use service_kit::testing::daprd::repository;

use applied::{Consumer, Percentiles};
use load::{Progress, USERS};
use system::{Kind, System};
use usage::{Usage, Watch};

/// How long the consumers may take, after the load of a step, to apply its last creation.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);
/// A step holds when at least this share of the offered creates was achieved…
const HOLDS_ACHIEVED: f64 = 0.97;
/// …and analytics applied 99 % of them within this many milliseconds.
const HOLDS_P99_MS: f64 = 1_000.0;

struct Settings {
    rates: Vec<f64>,
    seconds: u64,
    read_rate: f64,
    saturation: bool,
    relay: bool,
    relay_runs: usize,
    out: PathBuf,
}

impl Settings {
    fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
        };
        let number = |name: &str, default: &str| -> f64 {
            var(name, default).parse().unwrap_or_else(|_| panic!("{name} must be a number"))
        };
        Self {
            rates: var("BENCH_RATES", "100,500,1000,2000")
                .split(',')
                .map(|r| r.trim().parse().expect("BENCH_RATES: creates per second, comma-separated"))
                .collect(),
            seconds: number("BENCH_SECONDS", "10") as u64,
            read_rate: number("BENCH_READ_RATE", "300"),
            saturation: var("BENCH_SATURATION", "1") == "1",
            relay: var("BENCH_RELAY", "1") == "1",
            relay_runs: number("BENCH_RUNS", "3") as usize,
            out: repository().join("target/bench"),
        }
    }
}

/// One step of the run: a rate, offered for `seconds`.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub offered: f64,
    /// Reads per second on each of the two read APIs (0: none).
    pub read_rate: f64,
    pub achieved: f64,
    pub created: usize,
    pub failed: usize,
    /// The failed creates by HTTP status (0: no answer).
    pub failed_by_status: BTreeMap<u16, usize>,
    pub skipped: u64,
    /// Each create's HTTP latency, from when it was due.
    pub http: Percentiles,
    pub analytics: Percentiles,
    pub notification: Percentiles,
    /// Creations a consumer had not applied `CATCH_UP_DEADLINE` after the load.
    pub unapplied: usize,
    pub reads: Percentiles,
    pub reads_failed: usize,
    pub usage: BTreeMap<String, Usage>,
    pub analytics_wal_mib: f64,
    pub holds: bool,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(run(Settings::from_env()));
}

async fn run(settings: Settings) {
    eprintln!("bench-e2e: starting redis-server, todo, notification and analytics, each with its daprd");
    let mut system = System::start().await;
    let consumers = [
        Consumer::open(Kind::Analytics, &system.analytics.app.database).await,
        Consumer::open(Kind::Notification, &system.notification.app.database).await,
    ];
    // Enough idle connections that an open-loop burst does not pay for new ones.
    let http = reqwest::Client::builder().pool_max_idle_per_host(4_096).build().unwrap();
    let mut expected = 0u64;
    eprintln!("bench-e2e: warming up (2 s at 100/s)");
    step(&system, &consumers, &http, 100.0, 0.0, 2, &mut expected).await;

    let mut steps = Vec::new();
    for &rate in &settings.rates {
        for read_rate in [0.0, settings.read_rate] {
            let step = step(&system, &consumers, &http, rate, read_rate, settings.seconds, &mut expected).await;
            println!("{}", row(&step));
            steps.push(step);
        }
    }

    let mut saturation = None;
    if settings.saturation {
        saturation = Some(search(&system, &consumers, &http, &settings, &steps, &mut expected).await);
    }

    let relay =
        if settings.relay { relay_drain::run(&mut system, &http, settings.relay_runs).await } else { Vec::new() };

    let report = report(&steps, saturation.as_ref(), &relay);
    println!("\n{report}");
    std::fs::create_dir_all(&settings.out).expect("target/bench");
    std::fs::write(settings.out.join("e2e.md"), &report).expect("write e2e.md");
    let json = serde_json::json!({"steps": steps, "saturation": saturation, "relay": relay});
    std::fs::write(settings.out.join("e2e.json"), serde_json::to_string_pretty(&json).unwrap())
        .expect("write e2e.json");
    let chart = settings.out.join("e2e-latency.svg");
    let charted: Vec<Step> = steps.iter().chain(saturation.iter().flat_map(|s| &s.steps)).cloned().collect();
    chart::draw(&charted, &chart).expect("draw the chart");
    eprintln!("bench-e2e: figures in {}, chart in {}", settings.out.join("e2e.md").display(), chart.display());
}

/// Offers `offered` creates per second for `seconds` (with the read load when `read_rate` > 0),
/// then waits for the consumers to apply them and measures.
async fn step(
    system: &System,
    consumers: &[Consumer; 2],
    http: &reqwest::Client,
    offered: f64,
    read_rate: f64,
    seconds: u64,
    expected: &mut u64,
) -> Step {
    let duration = Duration::from_secs(seconds);
    let mut processes = system.processes();
    processes.push(("load".to_owned(), std::process::id()));
    let watch = Watch::start(processes);
    let progress = Arc::new(Progress::default());
    let label = if read_rate > 0.0 { format!("{offered}/s + reads") } else { format!("{offered}/s") };
    let printer = tokio::spawn(print_progress(label.clone(), seconds, progress.clone()));

    let read_load = (read_rate > 0.0).then(|| {
        let reads = |base: String, path: fn(u64) -> String| {
            let client = http.clone();
            tokio::spawn(load::open_loop(read_rate, duration, Arc::default(), move |i| {
                load::get(&client, format!("{base}{}", path(i)))
            }))
        };
        [
            reads(system.analytics.app.url.clone(), |i| format!("/analytics/users/user-{}", i as usize % USERS)),
            reads(system.notification.app.url.clone(), |i| {
                format!("/notifications?userId=user-{}&limit=20", i as usize % USERS)
            }),
        ]
    });
    let (client, todo_url) = (http.clone(), system.todo.app.url.clone());
    let creates = load::open_loop(offered, duration, progress, move |i| load::create(&client, &todo_url, i)).await;
    let mut reads = Vec::new();
    for task in read_load.into_iter().flatten() {
        reads.extend(task.await.expect("the read load").outcomes);
    }
    let usage = watch.finish().await;
    printer.abort();

    let created = creates.succeeded();
    *expected += created as u64;
    let started = Instant::now();
    let mut unapplied = 0;
    for consumer in consumers {
        loop {
            let applied = consumer.count().await;
            if applied >= *expected {
                break;
            }
            if started.elapsed() > CATCH_UP_DEADLINE {
                unapplied += (*expected - applied) as usize;
                break;
            }
            eprint!("\r[{label}] waiting for {}: {} of {} applied     ", consumer.kind.name(), applied, expected);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprint!("\r{:80}\r", "");

    let latencies = |applied: std::collections::HashMap<uuid::Uuid, SystemTime>| {
        Percentiles::of(
            creates
                .outcomes
                .iter()
                .filter_map(|o| applied.get(&o.todo_id?).map(|at| at.duration_since(o.due).unwrap_or_default()))
                .collect(),
        )
    };
    let analytics = latencies(consumers[0].applied().await);
    let notification = latencies(consumers[1].applied().await);
    let http_latency =
        Percentiles::of(creates.outcomes.iter().filter(|o| o.status == 201).map(|o| o.latency).collect());
    let reads_failed = reads.iter().filter(|o| o.status != 200).count();
    let achieved = created as f64 / creates.elapsed.as_secs_f64();
    let wal = std::fs::metadata(system.analytics.app.database.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
    let failed = creates.outcomes.len() - created;
    let mut failed_by_status = BTreeMap::new();
    for outcome in creates.outcomes.iter().filter(|o| o.status != 201) {
        *failed_by_status.entry(outcome.status).or_default() += 1;
    }
    Step {
        offered,
        read_rate,
        achieved,
        created,
        failed,
        failed_by_status,
        skipped: creates.skipped,
        http: http_latency,
        analytics,
        notification,
        unapplied,
        reads: Percentiles::of(reads.iter().map(|o| o.latency).collect()),
        reads_failed,
        usage,
        analytics_wal_mib: wal as f64 / (1024.0 * 1024.0),
        holds: achieved >= HOLDS_ACHIEVED * offered
            && failed == 0
            && creates.skipped == 0
            && unapplied == 0
            && analytics.p99 <= HOLDS_P99_MS
            && notification.p99 <= HOLDS_P99_MS,
    }
}

async fn print_progress(label: String, seconds: u64, progress: Arc<Progress>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprint!(
            "\r[{label}] {:>2}/{seconds} s: {} created, {} failed     ",
            started.elapsed().as_secs(),
            progress.answered.load(Ordering::Relaxed),
            progress.failed.load(Ordering::Relaxed),
        );
    }
}

#[derive(Debug, Serialize)]
struct Saturation {
    /// The highest offered rate that held.
    holds_at: f64,
    /// The lowest that did not.
    fails_at: Option<f64>,
    steps: Vec<Step>,
}

/// Raises the rate by a quarter from the highest listed one that held until a step fails, then
/// halves the gap twice. Without the read load.
async fn search(
    system: &System,
    consumers: &[Consumer; 2],
    http: &reqwest::Client,
    settings: &Settings,
    steps: &[Step],
    expected: &mut u64,
) -> Saturation {
    let held = steps.iter().filter(|s| s.read_rate == 0.0 && s.holds).map(|s| s.offered).fold(0.0, f64::max);
    let mut good = if held > 0.0 { held } else { 50.0 };
    let mut bad =
        steps.iter().filter(|s| s.read_rate == 0.0 && !s.holds).map(|s| s.offered).fold(f64::INFINITY, f64::min);
    let (mut tried, mut halvings) = (Vec::new(), 0);
    loop {
        let rate = if bad.is_infinite() {
            if tried.len() >= 8 {
                break;
            }
            (good * 1.25).round()
        } else {
            // Two halvings of the gap at most, once a failing rate is known.
            if bad - good < 50.0 || halvings >= 2 {
                break;
            }
            halvings += 1;
            ((good + bad) / 2.0).round()
        };
        eprintln!("bench-e2e: saturation search, {rate}/s");
        let step = step(system, consumers, http, rate, 0.0, settings.seconds, expected).await;
        println!("{}", row(&step));
        if step.holds {
            good = rate
        } else {
            bad = rate
        }
        tried.push(step);
    }
    Saturation { holds_at: good, fails_at: bad.is_finite().then_some(bad), steps: tried }
}

fn row(step: &Step) -> String {
    let p = |p: &Percentiles| format!("{:.1} / {:.1} / {:.1}", p.p50, p.p95, p.p99);
    let reads = if step.read_rate > 0.0 {
        format!("{:.0} × 2 (p99 {:.1} ms, {} failed)", step.read_rate, step.reads.p99, step.reads_failed)
    } else {
        "–".to_owned()
    };
    format!(
        "| {:.0} | {reads} | {:.0} | {:.1} / {:.1} | {} | {} | {:.1} | {}{} |",
        step.offered,
        step.achieved,
        step.http.p50,
        step.http.p99,
        p(&step.analytics),
        p(&step.notification),
        step.analytics_wal_mib,
        if step.holds { "yes" } else { "no" },
        if step.failed + step.skipped as usize + step.unapplied > 0 {
            let statuses: Vec<String> =
                step.failed_by_status.iter().map(|(status, n)| format!("{n}× {status}")).collect();
            format!(
                " ({} failed: {}; {} not sent, {} not applied)",
                step.failed,
                statuses.join(", "),
                step.skipped,
                step.unapplied
            )
        } else {
            String::new()
        },
    )
}

const HEADER: &str = "| offered creates/s | reads/s | achieved/s | HTTP p50 / p99 ms | create → analytics p50 / p95 / p99 ms | create → notification p50 / p95 / p99 ms | analytics WAL MiB | holds |\n|---|---|---|---|---|---|---|---|";

fn report(steps: &[Step], saturation: Option<&Saturation>, relay: &[relay_drain::RelayRun]) -> String {
    let mut out = String::from("## Latency and rate\n\n");
    writeln!(out, "{HEADER}").unwrap();
    for step in steps {
        writeln!(out, "{}", row(step)).unwrap();
    }
    out.push_str("\n## CPU (cores) and peak RSS (MiB) per process\n\n");
    let names: Vec<&String> = steps.first().map(|s| s.usage.keys().collect()).unwrap_or_default();
    writeln!(out, "| offered | reads | {} |", names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" | "))
        .unwrap();
    writeln!(out, "|---|---|{}", "---|".repeat(names.len())).unwrap();
    for step in steps.iter().chain(saturation.iter().flat_map(|s| &s.steps)) {
        let cells: Vec<String> =
            step.usage.values().map(|u| format!("{:.2} / {:.0}", u.cores, u.peak_rss_mib)).collect();
        writeln!(out, "| {:.0} | {:.0} | {} |", step.offered, step.read_rate, cells.join(" | ")).unwrap();
    }
    if let Some(saturation) = saturation {
        out.push_str("\n## Saturation search (no reads)\n\n");
        writeln!(out, "{HEADER}").unwrap();
        for step in &saturation.steps {
            writeln!(out, "{}", row(step)).unwrap();
        }
        writeln!(
            out,
            "\nHolds at {:.0} creates/s{}.",
            saturation.holds_at,
            saturation.fails_at.map(|f| format!("; does not at {f:.0}/s")).unwrap_or_default()
        )
        .unwrap();
    }
    if !relay.is_empty() {
        let runs = relay.len();
        writeln!(out, "\n## Relay (median of {runs} interleaved runs; each run's figure in brackets)\n").unwrap();
        writeln!(out, "| what | figure |\n|---|---|").unwrap();
        let figure = |value: fn(&relay_drain::RelayRun) -> f64, unit: &str| {
            let mut values: Vec<f64> = relay.iter().map(value).collect();
            let each = values.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ");
            values.sort_by(f64::total_cmp);
            format!("{:.0}{unit} ({each})", values[values.len() / 2])
        };
        let ratio = |value: fn(&relay_drain::RelayRun) -> f64| {
            let mut values: Vec<f64> = relay.iter().map(value).collect();
            let each = values.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", ");
            values.sort_by(f64::total_cmp);
            format!("×{:.2} ({each})", values[values.len() / 2])
        };
        let rows: [(&str, String); 11] = [
            ("creates/s from 32 connections, sidecar up", figure(|r| r.creates_per_second_sidecar_up, "")),
            ("creates/s, sidecar down", figure(|r| r.creates_per_second_sidecar_down, "")),
            ("down ÷ up", ratio(|r| r.creates_per_second_sidecar_down / r.creates_per_second_sidecar_up)),
            ("failed creates while down", figure(|r| r.failed_creates_sidecar_down as f64, "")),
            ("todo's log while down (5,000 creates)", figure(|r| r.log_lines_sidecar_down as f64, " lines")),
            ("sidecar healthy → first event published", figure(|r| r.first_publish_after_healthy_ms, " ms")),
            (
                "sidecar healthy → 20,000-event backlog (2,000 todos) drained",
                figure(|r| r.drained_after_healthy_ms, " ms"),
            ),
            ("relay drain, events/s", figure(|r| r.drain_events_per_second, "")),
            ("relay drain, fastest 1 s window, events/s", figure(|r| r.drain_peak_events_per_second, "")),
            (
                "trivial bulk client's best, same events, same daprd, events/s",
                figure(|r| r.ceiling().events_per_second, ""),
            ),
            (
                "relay ÷ the trivial client's best, same run",
                ratio(|r| r.drain_events_per_second / r.ceiling().events_per_second),
            ),
        ];
        for (what, value) in rows {
            writeln!(out, "| {what} | {value} |").unwrap();
        }
        writeln!(out, "\nThe trivial client, events/s by request shape (entries × requests at a time), each run:\n")
            .unwrap();
        for run in relay {
            let shapes: Vec<String> = run
                .trivial_client
                .iter()
                .map(|t| format!("{} × {}: {:.0}", t.entries_per_request, t.requests_at_a_time, t.events_per_second))
                .collect();
            writeln!(out, "- {}", shapes.join("; ")).unwrap();
        }
    }
    out
}
