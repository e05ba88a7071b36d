//! What a dapr-todo consumer is made of besides its own effects. A consumer implements
//! [`EventHandler`] (what one todo event does to it) and brings its own API routes; this crate
//! does the rest:
//!
//! - [`deliveries`]: the routes daprd calls (`/dapr/subscribe`, `/events/{topic}`,
//!   `/dead-letters/{topic}`), reading each delivery and answering SUCCESS, RETRY or DROP;
//! - [`processed`]: exactly-once bookkeeping, (CloudEvent id, effect) recorded in the
//!   transaction of the effect;
//! - [`dead_letters`]: the store of what daprd dead-letters, and its admin API (list, show,
//!   replay through the Dapr publish API, discard);
//! - [`auth`]: the `APP_API_TOKEN` check on daprd's routes and the `ADMIN_TOKEN` check on the
//!   admin API;
//! - [`app`]: settings, the database with the bookkeeping migrations ([`migrations`]), the
//!   router with health, metrics and problem answers, serving until shutdown.

pub mod app;
pub mod auth;
pub mod dead_letters;
pub mod deliveries;
pub mod handler;
pub mod metrics;
pub mod migrations;
pub mod processed;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;

pub use app::{Consumer, ConsumerApp};
pub use handler::{EventHandler, Refusal};
pub use settings::ConsumerSettings;
