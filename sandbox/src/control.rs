//! The sandbox's own control plane under `/_sandbox` (no auth) and the request log.
//!
//! Tests and dev scripts use it to look inside (`state`, `requests`), to steer behaviour
//! (`faults`, `github/runner`, `openai/review`), to trigger what a human would do in a browser
//! (`stripe/checkout/...`, `tailscale/devices`, a server ignoring ACPI shutdown `hetzner/acpi`) or what a provider does by itself (Stripe
//! renewals failing, invoices paid, subscription status changes; a GitHub App installed on
//! seeded repositories, pull requests closed, webhooks sent), and to start over (`reset`).

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::state::{Shared, json_response};
use crate::{faults, github, hetzner, openai, stripe, tailscale};

pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route("/health", get(|| async { json_response(StatusCode::OK, json!({"ok": true})) }))
        .route("/state", get(state))
        .route("/requests", get(requests))
        .route("/exchanges", get(crate::exchanges::list))
        .route("/reset", post(reset))
        .route("/faults", post(faults::create).get(faults::list).delete(faults::clear))
        .nest("/github", github::control_router())
        .nest("/openai", openai::control_router())
        .nest("/stripe", stripe::control_router())
        .route("/tailscale/devices", post(tailscale::control_add_device))
        .route("/hetzner/acpi", post(hetzner::control_acpi))
}

/// Records method, path and status of every request (never bodies or headers).
pub(crate) async fn log_requests(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    tracing::info!(%method, %path, status, "request");
    app.log_request(&method, &path, status);
    response
}

async fn state(State(app): State<Shared>) -> Response {
    let mut state = app.lock();
    let hetzner = state.hetzner.dump();
    let body = json!({
        "hetzner": hetzner,
        "tailscale": state.tailscale.dump(),
        "github": state.github.dump(&app.base_url),
        "stripe": state.stripe.dump(),
        "supabase": state.supabase.dump(),
        "vercel": state.vercel.dump(app.config.vercel_ready_ms),
        "n8n": state.n8n.dump(),
        "openai": state.openai.dump(),
    });
    json_response(StatusCode::OK, body)
}

async fn requests(State(app): State<Shared>) -> Response {
    let state = app.lock();
    json_response(StatusCode::OK, Value::from_iter(state.requests.iter().cloned()))
}

async fn reset(State(app): State<Shared>) -> Response {
    app.reset();
    tracing::info!("sandbox reset");
    json_response(StatusCode::OK, json!({"reset": true}))
}
