//! What every dapr-todo service needs besides Dapr (that is `dapr-events`, and for consumers
//! `dapr-consumer`): the database ([`db`]: SQLite or PostgreSQL by URL, embedded migrations,
//! the per-backend SQL in [`db::dialect`]), RFC 9457 problem responses ([`problem`]), keyset
//! pagination ([`pagination`]), configuration from the environment ([`env`]), health and
//! readiness ([`health`]), the admin API's token check ([`auth`]), logs, traces and request spans
//! ([`telemetry`], [`trace_context`]), Prometheus metrics on a port of their own ([`metrics`]), what wraps every router ([`middleware`]: panics, problems only, limits), the
//! OpenAPI document's shared parts and its routes ([`openapi`]), start-up errors, serving and
//! graceful shutdown ([`startup`]).

pub mod auth;
pub mod db;
pub mod env;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pagination;
pub mod problem;
pub mod startup;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace_context;
