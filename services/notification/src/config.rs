//! Configuration from environment variables; every one has a default (docs/configuration.md).

use std::time::Duration;

use dapr_consumer::ConsumerSettings;
use service_kit::env::{ConfigError, Env};

#[derive(Debug, Clone)]
pub struct Settings {
    /// What every consumer reads (`APP_PORT` default 8081, `METRICS_PORT` 9465, `APP_ID` default `notification`, …).
    pub consumer: ConsumerSettings,
    /// `NOTIFY_WEBHOOK_URL`: also POST each notification there; `NOTIFY_WEBHOOK_TIMEOUT_MS`
    /// (default 5000) bounds one call.
    pub webhook: Option<WebhookSettings>,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: reqwest::Url,
    pub timeout: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(lookup);
        let webhook = match env.get("NOTIFY_WEBHOOK_URL") {
            None => None,
            Some(url) => Some(WebhookSettings {
                url: url.parse().map_err(|e| ConfigError {
                    var: "NOTIFY_WEBHOOK_URL",
                    detail: format!("{url:?} is not a URL: {e}"),
                })?,
                timeout: Duration::from_millis(env.parse("NOTIFY_WEBHOOK_TIMEOUT_MS", 5_000)?),
            }),
        };
        Ok(Self { consumer: ConsumerSettings::read(&env, "notification", 8081, 9465)?, webhook })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        assert_eq!((settings.consumer.port, settings.consumer.app_id.as_str()), (8081, "notification"));
        assert_eq!(settings.consumer.database_url, "sqlite://data/notification.db");
        assert!(settings.webhook.is_none() && settings.consumer.admin_token.is_none());
        let bad = Settings::from_lookup(|name| (name == "NOTIFY_WEBHOOK_URL").then(|| "not a url".to_owned()));
        assert!(bad.unwrap_err().to_string().contains("NOTIFY_WEBHOOK_URL"));
    }
}
