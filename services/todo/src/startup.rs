//! Building and running the todo service: the database, the HTTP server and the relay, with
//! graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use dapr_events::{DaprPublisher, PublisherConfig};
use service_kit::auth::AdminToken;
use service_kit::db::{Database, DbError, Migrations};
use service_kit::env::ConfigError;
use service_kit::metrics;
use service_kit::middleware::Limits;
use service_kit::startup::{self, StartError};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::outbox::{self, Outbox, queue};
use crate::relay::Relay;
use crate::todos::Todos;

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

pub const MIGRATIONS: Migrations = Migrations { sqlite: &[&SQLITE], postgres: &[&POSTGRES] };

/// Connects (creating a SQLite file on first start) and runs the migrations.
pub async fn connect_database(url: &str, max_connections: u32) -> Result<Database, DbError> {
    Database::connect(url, max_connections, MIGRATIONS).await
}

pub struct Application {
    grace: Duration,
    limits: Limits,
    listener: TcpListener,
    metrics_listener: TcpListener,
    state: AppState,
    relay: Option<Relay>,
}

impl Application {
    /// Connects to the database (running migrations) and binds the port; nothing is served
    /// until [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        metrics::install();
        let db = connect_database(&settings.database_url, settings.db_max_connections).await?;
        let listener = TcpListener::bind(SocketAddr::new(settings.host, settings.port)).await?;
        let metrics_listener = TcpListener::bind(SocketAddr::new(settings.host, settings.metrics_port)).await?;
        let outbox = Outbox::new();
        let relay = if settings.relay.enabled {
            let config_error = |detail: String| ConfigError { var: "DAPR_HTTP_ENDPOINT", detail };
            let publisher = DaprPublisher::new(PublisherConfig {
                sidecar_url: settings
                    .dapr
                    .http_endpoint
                    .parse()
                    .map_err(|e| config_error(format!("{:?} is not a URL: {e}", settings.dapr.http_endpoint)))?,
                pubsub_name: settings.dapr.pubsub_name.clone(),
                api_token: settings.dapr.api_token.clone(),
                timeout: settings.relay.publish_timeout,
            })
            .map_err(|e| config_error(e.to_string()))?;
            // A pool of its own on PostgreSQL, one connection per round in flight: its
            // statements then stay on connections that have them prepared and planned.
            let relay_db = db.with_own_pool(settings.relay.workers);
            Some(Relay::new(relay_db, publisher, settings.relay.clone(), settings.app_id.clone(), outbox.handoff()))
        } else {
            None
        };
        let state = AppState {
            todos: Todos::new(db, outbox),
            app_id: settings.app_id.into(),
            admin_token: AdminToken(settings.admin_token.as_deref().map(Into::into)),
        };
        Ok(Self { grace: settings.shutdown_grace, limits: settings.limits, listener, metrics_listener, state, relay })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where `GET /metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener.local_addr().expect("a bound listener has an address")
    }

    pub fn database(&self) -> &Database {
        self.state.todos.database()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting connections, lets in-flight
    /// requests finish and lets the relay finish its current round, all within the shutdown
    /// grace period. Past it, requests are cut off and the relay is stopped mid-round: its
    /// claimed events are released (best effort) and stay in the outbox for the next start.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let (addr, metrics_addr) = (self.local_addr(), self.metrics_addr());
        let db = self.database().clone();
        let grace = self.grace;
        // The relay's pool (its own on PostgreSQL), closed once the relay is done.
        let relay_db = self.relay.as_ref().map(|relay| relay.database().clone());
        let mut relay = self.relay.map(|relay| {
            let owner = relay.owner().to_owned();
            (owner, Owned(tokio::spawn(relay.run(shutdown.clone()))))
        });
        tracing::info!(%addr, %metrics_addr, "todo service listening");
        let metrics = metrics::router(Some(outbox::metrics::refresh(db.clone())));
        let _metrics_server =
            Owned(tokio::spawn(startup::serve(self.metrics_listener, metrics, shutdown.clone(), grace)));
        let mut server = Owned(tokio::spawn(startup::serve(
            self.listener,
            http::router(self.state, &self.limits),
            shutdown.clone(),
            grace,
        )));
        let mut failure = None;
        // The relay returns only once shutdown was requested. If it ends first it panicked, and
        // serving on would accept changes whose events nobody publishes: stop instead, so the
        // supervisor (Kubernetes, dapr run) restarts us.
        if let Some((_, relay_task)) = relay.as_mut() {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {}
                ended = &mut relay_task.0 => {
                    failure = match ended {
                        Err(panic) => Some(panic.to_string()),
                        Ok(()) if !shutdown.is_cancelled() => Some("it returned before shutdown".to_owned()),
                        Ok(()) => None,
                    };
                    if failure.is_some()
                        && let Some((owner, _)) = &relay
                    {
                        // What it claimed or was handed, for the next start to publish at once.
                        let _ = tokio::time::timeout(Duration::from_secs(1), queue::release_leases(&db, owner)).await;
                    }
                    relay = None;
                    shutdown.cancel();
                }
            }
        }
        if let Some((owner, mut relay_task)) = relay
            && tokio::time::timeout(grace, &mut relay_task.0).await.is_err()
        {
            relay_task.0.abort();
            // Aborting only asks: once the task is gone, nothing more is handed over to it
            // (`crate::outbox::handoff`), so the release below leaves no lease behind.
            let _ = (&mut relay_task.0).await;
            let released = tokio::time::timeout(Duration::from_secs(1), queue::release_leases(&db, &owner)).await;
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                released = ?released.ok().and_then(Result::ok),
                "the relay's round outlasted the shutdown grace period; stopped, its events stay in the outbox"
            );
        }
        let served = (&mut server.0).await;
        // Both at once: a hung database must not cost its timeout twice.
        tokio::join!(startup::close_database(&db), startup::close_database(relay_db.as_ref().unwrap_or(&db)));
        if let Some(failure) = failure {
            tracing::error!(%failure, "the relay stopped unexpectedly; the service stops too");
            return Err(StartError::TaskStopped { task: "the outbox relay", reason: failure });
        }
        match served {
            Ok(served) => served?,
            Err(panic) => return Err(StartError::TaskStopped { task: "the HTTP server", reason: panic.to_string() }),
        }
        tracing::info!("todo service stopped");
        Ok(())
    }
}

/// A task aborted when this handle is dropped. Should `run_until_stopped` itself be dropped
/// (its own task aborted), the server and the relay stop with it instead of running on with no
/// one to stop them.
struct Owned<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use service_kit::db::dialect::Backend;
    use service_kit::on_both_backends;
    use service_kit::testing::TestDb;

    use super::MIGRATIONS;

    on_both_backends!(the_relay_has_a_pool_of_its_own_only_on_postgres);

    async fn the_relay_has_a_pool_of_its_own_only_on_postgres(backend: Backend) {
        let test_db = TestDb::new(backend).await;
        let db = test_db.connect(MIGRATIONS).await;
        let relays = db.with_own_pool(2);
        relays.ping().await.expect("the relay's pool reaches the database");
        relays.close().await;
        match backend {
            Backend::Postgres => {
                db.ping().await.expect("closing the relay's pool leaves the service's open");
            }
            // One writer connection for the file, shared: the relay's pool is the service's.
            Backend::Sqlite => assert!(db.writer.is_closed(), "the relay shares the service's pools on SQLite"),
        }
        db.close().await;
    }
}
