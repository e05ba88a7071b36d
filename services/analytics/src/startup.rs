//! Building the analytics service: the consumer framework (`crates/dapr-consumer`) with the
//! projection as its event handler, the analytics API, and the rebuild among its admin routes.

use dapr_consumer::{Consumer, ConsumerApp};
use service_kit::db::Migrations;
use service_kit::startup::StartError;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Settings;
use crate::projection::Projection;
use crate::queries;

/// The consumer bookkeeping (version 1), then this service's tables.
pub const MIGRATIONS: Migrations = dapr_consumer::consumer_migrations!();

/// Connects to the database (running migrations) and binds the port; nothing is served until
/// [`ConsumerApp::run_until_stopped`].
pub async fn build(settings: Settings) -> Result<ConsumerApp, StartError> {
    let consumer = Consumer::start(&settings.consumer, MIGRATIONS).await?;
    let routes = routes(&consumer);
    Ok(consumer.serve(routes))
}

/// Every route of the service: the projection as the event handler, the figures, and the
/// rebuild among the admin routes.
pub fn routes(consumer: &Consumer) -> OpenApiRouter {
    let db = consumer.db().clone();
    consumer.routes(Projection { db: db.clone() }, queries::routes(db.clone()), queries::admin_routes(db))
}
