//! The transactional outbox: every change to a todo writes its event in the same transaction
//! ([`UnitOfWork`]), and the relay publishes it from there ([`queue`], `crate::relay`).
//!
//! `outbox_events` is never pruned: it is the todo's audit trail (`GET /todos/{id}/events`).
//! `outbox_queue` holds one row per event still to publish and is the only table the relay's
//! claim reads, so a long history costs it nothing (see the migration for why it is a table of
//! its own).

pub mod handoff;
pub mod metrics;
pub mod parked;
pub mod queue;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dapr_events::{TodoEventData, TodoEventType, timestamp};
use service_kit::db::column;
use service_kit::db::dialect::{AnyQuery, PerRowCount, value_rows};
use service_kit::trace_context::{self, W3cContext};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Row};
use uuid::Uuid;

use self::handoff::{Handoff, Lease};

/// What an event carries besides its data: the business transaction it belongs to and what
/// caused it. Whoever asks for a change fills it in (the HTTP layer from the request's
/// headers). Its W3C trace context is the span that appends it ([`UnitOfWork::append`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventContext {
    pub correlation_id: String,
    /// The message (command or event) that caused this change, when the caller knows it.
    pub causation_id: Option<String>,
}

/// The outbox of one service instance: starts units of work, and tells the relay when one of
/// them committed an event ([`Handoff`]).
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    handoff: Arc<Handoff>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Told of every commit that wrote an event, so the relay publishes right away instead of
    /// at its next poll, and handed new todos' events (`crate::todos::group_commit`).
    pub fn handoff(&self) -> Arc<Handoff> {
        self.handoff.clone()
    }

    /// Begins a transaction on `pool` in which a change and its events are written.
    pub async fn begin(&self, pool: &AnyPool) -> Result<UnitOfWork, sqlx::Error> {
        Ok(UnitOfWork { tx: service_kit::db::begin(pool).await?, handoff: self.handoff.clone(), appended: Vec::new() })
    }
}

/// One change and its events, committed together or not at all. It dereferences to the
/// transaction's connection for the change's own statements; committing it wakes the relay
/// when an event was appended, so no command has to remember to.
pub struct UnitOfWork {
    tx: sqlx::Transaction<'static, Any>,
    handoff: Arc<Handoff>,
    /// The todos of the events [`UnitOfWork::append`] appended.
    appended: Vec<Uuid>,
}

impl UnitOfWork {
    /// Appends the event of this unit's change and queues it for the relay. The event carries
    /// the current span's trace context (the unit of work's span, inside the request's), so the
    /// relay's publish and every delivery of the event join that trace.
    pub async fn append(
        &mut self,
        event_type: TodoEventType,
        data: &TodoEventData,
        context: &EventContext,
        created_at: DateTime<Utc>,
    ) -> Result<Uuid, sqlx::Error> {
        let event = NewEvent::new(event_type, data, context, trace_context::current(), created_at);
        insert_all(&mut self.tx, &[&event], None).await?;
        self.appended.push(event.todo_id);
        Ok(event.event_id)
    }

    /// Appends new todos' events made beforehand, in the request spans they belong to
    /// (`crate::todos::group_commit`): one statement per table, whatever their number. Their
    /// queue rows are written under `lease` when it is given, for the events to be handed over
    /// after the commit; the caller wakes the relay then.
    pub async fn append_new_todos_events(
        &mut self,
        events: &[&NewEvent],
        lease: Option<&Lease>,
    ) -> Result<(), sqlx::Error> {
        insert_all(&mut self.tx, events, lease).await
    }

    /// Commits; wakes the relay when [`UnitOfWork::append`] appended an event.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        if !self.appended.is_empty() {
            self.handoff.claimable_committed(self.appended);
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for UnitOfWork {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for UnitOfWork {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// An event as it is appended: its `outbox_events` row, of which `outbox_queue` copies the
/// key. Made in the transaction's span ([`UnitOfWork::append`]) or in the request's, when
/// another task writes it (`crate::todos::group_commit`).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub todo_id: Uuid,
    pub seq: i64,
    pub event_type: TodoEventType,
    /// The CloudEvent `data`, as JSON text.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub trace: Option<W3cContext>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
}

impl NewEvent {
    pub fn new(
        event_type: TodoEventType,
        data: &TodoEventData,
        context: &EventContext,
        trace: Option<W3cContext>,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            todo_id: data.todo_id,
            seq: data.version,
            event_type,
            payload: serde_json::to_string(data).expect("event data serialises"),
            created_at,
            trace,
            correlation_id: context.correlation_id.clone(),
            causation_id: context.causation_id.clone(),
        }
    }

    /// The event as the relay would read it back once committed.
    pub fn to_stored(&self) -> StoredEvent {
        let trace = self.trace.as_ref();
        StoredEvent {
            event_id: self.event_id,
            todo_id: self.todo_id,
            seq: self.seq,
            event_type: self.event_type.as_str().to_owned(),
            topic: self.event_type.topic().to_owned(),
            payload: self.payload.clone(),
            created_at: self.created_at,
            traceparent: trace.map(|t| t.traceparent.clone()),
            tracestate: trace.and_then(|t| t.tracestate.clone()),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            published_at: None,
            discarded_at: None,
            attempts: 0,
            refused: false,
        }
    }
}

/// The columns of an appended event's `outbox_events` row, in [`bind_event`]'s order, and how
/// many; `outbox_queue` gets [`QUEUE_COLUMNS`] of the same row.
pub const INSERT_COLUMNS: &str = "event_id, todo_id, seq, event_type, topic, payload, created_at, traceparent, \
     tracestate, correlation_id, causation_id";
pub const INSERT_COLUMN_COUNT: usize = 11;
pub const QUEUE_COLUMNS: &str = "event_id, todo_id, seq";
/// The queue's lease columns, which [`bind_lease`] binds.
pub const LEASE_COLUMNS: &str = "lease_owner, lease_expires_at";

/// Binds a queue row's lease: owner and end, both NULL when the row is not leased.
pub fn bind_lease<'q>(query: AnyQuery<'q>, lease: Option<&Lease>) -> AnyQuery<'q> {
    query.bind(lease.map(|lease| lease.owner.to_string())).bind(lease.map(|lease| lease.until_ms))
}

/// Binds an appended event's values, in [`INSERT_COLUMNS`] order.
pub fn bind_event<'q>(query: AnyQuery<'q>, event: &'q NewEvent) -> AnyQuery<'q> {
    let trace = event.trace.as_ref();
    query
        .bind(event.event_id.to_string())
        .bind(event.todo_id.to_string())
        .bind(event.seq)
        .bind(event.event_type.as_str())
        .bind(event.event_type.topic())
        .bind(event.payload.as_str())
        .bind(timestamp::format(&event.created_at))
        .bind(trace.map(|t| t.traceparent.as_str()))
        .bind(trace.and_then(|t| t.tracestate.as_deref()))
        .bind(event.correlation_id.as_str())
        .bind(event.causation_id.as_deref())
}

/// Writes events and queues them for the relay, leased under `lease` when given: one statement
/// per table, whatever their number.
async fn insert_all(conn: &mut AnyConnection, events: &[&NewEvent], lease: Option<&Lease>) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    static HISTORY: PerRowCount = PerRowCount::new(64, |rows| {
        format!("INSERT INTO outbox_events ({INSERT_COLUMNS}) VALUES {}", value_rows(1, INSERT_COLUMN_COUNT, rows))
    });
    static QUEUE: PerRowCount = PerRowCount::new(64, |rows| {
        format!("INSERT INTO outbox_queue ({QUEUE_COLUMNS}, {LEASE_COLUMNS}) VALUES {}", value_rows(1, 5, rows))
    });
    let history = HISTORY.get(events.len());
    events.iter().fold(sqlx::query(&history), |query, event| bind_event(query, event)).execute(&mut *conn).await?;
    let queue = QUEUE.get(events.len());
    events
        .iter()
        .fold(sqlx::query(&queue), |query, event| {
            let row = query.bind(event.event_id.to_string()).bind(event.todo_id.to_string()).bind(event.seq);
            bind_lease(row, lease)
        })
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// An event row as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event_id: Uuid,
    pub todo_id: Uuid,
    pub seq: i64,
    pub event_type: String,
    pub topic: String,
    /// The CloudEvent `data`, as JSON text.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    /// When daprd accepted the event. Only [`history`] reads it (from `outbox_published`, or
    /// the column the previous release stamped); the relay has no use for it.
    pub published_at: Option<DateTime<Utc>>,
    /// Set when an operator gave up on a parked event: it was never published.
    pub discarded_at: Option<DateTime<Utc>>,
    pub attempts: i64,
    /// Claimed events only: daprd refused it for good on its last attempt (`queue::claim`).
    pub refused: bool,
}

/// The columns of an event's `outbox_events` row that [`StoredEvent::from_row`] reads.
const EVENT_COLUMNS: &str = "event_id, todo_id, seq, event_type, topic, payload, created_at, traceparent, \
     tracestate, correlation_id, causation_id, discarded_at, attempts";

impl StoredEvent {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            event_id: column::uuid(row, "event_id")?,
            todo_id: column::uuid(row, "todo_id")?,
            seq: row.try_get("seq")?,
            event_type: row.try_get("event_type")?,
            topic: row.try_get("topic")?,
            payload: row.try_get("payload")?,
            created_at: column::time(row, "created_at")?,
            traceparent: row.try_get("traceparent")?,
            tracestate: row.try_get("tracestate")?,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            published_at: None,
            discarded_at: column::optional_time(row, "discarded_at")?,
            attempts: row.try_get("attempts")?,
            refused: false,
        })
    }
}

/// A todo's events in order, oldest first, with when each was published; empty when the todo
/// never existed. The history's own `published_at` is what the previous release stamped, still
/// read while it may be running beside this one (migrations/postgres/0004_outbox_published.sql).
pub async fn history(pool: &AnyPool, todo_id: Uuid) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS}, COALESCE(outbox_published.published_at, outbox_events.published_at) AS published_at \
         FROM outbox_events LEFT JOIN outbox_published USING (event_id) WHERE todo_id = $1 ORDER BY seq"
    ))
    .bind(todo_id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredEvent { published_at: column::optional_time(row, "published_at")?, ..StoredEvent::from_row(row)? })
        })
        .collect()
}
