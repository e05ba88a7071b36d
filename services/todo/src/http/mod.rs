//! HTTP plumbing shared by the resources: problem responses, extractors that turn malformed
//! input into problems, and the per-request context (correlation and trace ids).

pub mod context;
pub mod extract;
pub use service_kit::problem;
