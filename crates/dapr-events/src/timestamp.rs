//! RFC 3339 timestamps in UTC with microsecond precision (`2026-11-22T10:00:00.123456Z`).
//!
//! A fixed width keeps stored values sortable as text and the CloudEvent `time` always carries
//! sub-second precision; reading accepts any RFC 3339 offset.
//!
//! Only instants from year 0000 to year 9999 *in UTC* are timestamps here. RFC 3339 allows
//! offsets, so `9999-12-31T23:59:59-23:59` is valid RFC 3339, yet in UTC it falls in year
//! 10000, which has no four-digit form: it could not be written back as RFC 3339, would sort
//! wrongly as text and breaks the event schemas' `date-time`. [`parse`] refuses such instants,
//! so no service accepts, stores or publishes one.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// The earliest and latest years a timestamp may fall in, in UTC.
pub const YEARS: std::ops::RangeInclusive<i32> = 0..=9999;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTimestamp {
    #[error("not an RFC 3339 date-time: {0}")]
    Syntax(#[from] chrono::ParseError),
    #[error("falls in year {0} in UTC; timestamps must lie in years 0000 to 9999 in UTC")]
    OutOfRange(i32),
}

pub fn format(value: &DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An RFC 3339 date-time with any offset, normalised to UTC and within [`YEARS`].
pub fn parse(value: &str) -> Result<DateTime<Utc>, InvalidTimestamp> {
    let utc = DateTime::parse_from_rfc3339(value)?.with_timezone(&Utc);
    if !YEARS.contains(&utc.year()) {
        return Err(InvalidTimestamp::OutOfRange(utc.year()));
    }
    Ok(utc)
}

pub fn serialize<S: Serializer>(value: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(value))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(deserializer)?;
        text.map(|t| parse(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_utc_and_keeps_four_digit_years() {
        assert_eq!(format(&parse("2026-12-01T18:00:00+01:00").unwrap()), "2026-12-01T17:00:00.000000Z");
        assert_eq!(format(&parse("9999-12-31T23:59:59.999999Z").unwrap()), "9999-12-31T23:59:59.999999Z");
        assert_eq!(format(&parse("0000-01-01T00:00:00Z").unwrap()), "0000-01-01T00:00:00.000000Z");
        assert_eq!(parse("9999-12-31T23:59:59-23:59"), Err(InvalidTimestamp::OutOfRange(10000)));
        assert_eq!(parse("0000-01-01T00:00:00+00:01"), Err(InvalidTimestamp::OutOfRange(-1)));
        assert!(matches!(parse("tomorrow"), Err(InvalidTimestamp::Syntax(_))));
    }
}
