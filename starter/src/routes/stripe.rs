//! `POST /webhooks/stripe`: a verified Stripe event ([`StripeDelivery`]), mapped to its intent
//! and applied by [`WebhookService::stripe`]. 2xx only once Temporal has accepted everything the
//! event calls for.
//!
//! Answers: 200 handled / ignored; 400 bad signature, stale timestamp, malformed body; 413 over
//! 1 MiB; 422 a signed checkout with unusable metadata (nothing is changed); 409 the owner
//! already has a provisioning in flight (Stripe retries later, so the paid agent is provisioned
//! once the first finishes); 503 Temporal did not accept (Stripe retries).

use axum::{Json, extract::State};
use serde_json::Value;

use crate::{
    AppState,
    error::ApiError,
    ingress::stripe::{StripeDelivery, intent},
    service::webhooks::WebhookService,
};

/// The handler.
#[utoipa::path(
    post,
    path = "/webhooks/stripe",
    tag = "webhooks",
    operation_id = "receiveStripeEvent",
    summary = "Stripe events (checkout, subscriptions, invoices, customers)",
    description = "Verified with `Stripe-Signature` (`STRIPE_WEBHOOK_SECRET`, 300 s tolerance). Answers 2xx only \
        once Temporal has accepted everything the event calls for; a repeat or out-of-order delivery has one effect.",
    params(("Stripe-Signature" = String, Header, description = "`t=<unix>,v1=<hex HMAC-SHA256>`")),
    request_body(content = Object, description = "A Stripe Event object", content_type = "application/json"),
    responses((status = 200, description = "Handled or ignored", body = Object)),
)]
pub async fn webhook(
    State(app): State<AppState>,
    StripeDelivery(event): StripeDelivery,
) -> Result<Json<Value>, ApiError> {
    let intent = intent(&event)?;
    Ok(Json(WebhookService::new(app).stripe(intent).await?))
}
