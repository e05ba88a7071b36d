//! The operator's routes: parked events (`GET /admin/outbox/parked`,
//! `POST /admin/outbox/{eventId}/retry`, `POST /admin/outbox/{eventId}/discard`) behind
//! `ADMIN_TOKEN`, and `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use service_kit::db::Database;
use service_kit::openapi::{AdminProblems, ProblemResponse};
use service_kit::problem::{FieldError, PathText, Problem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::outbox::parked::{self, ParkedEvent};
use crate::outbox::queue;

/// The admin routes over `db`; the caller puts them behind the admin token.
pub fn routes(db: Database) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(retry)).routes(routes!(discard)).with_state(db)
}

pub fn metrics_routes(db: Database) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(metrics)).with_state(db)
}

/// The OpenAPI tag of the admin routes.
pub const TAG: &str = "admin";

/// Events daprd refused for good (403/404 for longer than `RELAY_PARK_AFTER_MS`), oldest first.
#[utoipa::path(get, path = "/admin/outbox/parked", tag = TAG, security(("admin_token" = [])), responses(
    (status = 200, description = "The parked events.", body = Vec<ParkedEvent>, links(
        ("RetryParked" = (operation_id = "retry", parameters(("eventId" = "$response.body#/0/eventId")), description = "The oldest parked event.")),
        ("DiscardParked" = (operation_id = "discard", parameters(("eventId" = "$response.body#/0/eventId")))),
    )),
    AdminProblems,
))]
async fn list(State(db): State<Database>) -> Result<Json<Vec<ParkedEvent>>, Problem> {
    Ok(Json(parked::list(&db.reader).await?))
}

/// Publish a parked event again (after fixing what made daprd refuse it).
#[utoipa::path(post, path = "/admin/outbox/{eventId}/retry", tag = TAG, security(("admin_token" = [])),
    params(("eventId" = Uuid, Path, description = "The parked event's id.")), responses(
    (status = 204, description = "Back in the queue."),
    (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No parked event with this id.", body = Problem, content_type = "application/problem+json"),
    AdminProblems,
))]
async fn retry(State(db): State<Database>, PathText(raw): PathText) -> Result<StatusCode, Problem> {
    let id = parse_id(&raw)?;
    if !parked::retry(&db, id).await? {
        return Err(not_parked(id));
    }
    tracing::info!(event_id = %id, "parked event retried by an operator");
    Ok(StatusCode::NO_CONTENT)
}

/// Give up on a parked event: it is never published, the todo's later events go on.
#[utoipa::path(post, path = "/admin/outbox/{eventId}/discard", tag = TAG, security(("admin_token" = [])),
    params(("eventId" = Uuid, Path, description = "The parked event's id.")), responses(
    (status = 204, description = "Discarded."),
    (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No parked event with this id.", body = Problem, content_type = "application/problem+json"),
    AdminProblems,
))]
async fn discard(State(db): State<Database>, PathText(raw): PathText) -> Result<StatusCode, Problem> {
    let id = parse_id(&raw)?;
    if !parked::discard(&db, id).await? {
        return Err(not_parked(id));
    }
    tracing::warn!(event_id = %id, "parked event discarded by an operator; it will never be published");
    Ok(StatusCode::NO_CONTENT)
}

/// Prometheus text exposition: the outbox's depth and its parked events.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "`dapr_todo_outbox_pending` and `dapr_todo_outbox_parked`.", body = String, content_type = "text/plain"),
    (status = "default", response = inline(ProblemResponse)),
))]
async fn metrics(State(db): State<Database>) -> Result<Response, Problem> {
    let pending = queue::pending_count(&db.reader).await?;
    let parked = parked::count(&db.reader).await?;
    let body = format!(
        "# HELP dapr_todo_outbox_pending Events in the outbox not yet published (parked ones included).\n\
         # TYPE dapr_todo_outbox_pending gauge\n\
         dapr_todo_outbox_pending {pending}\n\
         # HELP dapr_todo_outbox_parked Events daprd refused for good, waiting for an operator.\n\
         # TYPE dapr_todo_outbox_parked gauge\n\
         dapr_todo_outbox_parked {parked}\n"
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

fn parse_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::bad_request(FieldError::new("eventId", "not a UUID")))
}

fn not_parked(id: Uuid) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found").detail(format!("No parked event with id {id}."))
}
