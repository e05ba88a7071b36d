use anyhow::Context;
use service_kit::telemetry;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = notification::config::Settings::from_env().context("reading configuration from the environment")?;
    telemetry::init(settings.consumer.log_json);
    let app = notification::startup::build(settings).await.context("starting the notification service")?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            telemetry::shutdown_signal().await;
            shutdown.cancel();
        }
    });
    app.run_until_stopped(shutdown).await.context("running the notification service")?;
    Ok(())
}
