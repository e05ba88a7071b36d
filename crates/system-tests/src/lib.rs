//! End-to-end tests of the whole system live in `tests/system`: todo, notification and
//! analytics, each in-process with a real daprd of its own, talking only through daprd's
//! pub/sub HTTP API over a private broker per test (a `redis-server`, or Apache Kafka with
//! `TEST_PUBSUB=kafka`), so tests do not see each other's topics. This crate has no code of its
//! own.
