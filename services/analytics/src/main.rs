use anyhow::Context;
use service_kit::{startup, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = analytics::config::Settings::from_env().context("reading configuration from the environment")?;
    telemetry::init(settings.consumer.log_json);
    let app = analytics::startup::build(settings).await.context("starting the analytics service")?;
    app.run_until_stopped(startup::shutdown_on_signal()).await.context("running the analytics service")?;
    Ok(())
}
