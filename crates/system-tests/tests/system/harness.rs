//! The system under test: a private broker (Redis, or Kafka with `TEST_PUBSUB=kafka`), the
//! repository's component files pointed at it (with faster retry timers), and each service
//! in-process with a real daprd of its own.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use service_kit::db::dialect::Backend;
use service_kit::testing::daprd::{self, Daprd};
use service_kit::testing::{TempDir, TestDb};

pub use service_kit::db::dialect::Backend as DbBackend;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerKind};

pub const ADMIN_TOKEN: &str = "admin-secret";

pub use service_kit::testing::daprd::{free_port, repository};

/// The broker's pub/sub component and the resiliency policy of the same deployment (local
/// `components/` for Redis, the cluster's `k8s/base/dapr/` for Kafka), with retries fast enough
/// for tests (3 retries 50 ms apart instead of 5 exponential ones): the same kinds of policy
/// otherwise.
pub fn resources(broker: &Broker) -> TempDir {
    let dir = TempDir::new();
    broker.write_component(&dir.path);
    let file = match broker {
        Broker::Redis(_) => "components/resiliency.yaml",
        #[cfg(feature = "kafka")]
        Broker::Kafka(_) => "k8s/base/dapr/resiliency.yaml",
    };
    let resiliency = std::fs::read_to_string(repository().join(file)).unwrap();
    let resiliency = resiliency
        .replace(
            "policy: exponential\n        maxInterval: 10s\n        maxRetries: 5",
            "policy: constant\n        duration: 50ms\n        maxRetries: 3",
        )
        .replace(
            "policy: exponential\n        maxInterval: 2s\n        maxRetries: 3",
            "policy: constant\n        duration: 50ms\n        maxRetries: 3",
        );
    assert!(resiliency.matches("duration: 50ms").count() == 2, "{file} changed shape: {resiliency}");
    std::fs::write(dir.path.join("resiliency.yaml"), resiliency).unwrap();
    dir
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Todo,
    Notification,
    Analytics,
}

impl Kind {
    pub fn app_id(self) -> &'static str {
        match self {
            Kind::Todo => "todo",
            Kind::Notification => "notification",
            Kind::Analytics => "analytics",
        }
    }
}

/// One service, in-process, with its daprd.
pub struct Service {
    pub url: String,
    /// `http://…` of the metrics port (`GET /metrics`).
    pub metrics_url: String,
    pub sidecar: Daprd,
    app: (CancellationToken, Option<JoinHandle<()>>),
}

#[derive(Clone, Default)]
pub struct Extra {
    /// `APP_API_TOKEN` for the sidecars and the consumers.
    pub app_token: Option<&'static str>,
    pub env: HashMap<&'static str, String>,
}

impl Service {
    pub async fn start(kind: Kind, database_url: &str, resources: &Path, extra: &Extra) -> Self {
        let sidecar_port = free_port();
        let mut env: HashMap<&str, String> = HashMap::from([
            ("APP_PORT", "0".to_owned()),
            ("METRICS_PORT", "0".to_owned()),
            ("APP_HOST", "127.0.0.1".to_owned()),
            ("APP_ID", kind.app_id().to_owned()),
            ("DATABASE_URL", database_url.to_owned()),
            ("DAPR_HTTP_ENDPOINT", format!("http://127.0.0.1:{sidecar_port}")),
            ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("RELAY_POLL_INTERVAL_MS", "100".to_owned()),
        ]);
        if let Some(token) = extra.app_token {
            env.insert("APP_API_TOKEN", token.to_owned());
        }
        env.extend(extra.env.clone());
        let lookup = move |name: &str| env.get(name).cloned();
        let app_shutdown = CancellationToken::new();
        let (addr, metrics_addr, app_task): (SocketAddr, SocketAddr, JoinHandle<()>) = match kind {
            Kind::Todo => {
                let settings = todo::config::Settings::from_lookup(lookup).unwrap();
                let app = todo::startup::Application::build(settings).await.unwrap();
                let (addr, metrics_addr) = (app.local_addr(), app.metrics_addr());
                (addr, metrics_addr, tokio::spawn(served(app.run_until_stopped(app_shutdown.clone()))))
            }
            Kind::Notification => {
                let settings = notification::config::Settings::from_lookup(lookup).unwrap();
                let app = notification::startup::build(settings).await.unwrap();
                let (addr, metrics_addr) = (app.local_addr(), app.metrics_addr());
                (addr, metrics_addr, tokio::spawn(served(app.run_until_stopped(app_shutdown.clone()))))
            }
            Kind::Analytics => {
                let settings = analytics::config::Settings::from_lookup(lookup).unwrap();
                let app = analytics::startup::build(settings).await.unwrap();
                let (addr, metrics_addr) = (app.local_addr(), app.metrics_addr());
                (addr, metrics_addr, tokio::spawn(served(app.run_until_stopped(app_shutdown.clone()))))
            }
        };
        // Healthy once its components are up and it has read the app's subscriptions.
        let sidecar = Daprd::start(daprd::Options {
            config: Some(repository().join("dapr/config.yaml")),
            app_api_token: extra.app_token.map(str::to_owned),
            http_port: Some(sidecar_port),
            ..daprd::Options::new(kind.app_id(), Some(addr.port()), resources)
        })
        .await;
        Self {
            url: format!("http://{addr}"),
            metrics_url: format!("http://{metrics_addr}"),
            sidecar,
            app: (app_shutdown, Some(app_task)),
        }
    }

    /// A crash: the app's task is dropped where it stands (`app_first`) or daprd is killed with
    /// SIGKILL first, then the other, with no chance to finish anything.
    pub async fn crash(&mut self, app_first: bool) {
        if app_first {
            if let Some(task) = self.app.1.take() {
                task.abort();
                let _ = task.await;
            }
            self.sidecar.kill().await;
        } else {
            self.sidecar.kill().await;
            if let Some(task) = self.app.1.take() {
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Stops daprd (SIGTERM: it stops reading and finishes deliveries in flight), then the app.
    pub async fn stop(mut self) {
        self.sidecar.stop().await;
        self.app.0.cancel();
        if let Some(task) = self.app.1.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.app.0.cancel();
    }
}

/// A service's run future as a task body: a service that fails fails the test.
async fn served<E: std::fmt::Debug>(run: impl std::future::Future<Output = Result<(), E>>) {
    run.await.expect("the service runs")
}

/// The three services over one private broker, each with a database of its own.
pub struct System {
    pub resources: TempDir,
    pub http: reqwest::Client,
    pub todo: Service,
    pub notification: Option<Service>,
    pub analytics: Option<Service>,
    pub databases: HashMap<Kind, TestDb>,
    pub extra: Extra,
    /// More instances of the services, on the same databases and app ids.
    pub replicas: Vec<Service>,
    /// Last, so it is dropped last: the sidecars stop while their broker still answers.
    pub broker: Broker,
}

impl System {
    /// On the broker `TEST_PUBSUB` names (Redis by default).
    pub async fn start(backend: Backend, extra: Extra) -> Self {
        Self::start_on(BrokerKind::from_env(), backend, extra).await
    }

    pub async fn start_on(broker: BrokerKind, backend: Backend, extra: Extra) -> Self {
        let broker = Broker::start(broker).await;
        let resources = resources(&broker);
        let mut databases = HashMap::new();
        for kind in [Kind::Todo, Kind::Notification, Kind::Analytics] {
            databases.insert(kind, TestDb::new(backend).await);
        }
        // Consumers first: their consumer groups exist before the first event is published.
        let notification =
            Service::start(Kind::Notification, &databases[&Kind::Notification].url, &resources.path, &extra).await;
        let analytics =
            Service::start(Kind::Analytics, &databases[&Kind::Analytics].url, &resources.path, &extra).await;
        let todo = Service::start(Kind::Todo, &databases[&Kind::Todo].url, &resources.path, &extra).await;
        Self {
            broker,
            resources,
            http: reqwest::Client::new(),
            todo,
            notification: Some(notification),
            analytics: Some(analytics),
            databases,
            extra,
            replicas: Vec::new(),
        }
    }

    /// Starts one more instance of `kind` (app and sidecar) on the same database and app id:
    /// a second relay for the todo service, a competing consumer for the others.
    pub async fn add_replica(&mut self, kind: Kind) -> &Service {
        let url = self.databases[&kind].url.clone();
        self.replicas.push(Service::start(kind, &url, &self.resources.path, &self.extra).await);
        self.replicas.last().expect("just pushed")
    }

    pub fn consumer(&self, kind: Kind) -> &Service {
        match kind {
            Kind::Notification => self.notification.as_ref().expect("notification runs"),
            Kind::Analytics => self.analytics.as_ref().expect("analytics runs"),
            Kind::Todo => &self.todo,
        }
    }

    pub async fn restart(&mut self, kind: Kind) {
        let url = self.databases[&kind].url.clone();
        let service = Service::start(kind, &url, &self.resources.path, &self.extra).await;
        match kind {
            Kind::Notification => self.notification = Some(service),
            Kind::Analytics => self.analytics = Some(service),
            Kind::Todo => panic!("the tests restart consumers only"),
        }
    }

    /// Crashes `kind` (app and daprd, in the given order) and starts it again on its database.
    pub async fn crash_and_restart(&mut self, kind: Kind, app_first: bool) {
        let url = self.databases[&kind].url.clone();
        let crashed = match kind {
            Kind::Notification => self.notification.as_mut().expect("notification runs"),
            Kind::Analytics => self.analytics.as_mut().expect("analytics runs"),
            Kind::Todo => &mut self.todo,
        };
        crashed.crash(app_first).await;
        let service = Service::start(kind, &url, &self.resources.path, &self.extra).await;
        match kind {
            Kind::Notification => self.notification = Some(service),
            Kind::Analytics => self.analytics = Some(service),
            Kind::Todo => self.todo = service,
        }
    }

    pub async fn stop(&mut self, kind: Kind) {
        let service = match kind {
            Kind::Notification => self.notification.take(),
            Kind::Analytics => self.analytics.take(),
            Kind::Todo => panic!("the tests stop consumers only"),
        };
        service.expect("running").stop().await;
    }

    /// `POST /todos` and friends on the todo service; returns the JSON answer.
    pub async fn todo_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.todo.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap_or(Value::Null)
    }

    /// How many notifications `user` has, over every page of `GET /notifications`.
    pub async fn notification_count(&self, user: &str) -> usize {
        let (mut count, mut cursor) = (0, None::<String>);
        loop {
            let path = match &cursor {
                None => format!("/notifications?userId={user}&limit=100"),
                Some(cursor) => format!("/notifications?userId={user}&limit=100&cursor={cursor}"),
            };
            let page = self.get(Kind::Notification, &path).await;
            count += page["items"].as_array().expect("a page of notifications").len();
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return count,
            }
        }
    }

    pub async fn get(&self, kind: Kind, path: &str) -> Value {
        let response =
            self.http.get(format!("{}{path}", self.consumer(kind).url)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap()
    }
}

/// A webhook receiver answering from a script (then 200), recording every call.
pub struct Webhook {
    pub url: String,
    calls: Arc<Mutex<Vec<Value>>>,
    script: Arc<Mutex<VecDeque<StatusCode>>>,
    fallback: Arc<Mutex<StatusCode>>,
    server: JoinHandle<()>,
}

type WebhookState = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<VecDeque<StatusCode>>>, Arc<Mutex<StatusCode>>);

async fn hook(State((calls, script, fallback)): State<WebhookState>, body: axum::Json<Value>) -> StatusCode {
    calls.lock().unwrap().push(body.0);
    script.lock().unwrap().pop_front().unwrap_or(*fallback.lock().unwrap())
}

impl Webhook {
    pub async fn start() -> Self {
        let state: WebhookState = (Arc::default(), Arc::default(), Arc::new(Mutex::new(StatusCode::OK)));
        let router = axum::Router::new().route("/hook", post(hook)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, calls: state.0, script: state.1, fallback: state.2, server }
    }

    pub fn answer_next(&self, statuses: impl IntoIterator<Item = StatusCode>) {
        self.script.lock().unwrap().extend(statuses);
    }

    pub fn answer_always(&self, status: StatusCode) {
        *self.fallback.lock().unwrap() = status;
    }

    pub fn calls(&self) -> Vec<Value> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}
