//! The app channel: how the sidecar calls the application (contract §2.1, §3.1, §8.2).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

pub const API_TOKEN_HEADER: &str = "dapr-api-token";

#[derive(Debug, Clone)]
pub struct AppChannel {
    http: reqwest::Client,
    base_url: String,
    address: String,
    app_id: String,
    app_api_token: Option<String>,
}

/// One entry of the app's `GET /dapr/subscribe` answer. Go's JSON decoder matches field names
/// case-insensitively, so `pubsubName` works as well as `pubsubname`; we accept both spellings
/// daprd users write.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ProgrammaticSubscription {
    #[serde(alias = "pubsubName", alias = "PubsubName", alias = "pubSubName")]
    pub pubsubname: String,
    #[serde(alias = "Topic")]
    pub topic: String,
    #[serde(default, alias = "Route")]
    pub route: Option<String>,
    #[serde(default, alias = "Routes")]
    pub routes: Option<ProgrammaticRoutes>,
    #[serde(default, alias = "Metadata")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, alias = "deadlettertopic", alias = "DeadLetterTopic")]
    #[serde(rename = "deadLetterTopic")]
    pub dead_letter_topic: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ProgrammaticRoutes {
    #[serde(default, alias = "Rules")]
    pub rules: Vec<ProgrammaticRule>,
    #[serde(default, alias = "Default")]
    pub default: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ProgrammaticRule {
    #[serde(default, rename = "match", alias = "Match")]
    pub match_expr: String,
    #[serde(alias = "Path")]
    pub path: String,
}

/// The app's answer to one delivery, as daprd reads it (contract §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppVerdict {
    Success,
    /// Retriable; `status` is the HTTP status when the app answered with a non-2xx code (so a
    /// resiliency `matching` list can apply to it).
    Retry {
        reason: String,
        status: Option<u16>,
    },
    Drop,
}

impl AppChannel {
    pub fn new(address: &str, port: u16, app_id: &str, app_api_token: Option<String>) -> Self {
        // No timeout: daprd's app client has none; only a resiliency timeout bounds a delivery.
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain HTTP client builds");
        Self {
            http,
            base_url: format!("http://{address}:{port}"),
            address: format!("{address}:{port}"),
            app_id: app_id.to_owned(),
            app_api_token,
        }
    }

    /// daprd polls the app port every 100 ms until it accepts a TCP connection, however long
    /// that takes (the caller stops waiting on shutdown).
    pub async fn wait_until_listening(&self) {
        while tokio::net::TcpStream::connect(&self.address).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("dapr-app-id"), header_value(&self.app_id));
        if let Some(token) = &self.app_api_token {
            headers.insert(HeaderName::from_static(API_TOKEN_HEADER), header_value(token));
        }
        headers
    }

    /// `GET /dapr/config`, once at start-up; daprd treats any failure as an empty config.
    pub async fn get_config(&self) {
        let _ = self.http.get(format!("{}/dapr/config", self.base_url)).headers(self.headers()).send().await;
    }

    /// `GET /dapr/subscribe` (contract §2.1): transport errors retried with daprd's built-in
    /// initialisation policy (500 ms, ×1.5, at most 1 s apart, 3 retries); 404 = none; another
    /// status or a malformed body is logged and means none.
    pub async fn get_subscriptions(&self) -> Vec<ProgrammaticSubscription> {
        let url = format!("{}/dapr/subscribe", self.base_url);
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        let response = loop {
            let sent =
                self.http.get(&url).headers(self.headers()).header(CONTENT_TYPE, "application/json").send().await;
            match sent {
                Ok(response) => break response,
                Err(error) if attempt < 3 => {
                    tracing::debug!(%error, attempt, "GET /dapr/subscribe failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay.mul_f64(1.5)).min(Duration::from_secs(1));
                    attempt += 1;
                }
                Err(error) => {
                    tracing::error!(%error, "GET /dapr/subscribe failed; no programmatic subscriptions");
                    return Vec::new();
                }
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            tracing::debug!("the app did not subscribe to any topic");
            return Vec::new();
        }
        if !status.is_success() {
            tracing::error!(%status, "GET /dapr/subscribe answered an error; no programmatic subscriptions");
            return Vec::new();
        }
        let body = response.bytes().await.unwrap_or_default();
        if body.iter().all(u8::is_ascii_whitespace) {
            return Vec::new();
        }
        serde_json::from_slice(&body).unwrap_or_else(|error| {
            tracing::error!(%error, "error getting topics from app: /dapr/subscribe did not answer a JSON array");
            Vec::new()
        })
    }

    /// `POST <path>` with the message, and daprd's reading of the answer.
    pub async fn deliver(&self, path: &str, body: Bytes, extra_headers: &BTreeMap<String, String>) -> AppVerdict {
        let mut headers = HeaderMap::new();
        // Message metadata becomes headers (contract §3.1), minus the ones HTTP owns.
        for (name, value) in extra_headers {
            let lower = name.to_ascii_lowercase();
            if matches!(lower.as_str(), "content-type" | "content-length" | "connection" | "transfer-encoding" | "host")
                || lower.ends_with("-bin")
            {
                continue;
            }
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                headers.insert(name, value);
            }
        }
        headers.extend(self.headers());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
        let sent = self.http.post(format!("{}{path}", self.base_url)).headers(headers).body(body).send().await;
        match sent {
            Err(error) => AppVerdict::Retry { reason: format!("calling the app failed: {error}"), status: None },
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                interpret(status, &body)
            }
        }
    }
}

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// daprd's table (contract §3.4): 2xx acks unless the body's `status` says RETRY or DROP
/// (exact upper case; any other non-empty value is an unknown status and retried); 404 drops;
/// every other code is retried.
pub fn interpret(status: u16, body: &[u8]) -> AppVerdict {
    if status == 404 {
        return AppVerdict::Drop;
    }
    if !(200..300).contains(&status) {
        return AppVerdict::Retry { reason: format!("the app answered HTTP {status}"), status: Some(status) };
    }
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return AppVerdict::Success;
    };
    let value = object.iter().find(|(key, _)| key.eq_ignore_ascii_case("status")).map(|(_, v)| v);
    match value.and_then(|v| v.as_str()) {
        None | Some("") | Some("SUCCESS") => AppVerdict::Success,
        Some("RETRY") => AppVerdict::Retry { reason: "the app answered RETRY".into(), status: None },
        Some("DROP") => AppVerdict::Drop,
        Some(other) => AppVerdict::Retry { reason: format!("unknown status {other:?}"), status: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_answers_like_daprd() {
        let retry = |status| AppVerdict::Retry { reason: String::new(), status };
        let same = |a: AppVerdict, b: AppVerdict| std::mem::discriminant(&a) == std::mem::discriminant(&b);
        for (status, body, expected) in [
            (200, &b""[..], AppVerdict::Success),
            (204, b"OK", AppVerdict::Success),
            (200, b"[1,2]", AppVerdict::Success),
            (200, b"{}", AppVerdict::Success),
            (200, br#"{"status":""}"#, AppVerdict::Success),
            (200, br#"{"status":"SUCCESS"}"#, AppVerdict::Success),
            (200, br#"{"Status":"SUCCESS"}"#, AppVerdict::Success),
            (200, br#"{"status":"RETRY"}"#, retry(None)),
            (200, br#"{"status":"DROP"}"#, AppVerdict::Drop),
            (200, br#"{"status":"success"}"#, retry(None)),
            (200, br#"{"status":"drop"}"#, retry(None)),
            (404, b"whatever", AppVerdict::Drop),
            (500, b"", retry(Some(500))),
            (400, br#"{"status":"DROP"}"#, retry(Some(400))),
            (302, b"", retry(Some(302))),
        ] {
            let verdict = interpret(status, body);
            assert!(
                same(verdict.clone(), expected.clone()),
                "{status} {:?}: {verdict:?}",
                String::from_utf8_lossy(body)
            );
            if let (AppVerdict::Retry { status: got, .. }, AppVerdict::Retry { status: want, .. }) =
                (&verdict, &expected)
            {
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn programmatic_subscriptions_accept_both_field_spellings() {
        let body = r#"[
            {"pubsubname":"pubsub","topic":"a","route":"/a","deadLetterTopic":"a-dlq"},
            {"pubsubName":"pubsub","topic":"b","routes":{"rules":[{"match":"event.type == \"x\"","path":"/x"}],"default":"/b"},"metadata":{"rawPayload":"true"}}
        ]"#;
        let parsed: Vec<ProgrammaticSubscription> = serde_json::from_str(body).unwrap();
        assert_eq!(parsed[0].dead_letter_topic.as_deref(), Some("a-dlq"));
        assert_eq!(parsed[1].pubsubname, "pubsub");
        assert_eq!(parsed[1].routes.as_ref().unwrap().rules[0].path, "/x");
        assert_eq!(parsed[1].metadata["rawPayload"], "true");
    }
}
