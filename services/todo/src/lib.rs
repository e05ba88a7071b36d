//! The todo service: the HTTP API clients use to manage todos, and the only producer of todo
//! events. Every change writes the todo and an outbox row in one transaction; the relay
//! publishes outbox rows through the Dapr sidecar's pub/sub HTTP API.
//!
//! Data flows one way: [`http`] → [`todos`] (the domain) → [`outbox`] → [`relay`] → Dapr.

pub mod config;
pub mod http;
pub mod outbox;
pub mod relay;
pub mod startup;
pub mod todos;
