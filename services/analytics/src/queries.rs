//! The read side: per-user and overall figures, daily counts, and the projection rebuild.
//!
//! Definitions (over each todo's latest state): `created` counts every todo ever created,
//! deleted ones included; `deleted` those deleted; `completed` and `open` the live ones in that
//! state; `completionRate` = completed / (completed + open), `null` with no live todo; the mean
//! and median time to complete are over live completed todos, in seconds from creation to
//! (last) completion. Daily: `created` by creation date, `completed` by completion date (UTC).

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Query, State};
use chrono::{Datelike, NaiveDate};
use dapr_events::catalog::validate_user_id;
use dapr_events::timestamp;
use serde::Serialize;
use service_kit::db::Database;
use service_kit::openapi::{AdminProblems, PublicProblems};
use service_kit::problem::{FieldError, PathText, Problem};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::projection;

type Result<T, E = Problem> = std::result::Result<T, E>;

fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Problem {
    Problem::bad_request(FieldError::new(field, detail))
}

/// The longest range `GET /analytics/daily` answers.
const MAX_DAYS: i64 = 366;

#[derive(OpenApi)]
#[openapi(
    info(title = "dapr-todo: analytics service", description = "Per-user, overall and daily figures over every todo event, a read model consumed exactly once from Dapr pub/sub and rebuildable from its event log. Every error answer is an RFC 9457 problem (application/problem+json)."),
    tags(
        (name = TAG, description = "The figures."),
        (name = ADMIN_TAG, description = "Operators: rebuilding the projection."),
    ),
)]
struct ApiDoc;

/// The OpenAPI tags of these routes.
pub const TAG: &str = "analytics";
pub const ADMIN_TAG: &str = "projection";

/// The figures API, in a router that carries the service's OpenAPI description.
pub fn routes(db: Database) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(user))
        .routes(routes!(summary))
        .routes(routes!(daily))
        .with_state(db)
}

/// The admin routes; the caller puts them behind the admin token.
pub fn admin_routes(db: Database) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(rebuild)).with_state(db)
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    let scope = user_scope(user_id, 1);
    let (created, completed, open, deleted): (i64, i64, i64, i64) =
        sqlx::query_as(&counts_sql(user_id)).bind(user_id).fetch_one(&db.reader).await?;
    let spans: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT created_at, completed_at FROM todo_states \
         WHERE {scope} AND deleted_at IS NULL AND status = 'completed' AND completed_at IS NOT NULL"
    ))
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

/// The condition that limits a query to `user_id`'s todos, or to none, on parameter `$n` (bound
/// to the user id, or to NULL). Two texts rather than `($n IS NULL OR user_id = $n)`, which
/// SQLite plans as a scan of every todo even for one user, where `user_id = $n` searches
/// `todo_states_by_user`: the per-user figures are what clients read most.
fn user_scope(user_id: Option<&str>, n: usize) -> String {
    match user_id {
        Some(_) => format!("user_id = ${n}"),
        None => format!("${n} IS NULL"),
    }
}

/// The counts of `user_id`'s todos (or everyone's) by state; `$1` is the user id or NULL.
fn counts_sql(user_id: Option<&str>) -> String {
    format!(
        "SELECT COUNT(*), \
         COALESCE(SUM(CASE WHEN deleted_at IS NULL AND status = 'completed' THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN deleted_at IS NULL AND status = 'open' THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN deleted_at IS NOT NULL THEN 1 ELSE 0 END), 0) \
         FROM todo_states WHERE {}",
        user_scope(user_id, 1)
    )
}

/// A user's figures, with `userId`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct UserFigures {
    user_id: String,
    #[serde(flatten)]
    figures: Figures,
}

/// Everyone's figures, with how many users have todos.
#[derive(Serialize, utoipa::ToSchema)]
struct SummaryFigures {
    users: i64,
    #[serde(flatten)]
    figures: Figures,
}

/// One day of `GET /analytics/daily`.
#[derive(Serialize, utoipa::ToSchema)]
struct Day {
    #[schema(format = Date, example = "2026-12-01")]
    date: String,
    created: i64,
    completed: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DailyFigures {
    #[schema(format = Date)]
    from: String,
    #[schema(format = Date)]
    to: String,
    days: Vec<Day>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Rebuilt {
    replayed_events: u64,
}

/// One user's figures; a user nobody has seen yet has all-zero figures.
#[utoipa::path(get, path = "/analytics/users/{userId}", tag = TAG,
    params(("userId" = String, Path, description = "1 to 64 of letters, digits and `. _ @ -`.", pattern = "^[A-Za-z0-9._@-]{1,64}$")), responses(
    (status = 200, description = "The user's figures.", body = UserFigures),
    (status = 400, description = "A malformed user id.", body = Problem, content_type = "application/problem+json"),
    PublicProblems,
))]
async fn user(State(db): State<Database>, PathText(user_id): PathText) -> Result<Json<UserFigures>> {
    validate_user_id(&user_id).map_err(|detail| bad_request("userId", detail))?;
    let figures = figures(&db, Some(&user_id)).await?;
    Ok(Json(UserFigures { user_id, figures }))
}

/// Everyone's figures, and how many users have todos.
#[utoipa::path(get, path = "/analytics/summary", tag = TAG, responses(
    (status = 200, description = "The overall figures.", body = SummaryFigures),
    PublicProblems,
))]
async fn summary(State(db): State<Database>) -> Result<Json<SummaryFigures>> {
    let figures = figures(&db, None).await?;
    let users: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT user_id) FROM todo_states").fetch_one(&db.reader).await?;
    Ok(Json(SummaryFigures { users, figures }))
}

/// A `YYYY-MM-DD` date in years 0000 to 9999, the years a stored timestamp can fall in
/// (`dapr_events::timestamp`). chrono alone reads `+262142-12-31` too, whose next day does not
/// exist.
fn date_param(query: &HashMap<String, String>, name: &str) -> Result<NaiveDate> {
    let text = query.get(name).ok_or_else(|| bad_request(name, "is required (YYYY-MM-DD)"))?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|date| text.len() == 10 && timestamp::YEARS.contains(&date.year()))
        .ok_or_else(|| bad_request(name, "must be a date from 0000-01-01 to 9999-12-31 (YYYY-MM-DD)"))
}

/// Created and completed counts per day (UTC) over a range.
///
/// Every day of the range (inclusive, at most 366 days) is listed, zeros included.
#[utoipa::path(get, path = "/analytics/daily", tag = TAG, params(
    ("from" = String, Query, description = "The first day, `YYYY-MM-DD`.", format = Date, example = "2026-12-01"),
    ("to" = String, Query, description = "The last day, `YYYY-MM-DD`; at most 365 days after `from`.", format = Date, example = "2026-12-07"),
    ("userId" = Option<String>, Query, description = "Only this user's todos.", pattern = "^[A-Za-z0-9._@-]{1,64}$"),
), responses(
    (status = 200, description = "One entry per day.", body = DailyFigures),
    (status = 400, description = "A missing, unknown or malformed parameter, or a range that is reversed or too long.", body = Problem, content_type = "application/problem+json"),
    PublicProblems,
))]
async fn daily(State(db): State<Database>, Query(query): Query<HashMap<String, String>>) -> Result<Json<DailyFigures>> {
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
    // The exclusive end: the day after `to`, which for 9999-12-31 is no date, but as text
    // "10000-01-01" still sorts after every stored time of year 9999.
    let end = to.succ_opt().map_or_else(|| "10000-01-01".to_owned(), |next| next.format("%Y-%m-%d").to_string());
    let start = from.format("%Y-%m-%d").to_string();
    let mut days: BTreeMap<String, (i64, i64)> =
        from.iter_days().take_while(|d| *d <= to).map(|d| (d.format("%Y-%m-%d").to_string(), (0, 0))).collect();
    for (column, slot) in [("created_at", 0), ("completed_at", 1)] {
        // Times are RFC 3339 UTC text, so the first ten characters are the date.
        let counts: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT SUBSTR({column}, 1, 10) AS day, COUNT(*) FROM todo_states \
             WHERE {column} >= $1 AND {column} < $2 AND {scope} GROUP BY SUBSTR({column}, 1, 10)",
            scope = user_scope(user_id.map(String::as_str), 3)
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
    let days = days.into_iter().map(|(date, (created, completed))| Day { date, created, completed }).collect();
    Ok(Json(DailyFigures { from: start, to: to.format("%Y-%m-%d").to_string(), days }))
}

/// Drop the projection and replay the event log into it.
#[utoipa::path(post, path = "/admin/projections/rebuild", tag = ADMIN_TAG, security(("admin_token" = [])), responses(
    (status = 200, description = "Rebuilt.", body = Rebuilt, example = json!({"replayedEvents": 1520})),
    AdminProblems,
))]
async fn rebuild(State(db): State<Database>) -> Result<Json<Rebuilt>> {
    let replayed_events = projection::rebuild(&db).await?;
    Ok(Json(Rebuilt { replayed_events }))
}

#[cfg(test)]
mod tests {
    use service_kit::db::dialect::Backend;
    use service_kit::testing::TestDb;

    use super::*;

    /// One user's figures read that user's todo states through the index, not every todo.
    #[tokio::test]
    async fn per_user_counts_search_the_user_index() {
        let db = TestDb::new(Backend::Sqlite).await.connect(crate::startup::MIGRATIONS).await;
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", counts_sql(Some("u"))))
                .bind("u")
                .fetch_all(&db.reader)
                .await
                .unwrap();
        let plan: Vec<&str> = plan.iter().map(|(.., detail)| detail.as_str()).collect();
        assert!(plan.iter().any(|step| step.contains("todo_states_by_user (user_id=?)")), "{plan:?}");
    }
}
