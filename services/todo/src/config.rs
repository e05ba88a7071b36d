//! Configuration from environment variables. Every variable has a documented default
//! (docs/configuration.md) so the service starts with none set.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use service_kit::env::{ConfigError, Env};
use service_kit::middleware::Limits;

type Result<T, E = ConfigError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Settings {
    /// `APP_HOST` (default `0.0.0.0`) and `APP_PORT` (default `8080`; `0` picks a free port).
    pub host: IpAddr,
    pub port: u16,
    /// `METRICS_PORT` (default `9464`; `0` picks a free port): `GET /metrics`, on `APP_HOST`,
    /// apart from the API port an ingress reaches.
    pub metrics_port: u16,
    /// `APP_ID` (default `todo`): the Dapr app id, also the CloudEvent `source`.
    pub app_id: String,
    /// `DATABASE_URL`: `postgres://…` or `sqlite://…`; default `sqlite://{DATA_DIR}/todo.db`.
    pub database_url: String,
    /// `DB_MAX_CONNECTIONS` (default 10).
    pub db_max_connections: u32,
    pub dapr: DaprSettings,
    pub relay: RelaySettings,
    /// `ADMIN_TOKEN`: enables the admin API (`Authorization: Bearer …`) for parked events.
    pub admin_token: Option<String>,
    /// `LOG_FORMAT`: `json` or `text` (default).
    pub log_json: bool,
    /// `SHUTDOWN_GRACE_MS` (default 20000): how long in-flight requests and the relay's current
    /// round may run on after SIGTERM.
    pub shutdown_grace: Duration,
    /// `REQUEST_TIMEOUT_MS` (default 30000) and `MAX_CONCURRENT_REQUESTS` (default 256).
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct DaprSettings {
    /// `DAPR_HTTP_ENDPOINT` (as the Dapr SDKs read it), else `http://127.0.0.1:{DAPR_HTTP_PORT}`
    /// with `DAPR_HTTP_PORT` default 3500.
    pub http_endpoint: String,
    /// `DAPR_API_TOKEN`: sent as `dapr-api-token` when set.
    pub api_token: Option<String>,
    /// `PUBSUB_NAME` (default `pubsub`).
    pub pubsub_name: String,
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// `RELAY_ENABLED` (default true). Off lets a replica serve the API only.
    pub enabled: bool,
    /// `RELAY_BATCH_SIZE` (default 500): events claimed per round, published in one bulk request
    /// per topic (several when they add up to over 1 MiB).
    pub batch_size: u32,
    /// `RELAY_WORKERS` (default 4): rounds in flight at once. While one round waits for daprd,
    /// others claim and publish other todos' events, so a backlog drains at the sidecar's
    /// speed rather than one round trip at a time. Four rounds of 500 kept daprd busier than
    /// two of 1,000 (docs/performance.md). Per-todo order holds as between replicas:
    /// a todo's next event is claimable only once the one before it is marked published.
    pub workers: u32,
    /// `RELAY_POLL_INTERVAL_MS` (default 1000): how often the relay looks for work when no
    /// commit woke it (other replicas' writes, retries that came due).
    pub poll_interval: Duration,
    /// `RELAY_PUBLISH_TIMEOUT_MS` (default 5000): bound on one publish call.
    pub publish_timeout: Duration,
    /// `RELAY_RETRY_INITIAL_MS` (default 200) and `RELAY_RETRY_MAX_MS` (default 30000): capped
    /// exponential backoff for failed publishes.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// `RELAY_LEASE_MS` (default 30000): how long a claimed event stays reserved for one relay
    /// instance. Must be well above the publish timeout; a crashed instance's events are picked
    /// up by others after it.
    pub lease: Duration,
    /// `RELAY_PARK_AFTER_MS` (default 300000): how long daprd may refuse an event for good
    /// (403 forbidden by scopes, 404 no such component) before it is parked. Long enough for a
    /// daprd that is still loading its components to answer 404 for a while.
    pub park_after: Duration,
    /// `RELAY_INSTANCE` (default: a random id at every start): the name this instance leases
    /// events under. Set it to a name unique to the instance that survives its restarts (the
    /// pod's name in `k8s/`): a restarted instance then gives up at start the leases its
    /// predecessor held when it died, instead of those events waiting out `RELAY_LEASE_MS`.
    /// Two running instances must never share it: each would release the other's leases.
    pub instance: Option<String>,
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can configure without touching the process
    /// environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = Env::new(lookup);
        let data_dir = PathBuf::from(env.get("DATA_DIR").unwrap_or_else(|| "data".into()));
        let publish_timeout = Duration::from_millis(env.parse("RELAY_PUBLISH_TIMEOUT_MS", 5_000)?);
        let lease = Duration::from_millis(env.parse("RELAY_LEASE_MS", 30_000)?);
        if lease <= publish_timeout * 2 {
            return Err(ConfigError {
                var: "RELAY_LEASE_MS",
                detail: format!(
                    "must be more than twice RELAY_PUBLISH_TIMEOUT_MS ({publish_timeout:?}), or two relays could publish the same event"
                ),
            });
        }
        let batch_size = env.parse("RELAY_BATCH_SIZE", 500)?;
        if !(1..=1000).contains(&batch_size) {
            return Err(ConfigError { var: "RELAY_BATCH_SIZE", detail: "must be between 1 and 1000".into() });
        }
        let workers = env.parse("RELAY_WORKERS", 4)?;
        if !(1..=16).contains(&workers) {
            return Err(ConfigError { var: "RELAY_WORKERS", detail: "must be between 1 and 16".into() });
        }
        // Blank counts as unset, as for every variable. 253: a Kubernetes object name's limit.
        let instance = env.get("RELAY_INSTANCE");
        if instance.as_ref().is_some_and(|name| name.len() > 253) {
            return Err(ConfigError { var: "RELAY_INSTANCE", detail: "must be at most 253 characters".into() });
        }
        Ok(Self {
            host: env.parse("APP_HOST", IpAddr::from([0, 0, 0, 0]))?,
            port: env.parse("APP_PORT", 8080)?,
            metrics_port: env.parse("METRICS_PORT", 9464)?,
            app_id: env.get("APP_ID").unwrap_or_else(|| "todo".into()),
            database_url: env
                .get("DATABASE_URL")
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("todo.db").display())),
            db_max_connections: env.parse("DB_MAX_CONNECTIONS", 10)?,
            dapr: DaprSettings {
                http_endpoint: env.dapr_http_endpoint()?,
                api_token: env.get("DAPR_API_TOKEN"),
                pubsub_name: env.get("PUBSUB_NAME").unwrap_or_else(|| "pubsub".into()),
            },
            relay: RelaySettings {
                enabled: env.parse("RELAY_ENABLED", true)?,
                batch_size,
                workers,
                poll_interval: Duration::from_millis(env.parse("RELAY_POLL_INTERVAL_MS", 1_000)?),
                publish_timeout,
                retry_initial: Duration::from_millis(env.parse("RELAY_RETRY_INITIAL_MS", 200)?),
                retry_max: Duration::from_millis(env.parse("RELAY_RETRY_MAX_MS", 30_000)?),
                lease,
                park_after: Duration::from_millis(env.parse("RELAY_PARK_AFTER_MS", 300_000)?),
                instance,
            },
            admin_token: env.get("ADMIN_TOKEN"),
            log_json: env.log_json()?,
            shutdown_grace: env.shutdown_grace()?,
            limits: Limits::read(&env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_with_an_empty_environment() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(settings.port, 8080);
        assert_eq!(settings.metrics_port, 9464);
        assert_eq!(settings.dapr.http_endpoint, "http://127.0.0.1:3500");
        assert_eq!(settings.dapr.pubsub_name, "pubsub");
        assert_eq!(settings.database_url, "sqlite://data/todo.db");
        assert!(settings.relay.enabled);
        assert_eq!((settings.relay.batch_size, settings.relay.workers), (500, 4));
        assert_eq!(settings.relay.instance, None);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let error = Settings::from_lookup(|name| (name == "DAPR_HTTP_PORT").then(|| "port".to_owned())).unwrap_err();
        assert!(error.to_string().contains("DAPR_HTTP_PORT"), "{error}");
        let lease = Settings::from_lookup(|name| (name == "RELAY_LEASE_MS").then(|| "100".to_owned())).unwrap_err();
        assert!(lease.to_string().contains("RELAY_LEASE_MS"), "{lease}");
        let long_name = "p".repeat(254);
        for (name, value) in [
            ("RELAY_WORKERS", "0"),
            ("RELAY_WORKERS", "17"),
            ("RELAY_BATCH_SIZE", "1001"),
            ("RELAY_INSTANCE", long_name.as_str()),
        ] {
            let error = Settings::from_lookup(|n| (n == name).then(|| value.to_owned())).unwrap_err();
            assert!(error.to_string().contains(name), "{name}={value}: {error}");
        }
    }
}
