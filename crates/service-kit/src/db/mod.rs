//! Database connection: SQLite (embedded default) or PostgreSQL, chosen by the URL scheme.
//!
//! The services use sqlx's `Any` driver so that one set of SQL statements serves both backends
//! (docs/architecture.md, "Design notes", says why). Ids and timestamps are canonical text on
//! both ([`column`] decodes them); every place where the SQL must differ is in [`dialect`].

pub mod column;
pub mod dialect;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

use sqlx::migrate::Migrator;

use self::dialect::Backend;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid configuration: DATABASE_URL: {0}")]
    Url(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("creating the SQLite directory: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T, E = DbError> = std::result::Result<T, E>;

/// A service's embedded migrations per backend (`sqlx::migrate!("./migrations/…")`): one set,
/// or several run as one sequence (the consumers' shared bookkeeping, then their own tables),
/// so versions must not repeat across the sets.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub sqlite: &'static [&'static Migrator],
    pub postgres: &'static [&'static Migrator],
}

/// Several embedded migration sets as one source, in version order.
#[derive(Debug)]
struct Combined(Vec<sqlx::migrate::Migration>);

impl sqlx::migrate::MigrationSource<'static> for Combined {
    fn resolve(
        self,
    ) -> futures::future::BoxFuture<'static, Result<Vec<sqlx::migrate::Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            let mut migrations = self.0;
            migrations.sort_by_key(|m| m.version);
            if let Some(pair) = migrations.windows(2).find(|pair| pair[0].version == pair[1].version) {
                return Err(format!("migration version {} is defined twice", pair[0].version).into());
            }
            Ok(migrations)
        })
    }
}

/// The pool settings of every pool here.
fn pool_options() -> AnyPoolOptions {
    // No ping before every acquire (sqlx's default): on PostgreSQL that is a round trip per
    // statement outside a transaction, a tenth of the service's CPU under load. A connection
    // that broke while idle fails its next statement instead, which sqlx then closes; callers
    // already treat that as the database being unavailable.
    AnyPoolOptions::new().acquire_timeout(Duration::from_secs(5)).test_before_acquire(false).after_connect(
        |conn, _meta| {
            Box::pin(async move {
                if conn.backend_name() == "SQLite" {
                    // WAL lets readers run while the writer commits; NORMAL synchronous is durable
                    // across application crashes (only an OS crash can lose the last commits), and
                    // busy_timeout covers other processes on the file.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                }
                Ok(())
            })
        },
    )
}

/// Two pools over the same database. On PostgreSQL they are the same pool. On SQLite writes go
/// through a single connection: SQLite allows one writer at a time anyway, and queueing writers
/// in the pool (instead of letting them collide on the file lock) avoids `SQLITE_BUSY` failures
/// when a read transaction tries to upgrade to a write.
#[derive(Debug, Clone)]
pub struct Database {
    pub backend: Backend,
    pub reader: AnyPool,
    pub writer: AnyPool,
}

impl Database {
    /// Connects, creating the SQLite file (and its directory) on first start, and runs the
    /// service's migrations.
    pub async fn connect(url: &str, max_connections: u32, migrations: Migrations) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(DbError::Url("must start with postgres://, postgresql:// or sqlite:".into()));
        };
        let absolute = match backend {
            Backend::Sqlite => absolute_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let url = absolute.as_str();
        let options = parse_url(url)?;
        let database = match backend {
            Backend::Sqlite => {
                ensure_sqlite_directory(url)?;
                let writer = pool_options().max_connections(1).connect_with(parse_url(&with_create(url))?).await?;
                let reader = pool_options().max_connections(max_connections.max(1)).connect_with(options).await?;
                Self { backend, reader, writer }
            }
            Backend::Postgres => {
                let pool = pool_options().max_connections(max_connections.max(2)).connect_with(options).await?;
                Self { backend, reader: pool.clone(), writer: pool }
            }
        };
        let sets = match backend {
            Backend::Sqlite => migrations.sqlite,
            Backend::Postgres => migrations.postgres,
        };
        let combined = Combined(sets.iter().flat_map(|set| set.iter().cloned()).collect());
        Migrator::new(combined).await?.run(&database.writer).await?;
        Ok(database)
    }

    /// Begins a transaction on the writer pool; see [`begin`].
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        begin(&self.writer).await
    }

    /// For `/readyz`: can we run a statement right now?
    pub async fn ping(&self) -> Result<()> {
        self.reader.execute("SELECT 1").await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// The same database through a PostgreSQL pool of its own, of `max_connections`, for a
    /// task that runs statements all the time (the todo service's relay). The pool hands its
    /// idle connections out in turn, so in a shared pool every connection prepares and plans
    /// every statement of every task, and each backend runs cold (docs/performance.md). On
    /// SQLite the same pools: the one writer connection is shared by design.
    pub fn with_own_pool(&self, max_connections: u32) -> Database {
        match self.backend {
            Backend::Sqlite => self.clone(),
            Backend::Postgres => {
                let options = (*self.writer.connect_options()).clone();
                let pool = pool_options().max_connections(max_connections.max(1)).connect_lazy_with(options);
                Self { backend: self.backend, reader: pool.clone(), writer: pool }
            }
        }
    }
}

/// Begins a transaction on `pool` in a task of its own, so that the caller being cancelled (its
/// HTTP client hung up, a timeout fired) can never cut the `BEGIN` round trip short.
///
/// sqlx 0.8.6 and 0.9.0 are not cancel-safe there on PostgreSQL: a future dropped while
/// `BEGIN` is on the wire leaves the session inside a transaction that sqlx does not know of,
/// and the pool lends that connection to the next borrower, whose statements then run (and
/// hold their locks) inside it (upstream transact-rs/sqlx#4393, fixed by #4394 after 0.9.0).
/// Here the task always reads the answer to `BEGIN`; if the caller is gone by then, the
/// transaction it hands back is dropped, which sqlx rolls back as it should.
pub async fn begin(pool: &AnyPool) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin().await }).await {
        Ok(begun) => begun,
        Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
        // Only a runtime shutting down cancels the task; there is nothing to begin on then.
        Err(_) => Err(sqlx::Error::PoolClosed),
    }
}

/// Runs `work` to its end in a task of its own and waits for it. A unit of work started for a
/// request completes (commits or rolls back) even when the request is dropped half-way because
/// its client went away: what the client may already have been promised is not abandoned, and
/// nothing is left for the next borrower of the connection.
pub async fn run_to_completion<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    match tokio::spawn(work).await {
        Ok(done) => done,
        Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
        Err(_) => panic!("a unit of work was cancelled by the runtime shutting down"),
    }
}

/// Whether the database is unreachable or overloaded (worth retrying later), as opposed to a
/// statement that failed (a bug on our side).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))
        || error
            .as_database_error()
            .and_then(|e| e.code())
            // SQLITE_BUSY / SQLITE_LOCKED (and BUSY_RECOVERY); PostgreSQL class 57 (operator
            // intervention, e.g. shutdown) and 53 (insufficient resources).
            .is_some_and(|code| {
                matches!(code.as_ref(), "5" | "6" | "517") || code.starts_with("57") || code.starts_with("53")
            })
}

fn parse_url(url: &str) -> Result<AnyConnectOptions> {
    Ok(AnyConnectOptions::from_str(url)
        .map_err(|e| DbError::Url(e.to_string()))?
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500)))
}

/// `sqlite://<path>` with the path made absolute (against the working directory). sqlx parses
/// the string as a URL, where a relative path such as `../data/x.db` would lose its `..` to the
/// host part and open the wrong file, or none.
fn absolute_sqlite_url(url: &str) -> Result<String> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, format!("?{query}")),
        None => (rest, String::new()),
    };
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_owned());
    }
    let absolute = std::path::absolute(path)?;
    Ok(format!("sqlite://{}{query}", absolute.display()))
}

/// The writer creates the file if it is missing (`mode=rwc`); readers open it only after the
/// writer has run the migrations.
fn with_create(url: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    if query.split('&').any(|pair| pair.starts_with("mode=")) {
        return url.to_owned();
    }
    format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
}

fn ensure_sqlite_directory(url: &str) -> Result<()> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return Err(DbError::Url(
            "SQLite needs a file (readers and the writer share it through separate connections)".into(),
        ));
    }
    if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

    #[tokio::test]
    async fn a_relative_sqlite_path_is_created_where_it_points() {
        let dir = std::env::temp_dir().join(format!("service-kit-{}", uuid::Uuid::new_v4().simple()));
        // From the working directory up to the root, then down into the temp dir.
        let up = "../".repeat(std::env::current_dir().unwrap().components().count() - 1);
        let url = format!("sqlite://{up}{}/nested/app.db", dir.strip_prefix("/").unwrap().display());
        const MIGRATIONS: Migrations = Migrations { sqlite: &[&NO_MIGRATIONS], postgres: &[&NO_MIGRATIONS] };
        let db = Database::connect(&url, 2, MIGRATIONS).await.expect("a relative path connects");
        db.ping().await.unwrap();
        db.close().await;
        assert!(dir.join("nested/app.db").is_file(), "{url}");
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(with_create("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
        assert_eq!(with_create("sqlite://a.db?cache=shared"), "sqlite://a.db?cache=shared&mode=rwc");
    }
}
