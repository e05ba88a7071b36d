//! The todo domain: what a todo is ([`model`]), what clients may ask for ([`input`]), the
//! commands that change todos, each in one transaction with its event ([`commands`]), the
//! writer that commits concurrent creates together ([`group_commit`]), and the SQL behind them
//! ([`store`]). Nothing here knows about HTTP: the HTTP layer (`crate::http`)
//! turns requests into these calls and their results into responses.

pub mod commands;
pub mod error;
pub mod group_commit;
pub mod input;
pub mod model;
pub mod store;

use service_kit::db::Database;
use service_kit::pagination::{Page, PageRequest};
use uuid::Uuid;

use self::error::TodoError;
use self::group_commit::GroupCommit;
use self::model::Todo;
use self::store::ListFilter;
use crate::outbox::{self, Outbox, StoredEvent};

/// The todos of one service instance: their database, the outbox their events go to, and the
/// writers of new todos.
#[derive(Debug, Clone)]
pub struct Todos {
    db: Database,
    outbox: Outbox,
    creates: GroupCommit,
}

impl Todos {
    /// Starts the create writers ([`GroupCommit`]) on the runtime.
    pub fn new(db: Database, outbox: Outbox) -> Self {
        let creates = GroupCommit::start(db.clone(), outbox.clone());
        Self { db, outbox, creates }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub async fn get(&self, id: Uuid) -> Result<Todo, TodoError> {
        store::get(&self.db.reader, id).await?.ok_or(TodoError::NotFound(id))
    }

    /// The todos of `user_id` (or everyone), in `status` (or any), newest first: one page.
    pub async fn list(
        &self,
        user_id: Option<String>,
        status: Option<dapr_events::TodoStatus>,
        page: &PageRequest,
    ) -> Result<Page<Todo>, TodoError> {
        let filter = ListFilter { user_id, status, before: page.after, limit: page.fetch_limit() };
        let rows = store::list(&self.db.reader, &filter).await?;
        Ok(Page::from_rows(rows, page, |todo| todo.id))
    }

    /// Every event of the todo in order, including after its deletion (it is an audit trail);
    /// [`TodoError::NotFound`] only for a todo that never existed.
    pub async fn history(&self, id: Uuid) -> Result<Vec<StoredEvent>, TodoError> {
        let events = outbox::history(&self.db.reader, id).await?;
        if events.is_empty() {
            return Err(TodoError::NotFound(id));
        }
        Ok(events)
    }
}

/// The compiler cannot keep the domain free of the web layer while both live in one crate
/// (one crate per service, and the HTTP layer needs axum), so this test does: no file of the
/// domain (`todos/`) or below it (`outbox/`, `relay.rs`) names the HTTP layer or axum.
#[cfg(test)]
mod layering {
    use std::path::{Path, PathBuf};

    const FORBIDDEN: [&str; 4] = ["crate::http", "axum", "tower_http", "::http::"];

    fn rust_files(path: &Path, found: &mut Vec<PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).expect("a readable source directory") {
                rust_files(&entry.expect("a directory entry").path(), found);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path.to_owned());
        }
    }

    #[test]
    fn the_domain_does_not_import_the_http_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        for below in ["todos", "outbox", "relay.rs"] {
            rust_files(&src.join(below), &mut files);
        }
        assert!(files.len() >= 8, "the domain's files were not found under {}", src.display());
        let mut offences = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("a readable source file");
            // This module names the forbidden paths itself; its own lines are not imports, and
            // neither are comments.
            let code = text.split("#[cfg(test)]\nmod layering").next().unwrap_or(&text);
            for (number, line) in code.lines().enumerate() {
                let is_comment = line.trim_start().starts_with("//");
                if !is_comment && FORBIDDEN.iter().any(|forbidden| line.contains(forbidden)) {
                    offences.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
                }
            }
        }
        assert!(offences.is_empty(), "the domain imports the HTTP layer:\n{}", offences.join("\n"));
    }
}
