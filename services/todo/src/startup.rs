//! Building and running the application: the HTTP server and the relay, with graceful
//! shutdown.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::Response;
use axum::routing::get;
use dapr_events::{DaprPublisher, PublisherConfig};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::http::{context, extract::MAX_BODY_BYTES, problem};
use crate::relay::Relay;
use crate::todos;

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    /// Notified after every commit that wrote an event, so the relay publishes right away
    /// instead of at its next poll.
    pub relay_wakeup: Arc<Notify>,
    pub app_id: Arc<str>,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    relay: Option<Relay>,
}

impl Application {
    /// Connects to the database (running migrations) and binds the port; nothing is served
    /// until [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> Result<Self> {
        let db = crate::db::connect(&settings.database_url, settings.db_max_connections).await?;
        let listener = TcpListener::bind(SocketAddr::new(settings.host, settings.port)).await?;
        let state =
            AppState { db: db.clone(), relay_wakeup: Arc::new(Notify::new()), app_id: settings.app_id.clone().into() };
        let relay = if settings.relay.enabled {
            let publisher = DaprPublisher::new(PublisherConfig {
                sidecar_url: settings.dapr.http_endpoint.parse().map_err(|e| Error::Config {
                    var: "DAPR_HTTP_ENDPOINT",
                    detail: format!("{:?} is not a URL: {e}", settings.dapr.http_endpoint),
                })?,
                pubsub_name: settings.dapr.pubsub_name.clone(),
                api_token: settings.dapr.api_token.clone(),
                timeout: settings.relay.publish_timeout,
            })
            .map_err(|e| Error::Config { var: "DAPR_HTTP_ENDPOINT", detail: e.to_string() })?;
            Some(Relay::new(db, publisher, settings.relay.clone(), settings.app_id.clone(), state.relay_wakeup.clone()))
        } else {
            None
        };
        Ok(Self { listener, state, relay })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then stops accepting connections, lets in-flight
    /// requests finish and lets the relay finish its current round.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let addr = self.local_addr();
        let relay = self.relay.map(|relay| tokio::spawn(relay.run(shutdown.clone())));
        tracing::info!(%addr, "todo service listening");
        let server = axum::serve(self.listener, router(self.state.clone()))
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
        self.state.db.close().await;
        if let Some(failure) = relay_failure {
            tracing::error!(%failure, "the relay stopped unexpectedly; the service stops too");
            return Err(Error::RelayStopped(failure));
        }
        tracing::info!("todo service stopped");
        Ok(())
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(todos::routes())
        .route("/healthz", get(service_kit::health::healthz))
        .route("/readyz", get(readyz))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(context::propagate))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            tracing::info_span!(
                "request",
                method = %request.method(),
                path = %request.uri().path(),
                correlation_id = tracing::field::Empty,
            )
        }))
        .with_state(state)
}

/// Readiness: the database answers.
async fn readyz(State(state): State<AppState>) -> Response {
    service_kit::health::readiness(&state.db).await
}

pub use service_kit::telemetry::shutdown_signal;
