//! Exactly-once effects over at-least-once delivery: a consumer records (CloudEvent id, effect)
//! in the transaction of the effect, so a redelivered, re-published or replayed event finds it
//! and changes nothing.

use chrono::Utc;
use dapr_events::timestamp;
use service_kit::db::Database;
use sqlx::AnyConnection;

/// Records that `effect` was applied for `event_id`, in the caller's transaction. `false` when
/// it already had been: the caller then skips the effect and answers SUCCESS.
pub async fn mark_processed(conn: &mut AnyConnection, event_id: &str, effect: &str) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO processed_events (event_id, consumer, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (event_id, consumer) DO NOTHING",
    )
    .bind(event_id)
    .bind(effect)
    .bind(timestamp::format(&Utc::now()))
    .execute(conn)
    .await?;
    let first_time = inserted.rows_affected() == 1;
    if !first_time {
        crate::metrics::duplicate_skipped(effect);
    }
    Ok(first_time)
}

/// Whether `effect` was applied for `event_id`, for an effect that cannot share a transaction
/// with its record (a call to another system).
pub async fn was_processed(db: &Database, event_id: &str, effect: &str) -> Result<bool, sqlx::Error> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT event_id FROM processed_events WHERE event_id = $1 AND consumer = $2")
            .bind(event_id)
            .bind(effect)
            .fetch_optional(&db.reader)
            .await?;
    if found.is_some() {
        crate::metrics::duplicate_skipped(effect);
    }
    Ok(found.is_some())
}
