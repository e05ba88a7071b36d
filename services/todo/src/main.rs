use anyhow::Context;
use service_kit::telemetry;
use todo::config::Settings;
use todo::startup::Application;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env().context("reading configuration from the environment")?;
    telemetry::init(settings.log_json);
    let app = Application::build(settings).await.context("starting the todo service")?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            telemetry::shutdown_signal().await;
            shutdown.cancel();
        }
    });
    app.run_until_stopped(shutdown).await.context("running the todo service")?;
    Ok(())
}
