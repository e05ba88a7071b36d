//! Building the notification service: the consumer framework (`crates/dapr-consumer`) with the
//! notifier as its event handler, and the notifications API.

use std::sync::Arc;

use dapr_consumer::{Consumer, ConsumerApp};
use service_kit::db::Migrations;
use service_kit::env::ConfigError;
use service_kit::startup::StartError;
use utoipa_axum::router::OpenApiRouter;

use crate::api;
use crate::config::Settings;
use crate::notifier::Notifier;
use crate::webhook::Webhook;

/// The consumer bookkeeping (version 1), then this service's tables.
pub const MIGRATIONS: Migrations = dapr_consumer::consumer_migrations!();

/// Connects to the database (running migrations) and binds the port; nothing is served until
/// [`ConsumerApp::run_until_stopped`].
pub async fn build(settings: Settings) -> Result<ConsumerApp, StartError> {
    let webhook = settings
        .webhook
        .as_ref()
        .map(|webhook| {
            Webhook::new(webhook)
                .map(Arc::new)
                .map_err(|e| ConfigError { var: "NOTIFY_WEBHOOK_URL", detail: e.to_string() })
        })
        .transpose()?;
    let consumer = Consumer::start(&settings.consumer, MIGRATIONS).await?;
    let routes = routes(&consumer, webhook);
    Ok(consumer.serve(routes))
}

/// Every route of the service: the notifier as the event handler (calling `webhook` when
/// there is one) and the notifications API.
pub fn routes(consumer: &Consumer, webhook: Option<Arc<Webhook>>) -> OpenApiRouter {
    let db = consumer.db().clone();
    consumer.routes(Notifier { db: db.clone(), webhook }, api::routes(db), OpenApiRouter::new())
}
