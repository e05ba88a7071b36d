//! The FastAPI comparison peer (bench/fastapi-peer) as a child process: uvicorn with N worker
//! processes, started with the venv python of `scripts/ensure-fastapi-peer.sh` (`BENCH_PEER`),
//! ready once every worker has answered its health check, stopped (the whole process group) at
//! the end or when dropped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the peer may take to import, apply its schema and start every worker.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a graceful stop (SIGTERM to the group) may take before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// The peer's sources.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/fastapi-peer")
}

/// The schema it applies: the todo service's own migrations.
fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

pub struct PeerProcess {
    /// uvicorn's supervisor; its pid is the process group of every worker.
    child: tokio::process::Child,
    pgid: i32,
    pub workers: usize,
    pub endpoint: String,
    health: String,
    log: PathBuf,
    stopped: bool,
}

impl PeerProcess {
    /// Starts uvicorn with `workers` workers against `database_url`, publishing to the sidecar
    /// on `dapr_port`. Returns once it is spawned; [`Self::wait_ready`] waits for the workers.
    pub fn start(python: &Path, workers: usize, database_url: &str, dapr_port: u16) -> anyhow::Result<Self> {
        let dir = peer_dir().canonicalize().context("finding bench/fastapi-peer")?;
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("todo-bench-fastapi-{}.log", uuid::Uuid::new_v4().simple()));
        let output = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = tokio::process::Command::new(python);
        command
            .args(["-m", "uvicorn", "todo_peer.app:app", "--app-dir"])
            .arg(&dir)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--workers", &workers.to_string()])
            .args(["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"])
            .current_dir(&dir)
            // Nothing of this process's environment (RELAY_*, DATABASE_URL, …) reaches the peer
            // but what is set here.
            .env_clear()
            .envs(
                ["PATH", "HOME", "LANG", "TMPDIR", "PEER_GROUP_COMMIT"]
                    .iter()
                    .filter_map(|k| Some((k, std::env::var_os(k)?))),
            )
            .env("DATABASE_URL", database_url)
            .env("MIGRATIONS_DIR", migrations_dir())
            .env("DAPR_HTTP_PORT", dapr_port.to_string())
            .env("PUBSUB_NAME", "pubsub")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            // A group of its own, so the workers are stopped with the supervisor.
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("starting uvicorn with {}", python.display()))?;
        let pgid = child.id().context("the peer's pid")? as i32;
        Ok(Self {
            child,
            pgid,
            workers,
            endpoint: format!("http://127.0.0.1:{port}/todos"),
            health: format!("http://127.0.0.1:{port}/healthz"),
            log,
            stopped: false,
        })
    }

    /// Polls `/healthz`, a new connection each time, until every worker has answered (each
    /// says its pid), within [`READY_DEADLINE`].
    pub async fn wait_ready(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let give_up = Instant::now() + READY_DEADLINE;
        let mut seen = HashSet::new();
        while seen.len() < self.workers {
            if let Some(status) = self.child.try_wait()? {
                bail!("the peer exited ({status}) before it was ready:\n{}", self.log_tail());
            }
            if Instant::now() > give_up {
                bail!(
                    "only {} of {} peer workers answered within {READY_DEADLINE:?}:\n{}",
                    seen.len(),
                    self.workers,
                    self.log_tail()
                );
            }
            let answer = client.get(&self.health).header(reqwest::header::CONNECTION, "close").send().await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    let body: serde_json::Value = response.json().await.context("the peer's /healthz")?;
                    seen.insert(body["pid"].as_u64().context("a pid in the peer's /healthz")?);
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Ok(())
    }

    /// SIGTERM to the group (uvicorn's graceful shutdown), SIGKILL past [`STOP_DEADLINE`];
    /// waits for the supervisor either way.
    pub async fn stop(mut self) {
        signal_group(self.pgid, "TERM");
        if tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await.is_err() {
            println!("warning: the FastAPI peer did not stop within {STOP_DEADLINE:?}; killing it");
        }
        signal_group(self.pgid, "KILL");
        let _ = self.child.kill().await;
        self.stopped = true;
        let _ = std::fs::remove_file(&self.log);
    }

    /// The end of the peer's output, for an error.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("[{}]\n{}", self.log.display(), lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for PeerProcess {
    /// `kill_on_drop` ends the supervisor only; its workers are ended here.
    fn drop(&mut self) {
        if !self.stopped {
            signal_group(self.pgid, "KILL");
        }
    }
}

/// `kill -s SIGNAL -- -PGID` (procps' kill: this crate has no libc binding of its own).
fn signal_group(pgid: i32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A loopback port nothing listens on (uvicorn binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
