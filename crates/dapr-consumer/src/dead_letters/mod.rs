//! Dead letters: the store of what daprd sends to a consumer's dead-letter topics
//! ([`store`]), and the admin API operators use to list, replay and discard them ([`admin`]).

pub mod admin;
pub mod store;

pub use store::{DeadLetter, DeadLetterStatus, DeadLetters};
