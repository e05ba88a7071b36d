//! The request headers the todo API reads: the context every event carries (correlation id,
//! causation id), `If-Match` (RFC 9110) and `Idempotency-Key`.

use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::{ApiError, Result};
use crate::outbox::EventContext;
use crate::todos::commands::{IdempotencyKey, Precondition};
use crate::todos::input::CreateTodo;

pub static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static CAUSATION_ID: HeaderName = HeaderName::from_static("x-causation-id");

/// Ids longer than this, or with characters outside visible ASCII, are replaced rather than
/// propagated: they end up in logs, headers and other services' databases.
const MAX_ID_LEN: usize = 128;

/// The [`EventContext`] of a request, as an extractor:
/// - `correlation_id` from `X-Correlation-Id`, else `X-Request-Id`, else generated; echoed on
///   the response;
/// - `causation_id` from `X-Causation-Id`: the message that caused this request, when a caller
///   knows it (e.g. a service acting on an event); absent for plain user requests.
///
/// The caller's `traceparent` is the request span's parent (`service_kit::telemetry`).
#[derive(Debug, Clone)]
pub struct RequestContext(pub EventContext);

impl RequestContext {
    fn from_headers(headers: &HeaderMap) -> Self {
        let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let usable_id = |v: &&str| !v.is_empty() && v.len() <= MAX_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic());
        let correlation_id = header(&CORRELATION_ID)
            .filter(usable_id)
            .or_else(|| header(&REQUEST_ID).filter(usable_id))
            .map(str::to_owned)
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        Self(EventContext { correlation_id, causation_id: header(&CAUSATION_ID).filter(usable_id).map(str::to_owned) })
    }
}

/// Middleware: builds the [`RequestContext`] once, records the correlation id on the request's
/// tracing span, and echoes it on the response.
pub async fn propagate(mut request: Request, next: Next) -> Response {
    let context = RequestContext::from_headers(request.headers());
    tracing::Span::current().record("correlation_id", context.0.correlation_id.as_str());
    let echo = HeaderValue::from_str(&context.0.correlation_id).ok();
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

const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// `If-Match` as a [`Precondition`]: `*`, or a list of strong entity tags (`"3", "4"`). Weak
/// tags (`W/"3"`) never match under If-Match's strong comparison (RFC 9110 §13.1.1), so they
/// are left out; a tag we never issued cannot match, and is not malformed either.
pub fn if_match(headers: &HeaderMap) -> Result<Option<Precondition>> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().map_err(|_| ApiError::bad_request("If-Match", "must be ASCII"))?;
    parse_if_match(text).map(Some).map_err(|e| ApiError::bad_request("If-Match", e))
}

/// An `If-Match` value as a [`Precondition`], or why it is malformed; public for the fuzz target
/// (`fuzz/`).
pub fn parse_if_match(value: &str) -> Result<Precondition, String> {
    let value = value.trim();
    if value == "*" {
        return Ok(Precondition::Any);
    }
    let mut versions = Vec::new();
    for tag in value.split(',').map(str::trim) {
        if tag.starts_with("W/\"") && tag.ends_with('"') {
            continue;
        }
        let inner = tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .ok_or_else(|| format!("{tag:?} is not an entity tag such as \"3\""))?;
        // Entity tags compare octet by octet (RFC 9110 §8.8.3.2): `"03"` or `"+3"` is not the
        // tag `"3"` we issued, so only the canonical form of a version names it.
        if let Ok(version) = inner.parse::<i64>()
            && version >= 1
            && version.to_string() == inner
        {
            versions.push(version);
        }
    }
    Ok(Precondition::Versions(versions))
}

/// `Idempotency-Key`, with a hash of `request` as we understood it: the request re-serialised,
/// so formatting and key order of the client's JSON do not make two requests different.
pub fn idempotency_key(headers: &HeaderMap, request: &CreateTodo) -> Result<Option<IdempotencyKey>> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            )
        })?;
    let mut hasher = Sha256::new();
    hasher.update(b"POST /todos\n");
    hasher.update(serde_json::to_vec(request).expect("a request serialises"));
    let request_hash = format!("{:x}", hasher.finalize());
    Ok(Some(IdempotencyKey { key: key.to_owned(), request_hash }))
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
    fn if_match_parsing() {
        assert_eq!(parse_if_match("*").unwrap(), Precondition::Any);
        assert_eq!(parse_if_match("\"3\"").unwrap(), Precondition::Versions(vec![3]));
        assert_eq!(parse_if_match("\"3\", W/\"4\", \"x\"").unwrap(), Precondition::Versions(vec![3]));
        assert!(parse_if_match("3").is_err());
        // Found by the fuzz target: tags we never issued name no version.
        assert_eq!(parse_if_match("\"03\", \"+3\", \"-3\", \"0\"").unwrap(), Precondition::Versions(vec![]));
        assert!(parse_if_match("\"3\"").unwrap().matches(3));
        assert!(!parse_if_match("W/\"3\"").unwrap().matches(3));
    }

    #[test]
    fn prefers_correlation_id_then_request_id() {
        let both = RequestContext::from_headers(&headers(&[("x-correlation-id", "c1"), ("x-request-id", "r1")]));
        assert_eq!(both.0.correlation_id, "c1");
        let request_only = RequestContext::from_headers(&headers(&[("x-request-id", "r1")]));
        assert_eq!(request_only.0.correlation_id, "r1");
        let too_long = "x".repeat(MAX_ID_LEN + 1);
        let generated = RequestContext::from_headers(&headers(&[("x-correlation-id", &too_long)]));
        assert!(Uuid::parse_str(&generated.0.correlation_id).is_ok());
    }
}
