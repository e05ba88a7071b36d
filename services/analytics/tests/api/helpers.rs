//! The analytics app spawned in-process on port 0 against a fresh database.

use std::net::SocketAddr;

use analytics::{Application, Settings};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use service_kit::testing::{Backend, TestDb, todo_event};

pub const ADMIN_TOKEN: &str = "admin-secret";

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    _test_db: TestDb,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        let test_db = TestDb::new(backend).await;
        let url = test_db.url.clone();
        let settings = Settings::from_lookup(move |name| match name {
            "APP_PORT" => Some("0".into()),
            "APP_HOST" => Some("127.0.0.1".into()),
            "DATABASE_URL" => Some(url.clone()),
            "ADMIN_TOKEN" => Some(ADMIN_TOKEN.into()),
            "DAPR_HTTP_ENDPOINT" => Some("http://127.0.0.1:9".into()),
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

    pub async fn deliver_raw(&self, body: String) -> Option<String> {
        let (status, answer) =
            service_kit::testing::deliver(&self.http, &self.url(""), "todos.task.created", body, None).await;
        assert_eq!(status, 200, "daprd reads answers from 2xx only");
        answer
    }

    pub async fn deliver(&self, event: &Value) -> String {
        self.deliver_raw(event.to_string()).await.expect("an answer has a status")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
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
