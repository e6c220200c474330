//! Callbacks of the `provision-agent.yml` job: [`ActionsDelivery`], proven by one of two
//! credentials.
//!
//! - **Actions OIDC** (`GITHUB_ACTIONS_REPO` set): `Authorization: Bearer <token>`, a JWT GitHub
//!   issued to the run for the audience Slipway expects (`SLIPWAY_ACTIONS_OIDC_AUDIENCE`),
//!   verified against the issuer's published keys. It must name a run of the dispatched workflow
//!   exactly as Slipway dispatches it: `repository` and `workflow_ref` the workflow
//!   (`GITHUB_ACTIONS_REPO`, `GITHUB_ACTIONS_WORKFLOW`), `event_name` `workflow_dispatch`, and
//!   `ref` (and the ref in `workflow_ref`) the dispatched ref (`GITHUB_ACTIONS_REF`). Whoever can
//!   push a branch with a modified copy of the workflow, or edit other workflows, cannot forge one.
//!   Its `run_id` must be the body's, so the saga takes callbacks only from the run it dispatched.
//! - **HMAC**: `X-Slipway-Signature: sha256=<hex HMAC of the raw body>` under
//!   `GITHUB_CALLBACK_SECRET`, and the signed body's `sent_at` (Unix seconds) within 300 s of
//!   now, so a captured callback cannot be replayed later. The shared secret proves no run: with
//!   OIDC configured it is refused unless `SLIPWAY_CALLBACK_HMAC=true` keeps it as a fallback;
//!   without OIDC it is how callbacks are proven.
//!
//! Either way the body names the job, whose id is `<saga workflow id>/<run id>`, and the Actions
//! run (`run_id`, required with every status) the saga matches against the run it dispatched.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use slipway_proto::model::ActionsCallback;
use slipway_providers::{github::actions_oidc::OidcError, signature};

use super::{now, rejected};
use crate::{
    AppState,
    error::{ApiError, body_rejection},
    metrics::Metric,
};

/// Seconds a signed `sent_at` may differ from now.
pub const TOLERANCE_SECS: i64 = 300;

/// The header of the HMAC fallback.
pub const SIGNATURE_HEADER: &str = "x-slipway-signature";

/// How a callback proved its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// An Actions OIDC token of this run.
    Oidc {
        /// The run the token was issued to.
        run_id: String,
    },
    /// The shared secret.
    Hmac,
}

/// A proven callback.
#[derive(Debug)]
pub struct ActionsDelivery {
    /// The callback (with the token's run id when proven by OIDC).
    pub callback: ActionsCallback,
    /// How it was proven.
    pub proof: Proof,
    /// Dedupes a repeated callback: `cb-<sha256 of the body and the proven run>`.
    pub request_id: String,
}

/// The body: a callback, plus the time it was sent (signed along with it).
#[derive(Debug, Deserialize)]
struct Body {
    #[serde(flatten)]
    callback: ActionsCallback,
    #[serde(default)]
    sent_at: Option<i64>,
}

/// Checks what the credential cannot: the required fields. `run_id` is required with every
/// status: it is what the saga matches against the run it dispatched.
fn validate(cb: &ActionsCallback) -> Result<(), String> {
    if cb.agent_id.is_empty() {
        return Err("agent_id is required".into());
    }
    if cb.run_id.as_deref().is_none_or(str::is_empty) {
        return Err("run_id (the Actions run id) is required".into());
    }
    Ok(())
}

/// Checks a body's signed send time against `now`.
fn fresh(sent_at: Option<i64>, now: i64) -> Result<(), ApiError> {
    match sent_at {
        None => Err(ApiError::unauthorized(
            "STALE_TIMESTAMP",
            "sent_at (Unix seconds) must be signed with the body",
        )),
        Some(t) if (now - t).abs() > TOLERANCE_SECS => {
            Err(ApiError::unauthorized("STALE_TIMESTAMP", "sent_at is outside the 300 s tolerance"))
        }
        Some(_) => Ok(()),
    }
}

impl FromRequest<AppState> for ActionsDelivery {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned));
        let signature = header(SIGNATURE_HEADER);
        let body = Bytes::from_request(req, app).await.map_err(body_rejection)?;
        let (proof, sent_at_needed) = match (bearer, &app.oidc) {
            (Some(token), Some(verifier)) => (prove_oidc(app, verifier, &token).await?, false),
            _ if app.settings.callback_hmac => {
                let secret = app.settings.callback_secret.expose_secret().as_bytes();
                signature::hmac_sha256(&body, signature.as_deref(), secret)
                    .map_err(|e| rejected(app, ApiError::unauthorized(e.code(), e.to_string())))?;
                (Proof::Hmac, true)
            }
            _ => {
                return Err(rejected(
                    app,
                    ApiError::unauthorized(
                        "MISSING_SIGNATURE",
                        "an Actions OIDC bearer token of the dispatched run is required \
                         (HMAC-signed callbacks are off while Actions OIDC is configured)",
                    ),
                ));
            }
        };
        let parsed: Body = serde_json::from_slice(&body).map_err(|e| {
            rejected(app, ApiError::bad_request("MALFORMED_PAYLOAD", format!("not a callback: {e}")))
        })?;
        if sent_at_needed {
            fresh(parsed.sent_at, now()).map_err(|e| rejected(app, e))?;
        }
        let callback = parsed.callback;
        validate(&callback).map_err(|m| ApiError::bad_request("INVALID_CALLBACK", m))?;
        if let Proof::Oidc { run_id } = &proof
            && callback.run_id.as_ref() != Some(run_id)
        {
            return Err(rejected(
                app,
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "WRONG_RUN",
                    "the body names another run than the token",
                ),
            ));
        }
        app.metrics.incr(Metric::WebhookReceived);
        // The same body from two runs is two callbacks: the proven run is part of the identity.
        let mut digest = Sha256::new();
        digest.update(&body);
        if let Proof::Oidc { run_id } = &proof {
            digest.update(b"\0");
            digest.update(run_id.as_bytes());
        }
        let request_id = format!("cb-{}", hex::encode(digest.finalize()));
        Ok(Self { callback, proof, request_id })
    }
}

/// Verifies the token and that it belongs to a dispatched run of the workflow, at the ref
/// Slipway dispatches.
async fn prove_oidc(
    app: &AppState,
    verifier: &slipway_providers::github::actions_oidc::OidcVerifier,
    token: &str,
) -> Result<Proof, ApiError> {
    let expected = app.settings.actions_oidc.as_ref().expect("a verifier exists only with its settings");
    let claims = verifier.verify(token).await.map_err(|e| match e {
        OidcError::Unavailable(m) => {
            tracing::error!(detail = %m, "Actions OIDC keys unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "OIDC_UNAVAILABLE",
                "the token issuer's keys are unavailable; retry later",
            )
        }
        other => rejected(app, ApiError::unauthorized("INVALID_CALLBACK_TOKEN", other.to_string())),
    })?;
    if let Err(why) = claims.check_dispatched(&expected.repository, &expected.workflow, &expected.git_ref) {
        tracing::warn!(
            repository = %claims.repository,
            workflow_ref = %claims.workflow_ref,
            event_name = claims.event_name.as_deref().unwrap_or_default(),
            git_ref = claims.git_ref.as_deref().unwrap_or_default(),
            run_id = %claims.run_id,
            %why,
            "callback token of a run Slipway did not dispatch"
        );
        return Err(rejected(app, ApiError::new(StatusCode::FORBIDDEN, "WRONG_RUN", why.to_string())));
    }
    Ok(Proof::Oidc { run_id: claims.run_id })
}

#[cfg(test)]
mod tests {
    use slipway_proto::model::CallbackStatus;

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
    fn every_status_needs_a_run_id() {
        for status in [CallbackStatus::Running, CallbackStatus::Succeeded, CallbackStatus::Failed] {
            assert!(validate(&cb(status, None)).is_err(), "{status:?} without run_id");
            assert!(validate(&cb(status, Some(""))).is_err(), "{status:?} with an empty run_id");
            assert!(validate(&cb(status, Some("42"))).is_ok(), "{status:?}");
        }
    }

    #[test]
    fn hmac_callbacks_must_be_recent() {
        assert!(fresh(Some(1_000), 1_000 + TOLERANCE_SECS).is_ok());
        assert!(fresh(Some(1_000), 1_000 - TOLERANCE_SECS).is_ok());
        assert_eq!(fresh(Some(1_000), 1_001 + TOLERANCE_SECS).unwrap_err().code, "STALE_TIMESTAMP");
        assert_eq!(fresh(None, 1_000).unwrap_err().code, "STALE_TIMESTAMP");
    }
}
