//! The todo service's database: the shared connection code (`service_kit::db`: SQLite or
//! PostgreSQL by URL) with this service's migrations.

use service_kit::db::Migrations;
pub use service_kit::db::{Backend, Database, column};
use sqlx::migrate::Migrator;

use crate::error::Result;

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

pub const MIGRATIONS: Migrations = Migrations { sqlite: &[&SQLITE], postgres: &[&POSTGRES] };

/// Connects (creating a SQLite file on first start) and runs the migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<Database> {
    Ok(Database::connect(url, max_connections, MIGRATIONS).await?)
}
