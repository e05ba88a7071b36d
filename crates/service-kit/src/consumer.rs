//! What every Dapr consumer needs besides its own effects:
//!
//! - exactly-once bookkeeping: [`mark_processed`] records (CloudEvent id, consumer) in the
//!   transaction of the effect, so a redelivered event changes nothing;
//! - failure notes: the reason of every non-SUCCESS answer, so a dead letter says why it died
//!   (daprd forwards the original bytes only);
//! - the dead-letter store ([`DeadLetters`]): what arrives on the consumer's dead-letter topics,
//!   with an admin API to list, show, replay (republish to the original topic through the Dapr
//!   publish API) and discard, and its depth as a Prometheus gauge on `/metrics`.
//!
//! Its tables (`processed_events`, `delivery_failures`, `dead_letters`) are migration version 1
//! of every consumer: [`SQLITE_MIGRATIONS`] and [`POSTGRES_MIGRATIONS`] come first in the
//! consumer's [`Migrations`](crate::db::Migrations), its own tables from version 2.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use dapr_events::DaprPublisher;
use dapr_events::cloudevent::timestamp;
use dapr_events::publish::CLOUDEVENTS_JSON;
use dapr_events::subscriber::DeliveryStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::db::{Database, column, is_unavailable};
use crate::env::{ConfigError, Env};
use crate::problem::{FieldError, PathText, Problem};

/// The configuration every consumer reads; each variable has a default (README,
/// "Configuration").
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// `APP_HOST` (default `0.0.0.0`) and `APP_PORT` (`0` picks a free port).
    pub host: std::net::IpAddr,
    pub port: u16,
    /// `APP_ID`: the Dapr app id; names the dead-letter topics.
    pub app_id: String,
    /// `DATABASE_URL`: default `sqlite://{DATA_DIR}/{app id}.db` (`DATA_DIR` default `data`).
    pub database_url: String,
    /// `DB_MAX_CONNECTIONS` (default 10).
    pub db_max_connections: u32,
    /// `DAPR_HTTP_ENDPOINT`, else `http://127.0.0.1:{DAPR_HTTP_PORT}` (default 3500).
    pub dapr_http_endpoint: String,
    /// `DAPR_API_TOKEN`: sent to the sidecar (replays publish through it).
    pub dapr_api_token: Option<String>,
    /// `APP_API_TOKEN`: required from the sidecar on every route it calls.
    pub app_api_token: Option<String>,
    /// `PUBSUB_NAME` (default `pubsub`).
    pub pubsub_name: String,
    /// `ADMIN_TOKEN`: enables the admin API (`Authorization: Bearer …`).
    pub admin_token: Option<String>,
    /// `LOG_FORMAT`: `json` or `text` (default).
    pub log_json: bool,
}

impl ConsumerSettings {
    pub fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<F>,
        default_app_id: &str,
        default_port: u16,
    ) -> Result<Self, ConfigError> {
        let app_id = env.get("APP_ID").unwrap_or_else(|| default_app_id.to_owned());
        let data_dir = std::path::PathBuf::from(env.get("DATA_DIR").unwrap_or_else(|| "data".into()));
        Ok(Self {
            host: env.parse("APP_HOST", std::net::IpAddr::from([0, 0, 0, 0]))?,
            port: env.parse("APP_PORT", default_port)?,
            database_url: env
                .get("DATABASE_URL")
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join(format!("{app_id}.db")).display())),
            app_id,
            db_max_connections: env.parse("DB_MAX_CONNECTIONS", 10)?,
            dapr_http_endpoint: env.dapr_http_endpoint()?,
            dapr_api_token: env.get("DAPR_API_TOKEN"),
            app_api_token: env.get("APP_API_TOKEN"),
            pubsub_name: env.get("PUBSUB_NAME").unwrap_or_else(|| "pubsub".into()),
            admin_token: env.get("ADMIN_TOKEN"),
            log_json: env.log_json()?,
        })
    }

    /// The token check for the routes the sidecar calls.
    pub fn app_token(&self) -> dapr_events::subscriber::AppToken {
        dapr_events::subscriber::AppToken(self.app_api_token.as_deref().map(Arc::from))
    }
}

/// The consumer bookkeeping tables (`migrations/sqlite` of this crate).
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
/// The same for PostgreSQL.
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Records that `consumer` processed `event_id`, in the caller's transaction. `false` when it
/// already had: the caller then skips the effect and answers SUCCESS.
pub async fn mark_processed(conn: &mut AnyConnection, event_id: &str, consumer: &str) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO processed_events (event_id, consumer, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (event_id, consumer) DO NOTHING",
    )
    .bind(event_id)
    .bind(consumer)
    .bind(timestamp::format(&Utc::now()))
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Whether `consumer` has processed `event_id` (for an effect that cannot share a transaction
/// with its record, such as a call to another system).
pub async fn was_processed(db: &Database, event_id: &str, consumer: &str) -> Result<bool, sqlx::Error> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT event_id FROM processed_events WHERE event_id = $1 AND consumer = $2")
            .bind(event_id)
            .bind(consumer)
            .fetch_optional(&db.reader)
            .await?;
    Ok(found.is_some())
}

/// Remembers why the delivery of `event_id` failed (the last reason wins), for the dead letter
/// that may follow. Best effort: the answer to daprd matters more than the note.
pub async fn note_failure(db: &Database, event_id: &str, reason: &str) {
    let noted = sqlx::query(
        "INSERT INTO delivery_failures (event_id, reason, failed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (event_id) DO UPDATE SET reason = excluded.reason, failed_at = excluded.failed_at",
    )
    .bind(event_id)
    .bind(reason)
    .bind(timestamp::format(&Utc::now()))
    .execute(&db.writer)
    .await;
    if let Err(error) = noted {
        tracing::warn!(%error, event_id, "could not note the delivery failure");
    }
}

/// The router every consumer serves: `sidecar` (the routes daprd calls) behind the
/// `APP_API_TOKEN` check, the consumer's own `api` and `admin` routes (the latter behind
/// `ADMIN_TOKEN`), health and readiness, the dead-letter admin API and `/metrics`, problem
/// answers for unknown paths and methods, and a span per request.
pub fn router<S: Clone + Send + Sync + 'static>(
    parts: ConsumerRoutes<S>,
    state: S,
    dead_letters: &DeadLetterAdmin,
    app_token: dapr_events::subscriber::AppToken,
    db: Database,
) -> Router {
    let sidecar = parts
        .sidecar
        .layer(axum::middleware::from_fn_with_state(app_token, dapr_events::subscriber::require_app_token));
    let admin = parts
        .admin
        .layer(axum::middleware::from_fn_with_state(AdminToken(dead_letters.admin_token.clone()), require_admin_token));
    Router::new()
        .merge(sidecar)
        .merge(parts.api)
        .merge(admin)
        .with_state(state)
        .merge(dead_letters.clone().routes())
        .route("/healthz", get(crate::health::healthz))
        .route("/readyz", get(move || async move { crate::health::readiness(&db).await }))
        .fallback(crate::problem::not_found)
        .method_not_allowed_fallback(crate::problem::method_not_allowed)
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &Request| {
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
        }))
}

/// A consumer's own routes, by who may call them.
pub struct ConsumerRoutes<S> {
    /// `/dapr/subscribe`, `/dapr/config`, `/events/…`, `/dead-letters/…`.
    pub sidecar: Router<S>,
    /// The public API.
    pub api: Router<S>,
    /// Operator routes beyond the dead letters.
    pub admin: Router<S>,
}

/// Serves `router` until `shutdown`; then stops accepting, lets in-flight requests finish
/// (deliveries included, so daprd gets its answer) and closes the database.
pub async fn serve(
    name: &str,
    listener: tokio::net::TcpListener,
    router: Router,
    db: &Database,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "{name} service listening");
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    db.close().await;
    tracing::info!("{name} service stopped");
    Ok(())
}

/// Answers a delivery that was not processed: logs the event id, type, correlation id and
/// reason (whatever of them the body has), notes the reason for a dead letter, and returns
/// `status` (RETRY or DROP).
pub async fn refuse(db: &Database, body: &[u8], status: DeliveryStatus, reason: &str) -> DeliveryStatus {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let (event_id, event_type, correlation_id) = (text("id"), text("type"), text("correlationid"));
    tracing::warn!(?status, event_id, event_type, correlation_id, reason, "delivery not processed");
    if let Some(event_id) = event_id {
        note_failure(db, &event_id, reason).await;
    }
    status
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterStatus {
    /// Waiting for an operator.
    Parked,
    /// Republished to its original topic.
    Replayed,
    /// Given up on by an operator; kept for the record.
    Discarded,
}

impl DeadLetterStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Parked => "parked",
            Self::Replayed => "replayed",
            Self::Discarded => "discarded",
        }
    }
}

/// One dead letter, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: Uuid,
    pub event_id: String,
    /// The topic the event was published to (and is replayed to).
    pub topic: String,
    pub event_type: Option<String>,
    pub reason: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// How often it reached the dead-letter topic (again after a replay that failed again).
    pub times_seen: i64,
    pub status: DeadLetterStatus,
    pub resolved_at: Option<String>,
    /// The original CloudEvent, exactly as daprd forwarded it.
    pub event: Value,
}

const COLUMNS: &str =
    "id, event_id, topic, event_type, reason, envelope, first_seen, last_seen, times_seen, status, resolved_at";

fn dead_letter(row: &AnyRow) -> Result<DeadLetter, sqlx::Error> {
    let envelope: String = row.try_get("envelope")?;
    let status: String = row.try_get("status")?;
    Ok(DeadLetter {
        id: column::uuid(row, "id")?,
        event_id: row.try_get("event_id")?,
        topic: row.try_get("topic")?,
        event_type: row.try_get("event_type")?,
        reason: row.try_get("reason")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        times_seen: row.try_get("times_seen")?,
        status: serde_json::from_value(Value::String(status)).unwrap_or(DeadLetterStatus::Parked),
        resolved_at: row.try_get("resolved_at")?,
        event: serde_json::from_str(&envelope).unwrap_or(Value::String(envelope)),
    })
}

/// The dead-letter store of one consumer.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    db: Database,
}

impl DeadLetters {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores what arrived on a dead-letter topic: the original envelope (its `topic` still
    /// names the original topic; `original_topic` is the fallback), with the reason noted when
    /// it failed here. The same event dead-lettered again (after a failed replay) is parked
    /// again and counted, not duplicated.
    pub async fn park(&self, body: &[u8], original_topic: &str) -> Result<(), sqlx::Error> {
        let envelope: Value =
            serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let text = |name: &str| envelope.get(name).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
        // Without an id (not a CloudEvent) the bytes identify it: a redelivery is the same letter.
        let event_id = text("id").unwrap_or_else(|| format!("body:{}", Uuid::new_v5(&Uuid::NAMESPACE_OID, body)));
        let topic = text("topic").unwrap_or_else(|| original_topic.to_owned());
        let now = timestamp::format(&Utc::now());
        let reason: Option<String> = sqlx::query_scalar("SELECT reason FROM delivery_failures WHERE event_id = $1")
            .bind(&event_id)
            .fetch_optional(&self.db.reader)
            .await?;
        sqlx::query(
            "INSERT INTO dead_letters (id, event_id, topic, event_type, reason, envelope, first_seen, last_seen, \
             times_seen, status, resolved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 1, 'parked', NULL) \
             ON CONFLICT (event_id, topic) DO UPDATE SET last_seen = excluded.last_seen, \
             times_seen = dead_letters.times_seen + 1, status = 'parked', resolved_at = NULL, \
             reason = COALESCE(excluded.reason, dead_letters.reason), envelope = excluded.envelope",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(&event_id)
        .bind(&topic)
        .bind(text("type"))
        .bind(reason.as_deref())
        .bind(envelope.to_string())
        .bind(&now)
        .execute(&self.db.writer)
        .await?;
        tracing::warn!(event_id, %topic, reason = reason.as_deref().unwrap_or("unknown"), "dead letter parked");
        Ok(())
    }

    /// Oldest first, after `after` (the last id of the previous page).
    pub async fn list(
        &self,
        status: Option<DeadLetterStatus>,
        limit: i64,
        after: Option<Uuid>,
    ) -> Result<Vec<DeadLetter>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM dead_letters WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        ))
        .bind(status.map(DeadLetterStatus::as_str))
        .bind(after.map(|id| id.to_string()))
        .bind(limit)
        .fetch_all(&self.db.reader)
        .await?;
        rows.iter().map(dead_letter).collect()
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<DeadLetter>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.db.reader)
            .await?;
        row.as_ref().map(dead_letter).transpose()
    }

    async fn resolve(&self, id: Uuid, status: DeadLetterStatus) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE dead_letters SET status = $1, resolved_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(timestamp::format(&Utc::now()))
            .bind(id.to_string())
            .execute(&self.db.writer)
            .await?;
        Ok(())
    }

    /// Dead letters waiting for an operator: the DLQ depth.
    pub async fn parked(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters WHERE status = 'parked'").fetch_one(&self.db.reader).await
    }
}

/// The dead-letter admin API, the dead-letter delivery route and `/metrics` of one consumer.
#[derive(Clone)]
pub struct DeadLetterAdmin {
    pub store: DeadLetters,
    pub publisher: Arc<DaprPublisher>,
    /// `ADMIN_TOKEN`: required as `Authorization: Bearer …`; without it the admin API is off.
    pub admin_token: Option<Arc<str>>,
    /// The consumer's name, a label of its metrics.
    pub consumer: Arc<str>,
}

impl DeadLetterAdmin {
    /// The store on `db`, replays published through the sidecar of `settings`.
    pub fn new(settings: &ConsumerSettings, db: Database) -> Result<Self, ConfigError> {
        let config_error = |detail: String| ConfigError { var: "DAPR_HTTP_ENDPOINT", detail };
        let publisher = DaprPublisher::new(dapr_events::PublisherConfig {
            sidecar_url: settings.dapr_http_endpoint.parse().map_err(|e| config_error(format!("not a URL: {e}")))?,
            pubsub_name: settings.pubsub_name.clone(),
            api_token: settings.dapr_api_token.clone(),
            timeout: std::time::Duration::from_secs(5),
        })
        .map_err(|e| config_error(e.to_string()))?;
        Ok(Self {
            store: DeadLetters::new(db),
            publisher: Arc::new(publisher),
            admin_token: settings.admin_token.as_deref().map(Arc::from),
            consumer: settings.app_id.as_str().into(),
        })
    }

    /// `GET /admin/dead-letters`, `GET /admin/dead-letters/{id}`,
    /// `POST /admin/dead-letters/{id}/replay`, `POST /admin/dead-letters/{id}/discard`, and
    /// `GET /metrics`.
    pub fn routes(self) -> Router {
        let admin = Router::new()
            .route("/admin/dead-letters", get(list))
            .route("/admin/dead-letters/{id}", get(show))
            .route("/admin/dead-letters/{id}/replay", post(replay))
            .route("/admin/dead-letters/{id}/discard", post(discard))
            .layer(axum::middleware::from_fn_with_state(AdminToken(self.admin_token.clone()), require_admin_token));
        Router::new().merge(admin).route("/metrics", get(metrics)).with_state(self)
    }

    /// The handler of a dead-letter subscription: park what arrives. SUCCESS once stored;
    /// RETRY when the database is unavailable (the letter is not lost: daprd retries).
    pub async fn receive(&self, body: &[u8], original_topic: &str) -> DeliveryStatus {
        match self.store.park(body, original_topic).await {
            Ok(()) => DeliveryStatus::Success,
            Err(error) => {
                tracing::error!(%error, topic = original_topic, "could not store a dead letter; asking daprd to retry");
                DeliveryStatus::Retry
            }
        }
    }
}

/// `ADMIN_TOKEN`, for [`require_admin_token`].
#[derive(Debug, Clone, Default)]
pub struct AdminToken(pub Option<Arc<str>>);

/// Middleware for admin routes: `Authorization: Bearer <ADMIN_TOKEN>` or 401; with no token
/// configured the admin API is off (403).
pub async fn require_admin_token(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    let Some(expected) = &token.0 else {
        return Problem::new(StatusCode::FORBIDDEN, "admin-disabled")
            .detail("The admin API is disabled: set ADMIN_TOKEN to enable it.")
            .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !dapr_events::subscriber::token_matches(presented, expected) {
        return Problem::new(StatusCode::UNAUTHORIZED, "unauthorized")
            .detail("Admin routes need `Authorization: Bearer <ADMIN_TOKEN>`.")
            .errors(vec![FieldError::new("Authorization", "missing or wrong bearer token")])
            .into_response();
    }
    next.run(request).await
}

fn database_problem(error: &sqlx::Error) -> Response {
    if is_unavailable(error) {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            .detail("The database is unavailable.")
            .into_response();
    }
    tracing::error!(%error, "dead-letter query failed");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal").detail("Internal error.").into_response()
}

fn not_found(id: Uuid) -> Response {
    Problem::new(StatusCode::NOT_FOUND, "not-found").detail(format!("No dead letter with id {id}.")).into_response()
}

fn bad_id() -> Response {
    Problem::new(StatusCode::BAD_REQUEST, "bad-request")
        .detail("The id is not a UUID.")
        .errors(vec![FieldError::new("id", "not a UUID")])
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /admin/dead-letters?status=parked|replayed|discarded&limit=1..100&cursor=`.
async fn list(
    State(admin): State<DeadLetterAdmin>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let bad = |field: &str, detail: &str| {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request")
            .detail(format!("{field}: {detail}"))
            .errors(vec![FieldError::new(field, detail)])
            .into_response()
    };
    let Ok(Query(query)) = query else {
        return bad("query", "unknown or malformed parameters (status, limit, cursor)");
    };
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => match serde_json::from_value::<DeadLetterStatus>(Value::String(text.to_owned())) {
            Ok(status) => Some(status),
            Err(_) => return bad("status", "must be parked, replayed or discarded"),
        },
    };
    let limit = match query.limit.as_deref().map(str::parse::<i64>) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return bad("limit", "must be a whole number from 1 to 100"),
    };
    let after = match query.cursor.as_deref().map(Uuid::parse_str) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return bad("cursor", "not a cursor from a previous page"),
    };
    match admin.store.list(status, limit + 1, after).await {
        Ok(mut items) => {
            let more = items.len() as i64 > limit;
            items.truncate(limit as usize);
            let next = more.then(|| items.last().map(|d| d.id.to_string())).flatten();
            Json(serde_json::json!({"items": items, "nextCursor": next})).into_response()
        }
        Err(error) => database_problem(&error),
    }
}

async fn show(State(admin): State<DeadLetterAdmin>, PathText(raw): PathText) -> Response {
    let Ok(id) = Uuid::parse_str(&raw) else { return bad_id() };
    match admin.store.get(id).await {
        Ok(Some(letter)) => Json(letter).into_response(),
        Ok(None) => not_found(id),
        Err(error) => database_problem(&error),
    }
}

/// Republishes the original CloudEvent, unchanged (same id, so consumers that processed it
/// already skip it), to its original topic through the sidecar; then marks it replayed. A
/// failed publish leaves it parked and answers 502 with the sidecar's error.
async fn replay(State(admin): State<DeadLetterAdmin>, PathText(raw): PathText) -> Response {
    let Ok(id) = Uuid::parse_str(&raw) else { return bad_id() };
    let letter = match admin.store.get(id).await {
        Ok(Some(letter)) => letter,
        Ok(None) => return not_found(id),
        Err(error) => return database_problem(&error),
    };
    if letter.status != DeadLetterStatus::Parked {
        return Problem::new(StatusCode::CONFLICT, "not-parked")
            .detail(format!("The dead letter is {}; only parked ones can be replayed.", letter.status.as_str()))
            .into_response();
    }
    let partition_key = letter.event.get("subject").and_then(Value::as_str);
    let traceparent = letter.event.get("traceparent").and_then(Value::as_str).filter(|t| !t.is_empty());
    let body = serde_json::to_vec(&letter.event).expect("JSON serialises");
    if let Err(error) =
        admin.publisher.publish_bytes(&letter.topic, CLOUDEVENTS_JSON, body, partition_key, traceparent).await
    {
        tracing::warn!(%error, %id, "replay failed");
        return Problem::new(StatusCode::BAD_GATEWAY, "replay-failed")
            .detail(format!("The Dapr sidecar did not accept the event: {error}"))
            .into_response();
    }
    if let Err(error) = admin.store.resolve(id, DeadLetterStatus::Replayed).await {
        return database_problem(&error);
    }
    tracing::info!(%id, event_id = %letter.event_id, topic = %letter.topic, "dead letter replayed");
    show(State(admin), PathText(raw)).await
}

async fn discard(State(admin): State<DeadLetterAdmin>, PathText(raw): PathText) -> Response {
    let Ok(id) = Uuid::parse_str(&raw) else { return bad_id() };
    match admin.store.get(id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(id),
        Err(error) => return database_problem(&error),
    }
    if let Err(error) = admin.store.resolve(id, DeadLetterStatus::Discarded).await {
        return database_problem(&error);
    }
    show(State(admin), PathText(raw)).await
}

/// Prometheus text exposition: the dead-letter depth (more metrics come later).
async fn metrics(State(admin): State<DeadLetterAdmin>) -> Response {
    let parked = match admin.store.parked().await {
        Ok(parked) => parked,
        Err(error) => return database_problem(&error),
    };
    let body = format!(
        "# HELP dapr_todo_dead_letters Dead letters waiting for an operator (parked).\n\
         # TYPE dapr_todo_dead_letters gauge\n\
         dapr_todo_dead_letters{{consumer=\"{}\"}} {parked}\n",
        admin.consumer
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
