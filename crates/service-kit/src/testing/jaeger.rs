//! A real trace backend for the tests: Jaeger v2 (an OpenTelemetry Collector distribution,
//! built from the Go module proxy by scripts/ensure-jaeger.sh) with in-memory storage, on
//! ports of its own (dapr/jaeger.yaml), killed when dropped. Spans go in over OTLP/HTTP and
//! come out of Jaeger's query API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

use super::daprd::{free_port, repository};
use super::{DEADLINE, TempDir, eventually_or};

/// How often a wait asks Jaeger again: its query API is slower than a database.
const POLL: Duration = Duration::from_millis(250);

/// The jaeger binary: `$JAEGER` (what `make test` sets), else what scripts/ensure-jaeger.sh
/// builds or finds.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| super::tool("JAEGER", "scripts/ensure-jaeger.sh", &[]))
}

/// A running Jaeger.
pub struct Jaeger {
    /// `http://127.0.0.1:<port>`: what `OTEL_EXPORTER_OTLP_ENDPOINT` names.
    pub otlp_endpoint: String,
    /// `127.0.0.1:<port>`: what a Dapr Configuration's `tracing.otel.endpointAddress` names.
    pub otlp_address: String,
    query_url: String,
    http: reqwest::Client,
    child: tokio::process::Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Jaeger {
    /// Starts Jaeger and waits until its OTLP receiver takes spans (it starts after the query
    /// API, so both answer then). The ports are found free and released for Jaeger to bind, so
    /// a test alongside may take one first: a Jaeger that exits at start is started again on
    /// other ports, as `super::daprd::Daprd::start` does.
    pub async fn start() -> Self {
        let mut logs = Vec::new();
        for _attempt in 0..3 {
            let mut jaeger = Self::spawn();
            if jaeger.wait_until_ready().await {
                return jaeger;
            }
            logs.push(std::fs::read_to_string(&jaeger.log).unwrap_or_default());
        }
        panic!("jaeger did not start, three times:\n{}", logs.join("\n---\n"));
    }

    fn spawn() -> Self {
        let dir = TempDir::new();
        let log = dir.path.join("jaeger.log");
        let (otlp_http, otlp_grpc, query) = (free_port(), free_port(), free_port());
        let file = std::fs::File::create(&log).expect("jaeger's log file");
        let child = tokio::process::Command::new(binary())
            .arg("--config")
            .arg(repository().join("dapr/jaeger.yaml"))
            .env("JAEGER_OTLP_HTTP_PORT", otlp_http.to_string())
            .env("JAEGER_OTLP_GRPC_PORT", otlp_grpc.to_string())
            .env("JAEGER_QUERY_PORT", query.to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary().display()));
        Self {
            otlp_endpoint: format!("http://127.0.0.1:{otlp_http}"),
            otlp_address: format!("127.0.0.1:{otlp_http}"),
            query_url: format!("http://127.0.0.1:{query}"),
            http: reqwest::Client::new(),
            child,
            log,
            _dir: dir,
        }
    }

    async fn wait_until_ready(&mut self) -> bool {
        let started = tokio::time::Instant::now();
        while started.elapsed() < DEADLINE {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let empty = self
                .http
                .post(format!("{}/v1/traces", self.otlp_endpoint))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await;
            if empty.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// A Dapr Configuration (written to `dir`) that samples every trace and exports daprd's
    /// spans here, as dapr/config.yaml does in a local run with tracing.
    pub fn dapr_configuration(&self, dir: &Path) -> PathBuf {
        let path = dir.join("tracing-config.yaml");
        let yaml = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: tracing\nspec:\n  tracing:\n    \
             samplingRate: \"1\"\n    otel:\n      endpointAddress: \"{}\"\n      isSecure: false\n      protocol: http\n",
            self.otlp_address
        );
        std::fs::write(&path, yaml).expect("write the Configuration");
        path
    }

    /// The spans of `trace_id` Jaeger holds so far (none when it knows no such trace).
    pub async fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.traces(&format!("{}/api/traces/{trace_id}", self.query_url)).await.into_iter().flatten().collect()
    }

    /// The traces holding a span of `service` named `operation`, each as its spans; empty
    /// while none has arrived.
    pub async fn search(&self, service: &str, operation: &str) -> Vec<Vec<Span>> {
        let mut url = reqwest::Url::parse(&format!("{}/api/traces", self.query_url)).expect("a URL");
        url.query_pairs_mut()
            .append_pair("service", service)
            .append_pair("operation", operation)
            .append_pair("lookback", "1h")
            .append_pair("limit", "100");
        self.traces(url.as_str()).await
    }

    async fn traces(&self, url: &str) -> Vec<Vec<Span>> {
        let response = self.http.get(url).send().await;
        let Ok(response) = response.and_then(|r| r.error_for_status()) else { return Vec::new() };
        let Ok(found) = response.json::<Found>().await else { return Vec::new() };
        found
            .data
            .into_iter()
            .map(|trace| {
                let processes = trace.processes;
                trace
                    .spans
                    .into_iter()
                    .map(|span| {
                        let process = processes.get(&span.process_id);
                        let service = process.map(|p| p.service_name.clone()).unwrap_or_default();
                        let language = process
                            .and_then(|p| p.tags.iter().find(|t| t.key == "telemetry.sdk.language"))
                            .and_then(|t| t.value.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let tag = |key: &str| {
                            span.tags.iter().find(|t| t.key == key).and_then(|t| t.value.as_str().map(str::to_owned))
                        };
                        Span {
                            service,
                            language,
                            kind: tag("span.kind").unwrap_or_else(|| "internal".to_owned()),
                            parent: span
                                .references
                                .iter()
                                .find(|r| r.ref_type == "CHILD_OF")
                                .map(|r| r.span_id.clone()),
                            links: span
                                .references
                                .iter()
                                .filter(|r| r.ref_type == "FOLLOWS_FROM")
                                .map(|r| r.span_id.clone())
                                .collect(),
                            name: span.operation_name,
                            trace_id: span.trace_id,
                            span_id: span.span_id,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Polls [`Jaeger::search`] until one of the traces satisfies `wanted`; that trace.
    pub async fn wait_for_search(
        &self,
        service: &str,
        operation: &str,
        deadline: Duration,
        wanted: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let what = format!("a trace with {service}'s {operation:?} as wanted");
        eventually_or(&what, deadline, POLL, || async {
            let traces = self.search(service, operation).await;
            traces.iter().find(|spans| wanted(spans)).cloned().ok_or_else(|| format!("{traces:#?}"))
        })
        .await
    }

    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        deadline: Duration,
        complete: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        eventually_or(&format!("trace {trace_id} to be complete"), deadline, POLL, || async {
            let spans = self.trace(trace_id).await;
            if complete(&spans) { Ok(spans) } else { Err(format!("{spans:#?}")) }
        })
        .await
    }
}

/// One span as the test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: String,
    pub service: String,
    /// The SDK's language (`telemetry.sdk.language`): `rust` for the services; daprd, which
    /// reports under its app id as well, sends none.
    pub language: String,
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: String,
    pub span_id: String,
    /// The parent's span id; `None` for the trace's root.
    pub parent: Option<String>,
    /// Span ids this span links to.
    pub links: Vec<String>,
}

#[derive(Deserialize)]
struct Found {
    #[serde(default)]
    data: Vec<JaegerTrace>,
}

#[derive(Deserialize)]
struct JaegerTrace {
    spans: Vec<JaegerSpan>,
    processes: HashMap<String, Process>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JaegerSpan {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    operation_name: String,
    #[serde(default)]
    references: Vec<Reference>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(rename = "processID")]
    process_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reference {
    ref_type: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Deserialize)]
struct Tag {
    key: String,
    value: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    service_name: String,
    #[serde(default)]
    tags: Vec<Tag>,
}
