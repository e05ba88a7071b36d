//! Structured logging through `tracing`, a span per HTTP request, and the signals that stop a
//! service.

use axum::Router;
use axum::extract::Request;
use tower_http::trace::TraceLayer;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, filtered by `RUST_LOG` (default `info,sqlx=warn`); JSON lines
/// when `json` (for log shippers), text otherwise. Safe to call more than once (later calls do
/// nothing), which tests rely on.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes and `dapr run` send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown requested");
}

/// Wraps every route of `router` in a `request` span (method, path, and a `correlation_id`
/// field a service records once it knows it), with tower-http's request and response events.
pub fn with_request_spans(router: Router) -> Router {
    router.layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            correlation_id = tracing::field::Empty,
        )
    }))
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting and lets in-flight
/// requests finish (a delivery in flight gets its answer to daprd).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
