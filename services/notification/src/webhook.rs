//! The optional webhook channel (`NOTIFY_WEBHOOK_URL`): each notification is POSTed once.
//!
//! "Once" is recorded like every effect, as (CloudEvent id, `notification.webhook`) after the
//! receiver answered 2xx. A crash between that answer and the record repeats the call on
//! redelivery, so each call carries `Idempotency-Key: <notification id>` for the receiver to
//! deduplicate.
//!
//! | The receiver | Answer to daprd |
//! | --- | --- |
//! | 2xx | SUCCESS |
//! | 408, 429, any 5xx, a timeout, unreachable | RETRY: it may take it later |
//! | any other 4xx (or 1xx/3xx) | DROP: it never will (dead-lettered, replayable once it is fixed) |
//!
//! The same classes as the publish client's (`dapr_events::publish`). A `Retry-After` on a 429
//! or 503 is honoured: until then deliveries answer RETRY without calling the receiver.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use dapr_consumer::processed::{mark_processed, was_processed};
use service_kit::db::Database;

use crate::config::WebhookSettings;
use crate::notifications::Notification;

/// The effect name under which webhook calls are recorded as done.
pub const WEBHOOK: &str = "notification.webhook";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook failed, will retry: {0}")]
    Transient(String),
    #[error("webhook refused the notification: {0}")]
    Permanent(String),
}

/// The longest `Retry-After` honoured: a receiver cannot hold notifications back for longer
/// than this per answer.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Webhook {
    http: reqwest::Client,
    url: reqwest::Url,
    /// Set from the receiver's `Retry-After`: no call before this instant.
    not_before: Mutex<Option<Instant>>,
}

impl Webhook {
    pub fn new(settings: &WebhookSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(settings.timeout).build()?;
        Ok(Self { http, url: settings.url.clone(), not_before: Mutex::new(None) })
    }

    /// Calls the webhook for `notification` unless that was done already.
    pub async fn deliver_once(&self, db: &Database, notification: &Notification) -> Result<(), WebhookError> {
        let done = was_processed(db, &notification.event_id, WEBHOOK)
            .await
            .map_err(|e| WebhookError::Transient(format!("database: {e}")))?;
        if done {
            return Ok(());
        }
        if let Some(wait) = self.asked_to_wait() {
            return Err(WebhookError::Transient(format!("{} asked to wait {} s more", self.url, wait.as_secs())));
        }
        let sent = self
            .http
            .post(self.url.clone())
            .header("Idempotency-Key", notification.id.to_string())
            .json(notification)
            .send()
            .await;
        let response = sent.map_err(|e| WebhookError::Transient(format!("calling {}: {e}", self.url)))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok());
            if let Some(wait) = retry_after.and_then(parse_retry_after) {
                *self.not_before.lock().expect("not poisoned") = Some(Instant::now() + wait.min(MAX_RETRY_AFTER));
            }
            let refusal = format!("{} answered {status}", self.url);
            return Err(if is_transient(status) {
                WebhookError::Transient(refusal)
            } else {
                WebhookError::Permanent(refusal)
            });
        }
        let recorded = async {
            let mut conn = db.writer.acquire().await?;
            mark_processed(&mut conn, &notification.event_id, WEBHOOK).await
        };
        recorded.await.map_err(|e| WebhookError::Transient(format!("recording the call: {e}")))?;
        Ok(())
    }
}

impl Webhook {
    /// How much longer the receiver asked us to wait, if it did.
    fn asked_to_wait(&self) -> Option<Duration> {
        let not_before = (*self.not_before.lock().expect("not poisoned"))?;
        not_before.checked_duration_since(Instant::now()).filter(|wait| !wait.is_zero())
    }
}

/// Whether a receiver that answered `status` may take the notification later.
pub fn is_transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_and_permanent_answers() {
        for transient in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient(StatusCode::from_u16(transient).unwrap()), "{transient}");
        }
        for permanent in [300, 400, 401, 403, 404, 410, 413, 422] {
            assert!(!is_transient(StatusCode::from_u16(permanent).unwrap()), "{permanent}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc2822();
        let wait = parse_retry_after(&in_a_minute).unwrap();
        assert!((Duration::from_secs(55)..=Duration::from_secs(60)).contains(&wait), "{wait:?}");
        assert_eq!(parse_retry_after("Thu, 01 Jan 1970 00:00:00 +0000"), None, "a date past");
        assert_eq!(parse_retry_after("soon"), None);
    }
}
