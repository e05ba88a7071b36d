//! The notification app spawned in-process on port 0 against a fresh database, CloudEvents as
//! the todo service publishes them, and a scriptable webhook receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use notification::config::Settings;
use serde_json::Value;
use tokio::task::JoinHandle;

use dapr_consumer::testing::test_env;

pub use dapr_consumer::testing::{Running as TestApp, todo_event};
pub use service_kit::db::dialect::Backend;
pub use service_kit::testing::{DEADLINE, TestDb, eventually};

pub const ADMIN_TOKEN: &str = "admin-secret";

#[derive(Default, Clone)]
pub struct Options {
    pub app_token: Option<&'static str>,
    pub admin_token: Option<&'static str>,
    pub webhook_url: Option<String>,
    pub dapr_endpoint: Option<String>,
}

pub async fn spawn(backend: Backend, options: Options) -> TestApp {
    let test_db = TestDb::new(backend).await;
    let settings = Settings::from_lookup(|name| match name {
        "APP_API_TOKEN" => options.app_token.map(str::to_owned),
        "ADMIN_TOKEN" => options.admin_token.map(str::to_owned),
        "NOTIFY_WEBHOOK_URL" => options.webhook_url.clone(),
        "NOTIFY_WEBHOOK_TIMEOUT_MS" => Some("500".into()),
        "DAPR_HTTP_ENDPOINT" if options.dapr_endpoint.is_some() => options.dapr_endpoint.clone(),
        _ => test_env(name, &test_db),
    })
    .expect("test settings are valid");
    TestApp::spawn(notification::startup::build(settings).await.expect("the app starts"), test_db)
}

/// `GET /notifications?{query}`, which must answer 200.
pub async fn notifications(app: &TestApp, query: &str) -> Value {
    let (status, body) = app.get_json(&format!("/notifications?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// One answer of the receiver's script: a status, with a `Retry-After` or not.
type ScriptedAnswer = (StatusCode, Option<&'static str>);

/// A webhook receiver that answers from a script (then 200) and records every call.
pub struct WebhookReceiver {
    pub url: String,
    calls: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    script: Arc<Mutex<VecDeque<ScriptedAnswer>>>,
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct ReceiverState {
    calls: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    script: Arc<Mutex<VecDeque<ScriptedAnswer>>>,
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    state.calls.lock().unwrap().push((headers, body.0));
    match state.script.lock().unwrap().pop_front() {
        None => StatusCode::OK.into_response(),
        Some((status, None)) => status.into_response(),
        Some((status, Some(retry_after))) => (status, [("retry-after", retry_after)]).into_response(),
    }
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
        self.script.lock().unwrap().extend(statuses.into_iter().map(|status| (status, None)));
    }

    /// The next answer is `status` with `Retry-After: retry_after`.
    pub fn answer_next_with_retry_after(&self, status: StatusCode, retry_after: &'static str) {
        self.script.lock().unwrap().push_back((status, Some(retry_after)));
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
