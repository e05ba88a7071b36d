//! The monitoring of k8s/base/monitoring (the alerts and the dashboard) names only metrics the
//! running system really exports: the services' and their daprd's, as scraped.

use std::collections::BTreeSet;
use std::time::Duration;

use service_kit::testing::prometheus;

use crate::harness::{Kind, System, repository};

/// Every metric name the PrometheusRule and the Grafana dashboard use: each `dapr_…`
/// identifier in their expressions (`expr`, and the dashboard variables' `query`), as
/// `scripts/validate-k8s.sh --metric-names` reads them.
fn names_used_by_the_monitoring() -> BTreeSet<String> {
    let monitoring = repository().join("k8s/base/monitoring");
    let rules = std::fs::read_to_string(monitoring.join("alerts.yaml")).expect("the PrometheusRule");
    let rules: serde_json::Value = serde_yaml_ng::from_str(&rules).expect("YAML");
    let dashboard = std::fs::read_to_string(monitoring.join("dashboards/dapr-todo.json")).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("JSON");
    let mut names = BTreeSet::new();
    for document in [&rules, &dashboard] {
        expressions_in(document, &mut names);
    }
    assert!(names.len() >= 10, "the monitoring uses only {names:?}?");
    names
}

fn expressions_in(value: &serde_json::Value, names: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|item| expressions_in(item, names)),
        serde_json::Value::Object(members) => {
            for (key, member) in members {
                if key == "expr" || key == "query" {
                    metric_names_in(member, names);
                } else {
                    expressions_in(member, names);
                }
            }
        }
        _ => {}
    }
}

fn metric_names_in(value: &serde_json::Value, names: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::String(text) => {
            let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
            let mut rest = text.as_str();
            while let Some(at) = rest.find("dapr_") {
                let starts_a_name =
                    !rest[..at].chars().next_back().is_some_and(|c| is_name(c) || c.is_ascii_uppercase());
                let name: String = rest[at..].chars().take_while(|c| is_name(*c)).collect();
                if starts_a_name {
                    names.insert(name.clone());
                }
                rest = &rest[at + name.len()..];
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| metric_names_in(item, names)),
        serde_json::Value::Object(members) => members.values().for_each(|member| metric_names_in(member, names)),
        _ => {}
    }
}

async fn exported(system: &System) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for kind in [Kind::Todo, Kind::Notification, Kind::Analytics] {
        let service = system.consumer(kind);
        for url in [
            format!("{}/metrics", service.metrics_url),
            format!("http://127.0.0.1:{}/metrics", service.sidecar.metrics_port),
        ] {
            if let Ok(text) = async { reqwest::get(&url).await?.error_for_status()?.text().await }.await {
                names.extend(prometheus::names(&text));
            }
        }
    }
    names
}

/// Polls the scrapes until they hold every name the monitoring uses (some appear only once
/// something happened: a delivery, a duplicate, a dead letter); fails naming the missing ones.
pub async fn assert_the_monitoring_uses_exported_metrics(system: &System) {
    let used = names_used_by_the_monitoring();
    let started = tokio::time::Instant::now();
    loop {
        let exported = exported(system).await;
        let missing: Vec<&String> = used.difference(&exported).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the alerts or the dashboard use metrics nothing exports: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn reads_the_names_the_validator_reads() {
    let script = std::process::Command::new(repository().join("scripts/validate-k8s.sh"))
        .arg("--metric-names")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/validate-k8s.sh runs");
    // The only caller in the test run: on a fresh clone it installs the validator's virtualenv.
    assert!(script.status.success(), "scripts/validate-k8s.sh --metric-names failed");
    let listed: BTreeSet<String> = String::from_utf8(script.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(names_used_by_the_monitoring(), listed);
}
