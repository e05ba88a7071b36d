//! The repository's Dapr files say what the system relies on. That daprd loads them is shown by
//! every other system test (each daprd starts from `components/` or `k8s/base/dapr/` and
//! `dapr/config.yaml`; daprd only warns about a file it cannot parse, but then the flows fail
//! for want of the component or policy); these check what they say: an
//! inbound retry before the dead-letter topic, the cluster's policy equal to the local one, the
//! run file's apps and ports, and declarative subscriptions equal to the programmatic ones.

use serde_json::{Value, json};

use crate::harness::{DbBackend, Extra, Kind, System, repository};
use crate::on_both_backends;

on_both_backends!(declarative_subscriptions_equal_the_programmatic_ones);

/// Every YAML document in a repository file, as JSON values.
fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repository().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn document(path: &str) -> Value {
    let mut all = documents(path);
    assert_eq!(all.len(), 1, "{path} holds one document");
    all.remove(0)
}

#[test]
fn the_pubsub_component_has_an_inbound_retry_before_the_dead_letter_topic() {
    let resiliency = document("components/resiliency.yaml");
    assert_eq!(resiliency["kind"], "Resiliency");
    let spec = &resiliency["spec"];
    let inbound = &spec["targets"]["components"]["pubsub"]["inbound"];
    let retry = &spec["policies"]["retries"][inbound["retry"].as_str().expect("an inbound retry policy")];
    // Without an inbound retry daprd makes a single attempt; unbounded, RETRY would never end
    // in the dead-letter topic.
    assert_eq!((&retry["policy"], &retry["maxRetries"]), (&json!("exponential"), &json!(5)), "{retry}");
    assert!(spec["policies"]["timeouts"][inbound["timeout"].as_str().expect("an inbound timeout")].is_string());
    let outbound = &spec["targets"]["components"]["pubsub"]["outbound"];
    assert!(spec["policies"]["retries"][outbound["retry"].as_str().expect("an outbound retry")].is_object());
    assert_eq!(document("dapr/config.yaml")["kind"], "Configuration");
}

#[test]
fn the_clusters_resiliency_is_the_local_one() {
    let local = document("components/resiliency.yaml");
    let cluster = document("k8s/base/dapr/resiliency.yaml");
    assert_eq!(local["spec"], cluster["spec"]);
}

#[test]
fn the_run_file_starts_the_three_services_on_their_ports_without_placement() {
    let run = document("dapr/dapr.yaml");
    let apps: Vec<(String, u64, u64, String)> = run["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|app| {
            let id = app["appID"].as_str().unwrap().to_owned();
            (id, app["appPort"].as_u64().unwrap(), app["daprHTTPPort"].as_u64().unwrap(), app["command"][0].to_string())
        })
        .collect();
    let expected = |id: &str, port, http| (id.to_owned(), port, http, format!("\"../../target/release/{id}\""));
    assert_eq!(
        apps,
        [expected("todo", 8080, 3500), expected("notification", 8081, 3501), expected("analytics", 8082, 3502)]
    );
    let common = &run["common"];
    assert_eq!(common["resourcesPaths"], json!(["../components"]));
    assert_eq!(common["configFilePath"], "./config.yaml");
    // No placement (no actors or workflows); the scheduler `make run` starts (scripts/run.sh).
    assert_eq!(
        (&common["placementHostAddress"], &common["schedulerHostAddress"]),
        (&json!(""), &json!("127.0.0.1:50006"))
    );
}

async fn declarative_subscriptions_equal_the_programmatic_ones(backend: DbBackend) {
    let system = System::start(backend, Extra::default()).await;
    for kind in [Kind::Notification, Kind::Analytics] {
        let programmatic: Vec<Value> = system
            .http
            .get(format!("{}/dapr/subscribe", system.consumer(kind).url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let file = format!("k8s/base/dapr/subscriptions-{}.yaml", kind.app_id());
        let declared: Vec<Value> = documents(&file)
            .iter()
            .map(|subscription| {
                assert_eq!(subscription["apiVersion"], "dapr.io/v2alpha1", "{file}");
                assert_eq!(subscription["scopes"], json!([kind.app_id()]), "{file}: scoped to the consumer");
                let spec = &subscription["spec"];
                let mut entry =
                    json!({"pubsubname": spec["pubsubname"], "topic": spec["topic"], "route": spec["routes"]["default"]});
                if !spec["deadLetterTopic"].is_null() {
                    entry["deadLetterTopic"] = spec["deadLetterTopic"].clone();
                }
                entry
            })
            .collect();
        assert_eq!(declared, programmatic, "{file}");
    }
}
