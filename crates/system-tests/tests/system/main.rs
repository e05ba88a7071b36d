//! End-to-end: the three services, each with a dev sidecar, over a private Redis.

mod harness;

mod failures;
mod files;
mod flows;
