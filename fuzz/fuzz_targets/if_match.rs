//! An `If-Match` header value: never a panic; `*` means any version, and a list names only
//! versions whose tags, exactly as issued (`"3"`), it contains.
#![no_main]

use libfuzzer_sys::fuzz_target;
use todo::http::headers::parse_if_match;
use todo::todos::commands::Precondition;

fuzz_target!(|value: &str| {
    match parse_if_match(value) {
        Ok(Precondition::Any) => assert_eq!(value.trim(), "*"),
        Ok(Precondition::Versions(versions)) => {
            for version in versions {
                assert!(version >= 1 && value.contains(&format!("\"{version}\"")), "{version} read from {value:?}");
            }
        }
        Err(_) => {}
    }
});
