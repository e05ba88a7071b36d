//! The HTTP layer: the router with its layers ([`router`]), the `/todos` routes ([`todos`]),
//! the headers they read ([`headers`]), extractors that turn malformed input into problems
//! ([`extract`]) and the mapping of every failure to a problem response ([`error`]).

pub mod error;
pub mod extract;
pub mod headers;
pub mod todos;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use service_kit::{health, problem, telemetry};

use crate::todos::Todos;

#[derive(Clone)]
pub struct AppState {
    pub todos: Todos,
    /// The CloudEvent `source` of the events `GET /todos/{id}/events` shows.
    pub app_id: Arc<str>,
}

/// The todo API with `/healthz` and `/readyz`, problem answers for unknown paths and methods,
/// the body limit, the correlation id, and a span per request.
pub fn router(state: AppState) -> Router {
    let db = state.todos.database().clone();
    let router = Router::new()
        .merge(todos::routes())
        .with_state(state)
        .merge(health::routes(db))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(headers::propagate));
    telemetry::with_request_spans(router)
}
