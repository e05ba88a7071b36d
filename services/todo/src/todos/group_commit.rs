//! Group commit of creates: concurrent `POST /todos` are written by a writer task in one
//! transaction, each request answered once the commit that holds its todo and its event is
//! done. A 201 still means committed, with the event in the same commit.
//!
//! Why: a create on its own holds the database's writer for a `BEGIN`, three `INSERT`s and a
//! `COMMIT`, each a round trip (on SQLite a hop to sqlx's worker thread and back), and SQLite
//! has one writer, so creates queued behind each other's round trips. A batch pays the round
//! trips once: on SQLite `BEGIN`, one multi-row `INSERT` per table and `COMMIT`; on PostgreSQL
//! a single statement (the three `INSERT`s as one with data-modifying `WITH` clauses), which
//! commits on its own. No create waits for company: the writer takes whatever is queued when it
//! is free, so a lone create is written at once and batches grow only while a commit is under
//! way (docs/architecture.md, "Group commit").
//!
//! While this instance's relay takes them, the queue rows are written leased to it and the
//! events handed over after the commit, so it publishes them without claiming them
//! (`crate::outbox::handoff`).
//!
//! Creates with an `Idempotency-Key` are not batched: each looks its key up first, in its own
//! transaction (`super::commands`).

use service_kit::db::dialect::{Backend, PerRowCount, value_rows};
use service_kit::db::{Database, is_unavailable};
use service_kit::trace_context;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::error::TodoError;
use super::model::Todo;
use super::store;
use crate::outbox::handoff::{Handoff, Lease};
use crate::outbox::queue::{self, epoch_millis};
use crate::outbox::{self, NewEvent, Outbox, StoredEvent};
use uuid::Uuid;

/// The most creates one commit carries: bounds the statement (21 values a create) and how
/// long the first of them waits for the rest to be written.
const MAX_BATCH: usize = 64;

/// Creates waiting for a writer; past it, requests wait to queue (the API sheds load before).
const QUEUE_CAPACITY: usize = 1024;

/// The queue to the writer task. Cloning shares it; the writer stops once every clone is gone
/// and what was queued is written.
///
/// One writer on both backends: SQLite has a single writer connection anyway, and on
/// PostgreSQL a second writer halved the batches (and so doubled the statements per create)
/// for no more throughput on 2 cores; one statement per millisecond still carries 64 creates.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

#[derive(Debug)]
struct Pending {
    todo: Todo,
    event: NewEvent,
    answer: oneshot::Sender<Result<Todo, TodoError>>,
}

impl GroupCommit {
    /// Starts the writer task on the runtime.
    pub fn start(db: Database, outbox: Outbox) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_batches(receiver, db, outbox));
        Self { queue }
    }

    /// Writes `todo` and its event in the next commit and returns the todo once that commit is
    /// done. A caller that stops waiting does not stop the write.
    pub async fn create(&self, todo: Todo, event: NewEvent) -> Result<Todo, TodoError> {
        let (answer, answered) = oneshot::channel();
        self.queue.send(Pending { todo, event, answer }).await.map_err(|_| writers_gone())?;
        answered.await.map_err(|_| writers_gone())?
    }
}

/// Only a panic in the writer ends it while the queue is open; the database is as good as gone.
fn writers_gone() -> TodoError {
    TodoError::Database(sqlx::Error::PoolClosed)
}

/// Takes whatever is queued (waiting only when nothing is), commits it, and goes again: the
/// next batch gathers while this one commits.
async fn write_batches(mut receiver: mpsc::Receiver<Pending>, db: Database, outbox: Outbox) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut connection = WriterConnection::default();
    loop {
        let received = if connection.is_held() && receiver.is_empty() {
            match tokio::time::timeout(KEEP_CONNECTION_IDLE, receiver.recv_many(&mut batch, MAX_BATCH)).await {
                Ok(received) => received,
                Err(_idle) => {
                    // The pool gets it back: closing the pool waits for every connection.
                    connection.give_up();
                    receiver.recv_many(&mut batch, MAX_BATCH).await
                }
            }
        } else {
            receiver.recv_many(&mut batch, MAX_BATCH).await
        };
        if received == 0 {
            break;
        }
        commit_and_answer(&db, &outbox, &mut connection, &mut batch).await;
    }
}

/// How long the writer keeps its connection with no create waiting. Under load the queue is
/// empty for moments between commits (every request of the last batch is being answered), and
/// giving the connection back then sent the writer round the pool (see `WriterConnection`).
const KEEP_CONNECTION_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The connection the writer writes through on PostgreSQL, kept from one commit to the next.
///
/// Each batch size is a statement of its own (up to `MAX_BATCH`), which PostgreSQL plans
/// afresh on every connection for its first five executions before it settles on a generic
/// plan, and which sqlx prepares once per connection. Taken from the pool batch after batch,
/// the writer went round all of it: with 10 connections, 3,377 of 4,783 commits in a 10 s
/// run of `make bench-write` were planned (docs/performance.md). Kept while creates keep
/// coming; given up once none has come for [`KEEP_CONNECTION_IDLE`], and after a failure, in
/// case the connection is what failed.
#[derive(Default)]
struct WriterConnection(Option<PoolConnection<Any>>);

impl WriterConnection {
    async fn get(&mut self, pool: &AnyPool) -> Result<&mut AnyConnection, sqlx::Error> {
        let connection = match self.0.take() {
            Some(connection) => connection,
            None => pool.acquire().await?,
        };
        Ok(&mut **self.0.insert(connection))
    }

    fn is_held(&self) -> bool {
        self.0.is_some()
    }

    fn give_up(&mut self) {
        self.0 = None;
    }
}

/// Commits `batch` (emptying it) and answers each of its creates.
async fn commit_and_answer(
    db: &Database,
    outbox: &Outbox,
    connection: &mut WriterConnection,
    batch: &mut Vec<Pending>,
) {
    let span = batch_span(batch);
    let outcome = commit(db, outbox, connection, batch).instrument(span).await;
    match outcome {
        Ok(()) => {
            for pending in batch.drain(..) {
                let _ = pending.answer.send(Ok(pending.todo));
            }
        }
        // A statement refused one create's values (not expected: input is validated before).
        // Nothing was committed; written one by one, the others still commit and that one gets
        // its own error.
        Err(error) if batch.len() > 1 && !is_unavailable(&error) => {
            tracing::warn!(%error, creates = batch.len(), "a group commit failed; writing its creates one by one");
            for pending in batch.drain(..) {
                let one = std::slice::from_ref(&pending);
                let outcome = commit(db, outbox, connection, one).instrument(batch_span(one)).await;
                let _ = pending.answer.send(outcome.map(|()| pending.todo).map_err(TodoError::from));
            }
        }
        Err(error) if batch.len() == 1 => {
            let pending = batch.pop().expect("one create");
            let _ = pending.answer.send(Err(error.into()));
        }
        Err(error) => {
            let reason = error.to_string();
            for pending in batch.drain(..) {
                let _ = pending.answer.send(Err(TodoError::Unavailable(reason.clone())));
            }
        }
    }
}

/// Writes `batch` in one commit, its queue rows leased to this instance's relay when it takes
/// them, and hands the events over once committed (`crate::outbox::handoff`).
async fn commit(
    db: &Database,
    outbox: &Outbox,
    connection: &mut WriterConnection,
    batch: &[Pending],
) -> Result<(), sqlx::Error> {
    let handoff = outbox.handoff();
    let lease = handoff.lease(batch.len(), epoch_millis());
    if let Err(error) = write(db, outbox, connection, batch, lease.as_ref()).await {
        connection.give_up();
        // The commit may have gone through all the same (the connection lost on its way back):
        // its rows must not wait out a lease nobody will publish under.
        if let Some(lease) = &lease {
            release(db, lease, batch.iter().map(|pending| pending.event.event_id).collect()).await;
            handoff.ask_for_claim();
        }
        return Err(error);
    }
    let events = batch.iter().map(|pending| pending.event.to_stored()).collect();
    hand_over(db, &handoff, lease.as_ref(), events).await;
    Ok(())
}

async fn write(
    db: &Database,
    outbox: &Outbox,
    connection: &mut WriterConnection,
    batch: &[Pending],
    lease: Option<&Lease>,
) -> Result<(), sqlx::Error> {
    let todos: Vec<&Todo> = batch.iter().map(|pending| &pending.todo).collect();
    let events: Vec<&NewEvent> = batch.iter().map(|pending| &pending.event).collect();
    match db.backend {
        Backend::Postgres => {
            static STATEMENT: PerRowCount = PerRowCount::new(MAX_BATCH, postgres_statement);
            let sql = STATEMENT.get(batch.len());
            let query = todos.iter().fold(sqlx::query(&sql), |query, todo| store::bind_row(query, todo));
            let query = events.iter().fold(query, |query, event| outbox::bind_event(query, event));
            outbox::bind_lease(query, lease).execute(connection.get(&db.writer).await?).await?;
        }
        Backend::Sqlite => {
            let mut unit = outbox.begin(&db.writer).await?;
            store::insert_all(&mut unit, &todos).await?;
            unit.append_new_todos_events(&events, lease).await?;
            unit.commit().await?;
        }
    }
    Ok(())
}

/// Hands committed events over to the relay when they were written under `lease`, and wakes it.
async fn hand_over(db: &Database, handoff: &Handoff, lease: Option<&Lease>, events: Vec<StoredEvent>) {
    // New todos: none has an event in flight that a claim would have to follow.
    let Some(lease) = lease else {
        handoff.ask_for_claim();
        return;
    };
    if let Err(refused) = handoff.hand_over(lease, events) {
        // The relay stopped taking events after the lease was given (the sidecar became
        // unreachable, or shutdown).
        release(db, lease, refused.iter().map(|event| event.event_id).collect()).await;
        handoff.ask_for_claim();
    }
}

/// Releases rows written under `lease` that will not be handed over, for a claim to find; should
/// that fail, they are claimable once the lease runs out.
async fn release(db: &Database, lease: &Lease, event_ids: Vec<Uuid>) {
    if let Err(error) = queue::release(db, &lease.owner, &event_ids).await {
        tracing::warn!(%error, events = event_ids.len(), "could not release new events' leases; they wait them out");
    }
}

/// `creates` todos, their events and their queue rows in one statement: the queue rows are
/// the events' keys as inserted, and the lease (the last two parameters: owner, end).
fn postgres_statement(creates: usize) -> String {
    let todo_values = value_rows(1, store::INSERT_COLUMN_COUNT, creates);
    let first_event = 1 + store::INSERT_COLUMN_COUNT * creates;
    let event_values = value_rows(first_event, outbox::INSERT_COLUMN_COUNT, creates);
    let lease = first_event + outbox::INSERT_COLUMN_COUNT * creates;
    format!(
        "WITH new_todos AS (INSERT INTO todos ({}) VALUES {todo_values}), \
              new_events AS (INSERT INTO outbox_events ({}) VALUES {event_values} RETURNING {queue}) \
         INSERT INTO outbox_queue ({queue}, {}) SELECT {queue}, ${lease}, ${} FROM new_events",
        store::INSERT_COLUMNS,
        outbox::INSERT_COLUMNS,
        outbox::LEASE_COLUMNS,
        lease + 1,
        queue = outbox::QUEUE_COLUMNS,
    )
}

/// The span of one commit. It serves many requests, so it is a trace of its own, linked to the
/// span of each request it carries (each event keeps its request's trace).
fn batch_span(batch: &[Pending]) -> tracing::Span {
    let span = tracing::info_span!(parent: None, "group commit", otel.name = "commit creates", creates = batch.len());
    trace_context::link_each(
        &span,
        batch.iter().filter_map(|pending| Some(pending.event.trace.as_ref()?.traceparent.as_str())),
    );
    span
}

#[cfg(test)]
mod tests {
    use service_kit::on_both_backends;
    use service_kit::testing::TestDb;
    use sqlx::Row;

    use super::*;
    use crate::outbox::EventContext;
    use crate::todos::model::{NewTodo, new_todo};

    on_both_backends!(
        one_commit_writes_every_queued_create,
        a_refused_create_fails_alone,
        creates_are_leased_to_the_relay_and_handed_over,
        creates_given_back_by_a_stopped_relay_are_released,
        an_idle_writer_gives_its_connection_back
    );

    #[test]
    fn the_postgres_statement_numbers_the_events_after_the_todos() {
        let sql = postgres_statement(2);
        assert!(sql.contains("VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10), ($11,"), "{sql}");
        assert!(sql.contains("($32, $33, $34, $35, $36, $37, $38, $39, $40, $41, $42) RETURNING"), "{sql}");
        assert!(sql.ends_with("SELECT event_id, todo_id, seq, $43, $44 FROM new_events"), "{sql}");
    }

    fn create(title: &str) -> (Pending, oneshot::Receiver<Result<Todo, TodoError>>) {
        let todo = new_todo(NewTodo { user_id: "u".into(), title: title.into(), description: None, due_at: None });
        let context = EventContext { correlation_id: format!("corr-{title}"), causation_id: None };
        let event = NewEvent::new(
            dapr_events::TodoEventType::Created,
            &todo.event_data(Vec::new(), None),
            &context,
            None,
            todo.created_at,
        );
        let (answer, answered) = oneshot::channel();
        (Pending { todo, event, answer }, answered)
    }

    /// Queues `titles` before a writer runs, so its first batch holds them all, then runs one
    /// writer until the queue is drained; the answers in order.
    async fn write_as_one_batch(db: &Database, titles: &[&str]) -> Vec<Result<Todo, TodoError>> {
        write_as_one_batch_to(db, Outbox::new(), titles).await
    }

    async fn write_as_one_batch_to(db: &Database, outbox: Outbox, titles: &[&str]) -> Vec<Result<Todo, TodoError>> {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let mut answers = Vec::new();
        for title in titles {
            let (pending, answered) = create(title);
            queue.send(pending).await.unwrap();
            answers.push(answered);
        }
        drop(queue);
        write_batches(receiver, db.clone(), outbox).await;
        let mut outcomes = Vec::new();
        for answered in answers {
            outcomes.push(answered.await.expect("every create is answered"));
        }
        outcomes
    }

    async fn an_idle_writer_gives_its_connection_back(backend: Backend) {
        let test_db = TestDb::new(backend).await;
        let db = test_db.connect(crate::startup::MIGRATIONS).await;
        let creates = GroupCommit::start(db.clone(), Outbox::new());
        for title in ["first", "second", "third"] {
            let (pending, _) = create(title);
            creates.create(pending.todo, pending.event).await.expect("committed");
        }
        // The writer waits for the next create, `creates` still open; closing the pool waits
        // for every connection to come back.
        tokio::time::timeout(std::time::Duration::from_secs(10), db.close())
            .await
            .expect("the pool closes: an idle writer holds no connection");
        drop(creates);
    }

    async fn count(db: &Database, sql: &str) -> i64 {
        sqlx::query(sql).fetch_one(&db.reader).await.unwrap().try_get(0).unwrap()
    }

    async fn one_commit_writes_every_queued_create(backend: Backend) {
        let test_db = TestDb::new(backend).await;
        let db = test_db.connect(crate::startup::MIGRATIONS).await;
        let titles: Vec<String> = (0..MAX_BATCH + 3).map(|i| format!("todo {i}")).collect();
        let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
        let outcomes = write_as_one_batch(&db, &titles).await;
        for (title, outcome) in titles.iter().zip(&outcomes) {
            let todo = outcome.as_ref().unwrap_or_else(|e| panic!("{title}: {e}"));
            assert_eq!(todo.title, *title);
            let row = sqlx::query("SELECT e.correlation_id, q.seq FROM outbox_events e JOIN outbox_queue q USING (event_id) WHERE e.todo_id = $1")
                .bind(todo.id.to_string())
                .fetch_one(&db.reader)
                .await
                .unwrap_or_else(|e| panic!("{title}: its event and queue row: {e}"));
            assert_eq!(row.try_get::<String, _>(0).unwrap(), format!("corr-{title}"));
            assert_eq!(row.try_get::<i64, _>(1).unwrap(), 1);
        }
        let created = titles.len() as i64;
        assert_eq!(count(&db, "SELECT COUNT(*) FROM todos").await, created);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox_events").await, created);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox_queue").await, created);
        db.close().await;
    }

    /// Every queue row's lease owner and end, by event id.
    async fn leases(db: &Database) -> std::collections::HashMap<String, (Option<String>, Option<i64>)> {
        let rows = sqlx::query("SELECT event_id, lease_owner, lease_expires_at FROM outbox_queue")
            .fetch_all(&db.reader)
            .await
            .unwrap();
        rows.iter().map(|row| (row.get(0), (row.get(1), row.get(2)))).collect()
    }

    async fn creates_are_leased_to_the_relay_and_handed_over(backend: Backend) {
        let test_db = TestDb::new(backend).await;
        let db = test_db.connect(crate::startup::MIGRATIONS).await;
        let outbox = Outbox::new();
        let lease = std::time::Duration::from_secs(30);
        outbox.handoff().open("relay-1", lease, 100);
        let before = epoch_millis();
        let outcomes = write_as_one_batch_to(&db, outbox.clone(), &["first", "second", "third"]).await;
        let created: Vec<Uuid> = outcomes.iter().map(|outcome| outcome.as_ref().unwrap().id).collect();
        let handed = outbox.handoff().take(100);
        let handed_todos: Vec<Uuid> = handed.iter().map(|h| h.event.todo_id).collect();
        assert_eq!(handed_todos, created, "every create's event is handed over, in order");
        let leases = leases(&db).await;
        assert_eq!(leases.len(), 3);
        for handed in &handed {
            let history = crate::outbox::history(&db.reader, handed.event.todo_id).await.unwrap();
            assert_eq!(history.len(), 1);
            let stored = &history[0];
            assert_eq!(
                (stored.event_id, &stored.payload, &stored.topic, &stored.correlation_id, stored.seq),
                (handed.event.event_id, &handed.event.payload, &handed.event.topic, &handed.event.correlation_id, 1),
                "what is handed over is what was stored"
            );
            let (owner, until) = &leases[&handed.event.event_id.to_string()];
            assert_eq!(owner.as_deref(), Some("relay-1"));
            assert_eq!(*until, Some(handed.lease_until_ms));
            assert!(handed.lease_until_ms >= before + lease.as_millis() as i64);
        }
        assert!(!outbox.handoff().take_claimable(), "nothing needs a claim");
        db.close().await;
    }

    async fn creates_given_back_by_a_stopped_relay_are_released(backend: Backend) {
        let test_db = TestDb::new(backend).await;
        let db = test_db.connect(crate::startup::MIGRATIONS).await;
        let (outbox, lease) = (Outbox::new(), std::time::Duration::from_secs(30));
        outbox.handoff().open("relay-1", lease, 100);
        // The relay stops between the lease and the hand-over.
        let handoff = outbox.handoff();
        let lease_given = handoff.lease(1, epoch_millis()).unwrap();
        let (pending, _answered) = create("raced");
        let batch = [pending];
        write(&db, &outbox, &mut WriterConnection::default(), &batch, Some(&lease_given)).await.unwrap();
        assert_eq!(leases(&db).await.values().next().unwrap().0.as_deref(), Some("relay-1"), "written leased");
        handoff.close();
        hand_over(&db, &handoff, Some(&lease_given), vec![batch[0].event.to_stored()]).await;
        assert_eq!(leases(&db).await.values().next().unwrap(), &(None, None), "released for a claim");
        assert!(handoff.take_claimable(), "the relay is told to claim");
        assert!(handoff.take(10).is_empty());
        db.close().await;
    }

    async fn a_refused_create_fails_alone(backend: Backend) {
        let test_db = TestDb::new(backend).await;
        let db = test_db.connect(crate::startup::MIGRATIONS).await;
        let refuse_poison: &[&str] = match backend {
            Backend::Sqlite => &["CREATE TRIGGER refuse_poison BEFORE INSERT ON outbox_events \
                WHEN NEW.payload LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"],
            Backend::Postgres => &[
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON outbox_events FOR EACH ROW \
                 WHEN (NEW.payload LIKE '%poison%') EXECUTE FUNCTION refuse_poison()",
            ],
        };
        for statement in refuse_poison {
            sqlx::query(statement).execute(&db.writer).await.unwrap();
        }
        let outcomes = write_as_one_batch(&db, &["first", "poison", "third", "fourth"]).await;
        let failure = outcomes[1].as_ref().expect_err("the refused create fails");
        assert!(matches!(failure, TodoError::Database(e) if e.to_string().contains("injected failure")), "{failure}");
        let mut committed = Vec::new();
        for outcome in [&outcomes[0], &outcomes[2], &outcomes[3]] {
            committed.push(outcome.as_ref().expect("the others commit").id);
        }
        for id in committed {
            let events = count(&db, &format!("SELECT COUNT(*) FROM outbox_events WHERE todo_id = '{id}'")).await;
            assert_eq!(events, 1, "{id} has its event");
        }
        assert_eq!(count(&db, "SELECT COUNT(*) FROM todos").await, 3, "the refused todo was not written");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox_queue").await, 3);
        db.close().await;
    }
}
