//! The HTTP layer: the router with its layers ([`router`]), the `/todos` routes ([`todos`]),
//! the operator's routes ([`admin`]),
//! the headers they read ([`headers`]), extractors that turn malformed input into problems
//! ([`extract`]) and the mapping of every failure to a problem response ([`error`]).

pub mod admin;
pub mod error;
pub mod extract;
pub mod headers;
pub mod todos;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use service_kit::auth::{AdminToken, require_admin_token};
use service_kit::{health, problem, telemetry};

use crate::todos::Todos;

#[derive(Clone)]
pub struct AppState {
    pub todos: Todos,
    /// The CloudEvent `source` of the events `GET /todos/{id}/events` shows.
    pub app_id: Arc<str>,
    /// `ADMIN_TOKEN`; without it the admin API answers 403.
    pub admin_token: AdminToken,
}

/// The todo API with `/healthz` and `/readyz`, problem answers for unknown paths and methods,
/// the body limit, the correlation id, and a span per request.
pub fn router(state: AppState) -> Router {
    let db = state.todos.database().clone();
    let admin = admin::routes(db.clone())
        .layer(axum::middleware::from_fn_with_state(state.admin_token.clone(), require_admin_token));
    let router = Router::new()
        .merge(todos::routes())
        .with_state(state)
        .merge(admin)
        .merge(admin::metrics_routes(db.clone()))
        .merge(health::routes(db))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(headers::propagate));
    telemetry::with_request_spans(router)
}
