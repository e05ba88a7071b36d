//! What a hostile client tried, and the answers it must get: values the API accepts are
//! readable, storable and publishable; every rejection is a problem; one slow or panicking
//! request cannot take the service down.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use service_kit::middleware::Limits;
use service_kit::testing::http_contract::{self, PANIC_PATH, panicking_route};
use todo::http::{self, AppState};
use todo::outbox::Outbox;
use todo::todos::Todos;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, DEADLINE, FakeSidecar, TestApp, TestDb, assert_problem, eventually};
use crate::on_both_backends;

on_both_backends!(
    a_due_date_past_year_9999_in_utc_is_refused_and_nothing_is_stored,
    only_a_json_object_is_a_body,
    malformed_paths_and_long_uris_answer_problems,
);

async fn a_due_date_past_year_9999_in_utc_is_refused_and_nothing_is_stored(backend: Backend) {
    let (app, sidecar) = TestApp::spawn(backend).await;
    for due_at in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+00:01"] {
        let body = json!({"userId": "hostile", "title": "t", "dueAt": due_at});
        assert_problem(app.post_json("/todos", &body).await, 422, Some("dueAt")).await;
    }
    let list: Value = app.get("/todos?userId=hostile").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]), "nothing was stored");

    let todo = app.create_todo("hostile", "t").await;
    let path = format!("/todos/{}", todo["id"].as_str().unwrap());
    let patched = app.patch_json(&path, &json!({"dueAt": "9999-12-31T23:59:59-23:59"})).await;
    assert_problem(patched, 422, Some("dueAt")).await;
    // The bounds themselves are fine, and the todo stays readable, changeable and deletable.
    let at_the_edge = app.patch_json(&path, &json!({"dueAt": "9999-12-31T23:59:59.999999Z"})).await;
    assert_eq!(at_the_edge.status(), 200);
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read["dueAt"], "9999-12-31T23:59:59.999999Z");
    assert_eq!(app.get("/todos?userId=hostile").await.status(), 200);
    assert_eq!(app.http.delete(app.url(&path)).send().await.unwrap().status(), 204);
    // The creation, the change at the edge and the deletion: no event for a refused request.
    assert_eq!(sidecar.wait_for_accepted(3).await.len(), 3);
}

async fn only_a_json_object_is_a_body(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let array = app.http.post(app.url("/todos")).header("content-type", "application/json").body(r#"["ada","t"]"#);
    assert_problem(array.send().await.unwrap(), 422, Some("(body)")).await;
    let list: Value = app.get("/todos?userId=ada").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]), "an array created nothing");

    let todo = app.create_todo("ada", "title").await;
    let path = format!("/todos/{}", todo["id"].as_str().unwrap());
    let patch = app.http.patch(app.url(&path)).header("content-type", "application/json").body(r#"["x"]"#);
    assert_problem(patch.send().await.unwrap(), 422, Some("(body)")).await;
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read["title"], "title", "an array changed nothing");
}

async fn malformed_paths_and_long_uris_answer_problems(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    for path in ["/todos/%FF", "/todos/%FF/events", "/todos/%FF/complete"] {
        let request =
            if path.ends_with("complete") { app.http.post(app.url(path)) } else { app.http.get(app.url(path)) };
        assert_problem(request.send().await.unwrap(), 400, Some("id")).await;
    }
    let long = format!("/todos?userId={}", "a".repeat(9_000));
    assert_problem(app.get(&long).await, 414, None).await;
    let bad_query = app.get("/todos?limit=%FF").await;
    assert_problem(bad_query, 400, Some("limit")).await;
}

/// A request the service is still reading: its head and half its body, the rest never sent.
async fn stalled_request(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address.trim_start_matches("http://")).await.unwrap();
    let head = "POST /todos HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    stream.write_all(format!("{head}{{\"userId\":").as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_requests_are_shed_with_503_and_retry_after() {
    let sidecar = FakeSidecar::start().await;
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let app = TestApp::spawn_with(db, &sidecar, &[("MAX_CONCURRENT_REQUESTS", "1")]).await;
    // The stalled request takes the one slot, unless one of the probes below holds it at that
    // moment: then the stalled one is shed itself (answered at once), and is sent again.
    let stalled = tokio::sync::Mutex::new(stalled_request(&app.address).await);
    let shed = eventually("a request past the limit is shed", DEADLINE, || async {
        let mut stream = stalled.lock().await;
        let mut answered = [0u8; 64];
        if stream.try_read(&mut answered).is_ok() {
            *stream = stalled_request(&app.address).await;
        }
        let response = app.get("/todos").await;
        (response.status() == 503).then_some(response)
    })
    .await;
    assert_eq!(shed.headers()["retry-after"], "1");
    let problem = assert_problem(shed, 503, None).await;
    assert_eq!(problem["type"], "https://dapr-todo.example/problems/overloaded");
    assert_eq!(app.get("/healthz").await.status(), 200, "probes are not shed");
    drop(stalled.into_inner());
    eventually("the slot is free again", DEADLINE, || async {
        (app.get("/todos").await.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_answers_a_503_problem() {
    let sidecar = FakeSidecar::start().await;
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let app = TestApp::spawn_with(db, &sidecar, &[("REQUEST_TIMEOUT_MS", "300")]).await;
    let mut stalled = stalled_request(&app.address).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut answer))
        .await
        .expect("the service answers a stalled request within its timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("content-type: application/problem+json"), "{answer}");
    assert_eq!(app.get("/todos").await.status(), 200);
}

/// The service's own assembly (`todo::http::app`) with one more route, which panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_a_problem() {
    let db = TestDb::new(Backend::Sqlite).await;
    let database = todo::startup::connect_database(&db.url, 2).await.unwrap();
    let state =
        AppState { todos: Todos::new(database, Outbox::new()), app_id: "todo".into(), admin_token: Default::default() };
    let limits = Limits::default();
    let routes = http::routes(state, &limits).route(PANIC_PATH, axum::routing::get(panicking_route));
    let served = http_contract::serve(http::app(routes, &limits)).await;
    http_contract::a_panic_answers_a_problem(&served.url).await;
}
