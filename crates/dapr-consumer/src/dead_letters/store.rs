//! The dead-letter store: what arrives on a consumer's dead-letter topics, with the reason its
//! delivery failed here (daprd forwards the original bytes only, so the reason is noted when
//! the consumer answers RETRY or DROP, and joined in when the letter arrives).

use chrono::Utc;
use dapr_events::timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use service_kit::db::{Database, column};
use service_kit::pagination::PageRequest;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parked => "parked",
            Self::Replayed => "replayed",
            Self::Discarded => "discarded",
        }
    }
}

/// One dead letter, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// The original CloudEvent, exactly as daprd forwarded it (any JSON: what was dropped may
    /// not have been a CloudEvent at all).
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

    /// Remembers why the delivery of `event_id` failed (the last reason wins), for the dead letter
    /// that may follow. Best effort: the answer to daprd matters more than the note.
    pub async fn note_failure(&self, event_id: &str, reason: &str) {
        let noted = sqlx::query(
            "INSERT INTO delivery_failures (event_id, reason, failed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id) DO UPDATE SET reason = excluded.reason, failed_at = excluded.failed_at",
        )
        .bind(event_id)
        .bind(reason)
        .bind(timestamp::format(&Utc::now()))
        .execute(&self.db.writer)
        .await;
        if let Err(error) = noted {
            tracing::warn!(%error, event_id, "could not note the delivery failure");
        }
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

    /// Oldest first: one page (plus the row that tells whether there is a next one).
    pub async fn list(
        &self,
        status: Option<DeadLetterStatus>,
        page: &PageRequest,
    ) -> Result<Vec<DeadLetter>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM dead_letters WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        ))
        .bind(status.map(DeadLetterStatus::as_str))
        .bind(page.after.map(|id| id.to_string()))
        .bind(page.fetch_limit())
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

    pub async fn resolve(&self, id: Uuid, status: DeadLetterStatus) -> Result<(), sqlx::Error> {
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
