//! `pubsub.kafka` with daprd's semantics (contract §6), through librdkafka (built from source by
//! the `rdkafka` crate; feature `kafka`):
//!
//! - publish: the record value is the envelope (or raw) bytes, the key is `partitionKey` (or
//!   `__key`), and every publish metadata entry becomes a record header;
//! - consume: one consumer group per component, `consumerGroup` (default: the app id),
//!   subscribed to every topic of the component; `initialOffset` `newest` (default) or
//!   `oldest`; each partition is processed sequentially;
//! - the message handed to the subscription runtime carries `__key`, `__offset`,
//!   `__partition`, `__topic`, `__timestamp` and the record headers as metadata (they become
//!   delivery headers);
//! - a failed message is retried by the component with the `backOff*` policy (default every 5 s,
//!   forever) while `consumeRetryEnabled` (default true), blocking its partition; the offset is
//!   stored only after success or after giving up, so a crash redelivers from the last success.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Mutex, RwLock, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{BrokerError, Handler, Message, metadata_value};
use crate::duration::{parse_go_bool, parse_go_duration};
use crate::policy::{Backoff, RetrySchedule};

/// Messages queued per partition before the reader waits for that partition's worker.
const PARTITION_QUEUE: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    pub brokers: String,
    pub consumer_group: String,
    pub client_id: String,
    /// `earliest` for `initialOffset: oldest`, `latest` for `newest`.
    pub auto_offset_reset: &'static str,
    pub auth: KafkaAuth,
    pub disable_tls: bool,
    pub consume_retry: Option<RetrySchedule>,
    /// `sessionTimeout` (10 s) and `heartbeatInterval` (3 s): how soon a vanished member's
    /// partitions go to the others.
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KafkaAuth {
    None,
    /// SASL with `saslUsername`, `saslPassword`, and `saslMechanism` in librdkafka's naming.
    Password {
        username: String,
        password: String,
        mechanism: String,
    },
}

fn invalid(field: &'static str, detail: impl Into<String>) -> BrokerError {
    BrokerError::Metadata { field, detail: detail.into() }
}

/// librdkafka's name for daprd's `saslMechanism`: daprd knows `SHA-512` and `SHA-256` (SCRAM);
/// anything else, its documented default `PLAINTEXT` or a value such as `SCRAM-SHA-512`, means
/// SASL PLAIN, without an error. The same here, with a warning, so a component that works with
/// the dev sidecar works with daprd.
fn sasl_mechanism(value: Option<&str>) -> &'static str {
    match value {
        Some("SHA-512") => "SCRAM-SHA-512",
        Some("SHA-256") => "SCRAM-SHA-256",
        None | Some("PLAINTEXT") => "PLAIN",
        Some(other) => {
            tracing::warn!(
                saslMechanism = other,
                "not SHA-512, SHA-256 or PLAINTEXT: SASL PLAIN is used, as daprd does"
            );
            "PLAIN"
        }
    }
}

impl KafkaSettings {
    /// Reads the component metadata (contract §6.1) with daprd's code defaults: `consumerGroup`
    /// falls back to the app id, `clientID` to `sarama`, `consumeRetryEnabled` is true.
    pub fn from_metadata(metadata: &BTreeMap<String, String>, app_id: &str) -> Result<Self, BrokerError> {
        let get = |name| metadata_value(metadata, name);
        let flag = |field: &'static str, default: bool| -> Result<bool, BrokerError> {
            get(field).map_or(Ok(default), |v| {
                parse_go_bool(v).ok_or_else(|| invalid(field, format!("{v:?} is not a boolean")))
            })
        };
        let duration = |field: &'static str, default: Duration| -> Result<Duration, BrokerError> {
            get(field).map_or(Ok(default), |v| parse_go_duration(v).map_err(|e| invalid(field, e.to_string())))
        };
        let brokers = get("brokers").ok_or_else(|| invalid("brokers", "is required"))?.to_owned();
        let auth = match get("authType").ok_or_else(|| invalid("authType", "is required"))? {
            "none" => KafkaAuth::None,
            "password" => KafkaAuth::Password {
                username: get("saslUsername")
                    .ok_or_else(|| invalid("saslUsername", "is required with authType password"))?
                    .into(),
                password: get("saslPassword")
                    .ok_or_else(|| invalid("saslPassword", "is required with authType password"))?
                    .into(),
                mechanism: sasl_mechanism(get("saslMechanism")).to_owned(),
            },
            other => {
                return Err(invalid(
                    "authType",
                    format!("{other:?} is not supported by the dev sidecar (none, password)"),
                ));
            }
        };
        let auto_offset_reset = match get("initialOffset").unwrap_or("newest") {
            "newest" => "latest",
            "oldest" => "earliest",
            other => return Err(invalid("initialOffset", format!("{other:?} is not newest or oldest"))),
        };
        let max_retries = match get("backOffMaxRetries") {
            None => -1,
            Some(v) => v.parse().map_err(|_| invalid("backOffMaxRetries", format!("{v:?} is not a number")))?,
        };
        let backoff = match get("backOffPolicy").unwrap_or("constant") {
            "constant" => Backoff::Constant(duration("backOffDuration", Duration::from_secs(5))?),
            "exponential" => {
                Backoff::Exponential { max_interval: duration("backOffMaxInterval", Duration::from_secs(60))? }
            }
            other => return Err(invalid("backOffPolicy", format!("{other:?} is not constant or exponential"))),
        };
        Ok(Self {
            brokers,
            consumer_group: get("consumerGroup").or(get("consumerID")).unwrap_or(app_id).to_owned(),
            client_id: get("clientID").unwrap_or("sarama").to_owned(),
            auto_offset_reset,
            auth,
            disable_tls: flag("disableTls", false)?,
            session_timeout: duration("sessionTimeout", Duration::from_secs(10))?,
            heartbeat_interval: duration("heartbeatInterval", Duration::from_secs(3))?,
            consume_retry: flag("consumeRetryEnabled", true)?.then_some(RetrySchedule {
                backoff,
                max_retries,
                matching_http: Vec::new(),
            }),
        })
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers).set("client.id", &self.client_id);
        match &self.auth {
            KafkaAuth::None => {
                config.set("security.protocol", if self.disable_tls { "plaintext" } else { "ssl" });
            }
            KafkaAuth::Password { username, password, mechanism } => {
                config
                    .set("security.protocol", if self.disable_tls { "sasl_plaintext" } else { "sasl_ssl" })
                    .set("sasl.mechanism", mechanism)
                    .set("sasl.username", username)
                    .set("sasl.password", password);
            }
        }
        config
    }
}

/// One `pubsub.kafka` component.
#[derive(Clone)]
pub struct Kafka {
    settings: Arc<KafkaSettings>,
    producer: FutureProducer,
    subscribed: Arc<Mutex<Subscriptions>>,
}

#[derive(Default)]
struct Subscriptions {
    handlers: Arc<RwLock<HashMap<String, Handler>>>,
    consumer: Option<Arc<ClosedInBackground>>,
    topics: BTreeSet<String>,
    reader: Option<Arc<Mutex<Option<JoinHandle<()>>>>>,
}

impl Kafka {
    pub fn connect(settings: KafkaSettings) -> Result<Self, BrokerError> {
        let producer: FutureProducer = settings
            .client_config()
            .set("message.timeout.ms", "10000")
            .create()
            .map_err(|e| invalid("brokers", format!("creating the producer: {e}")))?;
        Ok(Self { settings: Arc::new(settings), producer, subscribed: Arc::default() })
    }

    pub async fn publish(
        &self,
        topic: &str,
        data: Bytes,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let key = metadata.get("partitionKey").or_else(|| metadata.get("__key"));
        let mut headers = OwnedHeaders::new();
        for (name, value) in metadata {
            headers = headers.insert(Header { key: name, value: Some(value.as_bytes()) });
        }
        let mut record = FutureRecord::to(topic).payload(data.as_ref()).headers(headers);
        if let Some(key) = key {
            record = record.key(key.as_bytes());
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(error, _)| BrokerError::Kafka(error.to_string()))
    }

    /// Adds `topic` to the component's consumer (created on the first subscription).
    pub async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, BrokerError> {
        let mut subscribed = self.subscribed.lock().await;
        subscribed.handlers.write().await.insert(topic.to_owned(), handler);
        subscribed.topics.insert(topic.to_owned());
        if subscribed.consumer.is_none() {
            let consumer: StreamConsumer = self
                .settings
                .client_config()
                .set("group.id", &self.settings.consumer_group)
                .set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "1000")
                // Offsets are stored only once a message is done (see the module docs).
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", self.settings.auto_offset_reset)
                .set("session.timeout.ms", self.settings.session_timeout.as_millis().to_string())
                .set("heartbeat.interval.ms", self.settings.heartbeat_interval.as_millis().to_string())
                .create()
                .map_err(|e| invalid("brokers", format!("creating the consumer: {e}")))?;
            let consumer = Arc::new(ClosedInBackground(Some(consumer)));
            subscribed.consumer = Some(consumer.clone());
            let reader =
                tokio::spawn(read_loop(consumer, subscribed.handlers.clone(), self.settings.clone(), shutdown.clone()));
            subscribed.reader = Some(Arc::new(Mutex::new(Some(reader))));
        }
        let topics: Vec<&str> = subscribed.topics.iter().map(String::as_str).collect();
        subscribed
            .consumer
            .as_ref()
            .expect("created above")
            .subscribe(&topics)
            .map_err(|e| BrokerError::Kafka(format!("subscribing to {topics:?}: {e}")))?;
        // Every subscription's task waits for the one reader, which ends after shutdown.
        let reader = subscribed.reader.clone().expect("created with the consumer");
        Ok(tokio::spawn(async move {
            if let Some(handle) = reader.lock().await.take() {
                let _ = handle.await;
            }
        }))
    }
}

/// The component's consumer, closed on a thread of its own once the last handle is dropped.
/// Dropping an rdkafka consumer closes it and waits for the group coordinator's answer without
/// a limit: with the broker gone that is forever, and on a runtime thread it would keep the
/// sidecar (or a test's runtime) from ever stopping. The final commit and leaving the group are
/// requested at shutdown already (`read_loop`); the close completes them if the broker answers.
struct ClosedInBackground(Option<StreamConsumer>);

impl std::ops::Deref for ClosedInBackground {
    type Target = StreamConsumer;

    fn deref(&self) -> &StreamConsumer {
        self.0.as_ref().expect("taken only on drop")
    }
}

impl Drop for ClosedInBackground {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let closing = std::thread::Builder::new().name("kafka-close".into()).spawn(move || drop(consumer));
            if let Err(error) = closing {
                tracing::warn!(%error, "no thread of its own for closing the Kafka consumer");
            }
        }
    }
}

/// Reads the consumer and hands each message to its partition's worker, so a partition is
/// processed in order while partitions proceed in parallel.
async fn read_loop(
    consumer: Arc<ClosedInBackground>,
    handlers: Arc<RwLock<HashMap<String, Handler>>>,
    settings: Arc<KafkaSettings>,
    shutdown: CancellationToken,
) {
    let mut workers: HashMap<(String, i32), (mpsc::Sender<Message>, JoinHandle<()>)> = HashMap::new();
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "reading from Kafka failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (topic, partition, offset) = (message.topic().to_owned(), message.partition(), message.offset());
        let mut metadata = BTreeMap::from([
            ("__offset".to_owned(), offset.to_string()),
            ("__partition".to_owned(), partition.to_string()),
            ("__topic".to_owned(), topic.clone()),
        ]);
        if let Some(key) = message.key() {
            metadata.insert("__key".into(), String::from_utf8_lossy(key).into_owned());
        }
        if let Some(millis) = message.timestamp().to_millis() {
            metadata.insert("__timestamp".into(), millis.to_string());
        }
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                metadata.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        let data = Bytes::copy_from_slice(message.payload().unwrap_or_default());
        let work = Message { topic: topic.clone(), data, metadata };
        let (sender, _) = workers.entry((topic.clone(), partition)).or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(PARTITION_QUEUE);
            let worker = tokio::spawn(partition_worker(
                consumer.clone(),
                handlers.clone(),
                settings.clone(),
                receiver,
                shutdown.clone(),
            ));
            (sender, worker)
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sender.send(work) => {}
        }
    }
    for (_, (sender, worker)) in workers {
        drop(sender);
        let _ = tokio::time::timeout(super::SHUTDOWN_GRACE, worker).await;
    }
    // Stored offsets go to the broker now rather than at the next auto-commit. Asynchronously:
    // a synchronous commit can wait without limit, so a broker that is already gone would keep
    // the sidecar from ever stopping. The close (see `ClosedInBackground`) finishes it if the
    // broker answers; an offset that does not make it is redelivered, as after a crash.
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Async) {
        tracing::debug!(%error, "final offset commit");
    }
    // Leave the group now, so the partitions go to the other members (or to this app's next
    // sidecar) at once instead of after the session times out. The handlers hold the broker,
    // which holds this consumer: dropping them breaks that cycle so the consumer is closed too.
    consumer.unsubscribe();
    handlers.write().await.clear();
}

/// Processes one partition's messages one at a time: the handler (with the component's retry
/// policy), then the offset.
async fn partition_worker(
    consumer: Arc<ClosedInBackground>,
    handlers: Arc<RwLock<HashMap<String, Handler>>>,
    settings: Arc<KafkaSettings>,
    mut receiver: mpsc::Receiver<Message>,
    shutdown: CancellationToken,
) {
    while let Some(message) = receiver.recv().await {
        let Some(handler) = handlers.read().await.get(&message.topic).cloned() else { continue };
        let (topic, partition) = (message.topic.clone(), message.metadata["__partition"].parse::<i32>().unwrap_or(0));
        let offset: i64 = message.metadata["__offset"].parse().unwrap_or(0);
        let mut retries = 0u32;
        loop {
            match handler(message.clone()).await {
                Ok(()) => break,
                Err(error) => {
                    let retry =
                        settings.consume_retry.as_ref().filter(|r| r.should_retry(retries, None, Duration::ZERO));
                    let Some(schedule) = retry else {
                        tracing::warn!(%topic, partition, offset, %error, "delivery failed; the component moves on");
                        break;
                    };
                    tracing::debug!(%topic, partition, offset, %error, retries, "delivery failed; the component retries");
                    tokio::select! {
                        // Stopping: leave the offset unstored, the message is redelivered.
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(schedule.delay(retries)) => {}
                    }
                    retries += 1;
                }
            }
        }
        let mut done = TopicPartitionList::new();
        if done.add_partition_offset(&topic, partition, Offset::Offset(offset + 1)).is_ok() {
            if let Err(error) = consumer.store_offsets(&done) {
                tracing::warn!(%topic, partition, offset, %error, "storing the offset failed; the message may be redelivered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::metadata;

    #[test]
    fn settings_follow_daprds_code_defaults() {
        let settings =
            KafkaSettings::from_metadata(&metadata(&[("brokers", "k:9092"), ("authType", "none")]), "analytics")
                .unwrap();
        assert_eq!(settings.consumer_group, "analytics", "the consumer group defaults to the app id");
        assert_eq!(settings.client_id, "sarama");
        assert_eq!(settings.auto_offset_reset, "latest", "initialOffset defaults to newest");
        let retry = settings.consume_retry.unwrap();
        assert_eq!((retry.backoff, retry.max_retries), (Backoff::Constant(Duration::from_secs(5)), -1));
    }

    #[test]
    fn settings_read_the_cluster_component_and_reject_garbage() {
        let settings = KafkaSettings::from_metadata(
            &metadata(&[
                ("brokers", "k:9092"),
                ("consumerGroup", "notification"),
                ("initialOffset", "oldest"),
                ("authType", "password"),
                ("saslUsername", "u"),
                ("saslPassword", "p"),
                ("saslMechanism", "SHA-512"),
                ("disableTls", "true"),
                ("backOffDuration", "100ms"),
                ("backOffMaxRetries", "3"),
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(settings.auto_offset_reset, "earliest");
        assert_eq!(
            settings.auth,
            KafkaAuth::Password { username: "u".into(), password: "p".into(), mechanism: "SCRAM-SHA-512".into() }
        );
        assert_eq!(settings.consume_retry.unwrap().max_retries, 3);
        let mechanism = |value: Option<&str>| {
            let mut pairs =
                vec![("brokers", "k"), ("authType", "password"), ("saslUsername", "u"), ("saslPassword", "p")];
            pairs.extend(value.map(|v| ("saslMechanism", v)));
            match KafkaSettings::from_metadata(&metadata(&pairs), "x").unwrap().auth {
                KafkaAuth::Password { mechanism, .. } => mechanism,
                KafkaAuth::None => unreachable!(),
            }
        };
        assert_eq!(mechanism(Some("SHA-256")), "SCRAM-SHA-256");
        assert_eq!(mechanism(None), "PLAIN");
        assert_eq!(mechanism(Some("SCRAM-SHA-512")), "PLAIN", "daprd does not know Kafka's own name");
        let no_retry = KafkaSettings::from_metadata(
            &metadata(&[("brokers", "k"), ("authType", "none"), ("consumeRetryEnabled", "false")]),
            "x",
        );
        assert!(no_retry.unwrap().consume_retry.is_none());
        for bad in [
            metadata(&[("authType", "none")]),
            metadata(&[("brokers", "k")]),
            metadata(&[("brokers", "k"), ("authType", "mtls")]),
            metadata(&[("brokers", "k"), ("authType", "none"), ("initialOffset", "middle")]),
            metadata(&[("brokers", "k"), ("authType", "password")]),
        ] {
            assert!(KafkaSettings::from_metadata(&bad, "x").is_err(), "{bad:?}");
        }
    }
}
