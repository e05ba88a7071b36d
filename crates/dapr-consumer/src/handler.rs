//! The one thing a consumer implements: what a todo event does to it.

use std::future::Future;

use dapr_events::TodoEventType;
use dapr_events::delivery::TodoEvent;

/// A consumer's effect for one delivered todo event. It must be idempotent by event id (record
/// it with [`crate::processed::mark_processed`] in the effect's transaction): daprd delivers at
/// least once, and the todo service may publish an event again.
pub trait EventHandler: Clone + Send + Sync + 'static {
    /// The topics it consumes; each gets its dead-letter topic.
    const TOPICS: &'static [TodoEventType];

    /// `Ok` when the event was applied, or had been before, or is not of interest: daprd gets
    /// SUCCESS. A [`Refusal`] says which other answer, and why.
    fn handle(&self, event: &TodoEvent) -> impl Future<Output = Result<(), Refusal>> + Send;
}

/// Why an event was not applied, and what daprd should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Transient (database unavailable, a downstream 5xx): deliver again per the resiliency
    /// policy, then dead-letter.
    Retry(String),
    /// It can never be applied: dead-letter it now.
    Drop(String),
}

impl Refusal {
    /// A failed database statement: worth retrying (the database may be back, the conflict
    /// gone), unless the database refused the event's data itself (PostgreSQL's SQLSTATE class
    /// 22, "data exception": a NUL in text, a value out of range), which no retry changes.
    pub fn database(error: &sqlx::Error) -> Self {
        let data_exception =
            error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code.starts_with("22"));
        if data_exception {
            Self::Drop(format!("the database refused the event's data: {error}"))
        } else {
            Self::Retry(format!("database: {error}"))
        }
    }
}
