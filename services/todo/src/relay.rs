//! The outbox relay: a background task that publishes pending events through the Dapr sidecar.
//!
//! Guarantees (each has a test in `tests/api/relay.rs`):
//! - at least once: an event is marked published only after daprd answered 2xx; a crash in
//!   between means it is published again after restart (same CloudEvent id);
//! - per-todo order: only the oldest pending event of a todo is ever claimed (see
//!   [`queue::claim`]), so a todo's next event waits until the previous one is published;
//! - no loss: every failure (connection refused, timeout, any non-2xx) is logged with daprd's
//!   answer and retried with capped exponential backoff and jitter; other todos keep flowing
//!   meanwhile. An event daprd refuses for good (403, 404) for `RELAY_PARK_AFTER_MS` is parked
//!   instead: kept, its todo's later events waiting behind it, until an operator retries or
//!   discards it (`crate::http::admin`);
//! - replicas: rows are claimed with a lease (and `FOR UPDATE SKIP LOCKED` on PostgreSQL), so
//!   several relays share the work without double-publishing in steady state.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dapr_events::publish::CLOUDEVENTS_JSON;
use dapr_events::{Backoff, CloudEvent, DaprPublisher, TodoEventType};
use futures::StreamExt;
use serde_json::value::RawValue;
use service_kit::db::Database;
use service_kit::{telemetry, trace_context};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::RelaySettings;
use crate::outbox::StoredEvent;
use crate::outbox::queue;

type Result<T, E = sqlx::Error> = std::result::Result<T, E>;

pub struct Relay {
    db: Database,
    publisher: DaprPublisher,
    settings: RelaySettings,
    /// CloudEvent `source` (the app id).
    source: String,
    /// This instance's lease owner id.
    owner: String,
    wakeup: Arc<Notify>,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub claimed: usize,
    pub published: usize,
    /// When the soonest failed event of this round may be retried.
    pub next_retry_in: Option<Duration>,
}

impl Relay {
    pub fn new(
        db: Database,
        publisher: DaprPublisher,
        settings: RelaySettings,
        source: String,
        wakeup: Arc<Notify>,
    ) -> Self {
        // Registered at 0, so `rate()` and `increase()` see every outcome from the first scrape.
        for outcome in ["published", "failed", "parked"] {
            metrics::counter!(PUBLISHES, "outcome" => outcome).increment(0);
        }
        Self { db, publisher, settings, source, owner: Uuid::new_v4().to_string(), wakeup }
    }

    /// This instance's lease owner id: what it claims is leased under it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs until `shutdown`; a round in progress (its publishes and their bookkeeping) always
    /// completes, so shutdown never leaves an event published but unmarked by choice.
    pub async fn run(self, shutdown: CancellationToken) {
        let health_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = self.publisher.wait_until_outbound_ready(health_backoff) => {}
        }
        let database_backoff = Backoff::new(self.settings.retry_initial, self.settings.retry_max);
        let mut database_failures = 0u32;
        while !shutdown.is_cancelled() {
            let pause = match self.run_once().await {
                Ok(round) if round.claimed > 0 => {
                    database_failures = 0;
                    // More may be waiting (a todo's next event became publishable just now).
                    continue;
                }
                Ok(round) => {
                    database_failures = 0;
                    round.next_retry_in.map_or(self.settings.poll_interval, |d| d.min(self.settings.poll_interval))
                }
                Err(error) => {
                    tracing::error!(%error, "relay could not read the outbox; retrying");
                    database_failures = database_failures.saturating_add(1);
                    database_backoff.delay(database_failures - 1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!("relay stopped");
    }

    /// Claims a batch and publishes it. Events in a batch belong to different todos (one head
    /// per todo), so they are published concurrently; the successes are marked together when
    /// the last publish of the round has answered (or timed out).
    pub async fn run_once(&self) -> Result<Round> {
        let now = epoch_millis();
        let lease_until = now + self.settings.lease.as_millis() as i64;
        let batch = queue::claim(&self.db, &self.owner, now, lease_until, self.settings.batch_size.into()).await?;
        let claimed = batch.len();
        let outcomes: Vec<(Uuid, Option<Duration>)> = futures::stream::iter(batch)
            .map(|event| self.publish_one(event))
            .buffer_unordered(self.settings.batch_size as usize)
            .collect::<Vec<Result<_>>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let published: Vec<Uuid> = outcomes.iter().filter(|(_, retry)| retry.is_none()).map(|(id, _)| *id).collect();
        queue::mark_published(&self.db, &published, chrono::Utc::now()).await?;
        Ok(Round {
            claimed,
            published: published.len(),
            next_retry_in: outcomes.iter().filter_map(|(_, retry)| *retry).min(),
        })
    }

    /// Publishes one event in a producer span of the event's trace; a failure is recorded
    /// right away. Returns the event id and, for a failure, the delay before its retry.
    async fn publish_one(&self, event: StoredEvent) -> Result<(Uuid, Option<Duration>)> {
        let span = publish_span(&event);
        self.publish_in_span(event).instrument(span).await
    }

    async fn publish_in_span(&self, event: StoredEvent) -> Result<(Uuid, Option<Duration>)> {
        let body = serde_json::to_vec(&cloud_event(&event, &self.source)).expect("a CloudEvent serialises");
        let todo_id = event.todo_id.to_string();
        // daprd's publish span is this span's child: the header names this span. The envelope
        // keeps the context the event was written in (see `cloud_event`).
        let producer = trace_context::current();
        let started = Instant::now();
        let outcome = self
            .publisher
            .publish_bytes(
                &event.topic,
                CLOUDEVENTS_JSON,
                body,
                Some(&todo_id),
                producer.as_ref().map(|p| p.traceparent.as_str()),
            )
            .await;
        metrics::histogram!(PUBLISH_DURATION).record(started.elapsed());
        let Err(error) = outcome else {
            tracing::debug!(event_id = %event.event_id, topic = %event.topic, "published");
            metrics::counter!(PUBLISHES, "outcome" => "published").increment(1);
            return Ok((event.event_id, None));
        };
        tracing::Span::current().record("otel.status_code", "ERROR");
        let attempt = u32::try_from(event.attempts).unwrap_or(u32::MAX);
        let retry_in = Backoff::new(self.settings.retry_initial, self.settings.retry_max).delay(attempt);
        let next_attempt = epoch_millis() + retry_in.as_millis() as i64;
        let message = error.to_string();
        if error.is_permanent() {
            tracing::error!(
                event_id = %event.event_id, todo_id = %event.todo_id, topic = %event.topic,
                attempt = attempt + 1, retry_in_ms = retry_in.as_millis() as u64, error = %message,
                "publish rejected; this needs a configuration fix (pubsub name, scopes, token); retrying"
            );
        } else {
            tracing::warn!(
                event_id = %event.event_id, todo_id = %event.todo_id, topic = %event.topic,
                attempt = attempt + 1, retry_in_ms = retry_in.as_millis() as u64, error = %message,
                "publish failed; retrying"
            );
        }
        let now = epoch_millis();
        let refused_at = error.is_refusal().then_some(now);
        queue::mark_failed(&self.db, event.event_id, next_attempt, &message, refused_at).await?;
        let mut outcome = "failed";
        let park_after = self.settings.park_after;
        if refused_at.is_some()
            && queue::park_if_refused_since(
                &self.db,
                event.event_id,
                now - park_after.as_millis() as i64,
                now,
                &message,
            )
            .await?
        {
            outcome = "parked";
            tracing::error!(
                event_id = %event.event_id, todo_id = %event.todo_id, topic = %event.topic, reason = %message,
                "event parked: daprd has refused it for {park_after:?}, and the todo's later events wait behind it; \
                 fix the configuration (component name, publishing scopes), then POST /admin/outbox/{}/retry",
                event.event_id
            );
        }
        metrics::counter!(PUBLISHES, "outcome" => outcome).increment(1);
        Ok((event.event_id, Some(retry_in)))
    }
}

/// Publishes by outcome: `published`, `failed` (to be retried) or `parked`.
pub const PUBLISHES: &str = "dapr_todo_relay_publishes_total";
/// How long daprd took to answer a publish, whatever the answer.
pub const PUBLISH_DURATION: &str = "dapr_todo_relay_publish_duration_seconds";

/// The producer span of one publish, a child of the span that wrote the event, so a todo's
/// trace runs from the request through the publish to every delivery.
fn publish_span(event: &StoredEvent) -> tracing::Span {
    let span = telemetry::producer_span(&event.topic, &event.event_id.to_string());
    if let Some(traceparent) = &event.traceparent {
        trace_context::continue_from(&span, traceparent, event.tracestate.as_deref());
    }
    span
}

fn epoch_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The CloudEvent a stored event is published as, `source` being the app id. Deterministic:
/// publishing the row again yields the same envelope, same `id` included, so consumers can
/// deduplicate. `GET /todos/{id}/events` shows the same envelopes.
pub fn cloud_event(stored: &StoredEvent, source: &str) -> CloudEvent<Box<RawValue>> {
    // The payload was serialised by us when the event was appended and goes out byte for byte.
    // Should it ever not be JSON, it is published as a JSON string: visible, not lost.
    let data = RawValue::from_string(stored.payload.clone()).unwrap_or_else(|_| {
        RawValue::from_string(serde_json::to_string(&stored.payload).expect("a string serialises"))
            .expect("a JSON string is JSON")
    });
    let mut event = CloudEvent::new(stored.event_id.to_string(), source, stored.event_type.clone(), data)
        .with_trace(stored.traceparent.clone(), stored.tracestate.clone());
    event.subject = Some(stored.todo_id.to_string());
    event.time = Some(stored.created_at);
    event.dataschema = stored.event_type.parse::<TodoEventType>().ok().map(TodoEventType::schema_uri);
    event.correlationid = Some(stored.correlation_id.clone());
    event.causationid = stored.causation_id.clone();
    event
}
