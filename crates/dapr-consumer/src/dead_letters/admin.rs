//! The dead-letter admin API, behind `ADMIN_TOKEN`:
//! `GET /admin/dead-letters?status=parked|replayed|discarded&limit=1..100&cursor=` (oldest
//! first), `GET /admin/dead-letters/{id}`, `POST /admin/dead-letters/{id}/replay` and
//! `POST /admin/dead-letters/{id}/discard`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use dapr_events::DaprPublisher;
use dapr_events::publish::CLOUDEVENTS_JSON;
use serde::Deserialize;
use serde_json::Value;
use service_kit::pagination::{Page, PageRequest};
use service_kit::problem::{FieldError, PathText, Problem};
use uuid::Uuid;

use super::store::{DeadLetter, DeadLetterStatus, DeadLetters};

#[derive(Clone)]
struct Admin {
    store: DeadLetters,
    publisher: Arc<DaprPublisher>,
}

/// The admin routes over `store`; replays publish through `publisher`. The caller puts them
/// behind the admin token.
pub fn routes(store: DeadLetters, publisher: DaprPublisher) -> Router {
    Router::new()
        .route("/admin/dead-letters", get(list))
        .route("/admin/dead-letters/{id}", get(show))
        .route("/admin/dead-letters/{id}/replay", post(replay))
        .route("/admin/dead-letters/{id}/discard", post(discard))
        .with_state(Admin { store, publisher: Arc::new(publisher) })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(admin): State<Admin>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<DeadLetter>>, Problem> {
    let Ok(Query(query)) = query else {
        return Err(Problem::bad_request(FieldError::new(
            "query",
            "unknown or malformed parameters (status, limit, cursor)",
        )));
    };
    let status = query
        .status
        .map(|text| {
            serde_json::from_value::<DeadLetterStatus>(Value::String(text))
                .map_err(|_| FieldError::new("status", "must be parked, replayed or discarded"))
        })
        .transpose()?;
    let page = PageRequest::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let rows = admin.store.list(status, &page).await?;
    Ok(Json(Page::from_rows(rows, &page, |letter| letter.id)))
}

async fn show(State(admin): State<Admin>, PathText(raw): PathText) -> Result<Json<DeadLetter>, Problem> {
    let id = parse_id(&raw)?;
    Ok(Json(find(&admin, id).await?))
}

/// Republishes the original CloudEvent, unchanged (same id, so consumers that processed it
/// already skip it), to its original topic through the sidecar; then marks it replayed. A
/// failed publish leaves it parked and answers 502 with the sidecar's error.
async fn replay(State(admin): State<Admin>, PathText(raw): PathText) -> Result<Json<DeadLetter>, Problem> {
    let id = parse_id(&raw)?;
    let letter = find(&admin, id).await?;
    if letter.status != DeadLetterStatus::Parked {
        return Err(Problem::new(StatusCode::CONFLICT, "not-parked")
            .detail(format!("The dead letter is {}; only parked ones can be replayed.", letter.status.as_str())));
    }
    let partition_key = letter.event.get("subject").and_then(Value::as_str);
    let traceparent = letter.event.get("traceparent").and_then(Value::as_str).filter(|t| !t.is_empty());
    let body = serde_json::to_vec(&letter.event).expect("JSON serialises");
    if let Err(error) =
        admin.publisher.publish_bytes(&letter.topic, CLOUDEVENTS_JSON, body, partition_key, traceparent).await
    {
        tracing::warn!(%error, %id, "replay failed");
        return Err(Problem::new(StatusCode::BAD_GATEWAY, "replay-failed")
            .detail(format!("The Dapr sidecar did not accept the event: {error}")));
    }
    admin.store.resolve(id, DeadLetterStatus::Replayed).await?;
    tracing::info!(%id, event_id = %letter.event_id, topic = %letter.topic, "dead letter replayed");
    Ok(Json(find(&admin, id).await?))
}

async fn discard(State(admin): State<Admin>, PathText(raw): PathText) -> Result<Json<DeadLetter>, Problem> {
    let id = parse_id(&raw)?;
    find(&admin, id).await?;
    admin.store.resolve(id, DeadLetterStatus::Discarded).await?;
    Ok(Json(find(&admin, id).await?))
}

async fn find(admin: &Admin, id: Uuid) -> Result<DeadLetter, Problem> {
    admin
        .store
        .get(id)
        .await?
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "not-found").detail(format!("No dead letter with id {id}.")))
}

fn parse_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::bad_request(FieldError::new("id", "not a UUID")))
}
