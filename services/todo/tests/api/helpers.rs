//! Test harness: a fresh database per test (SQLite file or PostgreSQL database), a recording
//! stand-in for the Dapr sidecar's publish endpoint, and the todo app spawned in-process on
//! port 0.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use service_kit::db::Database;
use service_kit::startup::StartError;
use todo::config::Settings;
use todo::startup::Application;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use service_kit::db::dialect::Backend;
pub use service_kit::testing::{DEADLINE, TestDb, eventually};

/// One publish request as the stand-in sidecar received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub pubsub: String,
    pub topic: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the stand-in answered.
    pub answered: StatusCode,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a publish body is JSON")
    }

    pub fn event_id(&self) -> String {
        self.json()["id"].as_str().expect("an id").to_owned()
    }

    pub fn todo_id(&self) -> String {
        self.json()["subject"].as_str().expect("a subject").to_owned()
    }

    pub fn version(&self) -> i64 {
        self.json()["data"]["version"].as_i64().expect("a version")
    }
}

/// How the stand-in answers a publish: a status, or `None` to hang past any timeout.
pub type Responder = Arc<dyn Fn(&Recorded, usize) -> Option<StatusCode> + Send + Sync>;

#[derive(Clone)]
struct SidecarState {
    recorded: Arc<Mutex<Vec<Recorded>>>,
    outbound_healthy: Arc<std::sync::atomic::AtomicBool>,
    health_checks: Arc<AtomicUsize>,
    responder: Arc<Mutex<Responder>>,
    calls: Arc<AtomicUsize>,
    /// While true, bulk publishes wait before answering ([`FakeSidecar::hold`]); how many
    /// arrived.
    held: Arc<tokio::sync::watch::Sender<bool>>,
    bulk_arrived: Arc<AtomicUsize>,
}

/// A recording stand-in for daprd's publish and outbound-health endpoints: a test fixture at the
/// unit-of-service level (the end-to-end tests in crates/system-tests use a real daprd).
pub struct FakeSidecar {
    pub addr: SocketAddr,
    state: SidecarState,
    server: Option<JoinHandle<()>>,
}

/// daprd's error body for a broker failure (`ERR_PUBSUB_PUBLISH_MESSAGE`,
/// pkg/messages/errorcodes/errorcodes.go in github.com/dapr/dapr).
pub const DAPR_PUBLISH_ERROR: &str = r#"{"errorCode":"ERR_PUBSUB_PUBLISH_MESSAGE","message":"error when publishing to topic in pubsub pubsub: broker down"}"#;

impl FakeSidecar {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        let state = SidecarState {
            recorded: Arc::default(),
            outbound_healthy: Arc::new(true.into()),
            health_checks: Arc::default(),
            responder: Arc::new(Mutex::new(Arc::new(|_, _| Some(StatusCode::NO_CONTENT)))),
            calls: Arc::default(),
            held: Arc::new(tokio::sync::watch::Sender::new(false)),
            bulk_arrived: Arc::default(),
        };
        let mut sidecar = Self { addr: SocketAddr::from(([127, 0, 0, 1], port)), state, server: None };
        sidecar.serve().await;
        sidecar
    }

    async fn serve(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("bind the stand-in sidecar");
        self.addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/v1.0/healthz/outbound", get(outbound_health))
            .route("/v1.0/publish/{pubsub}/{*topic}", post(publish))
            .route("/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}", post(publish_bulk))
            .with_state(self.state.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Stops answering: connections are refused until [`FakeSidecar::restart`].
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Serves again on the same port, keeping the record.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.serve().await;
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set_outbound_healthy(&self, healthy: bool) {
        self.state.outbound_healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Bulk publishes wait (taken in, unanswered) until [`FakeSidecar::release`]: a publish in
    /// flight for as long as a test needs.
    pub fn hold(&self) {
        self.state.held.send_replace(true);
    }

    pub fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// Bulk publish requests received so far, answered or not.
    pub fn bulk_requests(&self) -> usize {
        self.state.bulk_arrived.load(Ordering::SeqCst)
    }

    /// Decides each answer; the second argument counts publish calls so far (from 0).
    pub fn respond_with(&self, responder: impl Fn(&Recorded, usize) -> Option<StatusCode> + Send + Sync + 'static) {
        *self.state.responder.lock().unwrap() = Arc::new(responder);
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    /// Publishes answered 2xx, in arrival order.
    pub fn accepted(&self) -> Vec<Recorded> {
        self.recorded().into_iter().filter(|r| r.answered.is_success()).collect()
    }

    /// Waits until `count` distinct events were accepted; returns the accepted publishes.
    pub async fn wait_for_accepted(&self, count: usize) -> Vec<Recorded> {
        eventually(&format!("{count} accepted publishes"), DEADLINE, || async {
            let accepted = self.accepted();
            let distinct: std::collections::HashSet<_> = accepted.iter().map(Recorded::event_id).collect();
            (distinct.len() >= count).then_some(accepted)
        })
        .await
    }

    /// Accepted publishes grouped by todo, in arrival order.
    pub fn accepted_by_todo(&self) -> HashMap<String, Vec<Recorded>> {
        let mut by_todo: HashMap<String, Vec<Recorded>> = HashMap::new();
        for record in self.accepted() {
            by_todo.entry(record.todo_id()).or_default().push(record);
        }
        by_todo
    }
}

impl Drop for FakeSidecar {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn outbound_health(State(state): State<SidecarState>) -> Response {
    state.health_checks.fetch_add(1, Ordering::SeqCst);
    if state.outbound_healthy.load(Ordering::SeqCst) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"errorCode":"ERR_OUTBOUND_HEALTH_NOT_READY","message":"dapr outbound is not ready"}"#,
        )
            .into_response()
    }
}

async fn publish(
    State(state): State<SidecarState>,
    Path((pubsub, topic)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = state.calls.fetch_add(1, Ordering::SeqCst);
    let mut record = Recorded { pubsub, topic, query, headers, body, answered: StatusCode::NO_CONTENT };
    let responder = state.responder.lock().unwrap().clone();
    let Some(status) = responder(&record, call) else {
        // Hang: the caller's timeout fires first. Recorded as a 504 so it never counts as accepted.
        record.answered = StatusCode::GATEWAY_TIMEOUT;
        state.recorded.lock().unwrap().push(record);
        std::future::pending::<()>().await;
        unreachable!();
    };
    record.answered = status;
    state.recorded.lock().unwrap().push(record);
    if status.is_success() {
        status.into_response()
    } else {
        (status, [("content-type", "application/json")], DAPR_PUBLISH_ERROR).into_response()
    }
}

/// A bulk publish, answered entry by entry as daprd does: each entry is recorded as the single
/// publish it stands for (its `event` as the body, its partition key as the query) and the
/// responder decides its status. All accepted: 204. A refusal (401, 403, 404), which daprd
/// makes for a request as a whole: that status for every entry. Else 500 naming the failed
/// entries in `failedEntries`, the others published.
async fn publish_bulk(
    State(state): State<SidecarState>,
    Path((pubsub, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.bulk_arrived.fetch_add(1, Ordering::SeqCst);
    let _ = state.held.subscribe().wait_for(|held| !held).await;
    let entries: Vec<Value> = serde_json::from_slice(&body).expect("a bulk publish body is a JSON array");
    let responder = state.responder.lock().unwrap().clone();
    let mut records = Vec::new();
    let mut statuses = Vec::new();
    for entry in &entries {
        assert_eq!(entry["contentType"], "application/cloudevents+json", "{entry}");
        let query = entry["metadata"]["partitionKey"].as_str().map(|key| format!("metadata.partitionKey={key}"));
        let event = serde_json::to_vec(&entry["event"]).unwrap();
        let record = Recorded {
            pubsub: pubsub.clone(),
            topic: topic.clone(),
            query,
            headers: headers.clone(),
            body: event.into(),
            answered: StatusCode::NO_CONTENT,
        };
        let call = state.calls.fetch_add(1, Ordering::SeqCst);
        statuses.push(responder(&record, call));
        records.push(record);
    }
    if statuses.iter().any(Option::is_none) {
        for mut record in records {
            record.answered = StatusCode::GATEWAY_TIMEOUT;
            state.recorded.lock().unwrap().push(record);
        }
        std::future::pending::<()>().await;
        unreachable!();
    }
    let statuses: Vec<StatusCode> = statuses.into_iter().flatten().collect();
    let refusal = statuses.iter().copied().find(|s| [401, 403, 404].contains(&s.as_u16()));
    let mut failed = Vec::new();
    for ((record, status), entry) in records.iter_mut().zip(&statuses).zip(&entries) {
        record.answered = refusal.unwrap_or(*status);
        if !record.answered.is_success() {
            failed.push(json!({"entryId": entry["entryId"], "error": "broker down"}));
        }
    }
    state.recorded.lock().unwrap().extend(records);
    if let Some(status) = refusal {
        return (status, [("content-type", "application/json")], DAPR_PUBLISH_ERROR).into_response();
    }
    if failed.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let answer = json!({"failedEntries": failed, "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE"});
    (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "application/json")], answer.to_string()).into_response()
}

/// The todo app running in-process against a test database and a stand-in sidecar.
pub struct TestApp {
    pub address: String,
    /// `http://…` of the metrics port.
    pub metrics_address: String,
    pub http: reqwest::Client,
    pub db: Database,
    pub test_db: Arc<TestDb>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<Result<(), StartError>>>,
}

/// Logs go through libtest's capture (shown for failing tests only); `RUST_LOG` overrides the
/// default of warnings and errors.
fn init_test_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,sqlx=error"));
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_test_writer().with_filter(filter))
        .with(TransactionWarnings)
        .with(service_kit::telemetry::layer_without_export())
        .try_init();
}

/// PostgreSQL's "there is already a transaction in progress" and "there is no transaction in
/// progress" warnings, as the app's connections received them (sqlx logs every notice under
/// `sqlx::postgres::notice`). Our statements never cause either: one means a session was lent
/// out inside a transaction its owner had abandoned.
pub static TRANSACTION_WARNINGS: AtomicUsize = AtomicUsize::new(0);

struct TransactionWarnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TransactionWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _context: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 |= format!("{value:?}").contains("transaction in progress");
                }
            }
        }
        if event.metadata().target() == "sqlx::postgres::notice" {
            let mut message = Message(false);
            event.record(&mut message);
            if message.0 {
                TRANSACTION_WARNINGS.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Relay settings that make tests fast: short retries and a 1 s publish timeout.
pub fn test_settings(db_url: &str, sidecar_port: u16, overrides: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = [
        ("APP_HOST", "127.0.0.1"),
        ("APP_PORT", "0"),
        ("METRICS_PORT", "0"),
        ("APP_ID", "todo"),
        ("RELAY_POLL_INTERVAL_MS", "100"),
        ("RELAY_RETRY_INITIAL_MS", "20"),
        ("RELAY_RETRY_MAX_MS", "200"),
        ("RELAY_PUBLISH_TIMEOUT_MS", "1000"),
        ("RELAY_LEASE_MS", "5000"),
        ("DB_MAX_CONNECTIONS", "4"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert("DATABASE_URL".into(), db_url.to_owned());
    env.insert("DAPR_HTTP_PORT".into(), sidecar_port.to_string());
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Settings::from_lookup(|name| env.get(name).cloned()).expect("valid test settings")
}

impl TestApp {
    /// The app with its own database and a stand-in sidecar that accepts everything.
    pub async fn spawn(backend: Backend) -> (Self, FakeSidecar) {
        let sidecar = FakeSidecar::start().await;
        let app = Self::spawn_with(Arc::new(TestDb::new(backend).await), &sidecar, &[]).await;
        (app, sidecar)
    }

    pub async fn spawn_with(test_db: Arc<TestDb>, sidecar: &FakeSidecar, overrides: &[(&str, &str)]) -> Self {
        init_test_logging();
        let settings = test_settings(&test_db.url, sidecar.port(), overrides);
        let app = Application::build(settings).await.expect("build the app");
        let address = format!("http://{}", app.local_addr());
        let metrics_address = format!("http://{}", app.metrics_addr());
        let db = app.database().clone();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { address, metrics_address, http: reqwest::Client::new(), db, test_db, shutdown, server: Some(server) }
    }

    /// The metrics port's `GET /metrics`, as Prometheus scrapes it.
    pub async fn scrape(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.metrics_address)).send().await.expect("metrics answer");
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.expect("a text body")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http.post(self.url(path)).json(body).send().await.expect("request")
    }

    /// Creates a todo and returns its JSON.
    pub async fn create_todo(&self, user_id: &str, title: &str) -> Value {
        let response = self.post_json("/todos", &serde_json::json!({"userId": user_id, "title": title})).await;
        assert_eq!(response.status(), 201, "create failed: {:?}", response.text().await);
        response.json().await.unwrap()
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http.patch(self.url(path)).json(body).send().await.expect("request")
    }

    /// `POST` without a body (complete, reopen).
    pub async fn post_empty(&self, path: &str) -> reqwest::Response {
        self.http.post(self.url(path)).send().await.expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("the app task").expect("the app stopped cleanly");
        }
    }

    /// Abrupt stop: the tasks are dropped mid-flight, like a killed process.
    pub async fn crash(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Sends a request and returns its JSON body.
pub trait SendJson {
    fn send_json(self) -> impl Future<Output = Value>;
}

impl SendJson for reqwest::RequestBuilder {
    async fn send_json(self) -> Value {
        self.send().await.expect("request").json().await.expect("a JSON body")
    }
}

/// Asserts an RFC 9457 problem response with `status` whose `errors` name `field`; returns the
/// problem.
pub async fn assert_problem(response: reqwest::Response, status: u16, field: Option<&str>) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "application/problem+json");
    let problem: Value = response.json().await.expect("a problem body is JSON");
    assert_eq!(problem["status"], status);
    assert!(problem["type"].is_string() && problem["title"].is_string(), "{problem}");
    if let Some(field) = field {
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(named.contains(&field), "expected field {field:?} in {problem}");
    }
    problem
}

/// A TCP proxy in front of PostgreSQL (on a port of its own, returned) that holds every chunk
/// for `delay` before passing it on, a database a network hop away, and passes nothing on at
/// all while `frozen` is set: a database that stopped answering.
pub async fn proxy(target: String, delay: Duration, frozen: Arc<std::sync::atomic::AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&target).await else { continue };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, delay, frozen.clone()));
            tokio::spawn(pump(server_read, client_write, delay, frozen.clone()));
        }
    });
    port
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    frozen: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        tokio::time::sleep(delay).await;
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
