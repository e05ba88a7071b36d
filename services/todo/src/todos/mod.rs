//! The todo domain: what a todo is ([`model`]), what clients may ask for ([`input`]), the
//! commands that change todos, each in one transaction with its event ([`commands`]), and the
//! SQL behind them ([`store`]). Nothing here knows about HTTP: the HTTP layer (`crate::http`)
//! turns requests into these calls and their results into responses.

pub mod commands;
pub mod error;
pub mod input;
pub mod model;
pub mod store;

use service_kit::db::Database;
use service_kit::pagination::{Page, PageRequest};
use uuid::Uuid;

use self::error::TodoError;
use self::model::Todo;
use self::store::ListFilter;
use crate::outbox::{self, Outbox, StoredEvent};

/// The todos of one service instance: their database, and the outbox their events go to.
#[derive(Debug, Clone)]
pub struct Todos {
    db: Database,
    outbox: Outbox,
}

impl Todos {
    pub fn new(db: Database, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub async fn get(&self, id: Uuid) -> Result<Todo, TodoError> {
        store::get(&self.db.reader, id).await?.ok_or(TodoError::NotFound(id))
    }

    /// Newest first, one page; `filter.before` and `filter.limit` come from `page`.
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
