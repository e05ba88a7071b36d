//! The analytics app spawned in-process on port 0 against a fresh database.

use analytics::config::Settings;
use dapr_consumer::testing::Running;
use serde_json::Value;

pub use dapr_consumer::testing::todo_event;
pub use service_kit::testing::{Backend, TestDb};

pub const ADMIN_TOKEN: &str = "admin-secret";

pub struct TestApp {
    pub app: Running,
    _test_db: TestDb,
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
        let app = analytics::startup::build(settings).await.expect("the app starts");
        Self { app: Running::spawn(app), _test_db: test_db }
    }

    /// A delivery of any body, answered with 200 as daprd needs.
    pub async fn deliver_body(&self, body: String) -> Option<String> {
        let (status, answer) = self.app.deliver_raw("todos.task.created", body, None).await;
        assert_eq!(status, 200, "daprd reads answers from 2xx only");
        answer
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
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
