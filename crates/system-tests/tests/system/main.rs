//! End-to-end: the three services, each with a real daprd, over a private broker: Redis by
//! default, Kafka with `TEST_PUBSUB=kafka` and the `kafka` feature (`make test-kafka`).

mod broker;
mod harness;

pub(crate) use service_kit::on_both_backends;

mod chaos;
mod failures;
mod files;
mod flows;
#[cfg(feature = "kafka")]
mod kafka;
mod monitoring;
mod outages;
mod replicas;
mod traces;
