//! `GET /healthz` (the process is up), `GET /readyz` (Temporal answers), `GET /metrics`.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::AppState;

/// Liveness: no dependencies.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: 200 only when Temporal answers, so a load balancer routes webhooks only to
/// starters that can make them durable.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    if app.gateway.ready().await {
        (StatusCode::OK, Json(json!({"status": "ready", "temporal": "ok"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not_ready", "temporal": "unreachable"})))
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], app.metrics.render())
}
