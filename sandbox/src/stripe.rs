//! Stripe (`/stripe`, real base `https://api.stripe.com`): the API the product calls, the
//! customer's side of Checkout, and signed webhooks.
//!
//! The product calls Stripe (customers, Checkout sessions created and expired, subscriptions,
//! usage meter events) and Stripe calls back with webhooks, so both directions are emulated:
//!
//! - `api` serves `/stripe/v1/...` like Stripe does: form-encoded bodies with bracket
//!   nesting (`form`), `Authorization` required, Stripe's error shapes (`parameter_missing`,
//!   `parameter_unknown`, `resource_missing`, `idempotency_error`), `Idempotency-Key` replay,
//!   `Request-Id` on every answer. Objects come from Stripe's own examples (`objects`, vendored
//!   in `fixtures/stripe/`), so the product's typed client (`async-stripe`) parses them; the
//!   test `tests/stripe_client.rs` checks exactly that.
//! - `flows` plays what happens outside the API: a customer paying on the hosted Checkout page
//!   (`/_sandbox/stripe/checkout/{id}`), renewals failing and being paid, status changes.
//! - Every change Stripe would announce becomes an Event, recorded and delivered to the
//!   webhook endpoint's URL with `Stripe-Signature: t=..,v1=..` (fresh per attempt), retried
//!   with doubling backoff on non-2xx (`stripe_delivery_attempts`, `stripe_retry_base_ms`),
//!   each attempt recorded. Events go out one after another in the order they happened: the
//!   next starts once the previous one's first attempt is over, so a test may rely on arrival
//!   order (real Stripe does not promise it). The endpoint's URL starts as
//!   `stripe_webhook_url`; `POST /_sandbox/stripe/webhook_endpoint` changes it as updating the
//!   endpoint does on Stripe, for later attempts (retries included).
//! - Recorded events are listed by `GET /v1/events` with Stripe's filters; whether an event was
//!   delivered (`delivery_success`, `pending_webhooks`) follows its recorded attempts, which is
//!   what a product reconciling missed webhooks relies on.
//!
//! The public helpers let other crates' tests build and sign identical events themselves.

mod api;
mod flows;
mod form;
mod objects;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::state::{Shared, hmac_hex, json_response, zulu};
use objects::{LineItem, NewInvoice, NewSession, NewSubscription, Price};

/// Inputs of a completed subscription checkout.
#[derive(Clone, Debug, Default)]
pub struct CheckoutArgs {
    pub user_id: String,
    pub agent_id: String,
    pub region: String,
    /// Existing customer id; a fresh `cus_...` when `None`.
    pub customer_id: Option<String>,
    /// Event id; a fresh `evt_...` when `None`.
    pub event_id: Option<String>,
}

/// The `Stripe-Signature` header value for `payload` signed at `timestamp` (unix seconds):
/// `t={timestamp},v1={hex HMAC-SHA256(secret, "{timestamp}.{payload}")}`.
pub fn signature_header(payload: &str, secret: &str, timestamp: i64) -> String {
    let signed = format!("{timestamp}.{payload}");
    format!("t={timestamp},v1={}", hmac_hex(secret, signed.as_bytes()))
}

/// A `checkout.session.completed` event in Stripe's real shape, for a subscription
/// checkout carrying Slipway's `metadata` (`userId`, `agentId`, `region`); the session
/// names a fresh `sub_...` subscription.
pub fn checkout_session_completed_event(args: &CheckoutArgs) -> Value {
    let now = Utc::now().timestamp();
    let id = objects::session_id();
    use slipway_providers::stripe::metadata::{AGENT_ID, REGION, USER_ID};
    let metadata = json!({USER_ID: args.user_id, AGENT_ID: args.agent_id, REGION: args.region});
    let mut session = objects::checkout_session(
        &id,
        now,
        NewSession {
            mode: "subscription".to_owned(),
            url: format!("https://checkout.stripe.com/c/pay/{id}"),
            success_url: Some("https://example.com/success".to_owned()),
            cancel_url: Some("https://example.com/cancel".to_owned()),
            customer: args.customer_id.clone(),
            customer_email: None,
            client_reference_id: Some(args.user_id.clone()),
            metadata: metadata.as_object().cloned().unwrap_or_default(),
            line_items: vec![default_line_item()],
        },
    );
    let customer = args.customer_id.clone().unwrap_or_else(objects::customer_id);
    let subscription = objects::subscription_id();
    objects::complete_session(&mut session, &customer, "example@example.com", Some(&subscription), None);
    objects::event("checkout.session.completed", session, None, now, args.event_id.clone(), (None, None))
}

/// A full Stripe Event (Stripe's example Event with these fields set) whose `data.object` is
/// `object`; a fresh `evt_...` id when `id` is `None`. Sign it with [`signature_header`].
pub fn event(event_type: &str, object: Value, created: i64, id: Option<String>) -> Value {
    objects::event(event_type, object, None, created, id, (None, None))
}

/// A Subscription (Stripe's example with these fields set): one item of the example's
/// monthly price with quantity 1, the current period from `created` for 30 days (both at top
/// level and on the item), empty metadata; `canceled` ones are canceled and ended at
/// `created`, `trialing` ones are in trial for the period.
pub fn subscription_object(id: &str, customer: &str, status: &str, created: i64) -> Value {
    objects::subscription(NewSubscription {
        id,
        customer,
        status,
        created,
        items: &[default_line_item()],
        metadata: Map::new(),
        latest_invoice: None,
    })
}

/// An Invoice (Stripe's example with these fields set) billing one period of
/// [`subscription_object`]`(subscription, customer, "active", created)`: `subscription` and
/// `parent.subscription_details.subscription` name it, `billing_reason` is
/// `subscription_cycle`, amounts and status fields are consistent with `status` (`draft`,
/// `open`, `paid`, `void`, `uncollectible`).
pub fn invoice_object(id: &str, customer: &str, subscription: &str, status: &str, created: i64) -> Value {
    let sub = subscription_object(subscription, customer, "active", created);
    objects::invoice(NewInvoice {
        id,
        customer,
        customer_email: None,
        subscription: Some(&sub),
        status,
        created,
        billing_reason: "subscription_cycle",
        number: None,
    })
}

/// A Customer (Stripe's example with these fields set), as `customer.*` events carry it: no
/// email, name or metadata, no currency or balance. `customer.deleted` carries the customer as it
/// was.
pub fn customer_object(id: &str, created: i64) -> Value {
    objects::customer(id, created, objects::NewCustomer::default())
}

fn default_line_item() -> LineItem {
    LineItem { price: Price::assumed(objects::DEFAULT_PRICE, false), quantity: Some(1) }
}

/// A checkout session with what the API was given but the object does not show.
struct Session {
    object: Value,
    line_items: Vec<LineItem>,
    /// `subscription_data[metadata]`: copied onto the subscription Checkout creates.
    subscription_metadata: Map<String, Value>,
}

/// A stored answer to a request made with an `Idempotency-Key`.
enum Idempotent {
    InFlight { fingerprint: Value },
    Done { fingerprint: Value, status: StatusCode, body: Bytes, request_id: String },
}

#[derive(Default)]
pub(crate) struct StripeState {
    customers: Vec<Value>,
    checkout_sessions: Vec<Session>,
    subscriptions: Vec<Value>,
    invoices: Vec<Value>,
    /// Prices seen in requests (Stripe knows its prices; the sandbox learns them).
    prices: Vec<Price>,
    meter_events: Vec<Value>,
    /// Events in recording order, each with its delivery attempts (`{"status", "at"}`).
    events: Vec<(Value, Vec<Value>)>,
    /// The webhook endpoint's URL once changed at runtime; `stripe_webhook_url` until then.
    webhook_url: Option<String>,
    /// Keyed by (API key, idempotency key).
    idempotency: HashMap<(String, String), Idempotent>,
    /// Held while a batch of events makes its first delivery attempts, so batches go out in
    /// the order they were recorded (tokio's mutex is fair).
    lane: Arc<tokio::sync::Mutex<()>>,
}

impl StripeState {
    pub(crate) fn dump(&self) -> Value {
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|(e, deliveries)| {
                json!({"id": e["id"], "type": e["type"], "created": e["created"], "deliveries": deliveries})
            })
            .collect();
        let sessions: Vec<&Value> = self.checkout_sessions.iter().map(|s| &s.object).collect();
        json!({
            "customers": self.customers,
            "checkout_sessions": sessions,
            "subscriptions": self.subscriptions,
            "invoices": self.invoices,
            "meter_events": self.meter_events,
            "events": events,
        })
    }

    fn customer_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.customers.iter_mut().find(|c| c["id"] == id)
    }

    fn subscription_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.subscriptions.iter_mut().find(|s| s["id"] == id)
    }

    fn invoice_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.invoices.iter_mut().find(|i| i["id"] == id)
    }

    fn session_mut(&mut self, id: &str) -> Option<&mut Session> {
        self.checkout_sessions.iter_mut().find(|s| s.object["id"] == id)
    }
}

/// `/stripe`: the API.
pub(crate) fn router(app: Shared) -> Router<Shared> {
    api::router(app)
}

/// `/_sandbox/stripe`: what customers and Stripe's own machinery do, and recorded events.
pub(crate) fn control_router() -> Router<Shared> {
    Router::new()
        .route("/checkout/complete", post(flows::complete_checkout))
        .route("/checkout/{id}", get(flows::hosted_page))
        .route("/checkout/{id}/complete", post(flows::complete_session))
        .route("/subscriptions/{id}/status", post(flows::set_subscription_status))
        .route("/subscriptions/{id}/payment_failed", post(flows::payment_failed))
        .route("/subscriptions/{id}/quantity", post(flows::set_subscription_quantity))
        .route("/invoices/{id}/pay", post(flows::pay_invoice))
        .route("/events/{id}", get(get_event))
        .route("/webhook_endpoint", post(flows::set_webhook_endpoint).get(flows::get_webhook_endpoint))
}

/// Whether one of the recorded attempts was answered with a 2xx.
fn delivered(deliveries: &[Value]) -> bool {
    deliveries.iter().any(|d| d["status"].as_u64().is_some_and(|s| (200..300).contains(&s)))
}

/// Records `events` in the state and queues their delivery after every batch recorded
/// before; returns their ids in order.
fn emit(app: &Shared, state: &mut crate::state::State, events: Vec<Value>) -> Vec<String> {
    let generation = state.generation;
    let lane = state.stripe.lane.clone();
    let mut batch = Vec::with_capacity(events.len());
    for event in events {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let payload = serde_json::to_string(&event).expect("JSON values always serialize");
        state.stripe.events.push((event, Vec::new()));
        batch.push((id, payload));
    }
    let ids = batch.iter().map(|(id, _)| id.clone()).collect();
    let app = app.clone();
    tokio::spawn(async move {
        let _turn = lane.lock().await;
        for (id, payload) in batch {
            let (first_done, first_attempt) = tokio::sync::oneshot::channel();
            tokio::spawn(deliver(app.clone(), generation, id, payload, first_done));
            let _ = first_attempt.await;
        }
    });
    ids
}

/// The wait before attempt `attempt` (0-based, > 0): `base_ms`, then doubling.
fn retry_delay(base_ms: u64, attempt: u32) -> Duration {
    Duration::from_millis(base_ms.saturating_mul(1u64.checked_shl(attempt - 1).unwrap_or(u64::MAX)))
}

/// Delivers like Stripe: fresh signature per attempt, to the endpoint's URL of the moment, up to
/// `stripe_delivery_attempts` tries with doubling backoff from `stripe_retry_base_ms`. A 2xx
/// ends it and sets the event's `pending_webhooks` to 0. `first_done` fires once the first
/// attempt is recorded (or at once when no attempt is to be made).
async fn deliver(
    app: Shared,
    generation: u64,
    event_id: String,
    payload: String,
    first_done: tokio::sync::oneshot::Sender<()>,
) {
    let mut first_done = Some(first_done);
    for attempt in 0..app.config.stripe_delivery_attempts {
        if attempt > 0 {
            tokio::time::sleep(retry_delay(app.config.stripe_retry_base_ms, attempt)).await;
        }
        let Some(url) = app.with_current(generation, |s| {
            s.stripe.webhook_url.clone().unwrap_or_else(|| app.config.stripe_webhook_url.clone())
        }) else {
            return;
        };
        let signature = signature_header(&payload, &app.config.stripe_webhook_secret, Utc::now().timestamp());
        let result = app
            .http
            .post(&url)
            .header("content-type", "application/json; charset=utf-8")
            .header("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            .header("stripe-signature", signature)
            .body(payload.clone())
            .send()
            .await;
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        if let Err(e) = &result {
            tracing::warn!(%url, error = %e, "stripe webhook delivery failed");
        }
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let recorded = app.with_current(generation, |s| {
            if let Some((event, deliveries)) =
                s.stripe.events.iter_mut().find(|(e, _)| e["id"] == event_id.as_str())
            {
                deliveries.push(json!({"status": status, "at": zulu(Utc::now())}));
                if ok {
                    // Stripe's count of endpoints still waiting for a 2xx (there is one endpoint).
                    event["pending_webhooks"] = json!(0);
                }
            }
        });
        if let Some(tx) = first_done.take() {
            let _ = tx.send(());
        }
        if recorded.is_none() || ok {
            return;
        }
    }
}

/// `GET /_sandbox/stripe/events/{id}`: `{"event": {...}, "deliveries": [{status, at}]}`.
async fn get_event(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let state = app.lock();
    match state.stripe.events.iter().find(|(e, _)| e["id"] == id.as_str()) {
        Some((event, deliveries)) => {
            json_response(StatusCode::OK, json!({"event": event, "deliveries": deliveries}))
        }
        None => json_response(StatusCode::NOT_FOUND, json!({"error": format!("no event {id}")})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keeps_fixture_fields_and_sets_slipway_ones() {
        let event = checkout_session_completed_event(&CheckoutArgs {
            user_id: "u1".into(),
            agent_id: "a1".into(),
            region: "eu".into(),
            customer_id: Some("cus_given".into()),
            event_id: None,
        });
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(event["id"].as_str().unwrap().len(), 28);
        assert_eq!(event["object"], "event");
        assert_eq!(event["type"], "checkout.session.completed");
        let session = &event["data"]["object"];
        assert_eq!(session["object"], "checkout.session");
        assert_eq!(session["customer"], "cus_given");
        assert_eq!(session["metadata"]["agentId"], "a1");
        assert_eq!(session["payment_status"], "paid");
        assert_eq!(session["status"], "complete");
        assert!(session["subscription"].as_str().unwrap().starts_with("sub_"));
        assert_eq!(session["customer_details"]["email"], "example@example.com");
    }

    #[test]
    fn public_object_helpers_set_the_named_fields() {
        let sub = subscription_object("sub_1", "cus_1", "past_due", 1_700_000_000);
        assert_eq!((sub["id"].as_str(), sub["status"].as_str()), (Some("sub_1"), Some("past_due")));
        assert_eq!(sub["items"]["data"][0]["current_period_end"], 1_700_000_000 + objects::PERIOD_SECS);
        assert_eq!(sub["current_period_end"], sub["items"]["data"][0]["current_period_end"]);
        let inv = invoice_object("in_1", "cus_1", "sub_1", "open", 1_700_000_000);
        assert_eq!(inv["subscription"], "sub_1");
        assert_eq!(inv["parent"]["subscription_details"]["subscription"], "sub_1");
        assert_eq!((inv["status"].as_str(), inv["amount_paid"].as_i64()), (Some("open"), Some(0)));
        let customer = customer_object("cus_1", 1_700_000_000);
        assert_eq!((customer["id"].as_str(), customer["object"].as_str()), (Some("cus_1"), Some("customer")));
        let evt = event("invoice.paid", inv, 5, Some("evt_x".into()));
        assert_eq!((evt["id"].as_str(), evt["created"].as_i64()), (Some("evt_x"), Some(5)));
        assert_eq!(evt["data"]["object"]["id"], "in_1");
    }

    #[test]
    fn signature_matches_stripe_scheme() {
        let header = signature_header("{}", "whsec_test", 1_700_000_000);
        let expected = hmac_hex("whsec_test", b"1700000000.{}");
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
    }
}
