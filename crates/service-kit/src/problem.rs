//! RFC 9457 problem details (`application/problem+json`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Problem types are relative URIs under this base; they name the kind of failure so clients
/// can branch on `type` rather than on prose.
const TYPE_BASE: &str = "https://dapr-todo.example/problems/";

/// One invalid input: `field` is the JSON field (dotted path for nested ones), query
/// parameter, path parameter or header name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"field": "title", "detail": "must be 1 to 200 characters after trimming"}))]
pub struct FieldError {
    pub field: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), detail: detail.into() }
    }
}

/// An RFC 9457 problem: `type` names the kind of failure (branch on it, not on prose), `errors`
/// the fields, parameters or headers at fault.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "https://dapr-todo.example/problems/validation-failed",
    "title": "Unprocessable Entity",
    "status": 422,
    "detail": "The request body has invalid fields; see `errors`.",
    "errors": [{"field": "title", "detail": "must be 1 to 200 characters after trimming"}]
}))]
pub struct Problem {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'static str,
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str) -> Self {
        Self {
            type_uri: format!("{TYPE_BASE}{kind}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

/// One path parameter as text. A malformed one (bad percent-encoding, not UTF-8) answers a 400
/// problem naming the parameter, where axum's own `Path` would answer plain text.
pub struct PathText(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathText {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Problem> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(text)) => Ok(Self(text)),
            Err(rejection) => {
                let field = match &rejection {
                    PathRejection::FailedToDeserializePathParams(error) => match error.kind() {
                        ErrorKind::InvalidUtf8InPathParam { key } | ErrorKind::ParseErrorAtKey { key, .. } => {
                            key.clone()
                        }
                        _ => "path".to_owned(),
                    },
                    _ => "path".to_owned(),
                };
                Err(Problem::new(StatusCode::BAD_REQUEST, "bad-request")
                    .detail(rejection.body_text())
                    .errors(vec![FieldError::new(field, "malformed path parameter")]))
            }
        }
    }
}

impl Problem {
    /// The answer to a request whose database work failed: 503 when the database is
    /// unavailable or overloaded (the client may retry), 500 for anything else (a bug of ours,
    /// logged as an error).
    pub fn database_failure(error: &sqlx::Error) -> Self {
        if crate::db::is_unavailable(error) {
            tracing::warn!(%error, "database unavailable");
            return Self::database_unavailable();
        }
        tracing::error!(%error, "database statement failed");
        Self::internal()
    }

    /// 503: the database cannot take the request now.
    pub fn database_unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable").detail("The database is unavailable; retry later.")
    }

    /// 500 with no detail: what went wrong is in our log, not in the answer.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal").detail("Internal error.")
    }

    /// 400 naming one offending field.
    pub fn bad_request(error: FieldError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request").detail(error.detail.clone()).errors(vec![error])
    }
}

impl From<FieldError> for Problem {
    fn from(error: FieldError) -> Self {
        Self::bad_request(error)
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        Self::database_failure(&error)
    }
}

/// Router fallback: unknown paths answer a problem, not an empty 404.
pub async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found").detail("No such resource.")
}

pub async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed")
        .detail("The resource does not support this method.")
}
