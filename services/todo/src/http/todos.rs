//! The `/todos` routes: each turns a request into a command or query of the todo domain
//! (`crate::todos`) and its result into a response with the right status and headers.

use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use dapr_events::catalog::validate_user_id;
use dapr_events::{CloudEvent, TodoEventType, TodoStatus, timestamp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use service_kit::openapi::PublicProblems;
use service_kit::pagination::{Page, PageRequest};
use service_kit::problem::{PathText, Problem};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
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

/// The OpenAPI tag of these routes.
pub const TAG: &str = "todos";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(fetch, update, remove))
        .routes(routes!(complete))
        .routes(routes!(reopen))
        .routes(routes!(events))
}

/// The headers a create reads.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // only the OpenAPI document reads it
struct CreateHeaders {
    /// 1 to 255 visible ASCII characters. A retry with the same key and body replays the first
    /// answer (with `Idempotent-Replayed: true`) and creates nothing; the same key with another
    /// body answers 422.
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$")]
    idempotency_key: Option<String>,
    /// Carried by the todo's events and echoed on the answer; generated when absent.
    #[param(rename = "X-Correlation-Id")]
    correlation_id: Option<String>,
}

/// The headers a change reads.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // only the OpenAPI document reads it
struct ChangeHeaders {
    /// `*` or strong entity tags (`"3"`, `"3", "4"`) from an `ETag`: the change applies only
    /// if the todo is at one of those versions, else 412. Weak tags never match.
    #[param(
        rename = "If-Match",
        example = "\"1\"",
        pattern = r#"^\s*(\*|(W/)?"[!#-~]*"(\s*,\s*(W/)?"[!#-~]*")*)\s*$"#
    )]
    if_match: Option<String>,
    /// Carried by the todo's events and echoed on the answer; generated when absent.
    #[param(rename = "X-Correlation-Id")]
    correlation_id: Option<String>,
}

/// What every change of one todo may answer besides its own answers and [`PublicProblems`].
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only the OpenAPI document reads it
enum ChangeProblems {
    /// The id is not a UUID, or `If-Match` is malformed.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(#[to_schema] Problem),
    /// No such todo (or it was deleted).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(#[to_schema] Problem),
    /// Changed concurrently; retry.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(#[to_schema] Problem),
    /// `If-Match` names another version.
    #[response(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(#[to_schema] Problem),
}

/// Create a todo.
///
/// With `Idempotency-Key`, a retry of the same request replays the first response and creates
/// nothing: retry a 503 with the same key.
#[utoipa::path(post, path = "/todos", tag = TAG, params(CreateHeaders), request_body = CreateTodo, responses(
    (status = 201, description = "Created; `Location` names it.", body = Todo, headers(
        ("ETag" = String, description = "The todo's version, for `If-Match`."),
        ("Location" = String, description = "`/todos/{id}`."),
        ("Idempotent-Replayed" = String, description = "`true` when this is the replay of an earlier answer."),
    ), links(
        ("GetTodo" = (operation_id = "fetch", parameters(("id" = "$response.body#/id")), description = "The todo created.")),
        ("ChangeTodo" = (operation_id = "update", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("CompleteTodo" = (operation_id = "complete", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("DeleteTodo" = (operation_id = "remove", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("TodoEvents" = (operation_id = "events", parameters(("id" = "$response.body#/id")))),
    )),
    (status = 400, description = "Malformed JSON or header.", body = Problem, content_type = "application/problem+json"),
    (status = 413, description = "The body is over 64 KiB.", body = Problem, content_type = "application/problem+json"),
    (status = 415, description = "Not `application/json`.", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid fields (each named in `errors`), or an `Idempotency-Key` reused with another body.", body = Problem, content_type = "application/problem+json"),
    PublicProblems,
))]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this user's todos.
    #[param(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    user_id: Option<String>,
    /// `open` or `completed`.
    #[param(value_type = Option<TodoStatus>)]
    status: Option<String>,
    /// 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `nextCursor` of the page before.
    cursor: Option<String>,
}

/// List todos, newest first, a page at a time.
#[utoipa::path(get, path = "/todos", tag = TAG, params(ListQuery), responses(
    (status = 200, description = "A page of todos.", body = Page<Todo>, links(
        ("GetTodo" = (operation_id = "fetch", parameters(("id" = "$response.body#/items/0/id")), description = "The newest todo of the page.")),
        ("TodoEvents" = (operation_id = "events", parameters(("id" = "$response.body#/items/0/id")))),
    )),
    (status = 400, description = "A malformed query parameter, named in `errors`.", body = Problem, content_type = "application/problem+json"),
    PublicProblems,
))]
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

/// Get a todo.
#[utoipa::path(get, path = "/todos/{id}", tag = TAG, params(("id" = Uuid, Path, description = "The todo's id.")), responses(
    (status = 200, description = "The todo.", body = Todo, headers(("ETag" = String, description = "The todo's version, for `If-Match`."))),
    (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No such todo (or it was deleted).", body = Problem, content_type = "application/problem+json"),
    PublicProblems,
))]
async fn fetch(State(state): State<AppState>, PathText(id): PathText) -> Result<Response> {
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
        let PathText(id) = PathText::from_request_parts(parts, state)
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

/// Change a todo's title, description or due date.
///
/// A patch that changes nothing answers 200 with the todo as it is, and emits no event.
#[utoipa::path(patch, path = "/todos/{id}", tag = TAG, params(("id" = Uuid, Path, description = "The todo's id."), ChangeHeaders), request_body = UpdateTodo, responses(
    (status = 200, description = "The todo after the change.", body = Todo, headers(("ETag" = String, description = "The todo's version, for `If-Match`.")), links(
        ("CompleteTodo" = (operation_id = "complete", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("ReopenTodo" = (operation_id = "reopen", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("DeleteTodo" = (operation_id = "remove", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("TodoEvents" = (operation_id = "events", parameters(("id" = "$response.body#/id")))),
    )),
    ChangeProblems,
    (status = 413, description = "The body is over 64 KiB.", body = Problem, content_type = "application/problem+json"),
    (status = 415, description = "Not `application/json`.", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "Invalid fields, each named in `errors`.", body = Problem, content_type = "application/problem+json"),
    PublicProblems,
))]
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

/// Complete a todo.
///
/// Idempotent: completing a completed todo changes nothing.
#[utoipa::path(post, path = "/todos/{id}/complete", tag = TAG, params(("id" = Uuid, Path, description = "The todo's id."), ChangeHeaders), responses(
    (status = 200, description = "The todo after the change.", body = Todo, headers(("ETag" = String, description = "The todo's version, for `If-Match`.")), links(
        ("ChangeTodo" = (operation_id = "update", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("ReopenTodo" = (operation_id = "reopen", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("CompleteTodo" = (operation_id = "complete", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("DeleteTodo" = (operation_id = "remove", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
    )),
    ChangeProblems,
    PublicProblems,
))]
async fn complete(State(state): State<AppState>, target: ChangeTarget) -> Result<Response> {
    target.apply(&state, |todo, now| set_status(todo, now, TodoStatus::Completed)).await
}

/// Reopen a completed todo: the inverse of complete, equally idempotent.
#[utoipa::path(post, path = "/todos/{id}/reopen", tag = TAG, params(("id" = Uuid, Path, description = "The todo's id."), ChangeHeaders), responses(
    (status = 200, description = "The todo after the change.", body = Todo, headers(("ETag" = String, description = "The todo's version, for `If-Match`.")), links(
        ("ChangeTodo" = (operation_id = "update", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("ReopenTodo" = (operation_id = "reopen", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("CompleteTodo" = (operation_id = "complete", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
        ("DeleteTodo" = (operation_id = "remove", parameters(("id" = "$response.body#/id"), ("header.If-Match" = "$response.header.ETag")))),
    )),
    ChangeProblems,
    PublicProblems,
))]
async fn reopen(State(state): State<AppState>, target: ChangeTarget) -> Result<Response> {
    target.apply(&state, |todo, now| set_status(todo, now, TodoStatus::Open)).await
}

fn set_status(todo: &Todo, now: DateTime<Utc>, status: TodoStatus) -> Decision {
    match todo.with_status(status, now) {
        None => Decision::Unchanged,
        Some((next, event_type)) => Decision::Update { next, event_type, changed_fields: Vec::new() },
    }
}

/// Delete a todo.
///
/// It is gone from reads and lists; its history (`/todos/{id}/events`) stays.
#[utoipa::path(delete, path = "/todos/{id}", tag = TAG, params(("id" = Uuid, Path, description = "The todo's id."), ChangeHeaders), responses(
    (status = 204, description = "Deleted."),
    ChangeProblems,
    PublicProblems,
))]
async fn remove(State(state): State<AppState>, target: ChangeTarget) -> Result<Response> {
    target.apply(&state, |_, _| Decision::Delete).await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EventHistory {
    todo_id: Uuid,
    events: Vec<HistoryEntry>,
}

/// One entry of `GET /todos/{id}/events`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct HistoryEntry {
    sequence: i64,
    #[serde(with = "timestamp::option")]
    published_at: Option<DateTime<Utc>>,
    /// When an operator discarded the event (it was parked and never published).
    #[serde(with = "timestamp::option", skip_serializing_if = "Option::is_none")]
    discarded_at: Option<DateTime<Utc>>,
    /// Exactly the CloudEvent subscribers receive (daprd adds `topic` and `pubsubname`); its
    /// `data` follows the JSON Schema its `dataschema` names (`schemas/events/`).
    #[schema(value_type = Object)]
    event: CloudEvent<Box<RawValue>>,
}

/// Every event of a todo, in order.
///
/// Deleted todos keep theirs (it is an audit trail); 404 only for a todo that never existed.
#[utoipa::path(get, path = "/todos/{id}/events", tag = TAG, params(("id" = Uuid, Path, description = "The todo's id.")), responses(
    (status = 200, description = "The todo's events, oldest first.", body = EventHistory),
    (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No todo ever had this id.", body = Problem, content_type = "application/problem+json"),
    PublicProblems,
))]
async fn events(State(state): State<AppState>, PathText(id): PathText) -> Result<Response> {
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
