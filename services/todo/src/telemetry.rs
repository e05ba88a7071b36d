//! Logging and shutdown signals, shared by every service.

pub use service_kit::telemetry::{init, shutdown_signal};
