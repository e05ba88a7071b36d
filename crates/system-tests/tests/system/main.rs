//! End-to-end: the three services, each with a dev sidecar, over a private Redis.

mod harness;

pub(crate) use service_kit::on_both_backends;

mod failures;
mod files;
mod flows;
mod replicas;
