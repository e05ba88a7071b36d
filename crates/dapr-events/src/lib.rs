//! Everything the dapr-todo services share about Dapr pub/sub and their events.
//!
//! The services talk to each other only through the Dapr sidecar's HTTP API, so this crate is
//! the one place that knows the wire format: the CloudEvents 1.0 envelope ([`cloudevent`]), the
//! event catalog with its payloads and topics ([`catalog`]), the publish client with its health
//! wait ([`publish`]), the subscriber side: subscriptions, SUCCESS/RETRY/DROP answers, the app
//! token, reading deliveries ([`subscriber`]), and the retry schedule used for anything that
//! talks to the sidecar ([`backoff`]).
//!
//! We do not use the `dapr` crate: its client is gRPC-only and its subscriber macro always
//! acknowledges, which contradicts the HTTP API and the SUCCESS/RETRY/DROP contract.

pub mod backoff;
pub mod catalog;
pub mod cloudevent;
pub mod publish;
pub mod subscriber;
pub mod trace;

pub use backoff::Backoff;
pub use catalog::{TodoEventData, TodoEventType, TodoStatus};
pub use cloudevent::CloudEvent;
pub use publish::{DaprPublisher, PublishError, PublisherConfig};
