//! Structured logging through `tracing`, and a span per HTTP request.

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
