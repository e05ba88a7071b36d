//! daprd's routes need its `dapr-api-token` when `APP_API_TOKEN` is set (contract §8.2); the
//! admin API's guard is `service_kit::auth`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dapr_events::publish::API_TOKEN_HEADER;
use service_kit::auth::token_matches;
use service_kit::problem::{FieldError, Problem};

/// `APP_API_TOKEN`, for [`require_app_token`].
#[derive(Debug, Clone, Default)]
pub struct AppToken(pub Option<Arc<str>>);

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
