//! The todo resource: `/todos` routes.

pub mod model;
pub mod store;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use dapr_events::{TodoEventType, TodoStatus};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use self::model::{CreateTodo, Todo, UpdateTodo};
use self::store::{Created, Decision, IdempotencyKey, IfMatch, ListFilter, Outcome};
use crate::error::{Error, Result};
use crate::http::context::RequestContext;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::outbox::{self, HistoryEntry};
use crate::startup::AppState;

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

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
    context: RequestContext,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateTodo>,
) -> Result<Response> {
    let idempotency = idempotency_key(&headers, &request)?;
    let input = request.validate().map_err(Error::Validation)?;
    match store::create(&state.db, input, &context, idempotency.as_ref()).await? {
        Created::New(todo) => {
            state.relay_wakeup.notify_one();
            let location = format!("/todos/{}", todo.id);
            Ok(todo_response(StatusCode::CREATED, &todo, Some(&location)))
        }
        Created::Replayed(stored) => {
            let todo: Todo = serde_json::from_str(&stored.body)
                .map_err(|e| Error::Database(sqlx::Error::Decode(format!("stored idempotent response: {e}").into())))?;
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::CREATED);
            let mut response = todo_response(status, &todo, Some(&format!("/todos/{}", todo.id)));
            response.headers_mut().insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

fn idempotency_key(headers: &HeaderMap, request: &CreateTodo) -> Result<Option<IdempotencyKey>> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Error::bad_request(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            )
        })?;
    // The request as we understood it, re-serialised: formatting and key order of the
    // client's JSON do not make two requests different.
    let mut hasher = Sha256::new();
    hasher.update(b"POST /todos\n");
    hasher.update(serde_json::to_vec(request).expect("a request serialises"));
    let request_hash = format!("{:x}", hasher.finalize());
    Ok(Some(IdempotencyKey { key: key.to_owned(), request_hash }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TodoPage {
    items: Vec<Todo>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// `GET /todos?userId=&status=open|completed&limit=1..100&cursor=`, newest first.
async fn list(State(state): State<AppState>, ApiQuery(query): ApiQuery<ListQuery>) -> Result<Response> {
    let user_id = query
        .user_id
        .map(|u| model::validate_user_id(&u).map(|_| u).map_err(|e| Error::bad_request("userId", e)))
        .transpose()?;
    let status = query
        .status
        .map(|s| s.parse::<TodoStatus>().map_err(|_| Error::bad_request("status", "must be open or completed")))
        .transpose()?;
    let limit = match query.limit {
        None => DEFAULT_PAGE_SIZE,
        Some(limit) => limit
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE_SIZE).contains(l))
            .ok_or_else(|| Error::bad_request("limit", format!("must be an integer from 1 to {MAX_PAGE_SIZE}")))?,
    };
    let before = query.cursor.as_deref().map(decode_cursor).transpose()?;
    // One extra row tells whether there is a next page without a COUNT.
    let filter = ListFilter { user_id, status, before, limit: limit + 1 };
    let mut items = store::list(&state.db.reader, &filter).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|last| encode_cursor(last.id))
    } else {
        None
    };
    Ok(axum::Json(TodoPage { items, next_cursor }).into_response())
}

/// Cursors are opaque to clients; the version prefix lets the format change without breaking
/// cursors that are in flight during a deploy.
fn encode_cursor(last_id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{last_id}"))
}

fn decode_cursor(cursor: &str) -> Result<Uuid> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| Uuid::parse_str(text.strip_prefix("v1:")?).ok())
        .ok_or_else(|| Error::bad_request("cursor", "is not a cursor this API issued"))
}

/// `GET /todos/{id}` → 200 with `ETag`, or 404.
async fn fetch(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let id = parse_id(&id)?;
    let todo = store::get(&state.db.reader, id).await?.ok_or_else(|| Error::TodoNotFound(id.to_string()))?;
    Ok(todo_response(StatusCode::OK, &todo, None))
}

/// What every change to one todo starts from: which todo, the caller's precondition
/// (`If-Match`), and the request context its event will carry.
struct ChangeTarget {
    id: Uuid,
    if_match: Option<IfMatch>,
    context: RequestContext,
}

impl<S: Send + Sync> FromRequestParts<S> for ChangeTarget {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::bad_request("id", "must be a UUID"))?;
        let context = RequestContext::from_request_parts(parts, state).await.unwrap_or_else(|never| match never {});
        Ok(Self { id: parse_id(&id)?, if_match: if_match(&parts.headers)?, context })
    }
}

impl ChangeTarget {
    /// Runs the change in one transaction with its event (see [`store::change`]) and answers
    /// with the outcome, waking the relay when an event was written.
    async fn apply(self, state: &AppState, decide: impl Fn(&Todo, DateTime<Utc>) -> Decision) -> Result<Response> {
        let outcome = store::change(&state.db, self.id, self.if_match.as_ref(), &self.context, decide).await?;
        if !matches!(outcome, Outcome::Unchanged(_)) {
            state.relay_wakeup.notify_one();
        }
        Ok(match outcome {
            Outcome::Unchanged(todo) | Outcome::Changed(todo) => todo_response(StatusCode::OK, &todo, None),
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
    let patch = request.validate().map_err(Error::Validation)?;
    target
        .apply(&state, |todo, _now| {
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
    if todo.status == status {
        return Decision::Unchanged;
    }
    let mut next = todo.clone();
    next.status = status;
    let event_type = match status {
        TodoStatus::Completed => {
            next.completed_at = Some(now);
            TodoEventType::Completed
        }
        TodoStatus::Open => {
            next.completed_at = None;
            TodoEventType::Reopened
        }
    };
    Decision::Update { next, event_type, changed_fields: Vec::new() }
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

/// `GET /todos/{id}/events`: every event of the todo in order, including after deletion (it is
/// an audit trail); 404 only for a todo that never existed.
async fn events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let id = parse_id(&id)?;
    let events = outbox::history(&state.db.reader, id, &state.app_id).await?;
    if events.is_empty() {
        return Err(Error::TodoNotFound(id.to_string()));
    }
    Ok(axum::Json(EventHistory { todo_id: id, events }).into_response())
}

fn todo_response(status: StatusCode, todo: &Todo, location: Option<&str>) -> Response {
    let mut response = (status, axum::Json(todo)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_str(&todo.etag()).expect("an ETag is a valid header"));
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// Ids are UUIDs; anything else is a malformed request rather than a missing todo.
fn parse_id(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| Error::bad_request("id", "must be a UUID"))
}

fn if_match(headers: &HeaderMap) -> Result<Option<IfMatch>> {
    headers
        .get(header::IF_MATCH)
        .map(|value| {
            let text = value.to_str().map_err(|_| Error::bad_request("If-Match", "must be ASCII"))?;
            IfMatch::parse(text).map_err(|e| Error::bad_request("If-Match", e))
        })
        .transpose()
}
