//! Why a todo command or query failed, in the domain's terms; `crate::http::error` says how
//! each answers over HTTP.

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum TodoError {
    #[error("todo {0} not found")]
    NotFound(Uuid),
    /// The caller's precondition (`If-Match`) names another version than the current one.
    #[error("the todo is at version {current_version}, not the expected one")]
    PreconditionFailed { current_version: i64 },
    /// Another writer kept changing the todo between our read and our write.
    #[error("the todo was changed concurrently too often")]
    Conflict,
    #[error("the idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    /// The database could not take a group commit this change was part of (busy, closed,
    /// unreachable); nothing of it was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}
