//! A consumer's metrics (served by `service_kit::metrics` on the metrics port): what daprd
//! delivered and how each delivery was answered, how long the handler took, duplicates skipped,
//! dead letters, and how far behind the event stream the consumer's effects are.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dapr_events::TodoEventType;
use dapr_events::subscription::DeliveryStatus;
use service_kit::metrics::Refresh;
use service_kit::problem::Problem;

use crate::dead_letters::DeadLetters;

/// Deliveries by topic and answer (`SUCCESS`, `RETRY`, `DROP`).
pub const DELIVERIES: &str = "dapr_todo_deliveries_total";
/// How long a delivery took to answer (reading, the handler and its transaction), by topic.
pub const DELIVERY_DURATION: &str = "dapr_todo_delivery_duration_seconds";
/// Deliveries of an event whose effect had been applied before, by effect.
pub const DUPLICATES: &str = "dapr_todo_duplicates_skipped_total";
/// Dead letters waiting for an operator (parked).
pub const DEAD_LETTERS_PARKED: &str = "dapr_todo_dead_letters_parked";
/// Dead letters daprd delivered, by original topic.
pub const DEAD_LETTERS_RECEIVED: &str = "dapr_todo_dead_letters_received_total";
/// Now minus the event time of the newest event applied: how far behind its effects are.
pub const PROJECTION_LAG: &str = "dapr_todo_projection_lag_seconds";
/// When the last delivery arrived (Unix time), whatever its answer.
pub const LAST_DELIVERY: &str = "dapr_todo_last_delivery_timestamp_seconds";

/// The consumer's figures that are kept between scrapes rather than counted as they happen.
#[derive(Debug, Default)]
pub struct Progress {
    /// Event time (Unix ms) of the newest event applied; 0 before the first.
    newest_applied_ms: AtomicI64,
}

/// Registers the counters of every topic of the consumer (at 0 when new), so `rate()` and
/// `increase()` see them from the first scrape rather than from their first increment.
pub fn register(topics: &[TodoEventType]) {
    for topic in topics.iter().map(|t| t.topic()) {
        for answer in ["SUCCESS", "RETRY", "DROP"] {
            metrics::counter!(DELIVERIES, "topic" => topic, "answer" => answer).increment(0);
        }
        metrics::counter!(DEAD_LETTERS_RECEIVED, "topic" => topic).increment(0);
    }
}

impl Progress {
    /// Records a delivery's answer, its duration and, for `SUCCESS`, its event time.
    pub fn delivered(&self, topic: &str, status: DeliveryStatus, took: Duration, event_time: Option<DateTime<Utc>>) {
        let answer = match status {
            DeliveryStatus::Success => "SUCCESS",
            DeliveryStatus::Retry => "RETRY",
            DeliveryStatus::Drop => "DROP",
        };
        metrics::counter!(DELIVERIES, "topic" => topic.to_owned(), "answer" => answer).increment(1);
        metrics::histogram!(DELIVERY_DURATION, "topic" => topic.to_owned()).record(took);
        metrics::gauge!(LAST_DELIVERY).set(Utc::now().timestamp_millis() as f64 / 1000.0);
        if let (DeliveryStatus::Success, Some(time)) = (status, event_time) {
            // The newest, not the last: a redelivered old event does not make the lag jump.
            self.newest_applied_ms.fetch_max(time.timestamp_millis(), Ordering::Relaxed);
        }
    }

    fn lag_seconds(&self) -> Option<f64> {
        let newest = self.newest_applied_ms.load(Ordering::Relaxed);
        (newest > 0).then(|| (Utc::now().timestamp_millis() - newest).max(0) as f64 / 1000.0)
    }
}

/// A dead letter daprd delivered from `topic`'s dead-letter topic.
pub fn dead_letter_received(topic: &str) {
    metrics::counter!(DEAD_LETTERS_RECEIVED, "topic" => topic.to_owned()).increment(1);
}

/// A delivery whose effect had been applied before, and was skipped.
pub fn duplicate_skipped(effect: &str) {
    metrics::counter!(DUPLICATES, "effect" => effect.to_owned()).increment(1);
}

/// Sets the dead letters parked (from the store) and the projection lag before each scrape.
pub fn refresh(store: DeadLetters, progress: Arc<Progress>) -> Refresh {
    Arc::new(move || {
        let (store, progress) = (store.clone(), progress.clone());
        Box::pin(async move {
            let parked = store.parked().await.map_err(Problem::from)?;
            metrics::gauge!(DEAD_LETTERS_PARKED).set(parked as f64);
            if let Some(lag) = progress.lag_seconds() {
                metrics::gauge!(PROJECTION_LAG).set(lag);
            }
            Ok(())
        })
    })
}
