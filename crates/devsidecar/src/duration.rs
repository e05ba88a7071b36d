//! Go's value syntaxes, as daprd reads resource fields: durations (`time.ParseDuration`:
//! `1m30s`, `500ms`, `1.5h`) and booleans (`strconv.ParseBool`). Users copy these values from
//! Dapr's docs, so they must mean here what they mean to daprd.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a duration (Go syntax such as 500ms, 5s, 1m30s)")]
pub struct DurationError {
    pub value: String,
}

/// `time.ParseDuration` for non-negative values: one or more `<number><unit>` terms with units
/// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; a bare `0` is allowed, any other bare number is not.
pub fn parse_go_duration(value: &str) -> Result<Duration, DurationError> {
    let error = || DurationError { value: value.to_owned() };
    let text = value.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(error());
    }
    let mut rest = text;
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(error)?;
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return Err(error());
        }
        let number: f64 = number.parse().map_err(|_| error())?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(error()),
        };
        total_nanos += number * nanos_per_unit;
        rest = after;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(error());
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// `strconv.ParseBool`: `1 t T TRUE true True` and `0 f F FALSE false False`, nothing else.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        for (text, expected) in [
            ("0", Duration::ZERO),
            ("5s", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("10us", Duration::from_micros(10)),
            ("250ns", Duration::from_nanos(250)),
            ("2h45m0.5s", Duration::from_millis((2 * 3600 + 45 * 60) * 1000 + 500)),
        ] {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
        for bad in ["", "5", "s", "5 s", "5sec", "-5s", "1.2.3s", "ms5"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn parses_go_booleans_only() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(parse_go_bool("tRuE"), None);
        assert_eq!(parse_go_bool(""), None);
    }
}
