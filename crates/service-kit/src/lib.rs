//! What every dapr-todo service needs besides Dapr (that lives in `dapr-events`): the database
//! ([`db`]: SQLite or PostgreSQL by URL, embedded migrations), RFC 9457 problem responses
//! ([`problem`]), configuration from the environment ([`env`]), logging and graceful shutdown
//! ([`telemetry`]).

pub mod consumer;
pub mod db;
pub mod env;
pub mod health;
pub mod problem;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
