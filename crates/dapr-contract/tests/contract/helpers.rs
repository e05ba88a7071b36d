//! A recording subscriber app, resource files in a temp dir, and a real daprd for it.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use service_kit::testing::daprd::{self, Daprd};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use service_kit::testing::DEADLINE;

/// Polls `check` until it yields a value, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    service_kit::testing::eventually(what, DEADLINE, check).await
}

pub fn redis_host() -> String {
    std::env::var("TEST_REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique("dapr-contract"));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Redis pub/sub component named `pubsub` with fast redelivery timers.
pub fn redis_component(extra_metadata: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: {}\n{extra_metadata}",
        redis_host()
    )
}

/// One delivery as the app received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a delivery body is JSON")
    }
}

/// Scripted status meaning "never answer".
pub const HANG: u16 = 599;

/// What the app answers to a delivery: a status and a body.
pub type Answer = (StatusCode, String);

#[derive(Clone)]
struct AppState {
    subscriptions: Arc<Mutex<Value>>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
    subscribe_headers: Arc<Mutex<Option<HeaderMap>>>,
}

/// A subscriber app: answers `/dapr/subscribe` with the given JSON, records every delivery and
/// answers from a queue of scripted answers (then SUCCESS).
pub struct TestApp {
    pub addr: SocketAddr,
    state: AppState,
    server: JoinHandle<()>,
}

impl TestApp {
    pub async fn start(subscriptions: Value) -> Self {
        let state = AppState {
            subscriptions: Arc::new(Mutex::new(subscriptions)),
            deliveries: Arc::default(),
            answers: Arc::default(),
            subscribe_headers: Arc::default(),
        };
        let app = Router::new()
            .route("/dapr/subscribe", get(subscribe))
            .route("/{*path}", post(deliver))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, server }
    }

    pub fn answer_next(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.answers.lock().unwrap().extend(answers);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.deliveries.lock().unwrap().clone()
    }

    pub fn subscribe_headers(&self) -> Option<HeaderMap> {
        self.state.subscribe_headers.lock().unwrap().clone()
    }

    pub async fn wait_for_deliveries(&self, count: usize) -> Vec<Delivery> {
        eventually(&format!("{count} deliveries"), || async {
            let deliveries = self.deliveries();
            (deliveries.len() >= count).then_some(deliveries)
        })
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn subscribe(State(state): State<AppState>, headers: HeaderMap) -> Response {
    *state.subscribe_headers.lock().unwrap() = Some(headers);
    axum::Json(state.subscriptions.lock().unwrap().clone()).into_response()
}

async fn deliver(State(state): State<AppState>, Path(path): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    state.deliveries.lock().unwrap().push(Delivery { path: format!("/{path}"), headers, body });
    let answer = state.answers.lock().unwrap().pop_front();
    match answer {
        // 599 is the script's "never answer": the delivery hangs like a stuck handler.
        Some((status, _)) if status.as_u16() == HANG => std::future::pending().await,
        Some((status, body)) => (status, body).into_response(),
        None => axum::Json(serde_json::json!({"status": "SUCCESS"})).into_response(),
    }
}

/// A daprd for one app (or none), with an HTTP client for its API.
pub struct RunningSidecar {
    pub url: String,
    pub http: reqwest::Client,
    pub daprd: Daprd,
}

pub fn sidecar_config(app_id: &str, app: Option<&TestApp>, resources: &TempDir) -> daprd::Options {
    daprd::Options::new(app_id, app.map(|a| a.addr.port()), &resources.0)
}

impl RunningSidecar {
    /// Started and healthy: components up, the app's subscriptions read.
    pub async fn start(options: daprd::Options) -> Self {
        let daprd = Daprd::start(options).await;
        Self { url: daprd.url.clone(), http: reqwest::Client::new(), daprd }
    }

    pub async fn publish(&self, topic: &str, content_type: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1.0/publish/pubsub/{topic}", self.url))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// SIGTERM, and waits until daprd has exited (`processes.rs` checks the exit status).
    pub async fn stop(mut self) {
        self.daprd.stop().await;
    }
}

pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{}", redis_host()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis is needed for the Dapr contract tests (TEST_REDIS_HOST)")
}
