//! Liveness and readiness, answered the same way by every service.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::Database;
use crate::openapi::ProblemResponse;
use crate::problem::Problem;

/// The OpenAPI tag of these routes.
pub const TAG: &str = "health";

/// `GET /healthz` and `GET /readyz` on `db`.
pub fn routes<S: Clone + Send + Sync + 'static>(db: Database) -> OpenApiRouter<S> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).with_state(db)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthStatus {
    /// `ok` (live) or `ready`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process serves HTTP (liveness).
#[utoipa::path(get, path = "/healthz", tag = TAG, responses(
    (status = 200, description = "Alive.", body = HealthStatus, example = json!({"status": "ok"})),
    (status = "default", response = inline(ProblemResponse)),
))]
async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// The database answers within 2 s (readiness): until then, no traffic should be routed here.
#[utoipa::path(get, path = "/readyz", tag = TAG, responses(
    (status = 200, description = "Ready.", body = HealthStatus, example = json!({"status": "ready"})),
    (status = 503, description = "The database does not answer.", body = Problem, content_type = "application/problem+json"),
    (status = "default", response = inline(ProblemResponse)),
))]
async fn readyz(State(db): State<Database>) -> Response {
    let reason = match tokio::time::timeout(Duration::from_secs(2), db.ping()).await {
        Ok(Ok(())) => return Json(HealthStatus { status: "ready" }).into_response(),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "database ping timed out".to_owned(),
    };
    tracing::warn!(reason, "not ready");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready")
        .detail(format!("The database is not reachable: {reason}"))
        .into_response()
}
