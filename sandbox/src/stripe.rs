//! Stripe (`/stripe`, real base `https://api.stripe.com`): signed webhook events.
//!
//! Stripe pushes to the product rather than being called by it, so the interesting part
//! is delivery: `POST /_sandbox/stripe/checkout/complete` builds a
//! `checkout.session.completed` event from Stripe's own example objects (vendored in
//! `fixtures/stripe/`), signs it with `Stripe-Signature: t=..,v1=..` and delivers it with
//! Stripe's headers and retry-with-backoff behaviour, recording every attempt. The public
//! helpers let other crates' tests build and sign identical events themselves. A few
//! read-only `/stripe/v1` endpoints expose what was recorded.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use serde_json::{Value, json};

use crate::state::{Shared, credential, hmac_hex, json_response, parse_body, random_alnum, zulu};

const EVENT_FIXTURE: &str = include_str!("../fixtures/stripe/event.json");
const SESSION_FIXTURE: &str = include_str!("../fixtures/stripe/checkout_session.json");
const DELIVERY_ATTEMPTS: u32 = 8;

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
/// checkout carrying Slipway's `metadata` (`userId`, `agentId`, `region`).
pub fn checkout_session_completed_event(args: &CheckoutArgs) -> Value {
    let now = Utc::now().timestamp();
    let mut session: Value = serde_json::from_str(SESSION_FIXTURE).expect("vendored fixture is JSON");
    let session_id = format!("cs_test_a1{}", random_alnum(56));
    let fields = [
        ("url", json!(format!("https://checkout.stripe.com/c/pay/{session_id}"))),
        ("id", json!(session_id)),
        ("created", json!(now)),
        ("expires_at", json!(now + 24 * 3600)),
        ("mode", json!("subscription")),
        ("status", json!("complete")),
        ("payment_status", json!("paid")),
        ("customer", json!(args.customer_id.clone().unwrap_or_else(|| format!("cus_{}", random_alnum(14))))),
        ("subscription", json!(format!("sub_{}", random_alnum(24)))),
        ("client_reference_id", json!(args.user_id)),
        ("metadata", json!({"userId": args.user_id, "agentId": args.agent_id, "region": args.region})),
    ];
    for (key, value) in fields {
        session[key] = value;
    }
    let mut event: Value = serde_json::from_str(EVENT_FIXTURE).expect("vendored fixture is JSON");
    event["id"] = json!(args.event_id.clone().unwrap_or_else(|| format!("evt_{}", random_alnum(24))));
    event["type"] = json!("checkout.session.completed");
    event["created"] = json!(now);
    event["livemode"] = json!(false);
    event["data"] = json!({"object": session});
    event
}

#[derive(Default)]
pub(crate) struct StripeState {
    customers: Vec<Value>,
    checkout_sessions: Vec<Value>,
    events: Vec<(Value, Vec<Value>)>,
}

impl StripeState {
    pub(crate) fn dump(&self) -> Value {
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|(e, deliveries)| json!({"id": e["id"], "type": e["type"], "deliveries": deliveries}))
            .collect();
        json!({"customers": self.customers, "checkout_sessions": self.checkout_sessions, "events": events})
    }
}

pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route("/v1/events/{id}", get(|s: State<Shared>, p: Path<String>| get_object(s, p, "event")))
        .route(
            "/v1/checkout/sessions/{id}",
            get(|s: State<Shared>, p: Path<String>| get_object(s, p, "checkout.session")),
        )
        .route("/v1/customers/{id}", get(|s: State<Shared>, p: Path<String>| get_object(s, p, "customer")))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Unrecognized request URL.", None) })
        .layer(from_fn(auth))
}

fn error(status: StatusCode, message: &str, code: Option<&str>) -> Response {
    json_response(
        status,
        json!({"error": {"code": code, "message": message, "type": "invalid_request_error"}}),
    )
}

async fn auth(req: Request, next: Next) -> Response {
    match credential(req.headers()) {
        Some(_) => next.run(req).await,
        None => error(
            StatusCode::UNAUTHORIZED,
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            None,
        ),
    }
}

async fn get_object(State(app): State<Shared>, Path(id): Path<String>, kind: &'static str) -> Response {
    let state = app.lock();
    let s = &state.stripe;
    let found = match kind {
        "event" => s.events.iter().map(|(e, _)| e).find(|e| e["id"] == id.as_str()),
        "checkout.session" => s.checkout_sessions.iter().find(|c| c["id"] == id.as_str()),
        _ => s.customers.iter().find(|c| c["id"] == id.as_str()),
    };
    match found {
        Some(object) => json_response(StatusCode::OK, object.clone()),
        None => error(StatusCode::NOT_FOUND, &format!("No such {kind}: '{id}'"), Some("resource_missing")),
    }
}

/// `POST /_sandbox/stripe/checkout/complete` `{"userId","agentId","region","customer"?}`.
pub(crate) async fn complete_checkout(State(app): State<Shared>, body: Bytes) -> Response {
    let body = parse_body(&body).unwrap_or(Value::Null);
    let field = |k: &str| body.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
    let (Some(user_id), Some(agent_id), Some(region)) = (field("userId"), field("agentId"), field("region"))
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "userId, agentId and region are required"}),
        );
    };
    let args = CheckoutArgs { user_id, agent_id, region, customer_id: field("customer"), event_id: None };
    let event = checkout_session_completed_event(&args);
    let session = event["data"]["object"].clone();
    let (event_id, session_id, customer) =
        (event["id"].clone(), session["id"].clone(), session["customer"].clone());
    let generation = {
        let mut state = app.lock();
        let s = &mut state.stripe;
        if !s.customers.iter().any(|c| c["id"] == customer) {
            s.customers.push(json!({"id": customer, "object": "customer", "created": event["created"],
                "livemode": false, "email": session["customer_details"]["email"],
                "metadata": {"userId": args.user_id}}));
        }
        s.checkout_sessions.push(session);
        s.events.push((event.clone(), Vec::new()));
        state.generation
    };
    let payload = serde_json::to_string(&event).expect("JSON values always serialize");
    tokio::spawn(deliver(app, generation, event_id.as_str().unwrap_or_default().to_owned(), payload));
    json_response(StatusCode::ACCEPTED, json!({"event_id": event_id, "checkout_session_id": session_id}))
}

/// Delivers like Stripe: fresh signature per attempt, backoff 0.5s, 1s, 2s, ... up to 8 tries.
async fn deliver(app: Shared, generation: u64, event_id: String, payload: String) {
    let url = app.config.stripe_webhook_url.clone();
    for attempt in 0..DELIVERY_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << (attempt - 1))).await;
        }
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
        let recorded = app.with_current(generation, |s| {
            if let Some((_, deliveries)) =
                s.stripe.events.iter_mut().find(|(e, _)| e["id"] == event_id.as_str())
            {
                deliveries.push(json!({"status": status, "at": zulu(Utc::now())}));
            }
        });
        if recorded.is_none() || status.is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
    }
}

/// `GET /_sandbox/stripe/events/{id}`: `{"event": {...}, "deliveries": [{status, at}]}`.
pub(crate) async fn get_event(State(app): State<Shared>, Path(id): Path<String>) -> Response {
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
        assert_eq!(session["customer_details"]["email"], "example@example.com");
    }

    #[test]
    fn signature_matches_stripe_scheme() {
        let header = signature_header("{}", "whsec_test", 1_700_000_000);
        let expected = hmac_hex("whsec_test", b"1700000000.{}");
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
    }
}
