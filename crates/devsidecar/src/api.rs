//! daprd's HTTP API, pub/sub part (contract §1, §8): publish and bulk publish with daprd's
//! envelope rules, status codes and error JSON; health; metadata; the API-token check.

// Helpers return the error response to send (the axum idiom); it is built once per failed
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawPathParams, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::app::API_TOKEN_HEADER;
use crate::delivery::publish_with_policy;
use crate::envelope::{self, EnvelopeError, PublishInput};
use crate::scopes::Operation;
use crate::sidecar::{Component, SidecarState};

/// daprd's default `--max-body-size` (4Mi).
pub const MAX_BODY_SIZE: usize = 4 * 1024 * 1024;

pub fn router(state: Arc<SidecarState>) -> Router {
    let publish_route = post(publish).put(publish);
    let bulk_route = post(bulk_publish).put(bulk_publish);
    Router::new()
        .route("/v1.0/publish/{pubsub}/{*topic}", publish_route.clone())
        .route("/v1.0/publish/{pubsub}/", publish_route.clone())
        .route("/v1.0/publish/{pubsub}", publish_route)
        .route("/v1.0/publish/bulk/{pubsub}/{*topic}", bulk_route.clone())
        .route("/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}", bulk_route)
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz_outbound))
        .route("/v1.0/metadata", get(metadata))
        .route("/v1.0/metadata/{key}", put(set_extended_metadata))
        .layer(axum::middleware::from_fn_with_state(state.clone(), check_api_token))
        // daprd's --max-body-size default; axum's own default (2 MiB) would refuse what daprd takes.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_SIZE))
        .with_state(state)
}

/// daprd's error body (contract §1.7): `errorCode`, `message`, and ErrorInfo plus (except for
/// "not found" errors) ResourceInfo details.
pub fn dapr_error(status: StatusCode, code: &str, message: &str, reason: &str, resource: Option<&str>) -> Response {
    let mut details = vec![json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "dapr.io",
        "metadata": {}
    })];
    if let Some(name) = resource {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.ResourceInfo",
            "resource_type": "pubsub",
            "resource_name": name,
            "owner": "",
            "description": message
        }));
    }
    (status, axum::Json(json!({"errorCode": code, "message": message, "details": details}))).into_response()
}

/// `DAPR_API_TOKEN`: every request but the two health endpoints needs `dapr-api-token`
/// (contract §8.1); the header is not passed on.
async fn check_api_token(State(state): State<Arc<SidecarState>>, mut request: Request, next: Next) -> Response {
    let Some(token) = &state.api_token else { return next.run(request).await };
    let path = request.uri().path();
    let exempt = request.method() == Method::GET && (path == "/v1.0/healthz" || path == "/v1.0/healthz/outbound");
    let presented = request.headers().get(API_TOKEN_HEADER).and_then(|v| v.to_str().ok());
    if !exempt && presented != Some(token.as_str()) {
        return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "text/plain")], "invalid api token").into_response();
    }
    request.headers_mut().remove(API_TOKEN_HEADER);
    next.run(request).await
}

/// Path parameters as daprd reads them: `url.QueryUnescape`d, so `+` is a space and `%2F` a
/// slash (contract §1.1).
fn path_params(raw: &RawPathParams) -> (String, String) {
    let mut pubsub = String::new();
    let mut topic = String::new();
    for (name, value) in raw.iter() {
        let decoded = query_unescape(value);
        match name {
            "pubsub" => pubsub = decoded,
            "topic" => topic = decoded,
            _ => {}
        }
    }
    (pubsub, topic)
}

fn query_unescape(value: &str) -> String {
    let spaced = value.replace('+', " ");
    percent_decode(&spaced).unwrap_or(spaced)
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `metadata.*` query parameters with the prefix stripped, first value of each (§1.2).
fn request_metadata(query: Option<&str>) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = query_unescape(key);
        if let Some(name) = key.strip_prefix("metadata.") {
            metadata.entry(name.to_owned()).or_insert_with(|| query_unescape(value));
        }
    }
    metadata
}

/// The checks daprd runs before touching the body: pubsub exists, topic not empty.
fn resolve<'a>(state: &'a SidecarState, pubsub: &str, topic: &str) -> Result<&'a Arc<Component>, Response> {
    if pubsub.is_empty() {
        return Err(dapr_error(
            StatusCode::NOT_FOUND,
            "ERR_PUBSUB_EMPTY",
            "pubsub name is empty",
            "DAPR_PUBSUB_NAME_EMPTY",
            None,
        ));
    }
    let Some(component) = state.components.get(pubsub) else {
        let message = format!("pubsub {pubsub} is not found");
        return Err(dapr_error(StatusCode::NOT_FOUND, "ERR_PUBSUB_NOT_FOUND", &message, "DAPR_PUBSUB_NOT_FOUND", None));
    };
    if topic.is_empty() {
        let message = format!("topic is empty in pubsub {pubsub}");
        return Err(dapr_error(
            StatusCode::NOT_FOUND,
            "ERR_TOPIC_NAME_EMPTY",
            &message,
            "DAPR_PUBSUB_TOPIC_NAME_EMPTY",
            None,
        ));
    }
    Ok(component)
}

fn envelope_error(error: &EnvelopeError, pubsub: &str) -> Response {
    let (status, code, reason) = error.dapr_error();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    dapr_error(status, code, &error.to_string(), reason, Some(pubsub))
}

/// What both publish routes read before the body (contract §1.2 steps 1–3): the component,
/// the `metadata.*` parameters (a bad `rawPayload` refused here) and the caller's trace context.
struct PublishRequest {
    pubsub: String,
    topic: String,
    component: Arc<Component>,
    metadata: BTreeMap<String, String>,
    raw: bool,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl PublishRequest {
    fn read(
        state: &SidecarState,
        raw_path: &RawPathParams,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Self, Response> {
        let (pubsub, topic) = path_params(raw_path);
        let component = resolve(state, &pubsub, &topic)?.clone();
        let metadata = request_metadata(query);
        let raw = envelope::is_raw_payload(&metadata).map_err(|error| envelope_error(&error, &pubsub))?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Self {
            traceparent: header("traceparent"),
            tracestate: header("tracestate"),
            pubsub,
            topic,
            component,
            metadata,
            raw,
        })
    }

    /// The bytes to store for one message (the envelope, or the body when raw).
    fn envelope(
        &self,
        state: &SidecarState,
        content_type: Option<&str>,
        body: &[u8],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>, Response> {
        let input = PublishInput {
            pubsub_name: &self.pubsub,
            topic: &self.topic,
            content_type,
            body,
            metadata,
            traceparent: self.traceparent.as_deref(),
            tracestate: self.tracestate.as_deref(),
            app_id: &state.app_id,
        };
        envelope::build_envelope(&input, chrono::Local::now()).map_err(|error| envelope_error(&error, &self.pubsub))
    }

    /// Topic scoping (contract §2.5): 403 for a topic this app may not publish to.
    fn check_scopes(&self, state: &SidecarState) -> Result<(), Response> {
        if self.component.scopes.allows(Operation::Publish, &state.app_id, &self.topic) {
            return Ok(());
        }
        let message = format!("topic {} is not allowed for app id {}", self.topic, state.app_id);
        Err(dapr_error(
            StatusCode::FORBIDDEN,
            "ERR_PUBSUB_FORBIDDEN",
            &message,
            "DAPR_PUBSUB_FORBIDDEN",
            Some(&self.pubsub),
        ))
    }

    /// One component publish under the outbound policy.
    async fn publish(&self, data: Vec<u8>, metadata: &BTreeMap<String, String>) -> Result<(), String> {
        publish_with_policy(&self.component.broker, &self.component.outbound, &self.topic, Bytes::from(data), metadata)
            .await
    }
}

/// `POST|PUT /v1.0/publish/{pubsub}/{topic…}` (contract §1.2).
async fn publish(
    State(state): State<Arc<SidecarState>>,
    raw_path: RawPathParams,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match PublishRequest::read(&state, &raw_path, query.as_deref(), &headers) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let data = match request.envelope(&state, content_type, &body, &request.metadata) {
        Ok(data) => data,
        Err(response) => return response,
    };
    if let Err(response) = request.check_scopes(&state) {
        return response;
    }
    match request.publish(data, &request.metadata).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => {
            let message =
                format!("error when publishing to topic {} in pubsub {}: {error}", request.topic, request.pubsub);
            tracing::warn!(%message, "publish failed");
            dapr_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_PUBSUB_PUBLISH_MESSAGE",
                &message,
                "DAPR_PUBSUB_PUBLISH_MESSAGE",
                Some(&request.pubsub),
            )
        }
    }
}

/// One entry of a bulk publish body (contract §1.8).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkEntry {
    entry_id: Option<String>,
    event: Value,
    content_type: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
}

fn bulk_error(reason: &str, message: &str) -> Response {
    dapr_error(StatusCode::BAD_REQUEST, "ERR_PUBSUB_EVENTS_SER", message, reason, None)
}

/// The bytes of one entry's `event` per its content type (contract §1.8).
fn bulk_event_bytes(entry: &BulkEntry) -> Result<Vec<u8>, String> {
    let content_type = entry.content_type.as_deref().unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/octet-stream" => {
            use base64::Engine;
            let text = entry.event.as_str().ok_or("event must be a base64 string for application/octet-stream")?;
            base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| e.to_string())
        }
        "application/json" | "application/cloudevents+json" => {
            Ok(serde_json::to_vec(&entry.event).expect("JSON serialises"))
        }
        m if m.starts_with("text/") || m == "application/xml" => {
            entry.event.as_str().map(|s| s.as_bytes().to_vec()).ok_or_else(|| format!("event must be a string for {m}"))
        }
        other => Err(format!("unsupported contentType {other:?}")),
    }
}

/// `POST|PUT /v1.0/publish/bulk/{pubsub}/{topic…}` and the alpha path: each entry is wrapped
/// like a single publish and published concurrently (up to 100 at a time, no order).
async fn bulk_publish(
    State(state): State<Arc<SidecarState>>,
    raw_path: RawPathParams,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match PublishRequest::read(&state, &raw_path, query.as_deref(), &headers) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let Ok(entries) = serde_json::from_slice::<Vec<BulkEntry>>(&body) else {
        return bulk_error(
            "DAPR_PUBSUB_UNMARSHAL_EVENTS",
            "error when unmarshaling the request for topic: the body is not a JSON array of entries",
        );
    };
    let mut seen = HashSet::new();
    let mut prepared = Vec::new();
    for entry in &entries {
        let Some(entry_id) = entry.entry_id.clone().filter(|id| !id.is_empty() && seen.insert(id.clone())) else {
            return bulk_error("DAPR_PUBSUB_MARSHAL_EVENTS", "entryId is duplicated or not present for entry");
        };
        let event = match bulk_event_bytes(entry) {
            Ok(event) => event,
            Err(detail) => return bulk_error("DAPR_PUBSUB_MARSHAL_ENVELOPE", &detail),
        };
        // Per-entry metadata overrides the URL's key by key, but only for entries that have a
        // metadata object (contract §1.8).
        let metadata = match &entry.metadata {
            None => BTreeMap::new(),
            Some(own) => request.metadata.clone().into_iter().chain(own.clone()).collect(),
        };
        let data = if request.raw {
            event
        } else {
            match request.envelope(&state, entry.content_type.as_deref(), &event, &metadata) {
                Ok(data) => data,
                Err(response) => return response,
            }
        };
        prepared.push((entry_id, data, metadata));
    }
    if let Err(response) = request.check_scopes(&state) {
        return response;
    }
    let request = &request;
    let failures: Vec<Value> = futures::stream::iter(prepared)
        .map(|(entry_id, data, metadata)| async move {
            let published = request.publish(data, &metadata).await;
            published.err().map(|error| json!({"entryId": entry_id, "error": error}))
        })
        .buffer_unordered(100)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    if failures.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({"failedEntries": failures, "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE"})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct HealthQuery {
    appid: Option<String>,
}

/// `GET /v1.0/healthz`: 204 once components are loaded, the app port answered (when there is
/// one) and subscriptions started (contract §8.3).
async fn healthz(State(state): State<Arc<SidecarState>>, query: axum::extract::Query<HealthQuery>) -> Response {
    if query.appid.as_deref().is_some_and(|id| id != state.app_id) {
        return health_error("ERR_HEALTH_APPID_NOT_MATCH", "dapr app-id does not match");
    }
    if state.ready.load(Ordering::SeqCst) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        health_error("ERR_HEALTH_NOT_READY", "dapr is not ready: [app]")
    }
}

/// `GET /v1.0/healthz/outbound`: 204 as soon as components are loaded and the API serves,
/// before the app is up: what a publishing app polls at its own start-up.
async fn healthz_outbound(State(state): State<Arc<SidecarState>>) -> Response {
    if state.outbound_ready.load(Ordering::SeqCst) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        health_error("ERR_OUTBOUND_HEALTH_NOT_READY", "dapr outbound is not ready")
    }
}

fn health_error(code: &str, message: &str) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"errorCode": code, "message": message}))).into_response()
}

/// `GET /v1.0/metadata` (contract §8.5), the parts a pub/sub sidecar has.
async fn metadata(State(state): State<Arc<SidecarState>>) -> Response {
    let components: Vec<Value> = state
        .components
        .values()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "version": c.version,
                   "capabilities": crate::pubsub::capabilities(&c.kind)})
        })
        .collect();
    let subscriptions: Vec<Value> = state
        .subscriptions
        .read()
        .expect("subscriptions lock")
        .iter()
        .map(|s| {
            let rules: Vec<Value> = s
                .routes
                .rules()
                .iter()
                .map(|r| {
                    if r.match_expr.is_empty() {
                        json!({"path": r.path})
                    } else {
                        json!({"match": r.match_expr, "path": r.path})
                    }
                })
                .collect();
            json!({"pubsubname": s.pubsub_name, "topic": s.topic, "metadata": s.metadata, "rules": rules,
                   "deadLetterTopic": s.dead_letter_topic.clone().unwrap_or_default(), "type": s.kind})
        })
        .collect();
    let mut body = json!({
        "id": state.app_id,
        "runtimeVersion": concat!("devsidecar-", env!("CARGO_PKG_VERSION")),
        "enabledFeatures": [],
        "components": components,
        "subscriptions": subscriptions,
        "extended": *state.extended.read().expect("extended lock"),
    });
    if let Some(app) = &state.app_connection {
        body["appConnectionProperties"] =
            json!({"port": app.port, "protocol": "http", "channelAddress": app.channel_address, "maxConcurrency": -1});
    }
    axum::Json(body).into_response()
}

async fn set_extended_metadata(
    State(state): State<Arc<SidecarState>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    state.extended.write().expect("extended lock").insert(key, String::from_utf8_lossy(&body).into_owned());
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_like_go_query_unescape() {
        assert_eq!(query_unescape("orders%2Feu"), "orders/eu");
        assert_eq!(query_unescape("a+b"), "a b");
        assert_eq!(query_unescape("bad%zz"), "bad%zz");
    }

    #[test]
    fn collects_metadata_parameters_first_value_wins() {
        let metadata = request_metadata(Some(
            "metadata.partitionKey=k1&metadata.partitionKey=k2&other=1&metadata.ttlInSeconds=60",
        ));
        assert_eq!(metadata.len(), 2);
        assert_eq!(metadata["partitionKey"], "k1");
        assert_eq!(metadata["ttlInSeconds"], "60");
    }
}
