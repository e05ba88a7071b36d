//! The event catalog: which events the todo service emits, on which topics, with which payload.
//!
//! Consumers depend on these types too, so a payload change shows up as a compile error in every
//! service instead of a surprise at run time. The JSON Schemas in `schemas/events/` are the
//! language-neutral form of the same contract; the todo service's tests check every emitted
//! event against them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::timestamp;

/// Major version of every payload schema below. Consumers drop events whose `dataschema` names a
/// major version they do not understand; additive changes keep the major version.
pub const SCHEMA_MAJOR_VERSION: u32 = 1;

/// Where the schemas are published. Nothing fetches this URI: it names the file
/// `schemas/events/<type>/v<major>.json` in this repository.
pub const SCHEMA_BASE_URI: &str = "https://dapr-todo.example/schemas/events";

/// The kinds of change a todo goes through. Each type is published to the topic of the same
/// name, keyed by the todo id so a partitioned broker keeps one todo's events in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TodoEventType {
    #[serde(rename = "todos.task.created")]
    Created,
    #[serde(rename = "todos.task.updated")]
    Updated,
    #[serde(rename = "todos.task.completed")]
    Completed,
    #[serde(rename = "todos.task.reopened")]
    Reopened,
    #[serde(rename = "todos.task.deleted")]
    Deleted,
}

impl TodoEventType {
    pub const ALL: [TodoEventType; 5] = [Self::Created, Self::Updated, Self::Completed, Self::Reopened, Self::Deleted];

    /// The CloudEvent `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "todos.task.created",
            Self::Updated => "todos.task.updated",
            Self::Completed => "todos.task.completed",
            Self::Reopened => "todos.task.reopened",
            Self::Deleted => "todos.task.deleted",
        }
    }

    /// The pub/sub topic: deliberately the type's own name, so one subscription means one kind
    /// of event and dead-letter topics can be named after it.
    pub const fn topic(self) -> &'static str {
        self.as_str()
    }

    /// The CloudEvent `dataschema` for this type at the current major version.
    pub fn schema_uri(self) -> String {
        format!("{SCHEMA_BASE_URI}/{}/v{SCHEMA_MAJOR_VERSION}.json", self.as_str())
    }
}

impl fmt::Display for TodoEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown todo event type {0:?}")]
pub struct UnknownEventType(pub String);

impl FromStr for TodoEventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// The longest `userId` any service accepts.
pub const MAX_USER_ID_CHARS: usize = 64;

/// `userId` as every service accepts it: 1–64 of `[A-Za-z0-9._@-]` (safe in URLs, logs and keys).
pub fn validate_user_id(user_id: &str) -> Result<(), String> {
    let length = user_id.chars().count();
    if !(1..=MAX_USER_ID_CHARS).contains(&length) {
        return Err(format!("must be 1 to {MAX_USER_ID_CHARS} characters"));
    }
    if !user_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b)) {
        return Err("may contain only letters, digits and . _ @ -".into());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TodoStatus {
    Open,
    Completed,
}

impl TodoStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Completed => "completed",
        }
    }
}

impl FromStr for TodoStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Self::Open),
            "completed" => Ok(Self::Completed),
            other => Err(format!("unknown status {other:?}")),
        }
    }
}

/// The `data` of every todo event: the todo as it stands after the change (event-carried state
/// transfer), so a consumer never has to call back into the todo service.
///
/// Deserialisation ignores unknown fields on purpose (tolerant reader): producers may add fields
/// within a major version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TodoEventData {
    pub todo_id: Uuid,
    pub user_id: String,
    pub title: String,
    pub description: Option<String>,
    #[serde(with = "timestamp::option")]
    pub due_at: Option<DateTime<Utc>>,
    pub status: TodoStatus,
    /// The todo's version after this change; also the event's per-todo sequence number.
    pub version: i64,
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "timestamp::option")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Set on `todos.task.deleted` only.
    #[serde(default, with = "timestamp::option", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// On `todos.task.updated`: the fields the update changed (`title`, `description`, `dueAt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip_through_serde_and_from_str() {
        for t in TodoEventType::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(t.as_str().parse::<TodoEventType>().unwrap(), t);
            assert!(t.schema_uri().ends_with(&format!("/{}/v1.json", t.as_str())));
        }
        assert!("todos.task.exploded".parse::<TodoEventType>().is_err());
    }

    #[test]
    fn payload_tolerates_unknown_fields() {
        let json = serde_json::json!({
            "todoId": "0190f2a4-8c1e-7d3a-9b7e-2f1c3d4e5f60",
            "userId": "ada",
            "title": "t",
            "description": null,
            "dueAt": null,
            "status": "open",
            "version": 1,
            "createdAt": "2026-11-22T10:00:00.123456Z",
            "updatedAt": "2026-11-22T10:00:00+01:00",
            "completedAt": null,
            "priority": "a field from a newer producer"
        });
        let data: TodoEventData = serde_json::from_value(json).unwrap();
        assert_eq!(data.user_id, "ada");
        assert_eq!(data.updated_at.to_rfc3339(), "2026-11-22T09:00:00+00:00");
    }
}
