//! End-to-end tests of the whole system live in `tests/system`: todo, notification and
//! analytics, each in-process with a dev sidecar of its own, talking only through the sidecars'
//! pub/sub HTTP API over a real Redis (a private `redis-server` per test, so tests do not see
//! each other's streams). This crate has no code of its own.
