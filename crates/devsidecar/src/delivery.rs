//! The subscription runtime: what daprd does with each message a component hands it
//! (contract §3): checks, routing, delivery to the app with inbound retries, and the
//! dead-letter topic. Its verdict goes back to the component, which acks or not.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::app::{AppChannel, AppVerdict};
use crate::envelope;
use crate::policy::Policy;
use crate::pubsub::{Broker, Handler, HandlerError, Message};
use crate::routing::{Routes, app_path};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionKind {
    Declarative,
    Programmatic,
}

/// A subscription as it runs: one per (pubsub, topic).
#[derive(Debug)]
pub struct ActiveSubscription {
    pub pubsub_name: String,
    pub topic: String,
    pub metadata: BTreeMap<String, String>,
    pub routes: Routes,
    pub dead_letter_topic: Option<String>,
    pub kind: SubscriptionKind,
}

/// Everything one component's subscriptions need to deliver.
pub struct Deliverer {
    pub app: AppChannel,
    pub broker: Broker,
    pub inbound: Policy,
    pub outbound: Policy,
}

impl Deliverer {
    pub fn handler(self: &Arc<Self>, subscription: Arc<ActiveSubscription>) -> Handler {
        let deliverer = self.clone();
        Arc::new(move |message| {
            let (deliverer, subscription) = (deliverer.clone(), subscription.clone());
            Box::pin(async move { deliverer.handle(&subscription, message).await })
        })
    }

    async fn handle(&self, subscription: &ActiveSubscription, message: Message) -> Result<(), HandlerError> {
        let raw = match envelope::is_raw_payload(&subscription.metadata) {
            Ok(raw) => raw,
            Err(error) => return self.dead_letter_or_fail(subscription, &message, &error.to_string()).await,
        };
        let body = if raw {
            Bytes::from(envelope::raw_payload_delivery(
                &message.data,
                &message.topic,
                &subscription.pubsub_name,
                &message.metadata,
            ))
        } else {
            message.data.clone()
        };
        let event = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(event)) => event,
            _ => return self.dead_letter_or_fail(subscription, &message, "the message is not a JSON object").await,
        };
        if envelope::is_expired(&event, chrono::Utc::now()) {
            tracing::warn!(topic = %message.topic, "message expired; dropped");
            self.dead_letter_best_effort(subscription, &message).await;
            return Ok(());
        }
        let event = Value::Object(event);
        let path = match subscription.routes.path_for(&event) {
            Ok(Some(path)) => app_path(path),
            Ok(None) => {
                tracing::warn!(topic = %message.topic, "no route matched the message; dropped");
                self.dead_letter_best_effort(subscription, &message).await;
                return Ok(());
            }
            Err(error) => return self.dead_letter_or_fail(subscription, &message, &error.to_string()).await,
        };
        let headers = delivery_headers(subscription, &message, &event);
        self.deliver_with_retries(subscription, &message, &path, body, &headers).await
    }

    /// The inbound policy around each attempt; DROP/404 end the loop (through the DLT when one
    /// is set); exhausted retries go to the DLT, else back to the component.
    async fn deliver_with_retries(
        &self,
        subscription: &ActiveSubscription,
        message: &Message,
        path: &str,
        body: Bytes,
        headers: &BTreeMap<String, String>,
    ) -> Result<(), HandlerError> {
        let started = tokio::time::Instant::now();
        let mut retries = 0u32;
        loop {
            // An open breaker fails the delivery at once and ends the retry loop.
            if let Some(Err(open)) = self.inbound.breaker.as_ref().map(|b| b.admit()) {
                tracing::warn!(topic = %message.topic, retries, "delivery refused: {open}");
                return self.dead_letter_or_fail(subscription, message, &open.to_string()).await;
            }
            let verdict = self.attempt(path, body.clone(), headers).await;
            if let Some(breaker) = &self.inbound.breaker {
                breaker.record(!matches!(verdict, AppVerdict::Retry { .. }));
            }
            let (reason, status) = match verdict {
                AppVerdict::Success => return Ok(()),
                AppVerdict::Drop => {
                    tracing::warn!(topic = %message.topic, "the app dropped the message");
                    match self.publish_dead_letter(subscription, message).await {
                        DeadLetter::NotConfigured | DeadLetter::Published => return Ok(()),
                        // A failed DLT publish turns the drop into a failure (contract §3.5).
                        DeadLetter::Failed(error) => (format!("dead-letter publish failed: {error}"), None),
                    }
                }
                AppVerdict::Retry { reason, status } => (reason, status),
            };
            let retry = self.inbound.retry.as_ref().filter(|r| r.should_retry(retries, status, started.elapsed()));
            match retry {
                Some(schedule) => {
                    let delay = schedule.delay(retries);
                    tracing::debug!(topic = %message.topic, %reason, retry = retries + 1, ?delay, "delivery failed; retrying");
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
                None => {
                    tracing::warn!(topic = %message.topic, %reason, retries, "delivery failed");
                    return self.dead_letter_or_fail(subscription, message, &reason).await;
                }
            }
        }
    }

    async fn attempt(&self, path: &str, body: Bytes, headers: &BTreeMap<String, String>) -> AppVerdict {
        let delivery = self.app.deliver(path, body, headers);
        match self.inbound.timeout {
            None => delivery.await,
            Some(limit) => tokio::time::timeout(limit, delivery).await.unwrap_or_else(|_| AppVerdict::Retry {
                reason: format!("the app did not answer within {limit:?}"),
                status: None,
            }),
        }
    }

    async fn dead_letter_or_fail(
        &self,
        subscription: &ActiveSubscription,
        message: &Message,
        reason: &str,
    ) -> Result<(), HandlerError> {
        match self.publish_dead_letter(subscription, message).await {
            DeadLetter::Published => Ok(()),
            DeadLetter::NotConfigured => Err(HandlerError(reason.to_owned())),
            DeadLetter::Failed(error) => {
                Err(HandlerError(format!("{reason}; and the dead-letter publish failed: {error}")))
            }
        }
    }

    async fn dead_letter_best_effort(&self, subscription: &ActiveSubscription, message: &Message) {
        if let DeadLetter::Failed(error) = self.publish_dead_letter(subscription, message).await {
            tracing::warn!(%error, "dead-letter publish failed");
        }
    }

    /// The original bytes (not re-wrapped: `topic` inside still names the original topic) to
    /// the subscription's dead-letter topic on the same component, with the message metadata
    /// plus `pubsubName` (contract §3.6), under the component's outbound policy.
    async fn publish_dead_letter(&self, subscription: &ActiveSubscription, message: &Message) -> DeadLetter {
        let Some(topic) = subscription.dead_letter_topic.as_deref().filter(|t| !t.is_empty()) else {
            return DeadLetter::NotConfigured;
        };
        let mut metadata = message.metadata.clone();
        metadata.insert("pubsubName".into(), subscription.pubsub_name.clone());
        match publish_with_policy(&self.broker, &self.outbound, topic, message.data.clone(), &metadata).await {
            Ok(()) => {
                tracing::info!(from = %message.topic, to = topic, "message sent to the dead-letter topic");
                DeadLetter::Published
            }
            Err(error) => DeadLetter::Failed(error),
        }
    }
}

enum DeadLetter {
    NotConfigured,
    Published,
    Failed(String),
}

/// A component publish under an outbound policy (publish API and dead letters alike).
pub async fn publish_with_policy(
    broker: &Broker,
    policy: &Policy,
    topic: &str,
    data: Bytes,
    metadata: &BTreeMap<String, String>,
) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    let mut retries = 0u32;
    loop {
        if let Some(Err(open)) = policy.breaker.as_ref().map(|b| b.admit()) {
            return Err(open.to_string());
        }
        let attempt = broker.publish(topic, data.clone(), metadata);
        let result = match policy.timeout {
            None => attempt.await.map_err(|e| e.to_string()),
            Some(limit) => match tokio::time::timeout(limit, attempt).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("timed out after {limit:?}")),
            },
        };
        if let Some(breaker) = &policy.breaker {
            breaker.record(result.is_ok());
        }
        let Err(error) = result else { return Ok(()) };
        match policy.retry.as_ref().filter(|r| r.should_retry(retries, None, started.elapsed())) {
            Some(schedule) => {
                tokio::time::sleep(schedule.delay(retries)).await;
                retries += 1;
            }
            None => return Err(error),
        }
    }
}

/// Headers of a delivery (contract §3.1): the message metadata, `pubsubname`, and the trace
/// context taken from the envelope.
fn delivery_headers(subscription: &ActiveSubscription, message: &Message, event: &Value) -> BTreeMap<String, String> {
    let mut headers = message.metadata.clone();
    headers.insert("pubsubname".into(), subscription.pubsub_name.clone());
    if let Value::Object(event) = event {
        headers.insert("traceparent".into(), envelope::delivery_traceparent(event));
        if let Some(state) = event.get("tracestate").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            headers.insert("tracestate".into(), state.to_owned());
        }
    }
    headers
}
