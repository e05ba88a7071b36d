//! Reading a Prometheus text exposition in tests: the value of one series, found by name and
//! labels in any order.

/// The value of the series `name` whose labels include every pair of `labels` (summed when
/// several match, as a PromQL `sum` over them would); `None` when none does.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let has = |(key, wanted): &(&str, &str)| {
            series_labels.split("\",").any(|pair| pair.trim_end_matches('"') == format!("{key}=\"{wanted}"))
        };
        if series_name == name && labels.iter().all(has) {
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line:?} has no number"));
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// Every metric name the exposition has a sample of (histogram series under their own
/// `_bucket`, `_sum` and `_count` names).
pub fn names(exposition: &str) -> std::collections::BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# TYPE dapr_todo_deliveries_total counter\n\
        dapr_todo_deliveries_total{topic=\"todos.task.created\",answer=\"SUCCESS\"} 3\n\
        dapr_todo_deliveries_total{topic=\"todos.task.completed\",answer=\"SUCCESS\"} 2\n\
        dapr_todo_deliveries_total{topic=\"todos.task.created\",answer=\"DROP\"} 1\n\
        dapr_todo_outbox_pending_events 0\n";

    #[test]
    fn finds_series_by_name_and_labels() {
        assert_eq!(sample(EXPOSITION, "dapr_todo_deliveries_total", &[("answer", "SUCCESS")]), Some(5.0));
        let created_drop = [("answer", "DROP"), ("topic", "todos.task.created")];
        assert_eq!(sample(EXPOSITION, "dapr_todo_deliveries_total", &created_drop), Some(1.0));
        assert_eq!(sample(EXPOSITION, "dapr_todo_deliveries_total", &[("answer", "RETRY")]), None);
        assert_eq!(sample(EXPOSITION, "dapr_todo_outbox_pending_events", &[]), Some(0.0));
        assert_eq!(sample(EXPOSITION, "dapr_todo_outbox", &[]), None);
        assert!(names(EXPOSITION).contains("dapr_todo_outbox_pending_events"));
    }
}
