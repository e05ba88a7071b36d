//! Who may call what: daprd's routes need its `dapr-api-token` when `APP_API_TOKEN` is set
//! (contract §8.2), the admin API needs `Authorization: Bearer <ADMIN_TOKEN>`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dapr_events::publish::API_TOKEN_HEADER;
use service_kit::problem::{FieldError, Problem};

/// `APP_API_TOKEN`, for [`require_app_token`].
#[derive(Debug, Clone, Default)]
pub struct AppToken(pub Option<Arc<str>>);

/// `ADMIN_TOKEN`, for [`require_admin_token`].
#[derive(Debug, Clone, Default)]
pub struct AdminToken(pub Option<Arc<str>>);

/// Middleware for the routes daprd calls: with a token configured, a request without the same
/// `dapr-api-token` gets 401 and is not handled. Health routes stay outside it (daprd's health
/// probe carries no token).
pub async fn require_app_token(State(token): State<AppToken>, request: Request, next: Next) -> Response {
    let Some(expected) = token.0 else { return next.run(request).await };
    let presented = request.headers().get(API_TOKEN_HEADER).and_then(|v| v.to_str().ok());
    if !token_matches(presented, &expected) {
        tracing::warn!(path = %request.uri().path(), "request without a valid dapr-api-token refused");
        return Problem::new(StatusCode::UNAUTHORIZED, "unauthorized")
            .detail("This route is called by the Dapr sidecar and needs its dapr-api-token header.")
            .errors(vec![FieldError::new(API_TOKEN_HEADER, "missing or wrong")])
            .into_response();
    }
    next.run(request).await
}

/// Middleware for admin routes: `Authorization: Bearer <ADMIN_TOKEN>` or 401; with no token
/// configured the admin API is off (403).
pub async fn require_admin_token(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    let Some(expected) = &token.0 else {
        return Problem::new(StatusCode::FORBIDDEN, "admin-disabled")
            .detail("The admin API is disabled: set ADMIN_TOKEN to enable it.")
            .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token_matches(presented, expected) {
        return Problem::new(StatusCode::UNAUTHORIZED, "unauthorized")
            .detail("Admin routes need `Authorization: Bearer <ADMIN_TOKEN>`.")
            .errors(vec![FieldError::new("Authorization", "missing or wrong bearer token")])
            .into_response();
    }
    next.run(request).await
}

/// Whether a presented token equals the expected one, compared in constant time (for equal
/// lengths) so response timing does not reveal how much of a guess was right.
fn token_matches(presented: Option<&str>, expected: &str) -> bool {
    presented.is_some_and(|p| {
        p.len() == expected.len() && p.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        assert!(token_matches(Some("s3cret"), "s3cret"));
        assert!(!token_matches(Some("s3cre"), "s3cret"));
        assert!(!token_matches(Some("s3creT"), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
    }
}
