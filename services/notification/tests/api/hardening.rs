//! Events that break the published schema, sent with a valid app token: each is dropped at
//! once (not retried until the policy gives up) with the schema error as the dead letter's
//! reason, and writes nothing.

use serde_json::{Value, json};
use service_kit::testing::TestDb;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, Backend, Options, notifications, spawn, todo_event};
use crate::on_both_backends;

on_both_backends!(schema_breaking_events_are_dropped_with_the_schema_error);

async fn schema_breaking_events_are_dropped_with_the_schema_error(backend: Backend) {
    let app = spawn(backend, Options { admin_token: Some(ADMIN_TOKEN), ..Options::default() }).await;
    let valid = || todo_event("todos.task.created", Uuid::now_v7(), "ada", "t", 1, 1);
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut spaced = valid();
    spaced["data"]["userId"] = json!("ada lovelace");
    cases.push((spaced, "/userId"));
    let mut huge = valid();
    huge["data"]["title"] = json!("t".repeat(100_000));
    cases.push((huge, "/title"));
    let mut old_spec = valid();
    old_spec["specversion"] = json!("0.3");
    cases.push((old_spec, "/specversion"));
    // On PostgreSQL a NUL reached the database and was answered RETRY.
    let mut nul = valid();
    nul["data"]["title"] = json!("nul\u{0}inside");
    cases.push((nul, "/title"));
    for (event, field) in &cases {
        assert_eq!(app.deliver(event).await, "DROP", "{field}");
        // daprd forwards what was dropped to the dead-letter topic.
        let stored = app.http.post(app.url("/dead-letters/todos.task.created")).body(event.to_string()).send().await;
        assert_eq!(stored.unwrap().json::<Value>().await.unwrap(), json!({"status": "SUCCESS"}));
    }
    let letters: Value = app
        .http
        .get(app.url("/admin/dead-letters"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reasons: Vec<&str> =
        letters["items"].as_array().unwrap().iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons.len(), cases.len(), "{letters}");
    for ((_, field), reason) in cases.iter().zip(&reasons) {
        assert!(reason.contains(field), "the reason names {field}: {reason}");
    }
    assert_eq!(notifications(&app, "userId=ada").await["items"], json!([]), "nothing was written");
    app.stop().await;
}

/// A value the database itself refuses (PostgreSQL cannot store a NUL in text) is not worth
/// retrying: should one get past the schema, it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_the_database_refuses_is_dropped_not_retried() {
    let test_db = TestDb::new(Backend::Postgres).await;
    let pool = sqlx::PgPool::connect(&test_db.url).await.unwrap();
    let refused = sqlx::query("SELECT $1::text").bind("nul\u{0}inside").execute(&pool).await.unwrap_err();
    assert!(matches!(dapr_consumer::Refusal::database(&refused), dapr_consumer::Refusal::Drop(_)), "{refused}");
    let unavailable = sqlx::Error::PoolTimedOut;
    assert!(matches!(dapr_consumer::Refusal::database(&unavailable), dapr_consumer::Refusal::Retry(_)));
}
