//! Stripe events as the bench sends them: Stripe's real shapes (the sandbox's builders), signed
//! with the secret the starter verifies with, and posted to the starter's webhook endpoint.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::stack;

pub(crate) fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn sign(payload: &str) -> String {
    let t = now_secs();
    let mut mac = Hmac::<Sha256>::new_from_slice(stack::STRIPE_WEBHOOK_SECRET.as_bytes()).expect("any key");
    mac.update(format!("{t}.{payload}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// `invoice.paid` for customer `cus`: the starter maps it to one signal-with-start.
pub(crate) fn invoice_paid(event_id: &str, cus: &str, invoice: &str) -> Value {
    // Stripe's real shapes (the sandbox's builders, from Stripe's own example objects), so the
    // starter does the work a real delivery costs: the full typed parse of the verified event.
    let now = now_secs();
    let object = slipway_sandbox::stripe::invoice_object(invoice, cus, &format!("sub_{cus}"), "paid", now);
    slipway_sandbox::stripe::event("invoice.paid", object, now, Some(event_id.to_owned()))
}

/// A paid `checkout.session.completed` for agent `agent` of `user`.
pub(crate) fn checkout_completed(event_id: &str, agent: &str, user: &str, cus: &str) -> Value {
    slipway_sandbox::stripe::checkout_session_completed_event(&slipway_sandbox::stripe::CheckoutArgs {
        user_id: user.to_owned(),
        agent_id: agent.to_owned(),
        region: "fsn1".to_owned(),
        customer_id: Some(cus.to_owned()),
        event_id: Some(event_id.to_owned()),
    })
}

pub(crate) async fn post_stripe(http: &reqwest::Client, url: &str, body: Value) -> Result<Value, String> {
    let payload = body.to_string();
    let resp = http
        .post(format!("{url}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", sign(&payload))
        .body(payload)
        .send()
        .await
        .map_err(|e| {
            // The causes (connection refused, reset, ...) are in the source chain.
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        })?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() { Ok(answer) } else { Err(format!("{status}: {answer}")) }
}
