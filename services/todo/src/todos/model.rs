//! A todo: its state, and the changes it goes through (patched, completed, reopened), each with
//! the event it emits.

use chrono::{DateTime, SubsecRound, Utc};
use dapr_events::{TodoEventData, TodoEventType, TodoStatus, timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A todo as the API shows it and the database stores it. Times are UTC with microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "0190f2a4-8c1e-7d3a-9b7e-2f1c3d4e5f60", "userId": "ada", "title": "Write the report",
    "description": null, "dueAt": "2026-12-24T17:00:00.000000Z", "status": "open", "version": 1,
    "createdAt": "2026-12-01T09:00:00.000000Z", "updatedAt": "2026-12-01T09:00:00.000000Z",
    "completedAt": null
}))]
pub struct Todo {
    pub id: Uuid,
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    pub user_id: String,
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[serde(with = "timestamp::option")]
    pub due_at: Option<DateTime<Utc>>,
    pub status: TodoStatus,
    /// Starts at 1 and grows by one with each change; the `ETag` is this number, quoted.
    #[schema(minimum = 1)]
    pub version: i64,
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "timestamp::option")]
    pub completed_at: Option<DateTime<Utc>>,
}

impl Todo {
    /// The HTTP entity tag: the version, as a strong ETag.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// The event payload describing this state.
    pub fn event_data(&self, changed_fields: Vec<String>, deleted_at: Option<DateTime<Utc>>) -> TodoEventData {
        TodoEventData {
            todo_id: self.id,
            user_id: self.user_id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            due_at: self.due_at,
            status: self.status,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
            deleted_at,
            changed_fields,
        }
    }
}

/// Now, at the precision both databases store (microseconds), so a todo read back equals the
/// one written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A validated [`CreateTodo`].
#[derive(Debug, Clone)]
pub struct NewTodo {
    pub user_id: String,
    pub title: String,
    pub description: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
}

/// A fresh todo from a validated request.
pub fn new_todo(input: NewTodo) -> Todo {
    let now = now();
    Todo {
        id: Uuid::now_v7(),
        user_id: input.user_id,
        title: input.title,
        description: input.description,
        due_at: input.due_at,
        status: TodoStatus::Open,
        version: 1,
        created_at: now,
        updated_at: now,
        completed_at: None,
    }
}

/// A validated [`UpdateTodo`]: `Some` for each field to set.
#[derive(Debug, Clone, Default)]
pub struct TodoPatch {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub due_at: Option<Option<DateTime<Utc>>>,
}

impl TodoPatch {
    /// The todo after the patch and the names of the fields that really changed (empty when the
    /// patch sets what is already there).
    pub fn apply(&self, todo: &Todo) -> (Todo, Vec<String>) {
        let mut next = todo.clone();
        let mut changed = Vec::new();
        if let Some(title) = &self.title
            && *title != todo.title
        {
            next.title = title.clone();
            changed.push("title".to_owned());
        }
        if let Some(description) = &self.description
            && *description != todo.description
        {
            next.description = description.clone();
            changed.push("description".to_owned());
        }
        if let Some(due_at) = self.due_at
            && due_at != todo.due_at
        {
            next.due_at = due_at;
            changed.push("dueAt".to_owned());
        }
        (next, changed)
    }
}

impl Todo {
    /// The todo with `status`, and the event that says so; `None` when it is in that status
    /// already (completing a completed todo changes nothing).
    pub fn with_status(&self, status: TodoStatus, now: DateTime<Utc>) -> Option<(Todo, TodoEventType)> {
        if self.status == status {
            return None;
        }
        let mut next = self.clone();
        next.status = status;
        let event_type = match status {
            TodoStatus::Completed => {
                next.completed_at = Some(now);
                TodoEventType::Completed
            }
            TodoStatus::Open => {
                next.completed_at = None;
                TodoEventType::Reopened
            }
        };
        Some((next, event_type))
    }
}
