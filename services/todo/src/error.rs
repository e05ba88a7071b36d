//! The todo service's one error type, and how each variant answers over HTTP.
//!
//! Every error a client can cause maps to a 4xx RFC 9457 problem that names the offending field
//! or header; only failures of our own infrastructure (database down) answer 5xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use service_kit::db::DbError;
use service_kit::env::ConfigError;

use crate::http::problem::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body parsed but its values are unacceptable (422), one entry per field.
    #[error("invalid request: {0:?}")]
    Validation(Vec<FieldError>),
    /// The request is malformed: bad JSON, query parameter or header (400).
    #[error("bad request ({field:?}): {detail}")]
    BadRequest { field: Option<String>, detail: String },
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("todo {0} not found")]
    TodoNotFound(String),
    #[error("If-Match does not match the current version {current_version}")]
    PreconditionFailed { current_version: i64 },
    /// Another writer kept changing the todo between our read and our write.
    #[error("the todo was changed concurrently too often")]
    Conflict,
    #[error("Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("invalid configuration: {var}: {detail}")]
    Config { var: &'static str, detail: String },
    #[error("the outbox relay stopped unexpectedly: {0}")]
    RelayStopped(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::BadRequest { field: Some(field.into()), detail: detail.into() }
    }

    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, detail)])
    }
}

impl From<DbError> for Error {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Url(detail) => Error::Config { var: "DATABASE_URL", detail },
            DbError::Database(e) => Error::Database(e),
            DbError::Migration(e) => Error::Migration(e),
            DbError::Io(e) => Error::Io(e),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Error::Config { var: error.var, detail: error.detail }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::Validation(errors) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed")
                .detail("The request body has invalid fields; see `errors`.")
                .errors(errors),
            Error::BadRequest { field, detail } => {
                let problem = Problem::new(StatusCode::BAD_REQUEST, "bad-request").detail(detail.clone());
                match field {
                    Some(field) => problem.errors(vec![FieldError::new(field, detail)]),
                    None => problem,
                }
            }
            Error::UnsupportedMediaType(detail) => {
                Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type")
                    .detail(detail.clone())
                    .errors(vec![FieldError::new("Content-Type", detail)])
            }
            Error::PayloadTooLarge { limit } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large")
                .detail(format!("The request body must not exceed {limit} bytes.")),
            Error::TodoNotFound(id) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found").detail(format!("No todo with id {id}."))
            }
            Error::PreconditionFailed { current_version } => {
                Problem::new(StatusCode::PRECONDITION_FAILED, "precondition-failed")
                    .detail(format!(
                        "If-Match does not match the todo's current ETag \"{current_version}\"; fetch it again."
                    ))
                    .errors(vec![FieldError::new("If-Match", "does not match the current version")])
            }
            Error::IdempotencyKeyReused => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
                .detail("This Idempotency-Key was already used with a different request body.")
                .errors(vec![FieldError::new("Idempotency-Key", "already used with a different request")]),
            Error::Conflict => Problem::new(StatusCode::CONFLICT, "conflict")
                .detail("The todo is being changed concurrently; retry the request."),
            Error::Database(ref e) if service_kit::db::is_unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
                    .detail("The database is unavailable; retry later.")
            }
            other => {
                tracing::error!(error = %other, "request failed");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal").detail("Internal error.")
            }
        };
        problem.into_response()
    }
}
