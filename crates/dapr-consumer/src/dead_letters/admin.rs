//! The dead-letter admin API, behind `ADMIN_TOKEN`:
//! `GET /admin/dead-letters?status=parked|replayed|discarded&limit=1..100&cursor=` (oldest
//! first), `GET /admin/dead-letters/{id}`, `POST /admin/dead-letters/{id}/replay` and
//! `POST /admin/dead-letters/{id}/discard`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use dapr_events::DaprPublisher;
use dapr_events::publish::CLOUDEVENTS_JSON;
use serde::Deserialize;
use serde_json::Value;
use service_kit::openapi::AdminProblems;
use service_kit::pagination::{Page, PageRequest};
use service_kit::problem::{FieldError, PathText, Problem};
use service_kit::telemetry::{self, Messages};
use service_kit::trace_context;
use tracing::Instrument;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::store::{DeadLetter, DeadLetterStatus, DeadLetters};

#[derive(Clone)]
struct Admin {
    store: DeadLetters,
    publisher: Arc<DaprPublisher>,
}

/// The admin routes over `store`; replays publish through `publisher`. The caller puts them
/// behind the admin token.
pub fn routes(store: DeadLetters, publisher: DaprPublisher) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(replay))
        .routes(routes!(discard))
        .with_state(Admin { store, publisher: Arc::new(publisher) })
}

/// The OpenAPI tag of these routes.
pub const TAG: &str = "dead letters";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only letters in this state.
    #[param(value_type = Option<DeadLetterStatus>)]
    status: Option<String>,
    /// 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `nextCursor` of the page before.
    cursor: Option<String>,
}

/// The dead letters, oldest first, a page at a time.
#[utoipa::path(get, path = "/admin/dead-letters", tag = TAG, security(("admin_token" = [])), params(ListQuery), responses(
    (status = 200, description = "A page of dead letters.", body = Page<DeadLetter>, links(
        ("ShowDeadLetter" = (operation_id = "show", parameters(("id" = "$response.body#/items/0/id")), description = "The first letter of the page.")),
        ("ReplayDeadLetter" = (operation_id = "replay", parameters(("id" = "$response.body#/items/0/id")))),
        ("DiscardDeadLetter" = (operation_id = "discard", parameters(("id" = "$response.body#/items/0/id")))),
    )),
    (status = 400, description = "A malformed query parameter.", body = Problem, content_type = "application/problem+json"),
    AdminProblems,
))]
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

/// One dead letter, with the original CloudEvent and why it failed here.
#[utoipa::path(get, path = "/admin/dead-letters/{id}", tag = TAG, security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "The dead letter's id.")), responses(
    (status = 200, description = "The dead letter.", body = DeadLetter),
    (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No dead letter with this id.", body = Problem, content_type = "application/problem+json"),
    AdminProblems,
))]
async fn show(State(admin): State<Admin>, PathText(raw): PathText) -> Result<Json<DeadLetter>, Problem> {
    let id = parse_id(&raw)?;
    Ok(Json(find(&admin, id).await?))
}

/// Republish a parked dead letter to its original topic, unchanged.
///
/// The same id, so consumers that applied it already skip it. A failed publish leaves it parked.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/replay", tag = TAG, security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "The dead letter's id.")), responses(
    (status = 200, description = "Republished; now `replayed`.", body = DeadLetter),
    (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No dead letter with this id.", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "Not parked (replayed or discarded already), or not a CloudEvent (only discarding it is possible).", body = Problem, content_type = "application/problem+json"),
    (status = 502, description = "The Dapr sidecar did not accept the event; it stays parked.", body = Problem, content_type = "application/problem+json"),
    AdminProblems,
))]
async fn replay(State(admin): State<Admin>, PathText(raw): PathText) -> Result<Json<DeadLetter>, Problem> {
    let id = parse_id(&raw)?;
    let letter = find(&admin, id).await?;
    if letter.status != DeadLetterStatus::Parked {
        return Err(Problem::new(StatusCode::CONFLICT, "not-parked")
            .detail(format!("The dead letter is {}; only parked ones can be replayed.", letter.status.as_str())));
    }
    if !is_cloud_event(&letter.event) {
        return Err(Problem::new(StatusCode::CONFLICT, "not-replayable").detail(
            "The dead letter is not a CloudEvent (no specversion, id, source and type): it can never be \
             processed, so it can only be discarded.",
        ));
    }
    let partition_key = letter.event.get("subject").and_then(Value::as_str);
    let body = serde_json::to_vec(&letter.event).expect("JSON serialises");
    // The replay is published in the operator's request trace, linked to the event's own trace;
    // the envelope keeps the event's trace context, so its new delivery joins the original trace.
    let span = telemetry::producer_span(&letter.topic, Messages::One(&letter.event_id));
    if let Some(original) = letter.event.get("traceparent").and_then(Value::as_str) {
        trace_context::link(&span, original);
    }
    let published = async {
        let producer = trace_context::current();
        let traceparent = producer.as_ref().map(|p| p.traceparent.as_str());
        admin.publisher.publish_bytes(&letter.topic, CLOUDEVENTS_JSON, body, partition_key, traceparent).await
    }
    .instrument(span.clone())
    .await;
    if let Err(error) = published {
        span.record("otel.status_code", "ERROR");
        tracing::warn!(%error, %id, "replay failed");
        return Err(Problem::new(StatusCode::BAD_GATEWAY, "replay-failed")
            .detail(format!("The Dapr sidecar did not accept the event: {error}")));
    }
    admin.store.resolve(id, DeadLetterStatus::Replayed).await?;
    tracing::info!(%id, event_id = %letter.event_id, topic = %letter.topic, "dead letter replayed");
    Ok(Json(find(&admin, id).await?))
}

/// Give up on a dead letter; it is kept for the record.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/discard", tag = TAG, security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "The dead letter's id.")), responses(
    (status = 200, description = "Now `discarded`.", body = DeadLetter),
    (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "No dead letter with this id.", body = Problem, content_type = "application/problem+json"),
    AdminProblems,
))]
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

/// What daprd's publish API takes as a CloudEvent. Anything else is not worth republishing,
/// and daprd 1.18.2 answers some such bodies (`{}`) by panicking in its HTTP handler and
/// dropping the connection.
fn is_cloud_event(event: &Value) -> bool {
    ["specversion", "id", "source", "type"]
        .iter()
        .all(|name| event.get(name).and_then(Value::as_str).is_some_and(|v| !v.is_empty()))
}

fn parse_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::bad_request(FieldError::new("id", "not a UUID")))
}
