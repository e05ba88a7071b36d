//! The notification service: tells users about their todos. It consumes `todos.task.created`
//! and `todos.task.completed` through the Dapr sidecar (never a broker), writes one in-app
//! notification per event exactly once, optionally calls a webhook once per notification, and
//! keeps what it cannot process in a dead-letter store operators can replay from.

pub mod api;
pub mod config;
pub mod notifications;
pub mod notifier;
pub mod startup;
pub mod webhook;
