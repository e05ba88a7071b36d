//! The wire format of the dapr-todo events and the Dapr HTTP client that publishes them.
//!
//! The services talk to each other only through the Dapr sidecar's HTTP API, so this crate is
//! the one place that knows what goes over it: the CloudEvents 1.0 envelope ([`cloudevent`])
//! and its timestamps ([`timestamp`]), the event catalog with its payloads and topics
//! ([`catalog`]), the publish client with its health wait
//! ([`publish`]) and the retry schedule for anything that talks to the sidecar ([`backoff`]);
//! for subscribers, the shapes of subscriptions and delivery answers ([`subscription`]) and the
//! reading of a delivered event ([`delivery`]). It has no web framework in it: serving those
//! routes is `crates/dapr-consumer`'s job.
//!
//! We do not use the `dapr` crate: its client is gRPC-only and its subscriber macro always
//! acknowledges, which contradicts the HTTP API and the SUCCESS/RETRY/DROP contract.

pub mod backoff;
pub mod catalog;
pub mod cloudevent;
pub mod delivery;
pub mod publish;
pub mod schema;
pub mod subscription;
pub mod timestamp;

pub use backoff::Backoff;
pub use catalog::{TodoEventData, TodoEventType, TodoStatus};
pub use cloudevent::CloudEvent;
pub use publish::{BulkEntry, BulkPublishError, DaprPublisher, PublishError, PublisherConfig};
