//! The relay against a recording stand-in for the sidecar's publish endpoint: request shape,
//! per-todo order, retries without loss, health gating, crash recovery and replicas.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use serde_json::{Value, json};
use service_kit::trace_context::span_context;
use sqlx::Row;

use dapr_events::{DaprPublisher, PublisherConfig};
use todo::outbox::handoff::Handoff;
use todo::relay::Relay;

use crate::helpers::{Backend, DEADLINE, FakeSidecar, Recorded, SendJson, TestApp, TestDb, eventually};
use crate::on_both_backends;

on_both_backends!(
    publishes_each_event_with_daprs_request_shape,
    keeps_per_todo_order_under_concurrent_writers,
    a_round_with_handed_over_events_claims_only_when_a_commit_asks,
    a_change_behind_a_handed_over_event_follows_it_at_once,
    handed_over_events_go_out_in_at_most_two_rounds_at_once,
    retries_failed_publishes_without_loss_while_other_todos_flow,
    waits_for_a_sidecar_that_refuses_connections_and_resumes_at_once,
    retries_after_a_publish_timeout,
    publishes_nothing_before_outbound_health,
    a_round_too_big_for_one_request_is_sent_in_several,
    an_event_claimed_by_a_crashed_instance_is_published_after_restart,
    an_instance_restarted_under_its_name_releases_its_last_runs_leases_at_once,
    a_failed_publish_is_retried_when_its_backoff_ends_not_at_the_next_poll,
);

/// Per todo, the accepted publishes must be versions 1, 2, 3, … in arrival order. A repeat of
/// the event just published is allowed (at least once), anything else is a reordering.
fn assert_in_order(by_todo: &HashMap<String, Vec<Recorded>>, expected_events_per_todo: &HashMap<String, i64>) {
    for (todo, expected) in expected_events_per_todo {
        let records = by_todo.get(todo).unwrap_or_else(|| panic!("nothing published for {todo}"));
        let mut versions: Vec<i64> = records.iter().map(Recorded::version).collect();
        versions.dedup();
        let wanted: Vec<i64> = (1..=*expected).collect();
        assert_eq!(versions, wanted, "todo {todo} was published out of order");
    }
}

async fn pending_attempts(app: &TestApp, todo_id: &str) -> Option<(i64, Option<String>)> {
    let row = sqlx::query(
        "SELECT attempts, last_error FROM outbox_events WHERE todo_id = $1 \
         AND event_id NOT IN (SELECT event_id FROM outbox_published) ORDER BY seq LIMIT 1",
    )
    .bind(todo_id)
    .fetch_optional(&app.db.reader)
    .await
    .unwrap()?;
    Some((row.get("attempts"), row.get("last_error")))
}

async fn publishes_each_event_with_daprs_request_shape(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    let test_db = Arc::new(TestDb::new(backend).await);
    let app =
        TestApp::spawn_with(test_db, &sidecar, &[("DAPR_API_TOKEN", "s3cret"), ("PUBSUB_NAME", "todo-pubsub")]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let todo: Value = app
        .http
        .post(app.url("/todos"))
        .header("x-correlation-id", "corr-shape")
        .header("traceparent", traceparent)
        .header("tracestate", "vendor=1")
        .json(&json!({"userId": "ada", "title": "shape"}))
        .send_json()
        .await;
    let id = todo["id"].as_str().unwrap();
    let published = sidecar.wait_for_accepted(1).await;
    let request = &published[0];

    assert_eq!(request.pubsub, "todo-pubsub");
    assert_eq!(request.topic, "todos.task.created");
    assert_eq!(request.query.as_deref(), Some(format!("metadata.partitionKey={id}").as_str()));
    // A bulk publish (the stand-in checks each entry is `application/cloudevents+json`).
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["dapr-api-token"], "s3cret");
    // The publish request is a producer span of its own, linked to the events it carries
    // (crates/system-tests/tests/system/traces.rs follows the link); the envelope's context is
    // the span that wrote the event, in the caller's trace, which every delivery continues.
    let caller = span_context(traceparent).unwrap();
    let producer = span_context(request.headers["traceparent"].to_str().unwrap()).expect("a valid traceparent header");
    assert_ne!(producer.trace_id(), caller.trace_id(), "the batch's own trace");

    let history: Value = app.get(&format!("/todos/{id}/events")).await.json().await.unwrap();
    let stored = &history["events"][0];
    let body = request.json();
    assert_eq!(body, stored["event"], "the published envelope is the one the history shows");
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["source"], "todo");
    assert_eq!(body["type"], "todos.task.created");
    assert_eq!(body["subject"], id);
    assert_eq!(body["datacontenttype"], "application/json");
    assert_eq!(body["dataschema"], "https://dapr-todo.example/schemas/events/todos.task.created/v1.json");
    assert_eq!(body["correlationid"], "corr-shape");
    let written = span_context(body["traceparent"].as_str().unwrap()).expect("a valid traceparent attribute");
    assert_eq!(written.trace_id(), caller.trace_id());
    assert_eq!(body["traceid"], body["traceparent"], "traceid keeps daprd from replacing traceparent");
    assert_eq!(body["tracestate"], "vendor=1");
    assert!(body.get("causationid").is_none());
    assert_eq!(body["data"]["todoId"], id);
    assert_eq!(body["data"]["userId"], "ada");
    assert_eq!(body["data"]["version"], 1);
    assert_eq!(body["time"], todo["createdAt"]);
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());

    let marked = eventually("the event to be marked published", DEADLINE, || async {
        let history: Value = app.get(&format!("/todos/{id}/events")).await.json().await.unwrap();
        history["events"][0]["publishedAt"].is_string().then_some(())
    })
    .await;
    assert_eq!(marked, ());
    assert_eq!(sidecar.recorded().len(), 1, "published exactly once");
}

async fn keeps_per_todo_order_under_concurrent_writers(backend: Backend) {
    let (app, sidecar) = TestApp::spawn(backend).await;
    let titles: Vec<String> = (0..6).map(|i| format!("todo {i}")).collect();
    let todos: Vec<String> = futures::future::join_all(titles.iter().map(|title| app.create_todo("writer", title)))
        .await
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    // Every todo gets 12 concurrent updates, all todos at once.
    let updates = todos.iter().flat_map(|id| {
        let app = &app;
        (0..12).map(move |n| async move {
            let response = app
                .http
                .patch(app.url(&format!("/todos/{id}")))
                .json(&json!({"title": format!("rev {n}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{:?}", response.text().await);
        })
    });
    futures::future::join_all(updates).await;

    let mut expected = HashMap::new();
    for id in &todos {
        let todo: Value = app.get(&format!("/todos/{id}")).await.json().await.unwrap();
        expected.insert(id.clone(), todo["version"].as_i64().unwrap());
    }
    let total: i64 = expected.values().sum();
    assert!(total > 6 * 2, "the concurrent updates produced changes");
    sidecar.wait_for_accepted(total as usize).await;
    assert_in_order(&sidecar.accepted_by_todo(), &expected);
}

/// New todos' events are handed to the relay without a claim (`todo::outbox::handoff`). A
/// round claims as well only when something may wait that a claim alone finds: here a commit
/// of such events (a flag the commit sets), never merely because events were handed over.
/// The poll interval is far longer than the test, so it cannot be what triggers a claim.
async fn a_round_with_handed_over_events_claims_only_when_a_commit_asks(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    let test_db = Arc::new(TestDb::new(backend).await);
    // The app writes the events; its own relay is off, so every queue row is unleased.
    let app = TestApp::spawn_with(test_db, &sidecar, &[("RELAY_ENABLED", "false")]).await;
    let settings = todo::config::Settings::from_lookup(|name| match name {
        "RELAY_POLL_INTERVAL_MS" => Some("600000".to_owned()),
        "RELAY_BATCH_SIZE" => Some("4".to_owned()),
        _ => None,
    })
    .unwrap();
    let publisher = DaprPublisher::new(PublisherConfig {
        sidecar_url: format!("http://127.0.0.1:{}", sidecar.port()).parse().unwrap(),
        pubsub_name: "pubsub".into(),
        api_token: None,
        timeout: std::time::Duration::from_secs(5),
    })
    .unwrap();
    let handoff = Arc::new(Handoff::default());
    let relay = Relay::new(app.db.clone(), publisher, settings.relay.clone(), "todo".into(), handoff.clone());
    handoff.open(relay.owner(), settings.relay.lease, 100);
    // A todo's event as the group commit would hand it over: leased to the relay, then given.
    let hand_over = |title: &'static str| {
        let (app, handoff, owner) = (&app, &handoff, relay.owner().to_owned());
        async move {
            let id = app.create_todo("handoff", title).await["id"].as_str().unwrap().to_owned();
            let lease = handoff.lease(1, chrono::Utc::now().timestamp_millis()).unwrap();
            sqlx::query("UPDATE outbox_queue SET lease_owner = $1, lease_expires_at = $2 WHERE todo_id = $3")
                .bind(owner)
                .bind(lease.until_ms)
                .bind(&id)
                .execute(&app.db.writer)
                .await
                .unwrap();
            let event = todo::outbox::history(&app.db.reader, id.parse().unwrap()).await.unwrap().remove(0);
            handoff.hand_over(&lease, vec![event]).unwrap();
            id
        }
    };
    let published = |ids: &[&String]| {
        let by_todo = sidecar.accepted_by_todo();
        ids.iter().map(|id| by_todo.contains_key(*id)).collect::<Vec<bool>>()
    };

    let unleased = app.create_todo("claim", "only a claim finds me").await["id"].as_str().unwrap().to_owned();
    let handed = hand_over("handed over").await;
    let round = relay.run_once().await.unwrap();
    assert_eq!(round.published, 2, "a relay's first round claims");
    assert_eq!(published(&[&unleased, &handed]), [true, true]);
    // Having published a claimed event, it claims once more: that todo's next may be queued.
    let round = relay.run_once().await.unwrap();
    assert_eq!(round.claimed, 0, "nothing else was queued");

    let waiting = app.create_todo("claim", "committed without a word").await["id"].as_str().unwrap().to_owned();
    let handed = hand_over("handed over, no claim").await;
    let round = relay.run_once().await.unwrap();
    assert_eq!((round.claimed, round.published), (1, 1), "handed-over events alone: no claim");
    assert_eq!(published(&[&waiting, &handed]), [false, true]);

    let handed = hand_over("handed over, and a commit asks").await;
    handoff.claimable_committed([waiting.parse().unwrap()]);
    let round = relay.run_once().await.unwrap();
    assert_eq!(round.published, 2, "the commit's flag makes the round claim too");
    assert_eq!(published(&[&waiting, &handed]), [true, true]);

    // A full batch handed over still leaves a claim room (RELAY_BATCH_SIZE 4 here).
    let waiting = app.create_todo("claim", "behind a full hand-off").await["id"].as_str().unwrap().to_owned();
    for title in ["full 1", "full 2", "full 3", "full 4"] {
        hand_over(title).await;
    }
    handoff.claimable_committed([waiting.parse().unwrap()]);
    let round = relay.run_once().await.unwrap();
    assert_eq!(round.published, 3, "half the batch handed over, the rest claimed");
    assert_eq!(published(&[&waiting]), [true], "claimed although a full batch was handed over");
    assert_eq!(relay.run_once().await.unwrap().published, 2, "the rest of the hand-off next");
    app.stop().await;
}

/// A todo changed while its first event, handed over, is being published: the change's commit
/// asks for a claim, which skips the change's event (its todo still has one queued), so
/// publishing the first must ask again. The poll interval is far longer than the test.
async fn a_change_behind_a_handed_over_event_follows_it_at_once(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    let test_db = Arc::new(TestDb::new(backend).await);
    let app = TestApp::spawn_with(test_db, &sidecar, &[("RELAY_POLL_INTERVAL_MS", "600000")]).await;
    // Past the relay's first round, which claims whatever the queue holds.
    let before = app.create_todo("u", "before").await["id"].as_str().unwrap().to_owned();
    sidecar.wait_for_accepted(1).await;
    sidecar.hold();
    let todo = app.create_todo("u", "changed in flight").await["id"].as_str().unwrap().to_owned();
    let in_flight = sidecar.bulk_requests();
    eventually("its first event in flight", DEADLINE, || async { (sidecar.bulk_requests() > in_flight).then_some(()) })
        .await;
    app.patch_json(&format!("/todos/{todo}"), &json!({"title": "changed"})).await;
    eventually("the change's event queued", DEADLINE, || async {
        let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox_queue WHERE todo_id = $1")
            .bind(&todo)
            .fetch_one(&app.db.reader)
            .await
            .unwrap();
        (queued == 2).then_some(())
    })
    .await;
    sidecar.release();
    sidecar.wait_for_accepted(3).await;
    assert_in_order(&sidecar.accepted_by_todo(), &HashMap::from([(todo, 2), (before, 1)]));
    app.stop().await;
}

/// A stream of new todos, each handed over, is published by at most two rounds at once however
/// many workers are free (`HANDED_ROUNDS_IN_FLIGHT` in src/relay.rs): more would only split it
/// into more, smaller requests. The workers left wait, and publish what piled up once a round
/// is done. The poll interval is far longer than the test, so no round claims.
async fn handed_over_events_go_out_in_at_most_two_rounds_at_once(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    let test_db = Arc::new(TestDb::new(backend).await);
    // Held publishes must not time out into retries, which would be claims.
    let overrides = [
        ("RELAY_WORKERS", "4"),
        ("RELAY_POLL_INTERVAL_MS", "600000"),
        ("RELAY_PUBLISH_TIMEOUT_MS", "30000"),
        ("RELAY_LEASE_MS", "120000"),
    ];
    let app = TestApp::spawn_with(test_db, &sidecar, &overrides).await;
    // Past the relay's first rounds, which claim whatever the queue holds.
    app.create_todo("u", "before").await;
    sidecar.wait_for_accepted(1).await;
    sidecar.hold();
    let before = sidecar.bulk_requests();
    for (title, in_flight) in [("first", 1), ("second", 2)] {
        app.create_todo("u", title).await;
        eventually(&format!("{title} in flight"), DEADLINE, || async {
            (sidecar.bulk_requests() >= before + in_flight).then_some(())
        })
        .await;
    }
    for title in ["third", "fourth"] {
        app.create_todo("u", title).await;
    }
    // Watching for an absence: two workers are free and were woken by these commits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sidecar.bulk_requests() - before, 2, "two rounds in flight, the third and fourth waiting");
    sidecar.release();
    sidecar.wait_for_accepted(5).await;
    app.stop().await;
}

async fn retries_failed_publishes_without_loss_while_other_todos_flow(backend: Backend) {
    let (app, sidecar) = TestApp::spawn(backend).await;
    // Hold the stand-in so it fails the first todo (its titles: "blocked", "b1", "b2") until the
    // second todo's three events are in. Told apart by title, which the events carry from the
    // start: the relay may publish a create before its response reaches the test.
    let other_accepted = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    sidecar.respond_with({
        let (other_accepted, failures) = (other_accepted.clone(), failures.clone());
        move |record, _| {
            let title = record.json()["data"]["title"].as_str().unwrap_or_default().to_owned();
            if ["blocked", "b1", "b2"].contains(&title.as_str()) {
                if other_accepted.load(Ordering::SeqCst) < 3 {
                    failures.fetch_add(1, Ordering::SeqCst);
                    return Some(if failures.load(Ordering::SeqCst) % 2 == 0 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    });
                }
            } else {
                other_accepted.fetch_add(1, Ordering::SeqCst);
            }
            Some(StatusCode::NO_CONTENT)
        }
    });
    let first = app.create_todo("u", "blocked").await["id"].as_str().unwrap().to_owned();
    // Queue two more events behind the failing one before anything else happens.
    for title in ["b1", "b2"] {
        app.patch_json(&format!("/todos/{first}"), &json!({"title": title})).await;
    }
    let (attempts, last_error) = eventually("a recorded failure", DEADLINE, || async {
        pending_attempts(&app, &first).await.filter(|(attempts, _)| *attempts >= 1)
    })
    .await;
    assert!(attempts >= 1);
    assert!(
        last_error.as_deref().unwrap_or("").contains("ERR_PUBSUB_PUBLISH_MESSAGE"),
        "the failure is kept with daprd's error body: {last_error:?}"
    );
    assert!(sidecar.accepted().iter().all(|r| r.todo_id() != first), "nothing of the failing todo got through yet");

    let second = app.create_todo("u", "flows").await["id"].as_str().unwrap().to_owned();
    for title in ["s1", "s2"] {
        app.patch_json(&format!("/todos/{second}"), &json!({"title": title})).await;
    }
    sidecar.wait_for_accepted(6).await;
    assert!(failures.load(Ordering::SeqCst) >= 1);
    let accepted = sidecar.accepted();
    let first_success_of_blocked = accepted.iter().position(|r| r.todo_id() == first).unwrap();
    let last_of_second = accepted.iter().rposition(|r| r.todo_id() == second).unwrap();
    assert!(last_of_second < first_success_of_blocked, "the other todo's events flowed while the first was failing");
    assert_in_order(&sidecar.accepted_by_todo(), &HashMap::from([(first, 3), (second, 3)]));
}

async fn waits_for_a_sidecar_that_refuses_connections_and_resumes_at_once(backend: Backend) {
    let (app, mut sidecar) = TestApp::spawn(backend).await;
    app.create_todo("u", "warm-up").await;
    sidecar.wait_for_accepted(1).await;
    sidecar.stop().await;
    let health_checks = sidecar.health_checks();

    let todo = app.create_todo("u", "while down").await["id"].as_str().unwrap().to_owned();
    app.post_empty(&format!("/todos/{todo}/complete")).await;
    // The relay tried once, handed nothing over, and says why; no attempt is counted, so no
    // backoff builds up while it waits for the sidecar's health.
    let (attempts, last_error) = eventually("the relay to find the sidecar unreachable", DEADLINE, || async {
        pending_attempts(&app, &todo).await.filter(|(_, error)| error.is_some())
    })
    .await;
    assert!(last_error.unwrap_or_default().contains("could not reach the Dapr sidecar"));
    assert_eq!(attempts, 0, "an unreachable sidecar is not a failed attempt");

    sidecar.restart().await;
    sidecar.wait_for_accepted(3).await;
    assert_in_order(&sidecar.accepted_by_todo(), &HashMap::from([(todo.clone(), 2)]));
    assert!(sidecar.health_checks() > health_checks, "the relay resumed on the sidecar's outbound health");
    let most_attempts: i64 = sqlx::query("SELECT MAX(attempts) AS attempts FROM outbox_events WHERE todo_id = $1")
        .bind(&todo)
        .fetch_one(&app.db.reader)
        .await
        .unwrap()
        .get("attempts");
    assert_eq!(most_attempts, 0);
}

async fn retries_after_a_publish_timeout(backend: Backend) {
    let (app, sidecar) = TestApp::spawn(backend).await;
    // The first call hangs past the relay's 1 s timeout; daprd may still have published it, so
    // a second copy is the at-least-once contract, not a bug.
    sidecar.respond_with(|_, call| (call > 0).then_some(StatusCode::NO_CONTENT));
    let todo = app.create_todo("u", "slow").await["id"].as_str().unwrap().to_owned();
    app.patch_json(&format!("/todos/{todo}"), &json!({"title": "after"})).await;
    sidecar.wait_for_accepted(2).await;
    let recorded = sidecar.recorded();
    assert_eq!(recorded[0].answered, StatusCode::GATEWAY_TIMEOUT, "the first attempt hung");
    assert_eq!(recorded[0].event_id(), recorded[1].event_id(), "the same event was retried, with the same id");
    assert_in_order(&sidecar.accepted_by_todo(), &HashMap::from([(todo.clone(), 2)]));
    let (attempts, error): (i64, Option<String>) = {
        let row = sqlx::query("SELECT attempts, last_error FROM outbox_events WHERE todo_id = $1 AND seq = 1")
            .bind(&todo)
            .fetch_one(&app.db.reader)
            .await
            .unwrap();
        (row.get("attempts"), row.get("last_error"))
    };
    assert_eq!(attempts, 1);
    assert!(error.unwrap_or_default().contains("did not answer within"));
}

async fn publishes_nothing_before_outbound_health(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    sidecar.set_outbound_healthy(false);
    let app = TestApp::spawn_with(Arc::new(TestDb::new(backend).await), &sidecar, &[]).await;
    app.create_todo("u", "early").await;
    eventually("the relay to poll outbound health", DEADLINE, || async {
        (sidecar.health_checks() >= 3).then_some(())
    })
    .await;
    assert!(sidecar.recorded().is_empty(), "published before the sidecar was ready");
    sidecar.set_outbound_healthy(true);
    sidecar.wait_for_accepted(1).await;
}

/// daprd takes request bodies up to 4 MiB: a round of large events goes out in requests of at
/// most 1 MiB each.
async fn a_round_too_big_for_one_request_is_sent_in_several(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    sidecar.set_outbound_healthy(false);
    let app = TestApp::spawn_with(Arc::new(TestDb::new(backend).await), &sidecar, &[]).await;
    // 2,000 four-byte characters: about 8 KB of event data each, 1.2 MB for the lot.
    let description = "\u{1F600}".repeat(2000);
    for i in 0..150 {
        let created = app
            .post_json("/todos", &json!({"userId": "u", "title": format!("big {i}"), "description": description}))
            .await;
        assert_eq!(created.status(), 201);
    }
    sidecar.set_outbound_healthy(true);
    let accepted = sidecar.wait_for_accepted(150).await;
    let mut requests: HashMap<String, usize> = HashMap::new();
    for record in &accepted {
        // One producer span, so one traceparent, per request.
        *requests.entry(record.headers["traceparent"].to_str().unwrap().to_owned()).or_default() += 1;
    }
    assert!(requests.len() >= 2, "one request carried all 150: {requests:?}");
    for (request, entries) in &requests {
        let bytes: usize =
            accepted.iter().filter(|r| r.headers["traceparent"] == request.as_str()).map(|r| r.body.len()).sum();
        assert!(bytes <= 1024 * 1024, "{entries} entries, {bytes} bytes of events in one request");
    }
}

/// A failed publish is claimed again once its backoff has passed, not at the next poll: the
/// relay keeps when each retry comes due (here the poll is 10 minutes away, the backoff 20 ms).
async fn a_failed_publish_is_retried_when_its_backoff_ends_not_at_the_next_poll(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    sidecar.respond_with(|_, call| {
        Some(if call == 0 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::NO_CONTENT })
    });
    let test_db = Arc::new(TestDb::new(backend).await);
    let app = TestApp::spawn_with(test_db, &sidecar, &[("RELAY_POLL_INTERVAL_MS", "600000")]).await;
    let todo = app.create_todo("u", "retried").await["id"].as_str().unwrap().to_owned();
    let accepted = sidecar.wait_for_accepted(1).await;
    assert_eq!(accepted[0].todo_id(), todo);
    let attempts = sidecar.recorded();
    assert!(attempts.len() >= 2 && !attempts[0].answered.is_success(), "the first attempt failed: {attempts:?}");
    app.stop().await;
}

/// Without `RELAY_INSTANCE` the restarted instance is a stranger to the dead one's lease: the
/// event goes out once the lease (2.5 s here) has run out.
async fn an_event_claimed_by_a_crashed_instance_is_published_after_restart(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    let test_db = Arc::new(TestDb::new(backend).await);
    let short_lease = [("RELAY_LEASE_MS", "2500")];
    let todo = crash_mid_publish(&test_db, &sidecar, &short_lease).await;
    restart_and_expect_published(test_db, &sidecar, &short_lease, &todo).await;
}

/// With `RELAY_INSTANCE`, the restarted instance gives up its last run's leases as it starts:
/// the event is published at once, although its lease (10 minutes) outlives the test's deadline.
async fn an_instance_restarted_under_its_name_releases_its_last_runs_leases_at_once(backend: Backend) {
    let sidecar = FakeSidecar::start().await;
    let test_db = Arc::new(TestDb::new(backend).await);
    let named = [("RELAY_LEASE_MS", "600000"), ("RELAY_INSTANCE", "todo-0")];
    let todo = crash_mid_publish(&test_db, &sidecar, &named).await;
    let inspect = test_db.connect(todo::startup::MIGRATIONS).await;
    let leased_to: Option<String> =
        sqlx::query_scalar("SELECT lease_owner FROM outbox_queue").fetch_one(&inspect.reader).await.unwrap();
    inspect.close().await;
    assert_eq!(leased_to.as_deref(), Some("todo-0"), "the crash left the event leased");
    restart_and_expect_published(test_db, &sidecar, &named, &todo).await;
}

/// Starts an instance whose publishes hang, creates a todo, and crashes the instance in the
/// middle of publishing its event, so it dies holding the event's lease. Returns the todo's id.
async fn crash_mid_publish(test_db: &Arc<TestDb>, sidecar: &FakeSidecar, settings: &[(&str, &str)]) -> String {
    sidecar.respond_with(|_, _| None);
    let first = TestApp::spawn_with(test_db.clone(), sidecar, settings).await;
    let todo = first.create_todo("u", "survives").await["id"].as_str().unwrap().to_owned();
    eventually("the first instance to be mid-publish", DEADLINE, || async {
        (!sidecar.recorded().is_empty()).then_some(())
    })
    .await;
    first.crash().await;
    todo
}

/// Starts the next instance, the sidecar accepting now: the todo's event must be published and
/// marked published within the deadline.
async fn restart_and_expect_published(
    test_db: Arc<TestDb>,
    sidecar: &FakeSidecar,
    settings: &[(&str, &str)],
    todo: &str,
) {
    sidecar.respond_with(|_, _| Some(StatusCode::NO_CONTENT));
    let second = TestApp::spawn_with(test_db, sidecar, settings).await;
    let accepted = sidecar.wait_for_accepted(1).await;
    assert_eq!(accepted[0].todo_id(), todo);
    eventually("the event to be marked published", DEADLINE, || async {
        pending_attempts(&second, todo).await.is_none().then_some(())
    })
    .await;
    second.stop().await;
}

/// The binary itself: an event committed before SIGKILL is published by the next process, and
/// SIGTERM exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_publishes_after_sigkill_and_exits_cleanly_on_sigterm() {
    let sidecar = FakeSidecar::start().await;
    sidecar.set_outbound_healthy(false);
    let test_db = TestDb::new(Backend::Sqlite).await;
    let (mut first, address) = spawn_binary(&test_db.url, sidecar.port());
    let http = reqwest::Client::new();
    let created =
        http.post(format!("{address}/todos")).json(&json!({"userId": "u", "title": "durable"})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    first.kill().expect("SIGKILL the first process");
    first.wait().unwrap();
    assert!(sidecar.recorded().is_empty());

    sidecar.set_outbound_healthy(true);
    let (second, _) = spawn_binary(&test_db.url, sidecar.port());
    let accepted = sidecar.wait_for_accepted(1).await;
    assert_eq!(accepted[0].json()["data"]["title"], "durable");

    let pid = second.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let second = std::sync::Mutex::new(second);
    let exit = eventually("the process to exit after SIGTERM", DEADLINE, || {
        let exited = second.lock().unwrap().try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(exit.success(), "SIGTERM must exit 0, got {exit:?}");
}

/// Starts the todo binary on a free port and returns it with its base URL, read from its
/// JSON start-up log line.
fn spawn_binary(database_url: &str, sidecar_port: u16) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_todo"))
        .env_clear()
        .env("APP_HOST", "127.0.0.1")
        .env("APP_PORT", "0")
        .env("METRICS_PORT", "0")
        .env("DATABASE_URL", database_url)
        .env("DAPR_HTTP_PORT", sidecar_port.to_string())
        .env("RELAY_RETRY_INITIAL_MS", "20")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the todo binary");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(log) = serde_json::from_str::<Value>(&line) else { continue };
            if log["message"] == "todo service listening" {
                let _ = sender.send(log["addr"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = receiver.recv_timeout(DEADLINE).expect("the binary logged its address");
    (child, format!("http://{addr}"))
}

/// Two replicas on one PostgreSQL database share the relay work: every event is published
/// exactly once (no failures, so no retries) and in order per todo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_publish_each_event_once_in_order() {
    let sidecar = FakeSidecar::start().await;
    let test_db = Arc::new(TestDb::new(Backend::Postgres).await);
    let fast_poll = [("RELAY_POLL_INTERVAL_MS", "20"), ("RELAY_BATCH_SIZE", "5")];
    let replicas = [
        TestApp::spawn_with(test_db.clone(), &sidecar, &fast_poll).await,
        TestApp::spawn_with(test_db.clone(), &sidecar, &fast_poll).await,
    ];
    let mut todos = Vec::new();
    for i in 0..10 {
        todos.push(
            replicas[i % 2].create_todo("replica", &format!("todo {i}")).await["id"].as_str().unwrap().to_owned(),
        );
    }
    let updates = todos.iter().enumerate().flat_map(|(i, id)| {
        let replicas = &replicas;
        (0..4).map(move |n| async move {
            let app = &replicas[(i + n) % 2];
            let response = app
                .http
                .patch(app.url(&format!("/todos/{id}")))
                .json(&json!({"title": format!("rev {n}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        })
    });
    futures::future::join_all(updates).await;
    let expected: HashMap<String, i64> = todos.iter().map(|id| (id.clone(), 5)).collect();
    sidecar.wait_for_accepted(50).await;
    // Give a double publish the chance to show up before counting.
    eventually("all rows marked published", DEADLINE, || async {
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox_events WHERE event_id NOT IN (SELECT event_id FROM outbox_published)",
        )
        .fetch_one(&replicas[0].db.reader)
        .await
        .unwrap();
        (pending == 0).then_some(())
    })
    .await;
    let recorded = sidecar.recorded();
    assert_eq!(recorded.len(), 50, "each event published exactly once");
    assert_in_order(&sidecar.accepted_by_todo(), &expected);
    for replica in replicas {
        replica.stop().await;
    }
}
