//! The queue side of the outbox, as the relay uses it: claim the publishable events (one head
//! per todo, leased to one relay instance), then mark each published or failed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use dapr_events::timestamp;
use service_kit::db::Database;
use service_kit::db::dialect::Backend;
use service_kit::db::dialect::{AnyQuery, json_array};
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use super::{EVENT_COLUMNS, StoredEvent};

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
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let claim = Claim { owner, now_ms, lease_until_ms, limit };
    let mut events = match db.backend {
        Backend::Postgres => claim_with_events(db, &claim).await?,
        Backend::Sqlite => claim_then_fetch(db, &claim).await?,
    };
    // RETURNING has no defined order; publish oldest first.
    events.sort_by_key(|e| e.event_id);
    Ok(events)
}

/// The parameters of [`claim_sql`].
struct Claim<'a> {
    owner: &'a str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: i64,
}

impl<'a> Claim<'a> {
    fn bind(&self, query: AnyQuery<'a>) -> AnyQuery<'a> {
        query.bind(self.now_ms).bind(self.limit).bind(self.owner).bind(self.lease_until_ms)
    }
}

/// PostgreSQL: the claim and the events' rows in one statement (one round trip, one plan), the
/// history row's attempt count replaced by the queue's, which drives the backoff.
async fn claim_with_events(db: &Database, claim: &Claim<'_>) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "WITH claimed AS ({}) \
         SELECT {EVENT_COLUMNS}, claimed.queue_attempts, claimed.refused_since \
         FROM claimed JOIN outbox_events ON outbox_events.event_id = claimed.claimed_id",
        claim_sql_returning(db.backend, "event_id AS claimed_id, attempts AS queue_attempts, refused_since")
    );
    let rows = claim.bind(sqlx::query(&sql)).fetch_all(&db.writer).await?;
    rows.iter()
        .map(|row| {
            let mut event = StoredEvent::from_row(row)?;
            event.attempts = row.try_get("queue_attempts")?;
            event.refused = row.try_get::<Option<i64>, _>("refused_since")?.is_some();
            Ok(event)
        })
        .collect()
}

/// SQLite: its `RETURNING` cannot be a CTE nor join, so the claim, then the events' rows.
async fn claim_then_fetch(db: &Database, claim: &Claim<'_>) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = claim_sql(db.backend);
    let claimed = claim.bind(sqlx::query(&sql)).fetch_all(&db.writer).await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let attempts: HashMap<String, (i64, bool)> = claimed
        .iter()
        .map(|row| {
            let refused: Option<i64> = row.try_get("refused_since")?;
            Ok((row.try_get("event_id")?, (row.try_get("attempts")?, refused.is_some())))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let ids: Vec<&String> = attempts.keys().collect();
    let mut events = fetch_as_one_row(&db.reader, &json_array(&ids)).await?;
    for event in &mut events {
        if let Some(&(attempts, refused)) = attempts.get(&event.event_id.to_string()) {
            (event.attempts, event.refused) = (attempts, refused);
        }
    }
    Ok(events)
}

/// SQLite: the events listed at `ids` (a JSON array) as one row, a JSON array of objects.
///
/// sqlx's SQLite driver runs each connection on a thread of its own and hands a result's rows
/// over one at a time (its row channel holds 50), and the Any driver copies each into a row of
/// its own: a relay round's events took several times longer to fetch that way than as one row
/// (docs/performance.md, "the relay's fetch in one row"). The claim's own rows still come one
/// by one: three short columns each.
async fn fetch_as_one_row(reader: &AnyPool, ids: &str) -> Result<Vec<StoredEvent>, sqlx::Error> {
    static SELECT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let fields: Vec<String> = EVENT_COLUMNS.split(',').map(|column| format!("'{0}', {0}", column.trim())).collect();
        format!(
            "SELECT json_group_array(json_object({})) FROM outbox_events WHERE {}",
            fields.join(", "),
            Backend::Sqlite.in_json_array("event_id", 1)
        )
    });
    let rows: String = sqlx::query_scalar(&SELECT).bind(ids).fetch_one(reader).await?;
    let rows: Vec<EventObject> = serde_json::from_str(&rows).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
    rows.into_iter().map(EventObject::into_stored).collect()
}

/// An `outbox_events` row as [`fetch_as_one_row`]'s `json_object` writes it. A column added to
/// `EVENT_COLUMNS` fails every fetch until it is here too.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventObject {
    event_id: String,
    todo_id: String,
    seq: i64,
    event_type: String,
    topic: String,
    payload: String,
    created_at: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
    correlation_id: String,
    causation_id: Option<String>,
    discarded_at: Option<String>,
    attempts: i64,
}

impl EventObject {
    fn into_stored(self) -> Result<StoredEvent, sqlx::Error> {
        let decode = |column: &str, error: &dyn std::fmt::Display| {
            sqlx::Error::Decode(format!("outbox_events.{column}: {error}").into())
        };
        let uuid = |column, text: &str| Uuid::parse_str(text).map_err(|error| decode(column, &error));
        let time = |column, text: &str| timestamp::parse(text).map_err(|error| decode(column, &error));
        Ok(StoredEvent {
            event_id: uuid("event_id", &self.event_id)?,
            todo_id: uuid("todo_id", &self.todo_id)?,
            seq: self.seq,
            event_type: self.event_type,
            topic: self.topic,
            payload: self.payload,
            created_at: time("created_at", &self.created_at)?,
            traceparent: self.traceparent,
            tracestate: self.tracestate,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            published_at: None,
            discarded_at: self.discarded_at.as_deref().map(|text| time("discarded_at", text)).transpose()?,
            attempts: self.attempts,
            refused: false,
        })
    }
}

/// The claim statement; parameters: now (ms), limit, owner, lease end (ms). Public so tests and
/// benchmarks can check its plan.
///
/// "Oldest of its todo" is asked as `seq = (SELECT MIN(seq) …)` rather than `NOT EXISTS (an
/// earlier one)`: PostgreSQL always runs the former as one probe of the `(todo_id, seq)` index
/// per candidate, whatever it believes of the queue's size, while it turns the latter into a
/// join whose shape follows its statistics. Once a vacuum has seen the queue empty it believes
/// the queue holds one row, and joins every queued row with every other (measured: a
/// 20,000-event backlog, the kind an outage leaves, took 45 s per claim instead of 2.5 ms).
pub fn claim_sql(backend: Backend) -> String {
    claim_sql_returning(backend, "event_id, attempts, refused_since")
}

fn claim_sql_returning(backend: Backend, returning: &str) -> String {
    let lock = backend.lock_skipping_locked();
    format!(
        "WITH claimable AS MATERIALIZED ( \
             SELECT q.event_id FROM outbox_queue q \
             WHERE q.next_attempt_at <= $1 AND q.parked_at IS NULL \
               AND (q.lease_expires_at IS NULL OR q.lease_expires_at <= $1) \
               AND q.seq = (SELECT MIN(earlier.seq) FROM outbox_queue earlier WHERE earlier.todo_id = q.todo_id) \
             ORDER BY q.event_id \
             LIMIT $2{lock}) \
         UPDATE outbox_queue SET lease_owner = $3, lease_expires_at = $4 \
         WHERE event_id IN (SELECT event_id FROM claimable) \
         RETURNING {returning}"
    )
}

/// Marks a round's successfully published events in one transaction: removed from the queue,
/// their time recorded in `outbox_published` (an append; the migration that made it a table of
/// its own says why). One commit per round rather than per event keeps the relay from
/// competing with the API for the database.
///
/// An event queued again after it was published (by an operator, docs/operations.md) may still
/// have its row there: the plain insert then fails as a whole, and the round is recorded again
/// as an upsert, which keeps the latest time. Not an upsert every time: `ON CONFLICT` probes
/// the index before each insert and logs a confirmation after it, which measured 8 us and 48
/// bytes of WAL more per event under `make bench-write`.
pub async fn mark_published(db: &Database, event_ids: &[Uuid], published_at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let (ids, published_at) = (json_array(event_ids), timestamp::format(&published_at));
    match record_published(db, &ids, &published_at, Republished::Fail).await {
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            record_published(db, &ids, &published_at, Republished::KeepLatest).await
        }
        outcome => outcome,
    }
}

/// What [`record_published_sql`] does with an event already recorded as published.
#[derive(Debug, Clone, Copy)]
enum Republished {
    Fail,
    KeepLatest,
}

async fn record_published(
    db: &Database,
    ids: &str,
    published_at: &str,
    republished: Republished,
) -> Result<(), sqlx::Error> {
    match db.backend {
        Backend::Postgres => {
            sqlx::query(&postgres_mark_published(republished)).bind(published_at).bind(ids).execute(&db.writer).await?;
        }
        // No data-modifying CTEs in SQLite.
        Backend::Sqlite => {
            let dequeue = format!("DELETE FROM outbox_queue WHERE {}", db.backend.in_json_array("event_id", 1));
            let mut tx = db.begin().await?;
            sqlx::query(&record_published_sql(db.backend, republished))
                .bind(published_at)
                .bind(ids)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&dequeue).bind(ids).execute(&mut *tx).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

/// [`mark_published`] on PostgreSQL: both changes in one statement reading the same ids (one
/// round trip, an implicit transaction); parameters: the time, the ids. Public so tests can
/// check its plan.
pub fn postgres_mark_published_sql() -> String {
    postgres_mark_published(Republished::Fail)
}

fn postgres_mark_published(republished: Republished) -> String {
    let listed = Backend::Postgres.in_json_array("event_id", 2);
    format!(
        "WITH dequeued AS (DELETE FROM outbox_queue WHERE {listed}) {}",
        record_published_sql(Backend::Postgres, republished)
    )
}

/// Records the events listed at `$2` as published at `$1`. `WHERE true`: without it SQLite
/// reads the `ON` of `ON CONFLICT` as a join's (its documentation on upserts).
fn record_published_sql(backend: Backend, republished: Republished) -> String {
    let conflict = match republished {
        Republished::Fail => "",
        Republished::KeepLatest => " ON CONFLICT (event_id) DO UPDATE SET published_at = excluded.published_at",
    };
    format!(
        "INSERT INTO outbox_published (event_id, published_at) SELECT value, $1 FROM {} WHERE true{conflict}",
        backend.json_array_table(2)
    )
}

/// A failed publish attempt, to record.
#[derive(Debug, Clone)]
pub struct FailedAttempt {
    pub event_id: Uuid,
    /// When the event may be tried again (epoch ms).
    pub next_attempt_ms: i64,
    pub error: String,
    /// Now, when daprd refused the event for good (see [`mark_failed`]).
    pub refused_at: Option<i64>,
}

/// Records a round's failed attempts in one transaction and releases their leases, so each is
/// retried (by any replica) once its `next_attempt_ms` has passed. Its todo's later events stay
/// queued behind it. A refusal for good starts or continues a run of refusals; any other failure
/// ends it.
pub async fn mark_failed(db: &Database, failures: &[FailedAttempt]) -> Result<(), sqlx::Error> {
    if failures.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    for failure in failures {
        sqlx::query(
            "UPDATE outbox_queue SET attempts = attempts + 1, next_attempt_at = $1, lease_owner = NULL, \
             lease_expires_at = NULL, refused_since = CASE WHEN $2 IS NULL THEN NULL ELSE COALESCE(refused_since, $2) END \
             WHERE event_id = $3",
        )
        .bind(failure.next_attempt_ms)
        .bind(failure.refused_at)
        .bind(failure.event_id.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE outbox_events SET attempts = attempts + 1, last_error = $1 WHERE event_id = $2")
            .bind(&failure.error)
            .bind(failure.event_id.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Releases `owner`'s leases of `event_ids`, leaving everything else as it was: they are
/// claimable again at once. A lease another relay holds by now (this one's ran out, and that
/// one claimed the event) stays: that relay may be publishing it.
pub async fn release(db: &Database, owner: &str, event_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let sql = format!("{} AND lease_owner = $2", release_sql(db.backend));
    sqlx::query(&sql).bind(json_array(event_ids)).bind(owner).execute(&db.writer).await?;
    Ok(())
}

fn release_sql(backend: Backend) -> String {
    format!(
        "UPDATE outbox_queue SET lease_owner = NULL, lease_expires_at = NULL WHERE {}",
        backend.in_json_array("event_id", 1)
    )
}

/// Releases the leases of events that were never handed over (the sidecar was unreachable),
/// leaving their attempt counts and schedule as they were, so they are claimable again at once;
/// `reason` becomes their `last_error`, for operators asking why they are still pending. One
/// transaction for the lot.
pub async fn release_untried(db: &Database, event_ids: &[Uuid], reason: &str) -> Result<(), sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let ids = json_array(event_ids);
    let mut tx = db.begin().await?;
    sqlx::query(&release_sql(db.backend)).bind(&ids).execute(&mut *tx).await?;
    let note = format!("UPDATE outbox_events SET last_error = $1 WHERE {}", db.backend.in_json_array("event_id", 2));
    sqlx::query(&note).bind(reason).bind(ids).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Parks the event if daprd has refused it for good since `refused_before` or earlier: the
/// relay stops trying it until an operator retries it. True when it was parked just now.
pub async fn park_if_refused_since(
    db: &Database,
    event_id: Uuid,
    refused_before: i64,
    now_ms: i64,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let parked = sqlx::query(
        "UPDATE outbox_queue SET parked_at = $1, parked_reason = $2 \
         WHERE event_id = $3 AND parked_at IS NULL AND refused_since IS NOT NULL AND refused_since <= $4",
    )
    .bind(now_ms)
    .bind(reason)
    .bind(event_id.to_string())
    .bind(refused_before)
    .execute(&db.writer)
    .await?;
    Ok(parked.rows_affected() == 1)
}

/// Gives up the leases `owner` holds, so another relay (or this one after a restart) can claim
/// those events at once instead of when the leases run out. For a relay cut off in the middle of
/// a round; their attempt counts are left as they were.
pub async fn release_leases(db: &Database, owner: &str) -> Result<u64, sqlx::Error> {
    let released =
        sqlx::query("UPDATE outbox_queue SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1")
            .bind(owner)
            .execute(&db.writer)
            .await?;
    Ok(released.rows_affected())
}

/// Reclaims the queue's dead rows on PostgreSQL; nothing to do on SQLite, whose deletes free
/// their space at once.
///
/// Every event passes through the queue (inserted, leased, deleted), so under load it piles up
/// dead row versions far faster than autovacuum, which visits a database once a minute
/// (`autovacuum_naptime`), removes them, and every claim scans them: measured under
/// `make bench-write` at 6,500 creates/s, 27 MB of heap for 2,000 live rows after 25 s, 30 ms
/// and more per claim, and the relay fell behind the API for good. Vacuumed every few thousand
/// deletes, the heap stays at a few hundred kB. `SKIP_LOCKED`: a vacuum already running (or a
/// lock held by an operator) is not waited for. `TRUNCATE false`: giving the emptied pages at
/// the end back to the file system takes an exclusive lock on the table, which stalls every
/// create and claim behind it; the queue reuses them anyway.
pub async fn vacuum(db: &Database) -> Result<(), sqlx::Error> {
    if db.backend == Backend::Postgres {
        sqlx::raw_sql("VACUUM (SKIP_LOCKED, TRUNCATE false) outbox_queue").execute(&db.writer).await?;
    }
    Ok(())
}

/// Now, as the queue's times are kept: milliseconds since the Unix epoch.
pub fn epoch_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// Number of events not yet published (for logs and tests).
pub async fn pending_count(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox_queue").fetch_one(pool).await
}

#[cfg(test)]
mod tests {
    use dapr_events::TodoEventType;
    use service_kit::on_both_backends;
    use service_kit::testing::TestDb;
    use service_kit::trace_context::W3cContext;

    use super::*;
    use crate::outbox::{EventContext, NewEvent, Outbox, history};
    use crate::todos::model::{NewTodo, new_todo};

    on_both_backends!(a_claimed_event_is_the_event_as_stored);

    /// The claim reads events its own way on each backend (on SQLite, as one JSON row): what it
    /// returns must be what the history, read row by row, shows.
    async fn a_claimed_event_is_the_event_as_stored(backend: Backend) {
        let test_db = TestDb::new(backend).await;
        let db = test_db.connect(crate::startup::MIGRATIONS).await;
        let mut unit = Outbox::new().begin(&db.writer).await.unwrap();
        let mut events = Vec::new();
        for (title, traced) in [("with every field, \"quoted\"\t\\ ünïcode 🦀", true), ("with none", false)] {
            let todo = new_todo(NewTodo { user_id: "u".into(), title: title.into(), description: None, due_at: None });
            let context = EventContext {
                correlation_id: format!("corr {title}"),
                causation_id: traced.then(|| "cause".to_owned()),
            };
            let trace = traced.then(|| W3cContext {
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                tracestate: Some("vendor=value".into()),
            });
            let data = todo.event_data(Vec::new(), None);
            events.push(NewEvent::new(TodoEventType::Created, &data, &context, trace, todo.created_at));
        }
        unit.append_new_todos_events(&events.iter().collect::<Vec<_>>(), None).await.unwrap();
        unit.commit().await.unwrap();
        // The queue's attempts and refusal drive the backoff, not the history's.
        let retried = events[0].event_id;
        sqlx::query("UPDATE outbox_queue SET attempts = 3, refused_since = 1 WHERE event_id = $1")
            .bind(retried.to_string())
            .execute(&db.writer)
            .await
            .unwrap();

        let claimed = claim(&db, "relay", epoch_millis(), epoch_millis() + 30_000, 10).await.unwrap();
        assert_eq!(claimed.len(), events.len());
        for event in &claimed {
            let stored = history(&db.reader, event.todo_id).await.unwrap().remove(0);
            let fields = |e: &StoredEvent| {
                (
                    (e.event_id, e.todo_id, e.seq, e.event_type.clone(), e.topic.clone(), e.payload.clone()),
                    (e.created_at, e.traceparent.clone(), e.tracestate.clone()),
                    (e.correlation_id.clone(), e.causation_id.clone(), e.discarded_at),
                )
            };
            assert_eq!(fields(event), fields(&stored));
            let expected = if event.event_id == retried { (3, true) } else { (0, false) };
            assert_eq!((event.attempts, event.refused), expected, "the queue's attempts and refusal");
        }
        assert!(claimed.iter().any(|e| e.traceparent.is_some()) && claimed.iter().any(|e| e.tracestate.is_none()));
        db.close().await;
    }
}
