//! What clients ask for, before it is trusted: the bodies of `POST /todos` and
//! `PATCH /todos/{id}`, and their validation into a [`NewTodo`] or a [`TodoPatch`]. Every
//! invalid field is reported, not just the first.

use chrono::{DateTime, SubsecRound, Utc};
use dapr_events::timestamp;
use serde::{Deserialize, Deserializer, Serialize};

use super::model::{NewTodo, TodoPatch};

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
use dapr_events::catalog::validate_user_id;

/// One field that failed validation, named as the client wrote it (`userId`, `dueAt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    pub field: String,
    pub detail: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), detail: detail.into() }
    }
}

/// `POST /todos` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"userId": "ada", "title": "Write the report", "dueAt": "2026-12-24T18:00:00+01:00"}))]
pub struct CreateTodo {
    // Options so that a missing field is reported by our validation, alongside every other
    // problem with the body, instead of serde stopping at the first one.
    /// 1 to 64 of letters, digits and `. _ @ -`.
    #[schema(value_type = String, required = true, pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    pub user_id: Option<String>,
    /// 1 to 200 characters after trimming, no control characters.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200)]
    pub title: Option<String>,
    /// At most 2,000 characters; line breaks and tabs are the only control characters allowed.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// RFC 3339 with any offset; stored in UTC, which must fall in years 0000 to 9999.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub due_at: Option<String>,
}

impl CreateTodo {
    pub fn validate(self) -> Result<NewTodo, Vec<InvalidField>> {
        let mut errors = Vec::new();
        let user_id = match self.user_id {
            None => {
                errors.push(InvalidField::new("userId", "is required"));
                None
            }
            Some(user_id) => check(validate_user_id(&user_id).map(|_| user_id), "userId", &mut errors),
        };
        let title = match self.title {
            None => {
                errors.push(InvalidField::new("title", "is required"));
                None
            }
            Some(title) => check(validate_title(&title), "title", &mut errors),
        };
        let description = check(validate_description(self.description), "description", &mut errors);
        let due_at = check(validate_due_at(self.due_at.as_deref()), "dueAt", &mut errors);
        match (user_id, title, description, due_at) {
            (Some(user_id), Some(title), Some(description), Some(due_at)) if errors.is_empty() => {
                Ok(NewTodo { user_id, title, description, due_at })
            }
            _ => Err(errors),
        }
    }
}

/// `PATCH /todos/{id}` body. A field that is absent stays as it is; `description` and `dueAt`
/// may be `null` to clear them; `title` may not.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"title": "Write the final report", "dueAt": null}))]
pub struct UpdateTodo {
    /// As on create; may not be `null`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub title: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    pub description: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub due_at: Option<Option<String>>,
}

impl UpdateTodo {
    pub fn validate(self) -> Result<TodoPatch, Vec<InvalidField>> {
        let mut errors = Vec::new();
        let title = match self.title {
            None => None,
            Some(None) => {
                errors.push(InvalidField::new("title", "cannot be null"));
                None
            }
            Some(Some(title)) => check(validate_title(&title), "title", &mut errors),
        };
        let description = self.description.and_then(|d| check(validate_description(d), "description", &mut errors));
        let due_at = self.due_at.and_then(|d| check(validate_due_at(d.as_deref()), "dueAt", &mut errors));
        if errors.is_empty() { Ok(TodoPatch { title, description, due_at }) } else { Err(errors) }
    }
}

/// Distinguishes an explicit `null` (`Some(None)`) from an absent field (`None`, via
/// `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

fn check<T>(result: Result<T, String>, field: &str, errors: &mut Vec<InvalidField>) -> Option<T> {
    result.map_err(|detail| errors.push(InvalidField::new(field, detail))).ok()
}

fn validate_title(title: &str) -> Result<String, String> {
    // Control characters have no business in a one-line title, and NUL cannot be stored in
    // PostgreSQL text at all.
    if title.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let title = title.trim();
    let length = title.chars().count();
    if !(1..=MAX_TITLE_CHARS).contains(&length) {
        return Err(format!("must be 1 to {MAX_TITLE_CHARS} characters after trimming"));
    }
    Ok(title.to_owned())
}

fn validate_description(description: Option<String>) -> Result<Option<String>, String> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => {
            Err(format!("must be at most {MAX_DESCRIPTION_CHARS} characters"))
        }
        // Line breaks and tabs are fine in a description; other control characters (NUL
        // above all, which PostgreSQL cannot store) are not.
        Some(d) if d.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) => {
            Err("must not contain control characters other than line breaks and tabs".into())
        }
        other => Ok(other),
    }
}

fn validate_due_at(due_at: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    due_at
        .map(|text| {
            timestamp::parse(text).map(|t| t.trunc_subsecs(6)).map_err(|error| match error {
                timestamp::InvalidTimestamp::Syntax(_) => {
                    "must be an RFC 3339 date-time such as 2026-12-01T17:00:00Z".to_owned()
                }
                out_of_range => format!("{out_of_range}"),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::todos::model::new_todo;
    use dapr_events::catalog::MAX_USER_ID_CHARS;

    fn fields(errors: Vec<InvalidField>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn create_reports_every_invalid_field() {
        let request = CreateTodo {
            user_id: Some("bad user!".into()),
            title: Some("   ".into()),
            description: Some("d".repeat(MAX_DESCRIPTION_CHARS + 1)),
            due_at: Some("tomorrow".into()),
        };
        assert_eq!(fields(request.validate().unwrap_err()), ["userId", "title", "description", "dueAt"]);
        let controls = CreateTodo {
            user_id: Some("u".into()),
            title: Some("a\u{0}b".into()),
            description: Some("line\nbreak\tand NUL\u{0}".into()),
            due_at: None,
        };
        assert_eq!(fields(controls.validate().unwrap_err()), ["title", "description"]);
        let missing = CreateTodo { user_id: None, title: None, description: None, due_at: None };
        assert_eq!(fields(missing.validate().unwrap_err()), ["userId", "title"]);
    }

    #[test]
    fn a_due_date_past_year_9999_in_utc_is_refused() {
        for due_at in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+00:01"] {
            let request = CreateTodo {
                user_id: Some("u".into()),
                title: Some("t".into()),
                description: None,
                due_at: Some(due_at.into()),
            };
            let errors = request.validate().unwrap_err();
            assert_eq!(fields(errors.clone()), ["dueAt"], "{due_at}");
            assert!(errors[0].detail.contains("years 0000 to 9999"), "{errors:?}");
        }
        let patch: UpdateTodo = serde_json::from_str(r#"{"dueAt": "9999-12-31T23:59:59-23:59"}"#).unwrap();
        assert_eq!(fields(patch.validate().unwrap_err()), ["dueAt"]);
    }

    #[test]
    fn limits_are_inclusive_and_count_characters() {
        let request = CreateTodo {
            user_id: Some("u".repeat(MAX_USER_ID_CHARS)),
            // 200 multi-byte characters are 200 characters, not 400 bytes.
            title: Some(format!("  {}  ", "é".repeat(MAX_TITLE_CHARS))),
            description: Some("d".repeat(MAX_DESCRIPTION_CHARS)),
            due_at: Some("2026-12-01T17:00:00.1234567+02:00".into()),
        };
        let valid = request.validate().unwrap();
        assert_eq!(valid.title.chars().count(), MAX_TITLE_CHARS);
        assert_eq!(timestamp::format(&valid.due_at.unwrap()), "2026-12-01T15:00:00.123456Z");
        let too_long = CreateTodo {
            user_id: Some("u".repeat(MAX_USER_ID_CHARS + 1)),
            title: Some("t".repeat(MAX_TITLE_CHARS + 1)),
            description: None,
            due_at: None,
        };
        assert_eq!(fields(too_long.validate().unwrap_err()), ["userId", "title"]);
    }

    #[test]
    fn patch_tells_null_from_absent_and_reports_real_changes_only() {
        let todo = new_todo(NewTodo {
            user_id: "ada".into(),
            title: "Write".into(),
            description: Some("d".into()),
            due_at: None,
        });
        let patch: UpdateTodo = serde_json::from_str(r#"{"description": null, "title": "Write"}"#).unwrap();
        let (next, changed) = patch.validate().unwrap().apply(&todo);
        assert_eq!(changed, ["description"]);
        assert_eq!(next.description, None);
        assert_eq!(next.title, "Write");
        let null_title: UpdateTodo = serde_json::from_str(r#"{"title": null}"#).unwrap();
        assert_eq!(fields(null_title.validate().unwrap_err()), ["title"]);
    }
}
