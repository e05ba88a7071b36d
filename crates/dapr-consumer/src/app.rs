//! Starting and running a consumer: the database with the bookkeeping migrations, the port,
//! and one router that puts each route behind the token its caller must present.
//!
//! Three steps, because a consumer's own state needs the database: [`Consumer::start`] connects
//! and binds, [`Consumer::routes`] collects the consumer's handler and routes with the shared
//! ones, and [`Consumer::serve`] gives the [`ConsumerApp`] that serves them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use dapr_events::DaprPublisher;
use dapr_events::schema::EventSchemas;
use service_kit::db::{Database, Migrations};
use service_kit::health;
use service_kit::middleware::shed_load;
use service_kit::openapi::serve_documented;
use service_kit::startup::{self, StartError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{AppToken, require_app_token};
use crate::dead_letters::{self, DeadLetters};
use crate::deliveries;
use crate::handler::EventHandler;
use crate::metrics::{self, Progress};
use crate::settings::ConsumerSettings;
use service_kit::auth::{AdminToken, require_admin_token};

/// A consumer connected to its database and bound to its port, before its routes exist.
pub struct Consumer {
    settings: ConsumerSettings,
    db: Database,
    listener: TcpListener,
    metrics_listener: TcpListener,
    publisher: DaprPublisher,
    schemas: Arc<EventSchemas>,
    progress: Arc<Progress>,
}

impl Consumer {
    /// Connects to the database (running `migrations`: [`crate::consumer_migrations!`]) and
    /// binds `APP_HOST:APP_PORT` and `APP_HOST:METRICS_PORT`.
    pub async fn start(settings: &ConsumerSettings, migrations: Migrations) -> Result<Self, StartError> {
        service_kit::metrics::install();
        let publisher = settings.publisher()?;
        let schemas = Arc::new(EventSchemas::load().map_err(|e| StartError::Contract(e.to_string()))?);
        let db = Database::connect(&settings.database_url, settings.db_max_connections, migrations).await?;
        let listener = TcpListener::bind(SocketAddr::new(settings.host, settings.port)).await?;
        let metrics_listener = TcpListener::bind(SocketAddr::new(settings.host, settings.metrics_port)).await?;
        Ok(Self {
            settings: settings.clone(),
            db,
            listener,
            metrics_listener,
            publisher,
            schemas,
            progress: Arc::default(),
        })
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The app serving `routes` (from [`Consumer::routes`]) with `/openapi.json` and `/docs`,
    /// and what `service_kit::middleware::harden` adds (problem answers only, a problem for a
    /// panic, the request timeout, a span per request).
    /// `/metrics` is served on the metrics port.
    pub fn serve(self, routes: OpenApiRouter) -> ConsumerApp {
        let refresh = metrics::refresh(DeadLetters::new(self.db.clone()), self.progress.clone());
        ConsumerApp {
            router: serve_documented(routes, &self.settings.limits),
            metrics_router: service_kit::metrics::router(Some(refresh)),
            name: self.settings.app_id,
            grace: self.settings.shutdown_grace,
            db: self.db,
            listener: self.listener,
            metrics_listener: self.metrics_listener,
        }
    }

    /// Every route of the consumer with its OpenAPI operation: `handler` served to daprd
    /// (behind `APP_API_TOKEN`), the consumer's public `api` routes (load-shed past the
    /// concurrency limit; the document's title and description are `api`'s), its `admin`
    /// routes and the dead-letter admin API (behind `ADMIN_TOKEN`), `/healthz` and `/readyz`.
    pub fn routes(&self, handler: impl EventHandler, api: OpenApiRouter, admin: OpenApiRouter) -> OpenApiRouter {
        let settings = &self.settings;
        let dead_letters = DeadLetters::new(self.db.clone());
        let app_token = AppToken(settings.app_api_token.as_deref().map(Arc::from));
        let admin_token = AdminToken(settings.admin_token.as_deref().map(Arc::from));
        let sidecar = deliveries::routes(
            handler,
            self.schemas.clone(),
            dead_letters.clone(),
            &settings.pubsub_name,
            &settings.app_id,
            self.progress.clone(),
        )
        .layer(axum::middleware::from_fn_with_state(app_token, require_app_token));
        let admin = admin
            .merge(dead_letters::admin::routes(dead_letters.clone(), self.publisher.clone()))
            .layer(axum::middleware::from_fn_with_state(admin_token, require_admin_token));
        let mut routes =
            shed_load(api, &settings.limits).merge(sidecar).merge(admin).merge(health::routes(self.db.clone()));
        describe_shared_routes(routes.get_openapi_mut());
        routes
    }
}

/// The tags and security schemes of the routes every consumer shares, added to the document
/// the consumer's own `api` router started (its title, description and tags).
fn describe_shared_routes(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::Modify;
    use utoipa::openapi::tag::TagBuilder;
    let tags = document.tags.get_or_insert_with(Vec::new);
    for (name, description) in [
        (deliveries::TAG, "The routes daprd calls: subscriptions and deliveries."),
        (dead_letters::admin::TAG, "Operators: what could not be delivered (docs/operations.md)."),
        (health::TAG, "Liveness and readiness probes."),
    ] {
        tags.push(TagBuilder::new().name(name).description(Some(description)).build());
    }
    service_kit::openapi::SecuritySchemes.modify(document);
}

/// A consumer ready to serve.
pub struct ConsumerApp {
    name: String,
    grace: std::time::Duration,
    db: Database,
    listener: TcpListener,
    router: Router,
    metrics_listener: TcpListener,
    metrics_router: Router,
}

impl ConsumerApp {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where `GET /metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown`; then stops accepting, finishes in-flight requests (deliveries
    /// included, so daprd gets its answer) within the shutdown grace period, and closes the
    /// database.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartError> {
        tracing::info!(addr = %self.local_addr(), metrics_addr = %self.metrics_addr(), "{} service listening", self.name);
        let metrics = startup::serve(self.metrics_listener, self.metrics_router, shutdown.clone(), self.grace);
        // Either failing ends both: a service whose API stopped must not live on as metrics only.
        tokio::try_join!(startup::serve(self.listener, self.router, shutdown, self.grace), metrics)?;
        startup::close_database(&self.db).await;
        tracing::info!("{} service stopped", self.name);
        Ok(())
    }
}
