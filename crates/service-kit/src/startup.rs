//! What every service's start and stop share: the error a start-up fails with, serving until
//! shutdown, and the signals that ask for it.

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::db::DbError;
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
    /// A task the service cannot run without (the todo service's relay) ended before shutdown.
    #[error("{task} stopped unexpectedly: {reason}")]
    TaskStopped { task: &'static str, reason: String },
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting and lets in-flight
/// requests finish (a delivery in flight gets its answer to daprd).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

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
