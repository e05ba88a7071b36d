//! An RFC 3339 timestamp from a request or an event: never a panic, and what is accepted has
//! the fixed-width UTC form that round-trips (the defect that made todos unreadable).
#![no_main]

use dapr_events::timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(time) = timestamp::parse(text) else { return };
    let formatted = timestamp::format(&time);
    assert_eq!(formatted.len(), 27, "{text:?} became {formatted}");
    let again = timestamp::parse(&formatted).map(|t| timestamp::format(&t));
    assert_eq!(again.as_deref(), Ok(formatted.as_str()), "{formatted} does not round-trip");
});
