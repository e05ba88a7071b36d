//! Does finding pending events stay fast when the outbox holds a million published rows?
//!
//! Run with `cargo bench -p todo --bench relay_claim`. Published rows are never deleted (they are
//! the todos' audit trail), so the relay's claim query must not get slower as they accumulate;
//! the claim reads only `outbox_queue` (one row per unpublished event) to make that true, even
//! when the planner's statistics predate a backlog. For SQLite (a temp file) and PostgreSQL (fresh databases on `BENCH_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`, dropped at the end) it times
//! `outbox::queue::claim` of 100 events, then marks them published, 10 rounds, on:
//!
//! - a database with `BENCH_PUBLISHED_ROWS` (default 1,000,000) published rows, analysed, then
//!   `BENCH_PENDING_ROWS` (default 1,000) pending ones: the statistics predate the queue, as
//!   they usually do in production, where the queue is nearly always empty;
//! - the same database once more, with fresh pending rows and statistics taken while they are
//!   pending (this is where the planner's choice can differ);
//! - an otherwise identical database with the pending rows only,
//!
//! and prints the query plans of the claim.

#[path = "support/scratch.rs"]
mod scratch;

use scratch::{Scratch, env_number as number, redact};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dapr_events::TodoEventType;
use service_kit::db::Database;
use service_kit::db::dialect::Backend;
use sqlx::Row;

const CLAIM_LIMIT: i64 = 100;
const ROUNDS: usize = 10;
const LEASE_MS: i64 = 30_000;
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Published rows are spread over todos this many events each, as a todo's history would be.
const EVENTS_PER_TODO: usize = 4;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    println!(
        "relay_claim: claim {CLAIM_LIMIT} x {ROUNDS} rounds, {} pending events, {} published rows vs none",
        config.pending_rows, config.published_rows
    );
    let mut results = Vec::new();

    let mut sqlite = Scratch::sqlite()?;
    let result = bench_backend(&mut sqlite, &config, &mut results).await;
    sqlite.cleanup().await;
    result.context("SQLite benchmark")?;

    match Scratch::postgres(&config.postgres_url).await {
        Ok(mut postgres) => {
            let result = bench_backend(&mut postgres, &config, &mut results).await;
            postgres.cleanup().await;
            result.context("PostgreSQL benchmark")?;
        }
        Err(error) => println!("\nPostgreSQL skipped: {} is unreachable ({error:#})", redact(&config.postgres_url)),
    }

    print_summary(&results);
    Ok(())
}

struct Config {
    published_rows: usize,
    pending_rows: usize,
    postgres_url: String,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            published_rows: number("BENCH_PUBLISHED_ROWS", 1_000_000)?,
            pending_rows: number("BENCH_PENDING_ROWS", 1_000)?,
            postgres_url: std::env::var("BENCH_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into()),
        })
    }
}

/// One timed series of claims.
struct Scenario {
    backend: &'static str,
    published: usize,
    /// Pending rows when the first claim ran.
    pending: i64,
    statistics: &'static str,
    claims: Claims,
}

async fn bench_backend(scratch: &mut Scratch, config: &Config, results: &mut Vec<Scenario>) -> anyhow::Result<()> {
    let backend = scratch.name();
    println!("\n== {backend} ==");

    let full =
        todo::startup::connect_database(&scratch.fresh_database("full").await?, 10).await.context("connecting")?;
    insert_published(&full, config.published_rows).await?;
    analyze(&full).await?;
    insert_pending(&full, config.pending_rows).await?;
    results.push(run_scenario(&full, backend, config.published_rows, "before the pending rows").await?);

    // The same table with a queue the statistics know about.
    insert_pending(&full, config.pending_rows).await?;
    analyze(&full).await?;
    results.push(run_scenario(&full, backend, config.published_rows, "with the pending rows").await?);
    full.close().await;

    let empty =
        todo::startup::connect_database(&scratch.fresh_database("empty").await?, 10).await.context("connecting")?;
    analyze(&empty).await?;
    insert_pending(&empty, config.pending_rows).await?;
    results.push(run_scenario(&empty, backend, 0, "before the pending rows").await?);
    empty.close().await;
    Ok(())
}

/// Prints the plans, then times the claims.
async fn run_scenario(
    db: &Database,
    backend: &'static str,
    published: usize,
    statistics: &'static str,
) -> anyhow::Result<Scenario> {
    let pending = todo::outbox::queue::pending_count(&db.reader).await?;
    println!("\n-- {backend}: {published} published rows, {pending} pending, statistics taken {statistics}");
    print_plans(db).await?;
    let claims = time_claims(db).await?;
    println!("{claims}");
    Ok(Scenario { backend, published, pending, statistics, claims })
}

fn print_summary(results: &[Scenario]) {
    println!(
        "\n{:<8} | {:>9} | {:>7} | {:<23} | {:>8} | {:>8} | {:>8} | {:>12}",
        "backend", "published", "pending", "statistics taken", "mean ms", "min ms", "max ms", "mark 100 ms"
    );
    println!("{}", "-".repeat(104));
    for r in results {
        println!(
            "{:<8} | {:>9} | {:>7} | {:<23} | {:>8.3} | {:>8.3} | {:>8.3} | {:>12.1}",
            r.backend,
            r.published,
            r.pending,
            r.statistics,
            ms(r.claims.mean()),
            ms(r.claims.min()),
            ms(r.claims.max()),
            ms(r.claims.mark_mean())
        );
    }
    println!(
        "(mean/min/max: one `outbox::queue::claim` of {CLAIM_LIMIT}, {ROUNDS} rounds; mark: one `mark_published` of the \
         {CLAIM_LIMIT} after each claim, mean per round)"
    );
}

// ---------------------------------------------------------------------------------------------
// Filling the outbox
// ---------------------------------------------------------------------------------------------

/// `rows` published rows in one statement.
async fn insert_published(db: &Database, rows: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    sqlx::query(&bulk_insert_published(db.backend, rows))
        .execute(&db.writer)
        .await
        .context("bulk-inserting published rows")?;
    // Published means recorded in outbox_published (migrations/postgres/0004_outbox_published.sql).
    sqlx::query("INSERT INTO outbox_published (event_id, published_at) SELECT event_id, '2024-01-01T00:00:01.000000Z' FROM outbox_events")
        .execute(&db.writer)
        .await
        .context("recording them published")?;
    println!("inserted {rows} published rows in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn analyze(db: &Database) -> anyhow::Result<()> {
    let statements: &[&str] = match db.backend {
        Backend::Postgres => &["ANALYZE outbox_events", "ANALYZE outbox_queue"],
        Backend::Sqlite => &["ANALYZE"],
    };
    for statement in statements {
        sqlx::query(statement).execute(&db.writer).await.context("ANALYZE")?;
    }
    Ok(())
}

/// One `INSERT … SELECT` over a generated series. Ids are UUID-shaped text built from the row
/// number (`0000002a-0000-7000-8000-00000000002a`): distinct, and all below the real UUIDv7
/// ids of the pending rows, as older (published) events are in production. That is the worst
/// case for a claim that walks the primary key in `event_id` order.
fn bulk_insert_published(backend: Backend, rows: usize) -> String {
    let columns = "event_id, todo_id, seq, event_type, topic, payload, created_at, traceparent, \
                   correlation_id";
    // Row i is event `seq` of todo `k`: EVENTS_PER_TODO events per todo, so (todo_id, seq) is unique.
    let numbered = format!(
        "SELECT i, (i - 1) / {EVENTS_PER_TODO} + 1 AS k, (i - 1) % {EVENTS_PER_TODO} + 1 AS seq FROM {}",
        match backend {
            Backend::Postgres => format!("generate_series(1, {rows}) AS g(i)"),
            Backend::Sqlite => "n".to_owned(),
        }
    );
    let (event_id, todo_id, series) = match backend {
        Backend::Postgres => (pg_uuid("i", "8000"), pg_uuid("k", "9000"), String::new()),
        Backend::Sqlite => (
            "printf('%08x-0000-7000-8000-%012x', i, i)".to_owned(),
            "printf('%08x-0000-7000-9000-%012x', k, k)".to_owned(),
            // SQLite has no generate_series built in; a recursive CTE counts instead.
            format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "),
        ),
    };
    let (event_type, topic) = (TodoEventType::Created.as_str(), TodoEventType::Created.topic());
    // A payload shaped like a real one, so rows have a realistic width.
    let payload = format!(
        "'{{\"todoId\":\"' || {todo_id} || '\",\"userId\":\"user-1\",\"title\":\"published todo\",\
         \"status\":\"open\",\"version\":' || seq || '}}'"
    );
    format!(
        "{series}INSERT INTO outbox_events ({columns}) \
         SELECT {event_id}, {todo_id}, seq, '{event_type}', '{topic}', {payload}, \
                '2024-01-01T00:00:00.000000Z', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', \
                'bench-' || i \
         FROM ({numbered}) AS numbered"
    )
}

/// PostgreSQL for `printf('%08x-0000-7000-{variant}-%012x', n, n)`.
fn pg_uuid(number: &str, variant: &str) -> String {
    format!("(lpad(to_hex({number}), 8, '0') || '-0000-7000-{variant}-' || lpad(to_hex({number}), 12, '0'))")
}

/// One new todo's first event each, as `outbox::UnitOfWork::append` writes them: real UUIDv7 event ids.
async fn insert_pending(db: &Database, rows: usize) -> anyhow::Result<()> {
    let mut tx = db.writer.begin().await?;
    for _ in 0..rows {
        let todo_id = uuid::Uuid::now_v7().to_string();
        let event_id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO outbox_events (event_id, todo_id, seq, event_type, topic, payload, created_at, correlation_id) \
             VALUES ($1, $2, 1, $3, $4, $5, $6, $7)",
        )
        .bind(&event_id)
        .bind(&todo_id)
        .bind(TodoEventType::Created.as_str())
        .bind(TodoEventType::Created.topic())
        .bind(format!(r#"{{"todoId":"{todo_id}","userId":"user-1","title":"pending todo","status":"open","version":1}}"#))
        .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&mut *tx)
        .await
        .context("inserting a pending row")?;
        sqlx::query("INSERT INTO outbox_queue (event_id, todo_id, seq) VALUES ($1, $2, 1)")
            .bind(&event_id)
            .bind(&todo_id)
            .execute(&mut *tx)
            .await
            .context("queueing a pending row")?;
    }
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Timing the claim
// ---------------------------------------------------------------------------------------------

struct Claims {
    claim: Vec<Duration>,
    mark: Vec<Duration>,
}

impl Claims {
    fn mean(&self) -> Duration {
        self.claim.iter().sum::<Duration>() / self.claim.len() as u32
    }
    fn min(&self) -> Duration {
        self.claim.iter().copied().min().unwrap_or_default()
    }
    fn max(&self) -> Duration {
        self.claim.iter().copied().max().unwrap_or_default()
    }
    fn mark_mean(&self) -> Duration {
        self.mark.iter().sum::<Duration>() / self.mark.len() as u32
    }
}

impl std::fmt::Display for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rounds: Vec<String> = self.claim.iter().map(|d| format!("{:.2}", ms(*d))).collect();
        write!(
            f,
            "claim {CLAIM_LIMIT}: mean {:.3} ms, max {:.3} ms (rounds: {} ms); marking them published: mean {:.1} ms \
             per round",
            ms(self.mean()),
            ms(self.max()),
            rounds.join(" "),
            ms(self.mark_mean())
        )
    }
}

/// The relay's loop without the HTTP part: claim a batch, mark it published, so each round
/// claims the next batch. Round 1 includes preparing the statement on the connection, as the
/// relay's first round does.
async fn time_claims(db: &Database) -> anyhow::Result<Claims> {
    let mut claims = Claims { claim: Vec::new(), mark: Vec::new() };
    for round in 1..=ROUNDS {
        let now = epoch_millis();
        let started = Instant::now();
        let batch =
            todo::outbox::queue::claim(db, "bench", now, now + LEASE_MS, CLAIM_LIMIT).await.context("claiming")?;
        claims.claim.push(started.elapsed());
        if batch.len() as i64 != CLAIM_LIMIT {
            println!("warning: round {round} claimed {} events, expected {CLAIM_LIMIT}", batch.len());
        }
        let started = Instant::now();
        let ids: Vec<uuid::Uuid> = batch.iter().map(|event| event.event_id).collect();
        todo::outbox::queue::mark_published(db, &ids, chrono::Utc::now()).await.context("marking published")?;
        claims.mark.push(started.elapsed());
    }
    Ok(claims)
}

// ---------------------------------------------------------------------------------------------
// Query plans
// ---------------------------------------------------------------------------------------------

/// The relay's own claim statement (`outbox::queue::claim_sql`) with literals for its parameters, so
/// EXPLAIN needs no binds. EXPLAIN does not run it.
fn claim_statement(backend: Backend, now_ms: i64) -> String {
    todo::outbox::queue::claim_sql(backend)
        .replace("$1", &now_ms.to_string())
        .replace("$2", &CLAIM_LIMIT.to_string())
        .replace("$3", "'bench'")
        .replace("$4", &(now_ms + LEASE_MS).to_string())
}

async fn print_plans(db: &Database) -> anyhow::Result<()> {
    let plan = explain(db, &claim_statement(db.backend, epoch_millis())).await.context("explaining the claim")?;
    println!("plan of the claim:\n{plan}");
    // What matters, spelled out: the claim reads the queue alone, never the history.
    println!(
        "=> claim reads outbox_queue only: {}",
        if plan.contains("outbox_queue") && !plan.contains("outbox_events") { "yes" } else { "NO" }
    );
    Ok(())
}

/// SQLite's `EXPLAIN QUERY PLAN` (a tree of (id, parent, detail) rows, indented here) or
/// PostgreSQL's `EXPLAIN` (already indented text). Neither runs the statement.
async fn explain(db: &Database, sql: &str) -> anyhow::Result<String> {
    let mut lines = Vec::new();
    match db.backend {
        Backend::Postgres => {
            for row in sqlx::query(&format!("EXPLAIN {sql}")).fetch_all(&db.writer).await? {
                lines.push(format!("    {}", row.try_get::<String, _>(0)?));
            }
        }
        Backend::Sqlite => {
            let mut depth_of: Vec<(i64, usize)> = Vec::new();
            for row in sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}")).fetch_all(&db.writer).await? {
                let (id, parent): (i64, i64) = (row.try_get("id")?, row.try_get("parent")?);
                let detail: String = row.try_get("detail")?;
                let depth = depth_of.iter().find(|(node, _)| *node == parent).map_or(0, |(_, d)| d + 1);
                depth_of.push((id, depth));
                lines.push(format!("    {}{detail}", "  ".repeat(depth)));
            }
        }
    }
    Ok(lines.join("\n"))
}

fn epoch_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
