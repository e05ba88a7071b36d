//! The Dapr contract tests live in `tests/contract`: what the services rely on daprd to do
//! (envelopes, answers, retries, dead letters, tokens, the Redis Streams layout, Kafka keys and
//! order, redelivery after a crash), run against the real daprd so that an upgrade shows what
//! changed. This crate has no code of its own.
