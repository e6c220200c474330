//! Slipway sandbox: a local stand-in for the third-party HTTP APIs Slipway calls.
//!
//! Dev runs and tests point the product's clients at this server instead of the internet.
//! Each provider lives under its own path prefix and answers with the real paths, JSON
//! shapes, status codes and error bodies, so the product code under test is the code that
//! runs in production; only base URLs differ.
//!
//! Tour of the modules:
//! - [`config`](SandboxConfig): listen address, secrets and simulated latencies, from env.
//! - `state`: the single `Mutex`-guarded in-memory store and shared helpers.
//! - `hetzner` (`/hetzner/v1`): servers and actions that finish after a while.
//! - `tailscale` (`/tailscale/api/v2`): auth keys and devices.
//! - `github` (`/github`): workflow dispatch, runs, and the fake Actions runner that posts
//!   signed callbacks and makes provisioned VMs join the tailnet; repositories generated from
//!   templates; and the coding bot's GitHub App: app JWTs, installation tokens, Git data,
//!   contents, pull requests, issue comments, collaborator permissions, signed webhooks and
//!   the App's webhook API (configuration, recorded deliveries, redelivery).
//! - [`github_events`]: GitHub webhook payloads and their signature, for tests elsewhere.
//! - [`stripe`] (`/stripe`): customers, Checkout sessions, subscriptions, invoices and meter
//!   events over Stripe's form-encoded API, the customer's side of Checkout, billing events,
//!   signed webhooks with retries to a movable endpoint, and the event list.
//! - `supabase` (`/supabase`): Management API projects that become healthy after a while,
//!   API keys, and a `database/query` that emulates the product's migration bookkeeping.
//! - `vercel` (`/vercel`): projects linked to the sandbox's GitHub repositories, environment
//!   variables, and deployments that go from `QUEUED` to `READY`.
//! - `n8n` (`/n8n/api/v1`): workflows, their activation and webhook paths.
//! - `openai` (`/openai/v1`): chat completions answered deterministically from a role tag in
//!   the system message, so the coding bot's plan, code and review steps can be tested.
//! - `faults`: injected latency, error responses and dropped connections for any provider
//!   path, always or at a seeded rate, and a check that `Retry-After` is honoured.
//! - `control` (`/_sandbox`): inventory, request log, faults, runner outcome, reset.

// Provider objects (GitHub's repositories above all) are large `json!` literals.
#![recursion_limit = "256"]

mod config;
mod control;
mod exchanges;
mod faults;
mod github;
pub mod github_events;
mod hetzner;
mod n8n;
mod openai;
mod state;
pub mod stripe;
mod supabase;
mod tailscale;
mod vercel;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::Router;
use axum::middleware::from_fn_with_state;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::SandboxConfig;
use state::{App, Shared};

/// A sandbox serving in a background task; dropping it also stops the server.
pub struct RunningSandbox {
    /// The address actually bound (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`; provider base URLs are this plus `/hetzner/v1`, `/tailscale`, ...
    pub base_url: String,
    app: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningSandbox {
    /// Stops accepting requests, cancels background work and waits for the server to end.
    pub async fn shutdown(mut self) {
        self.app.reset();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSandbox {
    /// Stops serving (without waiting) and cancels background work such as webhook retries.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            self.app.reset();
            let _ = tx.send(());
        }
    }
}

/// Binds `config.addr` and serves the sandbox in a background task.
pub async fn spawn(config: SandboxConfig) -> std::io::Result<RunningSandbox> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    serve_on(listener, config).await
}

/// Serves the sandbox on a listener the caller bound already (`config.addr` is ignored): a
/// caller that must know the address before the sandbox starts keeps the port instead of
/// releasing it and racing other processes to bind it again.
pub async fn spawn_on(
    listener: std::net::TcpListener,
    config: SandboxConfig,
) -> std::io::Result<RunningSandbox> {
    listener.set_nonblocking(true)?;
    serve_on(tokio::net::TcpListener::from_std(listener)?, config).await
}

async fn serve_on(
    listener: tokio::net::TcpListener,
    config: SandboxConfig,
) -> std::io::Result<RunningSandbox> {
    // reqwest is built without a default TLS provider; outgoing calls are plain http to
    // loopback, but the client builder still wants a process-wide provider installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = listener.local_addr()?;
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let base_url = format!("http://{}", SocketAddr::new(host, addr.port()));
    let app = App::new(config, base_url.clone());
    let router = router(app.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // The listener lets faults cut a connection without answering (`"drop"` faults).
        let listener = faults::CuttableListener(listener);
        let service = router.into_make_service_with_connect_info::<faults::Cut>();
        let serve = axum::serve(listener, service).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "sandbox server stopped with an error");
        }
    });
    tracing::info!(%base_url, "sandbox listening");
    Ok(RunningSandbox { addr, base_url, app, shutdown: Some(tx), task: Some(task) })
}

fn router(app: Shared) -> Router {
    Router::new()
        .nest("/hetzner/v1", hetzner::router(app.clone()))
        .nest("/tailscale", tailscale::router(app.clone()))
        .nest("/github", github::router(app.clone()))
        .nest("/stripe", stripe::router(app.clone()))
        .nest("/supabase", supabase::router(app.clone()))
        .nest("/vercel", vercel::router(app.clone()))
        .nest("/n8n", n8n::router(app.clone()))
        .nest("/openai", openai::router(app.clone()))
        .nest("/_sandbox", control::router())
        .merge(github::oidc::router())
        .layer(from_fn_with_state(app.clone(), faults::middleware))
        .layer(from_fn_with_state(app.clone(), control::log_requests))
        .layer(from_fn_with_state(app.clone(), exchanges::record))
        .with_state(app)
}
