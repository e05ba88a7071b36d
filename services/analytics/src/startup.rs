//! Building the analytics service: the consumer framework (`crates/dapr-consumer`) with the
//! projection as its event handler, the analytics API, and the rebuild among its admin routes.

use dapr_consumer::{Consumer, ConsumerApp};
use service_kit::db::Migrations;
use service_kit::startup::StartError;

use crate::config::Settings;
use crate::projection::Projection;
use crate::queries;

/// The consumer bookkeeping (version 1), then this service's tables.
pub const MIGRATIONS: Migrations = dapr_consumer::consumer_migrations!();

/// Connects to the database (running migrations) and binds the port; nothing is served until
/// [`ConsumerApp::run_until_stopped`].
pub async fn build(settings: Settings) -> Result<ConsumerApp, StartError> {
    let consumer = Consumer::start(&settings.consumer, MIGRATIONS).await?;
    let db = consumer.db().clone();
    Ok(consumer.into_app(Projection { db: db.clone() }, queries::routes(db.clone()), queries::admin_routes(db)))
}
