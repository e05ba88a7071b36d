//! What every service wraps its whole router in, so that no answer escapes the API's contract:
//!
//! - a panic in a handler answers a logged problem+json 500, never a dropped connection;
//! - every error response, including axum's own rejections (bad percent-encoding, a query that
//!   does not parse) and the fallbacks, is RFC 9457 problem+json: a plain-text or empty one is
//!   rewritten on its way out, keeping its status and its text as the `detail`;
//! - a request target longer than [`MAX_URI_BYTES`] answers a problem 414 (hyper answers
//!   longer ones, past 65,534 bytes, and oversized headers (431) itself, with no body: the
//!   documented exceptions in docs/api.md);
//! - a request taking longer than `REQUEST_TIMEOUT_MS` answers 503;
//!
//! and what the public API wraps its routes in ([`shed_load`]): at most
//! `MAX_CONCURRENT_REQUESTS` in flight, the rest shed at once with 503 and `Retry-After`
//! rather than queued without bound.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use crate::env::{ConfigError, Env};
use crate::problem::Problem;
use crate::{metrics, telemetry};

/// The longest request target (path and query) the services read. Their longest legitimate one
/// (a list with a user, a status, a limit and a cursor) is under 200 bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// How long an overloaded service asks clients to wait before they try again.
const RETRY_AFTER_SECONDS: u64 = 1;

/// The request limits, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `REQUEST_TIMEOUT_MS` (default 30000): past it a request answers 503. A unit of work
    /// already started still runs to its end (`crate::db::run_to_completion`).
    pub request_timeout: Duration,
    /// `MAX_CONCURRENT_REQUESTS` (default 256): public API requests in flight at once.
    pub max_concurrent_requests: usize,
}

impl Limits {
    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let max_concurrent_requests = env.parse("MAX_CONCURRENT_REQUESTS", 256)?;
        if max_concurrent_requests == 0 {
            return Err(ConfigError { var: "MAX_CONCURRENT_REQUESTS", detail: "must be at least 1".into() });
        }
        Ok(Self {
            request_timeout: Duration::from_millis(env.parse("REQUEST_TIMEOUT_MS", 30_000)?),
            max_concurrent_requests,
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::read(&Env::new(|_| None)).expect("the defaults are valid")
    }
}

/// `router` with everything the module documentation lists but load shedding, then the
/// request metrics (so a panic's 500 is counted), and a server span per request around it all
/// (so a panic's log line carries the request's trace).
pub fn harden(router: Router, limits: &Limits) -> Router {
    let router = router
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, limits.request_timeout))
        .layer(axum::middleware::from_fn(problems_only))
        .layer(axum::middleware::from_fn(limit_uri_length))
        .layer(CatchPanicLayer::custom(answer_panic));
    telemetry::with_request_spans(metrics::count_requests(router))
}

/// `routes` (collected with their OpenAPI operations) shedding load past
/// `limits.max_concurrent_requests` requests in flight.
pub fn shed_load<S: Clone + Send + Sync + 'static>(
    routes: utoipa_axum::router::OpenApiRouter<S>,
    limits: &Limits,
) -> utoipa_axum::router::OpenApiRouter<S> {
    let permits = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    routes.layer(axum::middleware::from_fn_with_state(permits, admit_or_shed))
}

async fn admit_or_shed(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    // A permit is held for the whole request; none left means the service is at capacity.
    let Ok(_permit) = permits.try_acquire_owned() else {
        tracing::warn!("at the concurrent request limit; shedding a request");
        return overloaded();
    };
    next.run(request).await
}

fn overloaded() -> Response {
    let mut response = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        .detail(format!("The service is at its concurrent request limit; retry in {RETRY_AFTER_SECONDS} s."))
        .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

async fn limit_uri_length(request: Request, next: Next) -> Response {
    let length = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if length > MAX_URI_BYTES {
        return Problem::new(StatusCode::URI_TOO_LONG, "uri-too-long")
            .detail(format!("The request target is {length} bytes; the limit is {MAX_URI_BYTES}."))
            .into_response();
    }
    next.run(request).await
}

/// The longest plain-text error body kept as a problem's `detail`.
const MAX_DETAIL_BYTES: usize = 1024;

/// Rewrites an error response that is not problem+json into one.
async fn problems_only(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let text = match axum::body::to_bytes(response.into_body(), MAX_DETAIL_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let detail = match (text.is_empty(), status) {
        (false, _) => text,
        (true, StatusCode::SERVICE_UNAVAILABLE) => "The request took too long; retry later.".to_owned(),
        (true, _) => status.canonical_reason().unwrap_or("Error").to_owned(),
    };
    let kind = match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation-failed",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ if status.is_server_error() => "internal",
        _ => "client-error",
    };
    let mut problem = Problem::new(status, kind).detail(detail).into_response();
    if let Some(retry_after) = retry_after {
        problem.headers_mut().insert(header::RETRY_AFTER, retry_after);
    }
    problem
}

fn answer_panic(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_owned());
    tracing::error!(panic = message, "a request handler panicked");
    Problem::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_refuse_zero() {
        assert_eq!(Limits::default().max_concurrent_requests, 256);
        assert_eq!(Limits::default().request_timeout, Duration::from_secs(30));
        let zero = Env::new(|name| (name == "MAX_CONCURRENT_REQUESTS").then(|| "0".to_owned()));
        assert_eq!(Limits::read(&zero).unwrap_err().var, "MAX_CONCURRENT_REQUESTS");
    }
}
