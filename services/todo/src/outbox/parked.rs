//! Parked events, as operators see and act on them: what daprd refused for good, why, and how
//! many of the todo's later events wait behind each (`crate::http::admin`).

use chrono::Utc;
use dapr_events::timestamp;
use serde::Serialize;
use service_kit::db::Database;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

/// One parked event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParkedEvent {
    pub event_id: String,
    pub todo_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub topic: String,
    pub attempts: i64,
    /// Epoch milliseconds.
    pub parked_at: i64,
    /// daprd's answer when it was parked.
    pub reason: Option<String>,
    /// The todo's later events, held back behind this one.
    pub waiting_behind: i64,
}

pub async fn list(pool: &AnyPool) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT q.event_id, q.todo_id, q.seq, e.event_type, e.topic, q.attempts, q.parked_at, q.parked_reason, \
         (SELECT COUNT(*) FROM outbox_queue later WHERE later.todo_id = q.todo_id AND later.seq > q.seq) AS waiting \
         FROM outbox_queue q JOIN outbox_events e ON e.event_id = q.event_id \
         WHERE q.parked_at IS NOT NULL ORDER BY q.parked_at, q.event_id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ParkedEvent {
                event_id: row.try_get("event_id")?,
                todo_id: row.try_get("todo_id")?,
                sequence: row.try_get("seq")?,
                event_type: row.try_get("event_type")?,
                topic: row.try_get("topic")?,
                attempts: row.try_get("attempts")?,
                parked_at: row.try_get("parked_at")?,
                reason: row.try_get("parked_reason")?,
                waiting_behind: row.try_get("waiting")?,
            })
        })
        .collect()
}

/// Unparks the event: the relay tries it again at once (its attempt count stays). False when
/// no such event is parked.
pub async fn retry(db: &Database, event_id: Uuid) -> Result<bool, sqlx::Error> {
    let retried = sqlx::query(
        "UPDATE outbox_queue SET parked_at = NULL, parked_reason = NULL, refused_since = NULL, next_attempt_at = 0 \
         WHERE event_id = $1 AND parked_at IS NOT NULL",
    )
    .bind(event_id.to_string())
    .execute(&db.writer)
    .await?;
    Ok(retried.rows_affected() == 1)
}

/// Gives up on the event: it leaves the queue unpublished (its history says when it was
/// discarded) and the todo's next event can go. Consumers never see it; as every event carries
/// the whole todo, the next one brings them up to date. False when no such event is parked.
pub async fn discard(db: &Database, event_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let removed = sqlx::query("DELETE FROM outbox_queue WHERE event_id = $1 AND parked_at IS NOT NULL")
        .bind(event_id.to_string())
        .execute(&mut *tx)
        .await?;
    if removed.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query("UPDATE outbox_events SET discarded_at = $1 WHERE event_id = $2")
        .bind(timestamp::format(&Utc::now()))
        .bind(event_id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}
