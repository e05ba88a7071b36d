//! W3C Trace Context (`traceparent`) handling.
//!
//! The todo service stores the `traceparent` of the request that caused each event so that the
//! event, published later by the relay, continues the caller's trace.

use rand::Rng;

/// Returns the header value if it is a well-formed version-00 `traceparent`
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero).
///
/// Malformed values are discarded rather than rejected: tracing must never fail a request.
pub fn parse_traceparent(value: &str) -> Option<&str> {
    let value = value.trim();
    let mut parts = value.split('-');
    let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let is_hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let all_zero = |s: &str| s.bytes().all(|b| b == b'0');
    let well_formed = parts.next().is_none()
        && version == "00"
        && is_hex(trace_id, 32)
        && !all_zero(trace_id)
        && is_hex(parent_id, 16)
        && !all_zero(parent_id)
        && is_hex(flags, 2);
    well_formed.then_some(value)
}

/// Starts a new sampled trace: used when a request arrives without a valid `traceparent`, so
/// every event is still traceable end to end.
pub fn new_traceparent() -> String {
    let mut rng = rand::rng();
    let trace_id: u128 = rng.random_range(1..=u128::MAX);
    let parent_id: u64 = rng.random_range(1..=u64::MAX);
    format!("00-{trace_id:032x}-{parent_id:016x}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_spec_example() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(header), Some(header));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?} was accepted");
        }
    }

    #[test]
    fn generated_values_are_valid_and_distinct() {
        let a = new_traceparent();
        assert_eq!(parse_traceparent(&a), Some(a.as_str()));
        assert_ne!(a, new_traceparent());
    }
}
