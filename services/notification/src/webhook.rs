//! The optional webhook channel (`NOTIFY_WEBHOOK_URL`): each notification is POSTed once.
//!
//! "Once" is recorded like every effect, as (CloudEvent id, `notification.webhook`) after the
//! receiver answered 2xx. A crash between that answer and the record repeats the call on
//! redelivery, so each call carries `Idempotency-Key: <notification id>` for the receiver to
//! deduplicate. A 5xx, a timeout or an unreachable receiver is transient (RETRY); any other
//! non-2xx means the receiver will never take it (DROP, to the dead-letter topic, replayable
//! once the receiver is fixed).

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

#[derive(Debug, Clone)]
pub struct Webhook {
    http: reqwest::Client,
    url: reqwest::Url,
}

impl Webhook {
    pub fn new(settings: &WebhookSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(settings.timeout).build()?;
        Ok(Self { http, url: settings.url.clone() })
    }

    /// Calls the webhook for `notification` unless that was done already.
    pub async fn deliver_once(&self, db: &Database, notification: &Notification) -> Result<(), WebhookError> {
        let done = was_processed(db, &notification.event_id, WEBHOOK)
            .await
            .map_err(|e| WebhookError::Transient(format!("database: {e}")))?;
        if done {
            return Ok(());
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
        if status.is_server_error() {
            return Err(WebhookError::Transient(format!("{} answered {status}", self.url)));
        }
        if !status.is_success() {
            return Err(WebhookError::Permanent(format!("{} answered {status}", self.url)));
        }
        let recorded = async {
            let mut conn = db.writer.acquire().await?;
            mark_processed(&mut conn, &notification.event_id, WEBHOOK).await
        };
        recorded.await.map_err(|e| WebhookError::Transient(format!("recording the call: {e}")))?;
        Ok(())
    }
}
