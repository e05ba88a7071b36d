//! The `/todos` routes: each turns a request into a command or query of the todo domain
//! (`crate::todos`) and its result into a response with the right status and headers.

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use dapr_events::catalog::validate_user_id;
use dapr_events::{CloudEvent, TodoEventType, TodoStatus, timestamp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use service_kit::pagination::PageRequest;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, Result};
use super::extract::{ApiJson, ApiQuery};
use super::headers::{self, IDEMPOTENT_REPLAYED, RequestContext};
use crate::outbox::EventContext;
use crate::relay;
use crate::todos::commands::{Created, Decision, Outcome, Precondition};
use crate::todos::input::{CreateTodo, UpdateTodo};
use crate::todos::model::Todo;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/todos", post(create).get(list))
        .route("/todos/{id}", get(fetch).patch(update).delete(remove))
        .route("/todos/{id}/complete", post(complete))
        .route("/todos/{id}/reopen", post(reopen))
        .route("/todos/{id}/events", get(events))
}

/// `POST /todos` → 201 with `Location` and `ETag`. With `Idempotency-Key`, a retry of the same
/// request replays the first response and creates nothing.
async fn create(
    State(state): State<AppState>,
    RequestContext(context): RequestContext,
    request_headers: HeaderMap,
    ApiJson(request): ApiJson<CreateTodo>,
) -> Result<Response> {
    let idempotency = headers::idempotency_key(&request_headers, &request)?;
    let input = request.validate().map_err(ApiError::invalid)?;
    Ok(match state.todos.create(input, &context, idempotency.as_ref()).await? {
        Created::New(todo) => todo_response(StatusCode::CREATED, &todo, true),
        Created::Replayed { status, todo } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
            let mut response = todo_response(status, &todo, true);
            response.headers_mut().insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
            response
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /todos?userId=&status=open|completed&limit=1..100&cursor=`, newest first.
async fn list(State(state): State<AppState>, ApiQuery(query): ApiQuery<ListQuery>) -> Result<Response> {
    let user_id = query
        .user_id
        .map(|u| validate_user_id(&u).map(|_| u).map_err(|e| ApiError::bad_request("userId", e)))
        .transpose()?;
    let status = query
        .status
        .map(|s| s.parse::<TodoStatus>().map_err(|_| ApiError::bad_request("status", "must be open or completed")))
        .transpose()?;
    let page = PageRequest::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    Ok(axum::Json(state.todos.list(user_id, status, &page).await?).into_response())
}

/// `GET /todos/{id}` → 200 with `ETag`, or 404.
async fn fetch(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let todo = state.todos.get(parse_id(&id)?).await?;
    Ok(todo_response(StatusCode::OK, &todo, false))
}

/// What every change to one todo starts from: which todo, the caller's precondition
/// (`If-Match`), and the context its event will carry.
struct ChangeTarget {
    id: Uuid,
    precondition: Option<Precondition>,
    context: EventContext,
}

impl<S: Send + Sync> FromRequestParts<S> for ChangeTarget {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("id", "must be a UUID"))?;
        let RequestContext(context) =
            RequestContext::from_request_parts(parts, state).await.unwrap_or_else(|never| match never {});
        Ok(Self { id: parse_id(&id)?, precondition: headers::if_match(&parts.headers)?, context })
    }
}

impl ChangeTarget {
    /// Runs the change (see [`crate::todos::Todos::change`]) and answers with its outcome.
    async fn apply(
        self,
        state: &AppState,
        decide: impl Fn(&Todo, DateTime<Utc>) -> Decision + Send + 'static,
    ) -> Result<Response> {
        let outcome = state.todos.change(self.id, self.precondition, self.context, decide).await?;
        Ok(match outcome {
            Outcome::Unchanged(todo) | Outcome::Changed(todo) => todo_response(StatusCode::OK, &todo, false),
            Outcome::Deleted => StatusCode::NO_CONTENT.into_response(),
        })
    }
}

/// `PATCH /todos/{id}` with optional `If-Match`. A patch that changes nothing answers 200 with
/// the todo as it is, and emits no event.
async fn update(
    State(state): State<AppState>,
    target: ChangeTarget,
    ApiJson(request): ApiJson<UpdateTodo>,
) -> Result<Response> {
    let patch = request.validate().map_err(ApiError::invalid)?;
    target
        .apply(&state, move |todo, _now| {
            let (next, changed_fields) = patch.apply(todo);
            if changed_fields.is_empty() {
                Decision::Unchanged
            } else {
                Decision::Update { next, event_type: TodoEventType::Updated, changed_fields }
            }
        })
        .await
}

/// `POST /todos/{id}/complete`: idempotent; completing a completed todo changes nothing.
async fn complete(State(state): State<AppState>, target: ChangeTarget) -> Result<Response> {
    target.apply(&state, |todo, now| set_status(todo, now, TodoStatus::Completed)).await
}

/// `POST /todos/{id}/reopen`: the inverse of complete, equally idempotent.
async fn reopen(State(state): State<AppState>, target: ChangeTarget) -> Result<Response> {
    target.apply(&state, |todo, now| set_status(todo, now, TodoStatus::Open)).await
}

fn set_status(todo: &Todo, now: DateTime<Utc>, status: TodoStatus) -> Decision {
    match todo.with_status(status, now) {
        None => Decision::Unchanged,
        Some((next, event_type)) => Decision::Update { next, event_type, changed_fields: Vec::new() },
    }
}

/// `DELETE /todos/{id}` → 204; the todo is gone from reads and lists, its history stays.
async fn remove(State(state): State<AppState>, target: ChangeTarget) -> Result<Response> {
    target.apply(&state, |_, _| Decision::Delete).await
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EventHistory {
    todo_id: Uuid,
    events: Vec<HistoryEntry>,
}

/// One entry of `GET /todos/{id}/events`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryEntry {
    sequence: i64,
    #[serde(with = "timestamp::option")]
    published_at: Option<DateTime<Utc>>,
    /// When an operator discarded the event (it was parked and never published).
    #[serde(with = "timestamp::option", skip_serializing_if = "Option::is_none")]
    discarded_at: Option<DateTime<Utc>>,
    /// Exactly the CloudEvent subscribers receive (daprd adds `topic` and `pubsubname`).
    event: CloudEvent<Box<RawValue>>,
}

/// `GET /todos/{id}/events`: every event of the todo in order, including after deletion (it is
/// an audit trail); 404 only for a todo that never existed.
async fn events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let id = parse_id(&id)?;
    let events = state
        .todos
        .history(id)
        .await?
        .iter()
        .map(|stored| HistoryEntry {
            sequence: stored.seq,
            published_at: stored.published_at,
            discarded_at: stored.discarded_at,
            event: relay::cloud_event(stored, &state.app_id),
        })
        .collect();
    Ok(axum::Json(EventHistory { todo_id: id, events }).into_response())
}

/// The todo with its `ETag` (and `Location`, for a created one).
fn todo_response(status: StatusCode, todo: &Todo, with_location: bool) -> Response {
    let mut response = (status, axum::Json(todo)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_str(&todo.etag()).expect("an ETag is a valid header"));
    if with_location {
        let location = format!("/todos/{}", todo.id);
        headers.insert(header::LOCATION, HeaderValue::from_str(&location).expect("a path is a valid header"));
    }
    response
}

/// Ids are UUIDs; anything else is a malformed request rather than a missing todo.
fn parse_id(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| ApiError::bad_request("id", "must be a UUID"))
}
