//! The todos' tables, statement by statement: the `todos` rows and the stored answers of
//! `Idempotency-Key` requests. Transactions are the commands' business (`commands.rs`).

use chrono::{DateTime, Utc};
use dapr_events::{TodoStatus, timestamp};
use service_kit::db::column;
use service_kit::db::dialect::{AnyQuery, Backend, PerRowCount, value_rows};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use super::model::Todo;

type Result<T, E = sqlx::Error> = std::result::Result<T, E>;

const TODO_COLUMNS: &str =
    "id, user_id, title, description, due_at, status, version, created_at, updated_at, completed_at";

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
    row.as_ref().map(todo_from_row).transpose()
}

/// Reads the todo inside a change's transaction, locked against concurrent writers where the
/// backend can (see [`Backend::lock_for_update`]); the version check in the UPDATE stays as
/// the guarantee either way.
pub async fn get_for_change(conn: &mut AnyConnection, backend: Backend, id: Uuid) -> Result<Option<Todo>> {
    let lock = backend.lock_for_update();
    let row = sqlx::query(&format!("SELECT {TODO_COLUMNS} FROM todos WHERE id = $1{lock}"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(todo_from_row).transpose()
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
    rows.iter().map(todo_from_row).collect()
}

/// The columns a new todo's row is written in, in [`bind_row`]'s order, and how many.
pub const INSERT_COLUMNS: &str = TODO_COLUMNS;
pub const INSERT_COLUMN_COUNT: usize = 10;

/// Binds a new todo's values, in [`INSERT_COLUMNS`] order.
pub fn bind_row<'q>(query: AnyQuery<'q>, todo: &'q Todo) -> AnyQuery<'q> {
    query
        .bind(todo.id.to_string())
        .bind(todo.user_id.as_str())
        .bind(todo.title.as_str())
        .bind(todo.description.as_deref())
        .bind(format_optional(todo.due_at))
        .bind(todo.status.as_str())
        .bind(todo.version)
        .bind(timestamp::format(&todo.created_at))
        .bind(timestamp::format(&todo.updated_at))
        .bind(format_optional(todo.completed_at))
}

static INSERT: PerRowCount = PerRowCount::new(64, |rows| {
    format!("INSERT INTO todos ({INSERT_COLUMNS}) VALUES {}", value_rows(1, INSERT_COLUMN_COUNT, rows))
});

/// Inserts new todos, all in one statement.
pub async fn insert_all(conn: &mut AnyConnection, todos: &[&Todo]) -> Result<()> {
    if todos.is_empty() {
        return Ok(());
    }
    let sql = INSERT.get(todos.len());
    todos.iter().fold(sqlx::query(&sql), |query, todo| bind_row(query, todo)).execute(&mut *conn).await?;
    Ok(())
}

/// Writes `todo` over the row if it is still at `expected_version`; false if someone else
/// changed it first (optimistic concurrency).
pub async fn update_if_version(conn: &mut AnyConnection, todo: &Todo, expected_version: i64) -> Result<bool> {
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

pub async fn delete_if_version(conn: &mut AnyConnection, id: Uuid, expected_version: i64) -> Result<bool> {
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

pub async fn find_idempotency_key(conn: &mut AnyConnection, key: &str) -> Result<Option<StoredResponse>> {
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

/// Stores the answer to a request with an `Idempotency-Key`, in the transaction that created
/// its todo. A unique violation means another request with the same new key committed first.
pub async fn insert_idempotency_key(
    conn: &mut AnyConnection,
    key: &str,
    request_hash: &str,
    todo: &Todo,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO idempotency_keys (idempotency_key, request_hash, response_status, response_body, todo_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key)
    .bind(request_hash)
    .bind(201_i64)
    .bind(serde_json::to_string(todo).expect("a todo serialises"))
    .bind(todo.id.to_string())
    .bind(timestamp::format(&todo.created_at))
    .execute(conn)
    .await?;
    Ok(())
}
