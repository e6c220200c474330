//! `POST /api/billing/checkout`: a Stripe Checkout Session for the caller's subscription,
//! optionally buying one agent's seat; see [`CheckoutService`] for the rules. Answers 201 with
//! the session's `id` and `url`; 400 invalid input; 404 another user's agent; 409
//! `AGENT_NOT_DRAFT` / `CHECKOUT_ALREADY_OPEN` / `TOO_MANY_DRAFTS`; 502 `STRIPE_ERROR`; 503.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde_json::{Value, json};

use crate::{
    AppState,
    error::ApiError,
    routes::api::User,
    service::checkout::{CheckoutRequest, CheckoutService},
};

/// The handler. An empty body asks for a plain subscription.
pub async fn checkout(
    State(app): State<AppState>,
    User(user): User,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: CheckoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CheckoutRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("MALFORMED_PAYLOAD", e.to_string()))?
    };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let created = CheckoutService::new(app).open(&user, req, key).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": created.id, "url": created.url}))))
}
