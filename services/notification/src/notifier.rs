//! What a todo event does to the notification service: a notification for the events worth
//! telling (`todos.task.created`, `todos.task.completed`), written once, then the webhook
//! called once when one is configured.
//!
//! | What happened | Answer |
//! | --- | --- |
//! | notification written (or written before: a duplicate), webhook called (or called before) | `SUCCESS` |
//! | database unavailable or failing; webhook 408, 429, 5xx, timeout, unreachable | `RETRY` |
//! | webhook answered any other non-2xx (see `crate::webhook`) | `DROP` (to the dead-letter topic, replayable once the receiver is fixed) |
//!
//! Order: a notification is an immutable record of one event, so out-of-order deliveries cannot
//! make anything regress; ids carry the time of the change, so lists are in change order
//! whatever the arrival order, and a gap (a missing earlier event) delays nothing.

use std::sync::Arc;

use dapr_consumer::{EventHandler, Refusal};
use dapr_events::TodoEventType;
use dapr_events::delivery::TodoEvent;
use service_kit::db::Database;

use crate::notifications;
use crate::webhook::{Webhook, WebhookError};

#[derive(Clone)]
pub struct Notifier {
    pub db: Database,
    pub webhook: Option<Arc<Webhook>>,
}

impl EventHandler for Notifier {
    const TOPICS: &'static [TodoEventType] = &[TodoEventType::Created, TodoEventType::Completed];

    async fn handle(&self, event: &TodoEvent) -> Result<(), Refusal> {
        let Some((kind, message)) = notifications::text_for(event) else {
            tracing::debug!(event_id = %event.id, event_type = %event.event_type, "not an event worth a notification");
            return Ok(());
        };
        let notification =
            notifications::record(&self.db, event, kind, &message).await.map_err(|e| Refusal::database(&e))?;
        if let Some(webhook) = &self.webhook {
            webhook.deliver_once(&self.db, &notification).await.map_err(|error| match error {
                WebhookError::Transient(_) => Refusal::Retry(error.to_string()),
                WebhookError::Permanent(_) => Refusal::Drop(error.to_string()),
            })?;
        }
        // Debug: at the rates the services run, a line per event would be most of the log
        // (`dapr_todo_deliveries_total` counts them).
        tracing::debug!(event_id = %event.id, correlation_id = event.correlation_id.as_deref(), kind, "notified");
        Ok(())
    }
}
