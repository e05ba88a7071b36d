//! Test helpers for the consumers' integration tests (feature `testing`): a consumer spawned
//! in-process on port 0, and deliveries posted the way daprd posts them.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::ConsumerApp;
use service_kit::testing::TestDb;

/// A consumer app serving in a task of the test's runtime, on a database of its own (dropped
/// with it); stopped gracefully by [`Running::stop`], cancelled when dropped.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served.
    pub metrics_addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    _database: TestDb,
}

impl Running {
    pub fn spawn(app: ConsumerApp, database: TestDb) -> Self {
        let (addr, metrics_addr) = (app.local_addr(), app.metrics_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { app.run_until_stopped(shutdown).await.expect("the app runs") }
        });
        Self { addr, metrics_addr, http: reqwest::Client::new(), shutdown, task: Some(task), _database: database }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A delivery of `body` to `/events/{topic}` as daprd posts it; the HTTP status and the
    /// answer's `status` (SUCCESS, RETRY, DROP).
    pub async fn deliver_raw(&self, topic: &str, body: String, token: Option<&str>) -> (u16, Option<String>) {
        deliver(&self.http, &self.url(""), topic, body, token).await
    }

    /// Delivers `event` to its type's topic and returns the answer, which must come with 200.
    pub async fn deliver(&self, event: &serde_json::Value) -> String {
        let topic = event["type"].as_str().unwrap_or("todos.task.created").to_owned();
        let (status, answer) = self.deliver_raw(&topic, event.to_string(), None).await;
        assert_eq!(status, 200, "daprd reads answers from 2xx only");
        answer.expect("an answer has a status")
    }

    /// The metrics port's `GET /metrics`, as Prometheus scrapes it.
    pub async fn scrape(&self) -> String {
        let response =
            self.http.get(format!("http://{}/metrics", self.metrics_addr)).send().await.expect("metrics answer");
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.expect("a text body")
    }

    /// `GET path`: the status and the JSON body (`null` when there is none).
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.http.get(self.url(path)).send().await.expect("the app answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// The environment every consumer test starts from: a free port on loopback, the test's own
/// database, and a Dapr endpoint nothing listens on (a test that needs a sidecar starts one and
/// sets `DAPR_HTTP_ENDPOINT` itself).
pub fn test_env(name: &str, database: &TestDb) -> Option<String> {
    match name {
        "APP_PORT" | "METRICS_PORT" => Some("0".into()),
        "APP_HOST" => Some("127.0.0.1".into()),
        "DATABASE_URL" => Some(database.url.clone()),
        "DAPR_HTTP_ENDPOINT" => Some("http://127.0.0.1:9".into()),
        _ => None,
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A todo event as the todo service publishes it (and daprd delivers it): `version` of todo
/// `todo_id`, changed at minute `minute` past 10:00 on 2026-11-23 (created at 10:00); completed
/// for `todos.task.completed`, open otherwise, with `deletedAt` on `todos.task.deleted`.
pub fn todo_event(
    event_type: &str,
    todo_id: Uuid,
    user: &str,
    title: &str,
    version: i64,
    minute: u32,
) -> serde_json::Value {
    let at = format!("2026-11-23T10:{minute:02}:00.000000Z");
    let completed = event_type == "todos.task.completed";
    let mut event = serde_json::json!({
        "specversion": "1.0", "id": Uuid::now_v7().to_string(), "source": "todo", "type": event_type,
        "subject": todo_id.to_string(), "time": at, "datacontenttype": "application/json",
        "dataschema": format!("https://dapr-todo.example/schemas/events/{event_type}/v1.json"),
        "correlationid": "corr-1", "traceparent": "", "traceid": "", "tracestate": "",
        "topic": event_type, "pubsubname": "pubsub",
        "data": {"todoId": todo_id, "userId": user, "title": title, "description": null, "dueAt": null,
                 "status": if completed { "completed" } else { "open" }, "version": version,
                 "createdAt": "2026-11-23T10:00:00.000000Z", "updatedAt": at,
                 "completedAt": if completed { serde_json::Value::String(at.clone()) } else { serde_json::Value::Null }}
    });
    match event_type {
        "todos.task.deleted" => event["data"]["deletedAt"] = serde_json::Value::String(at),
        "todos.task.updated" => event["data"]["changedFields"] = serde_json::json!(["title"]),
        _ => {}
    }
    event
}

/// POSTs a delivery to `{base}/events/{topic}` the way daprd does; returns the HTTP status and
/// the answer's `status` (SUCCESS, RETRY, DROP).
pub async fn deliver(
    http: &reqwest::Client,
    base: &str,
    topic: &str,
    body: String,
    token: Option<&str>,
) -> (u16, Option<String>) {
    let mut request =
        http.post(format!("{base}/events/{topic}")).header("content-type", "application/cloudevents+json").body(body);
    if let Some(token) = token {
        request = request.header("dapr-api-token", token);
    }
    let response = request.send().await.expect("the app answers");
    let status = response.status().as_u16();
    let answer: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, answer["status"].as_str().map(str::to_owned))
}
