//! `slipway-starter`: load configuration, bind, serve until Ctrl-C / SIGTERM.

use slipway_starter::{Application, Gateway, StarterSettings};
use slipway_telemetry::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _telemetry = slipway_telemetry::init("slipway-starter");
    let settings = match StarterSettings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("slipway-starter: {e}");
            std::process::exit(2);
        }
    };
    let gateway =
        Gateway::new(settings.task_queue.clone(), settings.temporal_timeout, settings.encryption.clone());
    let app = Application::build(settings, gateway).await?;
    tracing::info!(http = %app.http_addr(), grpc = %app.grpc_addr(), "slipway starter listening");
    app.run(shutdown_signal()).await
}
