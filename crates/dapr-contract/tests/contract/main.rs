//! Dapr contract tests: the behaviours of daprd that the services rely on, pinned against the
//! real daprd (`scripts/ensure-dapr.sh`) over real Redis (`TEST_REDIS_HOST`, default
//! 127.0.0.1:6379) and, with the `kafka` feature, Apache Kafka (`scripts/ensure-kafka.sh`), so
//! that a Dapr upgrade shows what changed. Each test uses topic and app names of its own, so
//! tests share one Redis without seeing each other's streams.

mod helpers;

mod delivery;
#[cfg(feature = "kafka")]
mod kafka;
mod processes;
mod publish;
mod redis_layout;
