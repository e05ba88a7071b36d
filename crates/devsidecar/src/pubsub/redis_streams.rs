//! `pubsub.redis` with daprd's Redis Streams layout (contract §5), so that a real daprd and this
//! sidecar can share one Redis in either direction:
//!
//! - publish: `XADD <topic> [MAXLEN ~ n] * data <bytes> metadata <json>`;
//! - consume: consumer group = consumer name = `consumerID` (default: the app id), created at
//!   `0` with `MKSTREAM`; `XREADGROUP … COUNT queueDepth BLOCK readTimeout STREAMS <topic> >`;
//!   entries of all topics share one queue drained by `concurrency` workers (no ordering);
//! - ack: `XACK` after the handler returns, whether it succeeded or not (daprd 1.17+), unless
//!   the handler outlived `processingTimeout`: then the entry stays pending;
//! - reclaim: every `redeliverInterval`, `XPENDING` + `XCLAIM` of entries idle for at least
//!   `processingTimeout`, so messages in flight when a sidecar died are delivered again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{BrokerError, Handler, Message, SHUTDOWN_GRACE, metadata_value};
use crate::duration::parse_go_duration;

/// daprd passes `readTimeout` as the `BLOCK` argument and, unset, blocks forever. We block for
/// at most this long so a reader notices shutdown; on the wire that is only more XREADGROUPs.
const DEFAULT_BLOCK: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    pub url: String,
    pub consumer_id: String,
    pub queue_depth: usize,
    pub concurrency: usize,
    /// `None` disables reclaiming (either timer set to 0).
    pub redelivery: Option<Redelivery>,
    pub block: Duration,
    pub max_len_approx: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redelivery {
    pub interval: Duration,
    pub processing_timeout: Duration,
}

impl RedisSettings {
    /// Reads the component metadata (contract §5.3), with daprd's code defaults where they
    /// differ from the docs: `redeliverInterval` 15 s, `processingTimeout` 60 s.
    pub fn from_metadata(metadata: &BTreeMap<String, String>, app_id: &str) -> Result<Self, BrokerError> {
        let get = |name| metadata_value(metadata, name);
        let host =
            get("redisHost").ok_or(BrokerError::Metadata { field: "redisHost", detail: "is required".into() })?;
        let (host, port) = match host.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.to_owned()),
            None => (host.to_owned(), get("redisPort").unwrap_or("6379").to_owned()),
        };
        let tls = get("enableTLS").map(|v| parse_flag("enableTLS", v)).transpose()?.unwrap_or(false);
        let mut url = reqwest::Url::parse(&format!("{}://{host}:{port}", if tls { "rediss" } else { "redis" }))
            .map_err(|e| BrokerError::Metadata { field: "redisHost", detail: e.to_string() })?;
        if let Some(user) = get("redisUsername") {
            let _ = url.set_username(user);
        }
        if let Some(password) = get("redisPassword") {
            let _ = url.set_password(Some(password));
        }
        url.set_path(&format!("/{}", get("redisDB").map(|db| parse_number("redisDB", db)).transpose()?.unwrap_or(0)));
        // The redis crate's way of saying "do not verify the server certificate".
        if tls
            && get("insecureSkipTLSVerify")
                .map(|v| parse_flag("insecureSkipTLSVerify", v))
                .transpose()?
                .unwrap_or(false)
        {
            url.set_fragment(Some("insecure"));
        }

        // redeliverInterval is read as integer milliseconds only; daprd ignores a duration
        // string such as "30s" and keeps its default (contract §5.3, by code reading).
        let redeliver_interval = match get("redeliverInterval") {
            None => Duration::from_secs(15),
            Some(value) => match value.parse::<u64>() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => {
                    tracing::warn!(
                        value,
                        "redeliverInterval is not integer milliseconds; daprd ignores it, so do we (15s)"
                    );
                    Duration::from_secs(15)
                }
            },
        };
        let processing_timeout = match get("processingTimeout") {
            None => Duration::from_secs(60),
            Some(value) => parse_duration_or_millis("processingTimeout", value)?,
        };
        let redelivery = (!redeliver_interval.is_zero() && !processing_timeout.is_zero())
            .then_some(Redelivery { interval: redeliver_interval, processing_timeout });
        Ok(Self {
            url: url.to_string(),
            consumer_id: get("consumerID").unwrap_or(app_id).to_owned(),
            queue_depth: get("queueDepth").map(|v| parse_number("queueDepth", v)).transpose()?.unwrap_or(100).max(1),
            concurrency: get("concurrency").map(|v| parse_number("concurrency", v)).transpose()?.unwrap_or(10).max(1),
            redelivery,
            block: match get("readTimeout") {
                Some(value) => parse_duration_or_millis("readTimeout", value)?,
                None => DEFAULT_BLOCK,
            },
            max_len_approx: get("maxLenApprox").map(|v| parse_number("maxLenApprox", v)).transpose()?.map(|n| n as u64),
        })
    }
}

fn parse_number(field: &'static str, value: &str) -> Result<usize, BrokerError> {
    value.trim().parse().map_err(|_| BrokerError::Metadata { field, detail: format!("{value:?} is not a number") })
}

fn parse_flag(field: &'static str, value: &str) -> Result<bool, BrokerError> {
    crate::duration::parse_go_bool(value)
        .ok_or_else(|| BrokerError::Metadata { field, detail: format!("{value:?} is not a boolean") })
}

/// A bare integer is milliseconds (daprd's legacy form), anything else a Go duration.
fn parse_duration_or_millis(field: &'static str, value: &str) -> Result<Duration, BrokerError> {
    if let Ok(ms) = value.trim().parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    parse_go_duration(value).map_err(|e| BrokerError::Metadata { field, detail: e.to_string() })
}

/// An entry read from a stream, waiting for a worker.
struct Work {
    topic: String,
    entry: StreamId,
    handler: Handler,
}

#[derive(Clone)]
pub struct RedisStreams {
    settings: Arc<RedisSettings>,
    client: redis::Client,
    /// Shared for XADD, XACK, XPENDING and XCLAIM; blocking reads get connections of their own.
    commands: MultiplexedConnection,
    queue: mpsc::Sender<Work>,
    workers: Arc<Mutex<Option<WorkerPool>>>,
}

struct WorkerPool {
    receiver: Arc<Mutex<mpsc::Receiver<Work>>>,
    started: bool,
}

impl RedisStreams {
    pub async fn connect(settings: RedisSettings) -> Result<Self, BrokerError> {
        if settings.url.starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; another component may have set it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(settings.url.as_str())?;
        let commands = client.get_multiplexed_async_connection().await?;
        let (queue, receiver) = mpsc::channel(settings.queue_depth);
        let workers = WorkerPool { receiver: Arc::new(Mutex::new(receiver)), started: false };
        Ok(Self { settings: Arc::new(settings), client, commands, queue, workers: Arc::new(Mutex::new(Some(workers))) })
    }

    pub async fn publish(
        &self,
        topic: &str,
        data: Bytes,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(topic);
        if let Some(max_len) = self.settings.max_len_approx {
            xadd.arg("MAXLEN").arg("~").arg(max_len);
        }
        let metadata = serde_json::to_string(metadata).expect("a string map serialises");
        xadd.arg("*").arg("data").arg(data.as_ref()).arg("metadata").arg(metadata);
        let _: String = xadd.query_async(&mut self.commands.clone()).await?;
        Ok(())
    }

    pub async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, BrokerError> {
        self.ensure_group(topic).await?;
        self.start_workers(shutdown.clone()).await;
        let reader = tokio::spawn(self.clone().read_loop(topic.to_owned(), handler.clone(), shutdown.clone()));
        let reclaimer = self.settings.redelivery.map(|redelivery| {
            tokio::spawn(self.clone().reclaim_loop(topic.to_owned(), handler, redelivery, shutdown.clone()))
        });
        Ok(tokio::spawn(async move {
            let _ = reader.await;
            if let Some(reclaimer) = reclaimer {
                let _ = reclaimer.await;
            }
        }))
    }

    /// `XGROUP CREATE <topic> <consumerID> 0 MKSTREAM`: a new group first receives everything
    /// still in the stream. An existing group (`BUSYGROUP`) is fine.
    async fn ensure_group(&self, topic: &str) -> Result<(), BrokerError> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(topic)
            .arg(&self.settings.consumer_id)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.commands.clone())
            .await;
        match created {
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    async fn start_workers(&self, shutdown: CancellationToken) {
        let mut pool = self.workers.lock().await;
        let Some(pool) = pool.as_mut() else { return };
        if pool.started {
            return;
        }
        pool.started = true;
        for _ in 0..self.settings.concurrency {
            tokio::spawn(self.clone().worker(pool.receiver.clone(), shutdown.clone()));
        }
    }

    async fn read_loop(self, topic: String, handler: Handler, shutdown: CancellationToken) {
        let mut connection = None;
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            if connection.is_none() {
                connection = self.blocking_connection().await.map_err(|e| log_read_error(&topic, &e)).ok();
            }
            let Some(conn) = connection.as_mut() else {
                failures += 1;
                pause(&shutdown, failures).await;
                continue;
            };
            let read = tokio::select! {
                _ = shutdown.cancelled() => break,
                read = self.read_group(conn, &topic) => read,
            };
            match read {
                Ok(entries) => {
                    failures = 0;
                    for entry in entries {
                        let work = Work { topic: topic.clone(), entry, handler: handler.clone() };
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            sent = self.queue.send(work) => if sent.is_err() { return },
                        }
                    }
                }
                Err(error) if error.code() == Some("NOGROUP") => {
                    // The stream or group was deleted under us: recreate, as daprd does.
                    if let Err(error) = self.ensure_group(&topic).await {
                        tracing::warn!(%topic, %error, "could not recreate the consumer group");
                    }
                }
                Err(error) => {
                    log_read_error(&topic, &error);
                    connection = None;
                    failures += 1;
                    pause(&shutdown, failures).await;
                }
            }
        }
    }

    /// A connection of its own for `XREADGROUP … BLOCK`, with no client-side response timeout
    /// (the redis crate's default of 500 ms would cut every blocking read short).
    async fn blocking_connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        self.client.get_multiplexed_async_connection_with_config(&config).await
    }

    async fn read_group(&self, conn: &mut MultiplexedConnection, topic: &str) -> redis::RedisResult<Vec<StreamId>> {
        let consumer = &self.settings.consumer_id;
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(consumer)
            .arg(consumer)
            .arg("COUNT")
            .arg(self.settings.queue_depth)
            .arg("BLOCK")
            .arg(self.settings.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(topic)
            .arg(">")
            .query_async(conn)
            .await?;
        Ok(reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default())
    }

    async fn worker(self, receiver: Arc<Mutex<mpsc::Receiver<Work>>>, shutdown: CancellationToken) {
        loop {
            let work = {
                let mut receiver = receiver.lock().await;
                tokio::select! {
                    // After shutdown, queued entries are left unacknowledged: still pending in
                    // Redis, they are reclaimed by the next sidecar.
                    _ = shutdown.cancelled() => return,
                    work = receiver.recv() => match work { Some(work) => work, None => return },
                }
            };
            self.process(work, &shutdown).await;
        }
    }

    /// Hands one entry to the subscription runtime and acknowledges it per daprd 1.17+.
    async fn process(&self, work: Work, shutdown: &CancellationToken) {
        let Work { topic, entry, handler } = work;
        let message =
            Message { topic: topic.clone(), data: field_bytes(&entry, "data"), metadata: field_metadata(&entry) };
        // The delivery runs on a task of its own, like daprd's delivery on a background
        // context: hitting processingTimeout only decides whether we acknowledge.
        let mut delivery = tokio::spawn(handler(message));
        let deadline = self.settings.redelivery.map(|r| r.processing_timeout);
        let outcome = tokio::select! {
            done = &mut delivery => Some(done),
            _ = sleep_or_forever(deadline) => None,
            _ = shutdown_then_grace(shutdown) => None,
        };
        let acknowledge = match outcome {
            Some(Ok(Ok(()))) => true,
            Some(Ok(Err(error))) => {
                tracing::warn!(%topic, id = %entry.id, %error, "delivery failed; acknowledged anyway (daprd 1.17+ redis semantics)");
                true
            }
            Some(Err(panic)) => {
                tracing::error!(%topic, id = %entry.id, %panic, "delivery task failed; left pending");
                false
            }
            None => {
                tracing::warn!(%topic, id = %entry.id, "delivery not finished in time; left pending for redelivery");
                false
            }
        };
        if acknowledge {
            self.ack(&topic, &[entry.id.as_str()]).await;
        }
    }

    async fn ack(&self, topic: &str, ids: &[&str]) {
        let acked: redis::RedisResult<i64> = self.commands.clone().xack(topic, &self.settings.consumer_id, ids).await;
        if let Err(error) = acked {
            tracing::warn!(%topic, ?ids, %error, "XACK failed; the entry will be redelivered");
        }
    }

    /// daprd's redelivery loop: at subscribe time and then every `redeliverInterval`, claim
    /// entries that have been pending for at least `processingTimeout` and deliver them again.
    async fn reclaim_loop(self, topic: String, handler: Handler, redelivery: Redelivery, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.reclaim_once(&topic, &handler, redelivery, &shutdown).await {
                tracing::warn!(%topic, %error, "reclaiming pending entries failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(redelivery.interval) => {}
            }
        }
    }

    pub async fn reclaim_once(
        &self,
        topic: &str,
        handler: &Handler,
        redelivery: Redelivery,
        shutdown: &CancellationToken,
    ) -> Result<usize, BrokerError> {
        let consumer = &self.settings.consumer_id;
        let mut conn = self.commands.clone();
        let pending: StreamPendingCountReply =
            conn.xpending_count(topic, consumer, "-", "+", self.settings.queue_depth).await?;
        let min_idle = redelivery.processing_timeout.as_millis() as usize;
        let stale: Vec<String> =
            pending.ids.into_iter().filter(|p| p.last_delivered_ms >= min_idle).map(|p| p.id).collect();
        if stale.is_empty() {
            return Ok(0);
        }
        let claimed: StreamClaimReply = conn.xclaim(topic, consumer, consumer, min_idle, &stale).await?;
        // Entries trimmed from the stream meanwhile cannot be delivered: acknowledge them so
        // they stop showing up as pending.
        let claimed_ids: Vec<&str> = claimed.ids.iter().map(|e| e.id.as_str()).collect();
        let gone: Vec<&str> = stale.iter().map(String::as_str).filter(|id| !claimed_ids.contains(id)).collect();
        if !gone.is_empty() {
            self.ack(topic, &gone).await;
        }
        let count = claimed.ids.len();
        for entry in claimed.ids {
            let work = Work { topic: topic.to_owned(), entry, handler: handler.clone() };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                sent = self.queue.send(work) => if sent.is_err() { break },
            }
        }
        Ok(count)
    }
}

fn field_bytes(entry: &StreamId, field: &str) -> Bytes {
    match entry.map.get(field) {
        Some(redis::Value::BulkString(bytes)) => Bytes::from(bytes.clone()),
        Some(redis::Value::SimpleString(text)) => Bytes::from(text.clone()),
        _ => Bytes::new(),
    }
}

/// The `metadata` field: a JSON object of strings; anything else reads as no metadata.
fn field_metadata(entry: &StreamId) -> BTreeMap<String, String> {
    let raw = field_bytes(entry, "metadata");
    serde_json::from_slice::<HashMap<String, serde_json::Value>>(&raw)
        .map(|map| {
            map.into_iter().map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect()
        })
        .unwrap_or_default()
}

fn log_read_error(topic: &str, error: &redis::RedisError) {
    tracing::warn!(%topic, %error, "reading from Redis failed; retrying");
}

async fn pause(shutdown: &CancellationToken, failures: u32) {
    let delay = Duration::from_millis(100 * u64::from(failures.min(20)));
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

async fn sleep_or_forever(limit: Option<Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

async fn shutdown_then_grace(shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    tokio::time::sleep(SHUTDOWN_GRACE).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::metadata;

    #[test]
    fn settings_follow_daprds_code_defaults() {
        let settings =
            RedisSettings::from_metadata(&metadata(&[("redisHost", "localhost:6379")]), "notification").unwrap();
        assert_eq!(settings.url, "redis://localhost:6379/0");
        assert_eq!(settings.consumer_id, "notification");
        assert_eq!((settings.queue_depth, settings.concurrency), (100, 10));
        assert_eq!(
            settings.redelivery,
            Some(Redelivery { interval: Duration::from_secs(15), processing_timeout: Duration::from_secs(60) })
        );
    }

    #[test]
    fn settings_read_overrides_and_reject_garbage() {
        let settings = RedisSettings::from_metadata(
            &metadata(&[
                ("redishost", "redis.local:6380"),
                ("redisPassword", "p@ss"),
                ("redisDB", "2"),
                ("consumerID", "group-a"),
                ("processingTimeout", "2s"),
                ("redeliverInterval", "500"),
                ("maxLenApprox", "1000"),
            ]),
            "app",
        )
        .unwrap();
        assert_eq!(settings.url, "redis://:p%40ss@redis.local:6380/2");
        assert_eq!(settings.consumer_id, "group-a");
        assert_eq!(
            settings.redelivery,
            Some(Redelivery { interval: Duration::from_millis(500), processing_timeout: Duration::from_secs(2) })
        );
        assert_eq!(settings.max_len_approx, Some(1000));
        let disabled =
            RedisSettings::from_metadata(&metadata(&[("redisHost", "h:1"), ("processingTimeout", "0")]), "a");
        assert_eq!(disabled.unwrap().redelivery, None);
        assert!(RedisSettings::from_metadata(&metadata(&[]), "a").is_err());
        assert!(RedisSettings::from_metadata(&metadata(&[("redisHost", "h:1"), ("queueDepth", "x")]), "a").is_err());
    }
}
