//! The consumer bookkeeping tables (`processed_events`, `delivery_failures`, `dead_letters`,
//! in this crate's `migrations/`): version 1 of every consumer's database, its own tables from
//! version 2 on.

use sqlx::migrate::Migrator;

pub static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
pub static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// A consumer's `service_kit::db::Migrations`: this crate's bookkeeping, then the calling
/// crate's own `migrations/sqlite` and `migrations/postgres`.
#[macro_export]
macro_rules! consumer_migrations {
    () => {{
        static SQLITE: ::sqlx::migrate::Migrator = ::sqlx::migrate!("./migrations/sqlite");
        static POSTGRES: ::sqlx::migrate::Migrator = ::sqlx::migrate!("./migrations/postgres");
        ::service_kit::db::Migrations {
            sqlite: &[&$crate::migrations::SQLITE, &SQLITE],
            postgres: &[&$crate::migrations::POSTGRES, &POSTGRES],
        }
    }};
}
