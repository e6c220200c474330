//! `slipway-starter`: load configuration, bind, serve until Ctrl-C / SIGTERM.

use slipway_starter::{Application, Gateway, StarterSettings};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let settings = match StarterSettings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("slipway-starter: {e}");
            std::process::exit(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let gateway = Gateway::new(settings.task_queue.clone(), settings.temporal_timeout);
    let app = Application::build(settings, gateway).await?;
    tracing::info!(http = %app.http_addr(), grpc = %app.grpc_addr(), "slipway starter listening");
    app.run(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
