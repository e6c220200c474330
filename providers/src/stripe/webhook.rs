//! Stripe's webhook contract: verifying a delivery and reading it, once.
//!
//! **Verification** follows Stripe's "Verify webhook signatures": the `Stripe-Signature` header
//! carries `t=<unix time>` and one or more `v1=<hex HMAC-SHA256 of "{t}.{raw body}">` (several
//! while a secret rolls; `v0` and unknown schemes are ignored); any matching `v1` passes, compared
//! in constant time, and `t` must be within 300 s of now. It runs over the raw bytes, before any
//! parsing, and is checked against `async-stripe-webhook`'s own implementation in the tests.
//!
//! **Reading** happens once, into [`Event`]: the envelope (`id`, `type`, `created`) and, for the
//! event types Slipway acts on, a typed view of `data.object` ([`EventObject`]), chosen by the
//! event's `type` so the object is parsed exactly once. The views hold only the fields Slipway
//! reads and tolerate everything else (a newer API version adding or reshaping fields never turns
//! a genuine, signed event into a rejection); the fully typed event of `async-stripe` would reject
//! a body its compiled API version does not know.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::signature::SignatureError;

/// The header Stripe signs deliveries with.
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// The event types Slipway acts on (the webhook endpoint's `enabled_events`, and what the
/// catch-up asks Stripe for); the starter's mapping has a test that each of them means something.
pub const HANDLED_TYPES: [&str; 13] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.overdue",
    "invoice.voided",
    "invoice.marked_uncollectible",
];

/// Stripe's default tolerance between the signature's timestamp and now.
pub const TOLERANCE_SECS: i64 = 300;

/// Verify a Stripe webhook. `now` is the current Unix time (a parameter so tests can pin it).
pub fn verify(payload: &str, header: Option<&str>, secret: &str, now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for pair in header.split(',') {
        let (key, value) = pair.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match key {
            "t" => timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => candidates.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let matches =
        candidates.iter().any(|c| hex::decode(c).is_ok_and(|sig| mac.clone().verify_slice(&sig).is_ok()));
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// A `Stripe-Signature` header for `payload` signed at `timestamp` (what Stripe computes; for
/// tests and the sandbox), from `async-stripe-webhook` itself.
pub fn signature_header(payload: &str, secret: &str, timestamp: i64) -> String {
    stripe_webhook::Webhook::generate_test_header(payload, secret, Some(timestamp))
}

/// Why a verified body is not a usable event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EventError(pub String);

/// A verified event, read once.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_…`: Stripe's id, the dedupe key of every effect.
    pub id: String,
    /// `type`, e.g. `invoice.paid`.
    pub kind: String,
    /// Unix seconds the event was created (orders deliveries of one object).
    pub created: i64,
    /// The typed view of `data.object`.
    pub object: EventObject,
}

/// `data.object` of the event types Slipway acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum EventObject {
    /// `checkout.session.*`.
    CheckoutSession(CheckoutSession),
    /// `customer.subscription.*`.
    Subscription(Subscription),
    /// `invoice.*`.
    Invoice(Invoice),
    /// `customer.created|updated|deleted`.
    Customer(Customer),
    /// Any other type: acknowledged, not read.
    Other,
}

/// A reference that Stripe sends as an id or, when expanded, as the object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Expandable {
    /// `"cus_…"`.
    Id(String),
    /// `{"id": "cus_…", …}`.
    Object {
        /// The object's id.
        id: String,
    },
}

impl Expandable {
    /// The id, whichever form came.
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

fn id_of(e: &Option<Expandable>) -> Option<String> {
    e.as_ref().map(Expandable::id).filter(|id| !id.is_empty()).map(str::to_owned)
}

/// `null` and absent both read as empty metadata.
fn metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

/// A Checkout Session (the fields Slipway reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutSession {
    /// `cs_…`.
    pub id: String,
    /// The paying customer.
    #[serde(default)]
    pub customer: Option<Expandable>,
    /// The Slipway user, when metadata does not say.
    #[serde(default)]
    pub client_reference_id: Option<String>,
    /// `userId`, `agentId`, `region` ([`super::metadata`]).
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: BTreeMap<String, String>,
    /// `paid`, `unpaid` or `no_payment_required`.
    #[serde(default)]
    pub payment_status: Option<String>,
    /// The subscription it created, in subscription mode.
    #[serde(default)]
    pub subscription: Option<Expandable>,
}

impl CheckoutSession {
    /// The customer's id.
    pub fn customer_id(&self) -> Option<String> {
        id_of(&self.customer)
    }

    /// The subscription's id.
    pub fn subscription_id(&self) -> Option<String> {
        id_of(&self.subscription)
    }

    /// True when nothing is left to pay.
    pub fn is_paid(&self) -> bool {
        matches!(self.payment_status.as_deref(), Some("paid" | "no_payment_required"))
    }
}

/// A subscription (the fields Slipway reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Subscription {
    /// `sub_…`.
    pub id: String,
    /// The customer.
    #[serde(default)]
    pub customer: Option<Expandable>,
    /// `active`, `trialing`, `past_due`, `canceled`, …
    pub status: String,
    /// Copied from the Checkout Session (`subscription_data[metadata]`).
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: BTreeMap<String, String>,
    /// Its items.
    #[serde(default)]
    pub items: Option<List<SubscriptionItem>>,
}

impl Subscription {
    /// The customer's id.
    pub fn customer_id(&self) -> Option<String> {
        id_of(&self.customer)
    }

    /// Seats: the summed `quantity` of licensed items. Metered items (usage billing of coding
    /// jobs) have no quantity and give no seat.
    pub fn seats(&self) -> u32 {
        let seats: u64 = self
            .items
            .iter()
            .flat_map(|l| &l.data)
            .filter(|i| i.usage_type() != Some("metered"))
            .filter_map(|i| i.quantity)
            .sum();
        u32::try_from(seats).unwrap_or(u32::MAX)
    }
}

/// A list object's page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct List<T> {
    /// The items.
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

/// A subscription item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscriptionItem {
    /// Seats, for licensed prices.
    #[serde(default)]
    pub quantity: Option<u64>,
    /// The price.
    #[serde(default)]
    pub price: Option<Price>,
}

impl SubscriptionItem {
    fn usage_type(&self) -> Option<&str> {
        self.price.as_ref()?.recurring.as_ref()?.usage_type.as_deref()
    }
}

/// A price.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Price {
    /// Recurring prices only.
    #[serde(default)]
    pub recurring: Option<Recurring>,
}

/// `price.recurring`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Recurring {
    /// `licensed` or `metered`.
    #[serde(default)]
    pub usage_type: Option<String>,
}

/// An invoice (the fields Slipway reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Invoice {
    /// `in_…`.
    pub id: String,
    /// The customer.
    #[serde(default)]
    pub customer: Option<Expandable>,
    /// API versions before 2025-03-31: the subscription billed.
    #[serde(default)]
    pub subscription: Option<Expandable>,
    /// API versions since 2025-03-31: `parent.subscription_details.subscription`.
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
}

/// `invoice.parent`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InvoiceParent {
    /// Set when a subscription generated the invoice.
    #[serde(default)]
    pub subscription_details: Option<SubscriptionDetails>,
}

/// `invoice.parent.subscription_details`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscriptionDetails {
    /// The subscription.
    #[serde(default)]
    pub subscription: Option<Expandable>,
}

impl Invoice {
    /// The customer's id.
    pub fn customer_id(&self) -> Option<String> {
        id_of(&self.customer)
    }

    /// The subscription it bills, in either API version's place.
    pub fn subscription_id(&self) -> Option<String> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .and_then(|d| id_of(&d.subscription))
            .or_else(|| id_of(&self.subscription))
    }
}

/// A customer (the fields Slipway reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Customer {
    /// `cus_…`.
    pub id: String,
}

/// The event types whose `data.object` is a customer itself (`customer.subscription.*`,
/// `customer.source.*`, `customer.tax_id.*`, … carry other objects).
const CUSTOMER_TYPES: [&str; 3] = ["customer.created", "customer.updated", "customer.deleted"];

#[derive(Deserialize)]
struct Envelope<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    created: i64,
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    object: &'a RawValue,
}

impl Event {
    /// Reads a verified body: the envelope, then `data.object` by the event's type.
    pub fn parse(payload: &str) -> Result<Self, EventError> {
        let env: Envelope<'_> =
            serde_json::from_str(payload).map_err(|e| EventError(format!("not a Stripe event: {e}")))?;
        let raw = env.data.object.get();
        let typed = |what: &str| EventError(format!("data.object is not a {what}"));
        let object = if env.kind.starts_with("checkout.session.") {
            EventObject::CheckoutSession(serde_json::from_str(raw).map_err(|_| typed("checkout session"))?)
        } else if env.kind.starts_with("customer.subscription.") {
            EventObject::Subscription(serde_json::from_str(raw).map_err(|_| typed("subscription"))?)
        } else if env.kind.starts_with("invoice.") {
            EventObject::Invoice(serde_json::from_str(raw).map_err(|_| typed("invoice"))?)
        } else if CUSTOMER_TYPES.contains(&env.kind.as_str()) {
            EventObject::Customer(serde_json::from_str(raw).map_err(|_| typed("customer"))?)
        } else {
            EventObject::Other
        };
        Ok(Self { id: env.id, kind: env.kind, created: env.created, object })
    }

    /// Verifies, then reads: what an endpoint does with a delivery.
    pub fn verified(
        payload: &str,
        header: Option<&str>,
        secret: &str,
        now: i64,
    ) -> Result<Self, WebhookError> {
        verify(payload, header, secret, now).map_err(WebhookError::Signature)?;
        Self::parse(payload).map_err(WebhookError::Event)
    }
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The signature does not prove Stripe sent it.
    #[error(transparent)]
    Signature(SignatureError),
    /// Signed, but not an event.
    #[error(transparent)]
    Event(EventError),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &str = "whsec_test";
    const BODY: &str = r#"{"id":"evt_1","object":"event","type":"checkout.session.completed"}"#;

    #[test]
    fn accepts_fresh_signatures() {
        let t = 1_790_000_000;
        assert_eq!(verify(BODY, Some(&signature_header(BODY, SECRET, t)), SECRET, t + 299), Ok(()));
        assert_eq!(verify(BODY, Some(&signature_header(BODY, SECRET, t)), SECRET, t - 299), Ok(()));
    }

    #[test]
    fn accepts_any_of_several_v1_values() {
        let t = 1_790_000_000;
        let good = signature_header(BODY, SECRET, t);
        let v1 = good.split("v1=").nth(1).unwrap();
        let header = format!("t={t},v1={},v1={v1},v0=abc", "0".repeat(64));
        assert_eq!(verify(BODY, Some(&header), SECRET, t), Ok(()));
    }

    #[test]
    fn rejects_stale_wrong_and_missing() {
        let t = 1_790_000_000;
        let header = signature_header(BODY, SECRET, t);
        assert_eq!(verify(BODY, Some(&header), SECRET, t + 301), Err(SignatureError::Stale));
        assert_eq!(verify(BODY, Some(&header), "whsec_other", t), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(&BODY.replace("evt_1", "evt_2"), Some(&header), SECRET, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(BODY, Some("t=abc,v1=00"), SECRET, t), Err(SignatureError::Malformed));
        assert_eq!(verify(BODY, Some(&format!("t={t}")), SECRET, t), Err(SignatureError::Malformed));
        assert_eq!(verify(BODY, None, SECRET, t), Err(SignatureError::Missing));
    }

    /// The same verdicts as `async-stripe-webhook`, over signed, tampered, stale and garbled
    /// headers.
    #[test]
    fn agrees_with_the_stripe_crate() {
        let t = 1_790_000_000;
        let good = signature_header(BODY, SECRET, t);
        let cases = [
            (good.clone(), t),
            (good.clone(), t + 301),
            (good.replace("v1=", "v1=0"), t),
            (format!("{good},v1=zz"), t),
            ("t=1,v1=00".to_owned(), 1),
            (signature_header(BODY, "whsec_other", t), t),
        ];
        for (header, now) in cases {
            let ours = verify(BODY, Some(&header), SECRET, now).is_ok();
            let theirs = stripe_webhook::Webhook::construct_event_with_timestamp(BODY, &header, SECRET, now);
            let theirs = !matches!(
                theirs,
                Err(stripe_webhook::WebhookError::BadSignature
                    | stripe_webhook::WebhookError::BadTimestamp(_)
                    | stripe_webhook::WebhookError::BadHeader(_)
                    | stripe_webhook::WebhookError::BadKey)
            );
            assert_eq!(ours, theirs, "header {header} at {now}");
        }
    }

    fn event(kind: &str, object: serde_json::Value) -> Result<Event, EventError> {
        Event::parse(
            &json!({"id": "evt_1", "object": "event", "type": kind, "created": 42,
                             "data": {"object": object}})
            .to_string(),
        )
    }

    #[test]
    fn reads_each_object_once_by_type() {
        let e = event(
            "checkout.session.completed",
            json!({"id": "cs_1", "object": "checkout.session", "customer": {"id": "cus_1"},
                   "metadata": {"agentId": "a1"}, "payment_status": "paid", "subscription": "sub_1",
                   "unknown_new_field": [1, 2]}),
        )
        .unwrap();
        assert_eq!((e.id.as_str(), e.kind.as_str(), e.created), ("evt_1", "checkout.session.completed", 42));
        let EventObject::CheckoutSession(s) = e.object else { panic!("a session") };
        assert_eq!(s.customer_id().as_deref(), Some("cus_1"));
        assert_eq!(s.subscription_id().as_deref(), Some("sub_1"));
        assert!(s.is_paid());
        assert_eq!(s.metadata.get("agentId").map(String::as_str), Some("a1"));
        assert_eq!(event("charge.refunded", json!({"id": "ch_1"})).unwrap().object, EventObject::Other);
        let deleted =
            event("customer.deleted", json!({"id": "cus_1", "object": "customer", "deleted": true}));
        assert_eq!(deleted.unwrap().object, EventObject::Customer(Customer { id: "cus_1".into() }));
        // A customer's tax id, source or discount is not the customer.
        let tax_id = event("customer.tax_id.created", json!({"id": "txi_1", "customer": "cus_1"})).unwrap();
        assert_eq!(tax_id.object, EventObject::Other);
        assert!(event("customer.deleted", json!({"object": "customer"})).is_err(), "a customer needs an id");
        assert!(event("invoice.paid", json!({"customer": "cus_1"})).is_err(), "an invoice needs an id");
        assert!(Event::parse("{").is_err());
    }

    #[test]
    fn seats_and_invoice_subscriptions() {
        let sub: Subscription = serde_json::from_value(json!({"id": "sub_1", "status": "active",
            "metadata": null, "items": {"object": "list", "data": [
            {"id": "si_1", "quantity": 2, "price": {"id": "price_a", "recurring": {"usage_type": "licensed"}}},
            {"id": "si_2", "quantity": 1, "price": {"id": "price_b", "recurring": {"usage_type": "licensed"}}},
            {"id": "si_3", "price": {"id": "price_m", "recurring": {"usage_type": "metered"}}}]}}))
        .unwrap();
        assert_eq!(sub.seats(), 3, "licensed quantities summed, metered item ignored");
        let current: Invoice = serde_json::from_value(json!({"id": "in_1",
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_9"}}}))
        .unwrap();
        assert_eq!(current.subscription_id().as_deref(), Some("sub_9"));
        let legacy: Invoice = serde_json::from_value(json!({"id": "in_2", "subscription": "sub_8"})).unwrap();
        assert_eq!(legacy.subscription_id().as_deref(), Some("sub_8"));
    }

    #[test]
    fn verified_reads_only_what_verifies() {
        let t = 1_790_000_000;
        let body = json!({"id": "evt_1", "type": "ping", "data": {"object": {}}}).to_string();
        let header = signature_header(&body, SECRET, t);
        assert_eq!(Event::verified(&body, Some(&header), SECRET, t).unwrap().object, EventObject::Other);
        assert!(matches!(
            Event::verified(&body, Some(&header), "whsec_x", t),
            Err(WebhookError::Signature(SignatureError::Mismatch))
        ));
        let header = signature_header("{}", SECRET, t);
        assert!(matches!(Event::verified("{}", Some(&header), SECRET, t), Err(WebhookError::Event(_))));
    }
}
