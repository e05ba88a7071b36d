//! The outbox relay: a background task that publishes pending events through the Dapr sidecar,
//! in rounds (`RELAY_WORKERS` of them in flight): claim up to `RELAY_BATCH_SIZE` events, send each topic's with one bulk
//! publish (`POST /v1.0-alpha1/publish/bulk/…`, split to stay under 1 MiB), record the outcomes
//! in one transaction.
//!
//! Guarantees (each has a test in `tests/api/relay.rs`):
//! - at least once: an event is marked published only after daprd answered 2xx for it (a bulk
//!   answer names the entries that failed); a crash in between means it is published again
//!   after restart (same CloudEvent id);
//! - per-todo order: only the oldest pending event of a todo is ever claimed (see
//!   [`queue::claim`]), so a todo's next event waits until the previous one is published, and no
//!   request holds two events of one todo (daprd publishes a request's entries in no defined
//!   order);
//! - no loss: every failure (timeout, any non-2xx) is recorded with daprd's answer and retried
//!   with capped exponential backoff and jitter; other todos keep flowing meanwhile. A sidecar
//!   that refuses connections fails nothing: the relay waits for its outbound health and resumes
//!   the moment it answers, with no backoff left to sit out. The log sums failures up
//!   ([`FailureLog`]) instead of a line per event. An event daprd refuses for good (403, 404)
//!   for `RELAY_PARK_AFTER_MS` is parked instead: kept, its todo's later events waiting behind
//!   it, until an operator retries or discards it (`crate::http::admin`);
//! - replicas: rows are claimed with a lease (and `FOR UPDATE SKIP LOCKED` on PostgreSQL), so
//!   several relays share the work without double-publishing in steady state.
//!
//! New todos' events mostly skip the claim: the group commit writes them leased to this relay
//! and hands them over once committed (`crate::outbox::handoff`, which says why that keeps the
//! guarantees). A round publishes what was handed over, and claims as well when something may
//! be waiting that only a claim finds: a commit of other events, released events, a claim
//! that filled its share, a published event whose todo may have a next one, a retry come due,
//! or `RELAY_POLL_INTERVAL_MS` since the last claim (other replicas' events, expired leases).
//! A claim always gets at least half the batch.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dapr_events::{Backoff, BulkEntry, BulkPublishError, CloudEvent, DaprPublisher, PublishError, TodoEventType};
use futures::StreamExt;
use serde_json::value::RawValue;
use service_kit::db::Database;
use service_kit::telemetry::{self, Messages};
use service_kit::trace_context;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::RelaySettings;
use crate::outbox::StoredEvent;
use crate::outbox::handoff::{Handed, Handoff};
use crate::outbox::queue::{self, FailedAttempt, epoch_millis};

type Result<T, E = sqlx::Error> = std::result::Result<T, E>;

pub struct Relay {
    db: Database,
    publisher: DaprPublisher,
    settings: RelaySettings,
    /// CloudEvent `source` (the app id).
    source: String,
    /// This instance's lease owner id.
    owner: String,
    handoff: Arc<Handoff>,
    /// When a round claims without being asked to by a commit (epoch ms): the poll interval
    /// after the last claim, and when failed events' retries come due ([`Relay::retries`]).
    next_poll_at: AtomicI64,
    retry_due: Mutex<BinaryHeap<Reverse<i64>>>,
    failures: Mutex<FailureLog>,
    /// Set by the worker that found the sidecar refusing connections; every worker then waits
    /// on the one health poll (`sidecar_gate`) instead of trying a round of its own.
    sidecar_unreachable: AtomicBool,
    sidecar_gate: tokio::sync::Mutex<()>,
    /// Rounds that only publish what was handed over ([`HANDED_ROUNDS_IN_FLIGHT`]).
    handed_rounds: tokio::sync::Semaphore,
    /// Events dequeued since the queue was last vacuumed ([`queue::vacuum`]), whether a
    /// worker is vacuuming it now, and whether the last vacuum failed (logged once per run of
    /// failures: a refused vacuum would otherwise be a line every 2,000 events).
    dequeued_since_vacuum: AtomicU64,
    vacuuming: AtomicBool,
    vacuum_failing: AtomicBool,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub claimed: usize,
    pub published: usize,
    /// When the soonest failed event of this round may be retried.
    pub next_retry_in: Option<Duration>,
    /// daprd refused the connection: the round's unpublished events were released untried.
    pub sidecar_unreachable: bool,
}

/// What one publish came to.
enum Outcome {
    Published,
    /// daprd answered with a failure, or not in time: recorded, and retried after a backoff.
    Failed {
        attempt: FailedAttempt,
        retry_in: Duration,
        permanent: bool,
        topic: String,
    },
    /// daprd did not take the connection: nothing was handed over, no attempt is counted.
    Unreachable(String),
}

/// The most a bulk publish request carries, well under the 4 MiB daprd takes by default
/// (`dapr.io/http-max-request-size`); a round with more of one topic sends several.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// What an entry adds to its event's data: the CloudEvent attributes and the entry's own.
const ENVELOPE_BYTES: usize = 1024;

/// How often publish failures are summed up in the log while they go on.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How many events the relay dequeues between two vacuums of the queue (PostgreSQL): a
/// quarter of a second's worth at full speed, a few hundred kB of dead rows.
const VACUUM_AFTER_DEQUEUED: u64 = 2_000;

/// About this many rounds that claim nothing, only publishing what the group commit handed
/// over, run at once (a worker decides before it waits for a permit, and again after); rounds
/// that claim, as in a backlog, may use every worker. Under a steady stream of creates, more
/// would only split it into more, smaller requests and marks: with four workers free, each
/// commit woke one (docs/performance.md, "four rounds in flight").
const HANDED_ROUNDS_IN_FLIGHT: usize = 2;

/// How often the relay asks a sidecar that refused connections for its outbound health: its
/// backlog goes out within this long of the sidecar being back.
const SIDECAR_HEALTH_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(500));

impl Relay {
    pub fn new(
        db: Database,
        publisher: DaprPublisher,
        settings: RelaySettings,
        source: String,
        handoff: Arc<Handoff>,
    ) -> Self {
        // Registered at 0, so `rate()` and `increase()` see every outcome from the first scrape.
        for outcome in ["published", "failed", "parked"] {
            metrics::counter!(PUBLISHES, "outcome" => outcome).increment(0);
        }
        let failures = Mutex::new(FailureLog::default());
        let owner = settings.instance.clone().unwrap_or_else(|| Uuid::new_v4().to_string());
        Self {
            db,
            publisher,
            settings,
            source,
            owner,
            handoff,
            next_poll_at: AtomicI64::new(0),
            retry_due: Mutex::default(),
            failures,
            sidecar_unreachable: AtomicBool::new(false),
            sidecar_gate: tokio::sync::Mutex::new(()),
            handed_rounds: tokio::sync::Semaphore::new(HANDED_ROUNDS_IN_FLIGHT),
            dequeued_since_vacuum: AtomicU64::new(0),
            vacuuming: AtomicBool::new(false),
            vacuum_failing: AtomicBool::new(false),
        }
    }

    /// The database the relay works through.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// This instance's lease owner id: what it claims is leased under it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs until `shutdown`, with `RELAY_WORKERS` rounds in flight at once; a round in progress
    /// (its publishes and their bookkeeping) always completes, so shutdown never leaves an event
    /// published but unmarked by choice.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.settings.instance.is_some() {
            self.release_predecessors_leases().await;
        }
        let health_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = self.publisher.wait_until_outbound_ready(health_backoff) => {}
        }
        let relay = Arc::new(self);
        let capacity = (relay.settings.batch_size * relay.settings.workers * 2) as usize;
        relay.handoff.open(&relay.owner, relay.settings.lease, capacity);
        // Closed however this ends, aborted included: creates written after it are claimed.
        let taking = CloseOnDrop(relay.handoff.clone());
        let workers = (0..relay.settings.workers).map(|_| {
            let (relay, shutdown) = (relay.clone(), shutdown.clone());
            async move { relay.work(&shutdown).await }
        });
        futures::future::join_all(workers).await;
        drop(taking);
        // Events handed over but not published yet: claimable by the next start or another
        // replica at once, rather than when their leases run out.
        match queue::release_leases(&relay.db, &relay.owner).await {
            Ok(released) => tracing::info!(released, "relay stopped"),
            Err(error) => tracing::warn!(%error, "relay stopped; its unpublished events wait out their leases"),
        }
    }

    /// Gives up the leases a previous run of this instance (`RELAY_INSTANCE`) held when it died,
    /// so its unpublished events are claimable at once, by any replica, rather than when the
    /// leases run out. Before this run leases anything: none of its own can be among them.
    async fn release_predecessors_leases(&self) {
        match queue::release_leases(&self.db, &self.owner).await {
            Ok(0) => {}
            Ok(released) => {
                tracing::info!(released, instance = %self.owner, "released the leases of this instance's last run")
            }
            Err(error) => {
                tracing::warn!(%error, "could not release this instance's old leases; their events wait out the leases")
            }
        }
    }

    /// One worker: a round, then the next at once while there was work, else a pause until a
    /// commit wakes it, a retry comes due, or the poll interval passes.
    async fn work(&self, shutdown: &CancellationToken) {
        let database_backoff = Backoff::new(self.settings.retry_initial, self.settings.retry_max);
        let mut database_failures = 0u32;
        while !shutdown.is_cancelled() {
            if self.sidecar_unreachable.load(Ordering::Acquire) {
                self.wait_for_sidecar(shutdown).await;
            }
            // A round that will only publish what was handed over waits for a permit first, and
            // decides afresh once it has one.
            let handed_only = match self.claim_due(epoch_millis()) {
                true => None,
                false => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    permit = self.handed_rounds.acquire() => Some(permit.expect("the semaphore is never closed")),
                },
            };
            let outcome = self.run_once().await;
            drop(handed_only);
            let pause = match outcome {
                Ok(round) if round.sidecar_unreachable => {
                    database_failures = 0;
                    self.sidecar_unreachable.store(true, Ordering::Release);
                    if let Err(error) = self.stop_taking_events().await {
                        tracing::warn!(%error, "could not release handed-over events; they wait out their lease");
                    }
                    continue;
                }
                Ok(round) if round.claimed > 0 => {
                    database_failures = 0;
                    // More may be waiting (a todo's next event became publishable just now).
                    continue;
                }
                Ok(round) => {
                    database_failures = 0;
                    let pause = self.next_claim_in().min(self.settings.poll_interval);
                    round.next_retry_in.map_or(pause, |d| d.min(pause))
                }
                Err(error) => {
                    tracing::error!(%error, "relay could not read the outbox; retrying");
                    database_failures = database_failures.saturating_add(1);
                    database_backoff.delay(database_failures - 1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.handoff.wait_for_commit() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// While daprd refuses connections, publishing would only fail event after event (each
    /// failure a write and a log line, and a backoff that outlasts the outage); the relay asks
    /// for its outbound health instead, and resumes the moment it answers.
    ///
    /// One worker polls; the others wait for it on the gate and find the sidecar back.
    async fn wait_for_sidecar(&self, shutdown: &CancellationToken) {
        let _polling = self.sidecar_gate.lock().await;
        if !self.sidecar_unreachable.load(Ordering::Acquire) {
            return;
        }
        let since = Instant::now();
        tracing::warn!(
            sidecar = %self.publisher.config().sidecar_url,
            "the Dapr sidecar refuses connections; publishing waits for its outbound health"
        );
        let (initial, max) = SIDECAR_HEALTH_BACKOFF;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.publisher.wait_until_outbound_ready(Backoff::new(initial, max)) => {
                self.sidecar_unreachable.store(false, Ordering::Release);
                self.handoff.resume();
                tracing::info!(unreachable_ms = since.elapsed().as_millis() as u64, "publishing resumes");
            }
        }
    }

    /// Takes what was handed over and claims when a claim is due (see the module
    /// documentation), then publishes the lot: one bulk publish per topic, all at once (and one
    /// per event daprd refused last time). Events in a batch belong to different todos (one
    /// head per todo), so no request holds two events of one todo and the order daprd
    /// publishes a request's entries in does not matter. The outcomes are recorded together
    /// once every request has answered (or timed out).
    pub async fn run_once(&self) -> Result<Round> {
        let now = epoch_millis();
        // Not merely because nothing was handed over: with several workers, most would find
        // nothing to take and claim in vain, a query each. The flag is taken first: a commit of
        // claimable events after it sets it again.
        let claim = self.handoff.take_claimable() | self.poll_or_retry_due(now);
        let batch_size = self.settings.batch_size as usize;
        // A claim gets at least half the batch, so a stream of new todos cannot crowd it out.
        let handed = self.handoff.take(if claim { batch_size / 2 } else { batch_size });
        let handed_todos: Vec<Uuid> = handed.iter().map(|h| h.event.todo_id).collect();
        let batch = match self.gather(handed, claim, now).await {
            Ok(batch) => batch,
            Err((error, handed)) => {
                self.handoff.give_back(handed);
                self.handoff.ask_for_claim();
                return Err(error);
            }
        };
        let claimed = batch.len();
        let published_claimed = batch.len() > handed_todos.len();
        // An event daprd refused last time goes alone: a refusal answers for a whole request,
        // and it should not hold back the others.
        // A request stays under MAX_REQUEST_BYTES (daprd refuses bodies over 4 MiB by default).
        let mut requests: BTreeMap<(String, Option<Uuid>, usize), Vec<StoredEvent>> = BTreeMap::new();
        let mut filling: HashMap<String, (usize, usize)> = HashMap::new();
        for event in batch {
            let alone = event.refused.then_some(event.event_id);
            let size = event.payload.len() + ENVELOPE_BYTES;
            let (request, bytes) = filling.entry(event.topic.clone()).or_default();
            if alone.is_none() && *bytes > 0 && *bytes + size > MAX_REQUEST_BYTES {
                (*request, *bytes) = (*request + 1, 0);
            }
            *bytes += if alone.is_none() { size } else { 0 };
            let request = if alone.is_none() { *request } else { 0 };
            requests.entry((event.topic.clone(), alone, request)).or_default().push(event);
        }
        let outcomes: Vec<(Uuid, Outcome)> = futures::stream::iter(requests)
            .map(|((topic, ..), events)| self.publish_topic(topic, events))
            .buffer_unordered(self.settings.batch_size as usize)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        let mut round = Round { claimed, ..Round::default() };
        let (mut published, mut untried, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        let mut unreachable = None;
        for (event_id, outcome) in outcomes {
            match outcome {
                Outcome::Published => published.push(event_id),
                Outcome::Unreachable(error) => {
                    untried.push(event_id);
                    unreachable = Some(error);
                }
                Outcome::Failed { attempt, retry_in, permanent, topic } => {
                    round.next_retry_in = Some(round.next_retry_in.map_or(retry_in, |d| d.min(retry_in)));
                    failures.push((attempt, permanent, topic));
                }
            }
        }
        round.published = published.len();
        round.sidecar_unreachable = !untried.is_empty();
        // Once these are out of the queue their todos' next events are claimable: a claim
        // skipped them while these were queued. Claimed events may have next events committed
        // before; handed-over ones only if `finished` says so.
        let followed = self.handoff.finished(handed_todos) | published_claimed;
        let marked = queue::mark_published(&self.db, &published, chrono::Utc::now()).await;
        if followed || marked.is_err() {
            self.handoff.ask_for_claim();
        }
        marked?;
        self.vacuum_queue_when_due(published.len()).await;
        queue::release_untried(&self.db, &untried, unreachable.as_deref().unwrap_or_default()).await?;
        if !untried.is_empty() {
            self.handoff.ask_for_claim();
        }
        let attempts: Vec<FailedAttempt> = failures.iter().map(|(attempt, ..)| attempt.clone()).collect();
        queue::mark_failed(&self.db, &attempts).await?;
        self.retries().extend(attempts.iter().map(|attempt| Reverse(attempt.next_attempt_ms)));
        for (attempt, _, topic) in failures.iter().filter(|(attempt, ..)| attempt.refused_at.is_some()) {
            self.park_if_refused_long_enough(attempt, topic).await?;
        }
        self.failures.lock().expect("the failure log is never poisoned").note(&failures, Instant::now());
        Ok(round)
    }

    /// The batch of a round: the events handed over, but not those whose lease is half gone
    /// (they waited while the relay could not keep up; another replica may claim them once it
    /// runs out), which are released for a claim to take; and, when `claim`, what a claim
    /// finds in the rest of the batch. On failure, the handed-over events that are still
    /// leased, to give back.
    async fn gather(
        &self,
        handed: Vec<Handed>,
        claim: bool,
        now: i64,
    ) -> std::result::Result<Vec<StoredEvent>, (sqlx::Error, Vec<Handed>)> {
        let fresh_until = now + (self.settings.lease / 2).as_millis() as i64;
        let (fresh, stale): (Vec<_>, Vec<_>) = handed.into_iter().partition(|h| h.lease_until_ms > fresh_until);
        if !stale.is_empty() {
            let ids: Vec<Uuid> = stale.iter().map(|h| h.event.event_id).collect();
            if let Err(error) = queue::release(&self.db, &self.owner, &ids).await {
                return Err((error, fresh.into_iter().chain(stale).collect()));
            }
            self.handoff.finished(stale.iter().map(|h| h.event.todo_id));
            self.handoff.ask_for_claim();
        }
        if !claim {
            return Ok(fresh.into_iter().map(|handed| handed.event).collect());
        }
        let room = self.settings.batch_size as usize - fresh.len();
        self.next_poll_at.store(now + self.settings.poll_interval.as_millis() as i64, Ordering::Release);
        let lease_until = now + self.settings.lease.as_millis() as i64;
        let claimed = match queue::claim(&self.db, &self.owner, now, lease_until, room as i64).await {
            Ok(claimed) => claimed,
            Err(error) => return Err((error, fresh)),
        };
        // The retries that came due were up for this claim; those due later stay.
        let mut retries = self.retries();
        while retries.peek().is_some_and(|Reverse(due)| *due <= now) {
            retries.pop();
        }
        drop(retries);
        if claimed.len() == room {
            // Possibly more waiting.
            self.handoff.ask_for_claim();
        }
        Ok(fresh.into_iter().map(|handed| handed.event).chain(claimed).collect())
    }

    /// Whether a round starting at `now` claims: a commit asked for it (the flag left as it
    /// is), the poll interval has passed, or a retry came due.
    fn claim_due(&self, now: i64) -> bool {
        self.handoff.claim_asked() || self.poll_or_retry_due(now)
    }

    fn poll_or_retry_due(&self, now: i64) -> bool {
        now >= self.next_poll_at.load(Ordering::Acquire)
            || self.retries().peek().is_some_and(|Reverse(due)| *due <= now)
    }

    /// When failed events' retries come due (epoch ms), soonest first.
    fn retries(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Reverse<i64>>> {
        self.retry_due.lock().expect("the retry times are never poisoned")
    }

    /// How long until a claim is due without a commit asking for one.
    fn next_claim_in(&self) -> Duration {
        let retry = self.retries().peek().map_or(i64::MAX, |Reverse(due)| *due);
        let due = self.next_poll_at.load(Ordering::Acquire).min(retry);
        Duration::from_millis(due.saturating_sub(epoch_millis()).max(0) as u64)
    }

    /// The sidecar refuses connections: nothing more is handed over until it is back, and
    /// what waits is released, for a claim to take once it is.
    async fn stop_taking_events(&self) -> Result<()> {
        let waiting: Vec<Uuid> = self.handoff.pause().into_iter().map(|handed| handed.event.event_id).collect();
        queue::release(&self.db, &self.owner, &waiting).await?;
        if !waiting.is_empty() {
            self.handoff.ask_for_claim();
        }
        Ok(())
    }

    /// Publishes one topic's events in one bulk request, in a producer span linked to each
    /// event's creation context (the span that wrote it), so an operator finds the publish from
    /// the todo's trace and the todo from the publish. Every delivery of an event continues the
    /// event's own context, which its envelope carries (see [`cloud_event`]).
    async fn publish_topic(&self, topic: String, events: Vec<StoredEvent>) -> Vec<(Uuid, Outcome)> {
        let span = telemetry::producer_span(&topic, Messages::Batch(events.len()));
        trace_context::link_each(&span, events.iter().filter_map(|event| event.traceparent.as_deref()));
        self.publish_in_span(&topic, events).instrument(span).await
    }

    async fn publish_in_span(&self, topic: &str, events: Vec<StoredEvent>) -> Vec<(Uuid, Outcome)> {
        let entries: Vec<BulkEntry> = events
            .iter()
            .map(|event| BulkEntry {
                entry_id: event.event_id.to_string(),
                event: serde_json::value::to_raw_value(&cloud_event(event, &self.source))
                    .expect("a CloudEvent serialises"),
                partition_key: Some(event.todo_id.to_string()),
            })
            .collect();
        // daprd's spans for the request are children of this one: the header names it.
        let producer = trace_context::current();
        let started = Instant::now();
        let outcome =
            self.publisher.publish_bulk(topic, &entries, producer.as_ref().map(|p| p.traceparent.as_str())).await;
        metrics::histogram!(PUBLISH_DURATION).record(started.elapsed());
        let failed: HashMap<String, String> = match outcome {
            Ok(()) => HashMap::new(),
            Err(BulkPublishError::Entries { failed, error }) => {
                tracing::debug!(%error, failed = failed.len(), "some entries were not published");
                let code = match &error {
                    PublishError::Rejected { status, error_code, .. } => {
                        format!("{status} {}", error_code.as_deref().unwrap_or("(no error code)"))
                    }
                    other => other.to_string(),
                };
                failed
                    .into_iter()
                    .map(|(id, entry_error)| (id, format!("daprd answered {code}: {entry_error}")))
                    .collect()
            }
            Err(BulkPublishError::Request(error)) => {
                tracing::Span::current().record("otel.status_code", "ERROR");
                if error.is_unreachable() {
                    tracing::debug!(%error, "not published: the sidecar is unreachable");
                    return events.iter().map(|e| (e.event_id, Outcome::Unreachable(error.to_string()))).collect();
                }
                let (message, refused, permanent) = (error.to_string(), error.is_refusal(), error.is_permanent());
                return events.iter().map(|e| (e.event_id, self.failure(e, &message, refused, permanent))).collect();
            }
        };
        if !failed.is_empty() {
            tracing::Span::current().record("otel.status_code", "ERROR");
        }
        tracing::debug!(events = events.len(), failed = failed.len(), "published");
        // Counted once per request: the counter is looked up by its labels at every call.
        let mut published = 0;
        let outcomes = events
            .iter()
            .map(|event| {
                // No id to format per event when the request succeeded whole.
                let failure = if failed.is_empty() { None } else { failed.get(&event.event_id.to_string()) };
                match failure {
                    None => {
                        published += 1;
                        (event.event_id, Outcome::Published)
                    }
                    // The broker failed this one after the component's retries: transient.
                    Some(message) => (event.event_id, self.failure(event, message, false, false)),
                }
            })
            .collect();
        metrics::counter!(PUBLISHES, "outcome" => "published").increment(published);
        outcomes
    }

    /// A failed attempt at `event`, retried after its backoff.
    fn failure(&self, event: &StoredEvent, message: &str, refused: bool, permanent: bool) -> Outcome {
        metrics::counter!(PUBLISHES, "outcome" => "failed").increment(1);
        let attempt = u32::try_from(event.attempts).unwrap_or(u32::MAX);
        let retry_in = Backoff::new(self.settings.retry_initial, self.settings.retry_max).delay(attempt);
        tracing::debug!(
            event_id = %event.event_id, todo_id = %event.todo_id, topic = %event.topic,
            attempt = attempt + 1, retry_in_ms = retry_in.as_millis() as u64, error = %message, "publish failed"
        );
        let now = epoch_millis();
        Outcome::Failed {
            attempt: FailedAttempt {
                event_id: event.event_id,
                next_attempt_ms: now + retry_in.as_millis() as i64,
                error: message.to_owned(),
                refused_at: refused.then_some(now),
            },
            retry_in,
            permanent,
            topic: event.topic.clone(),
        }
    }

    /// Vacuums the queue once `VACUUM_AFTER_DEQUEUED` events left it since the last time, one
    /// worker at a time. A failure costs only speed (autovacuum gets there later): logged when
    /// the failures begin and when they end, and the count starts over.
    async fn vacuum_queue_when_due(&self, dequeued: usize) {
        let since = self.dequeued_since_vacuum.fetch_add(dequeued as u64, Ordering::AcqRel) + dequeued as u64;
        if since < VACUUM_AFTER_DEQUEUED || self.vacuuming.swap(true, Ordering::AcqRel) {
            return;
        }
        self.dequeued_since_vacuum.store(0, Ordering::Release);
        match queue::vacuum(&self.db).await {
            Err(error) if !self.vacuum_failing.swap(true, Ordering::AcqRel) => tracing::warn!(
                %error, "could not vacuum the outbox queue; claims slow down until autovacuum does (logged once)"
            ),
            Err(error) => tracing::debug!(%error, "could not vacuum the outbox queue"),
            Ok(()) if self.vacuum_failing.swap(false, Ordering::AcqRel) => {
                tracing::info!("the outbox queue is vacuumed again")
            }
            Ok(()) => {}
        }
        self.vacuuming.store(false, Ordering::Release);
    }

    /// Parks an event daprd has refused for good for `RELAY_PARK_AFTER_MS`.
    async fn park_if_refused_long_enough(&self, attempt: &FailedAttempt, topic: &str) -> Result<()> {
        let now = epoch_millis();
        let park_after = self.settings.park_after;
        let refused_before = now - park_after.as_millis() as i64;
        if queue::park_if_refused_since(&self.db, attempt.event_id, refused_before, now, &attempt.error).await? {
            metrics::counter!(PUBLISHES, "outcome" => "parked").increment(1);
            tracing::error!(
                event_id = %attempt.event_id, %topic, reason = %attempt.error,
                "event parked: daprd has refused it for {park_after:?}, and the todo's later events wait behind it; \
                 fix the configuration (component name, publishing scopes), then POST /admin/outbox/{}/retry",
                attempt.event_id
            );
        }
        Ok(())
    }
}

/// Stops the hand-off when dropped.
struct CloseOnDrop(Arc<Handoff>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Publish failures in the log: the first after a quiet spell at once, with its error; then, as
/// long as they go on, one line per [`FAILURE_LOG_INTERVAL`] with how many failed and the last
/// error. A broken broker under load fails thousands of publishes a second; a line each would
/// bury everything else (each event's failure is at debug, and in its outbox row).
#[derive(Debug, Default)]
struct FailureLog {
    /// Since when failures are being summed up; `None` after an interval without any.
    window: Option<Instant>,
    failed: u64,
    permanent: u64,
    last_error: String,
}

/// A line [`FailureLog`] decided to write.
#[derive(Debug, PartialEq, Eq)]
enum FailureLine {
    First { event_id: Uuid, topic: String, error: String, permanent: bool },
    StillFailing { failed: u64, permanent: u64, seconds: u64, last_error: String },
}

impl FailureLog {
    /// Takes a round's failures and writes what is due.
    fn note(&mut self, failures: &[(FailedAttempt, bool, String)], now: Instant) {
        match self.record(failures, now) {
            Some(FailureLine::First { event_id, topic, error, permanent: true }) => tracing::error!(
                %event_id, %topic, %error,
                "publish rejected; this needs a configuration fix (pubsub name, scopes, token); retrying"
            ),
            Some(FailureLine::First { event_id, topic, error, permanent: false }) => {
                tracing::warn!(%event_id, %topic, %error, "publish failed; retrying")
            }
            Some(FailureLine::StillFailing { failed, permanent, seconds, last_error }) if permanent > 0 => {
                tracing::error!(failed, permanent, seconds, %last_error, "publishes still rejected; retrying")
            }
            Some(FailureLine::StillFailing { failed, seconds, last_error, .. }) => {
                tracing::warn!(failed, seconds, %last_error, "publishes still failing; retrying")
            }
            None => {}
        }
    }

    fn record(&mut self, failures: &[(FailedAttempt, bool, String)], now: Instant) -> Option<FailureLine> {
        if self.window.is_none() {
            let ((attempt, permanent, topic), rest) = failures.split_first()?;
            *self = Self { window: Some(now), ..Self::default() };
            self.count(rest);
            let (event_id, error) = (attempt.event_id, attempt.error.clone());
            return Some(FailureLine::First { event_id, topic: topic.clone(), error, permanent: *permanent });
        }
        self.count(failures);
        let since = self.window.filter(|since| now.duration_since(*since) >= FAILURE_LOG_INTERVAL)?;
        let line = (self.failed > 0).then(|| FailureLine::StillFailing {
            failed: self.failed,
            permanent: self.permanent,
            seconds: now.duration_since(since).as_secs(),
            last_error: std::mem::take(&mut self.last_error),
        });
        // After a quiet interval the next failure is news again.
        *self = Self { window: line.as_ref().map(|_| now), ..Self::default() };
        line
    }

    fn count(&mut self, failures: &[(FailedAttempt, bool, String)]) {
        self.failed += failures.len() as u64;
        self.permanent += failures.iter().filter(|(_, permanent, _)| *permanent).count() as u64;
        if let Some((attempt, ..)) = failures.last() {
            self.last_error = attempt.error.clone();
        }
    }
}

/// Publishes by outcome: `published`, `failed` (to be retried) or `parked`.
pub const PUBLISHES: &str = "dapr_todo_relay_publishes_total";
/// How long daprd took to answer a publish request (one topic's events of a round), whatever
/// the answer.
pub const PUBLISH_DURATION: &str = "dapr_todo_relay_publish_duration_seconds";

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

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(count: usize, permanent: bool) -> Vec<(FailedAttempt, bool, String)> {
        (0..count)
            .map(|i| {
                let attempt = FailedAttempt {
                    event_id: Uuid::now_v7(),
                    next_attempt_ms: 0,
                    error: format!("error {i}"),
                    refused_at: None,
                };
                (attempt, permanent, "todos.task.created".to_owned())
            })
            .collect()
    }

    #[test]
    fn failures_are_logged_once_then_summed_up_per_interval() {
        let mut log = FailureLog::default();
        let start = Instant::now();
        let at = |seconds: f64| start + Duration::from_secs_f64(seconds);
        assert_eq!(log.record(&[], at(0.0)), None, "nothing to say without failures");
        let first = log.record(&failures(100, false), at(0.0));
        assert!(matches!(first, Some(FailureLine::First { ref error, permanent: false, .. }) if error == "error 0"));
        // A thousand rounds of failures within the interval: not one line more.
        for i in 0..1000 {
            assert_eq!(log.record(&failures(100, i == 500), at(0.001 * f64::from(i))), None);
        }
        let summary = log.record(&failures(1, false), at(10.0));
        assert_eq!(
            summary,
            Some(FailureLine::StillFailing {
                failed: 99 + 100_000 + 1,
                permanent: 100,
                seconds: 10,
                last_error: "error 0".into()
            })
        );
        // A quiet interval closes the spell; the next failure is reported at once.
        assert_eq!(log.record(&[], at(20.0)), None);
        assert!(matches!(log.record(&failures(1, true), at(20.5)), Some(FailureLine::First { permanent: true, .. })));
    }
}
