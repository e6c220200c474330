//! Callbacks of the `provision-agent.yml` job: [`ActionsDelivery`], proven by one of two
//! credentials.
//!
//! - **Actions OIDC** (preferred): `Authorization: Bearer <token>`, a JWT GitHub issued to the
//!   run for the audience Slipway expects (`SLIPWAY_ACTIONS_OIDC_AUDIENCE`), verified against the
//!   issuer's published keys. Its `repository` and `workflow_ref` must name the dispatched
//!   workflow (`GITHUB_ACTIONS_REPO`, `GITHUB_ACTIONS_WORKFLOW`), and its `run_id` is the run id
//!   the saga receives (a body naming another run is refused): the saga then takes callbacks
//!   only from the run it dispatched. Whoever can edit other workflows cannot forge one.
//! - **HMAC** (fallback, `SLIPWAY_CALLBACK_HMAC=false` turns it off): `X-Slipway-Signature:
//!   sha256=<hex HMAC of the raw body>` under `GITHUB_CALLBACK_SECRET`, and the signed body's
//!   `sent_at` (Unix seconds) within 300 s of now, so a captured callback cannot be replayed
//!   later.
//!
//! Either way the body names the job, whose id is `<saga workflow id>/<run id>`.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use slipway_proto::model::{ActionsCallback, CallbackStatus};
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

/// Checks what the credential cannot: a status's required fields.
fn validate(cb: &ActionsCallback) -> Result<(), String> {
    if cb.agent_id.is_empty() {
        return Err("agent_id is required".into());
    }
    if cb.status == CallbackStatus::Running && cb.run_id.as_deref().is_none_or(str::is_empty) {
        return Err("run_id is required with status running".into());
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
                    ApiError::unauthorized("MISSING_SIGNATURE", "an Actions OIDC bearer token is required"),
                ));
            }
        };
        let parsed: Body = serde_json::from_slice(&body).map_err(|e| {
            rejected(app, ApiError::bad_request("MALFORMED_PAYLOAD", format!("not a callback: {e}")))
        })?;
        if sent_at_needed {
            fresh(parsed.sent_at, now()).map_err(|e| rejected(app, e))?;
        }
        let mut callback = parsed.callback;
        if let Proof::Oidc { run_id } = &proof {
            if callback.run_id.as_ref().is_some_and(|r| r != run_id) {
                return Err(rejected(
                    app,
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "WRONG_RUN",
                        "the body names another run than the token",
                    ),
                ));
            }
            callback.run_id = Some(run_id.clone());
        }
        validate(&callback).map_err(|m| ApiError::bad_request("INVALID_CALLBACK", m))?;
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

/// Verifies the token and that it belongs to a run of the dispatched workflow.
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
    if !claims.is_run_of(&expected.repository, &expected.workflow) {
        tracing::warn!(repository = %claims.repository, workflow_ref = %claims.workflow_ref, "callback token of another workflow");
        return Err(rejected(
            app,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "WRONG_RUN",
                "the token was not issued to the dispatched workflow",
            ),
        ));
    }
    Ok(Proof::Oidc { run_id: claims.run_id })
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

    #[test]
    fn hmac_callbacks_must_be_recent() {
        assert!(fresh(Some(1_000), 1_000 + TOLERANCE_SECS).is_ok());
        assert!(fresh(Some(1_000), 1_000 - TOLERANCE_SECS).is_ok());
        assert_eq!(fresh(Some(1_000), 1_001 + TOLERANCE_SECS).unwrap_err().code, "STALE_TIMESTAMP");
        assert_eq!(fresh(None, 1_000).unwrap_err().code, "STALE_TIMESTAMP");
    }
}
