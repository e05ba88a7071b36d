//! Building and running the todo service: the database, the HTTP server and the relay, with
//! graceful shutdown.

use std::future::IntoFuture;
use std::net::SocketAddr;

use dapr_events::{DaprPublisher, PublisherConfig};
use service_kit::db::{Database, DbError, Migrations};
use service_kit::env::ConfigError;
use service_kit::startup::StartError;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::outbox::Outbox;
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
    listener: TcpListener,
    state: AppState,
    relay: Option<Relay>,
}

impl Application {
    /// Connects to the database (running migrations) and binds the port; nothing is served
    /// until [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let db = connect_database(&settings.database_url, settings.db_max_connections).await?;
        let listener = TcpListener::bind(SocketAddr::new(settings.host, settings.port)).await?;
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
            Some(Relay::new(db.clone(), publisher, settings.relay.clone(), settings.app_id.clone(), outbox.commits()))
        } else {
            None
        };
        let state = AppState { todos: Todos::new(db, outbox), app_id: settings.app_id.into() };
        Ok(Self { listener, state, relay })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn database(&self) -> &Database {
        self.state.todos.database()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting connections, lets in-flight
    /// requests finish and lets the relay finish its current round.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let addr = self.local_addr();
        let db = self.database().clone();
        let relay = self.relay.map(|relay| tokio::spawn(relay.run(shutdown.clone())));
        tracing::info!(%addr, "todo service listening");
        let server = axum::serve(self.listener, http::router(self.state))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        tokio::pin!(server);
        let relay_failure = match relay {
            None => {
                (&mut server).await?;
                None
            }
            Some(mut relay) => tokio::select! {
                served = &mut server => {
                    served?;
                    relay.await.err().map(|e| e.to_string())
                }
                // The relay returns only once shutdown was requested. If it ends first it
                // panicked, and serving on would accept changes whose events nobody publishes:
                // stop instead, so the supervisor (Kubernetes, dapr run) restarts us.
                ended = &mut relay => {
                    let failure = match ended {
                        Err(panic) => Some(panic.to_string()),
                        Ok(()) if !shutdown.is_cancelled() => Some("it returned before shutdown".to_owned()),
                        Ok(()) => None,
                    };
                    shutdown.cancel();
                    (&mut server).await?;
                    failure
                }
            },
        };
        db.close().await;
        if let Some(failure) = relay_failure {
            tracing::error!(%failure, "the relay stopped unexpectedly; the service stops too");
            return Err(StartError::TaskStopped { task: "the outbox relay", reason: failure });
        }
        tracing::info!("todo service stopped");
        Ok(())
    }
}
