use anyhow::Context;
use service_kit::{startup, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = notification::config::Settings::from_env().context("reading configuration from the environment")?;
    telemetry::init(settings.consumer.log_json);
    let app = notification::startup::build(settings).await.context("starting the notification service")?;
    app.run_until_stopped(startup::shutdown_on_signal()).await.context("running the notification service")?;
    Ok(())
}
