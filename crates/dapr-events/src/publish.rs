//! Publishing through the Dapr sidecar's HTTP API: `POST /v1.0/publish/{pubsub}/{topic}`, and
//! many events at once with `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`.
//!
//! See Dapr's pub/sub API reference (https://docs.dapr.io/reference/api/pubsub_api/); the
//! behaviours relied on here are pinned against daprd in `crates/dapr-contract`. In short: the
//! sidecar answers 204 on success; 4xx means the request itself is wrong; 500
//! `ERR_PUBSUB_PUBLISH_MESSAGE` means the broker failed after the component's own retries.

use std::time::Duration;

use reqwest::{StatusCode, Url, header};
use serde::Serialize;

use crate::{Backoff, CloudEvent};

/// Header carrying the Dapr API token (app → sidecar), checked by daprd when it was started with
/// `DAPR_API_TOKEN`.
pub const API_TOKEN_HEADER: &str = "dapr-api-token";
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// `http://127.0.0.1:{DAPR_HTTP_PORT}`.
    pub sidecar_url: Url,
    /// The name of the pub/sub component (`metadata.name` of its YAML).
    pub pubsub_name: String,
    /// Sent as `dapr-api-token` when set.
    pub api_token: Option<String>,
    /// Upper bound for one publish call, connection included.
    pub timeout: Duration,
}

impl PublisherConfig {
    /// The sidecar on loopback at `port`, as `dapr run` and the Kubernetes injector set it up.
    pub fn local(port: u16, pubsub_name: impl Into<String>) -> Self {
        Self {
            sidecar_url: Url::parse(&format!("http://127.0.0.1:{port}")).expect("a valid URL"),
            pubsub_name: pubsub_name.into(),
            api_token: None,
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the Dapr sidecar at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("could not reach the Dapr sidecar at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// daprd answered with something other than 2xx; `body` is its error JSON
    /// (`{"errorCode":…,"message":…}`) or text, kept verbatim for the logs.
    #[error("the Dapr sidecar answered {status}: {body}")]
    Rejected { status: StatusCode, error_code: Option<String>, body: String },
    #[error("could not serialise the CloudEvent: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("could not build the Dapr client: {0}")]
    Client(#[source] reqwest::Error),
}

impl PublishError {
    /// True when daprd refuses this event for good, whatever the broker does: its publishing
    /// scopes forbid the topic (403 `ERR_PUBSUB_FORBIDDEN`) or no pub/sub component of that name
    /// exists (404 `ERR_PUBSUB_NOT_FOUND`; also seen while daprd is still loading components,
    /// so callers give it a while before acting on it). A 401 (the API token does not match)
    /// is not one: it is about this app, not the event, and fixing the token fixes every event.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Rejected { status, .. } if *status == StatusCode::FORBIDDEN || *status == StatusCode::NOT_FOUND)
    }

    /// True when daprd did not take the connection (nothing listens, or it is restarting): the
    /// event was not handed over, so nothing about it is learnt by trying again before the
    /// sidecar answers its health check. A connection that broke mid-request is not this: the
    /// event may have been published.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { source, .. } if source.is_connect())
    }

    /// True when retrying the same request cannot succeed without someone changing the
    /// configuration or the event (unknown pubsub, scoping, bad token, malformed envelope).
    ///
    /// Callers that must never lose an event still retry these; this only decides how loudly to
    /// complain.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Rejected { status, error_code, .. } => {
                (status.is_client_error()
                    && *status != StatusCode::REQUEST_TIMEOUT
                    && *status != StatusCode::TOO_MANY_REQUESTS)
                    || error_code.as_deref() == Some("ERR_PUBSUB_CLOUD_EVENTS_SER")
            }
            Self::Serialize(_) => true,
            _ => false,
        }
    }
}

/// One event of a bulk publish: its id in the request (the answer names failed entries by it),
/// the CloudEvent as serialised JSON, and its partition key.
#[derive(Debug, Clone)]
pub struct BulkEntry {
    pub entry_id: String,
    pub event: Box<serde_json::value::RawValue>,
    pub partition_key: Option<String>,
}

/// How a bulk publish failed.
#[derive(Debug, thiserror::Error)]
pub enum BulkPublishError {
    /// daprd published the other entries; these failed (its `failedEntries`: entry id and
    /// error).
    #[error("{} entries failed: {error}", failed.len())]
    Entries { failed: Vec<(String, String)>, error: PublishError },
    /// Nothing was published as far as we know: the request did not reach daprd, or daprd
    /// refused it as a whole (scopes, no such component, a malformed body).
    #[error(transparent)]
    Request(#[from] PublishError),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireEntry<'a> {
    entry_id: &'a str,
    event: &'a serde_json::value::RawValue,
    content_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<WireMetadata<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireMetadata<'a> {
    partition_key: &'a str,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailedEntries {
    #[serde(default)]
    failed_entries: Vec<FailedEntry>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailedEntry {
    entry_id: String,
    #[serde(default)]
    error: String,
}

/// A client for the sidecar's publish API. Cheap to clone (shares one connection pool).
#[derive(Debug, Clone)]
pub struct DaprPublisher {
    http: reqwest::Client,
    config: PublisherConfig,
}

impl DaprPublisher {
    pub fn new(config: PublisherConfig) -> Result<Self, PublishError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // The sidecar is on loopback; a proxy from the environment would only get in the way.
            .no_proxy()
            .build()
            .map_err(PublishError::Client)?;
        Ok(Self { http, config })
    }

    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// `POST /v1.0/publish/{pubsub}/{topic}?metadata.partitionKey=…` with the CloudEvent as a
    /// structured `application/cloudevents+json` body, which daprd forwards as is (keeping our
    /// `id`, `type`, `source` and trace context; it only overwrites `topic` and `pubsubname`).
    ///
    /// `partition_key` becomes the Kafka record key; other brokers ignore it.
    pub async fn publish<T: Serialize>(
        &self,
        topic: &str,
        event: &CloudEvent<T>,
        partition_key: Option<&str>,
    ) -> Result<(), PublishError> {
        let body = serde_json::to_vec(event)?;
        self.publish_bytes(topic, CLOUDEVENTS_JSON, body, partition_key, event.traceparent.as_deref()).await
    }

    /// Publishes an already serialised body with the given content type. The relay uses this
    /// to send exactly the bytes it stored.
    pub async fn publish_bytes(
        &self,
        topic: &str,
        content_type: &str,
        body: Vec<u8>,
        partition_key: Option<&str>,
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        self.post(self.publish_url(topic, partition_key), content_type, body, traceparent).await
    }

    /// Posts `body` to daprd: Ok for any 2xx, else daprd's answer or what kept it from coming.
    async fn post(
        &self,
        url: Url,
        content_type: &str,
        body: Vec<u8>,
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let mut request = self.http.post(url.clone()).header(header::CONTENT_TYPE, content_type).body(body);
        if let Some(token) = &self.config.api_token {
            request = request.header(API_TOKEN_HEADER, token);
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&url, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let error_code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("errorCode")?.as_str().map(str::to_owned));
        Err(PublishError::Rejected { status, error_code, body })
    }

    /// `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}` with `entries`, each a structured
    /// CloudEvent (`application/cloudevents+json`) that daprd forwards as a single publish would
    /// (our `id` and trace context kept) and its partition key as the entry's
    /// `metadata.partitionKey`. daprd publishes the entries of one request in no defined order
    /// (Redis: concurrently), so a caller that needs an order sends at most one event per key.
    ///
    /// `traceparent` names the request's producer span; daprd's spans for the entries are its
    /// children.
    pub async fn publish_bulk(
        &self,
        topic: &str,
        entries: &[BulkEntry],
        traceparent: Option<&str>,
    ) -> Result<(), BulkPublishError> {
        let wire: Vec<WireEntry<'_>> = entries
            .iter()
            .map(|entry| WireEntry {
                entry_id: &entry.entry_id,
                event: &entry.event,
                content_type: CLOUDEVENTS_JSON,
                metadata: entry.partition_key.as_deref().map(|partition_key| WireMetadata { partition_key }),
            })
            .collect();
        let body = serde_json::to_vec(&wire).map_err(PublishError::from)?;
        let url = self.api_url(&["v1.0-alpha1", "publish", "bulk", &self.config.pubsub_name, topic]);
        let Err(error) = self.post(url, "application/json", body, traceparent).await else {
            return Ok(());
        };
        let failed = match &error {
            PublishError::Rejected { body, .. } => {
                serde_json::from_str::<FailedEntries>(body).map(|answer| answer.failed_entries).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        if failed.is_empty() {
            return Err(BulkPublishError::Request(error));
        }
        Err(BulkPublishError::Entries { failed: failed.into_iter().map(|f| (f.entry_id, f.error)).collect(), error })
    }

    /// The URL of one publish call. Path segments are percent-encoded (daprd unescapes them, so
    /// a topic containing `/` survives).
    pub fn publish_url(&self, topic: &str, partition_key: Option<&str>) -> Url {
        let mut url = self.api_url(&["v1.0", "publish", &self.config.pubsub_name, topic]);
        if let Some(key) = partition_key {
            url.query_pairs_mut().append_pair("metadata.partitionKey", key);
        }
        url
    }

    /// The sidecar URL with `segments` as the path, each percent-encoded.
    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.sidecar_url.clone();
        url.path_segments_mut().expect("an http URL has path segments").pop_if_empty().extend(segments);
        url
    }

    /// `GET /v1.0/healthz/outbound`: 204 once the sidecar's components are loaded, *before* it
    /// waits for the app. `/v1.0/healthz` would wait for our own port and deadlock a publisher
    /// that publishes during start-up. Token-exempt in daprd, but sending it is harmless.
    pub async fn outbound_ready(&self) -> bool {
        let mut url = self.config.sidecar_url.clone();
        url.set_path("/v1.0/healthz/outbound");
        match self.http.get(url).send().await {
            Ok(response) => response.status().is_success(),
            Err(_) => false,
        }
    }

    /// Polls outbound health until the sidecar is ready, backing off between attempts.
    /// Runs until ready; callers bound it with a cancellation or timeout of their own.
    pub async fn wait_until_outbound_ready(&self, backoff: Backoff) {
        let mut attempt = 0u32;
        while !self.outbound_ready().await {
            if attempt.is_multiple_of(10) {
                tracing::info!(
                    sidecar = %self.config.sidecar_url,
                    attempt,
                    "waiting for the Dapr sidecar's outbound health (/v1.0/healthz/outbound)"
                );
            }
            tokio::time::sleep(backoff.delay(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
        tracing::info!(sidecar = %self.config.sidecar_url, "Dapr sidecar is ready for publishing");
    }

    fn transport_error(&self, url: &Url, error: reqwest::Error) -> PublishError {
        let url = url.to_string();
        if error.is_timeout() {
            PublishError::Timeout { url, timeout: self.config.timeout }
        } else {
            PublishError::Unreachable { url, source: error }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_url_has_daprs_shape() {
        let publisher = DaprPublisher::new(PublisherConfig::local(3500, "pubsub")).unwrap();
        let url = publisher.publish_url("todos.task.created", Some("0190-abc"));
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:3500/v1.0/publish/pubsub/todos.task.created?metadata.partitionKey=0190-abc"
        );
        let nested = publisher.publish_url("orders/eu", None);
        assert_eq!(nested.as_str(), "http://127.0.0.1:3500/v1.0/publish/pubsub/orders%2Feu");
    }

    #[test]
    fn classifies_permanent_failures() {
        let rejected = |status: u16, code: Option<&str>| PublishError::Rejected {
            status: StatusCode::from_u16(status).unwrap(),
            error_code: code.map(str::to_owned),
            body: String::new(),
        };
        assert!(rejected(404, Some("ERR_PUBSUB_NOT_FOUND")).is_permanent());
        assert!(rejected(403, Some("ERR_PUBSUB_FORBIDDEN")).is_permanent());
        assert!(rejected(500, Some("ERR_PUBSUB_CLOUD_EVENTS_SER")).is_permanent());
        assert!(!rejected(500, Some("ERR_PUBSUB_PUBLISH_MESSAGE")).is_permanent());
        assert!(!rejected(429, None).is_permanent());
        assert!(!rejected(503, None).is_permanent());
        assert!(rejected(403, Some("ERR_PUBSUB_FORBIDDEN")).is_refusal());
        assert!(rejected(404, Some("ERR_PUBSUB_NOT_FOUND")).is_refusal());
        assert!(!rejected(401, None).is_refusal() && rejected(401, None).is_permanent());
        assert!(!rejected(500, Some("ERR_PUBSUB_PUBLISH_MESSAGE")).is_refusal());
    }
}
