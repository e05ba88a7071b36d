//! The event log and the projection built from it.
//!
//! Consuming an event is one transaction: the processed-event record (a redelivery stops here),
//! the append to `event_log`, and the upsert of the todo's state in `todo_states`. Events carry
//! the whole todo after each change (event-carried state transfer), so the projection keeps the
//! highest version it has seen:
//!
//! - out of order (10 parallel Redis workers, redeliveries, replays): an older version arriving
//!   after a newer one is logged and changes nothing, so no figure ever regresses;
//! - a gap (version 3 arrives, 2 never does): applied at once; the state of 3 supersedes 2, so
//!   nothing is waited for and nothing is lost from the figures. The log shows the gap; the todo
//!   service's history (`GET /todos/{id}/events`) has the missing event if it is ever needed.
//!
//! Because applying is "keep the highest version", it does not depend on order, and replaying
//! the log (in any order) rebuilds the same projection.

use chrono::Utc;
use dapr_consumer::processed::mark_processed;
use dapr_consumer::{EventHandler, Refusal};
use dapr_events::delivery::TodoEvent;
use dapr_events::{TodoEventData, TodoEventType, timestamp};
use service_kit::db::Database;
use sqlx::AnyConnection;

/// The effect name in `processed_events`.
pub const CONSUMER: &str = "analytics";

/// Log pages read per round when rebuilding.
const REBUILD_PAGE: i64 = 1_000;

/// The projection as daprd's deliveries reach it: every todo topic.
#[derive(Clone)]
pub struct Projection {
    pub db: Database,
}

impl EventHandler for Projection {
    const TOPICS: &'static [TodoEventType] = &TodoEventType::ALL;

    /// A database failure answers RETRY: the event was valid, the database was not there.
    async fn handle(&self, event: &TodoEvent) -> Result<(), Refusal> {
        let fresh = consume(&self.db, event).await.map_err(|e| Refusal::database(&e))?;
        tracing::debug!(event_id = %event.id, event_type = %event.event_type, duplicate = !fresh, "consumed");
        Ok(())
    }
}

/// Consumes one event; `false` when it had been consumed before (nothing changes).
pub async fn consume(db: &Database, event: &TodoEvent) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    if !mark_processed(&mut tx, &event.id, CONSUMER).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO event_log (event_id, todo_id, version, event_type, envelope, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&event.id)
    .bind(event.data.todo_id.to_string())
    .bind(event.data.version)
    .bind(event.event_type.as_str())
    .bind(event.envelope.to_string())
    .bind(timestamp::format(&Utc::now()))
    .execute(&mut *tx)
    .await?;
    apply(&mut tx, &event.data).await?;
    tx.commit().await?;
    Ok(true)
}

/// The todo's state after this event, unless a newer version is already there.
async fn apply(conn: &mut AnyConnection, data: &TodoEventData) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO todo_states (todo_id, user_id, version, status, created_at, completed_at, deleted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (todo_id) DO UPDATE SET user_id = excluded.user_id, version = excluded.version, \
         status = excluded.status, created_at = excluded.created_at, completed_at = excluded.completed_at, \
         deleted_at = excluded.deleted_at \
         WHERE todo_states.version < excluded.version",
    )
    .bind(data.todo_id.to_string())
    .bind(&data.user_id)
    .bind(data.version)
    .bind(data.status.as_str())
    .bind(timestamp::format(&data.created_at))
    .bind(data.completed_at.as_ref().map(timestamp::format))
    .bind(data.deleted_at.as_ref().map(timestamp::format))
    .execute(conn)
    .await?;
    Ok(())
}

/// Drops the projection and replays the whole log into it, in one transaction (readers see the
/// old figures until it commits). Returns the number of events replayed.
pub async fn rebuild(db: &Database) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM todo_states").execute(&mut *tx).await?;
    let mut replayed = 0u64;
    let mut after = String::new();
    loop {
        let page: Vec<(String, String)> =
            sqlx::query_as("SELECT event_id, envelope FROM event_log WHERE event_id > $1 ORDER BY event_id LIMIT $2")
                .bind(&after)
                .bind(REBUILD_PAGE)
                .fetch_all(&mut *tx)
                .await?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        for (event_id, envelope) in &page {
            // The log holds only events that passed the schemas when they arrived: their data
            // is read as it was then, not checked again.
            let data = serde_json::from_str::<serde_json::Value>(envelope)
                .and_then(|mut envelope| serde_json::from_value::<TodoEventData>(envelope["data"].take()));
            match data {
                Ok(data) => apply(&mut tx, &data).await?,
                Err(error) => tracing::error!(event_id, %error, "a logged event no longer reads; skipped"),
            }
            replayed += 1;
        }
    }
    tx.commit().await?;
    tracing::info!(replayed, "projection rebuilt from the event log");
    Ok(replayed)
}
