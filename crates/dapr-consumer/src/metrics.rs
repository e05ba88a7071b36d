//! `GET /metrics` in the Prometheus text exposition format: the dead-letter depth.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use service_kit::openapi::ProblemResponse;
use service_kit::problem::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dead_letters::DeadLetters;

#[derive(Clone)]
struct Metrics {
    store: DeadLetters,
    /// The consumer's app id, the `consumer` label.
    consumer: Arc<str>,
}

pub fn routes(store: DeadLetters, consumer: &str) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(metrics)).with_state(Metrics { store, consumer: consumer.into() })
}

/// Prometheus text exposition: the dead letters waiting for an operator.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "`dapr_todo_dead_letters`.", body = String, content_type = "text/plain"),
    (status = "default", response = inline(ProblemResponse)),
))]
async fn metrics(State(metrics): State<Metrics>) -> Result<Response, Problem> {
    let parked = metrics.store.parked().await?;
    let body = format!(
        "# HELP dapr_todo_dead_letters Dead letters waiting for an operator (parked).\n\
         # TYPE dapr_todo_dead_letters gauge\n\
         dapr_todo_dead_letters{{consumer=\"{}\"}} {parked}\n",
        metrics.consumer
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
