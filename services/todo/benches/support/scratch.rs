//! What the benchmarks share: scratch databases (fresh SQLite files or PostgreSQL databases,
//! removed afterwards) and their settings from the environment. Each bench target is a crate of
//! its own; they include this file with `#[path]`.

use std::time::Duration;

use anyhow::Context;
use reqwest::Url;
use sqlx::Connection;

/// Where fresh databases come from, and what to remove afterwards.
pub enum Scratch {
    Sqlite { dir: std::path::PathBuf },
    Postgres { admin_url: Url, created: Vec<String> },
}

impl Scratch {
    pub fn sqlite() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("todo-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self::Sqlite { dir })
    }

    /// Checks the server answers (within 5 s) before anything is created on it.
    pub async fn postgres(admin_url: &str) -> anyhow::Result<Self> {
        let admin_url = Url::parse(admin_url).context("BENCH_POSTGRES_URL is not a URL")?;
        let connect = sqlx::PgConnection::connect(admin_url.as_str());
        let conn = tokio::time::timeout(Duration::from_secs(5), connect).await.context("connection timed out")??;
        conn.close().await?;
        Ok(Self::Postgres { admin_url, created: Vec::new() })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }

    /// The URL of a new, empty database.
    pub async fn fresh_database(&mut self, label: &str) -> anyhow::Result<String> {
        match self {
            Self::Sqlite { dir } => Ok(format!("sqlite://{}", dir.join(format!("{label}.db")).display())),
            Self::Postgres { admin_url, created } => {
                let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
                admin_execute(admin_url, &format!("CREATE DATABASE {name}")).await?;
                created.push(name.clone());
                let mut url = admin_url.clone();
                url.set_path(&format!("/{name}"));
                Ok(url.to_string())
            }
        }
    }

    /// Best effort: a failure is reported, not fatal.
    pub async fn cleanup(&mut self) {
        match self {
            Self::Sqlite { dir } => {
                if let Err(error) = std::fs::remove_dir_all(&*dir) {
                    println!("warning: could not remove {}: {error}", dir.display());
                }
            }
            Self::Postgres { admin_url, created } => {
                for name in created.drain(..) {
                    // FORCE: a pool that did not close cleanly must not keep the database alive.
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if let Err(error) = admin_execute(admin_url, &drop).await {
                        println!("warning: could not drop database {name}: {error:#}");
                    }
                }
            }
        }
    }
}

/// Runs one statement that cannot run in a transaction (CREATE/DROP DATABASE).
pub async fn admin_execute(admin_url: &Url, sql: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(admin_url.as_str()).await.context("connecting to PostgreSQL")?;
    sqlx::raw_sql(sql).execute(&mut conn).await.with_context(|| format!("running {sql:?}"))?;
    conn.close().await?;
    Ok(())
}

/// The URL without its password, for printing.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<BENCH_POSTGRES_URL>".into(),
    }
}

/// A whole number from the environment variable `name`, or `default` when it is unset.
pub fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(raw) => raw.trim().parse().with_context(|| format!("{name}={raw:?} is not a number")),
        Err(_) => Ok(default),
    }
}
