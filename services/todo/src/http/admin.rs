//! The operator's routes: parked events (`GET /admin/outbox/parked`,
//! `POST /admin/outbox/{eventId}/retry`, `POST /admin/outbox/{eventId}/discard`) behind
//! `ADMIN_TOKEN`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use service_kit::db::Database;
use service_kit::openapi::AdminProblems;
use service_kit::problem::{FieldError, PathText, Problem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::outbox::parked::{self, ParkedEvent};

/// The admin routes over `db`; the caller puts them behind the admin token.
pub fn routes(db: Database) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(retry)).routes(routes!(discard)).with_state(db)
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

fn parse_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::bad_request(FieldError::new("eventId", "not a UUID")))
}

fn not_parked(id: Uuid) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found").detail(format!("No parked event with id {id}."))
}
