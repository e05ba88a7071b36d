//! Todo persistence and the transactional commands: every change writes the todo row and its
//! outbox event in one transaction, or neither.

use chrono::{DateTime, Utc};
use dapr_events::cloudevent::timestamp;
use dapr_events::{TodoEventType, TodoStatus};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use super::model::{NewTodo, Todo, new_todo, now};
use crate::db::{Backend, Database, column};
use crate::error::{Error, Result};
use crate::http::context::RequestContext;
use crate::outbox;

const TODO_COLUMNS: &str =
    "id, user_id, title, description, due_at, status, version, created_at, updated_at, completed_at";

/// How often a change is retried when another writer changed the same todo between our read
/// and our write (PostgreSQL only; SQLite serialises writers).
const MAX_CONFLICT_RETRIES: usize = 5;

fn todo_from_row(row: &AnyRow) -> Result<Todo, sqlx::Error> {
    Ok(Todo {
        id: column::uuid(row, "id")?,
        user_id: row.try_get("user_id")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        due_at: column::optional_time(row, "due_at")?,
        status: column::parsed::<TodoStatus>(row, "status")?,
        version: row.try_get("version")?,
        created_at: column::time(row, "created_at")?,
        updated_at: column::time(row, "updated_at")?,
        completed_at: column::optional_time(row, "completed_at")?,
    })
}

fn format_optional(time: Option<DateTime<Utc>>) -> Option<String> {
    time.as_ref().map(timestamp::format)
}

pub async fn get(pool: &AnyPool, id: Uuid) -> Result<Option<Todo>> {
    let row = sqlx::query(&format!("SELECT {TODO_COLUMNS} FROM todos WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(todo_from_row).transpose()?)
}

/// Reads the todo inside a change's transaction. On PostgreSQL the row is locked so concurrent
/// writers of one todo queue up instead of racing (SQLite's single writer already queues them);
/// the version check in the UPDATE stays as the guarantee either way.
async fn get_for_change(conn: &mut AnyConnection, backend: Backend, id: Uuid) -> Result<Option<Todo>> {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let row = sqlx::query(&format!("SELECT {TODO_COLUMNS} FROM todos WHERE id = $1{lock}"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.as_ref().map(todo_from_row).transpose()?)
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub user_id: Option<String>,
    pub status: Option<TodoStatus>,
    /// Exclusive upper bound on the id (ids are time-ordered): the last id of the previous page.
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Newest first. Keyset pagination on the time-ordered id: stable under concurrent inserts
/// (a new todo never shifts later pages) and as cheap on page 1,000 as on page 1.
pub async fn list(pool: &AnyPool, filter: &ListFilter) -> Result<Vec<Todo>> {
    // Placeholders are numbered in order of first appearance, which SQLite requires for `$N`.
    let mut sql = format!("SELECT {TODO_COLUMNS} FROM todos WHERE 1 = 1");
    let mut next = 0;
    let mut placeholder = || {
        next += 1;
        format!("${next}")
    };
    if filter.user_id.is_some() {
        sql += &format!(" AND user_id = {}", placeholder());
    }
    if filter.status.is_some() {
        sql += &format!(" AND status = {}", placeholder());
    }
    if filter.before.is_some() {
        sql += &format!(" AND id < {}", placeholder());
    }
    sql += &format!(" ORDER BY id DESC LIMIT {}", placeholder());
    let mut query = sqlx::query(&sql);
    if let Some(user_id) = &filter.user_id {
        query = query.bind(user_id.clone());
    }
    if let Some(status) = filter.status {
        query = query.bind(status.as_str());
    }
    if let Some(before) = filter.before {
        query = query.bind(before.to_string());
    }
    let rows = query.bind(filter.limit).fetch_all(pool).await?;
    Ok(rows.iter().map(todo_from_row).collect::<Result<_, _>>()?)
}

async fn insert(conn: &mut AnyConnection, todo: &Todo) -> Result<()> {
    sqlx::query(&format!("INSERT INTO todos ({TODO_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
        .bind(todo.id.to_string())
        .bind(&todo.user_id)
        .bind(&todo.title)
        .bind(todo.description.as_deref())
        .bind(format_optional(todo.due_at))
        .bind(todo.status.as_str())
        .bind(todo.version)
        .bind(timestamp::format(&todo.created_at))
        .bind(timestamp::format(&todo.updated_at))
        .bind(format_optional(todo.completed_at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes `todo` over the row if it is still at `expected_version`; false if someone else
/// changed it first (optimistic concurrency).
async fn update_if_version(conn: &mut AnyConnection, todo: &Todo, expected_version: i64) -> Result<bool> {
    let result = sqlx::query(
        "UPDATE todos SET title = $1, description = $2, due_at = $3, status = $4, version = $5, \
         updated_at = $6, completed_at = $7 WHERE id = $8 AND version = $9",
    )
    .bind(&todo.title)
    .bind(todo.description.as_deref())
    .bind(format_optional(todo.due_at))
    .bind(todo.status.as_str())
    .bind(todo.version)
    .bind(timestamp::format(&todo.updated_at))
    .bind(format_optional(todo.completed_at))
    .bind(todo.id.to_string())
    .bind(expected_version)
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

async fn delete_if_version(conn: &mut AnyConnection, id: Uuid, expected_version: i64) -> Result<bool> {
    let result = sqlx::query("DELETE FROM todos WHERE id = $1 AND version = $2")
        .bind(id.to_string())
        .bind(expected_version)
        .execute(&mut *conn)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// What `POST /todos` answered the first time a given `Idempotency-Key` was used.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

async fn find_idempotency_key(conn: &mut AnyConnection, key: &str) -> Result<Option<StoredResponse>> {
    let row = sqlx::query(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        let status: i64 = row.try_get("response_status")?;
        Ok(StoredResponse {
            request_hash: row.try_get("request_hash")?,
            status: u16::try_from(status).unwrap_or(200),
            body: row.try_get("response_body")?,
        })
    })
    .transpose()
}

pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}

pub enum Created {
    New(Todo),
    /// The key was seen before with the same request: the original response, verbatim.
    Replayed(StoredResponse),
}

/// Creates a todo and its `todos.task.created` event (and, with a key, the stored response) in
/// one transaction.
pub async fn create(
    db: &Database,
    input: NewTodo,
    context: &RequestContext,
    idempotency: Option<&IdempotencyKey>,
) -> Result<Created> {
    let mut tx = db.writer.begin().await?;
    if let Some(idempotency) = idempotency {
        if let Some(stored) = find_idempotency_key(&mut tx, &idempotency.key).await? {
            return replay(stored, idempotency);
        }
    }
    let todo = new_todo(input);
    insert(&mut tx, &todo).await?;
    outbox::append(&mut tx, TodoEventType::Created, &todo.event_data(Vec::new(), None), context, todo.created_at)
        .await?;
    if let Some(idempotency) = idempotency {
        let stored = sqlx::query(
            "INSERT INTO idempotency_keys (idempotency_key, request_hash, response_status, response_body, todo_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&idempotency.key)
        .bind(&idempotency.request_hash)
        .bind(201_i64)
        .bind(serde_json::to_string(&todo).expect("a todo serialises"))
        .bind(todo.id.to_string())
        .bind(timestamp::format(&todo.created_at))
        .execute(&mut *tx)
        .await;
        if let Err(error) = stored {
            // Two requests with the same new key raced (PostgreSQL): the other one committed
            // first. Undo ours and answer with theirs.
            let raced = error.as_database_error().is_some_and(|e| e.is_unique_violation());
            if !raced {
                return Err(error.into());
            }
            tx.rollback().await?;
            let mut conn = db.writer.acquire().await?;
            let stored = find_idempotency_key(&mut conn, &idempotency.key).await?;
            return match stored {
                Some(stored) => replay(stored, idempotency),
                None => Err(error.into()),
            };
        }
    }
    tx.commit().await?;
    Ok(Created::New(todo))
}

fn replay(stored: StoredResponse, idempotency: &IdempotencyKey) -> Result<Created> {
    if stored.request_hash == idempotency.request_hash {
        Ok(Created::Replayed(stored))
    } else {
        Err(Error::IdempotencyKeyReused)
    }
}

/// What a command decided for the todo as it currently stands.
pub enum Decision {
    /// Nothing to change (e.g. completing a completed todo): no write, no event.
    Unchanged,
    Update {
        next: Todo,
        event_type: TodoEventType,
        changed_fields: Vec<String>,
    },
    Delete,
}

pub enum Outcome {
    Unchanged(Todo),
    Changed(Todo),
    Deleted,
}

/// Runs a change to one todo: reads it, checks `If-Match`, lets `decide` compute the change,
/// and writes the row and the event in one transaction. The new version (= event sequence) is
/// only written if the row is still at the version we read, so two writers can never produce
/// the same sequence number or commit a todo's events out of order.
pub async fn change(
    db: &Database,
    id: Uuid,
    if_match: Option<&IfMatch>,
    context: &RequestContext,
    decide: impl Fn(&Todo, DateTime<Utc>) -> Decision,
) -> Result<Outcome> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        let mut tx = db.writer.begin().await?;
        let current =
            get_for_change(&mut tx, db.backend, id).await?.ok_or_else(|| Error::TodoNotFound(id.to_string()))?;
        if let Some(if_match) = if_match {
            if !if_match.matches(current.version) {
                return Err(Error::PreconditionFailed { current_version: current.version });
            }
        }
        let now = now();
        let (written, event_type, data, outcome) = match decide(&current, now) {
            Decision::Unchanged => return Ok(Outcome::Unchanged(current)),
            Decision::Update { mut next, event_type, changed_fields } => {
                next.version = current.version + 1;
                next.updated_at = now;
                let written = update_if_version(&mut tx, &next, current.version).await?;
                let data = next.event_data(changed_fields, None);
                (written, event_type, data, Outcome::Changed(next))
            }
            Decision::Delete => {
                let written = delete_if_version(&mut tx, id, current.version).await?;
                // The deleted event carries the last state, one version on.
                let mut last = current.clone();
                last.version += 1;
                last.updated_at = now;
                (written, TodoEventType::Deleted, last.event_data(Vec::new(), Some(now)), Outcome::Deleted)
            }
        };
        if !written {
            // Lost a race with another writer; read again and re-decide (If-Match included).
            tx.rollback().await?;
            continue;
        }
        outbox::append(&mut tx, event_type, &data, context, now).await?;
        tx.commit().await?;
        return Ok(outcome);
    }
    Err(Error::Conflict)
}

/// A parsed `If-Match` header: `*` or a list of strong entity tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Versions(Vec<i64>),
}

impl IfMatch {
    /// Parses `"3"`, `"3", "4"` or `*`. Weak tags (`W/"3"`) never match under If-Match's strong
    /// comparison (RFC 9110 §13.1.1), so they are kept out of the list.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value == "*" {
            return Ok(Self::Any);
        }
        let mut versions = Vec::new();
        for tag in value.split(',').map(str::trim) {
            if tag.starts_with("W/\"") && tag.ends_with('"') {
                continue;
            }
            let inner = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or_else(|| format!("{tag:?} is not an entity tag such as \"3\""))?;
            // An ETag we never issued cannot match; it is not malformed.
            if let Ok(version) = inner.parse() {
                versions.push(version);
            }
        }
        Ok(Self::Versions(versions))
    }

    pub fn matches(&self, version: i64) -> bool {
        match self {
            Self::Any => true,
            Self::Versions(versions) => versions.contains(&version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_parsing() {
        assert_eq!(IfMatch::parse("*").unwrap(), IfMatch::Any);
        assert_eq!(IfMatch::parse("\"3\"").unwrap(), IfMatch::Versions(vec![3]));
        assert_eq!(IfMatch::parse("\"3\", W/\"4\", \"x\"").unwrap(), IfMatch::Versions(vec![3]));
        assert!(IfMatch::parse("3").is_err());
        assert!(IfMatch::parse("\"3\"").unwrap().matches(3));
        assert!(!IfMatch::parse("W/\"3\"").unwrap().matches(3));
    }
}
