//! Configuration from environment variables; every one has a default (README, "Configuration").

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use service_kit::env::Env;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Settings {
    /// `APP_HOST` (default `0.0.0.0`) and `APP_PORT` (default `8081`; `0` picks a free port).
    pub host: IpAddr,
    pub port: u16,
    /// `APP_ID` (default `notification`): the Dapr app id; names the dead-letter topics.
    pub app_id: String,
    /// `DATABASE_URL`: default `sqlite://{DATA_DIR}/notification.db` (`DATA_DIR` default `data`).
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
    /// `ADMIN_TOKEN`: enables the dead-letter admin API (`Authorization: Bearer …`).
    pub admin_token: Option<String>,
    /// `NOTIFY_WEBHOOK_URL`: also POST each notification there; `NOTIFY_WEBHOOK_TIMEOUT_MS`
    /// (default 5000) bounds one call.
    pub webhook: Option<WebhookSettings>,
    /// `LOG_FORMAT`: `json` or `text` (default).
    pub log_json: bool,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: reqwest::Url,
    pub timeout: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = Env::new(lookup);
        let data_dir = PathBuf::from(env.get("DATA_DIR").unwrap_or_else(|| "data".into()));
        let webhook = match env.get("NOTIFY_WEBHOOK_URL") {
            None => None,
            Some(url) => Some(WebhookSettings {
                url: url.parse().map_err(|e| Error::Config {
                    var: "NOTIFY_WEBHOOK_URL",
                    detail: format!("{url:?} is not a URL: {e}"),
                })?,
                timeout: Duration::from_millis(env.parse("NOTIFY_WEBHOOK_TIMEOUT_MS", 5_000)?),
            }),
        };
        Ok(Self {
            host: env.parse("APP_HOST", IpAddr::from([0, 0, 0, 0]))?,
            port: env.parse("APP_PORT", 8081)?,
            app_id: env.get("APP_ID").unwrap_or_else(|| "notification".into()),
            database_url: env
                .get("DATABASE_URL")
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("notification.db").display())),
            db_max_connections: env.parse("DB_MAX_CONNECTIONS", 10)?,
            dapr_http_endpoint: env.dapr_http_endpoint()?,
            dapr_api_token: env.get("DAPR_API_TOKEN"),
            app_api_token: env.get("APP_API_TOKEN"),
            pubsub_name: env.get("PUBSUB_NAME").unwrap_or_else(|| "pubsub".into()),
            admin_token: env.get("ADMIN_TOKEN"),
            webhook,
            log_json: env.log_json()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        assert_eq!((settings.port, settings.app_id.as_str()), (8081, "notification"));
        assert_eq!(settings.database_url, "sqlite://data/notification.db");
        assert!(settings.webhook.is_none() && settings.admin_token.is_none());
        let bad = Settings::from_lookup(|name| (name == "NOTIFY_WEBHOOK_URL").then(|| "not a url".to_owned()));
        assert!(bad.unwrap_err().to_string().contains("NOTIFY_WEBHOOK_URL"));
    }
}
