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

use crate::{
    AppState,
    error::ApiError,
    routes::api::User,
    service::checkout::{CheckoutRequest, CheckoutService},
    views::CheckoutCreated,
};

/// The handler. An empty body asks for a plain subscription.
#[utoipa::path(
    post,
    path = "/api/billing/checkout",
    tag = "billing",
    operation_id = "createCheckoutSession",
    summary = "Open a Stripe Checkout Session: the caller's subscription, and a seat for one agent",
    description = "Send the customer to `url`. With `agentId`, the session buys that draft agent's seat \
        (creating the draft with `region` if it does not exist yet), and the paid checkout provisions it; \
        the agent holds the session until it completes or expires. An empty body buys a plain subscription.",
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the same session")),
    request_body(content = Option<CheckoutRequest>, description = "Optional"),
    responses((status = 201, description = "The session", body = CheckoutCreated)),
    security(("bearer" = [])),
)]
pub async fn checkout(
    State(app): State<AppState>,
    User(user): User,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<CheckoutCreated>), ApiError> {
    let req: CheckoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CheckoutRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("MALFORMED_PAYLOAD", e.to_string()))?
    };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let created = CheckoutService::new(app).open(&user, req, key).await?;
    Ok((StatusCode::CREATED, Json(CheckoutCreated { id: created.id, url: created.url })))
}
