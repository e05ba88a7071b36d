//! Dead letters: the admin API and its token, and the whole loop through a real daprd (with its
//! in-memory broker): DROP → dead-letter topic → store → replay after the fix → processed.

use axum::http::StatusCode;
use serde_json::{Value, json};
use service_kit::testing::daprd::{self, Daprd};
use uuid::Uuid;

use crate::helpers::{
    ADMIN_TOKEN, Backend, DEADLINE, Options, TestApp, WebhookReceiver, eventually, notifications, spawn, todo_event,
};
use crate::on_both_backends;

on_both_backends!(
    the_admin_api_needs_its_token,
    dead_letters_are_stored_listed_and_discarded,
    a_dropped_event_is_dead_lettered_then_replayed_after_the_fix
);

async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.get(app.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap()
}

async fn admin_post(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.post(app.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap()
}

async fn parked_gauge(app: &TestApp) -> String {
    let metrics = app.scrape().await;
    metrics.lines().find(|l| l.starts_with("dapr_todo_dead_letters_parked ")).expect("the gauge").to_owned()
}

async fn the_admin_api_needs_its_token(backend: Backend) {
    let disabled = spawn(backend, Options::default()).await;
    assert_eq!(admin_get(&disabled, "/admin/dead-letters").await.status(), 403, "no ADMIN_TOKEN: the admin API is off");
    disabled.stop().await;
    let app = spawn(backend, Options { admin_token: Some(ADMIN_TOKEN), ..Options::default() }).await;
    let anonymous = app.http.get(app.url("/admin/dead-letters")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["content-type"], "application/problem+json");
    let wrong = app.http.get(app.url("/admin/dead-letters")).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(admin_get(&app, "/admin/dead-letters").await.status(), 200);
    app.stop().await;
}

async fn dead_letters_are_stored_listed_and_discarded(backend: Backend) {
    let app = spawn(backend, Options { admin_token: Some(ADMIN_TOKEN), ..Options::default() }).await;
    let mut poison = todo_event("todos.task.created", Uuid::now_v7(), "ada", "t", 1, 1);
    poison["data"]["version"] = json!(0);
    assert_eq!(app.deliver(&poison).await, "DROP");
    // What daprd then publishes to the dead-letter topic: the original bytes, twice (a redelivery).
    for _ in 0..2 {
        let parked =
            app.http.post(app.url("/dead-letters/todos.task.created")).body(poison.to_string()).send().await.unwrap();
        assert_eq!(parked.json::<Value>().await.unwrap(), json!({"status": "SUCCESS"}));
    }
    let listed: Value = admin_get(&app, "/admin/dead-letters?status=parked").await.json().await.unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "the same event is one dead letter: {listed}");
    let letter = &items[0];
    assert_eq!(letter["eventId"], poison["id"]);
    assert_eq!(letter["topic"], "todos.task.created");
    assert_eq!(letter["timesSeen"], 2);
    assert_eq!(letter["event"], poison, "the full original CloudEvent");
    assert!(
        letter["reason"].as_str().unwrap().contains("todos.task.created/v1.json: /version"),
        "the schema error is the reason: {letter}"
    );
    assert!(parked_gauge(&app).await.ends_with(" 1"));

    let id = letter["id"].as_str().unwrap();
    assert_eq!(admin_get(&app, &format!("/admin/dead-letters/{id}")).await.json::<Value>().await.unwrap()["id"], id);
    let discarded: Value = admin_post(&app, &format!("/admin/dead-letters/{id}/discard")).await.json().await.unwrap();
    assert_eq!(discarded["status"], "discarded");
    assert_eq!(
        admin_post(&app, &format!("/admin/dead-letters/{id}/replay")).await.status(),
        409,
        "only parked letters replay"
    );
    assert!(parked_gauge(&app).await.ends_with(" 0"));
    assert_eq!(admin_get(&app, &format!("/admin/dead-letters/{}", Uuid::now_v7())).await.status(), 404);
    assert_eq!(admin_get(&app, "/admin/dead-letters/42").await.status(), 400);
    assert_eq!(admin_get(&app, "/admin/dead-letters?status=lost").await.status(), 400);
    app.stop().await;
}

async fn a_dropped_event_is_dead_lettered_then_replayed_after_the_fix(backend: Backend) {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_next([StatusCode::UNPROCESSABLE_ENTITY]);
    // The sidecar's port first: the app publishes replays to it, and it delivers to the app.
    let sidecar_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = spawn(
        backend,
        Options {
            admin_token: Some(ADMIN_TOKEN),
            webhook_url: Some(receiver.url.clone()),
            dapr_endpoint: Some(format!("http://127.0.0.1:{sidecar_port}")),
            ..Options::default()
        },
    )
    .await;
    let resources = daprd::in_memory_pubsub();
    // Healthy once it has read the app's subscriptions.
    let mut sidecar = Daprd::start(daprd::Options {
        http_port: Some(sidecar_port),
        ..daprd::Options::new("notification", Some(app.addr.port()), &resources.path)
    })
    .await;
    let sidecar_url = sidecar.url.clone();

    let event = todo_event("todos.task.created", Uuid::now_v7(), "ada", "Call the bank", 1, 1);
    let published = app
        .http
        .post(format!("{sidecar_url}/v1.0/publish/pubsub/todos.task.created"))
        .header("content-type", "application/cloudevents+json")
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 204);
    let letter = eventually("the dropped event to reach the dead-letter store", DEADLINE, || async {
        let listed: Value = admin_get(&app, "/admin/dead-letters").await.json().await.ok()?;
        listed["items"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(letter["eventId"], event["id"]);
    assert!(letter["reason"].as_str().unwrap().contains("422"), "{letter}");
    assert!(parked_gauge(&app).await.ends_with(" 1"));

    // The receiver is fixed (it answers 200 from now on): replay.
    let id = letter["id"].as_str().unwrap();
    let replayed = admin_post(&app, &format!("/admin/dead-letters/{id}/replay")).await;
    assert_eq!(replayed.status(), 200);
    assert_eq!(replayed.json::<Value>().await.unwrap()["status"], "replayed");
    eventually("the replayed event to reach the webhook", DEADLINE, || async {
        (receiver.calls().len() == 2).then_some(())
    })
    .await;
    assert_eq!(receiver.calls()[1].1["message"], "New todo: Call the bank");
    assert!(parked_gauge(&app).await.ends_with(" 0"));
    assert_eq!(
        notifications(&app, "userId=ada").await["items"].as_array().unwrap().len(),
        1,
        "one in-app notification"
    );

    sidecar.stop().await;
    // With the sidecar gone a replay cannot publish: it says so and the letter stays parked.
    let mut second = todo_event("todos.task.created", Uuid::now_v7(), "ada", "t", 1, 1);
    second["data"]["version"] = json!(0);
    app.http.post(app.url("/dead-letters/todos.task.created")).body(second.to_string()).send().await.unwrap();
    let listed: Value = admin_get(&app, "/admin/dead-letters?status=parked").await.json().await.unwrap();
    let id = listed["items"][0]["id"].as_str().unwrap();
    assert_eq!(admin_post(&app, &format!("/admin/dead-letters/{id}/replay")).await.status(), 502);
    assert_eq!(
        admin_get(&app, &format!("/admin/dead-letters/{id}")).await.json::<Value>().await.unwrap()["status"],
        "parked"
    );
    app.stop().await;
}
