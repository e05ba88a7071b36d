//! A real daprd per test, as a child process on loopback ports of its own: the sidecar every
//! integration and end-to-end test talks through. The binary is `$DAPRD` when set (the Makefile
//! sets it), else what `scripts/ensure-dapr.sh --daprd` provides (built once per machine).
//!
//! daprd's output goes to a log file; a test that fails prints the end of every log of its
//! sidecars, since most failures of a system test show there first.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use super::{DEADLINE, TempDir};

/// How long a stopping daprd may take: its graceful shutdown (set to 1 s below) plus the
/// components' close. With Kafka, closing the consumer group regularly outlasts the grace, 1 s
/// or daprd's default 5 s alike: daprd then exits 1 ("Graceful shutdown timeout exceeded").
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// The daprd binary, found or built once per test process.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| super::tool("DAPRD", "scripts/ensure-dapr.sh", &["--daprd"]))
}

/// The checkout this crate is in.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository")
}

/// A loopback port nothing listens on, below Linux's ephemeral range (32768–60999): a port the
/// kernel hands out for port 0 is also what it gives outgoing connections, and a daprd binds
/// its ports only after its components are up (seconds, with Kafka), long enough for a
/// connection of another test to take one.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let candidate = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return candidate;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What one daprd is started with. Everything else is daprd's default, but for loopback-only
/// listeners and no control plane (placement, scheduler, sentry): self-hosted, as `dapr run`.
#[derive(Debug, Clone)]
pub struct Options {
    pub app_id: String,
    /// The app's port; `None` for a sidecar without an app (publish only).
    pub app_port: Option<u16>,
    pub resources: Vec<PathBuf>,
    /// A Configuration file (`--config`).
    pub config: Option<PathBuf>,
    /// `APP_API_TOKEN`: daprd sends it to the app as `dapr-api-token`.
    pub app_api_token: Option<String>,
    /// `DAPR_API_TOKEN`: daprd requires it on its own API.
    pub dapr_api_token: Option<String>,
    /// Fixed ports (a restart that keeps its address); free ones when `None`.
    pub http_port: Option<u16>,
}

impl Options {
    pub fn new(app_id: &str, app_port: Option<u16>, resources: &Path) -> Self {
        Self {
            app_id: app_id.to_owned(),
            app_port,
            resources: vec![resources.to_owned()],
            config: None,
            app_api_token: None,
            dapr_api_token: None,
            http_port: None,
        }
    }
}

/// A resources folder with one component: the in-memory pub/sub named `pubsub`, for a sidecar
/// whose messages need not outlive it.
pub fn in_memory_pubsub() -> TempDir {
    let resources = TempDir::new();
    std::fs::write(
        resources.path.join("pubsub.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n",
    )
    .expect("write the component");
    resources
}

/// A running daprd, killed when dropped.
pub struct Daprd {
    pub http_port: u16,
    /// `http://127.0.0.1:<http port>`: the Dapr HTTP API.
    pub url: String,
    pub metrics_port: u16,
    pub app_id: String,
    child: tokio::process::Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Daprd {
    /// Starts daprd and waits until `/v1.0/healthz` answers 204: components initialised, the app
    /// reachable and subscribed. Fails the test, with daprd's log, if it exits or stays unready.
    ///
    /// The ports are found free, then released for daprd to bind, so a test running alongside
    /// may take one first: a daprd that exits because an address is in use is started again on
    /// other free ports (a fixed `http_port` stays).
    pub async fn start(options: Options) -> Self {
        for _attempt in 1..3 {
            let mut daprd = Self::spawn(options.clone());
            match daprd.healthy_or_exited().await {
                Ok(()) => return daprd,
                Err(log) if log.contains("address already in use") || log.contains("could not listen") => continue,
                Err(log) => panic!("daprd {} exited before it was healthy:\n{log}", options.app_id),
            }
        }
        let mut daprd = Self::spawn(options);
        daprd.wait_until_healthy().await;
        daprd
    }

    /// Starts daprd without waiting for it.
    pub fn spawn(options: Options) -> Self {
        let dir = TempDir::new();
        let log = dir.path.join("daprd.log");
        let http_port = options.http_port.unwrap_or_else(free_port);
        let metrics_port = free_port();
        let mut command = tokio::process::Command::new(binary());
        command
            .args(["--app-id", &options.app_id, "--mode", "standalone"])
            .args(["--dapr-http-port", &http_port.to_string()])
            .args(["--dapr-grpc-port", &free_port().to_string()])
            .args(["--dapr-internal-grpc-port", &free_port().to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--dapr-listen-addresses", "127.0.0.1", "--metrics-listen-address", "127.0.0.1"])
            .args(["--app-channel-address", "127.0.0.1"])
            // Tests stop sidecars often; a longer grace only makes a Kafka daprd's stop slower.
            .args(["--dapr-graceful-shutdown-seconds", "1"])
            .args(["--log-level", "info"]);
        if let Some(port) = options.app_port {
            command.args(["--app-port", &port.to_string()]);
        }
        for path in &options.resources {
            command.arg("--resources-path").arg(path);
        }
        if let Some(config) = &options.config {
            command.arg("--config").arg(config);
        }
        command.env_remove("APP_API_TOKEN").env_remove("DAPR_API_TOKEN");
        if let Some(token) = &options.app_api_token {
            command.env("APP_API_TOKEN", token);
        }
        if let Some(token) = &options.dapr_api_token {
            command.env("DAPR_API_TOKEN", token);
        }
        let file = std::fs::File::create(&log).expect("daprd's log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary().display()));
        Self {
            http_port,
            url: format!("http://127.0.0.1:{http_port}"),
            metrics_port,
            app_id: options.app_id,
            child,
            log,
            _dir: dir,
        }
    }

    pub async fn wait_until_healthy(&mut self) {
        if let Err(log) = self.healthy_or_exited().await {
            panic!("daprd {} exited before it was healthy:\n{log}", self.app_id);
        }
    }

    /// Polls `/v1.0/healthz` until 204; the end of the log if daprd exits first. Fails the test
    /// if daprd neither gets healthy nor exits within the deadline.
    async fn healthy_or_exited(&mut self) -> Result<(), String> {
        let http = reqwest::Client::new();
        let started = tokio::time::Instant::now();
        loop {
            let healthy = http.get(format!("{}/v1.0/healthz", self.url)).send().await;
            if healthy.is_ok_and(|r| r.status() == 204) {
                return Ok(());
            }
            if self.child.try_wait().expect("daprd's state").is_some() {
                return Err(self.log_tail(40));
            }
            assert!(
                started.elapsed() < DEADLINE,
                "daprd {} not healthy after {DEADLINE:?}:\n{}",
                self.app_id,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Waits for daprd to exit by itself (e.g. a component that fails to initialise).
    pub async fn wait_for_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.expect("daprd's exit status"),
            Err(_) => panic!("daprd {} still runs after {deadline:?}:\n{}", self.app_id, self.log_tail(20)),
        }
    }

    /// SIGTERM, as `dapr run` or Kubernetes stops it, and waits until it has exited.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
            Ok(status) => status.expect("daprd's exit status"),
            Err(_) => {
                let _ = self.child.start_kill();
                panic!("daprd {} did not stop within {STOP_DEADLINE:?} of SIGTERM:\n{}", self.app_id, self.log_tail(20))
            }
        }
    }

    /// SIGKILL: a crash, with no chance to acknowledge or commit anything.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid; it is still ours until we reap it.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }

    /// daprd's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// daprd's resident memory in KiB (from /proc), for the figures the tests print.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Daprd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the end of daprd {}'s log ---\n{}", self.app_id, self.log_tail(30));
        }
        let _ = self.child.start_kill();
    }
}
