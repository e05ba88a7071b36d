//! Integration tests of the notification service over real HTTP, on SQLite and PostgreSQL:
//! deliveries posted the way daprd posts them, and a real daprd for the dead-letter
//! loop. One test binary so the suite links once.

mod helpers;

pub(crate) use service_kit::on_both_backends;

mod dead_letters;
mod deliveries;
mod hardening;
mod openapi;
mod webhook;
