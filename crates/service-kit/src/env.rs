//! Configuration from environment variables: every variable has a documented default, and a
//! bad value is refused at start-up naming the variable.

use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}: {detail}")]
pub struct ConfigError {
    pub var: &'static str,
    pub detail: String,
}

/// Reads variables through a lookup function, so tests configure a service without touching
/// the process environment. Blank values count as unset.
pub struct Env<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// `var` parsed, or `default` when unset.
    pub fn parse<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => {
                raw.trim().parse().map_err(|e| ConfigError { var, detail: format!("{raw:?} is not valid: {e}") })
            }
        }
    }

    /// `LOG_FORMAT`: `json` or `text` (default).
    pub fn log_json(&self) -> Result<bool, ConfigError> {
        match self.get("LOG_FORMAT").as_deref() {
            None | Some("text") => Ok(false),
            Some("json") => Ok(true),
            Some(other) => Err(ConfigError { var: "LOG_FORMAT", detail: format!("{other:?} is not json or text") }),
        }
    }

    /// `SHUTDOWN_GRACE_MS` (default 20000): how long after SIGTERM a service lets in-flight work
    /// finish before it exits anyway. Below Kubernetes' default `terminationGracePeriodSeconds`
    /// (30 s), so the service exits on its own terms before the kubelet kills it.
    pub fn shutdown_grace(&self) -> Result<std::time::Duration, ConfigError> {
        Ok(std::time::Duration::from_millis(self.parse("SHUTDOWN_GRACE_MS", 20_000)?))
    }

    /// The Dapr sidecar's HTTP endpoint as the Dapr SDKs find it: `DAPR_HTTP_ENDPOINT`, else
    /// `http://127.0.0.1:{DAPR_HTTP_PORT}` (default port 3500).
    pub fn dapr_http_endpoint(&self) -> Result<String, ConfigError> {
        let port: u16 = self.parse("DAPR_HTTP_PORT", 3500)?;
        Ok(self.get("DAPR_HTTP_ENDPOINT").unwrap_or_else(|| format!("http://127.0.0.1:{port}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_blanks_and_bad_values() {
        let env = Env::new(|name| match name {
            "PORT" => Some("80".into()),
            "BLANK" => Some("  ".into()),
            "BAD" => Some("x".into()),
            "LOG_FORMAT" => Some("yaml".into()),
            _ => None,
        });
        assert_eq!(env.parse("PORT", 1u16), Ok(80));
        assert_eq!(env.parse("BLANK", 7u16), Ok(7));
        assert_eq!(env.parse::<u16>("BAD", 1).unwrap_err().var, "BAD");
        assert_eq!(env.log_json().unwrap_err().var, "LOG_FORMAT");
        assert_eq!(env.dapr_http_endpoint(), Ok("http://127.0.0.1:3500".into()));
    }
}
