//! The todo service: the HTTP API clients use to manage todos, and the only producer of todo
//! events. Every change writes the todo and an outbox row in one transaction; the relay
//! publishes outbox rows through the Dapr sidecar's pub/sub HTTP API.

pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod outbox;
pub mod relay;
pub mod startup;
pub mod telemetry;
pub mod todos;

pub use config::Settings;
pub use error::{Error, Result};
pub use startup::Application;
