//! `POST /api/billing/checkout`: a Stripe Checkout Session for the caller's subscription,
//! optionally buying one agent (metadata `userId`, `agentId`, `region`). Completing it is what
//! provisions: Stripe's `checkout.session.completed` webhook carries the metadata back.

use std::collections::HashMap;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use slipway_activities::clients::stripe::{NewCheckout, StripeClient};

use crate::{
    AppState,
    error::ApiError,
    routes::api::{ApiFailure, User},
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
    let mut metadata = HashMap::from([("userId".to_owned(), user.sub.clone())]);
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
        // An existing agent must be the caller's.
        match app.gateway.agent(agent_id).await {
            Ok(a) if a.user_id != user.sub => {
                return Err(ApiError::not_found("AGENT_NOT_FOUND", format!("no agent {agent_id}")).into());
            }
            Ok(_) | Err(GatewayError::NotFound) | Err(GatewayError::Closed) => {}
            Err(e) => return Err(ApiError::unavailable(e.to_string()).into()),
        }
        metadata.insert("agentId".to_owned(), agent_id.clone());
        metadata.insert("region".to_owned(), region);
    }
    let customer_id = match app.gateway.entitlement_for_user(&user.sub).await {
        Ok(e) => e.map(|e| e.customer_id),
        Err(e) => return Err(ApiError::unavailable(e.to_string()).into()),
    };
    let settings = &app.settings;
    let stripe = StripeClient::new(&settings.stripe_api_url, &settings.stripe_secret_key)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "CONFIGURATION", e.to_string()))?;
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("checkout-{}-{k}", user.sub));
    let created = stripe
        .create_checkout(&NewCheckout {
            user_id: user.sub.clone(),
            customer_id,
            price_id: settings.stripe_price_id.clone(),
            metadata,
            success_url: format!(
                "{}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
                settings.public_url
            ),
            cancel_url: format!("{}/billing/cancelled", settings.public_url),
            idempotency_key,
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "Stripe refused the checkout session");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "STRIPE_ERROR",
                "Stripe could not create the checkout session",
            )
        })?;
    Ok((StatusCode::CREATED, Json(json!({"id": created.id, "url": created.url}))).into_response())
}
