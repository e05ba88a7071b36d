//! End-to-end tests of the dev sidecar: a subscriber app over real HTTP, the sidecar in-process
//! on port 0, real Redis (`TEST_REDIS_URL`, default 127.0.0.1:6379). Each test uses topic and
//! app names of its own, so tests share one Redis without seeing each other's streams.

mod helpers;

mod delivery;
mod processes;
mod publish;
mod redis_layout;
mod tls;
