use anyhow::Context;
use service_kit::{startup, telemetry};

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
    // The last spans are exported before the process exits.
    telemetry.shutdown();
    served
}
