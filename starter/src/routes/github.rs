//! `POST /webhooks/github`: the GitHub App's webhook. A verified delivery ([`GitHubDelivery`],
//! deduplicated by `X-GitHub-Delivery`: a redelivery keeps its id, which becomes the signal
//! request id, and a job is one workflow per issue) is mapped to its intent and applied by
//! [`WebhookService::github`], within GitHub's 10 s budget, after the durable start or signal.
//!
//! Answers: 202 a workflow took it; 200 ping or nothing to do; 401 bad signature; 400 no
//! delivery id or malformed body; 503 Temporal did not accept.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::Value;

use crate::{
    AppState,
    error::ApiError,
    ingress::github::{GitHubDelivery, intent},
    service::webhooks::WebhookService,
};

/// The handler.
#[utoipa::path(
    post,
    path = "/webhooks/github",
    tag = "webhooks",
    operation_id = "receiveGitHubEvent",
    summary = "GitHub App events (labelled issues start coding jobs; pull request reviews and merges)",
    params(
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=<hex HMAC-SHA256>` (`GITHUB_WEBHOOK_SECRET`)"),
        ("X-GitHub-Event" = String, Header, description = "Event name"),
        ("X-GitHub-Delivery" = String, Header, description = "Delivery id (a redelivery keeps it; applied once)"),
    ),
    request_body(content = Object, description = "The event's payload", content_type = "application/json"),
    responses(
        (status = 200, description = "Ping, or nothing to do", body = Object),
        (status = 202, description = "A workflow took it", body = Object),
    ),
)]
pub async fn webhook(
    State(app): State<AppState>,
    delivery: GitHubDelivery,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let intent = intent(&delivery.event, &app.settings.job_label)
        .map_err(|m| ApiError::bad_request("MALFORMED_PAYLOAD", m))?;
    let answer = WebhookService::new(app).github(&delivery.id, intent).await?;
    let status = if answer.accepted { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(answer.body)))
}
