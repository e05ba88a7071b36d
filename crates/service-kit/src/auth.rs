//! The admin API's guard, the same in every service: `Authorization: Bearer <ADMIN_TOKEN>`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::{FieldError, Problem};

/// `ADMIN_TOKEN`, for [`require_admin_token`].
#[derive(Debug, Clone, Default)]
pub struct AdminToken(pub Option<Arc<str>>);

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
pub fn token_matches(presented: Option<&str>, expected: &str) -> bool {
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
