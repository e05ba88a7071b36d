//! Integration tests of the analytics service over real HTTP, on SQLite and PostgreSQL, with
//! deliveries posted the way daprd posts them. One test binary so the suite links once.

mod helpers;

pub(crate) use service_kit::on_both_backends;

mod hardening;
mod openapi;
mod projections;
