//! Integration tests of the todo service over real HTTP, each run on SQLite and on PostgreSQL.
//! One test binary (rather than one per file) so the suite links once.

mod helpers;

pub(crate) use service_kit::on_both_backends;

mod disconnects;
mod events_schema;
mod hardening;
mod metrics;
mod openapi;
mod outbox;
mod parked;
mod relay;
mod shutdown;
mod todos;
