//! The repository's Dapr files: they load in the dev sidecar as written, the declarative
//! subscriptions equal what the consumers answer on /dapr/subscribe, and the run file starts the
//! three services with their ports.

use devsidecar::resources::{self, Direction, RetryKind};
use serde_json::{Value, json};

use crate::harness::{DbBackend, Extra, Kind, System, repository};
use crate::on_both_backends;

on_both_backends!(declarative_subscriptions_equal_the_programmatic_ones);

#[test]
fn components_load_with_an_inbound_retry_before_the_dead_letter_topic() {
    let loaded = resources::load(&[repository().join("components")], "notification").expect("components/ loads");
    let pubsub = loaded.components.iter().find(|c| c.name == "pubsub").expect("a pubsub component");
    assert_eq!(pubsub.kind, "pubsub.redis");
    let inbound = resources::policy_for_component(&loaded.resiliencies, "pubsub", Direction::Inbound);
    let retry = inbound.retry.expect("an inbound retry policy: without one daprd makes a single attempt");
    assert_eq!(
        (retry.policy, retry.max_retries),
        (RetryKind::Exponential, 5),
        "bounded, so RETRY ends in the dead-letter topic"
    );
    assert!(inbound.timeout.is_some());
    assert!(resources::policy_for_component(&loaded.resiliencies, "pubsub", Direction::Outbound).retry.is_some());
    resources::load_configuration(&repository().join("dapr/config.yaml")).expect("dapr/config.yaml is a Configuration");
}

#[test]
fn the_clusters_resiliency_is_the_local_one() {
    let local = resources::load(&[repository().join("components/resiliency.yaml")], "todo").unwrap();
    let cluster = resources::load(&[repository().join("k8s/base/dapr/resiliency.yaml")], "todo").unwrap();
    assert_eq!(local.resiliencies, cluster.resiliencies);
}

#[test]
fn the_run_file_starts_the_three_services_on_their_ports() {
    let plans = devsidecar::run::plan(&repository().join("dapr/dapr.yaml")).expect("dapr/dapr.yaml resolves");
    let apps: Vec<(String, Option<u16>, u16)> =
        plans.iter().map(|p| (p.app_id.clone(), p.app_port, p.dapr_http_port)).collect();
    assert_eq!(
        apps,
        [
            ("todo".into(), Some(8080), 3500),
            ("notification".into(), Some(8081), 3501),
            ("analytics".into(), Some(8082), 3502)
        ]
    );
    for plan in &plans {
        assert_eq!(plan.resources_paths, [repository().join("components")]);
        assert_eq!(plan.config_path.as_deref(), Some(repository().join("dapr/config.yaml").as_path()));
        assert_eq!(plan.command, [format!("../../target/release/{}", plan.app_id)]);
    }
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
        let file = repository().join(format!("k8s/base/dapr/subscriptions-{}.yaml", kind.app_id()));
        let declared =
            resources::load(std::slice::from_ref(&file), kind.app_id()).expect("the subscriptions file loads");
        let declared: Vec<Value> = declared
            .subscriptions
            .iter()
            .map(|s| {
                let mut entry =
                    json!({"pubsubname": s.pubsub_name, "topic": s.topic, "route": s.default_route.clone().unwrap()});
                if let Some(dead) = &s.dead_letter_topic {
                    entry["deadLetterTopic"] = json!(dead);
                }
                entry
            })
            .collect();
        assert_eq!(declared, programmatic, "{}", file.display());
        assert!(resources::load(&[file], "someone-else").unwrap().subscriptions.is_empty(), "scoped to the consumer");
    }
}
