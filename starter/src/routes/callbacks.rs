//! `POST /callbacks/github-actions`: the `provision-agent.yml` job reporting its status.
//!
//! The body is HMAC-signed (`X-Slipway-Signature: sha256=<hex>`, secret
//! `GITHUB_CALLBACK_SECRET`) and names the job, whose id is `<saga workflow id>/<run id>`: the
//! callback is signalled to exactly that run, persisted by Temporal before the 202. A repeat of
//! the same body carries the same signal request id, so Temporal applies it once.

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use slipway_proto::model::{ActionsCallback, CallbackStatus, parse_job_id};

use crate::{
    AppState,
    error::{ApiError, body_rejection},
    metrics::Metric,
    temporal::GatewayError,
};

/// Checks what the signature cannot: a status's required fields.
fn validate(cb: &ActionsCallback) -> Result<(), String> {
    if cb.agent_id.is_empty() {
        return Err("agent_id is required".into());
    }
    if cb.status == CallbackStatus::Running && cb.run_id.as_deref().is_none_or(str::is_empty) {
        return Err("run_id is required with status running".into());
    }
    Ok(())
}

/// The handler.
pub async fn github_actions(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(body_rejection)?;
    let header = headers.get("x-slipway-signature").and_then(|v| v.to_str().ok());
    slipway_providers::signature::hmac_sha256(
        &body,
        header,
        app.settings.callback_secret.expose_secret().as_bytes(),
    )
    .map_err(|e| {
        app.metrics.incr(Metric::WebhookRejected);
        ApiError::unauthorized(e.code(), e.to_string())
    })?;
    let cb: ActionsCallback = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("MALFORMED_PAYLOAD", format!("not a callback: {e}")))?;
    validate(&cb).map_err(|m| ApiError::bad_request("INVALID_CALLBACK", m))?;
    let (workflow_id, run_id) = parse_job_id(&cb.job_id)
        .ok_or_else(|| ApiError::bad_request("INVALID_JOB_ID", "job_id is not a Slipway job"))?;
    let request_id = format!("cb-{}", hex::encode(Sha256::digest(&body)));
    tracing::Span::current().record("workflow_id", workflow_id);
    tracing::info!(job_id = %cb.job_id, agent_id = %cb.agent_id, status = ?cb.status, "actions callback");
    match app.gateway.deliver_callback(workflow_id, run_id, cb.clone(), request_id).await {
        Ok(()) => {
            app.metrics.incr(Metric::WorkflowAccepted);
            Ok((StatusCode::ACCEPTED, Json(json!({"accepted": true}))))
        }
        Err(GatewayError::NotFound | GatewayError::Closed) => Err(ApiError::not_found(
            "JOB_NOT_FOUND",
            format!("no provisioning is waiting for job {}", cb.job_id),
        )),
        Err(e) => {
            app.metrics.incr(Metric::TemporalUnavailable);
            Err(ApiError::unavailable(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cb(status: CallbackStatus, run_id: Option<&str>) -> ActionsCallback {
        ActionsCallback {
            job_id: "provisioning-u/r".into(),
            agent_id: "a1".into(),
            status,
            run_id: run_id.map(str::to_owned),
            reason: None,
        }
    }

    #[test]
    fn running_needs_a_run_id() {
        assert!(validate(&cb(CallbackStatus::Running, None)).is_err());
        assert!(validate(&cb(CallbackStatus::Running, Some("42"))).is_ok());
        assert!(validate(&cb(CallbackStatus::Succeeded, None)).is_ok());
    }
}
