//! `make bench-sidecar`: what the dev sidecar costs, measured on the release binary against a
//! real Redis (`BENCH_REDIS_HOST`, default 127.0.0.1:6379) with a trivial subscriber app:
//!
//! - publish latency (p50/p99/max) of sequential `POST /v1.0/publish`, and their throughput;
//! - throughput of concurrent publishes;
//! - publish → delivery latency seen by the app;
//! - the sidecar's resident memory at idle and its peak under that load.
//!
//! It prints figures; it asserts nothing about them (targets: RSS ≤ 30 MB, publish p50 < 1 ms).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};

const WARM_UP: usize = 500;
const SEQUENTIAL: usize = 5_000;
const CONCURRENT: usize = 20_000;
const CONCURRENCY: usize = 32;

type Sent = Arc<Mutex<HashMap<u64, Instant>>>;

#[derive(Clone)]
struct Subscriber {
    topic: String,
    sent: Sent,
    delivered: Arc<Mutex<Vec<(u64, Duration)>>>,
}

async fn subscribe(State(app): State<Subscriber>) -> Json<Value> {
    Json(json!([{"pubsubname": "pubsub", "topic": app.topic, "route": "/in"}]))
}

async fn receive(State(app): State<Subscriber>, Json(event): Json<Value>) -> Json<Value> {
    let arrived = Instant::now();
    if let Some(n) = event["data"]["n"].as_u64() {
        if let Some(sent) = app.sent.lock().unwrap().remove(&n) {
            app.delivered.lock().unwrap().push((n, arrived - sent));
        }
    }
    Json(json!({"status": "SUCCESS"}))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<34} n={:<6} p50={:>7.3} ms  p99={:>7.3} ms  max={:>7.3} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main]
async fn main() {
    let redis_host = std::env::var("BENCH_REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let topic = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let app_id = format!("bench-app-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);

    let app = Subscriber { topic: topic.clone(), sent: Arc::default(), delivered: Arc::default() };
    let router = axum::Router::new()
        .route("/dapr/subscribe", get(subscribe))
        .route("/in", post(receive))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let resources = std::env::temp_dir().join(format!("devsidecar-bench-{app_id}"));
    std::fs::create_dir_all(&resources).unwrap();
    std::fs::write(
        resources.join("pubsub.yaml"),
        format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: {redis_host}\n"),
    )
    .unwrap();
    let dapr_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut sidecar = tokio::process::Command::new(env!("CARGO_BIN_EXE_devsidecar"))
        .args(["--app-id", &app_id, "--app-port", &app_port.to_string(), "--dapr-http-port", &dapr_port.to_string()])
        .arg("--resources-path")
        .arg(&resources)
        .arg("--log-level")
        .arg("warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the release devsidecar binary starts");
    let pid = sidecar.id().unwrap();
    let base = format!("http://127.0.0.1:{dapr_port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = http.get(format!("{base}/v1.0/healthz")).send().await;
        if ready.is_ok_and(|r| r.status() == 204) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the sidecar did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (idle_rss, _) = memory_mib(pid);
    let url = format!("{base}/v1.0/publish/pubsub/{topic}");
    let publish = |n: u64| {
        app.sent.lock().unwrap().insert(n, Instant::now());
        http.post(&url)
            .header("content-type", "application/json")
            .body(json!({"n": n, "title": "bench"}).to_string())
            .send()
    };

    println!("dev sidecar footprint (release build, Redis at {redis_host}, one trivial subscriber)");
    for n in 0..WARM_UP as u64 {
        assert_eq!(publish(n).await.unwrap().status(), 204);
    }
    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    let sequential_started = Instant::now();
    for n in WARM_UP as u64..(WARM_UP + SEQUENTIAL) as u64 {
        let sent = Instant::now();
        assert_eq!(publish(n).await.unwrap().status(), 204);
        latencies.push(sent.elapsed());
    }
    let sequential_rate = SEQUENTIAL as f64 / sequential_started.elapsed().as_secs_f64();
    summary("publish (sequential)", latencies);
    println!("{:<34} {sequential_rate:>9.0} msg/s", "publish throughput (1 client)");

    let first = (WARM_UP + SEQUENTIAL) as u64;
    let concurrent_started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(first..first + CONCURRENT as u64)
        .map(|n| async move { publish(n).await.map(|r| r.status().as_u16()).unwrap_or(0) })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let concurrent_rate = CONCURRENT as f64 / concurrent_started.elapsed().as_secs_f64();
    assert!(statuses.iter().all(|s| *s == 204), "every publish succeeded");
    println!("{:<34} {concurrent_rate:>9.0} msg/s", format!("publish throughput ({CONCURRENCY} clients)"));
    let (_, peak_after_publish) = memory_mib(pid);

    let total = WARM_UP + SEQUENTIAL + CONCURRENT;
    let drain_started = Instant::now();
    while app.delivered.lock().unwrap().len() < total {
        assert!(drain_started.elapsed() < Duration::from_secs(120), "not every message was delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = app.delivered.lock().unwrap().clone();
    let latencies_of =
        |range: std::ops::Range<u64>| delivered.iter().filter(|(n, _)| range.contains(n)).map(|(_, d)| *d).collect();
    summary("publish → delivery (sequential)", latencies_of(WARM_UP as u64..first));
    summary("publish → delivery (under load)", latencies_of(first..total as u64));
    let (rss, peak) = memory_mib(pid);
    println!(
        "{:<34} idle {idle_rss:.1} MiB, after load {rss:.1} MiB, peak {:.1} MiB",
        "sidecar RSS",
        peak.max(peak_after_publish)
    );

    let _ = sidecar.start_kill();
    let _ = sidecar.wait().await;
    let mut redis =
        redis::Client::open(format!("redis://{redis_host}")).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::AsyncCommands::del(&mut redis, &topic).await.unwrap();
    let _ = std::fs::remove_dir_all(resources);
}
