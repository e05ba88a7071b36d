//! `GET /metrics` in the Prometheus text exposition format: the dead-letter depth.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use service_kit::problem::Problem;
use std::sync::Arc;

use crate::dead_letters::DeadLetters;

#[derive(Clone)]
struct Metrics {
    store: DeadLetters,
    /// The consumer's app id, the `consumer` label.
    consumer: Arc<str>,
}

pub fn routes(store: DeadLetters, consumer: &str) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(Metrics { store, consumer: consumer.into() })
}

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
