//! `POST /api/billing/checkout`: a Stripe Checkout Session for the caller's subscription,
//! optionally buying one agent's seat (metadata `userId`, `agentId`, `region`). Completing it is
//! what provisions: Stripe's `checkout.session.completed` webhook carries the metadata back.
//!
//! Checkout is only for agents that can take it: the caller's own **draft** agent (an unknown
//! agent id is created as the caller's draft first), with no other session open. The agent's
//! workflow holds it for the session (`hold_for_checkout`) before Stripe is called, so two
//! concurrent requests cannot both open one; the hold becomes the session's `expires_at` once
//! Stripe answers, and is lifted if Stripe fails.

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use slipway_proto::model::{AgentRecord, CheckoutHold, CommandOutcome, OpenCheckout};
use slipway_providers::stripe::{NewCheckout, metadata};

use crate::{
    AppState,
    error::ApiError,
    routes::api::{ApiFailure, User},
    service::{Kind, ServiceError},
    temporal::GatewayError,
    validate,
};

/// Body of the request (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutRequest {
    agent_id: Option<String>,
    region: Option<String>,
}

/// The handler.
pub async fn checkout(
    State(app): State<AppState>,
    User(user): User,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiFailure> {
    let body: CheckoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CheckoutRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("MALFORMED_PAYLOAD", e.to_string()))?
    };
    let mut fields = HashMap::from([(metadata::USER_ID.to_owned(), user.sub.clone())]);
    if let Some(agent_id) = &body.agent_id {
        let region = body.region.clone().unwrap_or_default();
        let mut problems = Vec::new();
        if let Err(m) = validate::agent_id(agent_id) {
            problems.push(m);
        }
        if let Err(m) = validate::region(&region) {
            problems.push(m);
        }
        if !problems.is_empty() {
            return Err(ApiError::bad_request("INVALID_INPUT", problems.join("; ")).into());
        }
    }
    let customer_id = match app.gateway.entitlement_for_user(&user.sub).await {
        Ok(e) => e.map(|e| e.customer_id),
        Err(e) => return Err(ApiError::unavailable(e.to_string()).into()),
    };
    let settings = &app.settings;
    // Last before Stripe: hold the agent, so a failure above leaves no hold behind.
    if let Some(agent_id) = &body.agent_id {
        let region =
            hold_agent(&app, &user.sub, agent_id, body.region.as_deref().unwrap_or_default()).await?;
        fields.insert(metadata::AGENT_ID.to_owned(), agent_id.clone());
        fields.insert(metadata::REGION.to_owned(), region);
    }
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("checkout-{}-{k}", user.sub));
    let created = app
        .stripe
        .create_checkout(&NewCheckout {
            user_id: user.sub.clone(),
            customer_id,
            price_id: settings.stripe_price_id.clone(),
            metadata: fields,
            success_url: format!(
                "{}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
                settings.public_url
            ),
            cancel_url: format!("{}/billing/cancelled", settings.public_url),
            idempotency_key,
        })
        .await;
    let created = match created {
        Ok(created) => created,
        Err(e) => {
            tracing::error!(error = %e, "Stripe refused the checkout session");
            if let Some(agent_id) = &body.agent_id
                && let Err(e) = app.gateway.checkout_opened(agent_id, None).await
            {
                tracing::warn!(error = %e, agent_id, "could not lift the checkout hold; it expires on its own");
            }
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "STRIPE_ERROR",
                "Stripe could not create the checkout session",
            )
            .into());
        }
    };
    if let Some(agent_id) = &body.agent_id {
        let open = OpenCheckout { session_id: Some(created.id.clone()), expires_at: created.expires_at };
        if let Err(e) = app.gateway.checkout_opened(agent_id, Some(open)).await {
            // The hold still refuses a second session until it expires; the session itself is valid.
            tracing::warn!(error = %e, agent_id, "could not record the checkout session on the agent");
        }
    }
    Ok((StatusCode::CREATED, Json(json!({"id": created.id, "url": created.url}))).into_response())
}

/// How long a hold lasts if the session is never recorded (the starter stopped mid-request).
const HOLD_SECS: i64 = 600;

/// Makes sure `agent_id` is the caller's draft with no checkout open, and holds it for the
/// session about to be created. Creates it as the caller's draft when it does not exist yet.
/// Returns the agent's region (an existing agent keeps its own).
async fn hold_agent(app: &AppState, user: &str, agent_id: &str, region: &str) -> Result<String, ApiFailure> {
    let not_found = || ApiError::not_found("AGENT_NOT_FOUND", format!("no agent {agent_id}"));
    let region = match app.gateway.agent(agent_id).await {
        Ok(a) if a.user_id != user => return Err(not_found().into()),
        Ok(a) => a.region,
        Err(GatewayError::NotFound) => {
            crate::service::AgentService::new(app.clone()).check_draft_cap(user).await?;
            let agent = AgentRecord::draft(agent_id, user, region);
            match app.gateway.create_agent(agent, app.settings.policy.clone(), app.lifecycle()).await {
                // Created now, or by a concurrent request (its owner is checked by the hold).
                Ok(()) => {}
                Err(GatewayError::Closed) if app.gateway.agent(agent_id).await.is_ok() => {}
                Err(GatewayError::Closed) => {
                    return Err(ApiError::conflict(
                        "AGENT_NOT_DRAFT",
                        format!("agent {agent_id} existed and was destroyed; choose a new id"),
                    )
                    .into());
                }
                Err(e) => return Err(ApiError::unavailable(e.to_string()).into()),
            }
            region.to_owned()
        }
        Err(GatewayError::Closed) => {
            return Err(
                ApiError::conflict("AGENT_NOT_DRAFT", format!("agent {agent_id} was destroyed")).into()
            );
        }
        Err(e) => return Err(ApiError::unavailable(e.to_string()).into()),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let hold = CheckoutHold { user_id: user.to_owned(), now, hold_until: now + HOLD_SECS };
    match app.gateway.hold_for_checkout(agent_id, hold).await {
        Ok(CommandOutcome::Accepted { .. }) => Ok(region),
        Ok(CommandOutcome::Refused { code, reason }) if code == "AGENT_NOT_FOUND" => {
            Err(ApiError::not_found("AGENT_NOT_FOUND", reason).into())
        }
        Ok(CommandOutcome::Refused { code, reason }) => Err(ApiFailure::from(ServiceError {
            kind: Kind::Conflict,
            code,
            message: reason,
            details: Vec::new(),
        })),
        Err(GatewayError::NotFound | GatewayError::Closed) => Err(not_found().into()),
        Err(e) => Err(ApiError::unavailable(e.to_string()).into()),
    }
}
