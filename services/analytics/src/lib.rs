//! The analytics service: a CQRS read model of the todo events. It consumes every todo topic
//! through the Dapr sidecar, appends each event once to its own log, projects the latest state
//! of each todo from it, and answers per-user, summary and daily figures. The projection can be
//! dropped and rebuilt from the log with identical results.

pub mod config;
pub mod projection;
pub mod queries;
pub mod startup;
