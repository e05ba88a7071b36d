//! The monitoring of k8s/base/monitoring (the alerts and the dashboard) names only metrics the
//! running system really exports: the services' and their daprd's, as scraped.

use std::collections::BTreeSet;
use std::time::Duration;

use service_kit::testing::prometheus;

use crate::harness::{Kind, System, repository};

/// Every metric name the PrometheusRule and the Grafana dashboard use
/// (`scripts/validate-k8s.sh --metric-names`).
fn names_used_by_the_monitoring() -> BTreeSet<String> {
    let output = std::process::Command::new(repository().join("scripts/validate-k8s.sh"))
        .arg("--metric-names")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/validate-k8s.sh runs");
    assert!(output.status.success(), "scripts/validate-k8s.sh --metric-names failed");
    let names: BTreeSet<String> = String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect();
    assert!(names.len() >= 10, "the monitoring uses only {names:?}?");
    names
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
