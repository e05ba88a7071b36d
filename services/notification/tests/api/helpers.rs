//! The notification app spawned in-process on port 0 against a fresh database, CloudEvents as
//! the todo service publishes them, and a scriptable webhook receiver.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use notification::{Application, Settings};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use service_kit::testing::{Backend, DEADLINE, TestDb, eventually, todo_event};

pub const ADMIN_TOKEN: &str = "admin-secret";

#[derive(Default, Clone)]
pub struct Options {
    pub app_token: Option<&'static str>,
    pub admin_token: Option<&'static str>,
    pub webhook_url: Option<String>,
    pub dapr_endpoint: Option<String>,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    _test_db: TestDb,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
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
        let app = Application::build(settings).await.expect("the app starts");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { app.run_until_stopped(shutdown).await.expect("the app runs") }
        });
        Self { addr, http: reqwest::Client::new(), _test_db: test_db, shutdown, task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn deliver_raw(&self, topic: &str, body: String, token: Option<&str>) -> (u16, Option<String>) {
        service_kit::testing::deliver(&self.http, &self.url(""), topic, body, token).await
    }

    pub async fn deliver(&self, event: &Value) -> String {
        let topic = event["type"].as_str().unwrap_or("todos.task.created").to_owned();
        let (status, answer) = self.deliver_raw(&topic, event.to_string(), None).await;
        assert_eq!(status, 200, "daprd reads answers from 2xx only");
        answer.expect("an answer has a status")
    }

    pub async fn notifications(&self, query: &str) -> Value {
        let response = self.http.get(self.url(&format!("/notifications?{query}"))).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
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
