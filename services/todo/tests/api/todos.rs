//! The HTTP API: status codes, headers, validation problems, pagination, idempotency.

use serde_json::{Value, json};

use crate::helpers::{Backend, SendJson, TestApp, assert_problem};
use crate::on_both_backends;

on_both_backends!(
    create_returns_201_with_location_etag_and_the_todo,
    create_rejects_each_invalid_field_by_name,
    malformed_requests_get_the_right_4xx,
    ids_that_are_not_uuids_are_400_and_unknown_ids_404,
    patch_honours_if_match_and_reports_stale_versions,
    patch_clears_nullable_fields_and_a_no_op_changes_nothing,
    complete_and_reopen_are_idempotent,
    delete_removes_from_reads_and_lists_but_keeps_history,
    list_pages_newest_first_with_a_stable_cursor,
    list_rejects_bad_parameters_by_name,
    idempotency_key_replays_the_first_response,
    concurrent_requests_with_one_idempotency_key_create_one_todo,
    no_input_yields_a_server_error,
    health_endpoints_answer,
);

async fn create_returns_201_with_location_etag_and_the_todo(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let response = app
        .post_json(
            "/todos",
            &json!({"userId": "ada.l@x-1_2", "title": "  Write docs  ", "description": "d", "dueAt": "2026-12-01T17:00:00+02:00"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["etag"], "\"1\"");
    let todo: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/todos/{}", todo["id"].as_str().unwrap()));
    assert_eq!(todo["title"], "Write docs", "title is trimmed");
    assert_eq!(todo["userId"], "ada.l@x-1_2");
    assert_eq!(todo["dueAt"], "2026-12-01T15:00:00.000000Z", "dueAt is normalised to UTC");
    assert_eq!(todo["status"], "open");
    assert_eq!(todo["version"], 1);
    assert_eq!(todo["completedAt"], Value::Null);

    let fetched = app.get(&location).await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["etag"], "\"1\"");
    assert_eq!(fetched.json::<Value>().await.unwrap(), todo, "what was created is what is read back");
}

async fn create_rejects_each_invalid_field_by_name(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let long = |n: usize| "x".repeat(n);
    let cases = [
        (json!({"title": "t"}), "userId"),
        (json!({"userId": "u"}), "title"),
        (json!({"userId": "u", "title": "   "}), "title"),
        (json!({"userId": "u", "title": long(201)}), "title"),
        (json!({"userId": "u", "title": "t", "description": long(2001)}), "description"),
        (json!({"userId": "", "title": "t"}), "userId"),
        (json!({"userId": long(65), "title": "t"}), "userId"),
        (json!({"userId": "a b", "title": "t"}), "userId"),
        (json!({"userId": "ü", "title": "t"}), "userId"),
        (json!({"userId": "u", "title": "t", "dueAt": "next friday"}), "dueAt"),
        (json!({"userId": "u", "title": "t", "dueAt": "2026-12-01"}), "dueAt"),
        (json!({"userId": "u", "title": "t", "priority": 1}), "priority"),
        (json!({"userId": "u", "title": 5}), "title"),
        (json!({"userId": ["u"], "title": "t"}), "userId"),
        (json!({"userId": "u", "title": "nul \u{0} byte"}), "title"),
        (json!({"userId": "u", "title": "t", "description": "nul \u{0} byte"}), "description"),
    ];
    for (body, field) in cases {
        let response = app.post_json("/todos", &body).await;
        assert_problem(response, 422, Some(field)).await;
    }
    // Boundaries are inclusive.
    let ok = app.post_json("/todos", &json!({"userId": long(64), "title": long(200), "description": long(2000)})).await;
    assert_eq!(ok.status(), 201);
    // Nothing invalid was stored.
    let page: Value = app.get("/todos").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

async fn malformed_requests_get_the_right_4xx(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let post = |content_type: Option<&str>, body: Vec<u8>| {
        let mut request = app.http.post(app.url("/todos")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    assert_problem(post(Some("application/json"), b"{\"userId\": \"u\",".to_vec()).await.unwrap(), 400, None).await;
    assert_problem(post(Some("application/json"), b"".to_vec()).await.unwrap(), 400, None).await;
    assert_problem(post(Some("application/json"), b"{} {}".to_vec()).await.unwrap(), 400, None).await;
    assert_problem(post(Some("application/json"), b"[]".to_vec()).await.unwrap(), 422, None).await;
    assert_problem(post(Some("text/plain"), b"{}".to_vec()).await.unwrap(), 415, Some("Content-Type")).await;
    assert_problem(post(None, b"{}".to_vec()).await.unwrap(), 415, Some("Content-Type")).await;
    // Over 64 KiB, even as valid JSON.
    let huge = serde_json::to_vec(&json!({"userId": "u", "title": "t", "description": "d".repeat(70 * 1024)})).unwrap();
    assert_problem(post(Some("application/json"), huge).await.unwrap(), 413, None).await;
    // A charset parameter is fine.
    let ok = post(Some("application/json; charset=utf-8"), br#"{"userId":"u","title":"t"}"#.to_vec()).await.unwrap();
    assert_eq!(ok.status(), 201);
    // Unknown routes and methods are problems too.
    assert_problem(app.get("/nope").await, 404, None).await;
    assert_problem(app.http.put(app.url("/todos")).send().await.unwrap(), 405, None).await;
}

async fn ids_that_are_not_uuids_are_400_and_unknown_ids_404(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let unknown = uuid::Uuid::now_v7();
    for (id, status) in [("not-a-uuid", 400), ("1%27%20OR%201=1", 400), (&unknown.to_string()[..], 404)] {
        assert_problem(app.get(&format!("/todos/{id}")).await, status, (status == 400).then_some("id")).await;
        assert_problem(app.get(&format!("/todos/{id}/events")).await, status, None).await;
        let complete = app.post_empty(&format!("/todos/{id}/complete")).await;
        assert_problem(complete, status, None).await;
        let patch = app.patch_json(&format!("/todos/{id}"), &json!({"title": "x"})).await;
        assert_problem(patch, status, None).await;
        let delete = app.http.delete(app.url(&format!("/todos/{id}"))).send().await.unwrap();
        assert_problem(delete, status, None).await;
    }
}

async fn patch_honours_if_match_and_reports_stale_versions(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let todo = app.create_todo("ada", "first").await;
    let path = format!("/todos/{}", todo["id"].as_str().unwrap());
    let patch = |if_match: Option<&str>, body: Value| {
        let mut request = app.http.patch(app.url(&path)).json(&body);
        if let Some(if_match) = if_match {
            request = request.header("if-match", if_match);
        }
        request.send()
    };
    let updated = patch(Some("\"1\""), json!({"title": "second"})).await.unwrap();
    assert_eq!(updated.status(), 200);
    assert_eq!(updated.headers()["etag"], "\"2\"");
    let updated: Value = updated.json().await.unwrap();
    assert_eq!((updated["title"].as_str(), updated["version"].as_i64()), (Some("second"), Some(2)));

    let stale = patch(Some("\"1\""), json!({"title": "lost update"})).await.unwrap();
    assert_problem(stale, 412, Some("If-Match")).await;
    let weak = patch(Some("W/\"2\""), json!({"title": "weak tags never match"})).await.unwrap();
    assert_problem(weak, 412, None).await;
    let malformed = patch(Some("2"), json!({"title": "x"})).await.unwrap();
    assert_problem(malformed, 400, Some("If-Match")).await;
    let any = patch(Some("*"), json!({"title": "third"})).await.unwrap();
    assert_eq!(any.status(), 200);
    let listed = patch(Some("\"7\", \"3\""), json!({"title": "fourth"})).await.unwrap();
    assert_eq!(listed.status(), 200);
    let unconditional = patch(None, json!({"title": "fifth"})).await.unwrap();
    assert_eq!(unconditional.headers()["etag"], "\"5\"");

    let current: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!((current["title"].as_str(), current["version"].as_i64()), (Some("fifth"), Some(5)));
    // If-Match guards the other changes too.
    let complete =
        app.http.post(app.url(&format!("{path}/complete"))).header("if-match", "\"4\"").send().await.unwrap();
    assert_problem(complete, 412, None).await;
    let delete = app.http.delete(app.url(&path)).header("if-match", "\"4\"").send().await.unwrap();
    assert_problem(delete, 412, None).await;
    assert_eq!(app.get(&path).await.status(), 200);
}

async fn patch_clears_nullable_fields_and_a_no_op_changes_nothing(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let created = app
        .post_json("/todos", &json!({"userId": "u", "title": "t", "description": "d", "dueAt": "2026-12-01T00:00:00Z"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let path = format!("/todos/{}", created["id"].as_str().unwrap());
    let cleared: Value =
        app.http.patch(app.url(&path)).json(&json!({"description": null, "dueAt": null})).send_json().await;
    assert_eq!((cleared["description"].clone(), cleared["dueAt"].clone()), (Value::Null, Value::Null));
    assert_eq!(cleared["version"], 2);

    for no_op in [json!({}), json!({"title": "t", "description": null})] {
        let response = app.http.patch(app.url(&path)).json(&no_op).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["etag"], "\"2\"", "{no_op} must not bump the version");
    }
    let null_title = app.patch_json(&path, &json!({"title": null})).await;
    assert_problem(null_title, 422, Some("title")).await;
    let unknown = app.patch_json(&path, &json!({"status": "completed"})).await;
    assert_problem(unknown, 422, Some("status")).await;
    let history: Value = app.get(&format!("{path}/events")).await.json().await.unwrap();
    let types: Vec<&str> =
        history["events"].as_array().unwrap().iter().map(|e| e["event"]["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["todos.task.created", "todos.task.updated"]);
    assert_eq!(history["events"][1]["event"]["data"]["changedFields"], json!(["description", "dueAt"]));
}

async fn complete_and_reopen_are_idempotent(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let todo = app.create_todo("u", "t").await;
    let path = format!("/todos/{}", todo["id"].as_str().unwrap());
    let app = &app;
    let post = |action: &str| {
        let path = format!("{path}/{action}");
        async move { app.post_empty(&path).await }
    };

    let completed: Value = post("complete").await.json().await.unwrap();
    assert_eq!((completed["status"].as_str(), completed["version"].as_i64()), (Some("completed"), Some(2)));
    assert!(completed["completedAt"].is_string());
    let again = post("complete").await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, completed, "completing a completed todo changes nothing");

    let reopened: Value = post("reopen").await.json().await.unwrap();
    assert_eq!((reopened["status"].as_str(), reopened["version"].as_i64()), (Some("open"), Some(3)));
    assert_eq!(reopened["completedAt"], Value::Null);
    assert_eq!(post("reopen").await.headers()["etag"], "\"3\"");

    let history: Value = app.get(&format!("{path}/events")).await.json().await.unwrap();
    let types: Vec<&str> =
        history["events"].as_array().unwrap().iter().map(|e| e["event"]["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["todos.task.created", "todos.task.completed", "todos.task.reopened"], "no event for no-ops");
}

async fn delete_removes_from_reads_and_lists_but_keeps_history(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let keep = app.create_todo("u", "keep").await;
    let gone = app.create_todo("u", "gone").await;
    let path = format!("/todos/{}", gone["id"].as_str().unwrap());
    let deleted = app.http.delete(app.url(&path)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(deleted.content_length(), Some(0));
    assert_problem(app.get(&path).await, 404, None).await;
    assert_problem(app.http.delete(app.url(&path)).send().await.unwrap(), 404, None).await;
    let page: Value = app.get("/todos?userId=u").await.json().await.unwrap();
    let ids: Vec<&Value> = page["items"].as_array().unwrap().iter().map(|t| &t["id"]).collect();
    assert_eq!(ids, [&keep["id"]]);

    let history: Value = app.get(&format!("{path}/events")).await.json().await.unwrap();
    let last = &history["events"][1]["event"];
    assert_eq!(last["type"], "todos.task.deleted");
    assert_eq!(last["data"]["version"], 2);
    assert!(last["data"]["deletedAt"].is_string());
}

async fn list_pages_newest_first_with_a_stable_cursor(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(app.create_todo("pager", &format!("todo {i}")).await["id"].as_str().unwrap().to_owned());
        if i % 5 == 0 {
            app.create_todo("someone-else", "noise").await;
        }
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/todos?userId=pager&limit=10".to_owned(),
            Some(c) => format!("/todos?userId=pager&limit=10&cursor={c}"),
        };
        let page: Value = app.get(&path).await.json().await.unwrap();
        pages += 1;
        seen.extend(page["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        if pages == 1 {
            // A todo created while paging does not shift later pages.
            app.create_todo("pager", "created mid-way").await;
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created, "every todo exactly once, newest first");
    assert_eq!(pages, 3);

    let completed_id = &created[3];
    app.post_empty(&format!("/todos/{completed_id}/complete")).await;
    let completed: Value = app.get("/todos?userId=pager&status=completed").await.json().await.unwrap();
    let completed_ids: Vec<&str> =
        completed["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(completed_ids, [completed_id.as_str()]);
    let open: Value = app.get("/todos?userId=pager&status=open&limit=100").await.json().await.unwrap();
    assert_eq!(open["items"].as_array().unwrap().len(), 23);
    assert_eq!(open["nextCursor"], Value::Null);
    let everyone: Value = app.get("/todos?limit=100").await.json().await.unwrap();
    assert_eq!(everyone["items"].as_array().unwrap().len(), 24 + 5);
}

async fn list_rejects_bad_parameters_by_name(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("status=done", "status"),
        ("userId=a%20b", "userId"),
        ("cursor=garbage", "cursor"),
        ("cursor=djE6bm90LWEtdXVpZA", "cursor"),
    ] {
        assert_problem(app.get(&format!("/todos?{query}")).await, 400, Some(field)).await;
    }
}

async fn idempotency_key_replays_the_first_response(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let send = |key: &str, body: &str| {
        app.http
            .post(app.url("/todos"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_owned())
            .send()
    };
    let first = send("key-1", r#"{"userId":"u","title":"once"}"#).await.unwrap();
    assert_eq!(first.status(), 201);
    let first_location = first.headers()["location"].clone();
    let first_body: Value = first.json().await.unwrap();

    // Same request, different formatting and key order: replayed.
    let retry = send("key-1", r#"{ "title": "once",  "userId": "u" }"#).await.unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["location"], first_location);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first_body);

    // The replay is the original response even after the todo changed.
    let path = format!("/todos/{}", first_body["id"].as_str().unwrap());
    app.post_empty(&format!("{path}/complete")).await;
    let later: Value = send("key-1", r#"{"userId":"u","title":"once"}"#).await.unwrap().json().await.unwrap();
    assert_eq!(later, first_body);

    let conflict = send("key-1", r#"{"userId":"u","title":"twice"}"#).await.unwrap();
    assert_problem(conflict, 422, Some("Idempotency-Key")).await;
    let bad_key = send(&"k".repeat(256), r#"{"userId":"u","title":"t"}"#).await.unwrap();
    assert_problem(bad_key, 400, Some("Idempotency-Key")).await;

    let page: Value = app.get("/todos").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "one todo for one key");
    let history: Value = app.get(&format!("{path}/events")).await.json().await.unwrap();
    assert_eq!(history["events"].as_array().unwrap().len(), 2, "created once, completed once");
}

async fn concurrent_requests_with_one_idempotency_key_create_one_todo(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let requests = (0..12).map(|_| {
        app.http
            .post(app.url("/todos"))
            .header("idempotency-key", "race")
            .json(&json!({"userId": "u", "title": "race"}))
            .send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 201);
        ids.insert(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "every racer got the same todo");
    let page: Value = app.get("/todos").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

async fn no_input_yields_a_server_error(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    let todo = app.create_todo("u", "t").await;
    let id = todo["id"].as_str().unwrap();
    let bodies: Vec<Vec<u8>> = vec![
        b"null".to_vec(),
        b"0".to_vec(),
        b"\"str\"".to_vec(),
        br#"{"userId":null,"title":null}"#.to_vec(),
        br#"{"userId":"u","title":"\u0000\u0001"}"#.to_vec(),
        br#"{"userId":"u","title":"t","dueAt":"9999-99-99T99:99:99Z"}"#.to_vec(),
        br#"{"userId":"u","title":"t","dueAt":"+275760-09-13T00:00:00Z"}"#.to_vec(),
        br#"{"userId":"u","title":"t","dueAt":1e400}"#.to_vec(),
        br#"{"userId":"u","title":"\ud800"}"#.to_vec(),
        vec![0xff, 0xfe, 0x00],
        br#"{"userId":"u","title":"t","description":{"nested":[1,2,{"deep":true}]}}"#.to_vec(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        br#"{"userId":"u","title":"t","userId":"v"}"#.to_vec(),
    ];
    for path in ["/todos".to_owned(), format!("/todos/{id}")] {
        for body in &bodies {
            let request = if path == "/todos" { app.http.post(app.url(&path)) } else { app.http.patch(app.url(&path)) };
            let response = request.header("content-type", "application/json").body(body.clone()).send().await.unwrap();
            let status = response.status();
            assert!(
                status.is_client_error() || status.is_success(),
                "{path} {:?} gave {status}",
                String::from_utf8_lossy(body)
            );
        }
    }
    for header in ["\"\"", "W/", ",,,", "\"99999999999999999999999\""] {
        let response =
            app.http.post(app.url(&format!("/todos/{id}/complete"))).header("if-match", header).send().await.unwrap();
        assert!(response.status().is_client_error(), "If-Match {header:?} gave {}", response.status());
    }
    assert_eq!(app.get("/readyz").await.status(), 200, "the service is still healthy");
}

async fn health_endpoints_answer(backend: Backend) {
    let (app, _sidecar) = TestApp::spawn(backend).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let echoed = app.http.get(app.url("/healthz")).header("x-request-id", "req-42").send().await.unwrap();
    assert_eq!(echoed.headers()["x-correlation-id"], "req-42");
    let generated = app.get("/healthz").await;
    assert!(uuid::Uuid::parse_str(generated.headers()["x-correlation-id"].to_str().unwrap()).is_ok());
}
