//! A Dapr-compatible development sidecar.
//!
//! daprd cannot be installed everywhere (no package in the usual registries, no Docker), yet a
//! Dapr application must be run and tested through a sidecar. This crate reproduces daprd's
//! pub/sub surface as recorded in `shared/dapr-contract.md`: the publish HTTP API and its
//! envelope rules, programmatic and declarative subscriptions, delivery with
//! SUCCESS/RETRY/DROP, dead-letter topics and resiliency policies, the Redis Streams layout of
//! `pubsub.redis` and `pubsub.in-memory`, and Dapr's multi-app run file. Applications must not
//! be able to tell it from daprd on that surface.

pub mod api;
pub mod app;
pub mod delivery;
pub mod duration;
pub mod envelope;
pub mod policy;
pub mod pubsub;
pub mod resources;
pub mod routing;
pub mod run;
pub mod scopes;
pub mod sidecar;
pub mod telemetry;

/// Helpers for the unit tests of several modules.
#[cfg(test)]
mod test_support {
    use std::collections::BTreeMap;

    /// Component or message metadata from `(name, value)` pairs.
    pub fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }
}
