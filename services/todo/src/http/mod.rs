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
use service_kit::health;
use service_kit::middleware::{Limits, shed_load};
use service_kit::openapi::{self, SecuritySchemes};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::todos::Todos;

#[derive(Clone)]
pub struct AppState {
    pub todos: Todos,
    /// The CloudEvent `source` of the events `GET /todos/{id}/events` shows.
    pub app_id: Arc<str>,
    /// `ADMIN_TOKEN`; without it the admin API answers 403.
    pub admin_token: AdminToken,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "dapr-todo: todo service", description = "Create, read, change and delete todos. Every change is published as a CloudEvent (schemas/events/) through Dapr pub/sub. Every error answer is an RFC 9457 problem (application/problem+json)."),
    tags(
        (name = todos::TAG, description = "The todos, and the events each change emitted."),
        (name = admin::TAG, description = "Operators: events daprd refused for good (docs/operations.md)."),
        (name = health::TAG, description = "Liveness and readiness probes."),
    ),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

/// Every route of the service with its OpenAPI operation: the todo API (load-shed past
/// `limits`), the admin API behind the admin token, `/healthz` and `/readyz`. (`/metrics` is
/// on the metrics port: `service_kit::metrics`.)
pub fn routes(state: AppState, limits: &Limits) -> OpenApiRouter {
    let db = state.todos.database().clone();
    let admin = admin::routes(db.clone())
        .layer(axum::middleware::from_fn_with_state(state.admin_token.clone(), require_admin_token));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(shed_load(todos::routes(), limits).with_state(state))
        .merge(admin)
        .merge(health::routes(db))
}

/// What the service serves: `routes` with `/openapi.json` and `/docs`, the body limit, the
/// correlation id, and what `service_kit::middleware::harden` adds (problem answers only, a
/// problem for a panic, the request timeout, a span per request).
pub fn app(routes: OpenApiRouter, limits: &Limits) -> Router {
    let routes = routes
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(headers::propagate));
    openapi::serve_documented(routes, limits)
}

/// [`app`] of [`routes`].
pub fn router(state: AppState, limits: &Limits) -> Router {
    app(routes(state, limits), limits)
}
