//! When each consumer applied each todo's creation, read from its own database after the load:
//! analytics stamps `event_log.received_at` and notification `notifications.created_at` in the
//! transaction that applies the event, with microseconds, from the same wall clock the load
//! generator stamps each request's due time with (both run on this machine). The latency of an
//! event is the difference: resolution 1 µs, plus the clock's own (CLOCK_REALTIME, ns).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use uuid::Uuid;

use crate::system::Kind;

/// The consumer's row for each created todo: its id, and when the consumer applied it.
fn query(kind: Kind) -> &'static str {
    match kind {
        Kind::Analytics => "SELECT todo_id, received_at FROM event_log WHERE version = 1",
        Kind::Notification => "SELECT todo_id, created_at FROM notifications WHERE kind = 'created'",
        Kind::Todo => unreachable!("the todo service consumes nothing"),
    }
}

pub struct Consumer {
    pub kind: Kind,
    pool: SqlitePool,
}

impl Consumer {
    /// Read-only: the bench never writes to a service's database.
    pub async fn open(kind: Kind, database: &Path) -> Self {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", database.display()))
            .expect("a SQLite URL")
            .read_only(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("open the consumer's database");
        Self { kind, pool }
    }

    /// How many creations it has applied so far.
    pub async fn count(&self) -> u64 {
        let count_query = format!("SELECT COUNT(*) FROM ({})", query(self.kind));
        sqlx::query_scalar::<_, i64>(&count_query).fetch_one(&self.pool).await.unwrap_or(0) as u64
    }

    /// When each todo's creation was applied.
    pub async fn applied(&self) -> HashMap<Uuid, SystemTime> {
        let rows: Vec<(String, String)> =
            sqlx::query_as(query(self.kind)).fetch_all(&self.pool).await.expect("read the consumer's rows");
        rows.into_iter()
            .filter_map(|(todo_id, at)| {
                let at = chrono::DateTime::parse_from_rfc3339(&at).ok()?;
                let micros = u64::try_from(at.timestamp_micros()).ok()?;
                Some((todo_id.parse().ok()?, SystemTime::UNIX_EPOCH + Duration::from_micros(micros)))
            })
            .collect()
    }
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut durations: Vec<Duration>) -> Self {
        if durations.is_empty() {
            return Self::default();
        }
        durations.sort();
        // Nearest rank: the smallest value at or above the given share of the values.
        let at = |share: f64| {
            let rank = ((share * durations.len() as f64).ceil() as usize).clamp(1, durations.len());
            durations[rank - 1].as_secs_f64() * 1e3
        };
        Self { count: durations.len(), p50: at(0.50), p95: at(0.95), p99: at(0.99), max: at(1.0) }
    }
}
