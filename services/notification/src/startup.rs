//! Building and running the notification service: its database, the routes the sidecar calls
//! (behind the app token), the notifications API, the dead-letter admin API, graceful shutdown.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use dapr_events::subscriber::{AppToken, require_app_token};
use service_kit::consumer::DeadLetterAdmin;
use service_kit::db::{Database, Migrations};
use service_kit::{health, problem};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

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

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown`; then stops accepting, finishes in-flight requests (deliveries
    /// included: daprd gets its answer) and closes the database.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        tracing::info!(addr = %self.local_addr(), "notification service listening");
        let router = router(self.state.clone(), self.app_token);
        axum::serve(self.listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).into_future().await?;
        self.state.db.close().await;
        tracing::info!("notification service stopped");
        Ok(())
    }
}

pub fn router(state: AppState, app_token: AppToken) -> Router {
    let sidecar_routes = events::routes().layer(axum::middleware::from_fn_with_state(app_token, require_app_token));
    Router::new()
        .merge(sidecar_routes)
        .merge(notifications::routes())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(readyz))
        .with_state(state.clone())
        .merge(state.admin.clone().routes())
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
        }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    health::readiness(&state.db).await
}
