//! The configuration every consumer reads from the environment.

use std::time::Duration;

use dapr_events::{DaprPublisher, PublisherConfig};
use service_kit::env::{ConfigError, Env};
use service_kit::middleware::Limits;

/// The configuration every consumer reads; each variable has a default (docs/configuration.md).
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// `APP_HOST` (default `0.0.0.0`) and `APP_PORT` (`0` picks a free port).
    pub host: std::net::IpAddr,
    pub port: u16,
    /// `METRICS_PORT` (`0` picks a free port): `GET /metrics`, on `APP_HOST`, apart from the
    /// API port an ingress reaches.
    pub metrics_port: u16,
    /// `APP_ID`: the Dapr app id; names the dead-letter topics.
    pub app_id: String,
    /// `DATABASE_URL`: default `sqlite://{DATA_DIR}/{app id}.db` (`DATA_DIR` default `data`).
    pub database_url: String,
    /// `DB_MAX_CONNECTIONS` (default 10).
    pub db_max_connections: u32,
    /// `DAPR_HTTP_ENDPOINT`, else `http://127.0.0.1:{DAPR_HTTP_PORT}` (default 3500).
    pub dapr_http_endpoint: String,
    /// `DAPR_API_TOKEN`: sent to the sidecar (replays publish through it).
    pub dapr_api_token: Option<String>,
    /// `APP_API_TOKEN`: required from the sidecar on every route it calls.
    pub app_api_token: Option<String>,
    /// `PUBSUB_NAME` (default `pubsub`).
    pub pubsub_name: String,
    /// `ADMIN_TOKEN`: enables the admin API (`Authorization: Bearer …`).
    pub admin_token: Option<String>,
    /// `LOG_FORMAT`: `json` or `text` (default).
    pub log_json: bool,
    /// `SHUTDOWN_GRACE_MS` (default 20000): how long in-flight requests may run on after SIGTERM.
    pub shutdown_grace: Duration,
    /// `REQUEST_TIMEOUT_MS` (default 30000) and `MAX_CONCURRENT_REQUESTS` (default 256).
    pub limits: Limits,
}

impl ConsumerSettings {
    pub fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<F>,
        default_app_id: &str,
        default_port: u16,
        default_metrics_port: u16,
    ) -> Result<Self, ConfigError> {
        let app_id = env.get("APP_ID").unwrap_or_else(|| default_app_id.to_owned());
        let data_dir = std::path::PathBuf::from(env.get("DATA_DIR").unwrap_or_else(|| "data".into()));
        Ok(Self {
            host: env.parse("APP_HOST", std::net::IpAddr::from([0, 0, 0, 0]))?,
            port: env.parse("APP_PORT", default_port)?,
            metrics_port: env.parse("METRICS_PORT", default_metrics_port)?,
            database_url: env
                .get("DATABASE_URL")
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join(format!("{app_id}.db")).display())),
            app_id,
            db_max_connections: env.parse("DB_MAX_CONNECTIONS", 10)?,
            dapr_http_endpoint: env.dapr_http_endpoint()?,
            dapr_api_token: env.get("DAPR_API_TOKEN"),
            app_api_token: env.get("APP_API_TOKEN"),
            pubsub_name: env.get("PUBSUB_NAME").unwrap_or_else(|| "pubsub".into()),
            admin_token: env.get("ADMIN_TOKEN"),
            log_json: env.log_json()?,
            shutdown_grace: env.shutdown_grace()?,
            limits: Limits::read(env)?,
        })
    }

    /// The client for the sidecar's publish API (dead-letter replays go through it).
    pub fn publisher(&self) -> Result<DaprPublisher, ConfigError> {
        let config_error = |detail: String| ConfigError { var: "DAPR_HTTP_ENDPOINT", detail };
        DaprPublisher::new(PublisherConfig {
            sidecar_url: self.dapr_http_endpoint.parse().map_err(|e| config_error(format!("not a URL: {e}")))?,
            pubsub_name: self.pubsub_name.clone(),
            api_token: self.dapr_api_token.clone(),
            timeout: Duration::from_secs(5),
        })
        .map_err(|e| config_error(e.to_string()))
    }
}
