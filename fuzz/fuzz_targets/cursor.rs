//! A pagination cursor from a query string: never a panic, and the id it names is the one a
//! cursor for that id names again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use service_kit::pagination::{PageRequest, decode_cursor};

fuzz_target!(|cursor: &str| {
    let Ok(id) = decode_cursor(cursor) else { return };
    let request = PageRequest { limit: 1, after: None };
    let page = service_kit::pagination::Page::from_rows(vec![id, id], &request, |row| *row);
    let reissued = page.next_cursor.expect("a second row means a cursor");
    assert_eq!(decode_cursor(&reissued).ok(), Some(id));
});
