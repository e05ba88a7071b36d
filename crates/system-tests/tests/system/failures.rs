//! Failures end to end: poison to the dead-letter store and replay after the fix, transient
//! failures retried per the resiliency policy then dead-lettered, and the app token.

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};
use service_kit::testing::{DEADLINE, eventually};

use crate::harness::{ADMIN_TOKEN, DbBackend, Extra, Kind, System, Webhook};
use crate::on_both_backends;

on_both_backends!(
    a_dropped_event_is_dead_lettered_and_replayed_after_the_fix,
    a_transient_failure_is_retried_per_the_policy_then_dead_lettered,
    with_an_app_token_the_system_works_and_callers_without_it_are_refused
);

async fn dead_letters(system: &System) -> Vec<Value> {
    system.get(Kind::Notification, "/admin/dead-letters").await["items"].as_array().unwrap().clone()
}

fn with_webhook(webhook: &Webhook) -> Extra {
    Extra { app_token: None, env: [("NOTIFY_WEBHOOK_URL", webhook.url.clone())].into() }
}

async fn a_dropped_event_is_dead_lettered_and_replayed_after_the_fix(backend: DbBackend) {
    let webhook = Webhook::start().await;
    // The receiver refuses the first notification: a 4xx is poison to the notification service.
    webhook.answer_next([StatusCode::UNPROCESSABLE_ENTITY]);
    let system = System::start(backend, with_webhook(&webhook)).await;
    let todo = system.todo_call(Method::POST, "/todos", Some(json!({"userId": "dee", "title": "Call the bank"}))).await;
    let letter = eventually("a dead letter", DEADLINE, || async { dead_letters(&system).await.first().cloned() }).await;
    assert_eq!(letter["topic"], "todos.task.created");
    assert_eq!(letter["event"]["subject"], todo["id"]);
    assert!(letter["reason"].as_str().unwrap().contains("422"), "{letter}");
    assert_eq!(webhook.calls().len(), 1, "DROP is not retried");
    let metrics =
        system.http.get(format!("{}/metrics", system.consumer(Kind::Notification).metrics_url)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("dapr_todo_dead_letters_parked 1"), "{metrics}");
    assert!(metrics.contains("dapr_todo_deliveries_total{topic=\"todos.task.created\",answer=\"DROP\"}"), "{metrics}");

    // The receiver is fixed; the operator replays. Analytics gets the replay too and ignores it.
    let id = letter["id"].as_str().unwrap();
    let replayed = system
        .http
        .post(format!("{}/admin/dead-letters/{id}/replay", system.consumer(Kind::Notification).url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 200);
    eventually("the replay to reach the webhook", DEADLINE, || async { (webhook.calls().len() == 2).then_some(()) })
        .await;
    assert_eq!(webhook.calls()[1]["message"], "New todo: Call the bank");
    for group in ["notification", "analytics"] {
        system.broker.wait_until_consumed("todos.task.created", group).await;
    }
    assert_eq!(dead_letters(&system).await[0]["status"], "replayed");
    assert_eq!(
        system.get(Kind::Analytics, "/analytics/users/dee").await["created"],
        1,
        "the replay is not counted twice"
    );
    // Every figure there is to alert on has moved by now: a publish, deliveries of every answer
    // but RETRY, a duplicate (analytics' copy of the replay), a dead letter.
    crate::monitoring::assert_the_monitoring_uses_exported_metrics(&system).await;
}

async fn a_transient_failure_is_retried_per_the_policy_then_dead_lettered(backend: DbBackend) {
    let webhook = Webhook::start().await;
    webhook.answer_always(StatusCode::SERVICE_UNAVAILABLE);
    let system = System::start(backend, with_webhook(&webhook)).await;
    system.todo_call(Method::POST, "/todos", Some(json!({"userId": "eli", "title": "Flaky"}))).await;
    let letter = eventually("a dead letter", DEADLINE, || async { dead_letters(&system).await.first().cloned() }).await;
    assert!(letter["reason"].as_str().unwrap().contains("503"), "{letter}");
    // The test resiliency policy: 3 retries after the first attempt, then the dead-letter topic.
    assert_eq!(webhook.calls().len(), 4, "1 attempt + 3 retries");
    assert_eq!(system.get(Kind::Notification, "/notifications?userId=eli").await["items"].as_array().unwrap().len(), 1);
}

async fn with_an_app_token_the_system_works_and_callers_without_it_are_refused(backend: DbBackend) {
    let system = System::start(backend, Extra { app_token: Some("sidecar-secret"), env: Default::default() }).await;
    system.todo_call(Method::POST, "/todos", Some(json!({"userId": "fay", "title": "Guarded"}))).await;
    eventually("the notification", DEADLINE, || async {
        let items = system.get(Kind::Notification, "/notifications?userId=fay").await;
        (items["items"].as_array()?.len() == 1).then_some(())
    })
    .await;
    for kind in [Kind::Notification, Kind::Analytics] {
        let url = &system.consumer(kind).url;
        let subscribe = system.http.get(format!("{url}/dapr/subscribe")).send().await.unwrap();
        assert_eq!(subscribe.status(), 401, "{kind:?}");
        let delivery = system.http.post(format!("{url}/events/todos.task.created")).body("{}").send().await.unwrap();
        assert_eq!(delivery.status(), 401, "{kind:?}");
    }
}
