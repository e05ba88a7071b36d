//! The transactional outbox: one event row per change, written atomically with the change.

use serde_json::{Value, json};
use service_kit::db::dialect::Backend as DbBackend;
use service_kit::trace_context::span_context;
use sqlx::Row;

use crate::helpers::{Backend, DEADLINE, SendJson, TestApp, TestDb, eventually};
use crate::on_both_backends;

on_both_backends!(
    every_change_writes_one_event_row_with_its_context,
    a_failed_event_write_rolls_back_the_whole_change,
    published_events_leave_the_queue_and_stay_in_the_history,
    upgrading_keeps_when_events_were_published,
    an_event_queued_again_is_recorded_with_its_latest_publish,
);

async fn event_rows(app: &TestApp, todo_id: &str) -> Vec<sqlx::any::AnyRow> {
    sqlx::query("SELECT * FROM outbox_events WHERE todo_id = $1 ORDER BY seq")
        .bind(todo_id)
        .fetch_all(&app.db.reader)
        .await
        .unwrap()
}

async fn every_change_writes_one_event_row_with_its_context(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let created: Value = app
        .http
        .post(app.url("/todos"))
        .header("x-correlation-id", "corr-1")
        .header("traceparent", traceparent)
        .json(&json!({"userId": "u", "title": "t"}))
        .send_json()
        .await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/todos/{id}");
    let patched = app
        .http
        .patch(app.url(&path))
        .header("x-request-id", "req-2")
        .header("x-causation-id", "evt-cause")
        .json(&json!({"title": "t2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.headers()["x-correlation-id"], "req-2");
    app.post_empty(&format!("{path}/complete")).await;
    app.post_empty(&format!("{path}/complete")).await; // no-op
    app.post_empty(&format!("{path}/reopen")).await;
    app.http.delete(app.url(&path)).send().await.unwrap();

    let rows = event_rows(&app, id).await;
    let summary: Vec<(i64, String, String)> = rows
        .iter()
        .map(|r| (r.get::<i64, _>("seq"), r.get::<String, _>("event_type"), r.get::<String, _>("topic")))
        .collect();
    let expected: Vec<(i64, String, String)> = [
        "todos.task.created",
        "todos.task.updated",
        "todos.task.completed",
        "todos.task.reopened",
        "todos.task.deleted",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| (i as i64 + 1, t.to_string(), t.to_string()))
    .collect();
    assert_eq!(summary, expected, "one row per change, seq = version, topic = type");

    let first = &rows[0];
    assert_eq!(first.get::<String, _>("correlation_id"), "corr-1");
    // The row carries the span that wrote it: in the caller's trace, a span of ours.
    let written = span_context(&first.get::<Option<String>, _>("traceparent").unwrap()).expect("a valid traceparent");
    assert_eq!(written.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736", "the caller's trace");
    assert_ne!(written.span_id().to_string(), "00f067aa0ba902b7", "our own span, not the caller's");
    assert_eq!(first.get::<Option<String>, _>("causation_id"), None);
    let second = &rows[1];
    assert_eq!(second.get::<String, _>("correlation_id"), "req-2");
    assert_eq!(second.get::<Option<String>, _>("causation_id").as_deref(), Some("evt-cause"));
    let generated = rows[2].get::<String, _>("correlation_id");
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "a correlation id is generated when none is sent");
    let started = span_context(&rows[2].get::<Option<String>, _>("traceparent").unwrap())
        .expect("a trace is started when none is sent");
    assert_ne!(started.trace_id(), written.trace_id());
    let ids: std::collections::HashSet<String> = rows.iter().map(|r| r.get::<String, _>("event_id")).collect();
    assert_eq!(ids.len(), 5);
}

/// Makes every insert of an event of `event_type` fail inside the database, after the todo row
/// of the same transaction was written.
async fn fail_event_inserts(app: &TestApp, event_type: &str) {
    let db = app.test_db.connect(todo::startup::MIGRATIONS).await;
    let statements: Vec<String> = match app.test_db.backend {
        Backend::Sqlite => vec![format!(
            "CREATE TRIGGER reject_event BEFORE INSERT ON outbox_events WHEN NEW.event_type = '{event_type}' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )],
        Backend::Postgres => vec![
            "CREATE FUNCTION reject_event() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
                .to_owned(),
            format!(
                "CREATE TRIGGER reject_event BEFORE INSERT ON outbox_events FOR EACH ROW \
                 WHEN (NEW.event_type = '{event_type}') EXECUTE FUNCTION reject_event()"
            ),
        ],
    };
    for statement in statements {
        sqlx::query(&statement).execute(&db.writer).await.unwrap();
    }
    db.close().await;
}

async fn a_failed_event_write_rolls_back_the_whole_change(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let todo = app.create_todo("u", "before").await;
    let id = todo["id"].as_str().unwrap();
    fail_event_inserts(&app, "todos.task.updated").await;

    let response = app.patch_json(&format!("/todos/{id}"), &json!({"title": "after"})).await;
    assert_eq!(response.status(), 500, "the injected database failure surfaces as a server error");
    let current: Value = app.get(&format!("/todos/{id}")).await.json().await.unwrap();
    assert_eq!(
        (current["title"].as_str(), current["version"].as_i64()),
        (Some("before"), Some(1)),
        "change rolled back"
    );
    assert_eq!(event_rows(&app, id).await.len(), 1, "no event row for the rolled-back change");

    // Other changes still work, and keep a gap-free sequence.
    let completed = app.post_empty(&format!("/todos/{id}/complete")).await;
    assert_eq!(completed.status(), 200);
    let seqs: Vec<i64> = event_rows(&app, id).await.iter().map(|r| r.get("seq")).collect();
    assert_eq!(seqs, [1, 2]);
}

async fn published_events_leave_the_queue_and_stay_in_the_history(backend: Backend) {
    let (app, sidecar) = TestApp::spawn(backend).await;
    let todo = app.create_todo("u", "t").await;
    let id = todo["id"].as_str().unwrap();
    app.post_empty(&format!("/todos/{id}/complete")).await;
    sidecar.wait_for_accepted(2).await;
    eventually("the queue to drain", DEADLINE, || async {
        (todo::outbox::queue::pending_count(&app.db.reader).await.unwrap() == 0).then_some(())
    })
    .await;
    let rows = event_rows(&app, id).await;
    assert_eq!(rows.len(), 2, "the history keeps every event");
    let published: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox_published WHERE event_id IN (SELECT event_id FROM outbox_events WHERE todo_id = $1)",
    )
    .bind(id)
    .fetch_one(&app.db.reader)
    .await
    .unwrap();
    assert_eq!(published, 2, "each published event has its time recorded");

    // The claim reads the queue alone, so the history's size cannot slow it down.
    let db = &app.db;
    let explain = match db.backend {
        DbBackend::Postgres => "EXPLAIN ",
        DbBackend::Sqlite => "EXPLAIN QUERY PLAN ",
    };
    let plan_rows = sqlx::query(&format!("{explain}{}", todo::outbox::queue::claim_sql(db.backend)))
        .bind(0_i64)
        .bind(100_i64)
        .bind("owner")
        .bind(0_i64)
        .fetch_all(&db.reader)
        .await
        .unwrap();
    let plan: Vec<String> = plan_rows
        .iter()
        .map(|row| match db.backend {
            DbBackend::Postgres => row.get::<String, _>(0),
            DbBackend::Sqlite => row.get::<String, _>("detail"),
        })
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("outbox_queue"), "{plan}");
    assert!(!plan.contains("outbox_events"), "the claim must not read the history:\n{plan}");
}

/// PostgreSQL shapes a join by its statistics. Once a vacuum has seen the queue empty (as
/// autovacuum does between bursts) it believes the queue holds one row, and a claim written as
/// an anti-join of the queue with itself compared every queued event with every other: a
/// backlog after an outage then took seconds per claim. The claim must probe the
/// `(todo_id, seq)` index once per event whatever the statistics say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_after_the_queue_was_vacuumed_empty_is_claimed_by_index() {
    let test_db = TestDb::new(Backend::Postgres).await;
    let db = test_db.connect(todo::startup::MIGRATIONS).await;
    let fill = |prefix: &'static str, events: i64, todos: i64| {
        sqlx::query(
            "INSERT INTO outbox_queue (event_id, todo_id, seq) \
             SELECT $1 || lpad(n::text, 10, '0'), 'todo-' || (n % $3), n FROM generate_series(1, $2) AS n",
        )
        .bind(prefix)
        .bind(events)
        .bind(todos)
    };
    fill("gone-", 20_000, 20_000).execute(&db.writer).await.unwrap();
    sqlx::query("DELETE FROM outbox_queue").execute(&db.writer).await.unwrap();
    sqlx::raw_sql("VACUUM (TRUNCATE false) outbox_queue").execute(&db.writer).await.unwrap();
    fill("backlog-", 5_000, 500).execute(&db.writer).await.unwrap();

    let plan_rows = sqlx::query(&format!("EXPLAIN {}", todo::outbox::queue::claim_sql(db.backend)))
        .bind(i64::MAX)
        .bind(1000_i64)
        .bind("owner")
        .bind(i64::MAX)
        .fetch_all(&db.reader)
        .await
        .unwrap();
    let plan = plan_rows.iter().map(|row| row.get::<String, _>(0)).collect::<Vec<_>>().join("\n");
    assert!(!plan.contains("Anti Join"), "the claim joins the queue with itself:\n{plan}");
    assert!(plan.contains("outbox_queue_todo_id_seq_key"), "the head check does not use its index:\n{plan}");
    db.close().await;
}

/// Marking a round published removes its events from the queue by id and records their time in
/// `outbox_published`. PostgreSQL estimates a subquery of ids at 100 rows whatever is bound, and
/// against a queue its statistics say is small it hashed them and scanned the whole queue (dead
/// rows included) for every round. Each id must be one index probe, and the history untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_published_probes_the_queue_by_id_and_leaves_the_history_alone() {
    let test_db = TestDb::new(Backend::Postgres).await;
    let db = test_db.connect(todo::startup::MIGRATIONS).await;
    sqlx::raw_sql(
        "INSERT INTO outbox_events (event_id, todo_id, seq, event_type, topic, payload, created_at, correlation_id) \
         SELECT 'event-' || lpad(n::text, 10, '0'), 'todo-' || (n % 500), n, 'todo.created', 'todos', '{}', 'now', 'c' \
         FROM generate_series(1, 20000) AS n; \
         INSERT INTO outbox_queue (event_id, todo_id, seq) SELECT event_id, todo_id, seq FROM outbox_events WHERE seq > 19000; \
         ANALYZE outbox_events, outbox_queue",
    )
    .execute(&db.writer)
    .await
    .unwrap();
    let ids: Vec<String> = (19_001..19_017).map(|n| format!("event-{n:010}")).collect();
    let plan_rows = sqlx::query(&format!("EXPLAIN {}", todo::outbox::queue::postgres_mark_published_sql()))
        .bind("2026-12-02T00:00:00.000000Z")
        .bind(service_kit::db::dialect::json_array(&ids))
        .fetch_all(&db.reader)
        .await
        .unwrap();
    let plan = plan_rows.iter().map(|row| row.get::<String, _>(0)).collect::<Vec<_>>().join("\n");
    assert!(!plan.contains("Seq Scan"), "marking published scans a table:\n{plan}");
    assert!(plan.contains("outbox_queue_pkey") && plan.contains("Insert on outbox_published"), "{plan}");
    assert!(!plan.contains("outbox_events"), "marking published touches the history:\n{plan}");
    db.close().await;
}

/// Every event passes through the queue, so on PostgreSQL it fills with dead rows much faster
/// than autovacuum clears them, and each claim scans them; the relay vacuums it as events leave
/// (`outbox::queue::vacuum`). Manual vacuums are counted apart from autovacuum's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_vacuums_the_queue_as_events_leave_it() {
    use futures::StreamExt;
    let (app, sidecar) = TestApp::spawn(Backend::Postgres).await;
    let events = 2_500;
    futures::stream::iter(0..events)
        .map(|i| {
            let app = &app;
            async move { app.create_todo("u", &format!("t{i}")).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    sidecar.wait_for_accepted(events).await;
    eventually("a vacuum of outbox_queue", DEADLINE, || async {
        let vacuums: i64 =
            sqlx::query_scalar("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox_queue'")
                .fetch_one(&app.db.reader)
                .await
                .unwrap();
        (vacuums > 0).then_some(())
    })
    .await;
}

/// The migration that moved publication times out of `outbox_events.published_at` into
/// `outbox_published` keeps the times of events published before it, and leaves unpublished
/// ones unpublished; the history still shows what the previous release stamps meanwhile. The database is first migrated with the migrations before it, copied from
/// this crate's migrations directory.
async fn upgrading_keeps_when_events_were_published(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let before = service_kit::testing::TempDir::new();
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(match backend {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
    });
    let mut copied = 0;
    for file in std::fs::read_dir(&directory).unwrap() {
        let path = file.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with("_outbox_published.sql") {
            std::fs::copy(&path, before.path.join(name)).unwrap();
            copied += 1;
        }
    }
    assert!(copied >= 2, "the migrations before the upgrade are in {}", directory.display());
    let earlier: &'static sqlx::migrate::Migrator =
        Box::leak(Box::new(sqlx::migrate::Migrator::new(before.path.as_path()).await.unwrap()));
    let old = test_db.connect(service_kit::db::Migrations { sqlite: &[], postgres: &[] }).await;
    earlier.run(&old.writer).await.unwrap();
    let (published, pending) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (event_id, seq, published_at) in [(published, 1, Some("2026-12-01T10:00:00.000000Z")), (pending, 2, None)] {
        sqlx::query(
            "INSERT INTO outbox_events (event_id, todo_id, seq, event_type, topic, payload, created_at, correlation_id, published_at) \
             VALUES ($1, '0193a6f0-0000-7000-8000-000000000001', $2, 'todo.created', 'todos', '{}', '2026-12-01T09:59:59.000000Z', 'c', $3)",
        )
        .bind(event_id.to_string())
        .bind(seq)
        .bind(published_at)
        .execute(&old.writer)
        .await
        .unwrap();
    }
    old.close().await;

    let db = test_db.connect(todo::startup::MIGRATIONS).await;
    let recorded: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, published_at FROM outbox_published").fetch_all(&db.reader).await.unwrap();
    assert_eq!(recorded, [(published.to_string(), "2026-12-01T10:00:00.000000Z".to_owned())]);
    let todo_id = "0193a6f0-0000-7000-8000-000000000001".parse().unwrap();
    let times = |history: Vec<todo::outbox::StoredEvent>| {
        history.iter().map(|event| (event.event_id, event.published_at.map(|t| t.to_rfc3339()))).collect::<Vec<_>>()
    };
    let history = todo::outbox::history(&db.reader, todo_id).await.unwrap();
    assert_eq!(times(history), [(published, Some("2026-12-01T10:00:00+00:00".to_owned())), (pending, None)]);

    // A replica of the previous release, still running during a rolling update, stamps the
    // history's own column.
    sqlx::query("UPDATE outbox_events SET published_at = '2026-12-01T10:00:05.000000Z' WHERE event_id = $1")
        .bind(pending.to_string())
        .execute(&db.writer)
        .await
        .unwrap();
    let history = todo::outbox::history(&db.reader, todo_id).await.unwrap();
    assert_eq!(
        times(history),
        [
            (published, Some("2026-12-01T10:00:00+00:00".to_owned())),
            (pending, Some("2026-12-01T10:00:05+00:00".to_owned()))
        ]
    );
    db.close().await;
}

/// An operator may queue published events again (docs/operations.md, "publish a todo's events
/// again"): marking one published a second time is no conflict, and its time is the latest.
async fn an_event_queued_again_is_recorded_with_its_latest_publish(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = test_db.connect(todo::startup::MIGRATIONS).await;
    let (event_id, todo_id) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    sqlx::query(
        "INSERT INTO outbox_events (event_id, todo_id, seq, event_type, topic, payload, created_at, correlation_id) \
         VALUES ($1, $2, 1, 'todo.created', 'todos', '{}', '2026-12-01T09:59:59.000000Z', 'c')",
    )
    .bind(event_id.to_string())
    .bind(todo_id.to_string())
    .execute(&db.writer)
    .await
    .unwrap();
    let first: chrono::DateTime<chrono::Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
    let second: chrono::DateTime<chrono::Utc> = "2026-12-02T10:00:00Z".parse().unwrap();
    for published_at in [first, second] {
        sqlx::query("INSERT INTO outbox_queue (event_id, todo_id, seq) VALUES ($1, $2, 1)")
            .bind(event_id.to_string())
            .bind(todo_id.to_string())
            .execute(&db.writer)
            .await
            .unwrap();
        todo::outbox::queue::mark_published(&db, &[event_id], published_at).await.unwrap();
        assert_eq!(todo::outbox::queue::pending_count(&db.reader).await.unwrap(), 0, "marking dequeues");
    }
    let history = todo::outbox::history(&db.reader, todo_id).await.unwrap();
    assert_eq!(history.iter().map(|event| event.published_at).collect::<Vec<_>>(), [Some(second)]);
    db.close().await;
}
