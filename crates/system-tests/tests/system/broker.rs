//! The broker under the system: a private redis-server with the local `components/pubsub.yaml`
//! (the default), or with `TEST_PUBSUB=kafka` (feature `kafka`) a private Apache Kafka with the
//! cluster's `k8s/base/dapr/pubsub.yaml`. Either way the component file is the repository's own,
//! with only the broker address changed, and each test has a broker of its own, so topics and
//! consumer groups never mix between tests running in parallel.

use std::path::Path;
use std::process::Stdio;

use service_kit::testing::{DEADLINE, TempDir, eventually};

use crate::harness::{free_port, repository};

pub enum Broker {
    Redis(PrivateRedis),
    #[cfg(feature = "kafka")]
    Kafka(kafka::PrivateKafka),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Redis,
    Kafka,
}

impl BrokerKind {
    /// `TEST_PUBSUB`: `redis` (default) or `kafka`.
    pub fn from_env() -> Self {
        match std::env::var("TEST_PUBSUB").as_deref() {
            Err(_) | Ok("") | Ok("redis") => BrokerKind::Redis,
            Ok("kafka") => BrokerKind::Kafka,
            Ok(other) => panic!("TEST_PUBSUB={other:?}: expected redis or kafka"),
        }
    }
}

impl Broker {
    pub async fn start(kind: BrokerKind) -> Self {
        match kind {
            BrokerKind::Redis => Broker::Redis(PrivateRedis::start().await),
            #[cfg(feature = "kafka")]
            BrokerKind::Kafka => Broker::Kafka(kafka::PrivateKafka::start().await),
            #[cfg(not(feature = "kafka"))]
            BrokerKind::Kafka => panic!("TEST_PUBSUB=kafka needs the system tests built with --features kafka"),
        }
    }

    /// Stops the broker as an operator does (Redis: `SHUTDOWN`; Kafka: SIGTERM and a controlled
    /// shutdown), keeping its data.
    pub async fn stop(&mut self) {
        match self {
            Broker::Redis(redis) => redis.stop().await,
            #[cfg(feature = "kafka")]
            Broker::Kafka(kafka) => kafka.stop().await,
        }
    }

    /// Starts it again on the same port and data, and waits until it answers.
    pub async fn start_again(&mut self) {
        match self {
            Broker::Redis(redis) => redis.start_again().await,
            #[cfg(feature = "kafka")]
            Broker::Kafka(kafka) => kafka.start_again().await,
        }
    }

    /// Writes the repository's pub/sub component, pointed at this broker, into `dir` (plus what
    /// it references, e.g. the secret store standing in for the cluster's Secret).
    pub fn write_component(&self, dir: &Path) {
        match self {
            Broker::Redis(redis) => {
                let pubsub = std::fs::read_to_string(repository().join("components/pubsub.yaml")).unwrap();
                assert!(pubsub.contains("localhost:6379"), "components/pubsub.yaml changed shape: {pubsub}");
                // Reclaiming faster still than the local component's 15 s and 2 s, so a test's
                // restart is quick.
                let redeliver = "- name: redeliverInterval\n      value: \"2000\"";
                let timeout = "- name: processingTimeout\n      value: \"15000\"";
                assert!(pubsub.contains(redeliver) && pubsub.contains(timeout), "components/pubsub.yaml changed shape");
                let pubsub = pubsub
                    .replace("localhost:6379", &redis.host)
                    .replace(redeliver, "- name: redeliverInterval\n      value: \"500\"")
                    .replace(timeout, "- name: processingTimeout\n      value: \"2000\"");
                std::fs::write(dir.join("pubsub.yaml"), pubsub).unwrap();
            }
            #[cfg(feature = "kafka")]
            Broker::Kafka(kafka) => kafka.write_component(dir),
        }
    }

    /// Waits until consumer group `group` has processed every record of `topic` so far (and
    /// acknowledged or committed it): nothing more is on its way to that consumer.
    pub async fn wait_until_consumed(&self, topic: &str, group: &str) {
        match self {
            Broker::Redis(redis) => redis.wait_until_consumed(topic, group).await,
            #[cfg(feature = "kafka")]
            Broker::Kafka(kafka) => kafka.wait_until_consumed(topic, group).await,
        }
    }
}

/// A redis-server of the test's own, stopped when dropped. It persists as a real deployment
/// does (an append-only file, fsynced every second), so it can be stopped and started again
/// with its streams, consumer groups and pending entries intact.
pub struct PrivateRedis {
    pub host: String,
    port: u16,
    server: Option<tokio::process::Child>,
    dir: TempDir,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let mut redis = Self { host: String::new(), port: free_port(), server: None, dir: TempDir::new() };
        redis.host = format!("127.0.0.1:{}", redis.port);
        redis.start_again().await;
        redis
    }

    /// Starts the server (again) on its port and data directory.
    pub async fn start_again(&mut self) {
        let port = self.port;
        let server = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "everysec"])
            .arg("--dir")
            .arg(&self.dir.path)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be on PATH for the system tests (make test installs it when missing)");
        self.server = Some(server);
        eventually("the private redis-server to listen", DEADLINE, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
    }

    /// Stops the server as an operator does (`SHUTDOWN`: the append-only file is written out),
    /// and waits until it has exited.
    pub async fn stop(&mut self) {
        let mut redis = self.connection().await;
        // The server closes the connection instead of answering.
        let _: Result<(), _> = redis::cmd("SHUTDOWN").query_async(&mut redis).await;
        if let Some(mut server) = self.server.take() {
            server.wait().await.expect("redis-server exits");
        }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://{}", self.host)).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// The group has read every entry of the stream and acknowledged all of them.
    pub async fn wait_until_consumed(&self, stream: &str, group: &str) {
        let redis = self.connection().await;
        eventually(&format!("{group} to consume all of {stream}"), DEADLINE, || {
            let mut redis = redis.clone();
            async move {
                let last: redis::streams::StreamRangeReply =
                    redis::AsyncCommands::xrevrange_count(&mut redis, stream, "+", "-", 1).await.ok()?;
                let last_id = last.ids.first()?.id.clone();
                let groups: redis::streams::StreamInfoGroupsReply =
                    redis::AsyncCommands::xinfo_groups(&mut redis, stream).await.ok()?;
                let group = groups.groups.iter().find(|g| g.name == group)?;
                (group.last_delivered_id == last_id && group.pending == 0).then_some(())
            }
        })
        .await;
    }
}

#[cfg(feature = "kafka")]
pub mod kafka {
    //! An Apache Kafka broker of the test's own, set up as the cluster's Kafka is (by
    //! `scripts/ensure-kafka.sh`, as for `make run-kafka`): SCRAM-SHA-512 authentication
    //! required, the `dapr-todo` user, and exactly the topics of `k8s/base/kafka/topics.yaml`
    //! with their partition counts (topics are not created on use, so a topic missing from the
    //! manifests fails the test). A broker per test keeps topics and consumer groups apart, as
    //! the topic names are fixed by the event catalog and the groups by the app ids.

    use std::path::Path;
    use std::process::Stdio;
    use std::time::Duration;

    use rdkafka::ClientConfig;
    use rdkafka::Offset;
    use rdkafka::TopicPartitionList;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use service_kit::testing::{DEADLINE, TempDir, eventually};

    use crate::harness::{free_port, repository};

    /// The SASL user of the cluster's component (`saslUsername`) and the password the test's
    /// secret store hands out for `secretKeyRef {name: dapr-todo, key: password}`.
    pub const USER: &str = "dapr-todo";
    pub const PASSWORD: &str = "system-test-password";
    /// The broker address in the cluster's component: the one value the tests replace.
    const CLUSTER_BROKERS: &str = "dapr-todo-kafka-bootstrap:9092";
    const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

    pub struct PrivateKafka {
        pub brokers: String,
        port: u16,
        pid: String,
        dir: TempDir,
    }

    impl PrivateKafka {
        /// Through `scripts/ensure-kafka.sh`, the set-up `make run-kafka` uses too.
        pub async fn start() -> Self {
            let mut kafka = Self { brokers: String::new(), port: free_port(), pid: String::new(), dir: TempDir::new() };
            kafka.start_again().await;
            kafka
        }

        /// Starts the broker on its port and directory: formatted on the first start, its topics,
        /// offsets and consumer groups kept on the next ones.
        pub async fn start_again(&mut self) {
            let started = self.script(&[]).await;
            assert!(
                started.status.success(),
                "scripts/ensure-kafka.sh (Java is needed; it fetches Kafka with Maven): {}",
                String::from_utf8_lossy(&started.stderr)
            );
            let brokers = String::from_utf8(started.stdout).unwrap().trim().to_owned();
            assert_eq!(brokers, format!("127.0.0.1:{}", self.port));
            self.brokers = brokers;
            self.pid = std::fs::read_to_string(self.dir.path.join("kafka.pid")).unwrap().trim().to_owned();
        }

        /// `scripts/ensure-kafka.sh stop`: SIGTERM, and the broker's controlled shutdown.
        pub async fn stop(&mut self) {
            let stopped = self.script(&["stop"]).await;
            assert!(stopped.status.success(), "ensure-kafka.sh stop: {}", String::from_utf8_lossy(&stopped.stderr));
        }

        async fn script(&self, args: &[&str]) -> std::process::Output {
            tokio::process::Command::new(repository().join("scripts/ensure-kafka.sh"))
                .args(args)
                .env("KAFKA_DIR", &self.dir.path)
                .env("OWN_KAFKA_PORT", self.port.to_string())
                .env("KAFKA_SCRAM_USER", USER)
                .env("KAFKA_SCRAM_PASSWORD", PASSWORD)
                .env_remove("TEST_KAFKA_BROKERS")
                .stdin(Stdio::null())
                .output()
                .await
                .expect("scripts/ensure-kafka.sh runs")
        }

        /// Kills the broker, as a crash or a lost network would.
        pub fn kill(&mut self) {
            assert!(self.kill_if_still_running(), "the broker (pid {}) was running and is killed", self.pid);
        }

        /// SIGKILL to the broker's pid, if that pid is still this broker. A pid is soon reused:
        /// pid_max is often 32768 and threads take pids too, so once the broker is gone (killed
        /// by a test, or crashed) its pid may belong to another test's broker within seconds.
        fn kill_if_still_running(&self) -> bool {
            let command_line = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
            let still_ours = String::from_utf8_lossy(&command_line).contains(&*self.dir.path.to_string_lossy());
            still_ours
                && std::process::Command::new("kill")
                    .args(["-KILL", &self.pid])
                    .status()
                    .is_ok_and(|status| status.success())
        }

        pub fn write_component(&self, dir: &Path) {
            self.write_component_with_password(dir, PASSWORD);
        }

        /// The cluster's component with the secret store handing out `password`.
        pub fn write_component_with_password(&self, dir: &Path, password: &str) {
            let pubsub = std::fs::read_to_string(repository().join("k8s/base/dapr/pubsub.yaml")).unwrap();
            assert!(pubsub.contains(CLUSTER_BROKERS), "k8s/base/dapr/pubsub.yaml changed shape: {pubsub}");
            std::fs::write(dir.join("pubsub.yaml"), pubsub.replace(CLUSTER_BROKERS, &self.brokers)).unwrap();
            // The component reads its password from the secret store `kubernetes`; outside a
            // cluster a local file store of that name holds the Secret Strimzi would create.
            let secrets = dir.join("secrets.json");
            std::fs::write(&secrets, serde_json::json!({ USER: { "password": password } }).to_string()).unwrap();
            let store = format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: kubernetes\nspec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n    - name: secretsFile\n      value: {}\n    - name: multiValued\n      value: \"true\"\n",
                secrets.display()
            );
            std::fs::write(dir.join("secretstore.yaml"), store).unwrap();
        }

        /// A client configured as the cluster's component: SCRAM-SHA-512 without TLS.
        pub fn client_config(&self) -> ClientConfig {
            let mut config = ClientConfig::new();
            config
                .set("bootstrap.servers", &self.brokers)
                .set("security.protocol", "sasl_plaintext")
                .set("sasl.mechanism", "SCRAM-SHA-512")
                .set("sasl.username", USER)
                .set("sasl.password", PASSWORD);
            config
        }

        /// Every partition's committed offset for `group` is the partition's end.
        pub async fn wait_until_consumed(&self, topic: &str, group: &str) {
            let consumer: BaseConsumer = self.client_config().set("group.id", group).create().unwrap();
            let consumer = std::sync::Arc::new(consumer);
            let topic = topic.to_owned();
            eventually(&format!("{group} to commit all of {topic}"), DEADLINE, || {
                let (consumer, topic) = (consumer.clone(), topic.clone());
                async move {
                    tokio::task::spawn_blocking(move || consumed(&consumer, &topic)).await.unwrap().then_some(())
                }
            })
            .await;
        }

        /// Every record of `topic`, in offset order per partition: (partition, key, value).
        pub async fn records(&self, topic: &str) -> Vec<(i32, Option<String>, serde_json::Value)> {
            let consumer: BaseConsumer = self
                .client_config()
                .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            let topic = topic.to_owned();
            tokio::task::spawn_blocking(move || read_all(&consumer, &topic)).await.unwrap()
        }
    }

    impl Drop for PrivateKafka {
        fn drop(&mut self) {
            self.kill_if_still_running();
        }
    }

    fn partitions(consumer: &BaseConsumer, topic: &str) -> Option<Vec<i32>> {
        let metadata = consumer.fetch_metadata(Some(topic), CLIENT_TIMEOUT).ok()?;
        let topic = metadata.topics().iter().find(|t| t.name() == topic)?;
        Some(topic.partitions().iter().map(|p| p.id()).collect())
    }

    fn consumed(consumer: &BaseConsumer, topic: &str) -> bool {
        let Some(partitions) = partitions(consumer, topic) else { return false };
        let mut wanted = TopicPartitionList::new();
        for &partition in &partitions {
            wanted.add_partition(topic, partition);
        }
        let Ok(committed) = consumer.committed_offsets(wanted, CLIENT_TIMEOUT) else { return false };
        partitions.iter().all(|&partition| {
            let Ok((_, end)) = consumer.fetch_watermarks(topic, partition, CLIENT_TIMEOUT) else { return false };
            let at = committed.find_partition(topic, partition).map(|p| p.offset());
            match at {
                Some(Offset::Offset(offset)) => offset == end,
                // Nothing committed: consumed only if there was nothing to consume.
                _ => end == 0,
            }
        })
    }

    fn read_all(consumer: &BaseConsumer, topic: &str) -> Vec<(i32, Option<String>, serde_json::Value)> {
        use rdkafka::message::Message as _;
        let partitions = partitions(consumer, topic).expect("the topic exists");
        let mut records = Vec::new();
        for partition in partitions {
            let (start, end) = consumer.fetch_watermarks(topic, partition, CLIENT_TIMEOUT).unwrap();
            if end == start {
                continue;
            }
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(topic, partition, Offset::Offset(start)).unwrap();
            consumer.assign(&assignment).unwrap();
            let mut next = start;
            let started = std::time::Instant::now();
            while next < end {
                assert!(started.elapsed() < DEADLINE, "reading {topic}/{partition} up to offset {end}");
                let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
                let message = message.unwrap();
                next = message.offset() + 1;
                let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned());
                let value = serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
                records.push((partition, key, value));
            }
        }
        records
    }
}
