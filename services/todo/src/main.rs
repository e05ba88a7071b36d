use anyhow::Context;
use service_kit::{startup, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = todo::config::Settings::from_env().context("reading configuration from the environment")?;
    telemetry::init(settings.log_json);
    let app = todo::startup::Application::build(settings).await.context("starting the todo service")?;
    app.run_until_stopped(startup::shutdown_on_signal()).await.context("running the todo service")?;
    Ok(())
}
