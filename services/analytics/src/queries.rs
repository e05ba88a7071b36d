//! The read side: per-user and overall figures, daily counts, and the projection rebuild.
//!
//! Definitions (over each todo's latest state): `created` counts every todo ever created,
//! deleted ones included; `deleted` those deleted; `completed` and `open` the live ones in that
//! state; `completionRate` = completed / (completed + open), `null` with no live todo; the mean
//! and median time to complete are over live completed todos, in seconds from creation to
//! (last) completion. Daily: `created` by creation date, `completed` by completion date (UTC).

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use chrono::NaiveDate;
use dapr_events::catalog::validate_user_id;
use dapr_events::timestamp;
use serde::Serialize;
use serde_json::{Value, json};
use service_kit::db::Database;
use service_kit::problem::{FieldError, PathText, Problem};

use crate::projection;

type Result<T, E = Problem> = std::result::Result<T, E>;

fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Problem {
    Problem::bad_request(FieldError::new(field, detail))
}

/// The longest range `GET /analytics/daily` answers.
const MAX_DAYS: i64 = 366;

pub fn routes(db: Database) -> Router {
    Router::new()
        .route("/analytics/users/{userId}", get(user))
        .route("/analytics/summary", get(summary))
        .route("/analytics/daily", get(daily))
        .with_state(db)
}

/// The admin routes; the caller puts them behind the admin token.
pub fn admin_routes(db: Database) -> Router {
    Router::new().route("/admin/projections/rebuild", post(rebuild)).with_state(db)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub created: i64,
    pub completed: i64,
    pub open: i64,
    pub deleted: i64,
    pub completion_rate: Option<f64>,
    pub mean_time_to_complete_seconds: Option<f64>,
    pub median_time_to_complete_seconds: Option<f64>,
}

/// The figures over the todos of `user_id`, or of everyone.
async fn figures(db: &Database, user_id: Option<&str>) -> Result<Figures> {
    let (created, completed, open, deleted): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), \
         COALESCE(SUM(CASE WHEN deleted_at IS NULL AND status = 'completed' THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN deleted_at IS NULL AND status = 'open' THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN deleted_at IS NOT NULL THEN 1 ELSE 0 END), 0) \
         FROM todo_states WHERE ($1 IS NULL OR user_id = $1)",
    )
    .bind(user_id)
    .fetch_one(&db.reader)
    .await?;
    let spans: Vec<(String, String)> = sqlx::query_as(
        "SELECT created_at, completed_at FROM todo_states \
         WHERE ($1 IS NULL OR user_id = $1) AND deleted_at IS NULL AND status = 'completed' AND completed_at IS NOT NULL",
    )
    .bind(user_id)
    .fetch_all(&db.reader)
    .await?;
    let mut seconds: Vec<f64> = spans
        .iter()
        .filter_map(|(created, completed)| {
            let span = timestamp::parse(completed).ok()? - timestamp::parse(created).ok()?;
            Some(span.num_microseconds()? as f64 / 1e6)
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    let mean = (!seconds.is_empty()).then(|| seconds.iter().sum::<f64>() / seconds.len() as f64);
    let median = match seconds.len() {
        0 => None,
        n if n % 2 == 1 => Some(seconds[n / 2]),
        n => Some((seconds[n / 2 - 1] + seconds[n / 2]) / 2.0),
    };
    let live = completed + open;
    Ok(Figures {
        created,
        completed,
        open,
        deleted,
        completion_rate: (live > 0).then(|| completed as f64 / live as f64),
        mean_time_to_complete_seconds: mean,
        median_time_to_complete_seconds: median,
    })
}

/// `GET /analytics/users/{userId}`: a user nobody has seen yet has all-zero figures.
async fn user(State(db): State<Database>, PathText(user_id): PathText) -> Result<Json<Value>> {
    validate_user_id(&user_id).map_err(|detail| bad_request("userId", detail))?;
    let figures = figures(&db, Some(&user_id)).await?;
    let mut body = serde_json::to_value(figures).expect("figures serialise");
    body["userId"] = Value::String(user_id);
    Ok(Json(body))
}

/// `GET /analytics/summary`: everyone's figures, and how many users have todos.
async fn summary(State(db): State<Database>) -> Result<Json<Value>> {
    let figures = figures(&db, None).await?;
    let users: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT user_id) FROM todo_states").fetch_one(&db.reader).await?;
    let mut body = serde_json::to_value(figures).expect("figures serialise");
    body["users"] = json!(users);
    Ok(Json(body))
}

fn date_param(query: &HashMap<String, String>, name: &str) -> Result<NaiveDate> {
    let text = query.get(name).ok_or_else(|| bad_request(name, "is required (YYYY-MM-DD)"))?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad_request(name, "must be a date (YYYY-MM-DD)"))
}

/// `GET /analytics/daily?from=YYYY-MM-DD&to=YYYY-MM-DD[&userId=]`: every day of the range
/// (inclusive, at most 366 days), zeros included.
async fn daily(State(db): State<Database>, Query(query): Query<HashMap<String, String>>) -> Result<Json<Value>> {
    if let Some(unknown) = query.keys().find(|k| !matches!(k.as_str(), "from" | "to" | "userId")) {
        return Err(bad_request(unknown.clone(), "unknown query parameter (from, to, userId)"));
    }
    let (from, to) = (date_param(&query, "from")?, date_param(&query, "to")?);
    if to < from {
        return Err(bad_request("to", "must not be before from"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(bad_request("to", format!("the range may span at most {MAX_DAYS} days")));
    }
    let user_id = query.get("userId");
    if let Some(user_id) = user_id {
        validate_user_id(user_id).map_err(|detail| bad_request("userId", detail))?;
    }
    let (start, end) =
        (from.format("%Y-%m-%d").to_string(), (to + chrono::Days::new(1)).format("%Y-%m-%d").to_string());
    let mut days: BTreeMap<String, (i64, i64)> =
        from.iter_days().take_while(|d| *d <= to).map(|d| (d.format("%Y-%m-%d").to_string(), (0, 0))).collect();
    for (column, slot) in [("created_at", 0), ("completed_at", 1)] {
        // Times are RFC 3339 UTC text, so the first ten characters are the date.
        let counts: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT SUBSTR({column}, 1, 10) AS day, COUNT(*) FROM todo_states \
             WHERE {column} >= $1 AND {column} < $2 AND ($3 IS NULL OR user_id = $3) GROUP BY SUBSTR({column}, 1, 10)"
        ))
        .bind(&start)
        .bind(&end)
        .bind(user_id)
        .fetch_all(&db.reader)
        .await?;
        for (day, count) in counts {
            if let Some(entry) = days.get_mut(&day) {
                if slot == 0 { entry.0 = count } else { entry.1 = count }
            }
        }
    }
    let days: Vec<Value> = days
        .into_iter()
        .map(|(date, (created, completed))| json!({"date": date, "created": created, "completed": completed}))
        .collect();
    Ok(Json(json!({"from": start, "to": to.format("%Y-%m-%d").to_string(), "days": days})))
}

/// `POST /admin/projections/rebuild`: drops the projection and replays the event log.
async fn rebuild(State(db): State<Database>) -> Result<Json<Value>> {
    let replayed = projection::rebuild(&db).await?;
    Ok(Json(json!({"replayedEvents": replayed})))
}
