//! Liveness and readiness, answered the same way by every service.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::db::Database;
use crate::problem::Problem;

/// `GET /healthz` and `GET /readyz` on `db`.
pub fn routes<S: Clone + Send + Sync + 'static>(db: Database) -> Router<S> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(move || async move { readiness(&db).await }))
}

/// `GET /healthz`: the process serves HTTP.
pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: 200 while the database answers within 2 s, else 503.
pub async fn readiness(db: &Database) -> Response {
    let reason = match tokio::time::timeout(Duration::from_secs(2), db.ping()).await {
        Ok(Ok(())) => return Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "database ping timed out".to_owned(),
    };
    tracing::warn!(reason, "not ready");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready")
        .detail(format!("The database is not reachable: {reason}"))
        .into_response()
}
