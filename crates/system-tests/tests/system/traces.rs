//! One trace from the HTTP request to both consumers, as an operator sees it in a real trace
//! backend (Jaeger, `service_kit::testing::jaeger`): todo's server span and its transaction,
//! daprd's delivery spans, and each consumer's server and consumer spans, every one in the
//! caller's trace and each a child of the span that caused it; and the group commit and the
//! relay's bulk publish (with daprd's span under it), traces of their own linked to the
//! transaction.
//!
//! The services run as processes of their own here (the binaries `cargo test --workspace`
//! builds), as in a deployment: each has its own `service.name`, which services sharing one
//! process (the other system tests) could not have.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use service_kit::testing::daprd::{self, Daprd};
use service_kit::testing::jaeger::{Jaeger, Span};
use service_kit::testing::{DEADLINE, TempDir, eventually};

use crate::broker::{Broker, BrokerKind};
use crate::harness::{free_port, resources};

/// A service binary with its daprd, both exporting spans to Jaeger.
struct TracedService {
    url: String,
    _app: tokio::process::Child,
    _sidecar: Daprd,
}

impl TracedService {
    async fn start(
        app_id: &str,
        data: &TempDir,
        resources: &TempDir,
        config: &std::path::Path,
        jaeger: &Jaeger,
    ) -> Self {
        let (app_port, sidecar_port) = (free_port(), free_port());
        let log = std::fs::File::create(data.path.join(format!("{app_id}.log"))).unwrap();
        let app = tokio::process::Command::new(binary(app_id))
            .env_clear()
            .env("APP_HOST", "127.0.0.1")
            .env("APP_PORT", app_port.to_string())
            .env("METRICS_PORT", "0")
            .env("APP_ID", app_id)
            .env("DATABASE_URL", format!("sqlite://{}", data.path.join(format!("{app_id}.db")).display()))
            .env("DAPR_HTTP_ENDPOINT", format!("http://127.0.0.1:{sidecar_port}"))
            .env("RELAY_POLL_INTERVAL_MS", "100")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &jaeger.otlp_endpoint)
            // Export every 100 ms rather than every 5 s, so the test waits less.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            // The debug lines of the request and the publish spans are the ones the test reads.
            .env("RUST_LOG", "info,todo=debug,service_kit=debug")
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary(app_id).display()));
        let url = format!("http://127.0.0.1:{app_port}");
        let http = reqwest::Client::new();
        eventually(&format!("{app_id} to answer"), DEADLINE, || async {
            http.get(format!("{url}/healthz")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        let sidecar = Daprd::start(daprd::Options {
            config: Some(config.to_owned()),
            http_port: Some(sidecar_port),
            ..daprd::Options::new(app_id, Some(app_port), &resources.path)
        })
        .await;
        Self { url, _app: app, _sidecar: sidecar }
    }
}

/// The service's binary beside this test's (target/<profile>/<name>): `cargo test --workspace`
/// builds every package's binaries before it runs a test.
fn binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's path");
    let profile_dir = test.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join(name);
    assert!(binary.exists(), "{} is missing: build it first (cargo build --bins; make test does)", binary.display());
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_request_through_daprd_to_both_consumers() {
    let jaeger = Jaeger::start().await;
    let broker = Broker::start(BrokerKind::from_env()).await;
    let resources = resources(&broker);
    let data = TempDir::new();
    let config = jaeger.dapr_configuration(&data.path);
    let notification = TracedService::start("notification", &data, &resources, &config, &jaeger).await;
    let analytics = TracedService::start("analytics", &data, &resources, &config, &jaeger).await;
    let todo = TracedService::start("todo", &data, &resources, &config, &jaeger).await;

    // The caller's own span, as a client instrumented with OpenTelemetry would send it.
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let caller_span = "00f067aa0ba902b7";
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/todos", todo.url))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"userId": "tracy", "title": "Follow me"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(created["id"].is_string(), "{created}");
    // Both consumers applied it (analytics counts it) before the trace is read.
    eventually("analytics to count the todo", DEADLINE, || async {
        let figures: Value =
            http.get(format!("{}/analytics/users/tracy", analytics.url)).send().await.ok()?.json().await.ok()?;
        (figures["created"] == 1).then_some(())
    })
    .await;
    let _ = &notification;

    let consumer_span = |service: &'static str| move |s: &Span| s.service == service && s.kind == "consumer";
    // Complete once both consumers' spans are in and every span's parent is too (daprd exports
    // its spans in batches of its own): one tree, rooted at the caller's span.
    let spans = jaeger
        .wait_for_trace(&trace_id, Duration::from_secs(60), |spans| {
            let connected = spans.iter().all(|span| match span.parent.as_deref() {
                None => false,
                Some(parent) => parent == caller_span || spans.iter().any(|s| s.span_id == parent),
            });
            connected && spans.iter().any(consumer_span("notification")) && spans.iter().any(consumer_span("analytics"))
        })
        .await;
    // daprd reports under its app id too; our services' SDK says it is Rust, daprd's says nothing.
    let by = |service: &str, from: &str, name: &str| {
        let found: Vec<&Span> = spans
            .iter()
            .filter(|s| s.service == service && s.name == name && (s.language == "rust") == (from == "app"))
            .collect();
        assert_eq!(found.len(), 1, "one span of {service}'s {from}, {name:?}, in {spans:#?}");
        found[0]
    };
    let parent_of = |span: &Span| span.parent.clone().unwrap_or_default();

    // todo: the request continues the caller's span; the transaction is inside it.
    let request = by("todo", "app", "POST /todos");
    assert_eq!((request.kind.as_str(), parent_of(request).as_str()), ("server", caller_span), "the caller's trace");
    let transaction = by("todo", "app", "create todo");
    assert_eq!(parent_of(transaction), request.span_id);

    // Each consumer: its daprd's delivery continues the event's own context (the transaction
    // that wrote it: the CloudEvent's traceparent), the consumer's server span continues the
    // delivery's, and the processing is a consumer span inside it.
    for service in ["notification", "analytics"] {
        let delivery = by(service, "daprd", "pubsub/todos.task.created");
        assert_eq!(parent_of(delivery), transaction.span_id, "{service}'s delivery");
        let server = by(service, "app", "POST /events/{topic}");
        assert_eq!((server.kind.as_str(), parent_of(server)), ("server", delivery.span_id.clone()), "{service}");
        let process = by(service, "app", "process todos.task.created");
        assert_eq!((process.kind.as_str(), parent_of(process)), ("consumer", server.span_id.clone()), "{service}");
    }
    assert_eq!(spans.len(), 8, "no other spans: {spans:#?}");

    // The group commit that wrote the todo and the relay's bulk publish serve many requests, so
    // each is a trace of its own, linked to the `create todo` span of every request it carries.
    let linked = |name: &'static str| {
        let transaction = transaction.span_id.clone();
        move |trace: &[Span]| trace.iter().any(|s| s.name == name && s.links.contains(&transaction))
    };
    let commit_trace =
        jaeger.wait_for_search("todo", "commit creates", Duration::from_secs(60), linked("commit creates")).await;
    let commit = commit_trace.iter().find(|s| s.name == "commit creates").unwrap();
    assert_eq!(commit.parent, None, "a root: {commit_trace:#?}");
    let publish_trace = jaeger
        .wait_for_search("todo", "publish todos.task.created", Duration::from_secs(60), |trace| {
            linked("publish todos.task.created")(trace) && trace.iter().any(|s| s.language != "rust")
        })
        .await;
    let publish = publish_trace.iter().find(|s| s.name == "publish todos.task.created").unwrap();
    assert_eq!((publish.kind.as_str(), &publish.parent), ("producer", &None), "{publish_trace:#?}");
    // daprd: its span of the request continues the header, and its producer span for our one
    // entry is inside that.
    let daprd = |kind: &str| {
        let name = "/v1.0-alpha1/publish/bulk/pubsub/todos.task.created";
        let found: Vec<&Span> = publish_trace
            .iter()
            .filter(|s| s.service == "todo" && s.language != "rust" && s.name == name && s.kind == kind)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} span of daprd's bulk publish: {publish_trace:#?}");
        found[0]
    };
    let (daprd_request, daprd_entry) = (daprd("client"), daprd("producer"));
    assert_eq!(parent_of(daprd_request), publish.span_id, "daprd continues the publish's traceparent");
    assert_eq!(parent_of(daprd_entry), daprd_request.span_id);
    assert_eq!(publish_trace.len(), 3, "no other spans: {publish_trace:#?}");

    // The services' JSON log lines inside those spans name their trace and their own span.
    for span in [request, publish] {
        let log = std::fs::read_to_string(data.path.join("todo.log")).unwrap();
        let in_span = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["trace_id"] == span.trace_id.as_str() && line["span_id"] == span.span_id.as_str());
        assert!(in_span.is_some(), "no log line of todo's {:?} span names it:\n{log}", span.name);
    }
}
