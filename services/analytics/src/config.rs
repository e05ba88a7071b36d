//! Configuration from environment variables; every one has a default (docs/configuration.md).

use dapr_consumer::ConsumerSettings;
use service_kit::env::{ConfigError, Env};

#[derive(Debug, Clone)]
pub struct Settings {
    /// What every consumer reads (`APP_PORT` default 8082, `METRICS_PORT` 9466, `APP_ID` default `analytics`, …).
    pub consumer: ConsumerSettings,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self { consumer: ConsumerSettings::read(&Env::new(lookup), "analytics", 8082, 9466)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        assert_eq!((settings.consumer.port, settings.consumer.app_id.as_str()), (8082, "analytics"));
        assert_eq!(settings.consumer.database_url, "sqlite://data/analytics.db");
        assert!(Settings::from_lookup(|name| (name == "APP_PORT").then(|| "x".to_owned())).is_err());
    }
}
