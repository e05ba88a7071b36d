//! The commands that change todos. Each runs in one [`UnitOfWork`]: the todo row and its event
//! are written together or not at all, and the commit wakes the relay. Each runs to its end in
//! a task of its own ([`run_to_completion`]): a caller that goes away (an HTTP client hanging
//! up) stops waiting for the outcome, but never stops the unit of work half-way.

use chrono::{DateTime, Utc};
use dapr_events::TodoEventType;
use service_kit::db::run_to_completion;
use service_kit::trace_context;
use tracing::Instrument;
use uuid::Uuid;

use super::Todos;
use super::error::TodoError;
use super::model::{NewTodo, Todo, new_todo, now};
use super::store::{self, StoredResponse};
use crate::outbox::{EventContext, NewEvent, UnitOfWork};

/// How often a change is retried when another writer changed the same todo between our read
/// and our write (PostgreSQL only; SQLite serialises writers).
const MAX_CONFLICT_RETRIES: usize = 5;

/// A client's key for a create it may send more than once, and a hash of the request as it
/// was understood: the same key with another request is refused.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}

pub enum Created {
    New(Todo),
    /// The key was seen before with the same request: what was answered then.
    Replayed {
        status: u16,
        todo: Todo,
    },
}

/// The versions a change may apply to (the caller's `If-Match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    Any,
    Versions(Vec<i64>),
}

impl Precondition {
    pub fn matches(&self, version: i64) -> bool {
        match self {
            Self::Any => true,
            Self::Versions(versions) => versions.contains(&version),
        }
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

impl Todos {
    /// Creates a todo and its `todos.task.created` event (and, with a key, the stored answer)
    /// in one transaction. Without a key the create joins the next group commit
    /// ([`super::group_commit`]); with one it runs in a unit of work of its own.
    pub async fn create(
        &self,
        input: NewTodo,
        context: &EventContext,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created, TodoError> {
        let transaction = transaction_span("create todo");
        let Some(idempotency) = idempotency.cloned() else {
            return async {
                let todo = new_todo(input);
                let data = todo.event_data(Vec::new(), None);
                let event =
                    NewEvent::new(TodoEventType::Created, &data, context, trace_context::current(), todo.created_at);
                Ok(Created::New(self.creates.create(todo, event).await?))
            }
            .instrument(transaction)
            .await;
        };
        let (todos, context) = (self.clone(), context.clone());
        run_to_completion(
            async move { todos.create_now(input, &context, Some(&idempotency)).await }.instrument(transaction),
        )
        .await
    }

    async fn create_now(
        &self,
        input: NewTodo,
        context: &EventContext,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created, TodoError> {
        let mut unit = self.outbox.begin(&self.db.writer).await?;
        if let Some(idempotency) = idempotency
            && let Some(stored) = store::find_idempotency_key(&mut unit, &idempotency.key).await?
        {
            return replay(stored, idempotency);
        }
        let todo = new_todo(input);
        store::insert_all(&mut unit, &[&todo]).await?;
        unit.append(TodoEventType::Created, &todo.event_data(Vec::new(), None), context, todo.created_at).await?;
        if let Some(idempotency) = idempotency
            && let Err(error) =
                store::insert_idempotency_key(&mut unit, &idempotency.key, &idempotency.request_hash, &todo).await
        {
            return self.lost_key_race(unit, error, idempotency).await;
        }
        unit.commit().await?;
        Ok(Created::New(todo))
    }

    /// Two requests with the same new key raced (PostgreSQL): the other one committed first.
    /// Ours is undone and answered with theirs.
    async fn lost_key_race(
        &self,
        unit: UnitOfWork,
        error: sqlx::Error,
        idempotency: &IdempotencyKey,
    ) -> Result<Created, TodoError> {
        if !error.as_database_error().is_some_and(|e| e.is_unique_violation()) {
            return Err(error.into());
        }
        unit.rollback().await?;
        let mut conn = self.db.writer.acquire().await?;
        match store::find_idempotency_key(&mut conn, &idempotency.key).await? {
            Some(stored) => replay(stored, idempotency),
            None => Err(error.into()),
        }
    }

    /// Runs a change to one todo: reads it, checks the precondition, lets `decide` compute the
    /// change, and writes the row and the event in one unit of work. The new version (= event
    /// sequence) is only written if the row is still at the version we read, so two writers can
    /// never produce the same sequence number or commit a todo's events out of order.
    pub async fn change(
        &self,
        id: Uuid,
        precondition: Option<Precondition>,
        context: EventContext,
        decide: impl Fn(&Todo, DateTime<Utc>) -> Decision + Send + 'static,
    ) -> Result<Outcome, TodoError> {
        let todos = self.clone();
        let transaction = transaction_span("change todo");
        run_to_completion(
            async move { todos.change_now(id, precondition.as_ref(), &context, decide).await }.instrument(transaction),
        )
        .await
    }

    async fn change_now(
        &self,
        id: Uuid,
        precondition: Option<&Precondition>,
        context: &EventContext,
        decide: impl Fn(&Todo, DateTime<Utc>) -> Decision,
    ) -> Result<Outcome, TodoError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let mut unit = self.outbox.begin(&self.db.writer).await?;
            let current =
                store::get_for_change(&mut unit, self.db.backend, id).await?.ok_or(TodoError::NotFound(id))?;
            if let Some(precondition) = precondition
                && !precondition.matches(current.version)
            {
                return Err(TodoError::PreconditionFailed { current_version: current.version });
            }
            let now = now();
            let (written, event_type, data, outcome) = match decide(&current, now) {
                Decision::Unchanged => return Ok(Outcome::Unchanged(current)),
                Decision::Update { mut next, event_type, changed_fields } => {
                    next.version = current.version + 1;
                    next.updated_at = now;
                    let written = store::update_if_version(&mut unit, &next, current.version).await?;
                    let data = next.event_data(changed_fields, None);
                    (written, event_type, data, Outcome::Changed(next))
                }
                Decision::Delete => {
                    let written = store::delete_if_version(&mut unit, id, current.version).await?;
                    // The deleted event carries the last state, one version on.
                    let mut last = current.clone();
                    last.version += 1;
                    last.updated_at = now;
                    (written, TodoEventType::Deleted, last.event_data(Vec::new(), Some(now)), Outcome::Deleted)
                }
            };
            if !written {
                // Lost a race with another writer; read again and re-decide (precondition
                // included).
                unit.rollback().await?;
                continue;
            }
            unit.append(event_type, &data, context, now).await?;
            unit.commit().await?;
            return Ok(outcome);
        }
        Err(TodoError::Conflict)
    }
}

/// The span of one unit of work, a child of the request's: the event it appends carries this
/// span's trace context (`crate::outbox::UnitOfWork::append`).
fn transaction_span(name: &'static str) -> tracing::Span {
    tracing::info_span!("transaction", otel.name = name)
}

fn replay(stored: StoredResponse, idempotency: &IdempotencyKey) -> Result<Created, TodoError> {
    if stored.request_hash != idempotency.request_hash {
        return Err(TodoError::IdempotencyKeyReused);
    }
    let todo = serde_json::from_str(&stored.body)
        .map_err(|e| sqlx::Error::Decode(format!("stored idempotent response: {e}").into()))?;
    Ok(Created::Replayed { status: stored.status, todo })
}
