//! The subscriber side of the Dapr pub/sub HTTP contract as data
//! (https://docs.dapr.io/reference/api/pubsub_api/, pinned against daprd in
//! `crates/dapr-contract`): what an app answers to `GET /dapr/subscribe`, the dead-letter topic
//! names, and the three answers to a delivery (`SUCCESS`, `RETRY`, `DROP`). Serving them is
//! `crates/dapr-consumer`'s job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One entry of the app's `GET /dapr/subscribe` answer (v1 shape: one route per topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    pub pubsubname: String,
    pub topic: String,
    pub route: String,
    /// Where daprd sends what this subscription drops or cannot deliver; without one a failed
    /// delivery is acknowledged and gone (contract §3.5, §11).
    #[serde(rename = "deadLetterTopic", skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The dead-letter topic of `topic` for consumer `app_id`: `<topic>.<app_id>.deadletter`. One
/// per consumer, because every app id receives every message of a topic it subscribes to: a
/// shared dead-letter topic would put one consumer's poison in every consumer's store.
pub fn dead_letter_topic(app_id: &str, topic: &str) -> String {
    format!("{topic}.{app_id}.deadletter")
}

/// A consumer's programmatic subscriptions: each topic delivered to `/events/<topic>` with its
/// dead-letter topic, and each dead-letter topic delivered to `/dead-letters/<topic>` (the
/// original topic's name, so the store knows where a replay goes).
pub fn with_dead_letters<'a>(
    pubsub_name: &str,
    app_id: &str,
    topics: impl IntoIterator<Item = &'a str>,
) -> Vec<Subscription> {
    let mut list = Vec::new();
    for topic in topics {
        let dead = dead_letter_topic(app_id, topic);
        list.push(Subscription {
            pubsubname: pubsub_name.to_owned(),
            topic: topic.to_owned(),
            route: format!("/events/{topic}"),
            dead_letter_topic: Some(dead.clone()),
            metadata: BTreeMap::new(),
        });
        list.push(Subscription {
            pubsubname: pubsub_name.to_owned(),
            topic: dead,
            route: format!("/dead-letters/{topic}"),
            dead_letter_topic: None,
            metadata: BTreeMap::new(),
        });
    }
    list
}

/// What the app tells daprd about one delivery (contract §3.4), as `{"status": …}` in a 200
/// answer: daprd reads the status only from a 2xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Processed (or already processed before): acknowledge.
    Success,
    /// A transient failure: deliver again per the resiliency policy, then dead-letter.
    Retry,
    /// Poison: never deliverable; daprd sends it to the dead-letter topic.
    Drop,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_and_subscriptions_have_daprs_shape() {
        let subscription = Subscription {
            pubsubname: "pubsub".into(),
            topic: "todos.task.created".into(),
            route: "/events/created".into(),
            dead_letter_topic: Some(dead_letter_topic("notification", "todos.task.created")),
            metadata: BTreeMap::new(),
        };
        assert_eq!(
            serde_json::to_value(&subscription).unwrap(),
            json!({"pubsubname": "pubsub", "topic": "todos.task.created", "route": "/events/created",
                   "deadLetterTopic": "todos.task.created.notification.deadletter"})
        );
        assert_eq!(serde_json::to_value(DeliveryStatus::Retry).unwrap(), json!("RETRY"));
    }
}
