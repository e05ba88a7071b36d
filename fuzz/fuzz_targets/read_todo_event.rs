//! A delivery body as daprd posts it, read as a todo event: never a panic, and whatever is
//! accepted keeps the contract (a version of at least 1, timestamps that round-trip in the
//! fixed-width UTC form, a title within its limits).
#![no_main]

use std::sync::LazyLock;

use dapr_events::delivery::read_todo_event;
use dapr_events::schema::EventSchemas;
use dapr_events::timestamp;
use libfuzzer_sys::fuzz_target;

static SCHEMAS: LazyLock<EventSchemas> = LazyLock::new(|| EventSchemas::load().expect("the schemas compile"));

fuzz_target!(|body: &[u8]| {
    let Ok(event) = read_todo_event(body, &SCHEMAS) else { return };
    let data = &event.data;
    assert!(data.version >= 1, "accepted version {}", data.version);
    assert!(
        (1..=200).contains(&data.title.chars().count()),
        "accepted a title of {} chars",
        data.title.chars().count()
    );
    for time in [Some(data.created_at), Some(data.updated_at), data.completed_at, data.due_at, data.deleted_at]
        .into_iter()
        .flatten()
    {
        let text = timestamp::format(&time);
        assert_eq!(text.len(), 27, "accepted {text}");
        let again = timestamp::parse(&text).map(|t| timestamp::format(&t));
        assert_eq!(again.as_deref(), Ok(text.as_str()), "{text} does not round-trip");
    }
});
