//! `devsidecar run -f`: Dapr's multi-app run file (contract §9.1). Each app gets its own
//! sidecar (in this process) and is started as a child process with the environment the Dapr
//! CLI gives it; each output line is prefixed with the app id. Ctrl-C/SIGTERM stops the apps
//! (SIGTERM, then SIGKILL after a grace period) and then the sidecars.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::sidecar::{Sidecar, SidecarConfig, SidecarError};

/// How long an app gets between SIGTERM and SIGKILL.
const APP_STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("app {app}: {detail}")]
    App { app: String, detail: String },
    #[error("app {app}: {source}")]
    Sidecar {
        app: String,
        #[source]
        source: Box<SidecarError>,
    },
}

/// Settings allowed both in `common` and in each app; an app's own value wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shared {
    config_file_path: Option<String>,
    app_protocol: Option<String>,
    resources_path: Option<String>,
    resources_paths: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct RunFile {
    version: Option<u32>,
    #[serde(default)]
    common: Option<Shared>,
    #[serde(default)]
    apps: Vec<AppEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppEntry {
    app_dir_path: Option<String>,
    #[serde(rename = "appID")]
    app_id: Option<String>,
    app_channel_address: Option<String>,
    app_port: Option<u16>,
    #[serde(rename = "daprHTTPPort")]
    dapr_http_port: Option<u16>,
    #[serde(rename = "daprGRPCPort")]
    dapr_grpc_port: Option<u16>,
    metrics_port: Option<u16>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(flatten)]
    shared: Shared,
}

/// One app, resolved: every path absolute and checked, every port chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPlan {
    pub app_id: String,
    pub app_dir: PathBuf,
    pub command: Vec<String>,
    pub app_port: Option<u16>,
    pub app_channel_address: String,
    pub app_protocol: String,
    pub dapr_http_port: u16,
    pub dapr_grpc_port: u16,
    pub metrics_port: u16,
    pub resources_paths: Vec<PathBuf>,
    pub config_path: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
}

impl AppPlan {
    /// What the Dapr CLI adds to the app's environment (on top of its own).
    pub fn app_environment(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("APP_ID".to_owned(), self.app_id.clone()),
            ("APP_CHANNEL_ADDRESS".to_owned(), self.app_channel_address.clone()),
            ("APP_PROTOCOL".to_owned(), self.app_protocol.clone()),
            ("DAPR_HTTP_PORT".to_owned(), self.dapr_http_port.to_string()),
            ("DAPR_GRPC_PORT".to_owned(), self.dapr_grpc_port.to_string()),
            ("DAPR_METRICS_PORT".to_owned(), self.metrics_port.to_string()),
        ]);
        if let Some(port) = self.app_port {
            env.insert("APP_PORT".to_owned(), port.to_string());
        }
        env.extend(self.env.clone());
        env
    }
}

/// Reads and resolves a run file (or a directory holding `dapr.yaml`).
pub fn plan(run_file: &Path) -> Result<Vec<AppPlan>, RunError> {
    let file = if run_file.is_dir() { run_file.join("dapr.yaml") } else { run_file.to_path_buf() };
    let error = |detail: String| RunError::File { path: file.clone(), detail };
    let text = std::fs::read_to_string(&file).map_err(|e| error(e.to_string()))?;
    let parsed: RunFile = serde_yaml_ng::from_str(&text).map_err(|e| error(e.to_string()))?;
    if parsed.version.unwrap_or(0) == 0 {
        return Err(error("version is required (version: 1)".into()));
    }
    if parsed.apps.is_empty() {
        return Err(error("apps is empty".into()));
    }
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = base.canonicalize().unwrap_or(base);
    let common = parsed.common.unwrap_or_default();
    parsed.apps.into_iter().map(|app| resolve_app(app, &common, &base, &file)).collect()
}

fn resolve_app(app: AppEntry, common: &Shared, base: &Path, file: &Path) -> Result<AppPlan, RunError> {
    let dir = app
        .app_dir_path
        .as_deref()
        .ok_or_else(|| RunError::File { path: file.to_path_buf(), detail: "every app needs appDirPath".into() })?;
    let app_dir = existing(&base.join(expand_home(dir)), file)?;
    let app_id = app
        .app_id
        .clone()
        .unwrap_or_else(|| app_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let fail = |detail: String| RunError::App { app: app_id.clone(), detail };
    // Paths in an app are relative to its appDirPath, paths in common to the run file.
    let resources_paths = match resources_of(&app.shared) {
        Some(paths) => paths.iter().map(|p| existing(&app_dir.join(expand_home(p)), file)).collect::<Result<_, _>>()?,
        None if app_dir.join(".dapr/resources").is_dir() => vec![app_dir.join(".dapr/resources")],
        None => match resources_of(common) {
            Some(paths) => {
                paths.iter().map(|p| existing(&base.join(expand_home(p)), file)).collect::<Result<_, _>>()?
            }
            None => home_default(".dapr/components").into_iter().collect(),
        },
    };
    let config_path = match (&app.shared.config_file_path, &common.config_file_path) {
        (Some(own), _) => Some(existing(&app_dir.join(expand_home(own)), file)?),
        (None, _) if app_dir.join(".dapr/config.yaml").is_file() => Some(app_dir.join(".dapr/config.yaml")),
        (None, Some(shared)) => Some(existing(&base.join(expand_home(shared)), file)?),
        (None, None) => home_default(".dapr/config.yaml"),
    };
    if app.command.is_empty() {
        return Err(fail("command is empty (a YAML list such as [\"cargo\", \"run\"])".into()));
    }
    let mut env = common.env.clone();
    env.extend(app.shared.env.clone());
    Ok(AppPlan {
        app_id: app_id.clone(),
        app_dir,
        command: app.command,
        app_port: app.app_port,
        app_channel_address: app.app_channel_address.unwrap_or_else(|| "127.0.0.1".into()),
        app_protocol: app.shared.app_protocol.or(common.app_protocol.clone()).unwrap_or_else(|| "http".into()),
        // Unset ports are random free ports, as the CLI picks them: apps must read DAPR_HTTP_PORT.
        dapr_http_port: app.dapr_http_port.map_or_else(free_port, Ok).map_err(|e| fail(e.to_string()))?,
        dapr_grpc_port: app.dapr_grpc_port.map_or_else(free_port, Ok).map_err(|e| fail(e.to_string()))?,
        metrics_port: app.metrics_port.map_or_else(free_port, Ok).map_err(|e| fail(e.to_string()))?,
        resources_paths,
        config_path,
        env,
    })
}

fn resources_of(shared: &Shared) -> Option<Vec<String>> {
    shared.resources_paths.clone().filter(|p| !p.is_empty()).or_else(|| shared.resources_path.clone().map(|p| vec![p]))
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

fn home_default(relative: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(relative)).filter(|p| p.exists())
}

fn existing(path: &Path, file: &Path) -> Result<PathBuf, RunError> {
    path.canonicalize()
        .map_err(|_| RunError::File { path: file.to_path_buf(), detail: format!("{} does not exist", path.display()) })
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Starts every app with its sidecar and runs until `shutdown` or until every app has exited.
pub async fn run(run_file: &Path, shutdown: CancellationToken) -> Result<(), RunError> {
    let plans = plan(run_file)?;
    let sidecars_stop = CancellationToken::new();
    let mut sidecars = Vec::new();
    let mut apps = Vec::new();
    for plan in &plans {
        let sidecar = Sidecar::build(sidecar_config(plan))
            .await
            .map_err(|source| RunError::Sidecar { app: plan.app_id.clone(), source: Box::new(source) })?;
        let span = tracing::info_span!("daprd", app_id = %plan.app_id);
        sidecars.push(tokio::spawn(sidecar.run(sidecars_stop.clone()).instrument(span)));
        apps.push((plan.app_id.clone(), start_app(plan)?));
    }
    let all_exited = async {
        for (app_id, child) in &mut apps {
            let status = child.wait().await;
            tracing::info!(app_id = %app_id, ?status, "app exited");
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {
            for (app_id, child) in &mut apps {
                stop_app(app_id, child).await;
            }
        }
        _ = all_exited => tracing::info!("every app has exited"),
    }
    sidecars_stop.cancel();
    for sidecar in sidecars {
        let _ = sidecar.await;
    }
    Ok(())
}

fn sidecar_config(plan: &AppPlan) -> SidecarConfig {
    SidecarConfig {
        app_id: plan.app_id.clone(),
        app_port: plan.app_port,
        app_channel_address: plan.app_channel_address.clone(),
        http_port: plan.dapr_http_port,
        listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        resources_paths: plan.resources_paths.clone(),
        config_path: plan.config_path.clone(),
        // daprd inherits the CLI's environment, so exported tokens apply to every sidecar.
        api_token: std::env::var("DAPR_API_TOKEN").ok().filter(|t| !t.is_empty()),
        app_api_token: std::env::var("APP_API_TOKEN").ok().filter(|t| !t.is_empty()),
    }
}

fn start_app(plan: &AppPlan) -> Result<Child, RunError> {
    let (program, args) = plan.command.split_first().expect("checked non-empty in plan()");
    let mut child = Command::new(program)
        .args(args)
        .current_dir(&plan.app_dir)
        .envs(plan.app_environment())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RunError::App { app: plan.app_id.clone(), detail: format!("could not start {program:?}: {e}") })?;
    let prefix = format!("== APP - {} ==", plan.app_id);
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_lines(stdout, prefix.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_lines(stderr, prefix));
    }
    Ok(child)
}

/// The app's output, line by line, prefixed with its id (the Dapr CLI's format).
async fn forward_lines(stream: impl tokio::io::AsyncRead + Unpin, prefix: String) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{prefix} {line}");
    }
}

async fn stop_app(app_id: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) and a valid signal.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(APP_STOP_GRACE, child.wait()).await {
        Ok(status) => tracing::info!(app_id, ?status, "app stopped"),
        Err(_) => {
            tracing::warn!(app_id, "app ignored SIGTERM; killing it");
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("devsidecar-run-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn resolves_paths_defaults_and_environment() {
        let dir = temp_dir();
        std::fs::create_dir_all(dir.join("components")).unwrap();
        std::fs::create_dir_all(dir.join("services/todo")).unwrap();
        std::fs::create_dir_all(dir.join("services/notification/.dapr/resources")).unwrap();
        write(&dir, "dapr/config.yaml", "kind: Configuration");
        write(
            &dir,
            "dapr.yaml",
            r#"
version: 1
common:
  resourcesPaths: ["./components"]
  configFilePath: ./dapr/config.yaml
  env:
    RUST_LOG: info
    SHARED: common
apps:
  - appDirPath: ./services/todo
    appPort: 8080
    daprHTTPPort: 3500
    command: ["cargo", "run"]
    env:
      SHARED: app
  - appID: notifier
    appDirPath: ./services/notification
    command: ["./notification"]
"#,
        );
        let plans = plan(&dir).unwrap();
        let (todo, notifier) = (&plans[0], &plans[1]);
        assert_eq!(todo.app_id, "todo", "appID defaults to the directory's name");
        assert_eq!(todo.resources_paths, [dir.join("components").canonicalize().unwrap()]);
        assert_eq!(todo.config_path, Some(dir.join("dapr/config.yaml").canonicalize().unwrap()));
        let env = todo.app_environment();
        assert_eq!(env["APP_ID"], "todo");
        assert_eq!(env["APP_PORT"], "8080");
        assert_eq!(env["DAPR_HTTP_PORT"], "3500");
        assert_eq!(env["SHARED"], "app", "app env overrides common env");
        assert_eq!(env["RUST_LOG"], "info");
        assert_eq!(notifier.app_id, "notifier");
        assert_eq!(
            notifier.resources_paths,
            [dir.join("services/notification/.dapr/resources")],
            "the app's .dapr/resources wins over common"
        );
        assert_ne!(notifier.dapr_http_port, 0, "an unset port is a free one");
        assert!(!notifier.app_environment().contains_key("APP_PORT"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reports_what_is_wrong_with_a_run_file() {
        let dir = temp_dir();
        let no_version = write(&dir, "a.yaml", "apps: [{appDirPath: ., command: [x]}]");
        assert!(plan(&no_version).unwrap_err().to_string().contains("version"));
        let missing_dir = write(&dir, "b.yaml", "version: 1\napps: [{appDirPath: ./nope, command: [x]}]");
        assert!(plan(&missing_dir).unwrap_err().to_string().contains("does not exist"));
        let no_command = write(&dir, "c.yaml", "version: 1\napps: [{appDirPath: .}]");
        assert!(plan(&no_command).unwrap_err().to_string().contains("command"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
