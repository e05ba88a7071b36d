//! The notifications API: `GET /notifications?userId=&unread=true|false&limit=1..100&cursor=`
//! (newest change first) and `POST /notifications/{id}/read`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use dapr_events::catalog::validate_user_id;
use service_kit::db::Database;
use service_kit::pagination::{Page, PageRequest};
use service_kit::problem::{FieldError, PathText, Problem};
use uuid::Uuid;

use crate::notifications::{self, Notification};

pub fn routes(db: Database) -> Router {
    Router::new().route("/notifications", get(list)).route("/notifications/{id}/read", post(mark_read)).with_state(db)
}

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

/// Idempotent: the first read time is kept.
async fn mark_read(State(db): State<Database>, PathText(raw): PathText) -> Result<Json<Notification>, Problem> {
    let id = Uuid::parse_str(&raw).map_err(|_| bad_request("id", "not a UUID"))?;
    notifications::mark_read(&db, id).await?.map(Json).ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "not-found").detail(format!("No notification with id {raw}."))
    })
}

fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Problem {
    Problem::bad_request(FieldError::new(field, detail))
}
