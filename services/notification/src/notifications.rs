//! In-app notifications: what a todo event says to its user, written once per event, and the
//! queries of the notifications API.

use chrono::{DateTime, Utc};
use dapr_consumer::processed::mark_processed;
use dapr_events::TodoEventType;
use dapr_events::delivery::TodoEvent;
use dapr_events::timestamp;
use serde::Serialize;
use service_kit::db::{Database, column};
use service_kit::pagination::PageRequest;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

/// The effect name under which in-app notifications are recorded as processed.
pub const IN_APP: &str = "notification.inapp";

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: Uuid,
    pub user_id: String,
    pub todo_id: Uuid,
    pub event_id: String,
    /// `created` or `completed`.
    #[schema(example = "completed")]
    pub kind: String,
    pub title: String,
    pub message: String,
    /// When the change happened (the todo's `updatedAt` in the event).
    pub occurred_at: String,
    pub created_at: String,
    pub read_at: Option<String>,
}

const COLUMNS: &str = "id, user_id, todo_id, event_id, kind, title, message, occurred_at, created_at, read_at";

fn from_row(row: &AnyRow) -> Result<Notification, sqlx::Error> {
    Ok(Notification {
        id: column::uuid(row, "id")?,
        user_id: row.try_get("user_id")?,
        todo_id: column::uuid(row, "todo_id")?,
        event_id: row.try_get("event_id")?,
        kind: row.try_get("kind")?,
        title: row.try_get("title")?,
        message: row.try_get("message")?,
        occurred_at: row.try_get("occurred_at")?,
        created_at: row.try_get("created_at")?,
        read_at: row.try_get("read_at")?,
    })
}

/// Which events are worth a notification, and what it says.
pub fn text_for(event: &TodoEvent) -> Option<(&'static str, String)> {
    let title = &event.data.title;
    match event.event_type {
        TodoEventType::Created => Some(("created", format!("New todo: {title}"))),
        TodoEventType::Completed => Some(("completed", format!("Completed: {title}"))),
        TodoEventType::Updated | TodoEventType::Reopened | TodoEventType::Deleted => None,
    }
}

/// A UUIDv7 carrying the time the change happened, so ids sort by occurrence even when events
/// arrive out of order (10 parallel Redis workers, redeliveries, replays).
fn id_at(time: DateTime<Utc>) -> Uuid {
    let seconds = time.timestamp().max(0) as u64;
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, time.timestamp_subsec_nanos()))
}

/// Writes the notification for `event` in one transaction with its processed-event record.
/// A redelivered event writes nothing and gets the notification written the first time.
pub async fn record(db: &Database, event: &TodoEvent, kind: &str, message: &str) -> Result<Notification, sqlx::Error> {
    let mut tx = db.begin().await?;
    if !mark_processed(&mut tx, &event.id, IN_APP).await? {
        tx.rollback().await?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE event_id = $1"))
            .bind(&event.id)
            .fetch_one(&db.writer)
            .await?;
        return from_row(&row);
    }
    let notification = Notification {
        id: id_at(event.data.updated_at),
        user_id: event.data.user_id.clone(),
        todo_id: event.data.todo_id,
        event_id: event.id.clone(),
        kind: kind.to_owned(),
        title: event.data.title.clone(),
        message: message.to_owned(),
        occurred_at: timestamp::format(&event.data.updated_at),
        created_at: timestamp::format(&Utc::now()),
        read_at: None,
    };
    sqlx::query(&format!("INSERT INTO notifications ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)"))
        .bind(notification.id.to_string())
        .bind(&notification.user_id)
        .bind(notification.todo_id.to_string())
        .bind(&notification.event_id)
        .bind(&notification.kind)
        .bind(&notification.title)
        .bind(&notification.message)
        .bind(&notification.occurred_at)
        .bind(&notification.created_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(notification)
}

/// A user's notifications, newest change first: one page (plus the row that tells whether
/// there is a next one).
pub async fn list(
    db: &Database,
    user_id: &str,
    unread_only: bool,
    page: &PageRequest,
) -> Result<Vec<Notification>, sqlx::Error> {
    let unread_clause = if unread_only { "AND read_at IS NULL" } else { "" };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 {unread_clause} AND ($2 IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(user_id)
    .bind(page.after.map(|id| id.to_string()))
    .bind(page.fetch_limit())
    .fetch_all(&db.reader)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Marks a notification read (the first read time is kept); `None` when there is no such
/// notification.
pub async fn mark_read(db: &Database, id: Uuid) -> Result<Option<Notification>, sqlx::Error> {
    sqlx::query("UPDATE notifications SET read_at = $1 WHERE id = $2 AND read_at IS NULL")
        .bind(timestamp::format(&Utc::now()))
        .bind(id.to_string())
        .execute(&db.writer)
        .await?;
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(&db.writer)
        .await?;
    row.as_ref().map(from_row).transpose()
}
