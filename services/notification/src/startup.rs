//! Building and running the notification service: its database, the routes the sidecar calls
//! (behind the app token), the notifications API, the dead-letter admin API, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use dapr_events::subscriber::AppToken;
use service_kit::consumer::{self, ConsumerRoutes, DeadLetterAdmin};
use service_kit::db::{Database, Migrations};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::webhook::Webhook;
use crate::{events, notifications};

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
/// The shared consumer bookkeeping (version 1), then this service's tables.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[&service_kit::consumer::SQLITE_MIGRATIONS, &SQLITE],
    postgres: &[&service_kit::consumer::POSTGRES_MIGRATIONS, &POSTGRES],
};

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub app_id: Arc<str>,
    pub pubsub_name: Arc<str>,
    pub webhook: Option<Arc<Webhook>>,
    pub admin: DeadLetterAdmin,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    app_token: AppToken,
}

impl Application {
    /// Connects to the database (running migrations) and binds the port.
    pub async fn build(settings: Settings) -> Result<Self> {
        let consumer = &settings.consumer;
        let db = Database::connect(&consumer.database_url, consumer.db_max_connections, MIGRATIONS).await?;
        let listener = TcpListener::bind(SocketAddr::new(consumer.host, consumer.port)).await?;
        let webhook = match &settings.webhook {
            Some(webhook) => Some(Arc::new(
                Webhook::new(webhook)
                    .map_err(|e| Error::Config { var: "NOTIFY_WEBHOOK_URL", detail: e.to_string() })?,
            )),
            None => None,
        };
        let state = AppState {
            admin: DeadLetterAdmin::new(consumer, db.clone())?,
            db,
            app_id: consumer.app_id.as_str().into(),
            pubsub_name: consumer.pubsub_name.as_str().into(),
            webhook,
        };
        Ok(Self { listener, state, app_token: consumer.app_token() })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown`; then stops accepting, finishes in-flight requests (deliveries
    /// included: daprd gets its answer) and closes the database.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let db = self.state.db.clone();
        let router = router(self.state, self.app_token);
        Ok(consumer::serve("notification", self.listener, router, &db, shutdown).await?)
    }
}

pub fn router(state: AppState, app_token: AppToken) -> Router {
    let routes = ConsumerRoutes { sidecar: events::routes(), api: notifications::routes(), admin: Router::new() };
    let (admin, db) = (state.admin.clone(), state.db.clone());
    consumer::router(routes, state, &admin, app_token, db)
}
