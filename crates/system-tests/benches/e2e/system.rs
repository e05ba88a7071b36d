//! The system as users run it, each part a process of its own so its CPU and memory can be
//! told apart: a redis-server, the three services' release binaries (`make bench-e2e` builds
//! them), and a daprd beside each, with the repository's local component and resiliency files
//! (`components/`), only the Redis address changed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use service_kit::testing::daprd::{self, Daprd, free_port, repository};
use service_kit::testing::{TempDir, eventually};

/// How long a process may take to answer after it is started.
const START_DEADLINE: Duration = Duration::from_secs(60);

pub const ADMIN_TOKEN: &str = "bench-admin-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Todo,
    Notification,
    Analytics,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Todo => "todo",
            Kind::Notification => "notification",
            Kind::Analytics => "analytics",
        }
    }
}

/// One service's release binary, started with the environment a deployment gives it.
pub struct App {
    pub kind: Kind,
    pub port: u16,
    pub url: String,
    pub database: PathBuf,
    /// Its stdout and stderr.
    pub log_path: PathBuf,
    child: tokio::process::Child,
}

impl App {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// A service and its sidecar.
pub struct Service {
    pub app: App,
    pub sidecar: Daprd,
}

pub struct System {
    pub todo: Service,
    pub notification: Service,
    pub analytics: Service,
    pub redis_pid: u32,
    resources: TempDir,
    _redis: tokio::process::Child,
    _data: TempDir,
}

impl System {
    pub async fn start() -> Self {
        let data = TempDir::new();
        let (redis, redis_host) = start_redis(&data.path).await;
        let resources = TempDir::new();
        let pubsub =
            std::fs::read_to_string(repository().join("components/pubsub.yaml")).expect("components/pubsub.yaml");
        assert!(pubsub.contains("localhost:6379"), "components/pubsub.yaml changed shape: {pubsub}");
        std::fs::write(resources.path.join("pubsub.yaml"), pubsub.replace("localhost:6379", &redis_host)).unwrap();
        std::fs::copy(repository().join("components/resiliency.yaml"), resources.path.join("resiliency.yaml")).unwrap();
        // Consumers first, so their consumer groups exist before the first event is published.
        let notification = Service::start(Kind::Notification, &data.path, &resources.path).await;
        let analytics = Service::start(Kind::Analytics, &data.path, &resources.path).await;
        let todo = Service::start(Kind::Todo, &data.path, &resources.path).await;
        Self {
            todo,
            notification,
            analytics,
            redis_pid: redis.id().unwrap_or(0),
            resources,
            _redis: redis,
            _data: data,
        }
    }

    /// Every process of the system, by name, for the CPU and memory figures.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut processes = vec![("redis".to_owned(), self.redis_pid)];
        for service in [&self.todo, &self.notification, &self.analytics] {
            processes.push((service.app.kind.name().to_owned(), service.app.pid()));
            processes.push((format!("daprd-{}", service.app.kind.name()), service.sidecar.pid()));
        }
        processes
    }

    /// A consumer's sidecar stopped (SIGTERM): nothing is delivered to it until it is back.
    pub async fn stop_sidecar(&mut self, kind: Kind) {
        self.service(kind).sidecar.stop().await;
    }

    /// The sidecar started again on the same HTTP port, so its app finds it where it was.
    pub async fn start_sidecar(&mut self, kind: Kind) {
        let resources = self.resources.path.clone();
        let service = self.service(kind);
        service.sidecar = start_sidecar(kind, service.app.port, &resources, Some(service.sidecar.http_port)).await;
    }

    fn service(&mut self, kind: Kind) -> &mut Service {
        match kind {
            Kind::Todo => &mut self.todo,
            Kind::Notification => &mut self.notification,
            Kind::Analytics => &mut self.analytics,
        }
    }
}

impl Service {
    async fn start(kind: Kind, data: &Path, resources: &Path) -> Self {
        let (port, sidecar_port) = (free_port(), free_port());
        let database = data.join(format!("{}.db", kind.name()));
        let binary = repository().join("target/release").join(kind.name());
        assert!(binary.exists(), "{} is missing: `make bench-e2e` builds it (cargo build --release)", binary.display());
        let log_path = data.join(format!("{}.log", kind.name()));
        let log = std::fs::File::create(&log_path).unwrap();
        // RELAY_* from the bench's environment tunes the todo service's relay for a run.
        let relay_settings: Vec<(String, String)> =
            std::env::vars().filter(|(name, _)| kind == Kind::Todo && name.starts_with("RELAY_")).collect();
        let child = tokio::process::Command::new(&binary)
            .env_clear()
            .envs(relay_settings)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // As `make run` configures them (dapr/dapr.yaml): logs at info, metrics and tracing
            // on, no span export.
            .env("RUST_LOG", "info,sqlx=warn")
            .env("APP_HOST", "127.0.0.1")
            .env("APP_PORT", port.to_string())
            .env("METRICS_PORT", free_port().to_string())
            .env("DATABASE_URL", format!("sqlite://{}", database.display()))
            .env("DAPR_HTTP_ENDPOINT", format!("http://127.0.0.1:{sidecar_port}"))
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually(&format!("{} to answer /healthz", kind.name()), START_DEADLINE, || async {
            http.get(format!("{url}/healthz")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        let sidecar = start_sidecar(kind, port, resources, Some(sidecar_port)).await;
        Self { app: App { kind, port, url, database, log_path, child }, sidecar }
    }
}

async fn start_sidecar(kind: Kind, app_port: u16, resources: &Path, http_port: Option<u16>) -> Daprd {
    Daprd::start(daprd::Options {
        config: Some(repository().join("dapr/config.yaml")),
        http_port,
        ..daprd::Options::new(kind.name(), Some(app_port), resources)
    })
    .await
}

/// A redis-server persisting as a deployment does (append-only file, fsync every second).
async fn start_redis(dir: &Path) -> (tokio::process::Child, String) {
    let port = free_port();
    let child = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", "everysec"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server must be on PATH (`make bench-e2e` installs it when missing)");
    eventually("redis-server to listen", START_DEADLINE, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await;
    (child, format!("127.0.0.1:{port}"))
}
