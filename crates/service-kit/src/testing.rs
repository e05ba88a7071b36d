//! Test harness shared by the services' integration tests (feature `testing`): a fresh
//! database per test, on SQLite (a temp file) or PostgreSQL (a database of its own on
//! `TEST_POSTGRES_URL`, dropped afterwards), and polling with a deadline instead of sleeping.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

pub mod daprd;
pub mod http_contract;
pub mod jaeger;
pub mod prometheus;
pub mod schemathesis;

use crate::db::dialect::Backend;
use crate::db::{Database, Migrations};

/// Runs each listed test (an `async fn(Backend)`) once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::db::dialect::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::db::dialect::Backend::Postgres).await } )*
        }
    };
}

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A tool the tests run: `$variable` when set (what `make test` passes), else the path an
/// `ensure-*.sh` script of the repository prints on its last line (finding, or building or
/// installing once, the pinned version). Fails the test when the script does.
pub fn tool(variable: &str, script: &str, args: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let script = daprd::repository().join(script);
    let output = std::process::Command::new(&script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", script.display()));
    assert!(output.status.success(), "{} failed (set {variable} to use another)", script.display());
    let stdout = String::from_utf8(output.stdout).expect("a path");
    PathBuf::from(stdout.lines().last().unwrap_or_else(|| panic!("{} printed no path", script.display())).trim())
}

/// Polls `check` until it yields a value, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_or(what, deadline, Duration::from_millis(20), || {
        let checked = check();
        async move { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// Polls `check` every `every` until it yields `Ok`; after `deadline` fails the test with what
/// its last `Err` said (the state it saw, for the failure message).
pub async fn eventually_or<T, F, Fut>(what: &str, deadline: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = tokio::time::Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(
                started.elapsed() < deadline,
                "timed out after {deadline:?} waiting for {what}{}",
                if last.is_empty() { String::new() } else { format!("; last seen: {last}") }
            ),
        }
        tokio::time::sleep(every).await;
    }
}

/// A database of its own for one test. PostgreSQL databases are dropped when the test ends.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    postgres_name: Option<String>,
    _sqlite_dir: Option<TempDir>,
}

fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = TempDir::new();
                let url = format!("sqlite://{}", dir.path.join("test.db").display());
                Self { backend, url, postgres_name: None, _sqlite_dir: Some(dir) }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("svc_test_{}", Uuid::new_v4().simple());
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} (TEST_POSTGRES_URL) is needed for the postgres tests: {e}")
                });
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
                let (base, _) = admin.rsplit_once('/').expect("a database URL has a path");
                Self { backend, url: format!("{base}/{name}"), postgres_name: Some(name), _sqlite_dir: None }
            }
        }
    }

    /// A connection of the test's own (migrations run), for inspecting or arranging state.
    pub async fn connect(&self, migrations: Migrations) -> Database {
        Database::connect(&self.url, 4, migrations).await.expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else { return };
        // Drop runs outside async context; a short-lived thread with its own runtime does the
        // cleanup. FORCE disconnects pools the test may not have closed.
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.ok()
            })
        })
        .join();
    }
}

pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("svc-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
