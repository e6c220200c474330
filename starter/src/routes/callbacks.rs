//! `POST /callbacks/github-actions`: the `provision-agent.yml` job reporting its status, proven
//! by an Actions OIDC token or the HMAC fallback ([`ActionsDelivery`]). The callback is
//! signalled to exactly the saga run its job id names, persisted by Temporal before the 202; a
//! repeat of the same body carries the same signal request id, so Temporal applies it once.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};
use slipway_proto::model::{ActionsCallback, parse_job_id};

use crate::{
    AppState, error::ApiError, ingress::actions::ActionsDelivery, metrics::Metric, temporal::GatewayError,
};

/// The handler.
#[utoipa::path(
    post,
    path = "/callbacks/github-actions",
    tag = "webhooks",
    operation_id = "receiveActionsCallback",
    summary = "The provision-agent.yml job reports its status to the saga run that dispatched it",
    description = "Proven by a GitHub Actions OIDC token (`Authorization: Bearer`, repository, workflow, ref and run \
        checked), or, where enabled, `X-Slipway-Signature` (HMAC of the body with `GITHUB_CALLBACK_SECRET`).",
    params(
        ("Authorization" = Option<String>, Header, description = "`Bearer <Actions OIDC token>`"),
        ("X-Slipway-Signature" = Option<String>, Header, description = "`sha256=<hex>` (HMAC fallback)"),
    ),
    request_body = ActionsCallback,
    responses((status = 202, description = "Delivered to the saga run", body = Object)),
)]
pub async fn github_actions(
    State(app): State<AppState>,
    delivery: ActionsDelivery,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let cb = delivery.callback;
    let (workflow_id, run_id) = parse_job_id(&cb.job_id)
        .map(|(w, r)| (w.to_owned(), r.to_owned()))
        .ok_or_else(|| ApiError::bad_request("INVALID_JOB_ID", "job_id is not a Slipway job"))?;
    tracing::Span::current().record("workflow_id", workflow_id.as_str());
    tracing::info!(job_id = %cb.job_id, agent_id = %cb.agent_id, status = ?cb.status, proof = ?delivery.proof, "actions callback");
    let job_id = cb.job_id.clone();
    match app.gateway.deliver_callback(&workflow_id, &run_id, cb, delivery.request_id).await {
        Ok(()) => {
            app.metrics.incr(Metric::WorkflowAccepted);
            Ok((StatusCode::ACCEPTED, Json(json!({"accepted": true}))))
        }
        Err(GatewayError::NotFound | GatewayError::Closed) => {
            Err(ApiError::not_found("JOB_NOT_FOUND", format!("no provisioning is waiting for job {job_id}")))
        }
        Err(e) => Err(e.into()),
    }
}
