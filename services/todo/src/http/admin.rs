//! The operator's routes: parked events (`GET /admin/outbox/parked`,
//! `POST /admin/outbox/{eventId}/retry`, `POST /admin/outbox/{eventId}/discard`) behind
//! `ADMIN_TOKEN`, and `GET /metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use service_kit::db::Database;
use service_kit::problem::{FieldError, PathText, Problem};
use uuid::Uuid;

use crate::outbox::parked::{self, ParkedEvent};
use crate::outbox::queue;

/// The admin routes over `db`; the caller puts them behind the admin token.
pub fn routes(db: Database) -> Router {
    Router::new()
        .route("/admin/outbox/parked", get(list))
        .route("/admin/outbox/{eventId}/retry", post(retry))
        .route("/admin/outbox/{eventId}/discard", post(discard))
        .with_state(db)
}

pub fn metrics_routes(db: Database) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(db)
}

async fn list(State(db): State<Database>) -> Result<Json<Vec<ParkedEvent>>, Problem> {
    Ok(Json(parked::list(&db.reader).await?))
}

async fn retry(State(db): State<Database>, PathText(raw): PathText) -> Result<StatusCode, Problem> {
    let id = parse_id(&raw)?;
    if !parked::retry(&db, id).await? {
        return Err(not_parked(id));
    }
    tracing::info!(event_id = %id, "parked event retried by an operator");
    Ok(StatusCode::NO_CONTENT)
}

async fn discard(State(db): State<Database>, PathText(raw): PathText) -> Result<StatusCode, Problem> {
    let id = parse_id(&raw)?;
    if !parked::discard(&db, id).await? {
        return Err(not_parked(id));
    }
    tracing::warn!(event_id = %id, "parked event discarded by an operator; it will never be published");
    Ok(StatusCode::NO_CONTENT)
}

/// Prometheus text exposition: the outbox's depth and its parked events.
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
