//! The transactional outbox: event rows written with each change, and the queries the relay
//! uses to publish them in per-todo order.
//!
//! `outbox_events` is never pruned: it is the todo's audit trail (`GET /todos/{id}/events`).
//! `outbox_queue` holds one row per event still to publish and is the only table the relay's
//! claim reads, so a long history costs it nothing (see the migration for why it is a table of
//! its own).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use dapr_events::cloudevent::timestamp;
use dapr_events::{CloudEvent, TodoEventData, TodoEventType};
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use crate::db::{Backend, Database, column};
use crate::error::Result;
use crate::http::context::RequestContext;

/// Appends the event for one change, and queues it for the relay. Must run in the transaction that makes the change: that is
/// the whole point of the outbox.
pub async fn append(
    conn: &mut AnyConnection,
    event_type: TodoEventType,
    data: &TodoEventData,
    context: &RequestContext,
    created_at: DateTime<Utc>,
) -> Result<Uuid> {
    let event_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox_events (event_id, todo_id, seq, event_type, topic, payload, created_at, \
         traceparent, tracestate, correlation_id, causation_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(event_id.to_string())
    .bind(data.todo_id.to_string())
    .bind(data.version)
    .bind(event_type.as_str())
    .bind(event_type.topic())
    .bind(serde_json::to_string(data).expect("event data serialises"))
    .bind(timestamp::format(&created_at))
    .bind(&context.traceparent)
    .bind(context.tracestate.as_deref())
    .bind(&context.correlation_id)
    .bind(context.causation_id.as_deref())
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO outbox_queue (event_id, todo_id, seq) VALUES ($1, $2, $3)")
        .bind(event_id.to_string())
        .bind(data.todo_id.to_string())
        .bind(data.version)
        .execute(&mut *conn)
        .await?;
    Ok(event_id)
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
    pub published_at: Option<DateTime<Utc>>,
    pub attempts: i64,
}

const EVENT_COLUMNS: &str = "event_id, todo_id, seq, event_type, topic, payload, created_at, traceparent, \
     tracestate, correlation_id, causation_id, published_at, attempts";

impl StoredEvent {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
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
            published_at: column::optional_time(row, "published_at")?,
            attempts: row.try_get("attempts")?,
        })
    }

    /// The CloudEvent this row is published as. Deterministic: publishing the row again yields
    /// the same envelope, same `id` included, so consumers can deduplicate.
    pub fn to_cloud_event(&self, source: &str) -> CloudEvent<Box<RawValue>> {
        // The payload was serialised by us in `append` and goes out byte for byte. Should it
        // ever not be JSON, it is published as a JSON string: visible, not lost.
        let data = RawValue::from_string(self.payload.clone()).unwrap_or_else(|_| {
            RawValue::from_string(serde_json::to_string(&self.payload).expect("a string serialises"))
                .expect("a JSON string is JSON")
        });
        let mut event = CloudEvent::new(self.event_id.to_string(), source, self.event_type.clone(), data)
            .with_trace(self.traceparent.clone(), self.tracestate.clone());
        event.subject = Some(self.todo_id.to_string());
        event.time = Some(self.created_at);
        event.dataschema = self.event_type.parse::<TodoEventType>().ok().map(TodoEventType::schema_uri);
        event.correlationid = Some(self.correlation_id.clone());
        event.causationid = self.causation_id.clone();
        event
    }
}

/// One entry of `GET /todos/{id}/events`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub sequence: i64,
    #[serde(with = "timestamp::option")]
    pub published_at: Option<DateTime<Utc>>,
    /// Exactly the CloudEvent subscribers receive (daprd adds `topic` and `pubsubname`).
    pub event: CloudEvent<Box<RawValue>>,
}

/// A todo's events in order, oldest first; empty when the todo never existed.
pub async fn history(pool: &AnyPool, todo_id: Uuid, source: &str) -> Result<Vec<HistoryEntry>> {
    let rows = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM outbox_events WHERE todo_id = $1 ORDER BY seq"))
        .bind(todo_id.to_string())
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let stored = StoredEvent::from_row(row)?;
            Ok(HistoryEntry {
                sequence: stored.seq,
                published_at: stored.published_at,
                event: stored.to_cloud_event(source),
            })
        })
        .collect()
}

/// Claims up to `limit` publishable events for relay instance `owner` until `lease_until_ms`.
///
/// Publishable means: the *oldest* queued event of its todo (the per-todo ordering guarantee:
/// a todo's next event cannot be claimed, by any replica, until the one before it was published
/// and left the queue), due (past its retry backoff), and not leased by a live relay. Because a
/// change's version is assigned under the todo's row lock, a later event of a todo never commits
/// before an earlier one, so "oldest visible" really is the oldest.
///
/// On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets replicas claim concurrently without waiting on
/// each other; the lease keeps a claimed row away from others after the claim commits. SQLite
/// has one writer at a time, so the plain statement is already atomic.
pub async fn claim(
    db: &Database,
    owner: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    let claimed = sqlx::query(&claim_sql(db.backend))
        .bind(now_ms)
        .bind(limit)
        .bind(owner)
        .bind(lease_until_ms)
        .fetch_all(&db.writer)
        .await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    // The queue's attempt count drives the backoff; the history row's copy is for operators.
    let attempts: HashMap<String, i64> = claimed
        .iter()
        .map(|row| Ok((row.try_get("event_id")?, row.try_get("attempts")?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let ids: Vec<String> = attempts.keys().cloned().collect();
    let select =
        format!("SELECT {EVENT_COLUMNS} FROM outbox_events WHERE event_id IN ({})", placeholders(1, ids.len()));
    let rows = bind_all(sqlx::query(&select), &ids).fetch_all(&db.reader).await?;
    let mut events = rows.iter().map(StoredEvent::from_row).collect::<Result<Vec<_>, _>>()?;
    for event in &mut events {
        event.attempts = attempts.get(&event.event_id.to_string()).copied().unwrap_or(event.attempts);
    }
    // RETURNING has no defined order; publish oldest first.
    events.sort_by_key(|e| e.event_id);
    Ok(events)
}

/// The claim statement; parameters: now (ms), limit, owner, lease end (ms). Public so tests and
/// benchmarks can check its plan.
pub fn claim_sql(backend: Backend) -> String {
    let lock = match backend {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    format!(
        "WITH claimable AS MATERIALIZED ( \
             SELECT q.event_id FROM outbox_queue q \
             WHERE q.next_attempt_at <= $1 \
               AND (q.lease_expires_at IS NULL OR q.lease_expires_at <= $1) \
               AND NOT EXISTS ( \
                   SELECT 1 FROM outbox_queue earlier WHERE earlier.todo_id = q.todo_id AND earlier.seq < q.seq) \
             ORDER BY q.event_id \
             LIMIT $2 {lock}) \
         UPDATE outbox_queue SET lease_owner = $3, lease_expires_at = $4 \
         WHERE event_id IN (SELECT event_id FROM claimable) \
         RETURNING event_id, attempts"
    )
}

/// Marks a round's successfully published events in one transaction: stamped in the history,
/// removed from the queue. One commit per round rather than per event keeps the relay from
/// competing with the API for the database.
pub async fn mark_published(db: &Database, event_ids: &[Uuid], published_at: DateTime<Utc>) -> Result<()> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = event_ids.iter().map(Uuid::to_string).collect();
    let mut tx = db.writer.begin().await?;
    let stamp =
        format!("UPDATE outbox_events SET published_at = $1 WHERE event_id IN ({})", placeholders(2, ids.len()));
    bind_all(sqlx::query(&stamp).bind(timestamp::format(&published_at)), &ids).execute(&mut *tx).await?;
    let dequeue = format!("DELETE FROM outbox_queue WHERE event_id IN ({})", placeholders(1, ids.len()));
    bind_all(sqlx::query(&dequeue), &ids).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Records a failed attempt and releases the lease, so the event is retried (by any replica)
/// once `next_attempt_ms` has passed. Its todo's later events stay queued behind it.
pub async fn mark_failed(db: &Database, event_id: Uuid, next_attempt_ms: i64, error: &str) -> Result<()> {
    let mut tx = db.writer.begin().await?;
    sqlx::query(
        "UPDATE outbox_queue SET attempts = attempts + 1, next_attempt_at = $1, lease_owner = NULL, \
         lease_expires_at = NULL WHERE event_id = $2",
    )
    .bind(next_attempt_ms)
    .bind(event_id.to_string())
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE outbox_events SET attempts = attempts + 1, last_error = $1 WHERE event_id = $2")
        .bind(error)
        .bind(event_id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// `$first, $first+1, …` for `count` values: sqlx has no array binding that works on both
/// backends, so `IN` lists are spelled out.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    values: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for value in values {
        query = query.bind(value.as_str());
    }
    query
}

/// Number of events not yet published (for logs and tests).
pub async fn pending_count(pool: &AnyPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outbox_queue").fetch_one(pool).await?)
}
