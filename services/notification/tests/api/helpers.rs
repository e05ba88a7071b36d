//! The notification app spawned in-process on port 0 against a fresh database, CloudEvents as
//! the todo service publishes them, and a scriptable webhook receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dapr_consumer::testing::Running;
use notification::config::Settings;
use serde_json::Value;
use tokio::task::JoinHandle;

pub use dapr_consumer::testing::todo_event;
pub use service_kit::testing::{Backend, DEADLINE, TestDb, eventually};

pub const ADMIN_TOKEN: &str = "admin-secret";

#[derive(Default, Clone)]
pub struct Options {
    pub app_token: Option<&'static str>,
    pub admin_token: Option<&'static str>,
    pub webhook_url: Option<String>,
    pub dapr_endpoint: Option<String>,
}

pub struct TestApp {
    pub app: Running,
    _test_db: TestDb,
}

impl TestApp {
    pub async fn spawn(backend: Backend, options: Options) -> Self {
        let test_db = TestDb::new(backend).await;
        let url = test_db.url.clone();
        let settings = Settings::from_lookup(move |name| match name {
            "APP_PORT" => Some("0".into()),
            "APP_HOST" => Some("127.0.0.1".into()),
            "DATABASE_URL" => Some(url.clone()),
            "APP_API_TOKEN" => options.app_token.map(str::to_owned),
            "ADMIN_TOKEN" => options.admin_token.map(str::to_owned),
            "NOTIFY_WEBHOOK_URL" => options.webhook_url.clone(),
            "NOTIFY_WEBHOOK_TIMEOUT_MS" => Some("500".into()),
            // Nothing listens there unless a test starts a sidecar.
            "DAPR_HTTP_ENDPOINT" => Some(options.dapr_endpoint.clone().unwrap_or_else(|| "http://127.0.0.1:9".into())),
            _ => None,
        })
        .expect("test settings are valid");
        let app = notification::startup::build(settings).await.expect("the app starts");
        Self { app: Running::spawn(app), _test_db: test_db }
    }

    pub async fn notifications(&self, query: &str) -> Value {
        let response = self.http.get(self.url(&format!("/notifications?{query}"))).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn stop(self) {
        self.app.stop().await
    }
}

/// The running app's own helpers (`url`, `http`, `deliver`, …).
impl std::ops::Deref for TestApp {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.app
    }
}

/// A webhook receiver that answers from a script (then 200) and records every call.
pub struct WebhookReceiver {
    pub url: String,
    calls: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    script: Arc<Mutex<VecDeque<StatusCode>>>,
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct ReceiverState {
    calls: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    script: Arc<Mutex<VecDeque<StatusCode>>>,
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: axum::Json<Value>) -> StatusCode {
    state.calls.lock().unwrap().push((headers, body.0));
    state.script.lock().unwrap().pop_front().unwrap_or(StatusCode::OK)
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        let state = ReceiverState { calls: Arc::default(), script: Arc::default() };
        let router = axum::Router::new().route("/hook", post(receive)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, calls: state.calls, script: state.script, server }
    }

    pub fn answer_next(&self, statuses: impl IntoIterator<Item = StatusCode>) {
        self.script.lock().unwrap().extend(statuses);
    }

    pub fn calls(&self) -> Vec<(HeaderMap, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
