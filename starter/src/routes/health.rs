//! `GET /healthz` (the process is up), `GET /readyz` (Temporal answers), `GET /metrics`, and
//! the JSON answers for a path or method no route serves.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};

use crate::{
    AppState,
    error::ApiError,
    views::{Health, Readiness},
};

/// Liveness: no dependencies.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    summary = "Liveness: the process is up",
    responses((status = 200, description = "Up", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".to_owned() })
}

/// Readiness: 200 only when Temporal answers, so a load balancer routes webhooks only to
/// starters that can make them durable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    summary = "Readiness: Temporal answers",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Temporal does not answer", body = Readiness),
    ),
)]
pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (status, ready, temporal) = if app.gateway.ready().await {
        (StatusCode::OK, "ready", "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready", "unreachable")
    };
    (status, Json(Readiness { status: ready.to_owned(), temporal: temporal.to_owned() }))
}

/// Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    summary = "Prometheus metrics (here unless SLIPWAY_STARTER_METRICS_ADDR serves them apart)",
    responses((status = 200, description = "Text exposition format 0.0.4", content_type = "text/plain", body = String)),
)]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], app.metrics.render())
}

/// Any path no route serves: 404 `ROUTE_NOT_FOUND`, JSON like every other error.
pub async fn no_route() -> ApiError {
    ApiError::not_found("ROUTE_NOT_FOUND", "no such route; see GET /api/openapi.json")
}

/// A served path with a method it does not take: 405 `METHOD_NOT_ALLOWED`.
pub async fn no_method() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "this path does not take this method")
}
