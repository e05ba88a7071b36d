use anyhow::Context;
use service_kit::{startup, telemetry};

/// mimalloc rather than the system allocator: under `make bench-write`, glibc's malloc and free
/// took about a sixth of the machine's CPU (perf), and both the service and the bare-insert
/// baseline ran faster on mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = analytics::config::Settings::from_env().context("reading configuration from the environment")?;
    let telemetry =
        telemetry::init(&settings.consumer.app_id, settings.consumer.log_json).context("setting up telemetry")?;
    let served = async {
        let app = analytics::startup::build(settings).await.context("starting the analytics service")?;
        app.run_until_stopped(startup::shutdown_on_signal()).await.context("running the analytics service")
    }
    .await;
    // After serving, so the spans of the shutdown itself go too; it blocks until the exporter
    // has flushed, so off the async workers.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    served
}
