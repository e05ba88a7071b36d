//! The outbox's gauges, read from the database at each Prometheus scrape
//! (`service_kit::metrics`): how many events wait, how long the oldest has waited (the lag
//! between a change and its publish), how many are being retried and how many are parked.

use std::sync::Arc;

use chrono::Utc;
use dapr_events::timestamp;
use service_kit::db::Database;
use service_kit::metrics::Refresh;
use service_kit::problem::Problem;
use sqlx::Row;

/// Events written and not yet published, parked ones excepted.
pub const PENDING: &str = "dapr_todo_outbox_pending_events";
/// Age of the oldest pending event (0 when none): the outbox's lag.
pub const LAG: &str = "dapr_todo_outbox_lag_seconds";
/// Pending events whose publish failed at least once.
pub const RETRYING: &str = "dapr_todo_outbox_retrying_events";
/// Events daprd refused for good, waiting for an operator (`/admin/outbox/parked`).
pub const PARKED: &str = "dapr_todo_outbox_parked_events";

/// What the outbox holds right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Depth {
    pub pending: i64,
    pub retrying: i64,
    pub parked: i64,
    pub lag_seconds: f64,
}

pub async fn depth(db: &Database) -> Result<Depth, sqlx::Error> {
    // One statement, so the four figures are of one moment. created_at is stored in one fixed
    // UTC format (dapr_events::timestamp::format), so its text order is time order.
    let row = sqlx::query(
        "SELECT COUNT(CASE WHEN q.parked_at IS NULL THEN 1 END) AS pending, \
                COUNT(CASE WHEN q.parked_at IS NULL AND q.attempts > 0 THEN 1 END) AS retrying, \
                COUNT(q.parked_at) AS parked, \
                MIN(CASE WHEN q.parked_at IS NULL THEN e.created_at END) AS oldest \
         FROM outbox_queue q JOIN outbox_events e ON e.event_id = q.event_id",
    )
    .fetch_one(&db.reader)
    .await?;
    let oldest: Option<String> = row.try_get("oldest")?;
    let lag_seconds = oldest
        .and_then(|oldest| timestamp::parse(&oldest).ok())
        .map_or(0.0, |oldest| (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0);
    Ok(Depth {
        pending: row.try_get("pending")?,
        retrying: row.try_get("retrying")?,
        parked: row.try_get("parked")?,
        lag_seconds,
    })
}

/// Sets the gauges from [`depth`] before each scrape.
pub fn refresh(db: Database) -> Refresh {
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move {
            let depth = depth(&db).await.map_err(Problem::from)?;
            metrics::gauge!(PENDING).set(depth.pending as f64);
            metrics::gauge!(RETRYING).set(depth.retrying as f64);
            metrics::gauge!(PARKED).set(depth.parked as f64);
            metrics::gauge!(LAG).set(depth.lag_seconds);
            Ok(())
        })
    })
}
