//! What every service's start and stop share: the error a start-up fails with, serving until
//! shutdown, and the signals that ask for it.

use std::future::IntoFuture;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio_util::sync::CancellationToken;

use crate::db::{Database, DbError};
use crate::env::ConfigError;

/// Why a service could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
    /// The event contract compiled into the service does not compile (`schemas/events/`): a
    /// defect of the build, found before serving anything.
    #[error("the event schemas: {0}")]
    Contract(String),
    /// The OTLP trace exporter could not be built from the `OTEL_*` variables.
    #[error("the trace exporter: {0}")]
    Telemetry(String),
    /// A task the service cannot run without (the todo service's relay) ended before shutdown.
    #[error("{task} stopped unexpectedly: {reason}")]
    TaskStopped { task: &'static str, reason: String },
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting and lets in-flight
/// requests finish (a delivery in flight gets its answer to daprd), for `grace` at most. Past
/// it the remaining connections are cut: a stuck database or client must not keep the process
/// alive until the orchestrator kills it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    // TCP_NODELAY on every accepted connection: with Nagle's algorithm on, a response written
    // in two segments waits for the client's delayed ACK (40 ms on Linux) before its second.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set on an accepted connection");
        }
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned()).into_future();
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => return served,
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(served) => served,
        Err(_) => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "requests still in flight when the shutdown grace period ended; cut off"
            );
            Ok(())
        }
    }
}

/// Closes the database's pools, waiting at most a few seconds for connections in use: a
/// database that stopped answering must not hold up the exit.
pub async fn close_database(db: &Database) {
    if tokio::time::timeout(CLOSE_TIMEOUT, db.close()).await.is_err() {
        tracing::warn!("the database did not release its connections within {CLOSE_TIMEOUT:?}; exiting anyway");
    }
}

const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A token cancelled on Ctrl-C or SIGTERM, for `run_until_stopped`.
pub fn shutdown_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    shutdown
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes and `dapr run` send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown requested");
}
