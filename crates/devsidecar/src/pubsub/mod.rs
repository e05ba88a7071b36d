//! Pub/sub components: what daprd calls a component's `Publish` and `Subscribe`.
//!
//! The subscription runtime (daprd's part: routing, delivery to the app, retries, dead letters)
//! sits above this layer and hands each component a [`Handler`]; the component decides, as its
//! daprd counterpart does, what a handler error means (redelivery, ack, or a log line).

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;
pub mod redis_streams;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One message as a component stores and hands it over: the published bytes (normally the
/// CloudEvent envelope) and the publish metadata, which daprd turns into delivery headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub data: Bytes,
    pub metadata: BTreeMap<String, String>,
}

/// How long a stopping sidecar waits for deliveries in progress before abandoning them
/// (unacknowledged, so every component redelivers them later).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The subscription runtime's verdict on a message. `Err` is what daprd returns to the
/// component when delivery (with its retries and dead-lettering) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

pub type Handler = Arc<dyn Fn(Message) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid component metadata {field}: {detail}")]
    Metadata { field: &'static str, detail: String },
    #[error("kafka: {0}")]
    Kafka(String),
}

/// Features reported in `/v1.0/metadata` (daprd's `Features()` per component).
pub fn capabilities(component_type: &str) -> &'static [&'static str] {
    match component_type {
        // contract §7: in-memory supports wildcard subscriptions.
        "pubsub.in-memory" => &["SUBSCRIBE_WILDCARDS"],
        _ => &[],
    }
}

/// A loaded pub/sub component.
#[derive(Clone)]
pub enum Broker {
    Redis(Box<redis_streams::RedisStreams>),
    Memory(memory::InMemory),
    #[cfg(feature = "kafka")]
    Kafka(Box<kafka::Kafka>),
}

impl Broker {
    pub async fn publish(
        &self,
        topic: &str,
        data: Bytes,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        match self {
            Broker::Redis(redis) => redis.publish(topic, data, metadata).await,
            Broker::Memory(memory) => {
                memory.publish(topic, data, metadata).await;
                Ok(())
            }
            #[cfg(feature = "kafka")]
            Broker::Kafka(kafka) => kafka.publish(topic, data, metadata).await,
        }
    }

    /// Starts consuming `topic`; the returned task ends after `shutdown` once in-flight
    /// deliveries finished (or the grace period ran out).
    pub async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, BrokerError> {
        match self {
            Broker::Redis(redis) => redis.subscribe(topic, handler, shutdown).await,
            Broker::Memory(memory) => Ok(memory.subscribe(topic, handler, shutdown)),
            #[cfg(feature = "kafka")]
            Broker::Kafka(kafka) => kafka.subscribe(topic, handler, shutdown).await,
        }
    }
}

/// Case-insensitive metadata lookup, as daprd decodes component metadata.
pub(crate) fn metadata_value<'a>(metadata: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
        .filter(|v| !v.is_empty())
}
