//! `devsidecar`: a Dapr-compatible development sidecar.
//!
//! `devsidecar --app-id todo --app-port 8080 --resources-path ./components` behaves like
//! `daprd` with the same flags on the pub/sub HTTP surface; `devsidecar run -f dapr.yaml` runs
//! every app of a Dapr multi-app run file, each with its own sidecar, like `dapr run -f`.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use devsidecar::sidecar::{Sidecar, SidecarConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    daprd: DaprdArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run every app of a Dapr run file (`dapr.yaml`, or a directory holding one), each with
    /// its own sidecar, like `dapr run -f`.
    Run {
        #[arg(short = 'f', long = "run-file")]
        run_file: PathBuf,
    },
}

/// daprd's flags (contract §9.2), those that matter for pub/sub over HTTP.
#[derive(Args)]
struct DaprdArgs {
    /// The app id: CloudEvent source of publishes, default consumer group.
    #[arg(long, default_value = "")]
    app_id: String,
    /// The app's port; without it there is no app channel and no subscription.
    #[arg(long)]
    app_port: Option<u16>,
    /// The Dapr HTTP API port.
    #[arg(long, default_value_t = 3500)]
    dapr_http_port: u16,
    /// Address the HTTP API listens on.
    #[arg(long = "dapr-listen-addresses", default_value = "127.0.0.1")]
    listen_address: IpAddr,
    /// A directory (or file) of Component, Subscription and Resiliency YAML; repeatable.
    #[arg(long = "resources-path", visible_alias = "components-path")]
    resources_paths: Vec<PathBuf>,
    /// A Configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only `http` is supported by this sidecar.
    #[arg(long, default_value = "http", value_parser = ["http"])]
    app_protocol: String,
    /// Host the sidecar calls the app on.
    #[arg(long, default_value = "127.0.0.1")]
    app_channel_address: String,
    /// Accepted for compatibility with daprd command lines; gRPC is not served.
    #[arg(long, hide = true)]
    dapr_grpc_port: Option<u16>,
    /// `debug`, `info`, `warn` or `error` (RUST_LOG overrides it).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log JSON lines.
    #[arg(long)]
    log_as_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    devsidecar::telemetry::init(&cli.daprd.log_level, cli.daprd.log_as_json);
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            devsidecar::telemetry::shutdown_signal().await;
            shutdown.cancel();
        }
    });
    match cli.command {
        Some(Command::Run { run_file }) => devsidecar::run::run(&run_file, shutdown).await.context("dapr run -f")?,
        None => {
            let args = cli.daprd;
            let config = SidecarConfig {
                app_id: args.app_id,
                app_port: args.app_port,
                app_channel_address: args.app_channel_address,
                http_port: args.dapr_http_port,
                listen_address: args.listen_address,
                resources_paths: args.resources_paths,
                config_path: args.config,
                api_token: std::env::var("DAPR_API_TOKEN").ok().filter(|t| !t.is_empty()),
                app_api_token: std::env::var("APP_API_TOKEN").ok().filter(|t| !t.is_empty()),
            };
            let sidecar = Sidecar::build(config).await.context("starting the sidecar")?;
            sidecar.run(shutdown).await.context("running the sidecar")?;
        }
    }
    Ok(())
}
