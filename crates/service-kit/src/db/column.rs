//! Column decoding for the text-encoded types (see the migrations): ids are canonical UUID
//! text and timestamps RFC 3339 text on both backends.

use chrono::{DateTime, Utc};
use dapr_events::timestamp;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

fn decode_error(column: &str, source: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: column.to_owned(), source: Box::new(source) }
}

pub fn uuid(row: &AnyRow, column: &str) -> Result<Uuid, sqlx::Error> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|e| decode_error(column, e))
}

pub fn time(row: &AnyRow, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    let text: String = row.try_get(column)?;
    timestamp::parse(&text).map_err(|e| decode_error(column, e))
}

pub fn optional_time(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| timestamp::parse(&t).map_err(|e| decode_error(column, e))).transpose()
}

pub fn parsed<T: std::str::FromStr>(row: &AnyRow, column: &str) -> Result<T, sqlx::Error>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(column)?;
    text.parse().map_err(|e: T::Err| decode_error(column, std::io::Error::other(e.to_string())))
}
