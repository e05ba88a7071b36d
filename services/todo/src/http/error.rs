//! How every failure of a request answers over HTTP: an RFC 9457 problem that names the
//! offending field or header for whatever the client can fix (4xx); only failures of our own
//! infrastructure (database down) answer 5xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::problem::{FieldError, Problem};

use crate::todos::error::TodoError;
use crate::todos::input::InvalidField;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    #[error(transparent)]
    Todo(#[from] TodoError),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::BadRequest { field: Some(field.into()), detail: detail.into() }
    }

    pub fn invalid(fields: Vec<InvalidField>) -> Self {
        Self::Validation(fields.into_iter().map(|f| FieldError::new(f.field, f.detail)).collect())
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        Self::BadRequest { field: Some(error.field), detail: error.detail }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            ApiError::Validation(errors) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed")
                .detail("The request body has invalid fields; see `errors`.")
                .errors(errors),
            ApiError::BadRequest { field, detail } => {
                let problem = Problem::new(StatusCode::BAD_REQUEST, "bad-request").detail(detail.clone());
                match field {
                    Some(field) => problem.errors(vec![FieldError::new(field, detail)]),
                    None => problem,
                }
            }
            ApiError::UnsupportedMediaType(detail) => {
                Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type")
                    .detail(detail.clone())
                    .errors(vec![FieldError::new("Content-Type", detail)])
            }
            ApiError::PayloadTooLarge { limit } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large")
                .detail(format!("The request body must not exceed {limit} bytes.")),
            ApiError::Todo(error) => todo_problem(error),
        };
        problem.into_response()
    }
}

fn todo_problem(error: TodoError) -> Problem {
    match error {
        TodoError::NotFound(id) => {
            Problem::new(StatusCode::NOT_FOUND, "not-found").detail(format!("No todo with id {id}."))
        }
        TodoError::PreconditionFailed { current_version } => {
            Problem::new(StatusCode::PRECONDITION_FAILED, "precondition-failed")
                .detail(format!(
                    "If-Match does not match the todo's current ETag \"{current_version}\"; fetch it again."
                ))
                .errors(vec![FieldError::new("If-Match", "does not match the current version")])
        }
        TodoError::IdempotencyKeyReused => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
            .detail("This Idempotency-Key was already used with a different request body.")
            .errors(vec![FieldError::new("Idempotency-Key", "already used with a different request")]),
        TodoError::Conflict => Problem::new(StatusCode::CONFLICT, "conflict")
            .detail("The todo is being changed concurrently; retry the request."),
        TodoError::Unavailable(reason) => {
            tracing::warn!(%reason, "database unavailable");
            Problem::database_unavailable()
        }
        TodoError::Database(error) => Problem::database_failure(&error),
    }
}
