//! The notifications API: `GET /notifications?userId=&unread=true|false&limit=1..100&cursor=`
//! (newest change first) and `POST /notifications/{id}/read`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use dapr_events::catalog::validate_user_id;
use service_kit::db::Database;
use service_kit::openapi::PublicProblems;
use service_kit::pagination::{Page, PageRequest};
use service_kit::problem::{FieldError, PathText, Problem};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::notifications::{self, Notification};

#[derive(OpenApi)]
#[openapi(
    info(title = "dapr-todo: notification service", description = "In-app notifications of todo events (created, completed), consumed exactly once from Dapr pub/sub. Every error answer is an RFC 9457 problem (application/problem+json)."),
    tags(
        (name = TAG, description = "A user's notifications."),
    ),
)]
struct ApiDoc;

/// The OpenAPI tag of these routes.
pub const TAG: &str = "notifications";

/// The notifications API, in a router that carries the service's OpenAPI description.
pub fn routes(db: Database) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(list)).routes(routes!(mark_read)).with_state(db)
}

/// A user's notifications, newest change first, a page at a time.
#[utoipa::path(get, path = "/notifications", tag = TAG, params(
    ("userId" = String, Query, description = "Whose notifications.", pattern = "^[A-Za-z0-9._@-]{1,64}$"),
    ("unread" = Option<bool>, Query, description = "`true`: unread ones only."),
    ("limit" = Option<i64>, Query, description = "1 to 100 (default 20).", minimum = 1, maximum = 100),
    ("cursor" = Option<String>, Query, description = "`nextCursor` of the page before."),
), responses(
    (status = 200, description = "A page of notifications.", body = Page<Notification>, links(
        ("MarkRead" = (operation_id = "mark_read", parameters(("id" = "$response.body#/items/0/id")), description = "The newest notification of the page.")),
    )),
    (status = 400, description = "A missing, unknown or malformed query parameter, named in `errors`.", body = Problem, content_type = "application/problem+json"),
    PublicProblems,
))]
async fn list(
    State(db): State<Database>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Page<Notification>>, Problem> {
    if let Some(unknown) = query.keys().find(|k| !matches!(k.as_str(), "userId" | "unread" | "limit" | "cursor")) {
        return Err(bad_request(unknown.clone(), "unknown query parameter (userId, unread, limit, cursor)"));
    }
    let user_id = query.get("userId").ok_or_else(|| bad_request("userId", "is required"))?;
    validate_user_id(user_id).map_err(|detail| bad_request("userId", detail))?;
    let unread_only = match query.get("unread").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad_request("unread", "must be true or false")),
    };
    let page = PageRequest::parse(query.get("limit").map(String::as_str), query.get("cursor").map(String::as_str))?;
    let rows = notifications::list(&db, user_id, unread_only, &page).await?;
    Ok(Json(Page::from_rows(rows, &page, |notification| notification.id)))
}

/// Mark a notification read.
///
/// Idempotent: the first read time is kept.
#[utoipa::path(post, path = "/notifications/{id}/read", tag = TAG, params(("id" = Uuid, Path, description = "The notification's id.")), responses(
    (status = 200, description = "The notification, read.", body = Notification),
    (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No notification with this id.", body = Problem, content_type = "application/problem+json"),
    PublicProblems,
))]
async fn mark_read(State(db): State<Database>, PathText(raw): PathText) -> Result<Json<Notification>, Problem> {
    let id = Uuid::parse_str(&raw).map_err(|_| bad_request("id", "not a UUID"))?;
    notifications::mark_read(&db, id).await?.map(Json).ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "not-found").detail(format!("No notification with id {raw}."))
    })
}

fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Problem {
    Problem::bad_request(FieldError::new(field, detail))
}
