//! The analytics service's one error type, and how each variant answers over HTTP (RFC 9457
//! problems naming the field; 5xx only for our own infrastructure).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::db::DbError;
use service_kit::env::ConfigError;
use service_kit::problem::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed query or path parameter (400).
    #[error("bad request ({field}): {detail}")]
    BadRequest { field: String, detail: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::BadRequest { field: field.into(), detail: detail.into() }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Error::BadRequest { field, detail } => Problem::new(StatusCode::BAD_REQUEST, "bad-request")
                .detail(detail.clone())
                .errors(vec![FieldError::new(field, detail)]),
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
