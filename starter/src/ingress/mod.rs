//! The ingress layer: what comes in from a provider, proven and read once, then named.
//!
//! Each sender has one extractor that does the whole preamble a handler used to repeat: read
//! the raw body (413 over 1 MiB), verify the sender's signature over those bytes (timestamp
//! tolerance where the scheme has one), parse the body once into the provider's typed event
//! (from `slipway-providers`), count it (`slipway_webhooks_received_total` /
//! `slipway_webhooks_rejected_total`) and record its ids on the request span. A handler that
//! takes [`stripe::StripeDelivery`], [`github::GitHubDelivery`] or
//! [`actions::ActionsDelivery`] only ever sees a verified event.
//!
//! Then a **pure** mapping turns the event into an intent (what Slipway should do about it:
//! deliver a billing event, provision a paid agent, start a coding job, …), unit-tested without
//! any server. Decisions that need state (entitlement, links, caps) belong to
//! [`crate::service::webhooks`], which applies intents.

pub mod actions;
pub mod github;
pub mod stripe;

use crate::{AppState, error::ApiError, metrics::Metric};

/// Counts a delivery refused before it was read (signature, format) and passes the error on.
fn rejected(app: &AppState, e: ApiError) -> ApiError {
    app.metrics.incr(Metric::WebhookRejected);
    e
}

/// Unix seconds now (the signature schemes' clocks).
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
