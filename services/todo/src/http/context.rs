//! Per-request context that ends up on every event: correlation id, causation id and W3C trace
//! context.

use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, request::Parts};
use axum::middleware::Next;
use axum::response::Response;
use dapr_events::trace;
use uuid::Uuid;

pub static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static CAUSATION_ID: HeaderName = HeaderName::from_static("x-causation-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Ids longer than this, or with characters outside visible ASCII, are replaced rather than
/// propagated: they end up in logs, headers and other services' databases.
const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestContext {
    /// From `X-Correlation-Id`, else `X-Request-Id`, else generated; echoed on the response.
    pub correlation_id: String,
    /// From `X-Causation-Id`: the message that caused this request, when a caller knows it
    /// (e.g. a service acting on an event). Absent for plain user requests.
    pub causation_id: Option<String>,
    /// The caller's `traceparent`, or a new trace when it sent none (or a malformed one).
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl RequestContext {
    fn from_headers(headers: &HeaderMap) -> Self {
        let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let usable_id = |v: &&str| !v.is_empty() && v.len() <= MAX_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic());
        let correlation_id = header(&CORRELATION_ID)
            .filter(usable_id)
            .or_else(|| header(&REQUEST_ID).filter(usable_id))
            .map(str::to_owned)
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        let traceparent = header(&TRACEPARENT).and_then(trace::parse_traceparent);
        Self {
            correlation_id,
            causation_id: header(&CAUSATION_ID).filter(usable_id).map(str::to_owned),
            // tracestate belongs to the caller's trace; without its traceparent it means nothing.
            tracestate: traceparent.and(header(&TRACESTATE)).map(str::to_owned),
            traceparent: traceparent.map(str::to_owned).unwrap_or_else(trace::new_traceparent),
        }
    }
}

/// Middleware: builds the [`RequestContext`] once, records the correlation id on the request's
/// tracing span, and echoes it on the response.
pub async fn propagate(mut request: Request, next: Next) -> Response {
    let context = RequestContext::from_headers(request.headers());
    tracing::Span::current().record("correlation_id", context.correlation_id.as_str());
    let echo = HeaderValue::from_str(&context.correlation_id).ok();
    request.extensions_mut().insert(context);
    let mut response = next.run(request).await;
    if let Some(echo) = echo {
        response.headers_mut().insert(CORRELATION_ID.clone(), echo);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| RequestContext::from_headers(&parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn prefers_correlation_id_then_request_id() {
        let both = RequestContext::from_headers(&headers(&[("x-correlation-id", "c1"), ("x-request-id", "r1")]));
        assert_eq!(both.correlation_id, "c1");
        let request_only = RequestContext::from_headers(&headers(&[("x-request-id", "r1")]));
        assert_eq!(request_only.correlation_id, "r1");
        let too_long = "x".repeat(MAX_ID_LEN + 1);
        let generated = RequestContext::from_headers(&headers(&[("x-correlation-id", &too_long)]));
        assert!(Uuid::parse_str(&generated.correlation_id).is_ok());
    }

    #[test]
    fn keeps_a_valid_traceparent_and_replaces_a_broken_one() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let kept = RequestContext::from_headers(&headers(&[("traceparent", tp), ("tracestate", "k=v")]));
        assert_eq!(kept.traceparent, tp);
        assert_eq!(kept.tracestate.as_deref(), Some("k=v"));
        let replaced = RequestContext::from_headers(&headers(&[("traceparent", "nope"), ("tracestate", "k=v")]));
        assert_ne!(replaced.traceparent, "nope");
        assert!(trace::parse_traceparent(&replaced.traceparent).is_some());
        assert_eq!(replaced.tracestate, None);
    }
}
