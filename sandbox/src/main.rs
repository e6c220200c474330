//! `slipway-sandbox`: serves the sandbox until Ctrl-C or SIGTERM.

use slipway_sandbox::SandboxConfig;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let config = match SandboxConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("slipway-sandbox: {e}");
            std::process::exit(2);
        }
    };
    tracing::info!(?config, "starting sandbox");
    let sandbox = match slipway_sandbox::spawn(config).await {
        Ok(sandbox) => sandbox,
        Err(e) => {
            eprintln!("slipway-sandbox: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    println!("slipway-sandbox listening on {}", sandbox.base_url);
    shutdown_signal().await;
    tracing::info!("shutting down");
    sandbox.shutdown().await;
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
