//! The `devsidecar` binary as users run it: `kill -9` mid-delivery, SIGTERM, a broken resource
//! file, and `devsidecar run -f` starting two apps that exchange a message.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use redis::AsyncCommands;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{DEADLINE, HANG, TempDir, TestApp, eventually, redis, redis_component, unique};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Every line a child prints on stdout and stderr, collected as it comes.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    fn capture(&self, child: &mut Child) {
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        for stream in [Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>, Box::new(stderr)] {
            let lines = self.0.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    async fn wait_for_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        eventually(what, || async { self.0.lock().unwrap().iter().find(|l| matches(l)).cloned() }).await
    }
}

/// A `devsidecar` process for one app.
struct SidecarProcess {
    child: Child,
    url: String,
    output: Output,
}

impl SidecarProcess {
    async fn start(app_id: &str, app_port: u16, resources: &Path) -> Self {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_devsidecar"))
            .args(["--app-id", app_id, "--app-port", &app_port.to_string(), "--dapr-http-port", &port.to_string()])
            .arg("--resources-path")
            .arg(resources)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the devsidecar binary starts");
        let output = Output::default();
        output.capture(&mut child);
        let process = Self { child, url: format!("http://127.0.0.1:{port}"), output };
        let http = reqwest::Client::new();
        eventually("the sidecar process to be ready", || async {
            let response = http.get(format!("{}/v1.0/healthz", process.url)).send().await.ok()?;
            (response.status() == 204).then_some(())
        })
        .await;
        process
    }

    async fn signal(&mut self, signal: libc::c_int) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running") as libc::pid_t;
        // SAFETY: kill(2) on our own child, which has not been reaped yet, with a valid signal.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        tokio::time::timeout(DEADLINE, self.child.wait()).await.expect("the process exits").unwrap()
    }
}

#[tokio::test]
async fn a_message_in_flight_when_the_sidecar_is_killed_is_delivered_after_restart() {
    let topic = unique("killed");
    let app_id = unique("survivor");
    let resources = TempDir::new();
    // Reclaim entries idle for 1 s, looking every 200 ms (daprd reads this one as milliseconds).
    resources.write(
        "pubsub.yaml",
        &redis_component(
            "  - name: processingTimeout\n    value: 1s\n  - name: redeliverInterval\n    value: \"200\"\n",
        ),
    );
    let subscription = json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}]);
    let stuck_app = TestApp::start(subscription.clone()).await;
    stuck_app.answer_next([(StatusCode::from_u16(HANG).unwrap(), String::new())]);
    let mut first = SidecarProcess::start(&app_id, stuck_app.addr.port(), &resources.0).await;
    let published = reqwest::Client::new()
        .post(format!("{}/v1.0/publish/pubsub/{topic}", first.url))
        .json(&json!({"survives": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 204);
    stuck_app.wait_for_deliveries(1).await;
    let killed = first.signal(libc::SIGKILL).await;
    assert!(!killed.success());

    let mut redis = redis().await;
    let pending: redis::streams::StreamPendingReply = redis.xpending(&topic, &app_id).await.unwrap();
    assert_eq!(pending.count(), 1, "the killed sidecar left the entry unacknowledged");

    let healthy_app = TestApp::start(subscription).await;
    let mut second = SidecarProcess::start(&app_id, healthy_app.addr.port(), &resources.0).await;
    let redelivered = healthy_app.wait_for_deliveries(1).await;
    assert_eq!(redelivered[0].json()["data"], json!({"survives": true}));
    eventually("the redelivered entry to be acknowledged", || async {
        let pending: redis::streams::StreamPendingReply = redis.clone().xpending(&topic, &app_id).await.unwrap();
        (pending.count() == 0).then_some(())
    })
    .await;
    let stopped = second.signal(libc::SIGTERM).await;
    assert!(stopped.success(), "SIGTERM is a clean stop: {stopped:?}\n{}", second.output.text());
    let _: () = redis.del(&topic).await.unwrap();
}

#[tokio::test]
async fn a_broken_resource_file_stops_the_sidecar_naming_file_and_field() {
    let resources = TempDir::new();
    resources.write("pubsub.yaml", &redis_component("  - name: queueDepth\n    valeu: \"5\"\n"));
    let output = Command::new(env!("CARGO_BIN_EXE_devsidecar"))
        .args(["--app-id", "broken", "--dapr-http-port", &free_port().to_string(), "--resources-path"])
        .arg(&resources.0)
        .output();
    let output = tokio::time::timeout(DEADLINE, output).await.expect("it exits").unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("pubsub.yaml") && stderr.contains("spec.metadata[1]") && stderr.contains("valeu"),
        "{stderr}"
    );
}

/// The example app, built by `cargo test` with the other targets (built here if a filtered
/// run skipped it).
fn pingpong_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps.parent().unwrap().parent().unwrap().join("examples").join("pingpong");
    if !path.exists() {
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "devsidecar", "--example", "pingpong"])
            .status()
            .unwrap();
        assert!(built.success(), "building the pingpong example failed");
    }
    path
}

#[tokio::test]
async fn a_run_file_starts_two_apps_that_exchange_a_message() {
    let (ping_topic, pong_topic) = (unique("ping"), unique("pong"));
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.0.join("components")).unwrap();
    std::fs::write(dir.0.join("components/pubsub.yaml"), redis_component("")).unwrap();
    let binary = pingpong_binary();
    let run_file = format!(
        "version: 1
common:
  resourcesPaths: [./components]
  env:
    PUBSUB_NAME: pubsub
apps:
  - appID: ping
    appDirPath: .
    appPort: {ping_port}
    command: [\"{binary}\"]
    env: {{SUBSCRIBE_TOPIC: {pong_topic}, START_TOPIC: {ping_topic}, START_TEXT: hello}}
  - appID: pong
    appDirPath: .
    appPort: {pong_port}
    command: [\"{binary}\"]
    env: {{SUBSCRIBE_TOPIC: {ping_topic}, REPLY_TOPIC: {pong_topic}}}
",
        ping_port = free_port(),
        pong_port = free_port(),
        binary = binary.display(),
    );
    dir.write("dapr.yaml", &run_file);
    let mut run = Command::new(env!("CARGO_BIN_EXE_devsidecar"))
        .args(["run", "-f"])
        .arg(&dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = Output::default();
    output.capture(&mut run);

    output.wait_for_line("pong to receive hello", |l| l.starts_with("== APP - pong == received \"hello\"")).await;
    output
        .wait_for_line("ping to receive the answer", |l| l.starts_with("== APP - ping == received \"hello back\""))
        .await;

    let pid = run.id().unwrap() as libc::pid_t;
    // SAFETY: kill(2) on our own child, not yet reaped, with a valid signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(DEADLINE, run.wait()).await.expect("run stops on SIGTERM").unwrap();
    assert!(status.success(), "{status:?}\n{}", output.text());
    for app in ["ping", "pong"] {
        let stopped = format!("== APP - {app} == stopped");
        output.wait_for_line(&format!("{app} to stop cleanly"), |l| l == stopped).await;
    }
    let mut redis = redis().await;
    let _: () = redis.del(&[&ping_topic, &pong_topic]).await.unwrap();
}
