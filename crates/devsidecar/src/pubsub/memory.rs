//! `pubsub.in-memory` with daprd's semantics (contract §7): one process only; a publish goes to
//! every subscription of the topic that exists at that moment (none: silently discarded); each
//! subscription delivers strictly one message at a time, and a publish waits until the
//! subscription's previous delivery has finished; a handler error is only logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Handler, Message};

#[derive(Clone, Default)]
pub struct InMemory {
    subscriptions: Arc<Mutex<Vec<Subscription>>>,
}

#[derive(Clone)]
struct Subscription {
    topic: String,
    handler: Handler,
    /// Held for the duration of one delivery: the next publish to this subscription waits for it.
    in_flight: Arc<tokio::sync::Mutex<()>>,
    shutdown: CancellationToken,
}

impl Subscription {
    /// A subscription topic ending in `*` receives every topic with that prefix.
    fn matches(&self, topic: &str) -> bool {
        match self.topic.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => self.topic == topic,
        }
    }
}

impl InMemory {
    pub async fn publish(&self, topic: &str, data: Bytes, metadata: &BTreeMap<String, String>) {
        let targets: Vec<Subscription> = self
            .subscriptions
            .lock()
            .expect("subscription list lock")
            .iter()
            .filter(|s| !s.shutdown.is_cancelled() && s.matches(topic))
            .cloned()
            .collect();
        if targets.is_empty() {
            tracing::debug!(topic, "in-memory publish with no subscriber: discarded");
        }
        for subscription in targets {
            let permit = subscription.in_flight.clone().lock_owned().await;
            let message = Message { topic: topic.to_owned(), data: data.clone(), metadata: metadata.clone() };
            tokio::spawn(async move {
                if let Err(error) = (subscription.handler)(message).await {
                    tracing::error!(topic = %subscription.topic, %error, "in-memory delivery failed; the message is dropped");
                }
                drop(permit);
            });
        }
    }

    pub fn subscribe(&self, topic: &str, handler: Handler, shutdown: CancellationToken) -> JoinHandle<()> {
        let subscription = Subscription {
            topic: topic.to_owned(),
            handler,
            in_flight: Arc::new(tokio::sync::Mutex::new(())),
            shutdown: shutdown.clone(),
        };
        let in_flight = subscription.in_flight.clone();
        self.subscriptions.lock().expect("subscription list lock").push(subscription);
        let subscriptions = self.subscriptions.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            subscriptions
                .lock()
                .expect("subscription list lock")
                .retain(|s| !(s.topic == topic && s.shutdown.is_cancelled()));
            // Let the delivery in progress finish before reporting the subscription stopped.
            let _ = in_flight.lock().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recorder() -> (Handler, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = {
            let seen = seen.clone();
            Arc::new(move |message: Message| {
                let seen = seen.clone();
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    seen.lock().unwrap().push(String::from_utf8_lossy(&message.data).into_owned());
                    Ok(())
                })
            })
        };
        (handler, seen)
    }

    #[tokio::test]
    async fn delivers_in_order_and_discards_without_subscribers() {
        let broker = InMemory::default();
        broker.publish("orders", Bytes::from_static(b"lost"), &BTreeMap::new()).await;
        let (handler, seen) = recorder();
        let shutdown = CancellationToken::new();
        broker.subscribe("orders", handler, shutdown.clone());
        for n in 0..5 {
            broker.publish("orders", Bytes::from(format!("m{n}")), &BTreeMap::new()).await;
        }
        // The fifth publish returned only after the fourth delivery finished; wait for the last.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().len() < 5 {
            assert!(tokio::time::Instant::now() < deadline, "deliveries did not finish");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*seen.lock().unwrap(), ["m0", "m1", "m2", "m3", "m4"]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn wildcard_subscriptions_match_prefixes() {
        let broker = InMemory::default();
        let (handler, seen) = recorder();
        broker.subscribe("todos.*", handler, CancellationToken::new());
        broker.publish("todos.task.created", Bytes::from_static(b"a"), &BTreeMap::new()).await;
        broker.publish("orders", Bytes::from_static(b"b"), &BTreeMap::new()).await;
        broker.publish("todos.task.deleted", Bytes::from_static(b"c"), &BTreeMap::new()).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "deliveries did not finish");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*seen.lock().unwrap(), ["a", "c"]);
    }
}
