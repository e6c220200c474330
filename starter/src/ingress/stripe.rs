//! Stripe deliveries: [`StripeDelivery`] (verified, read once) and [`intent`], the pure mapping
//! from an event to what Slipway does about it.
//!
//! - billing events (`checkout.session.completed` / `async_payment_succeeded`,
//!   `customer.subscription.created|updated|deleted|paused|resumed`, `customer.deleted`,
//!   `invoice.paid`, `invoice.payment_failed`, `invoice.overdue`, `invoice.voided`,
//!   `invoice.marked_uncollectible`) go to the customer's `Subscription` workflow
//!   ([`CustomerEvent`]);
//! - a paid checkout that names an agent also provisions that agent ([`Checkout::Provision`]),
//!   keyed by the event id; an unpaid one waits for `async_payment_succeeded`.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use secrecy::ExposeSecret;
use slipway_proto::{
    billing::{BillingEvent, BillingEventKind},
    model::{AgentRecord, ProvisionCommand, ProvisionSource},
};
use slipway_providers::stripe::{
    metadata,
    webhook::{CheckoutSession, Event, EventObject, SIGNATURE_HEADER, WebhookError},
};

use super::{now, rejected};
use crate::{
    AppState,
    error::{ApiError, body_rejection},
    metrics::Metric,
    validate,
};

/// A Stripe event whose signature verified.
#[derive(Debug)]
pub struct StripeDelivery(pub Event);

impl FromRequest<AppState> for StripeDelivery {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        let header = req.headers().get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = Bytes::from_request(req, app).await.map_err(body_rejection)?;
        let payload = std::str::from_utf8(&body)
            .map_err(|_| rejected(app, ApiError::bad_request("MALFORMED_PAYLOAD", "body is not UTF-8")))?;
        let secret = app.settings.stripe_webhook_secret.expose_secret();
        let event = Event::verified(payload, header.as_deref(), secret, now()).map_err(|e| {
            rejected(
                app,
                match e {
                    WebhookError::Signature(s) => ApiError::bad_request(s.code(), s.to_string()),
                    WebhookError::Event(e) => ApiError::bad_request("MALFORMED_PAYLOAD", e.to_string()),
                },
            )
        })?;
        app.metrics.incr(Metric::WebhookReceived);
        let span = tracing::Span::current();
        span.record("event_id", event.id.as_str());
        span.record("event_type", event.kind.as_str());
        Ok(Self(event))
    }
}

/// What an event asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeIntent {
    /// `evt_…`.
    pub event_id: String,
    /// The event's type.
    pub kind: String,
    /// The billing event for the customer's workflow, if billing tracks this type.
    pub billing: Option<CustomerEvent>,
    /// What a checkout asks for.
    pub checkout: Checkout,
}

/// A billing event for one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerEvent {
    /// `cus_…`.
    pub customer_id: String,
    /// The Slipway user, when the event says (checkouts).
    pub user_id: Option<String>,
    /// The event.
    pub event: BillingEvent,
}

/// A checkout's part of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Checkout {
    /// Not a completed checkout.
    None,
    /// A checkout that names no agent (a plain subscription).
    WithoutAgent,
    /// Completed, but paid asynchronously later (`async_payment_succeeded` will follow).
    AwaitingPayment,
    /// A paid agent to provision.
    Provision(Box<PaidCheckout>),
}

/// A paid checkout's provisioning.
#[derive(Debug, Clone, PartialEq)]
pub struct PaidCheckout {
    /// The agent, as a draft (its workflow is started if needed).
    pub agent: AgentRecord,
    /// The payer.
    pub customer_id: Option<String>,
    /// The command for the agent's workflow (its source names the event: the agent drops a
    /// redelivery by it).
    pub command: ProvisionCommand,
}

/// Why a signed event cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentError {
    /// 422 `INVALID_CHECKOUT_METADATA`: a checkout whose metadata names an agent badly.
    InvalidMetadata(String),
}

impl From<IntentError> for ApiError {
    fn from(e: IntentError) -> Self {
        match e {
            IntentError::InvalidMetadata(m) => ApiError::unprocessable("INVALID_CHECKOUT_METADATA", m),
        }
    }
}

const COMPLETED: &str = "checkout.session.completed";
const ASYNC_PAID: &str = "checkout.session.async_payment_succeeded";

/// Maps a verified event. Pure.
pub fn intent(event: &Event) -> Result<StripeIntent, IntentError> {
    let checkout = match &event.object {
        EventObject::CheckoutSession(s) if matches!(event.kind.as_str(), COMPLETED | ASYNC_PAID) => {
            checkout(event, s)?
        }
        _ => Checkout::None,
    };
    Ok(StripeIntent {
        event_id: event.id.clone(),
        kind: event.kind.clone(),
        billing: billing(event),
        checkout,
    })
}

/// The billing meaning of an event, or `None` for types billing does not track (or objects
/// without a customer).
fn billing(event: &Event) -> Option<CustomerEvent> {
    let (customer, user_id, kind) = match (&event.object, event.kind.as_str()) {
        (EventObject::CheckoutSession(s), COMPLETED | ASYNC_PAID) => {
            let user_id =
                s.metadata.get(metadata::USER_ID).cloned().or_else(|| s.client_reference_id.clone());
            let kind = BillingEventKind::CheckoutCompleted {
                session_id: s.id.clone(),
                subscription_id: s.subscription_id(),
                user_id: user_id.clone(),
                agent_id: s.metadata.get(metadata::AGENT_ID).cloned(),
                paid: event.kind == ASYNC_PAID || s.is_paid(),
            };
            (s.customer_id(), user_id, kind)
        }
        (
            EventObject::Subscription(s),
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "customer.subscription.paused"
            | "customer.subscription.resumed",
        ) => {
            let kind = BillingEventKind::SubscriptionChanged {
                subscription_id: s.id.clone(),
                status: s.status.clone(),
                deleted: event.kind == "customer.subscription.deleted",
                seats: Some(s.seats()),
                agent_id: s.metadata.get(metadata::AGENT_ID).filter(|a| !a.is_empty()).cloned(),
            };
            (s.customer_id(), None, kind)
        }
        (EventObject::Invoice(i), "invoice.paid") => {
            let kind = BillingEventKind::InvoicePaid {
                invoice_id: i.id.clone(),
                subscription_id: i.subscription_id(),
            };
            (i.customer_id(), None, kind)
        }
        (EventObject::Invoice(i), "invoice.payment_failed") => {
            let kind = BillingEventKind::InvoicePaymentFailed {
                invoice_id: i.id.clone(),
                subscription_id: i.subscription_id(),
            };
            (i.customer_id(), None, kind)
        }
        (EventObject::Invoice(i), "invoice.overdue") => {
            let kind = BillingEventKind::InvoiceOverdue {
                invoice_id: i.id.clone(),
                subscription_id: i.subscription_id(),
            };
            (i.customer_id(), None, kind)
        }
        (EventObject::Invoice(i), "invoice.voided") => {
            let kind = BillingEventKind::InvoiceVoided {
                invoice_id: i.id.clone(),
                subscription_id: i.subscription_id(),
            };
            (i.customer_id(), None, kind)
        }
        (EventObject::Invoice(i), "invoice.marked_uncollectible") => {
            let kind = BillingEventKind::InvoiceUncollectible {
                invoice_id: i.id.clone(),
                subscription_id: i.subscription_id(),
            };
            (i.customer_id(), None, kind)
        }
        (EventObject::Customer(c), "customer.deleted") => {
            (Some(c.id.clone()).filter(|id| !id.is_empty()), None, BillingEventKind::CustomerDeleted)
        }
        _ => return None,
    };
    Some(CustomerEvent {
        customer_id: customer?,
        user_id,
        event: BillingEvent { event_id: event.id.clone(), created: event.created, kind, handoff: None },
    })
}

/// A completed checkout: which agent, if any, it pays for.
fn checkout(event: &Event, session: &CheckoutSession) -> Result<Checkout, IntentError> {
    let meta = &session.metadata;
    let Some(agent_id) = meta.get(metadata::AGENT_ID).filter(|v| !v.is_empty()) else {
        return Ok(Checkout::WithoutAgent);
    };
    let invalid = |m: &str| IntentError::InvalidMetadata(m.to_owned());
    let user_id = meta.get(metadata::USER_ID).ok_or_else(|| invalid("metadata.userId is missing"))?;
    let region = meta.get(metadata::REGION).ok_or_else(|| invalid("metadata.region is missing"))?;
    for check in [validate::agent_id(agent_id), validate::user_id(user_id), validate::region(region)] {
        check.map_err(IntentError::InvalidMetadata)?;
    }
    if event.kind == COMPLETED && !session.is_paid() {
        return Ok(Checkout::AwaitingPayment);
    }
    let customer_id = session.customer_id();
    let command = ProvisionCommand {
        source: ProvisionSource::Checkout {
            event_id: event.id.clone(),
            session_id: session.id.clone(),
            customer_id: customer_id.clone(),
            // The seat this checkout paid for: its subscription, or the session of a one-off
            // payment (the customer's workflow keys both the same way).
            subscription_id: Some(session.subscription_id().unwrap_or_else(|| session.id.clone())),
            user_id: Some(user_id.clone()),
        },
    };
    Ok(Checkout::Provision(Box::new(PaidCheckout {
        agent: AgentRecord::draft(agent_id, user_id, region),
        customer_id,
        command,
    })))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn event(kind: &str, object: Value) -> Event {
        Event::parse(
            &json!({"id": "evt_1", "type": kind, "created": 42, "data": {"object": object}}).to_string(),
        )
        .unwrap()
    }

    fn session(meta: Value, customer: Value, paid: &str) -> Value {
        json!({"id": "cs_1", "object": "checkout.session", "customer": customer, "metadata": meta,
               "payment_status": paid, "subscription": "sub_1"})
    }

    #[test]
    fn billing_events_are_mapped_from_stripe_objects() {
        let i = intent(&event(
            "customer.subscription.updated",
            json!({"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "past_due"}),
        ))
        .unwrap();
        let b = i.billing.unwrap();
        assert_eq!((b.customer_id.as_str(), b.user_id), ("cus_1", None));
        assert_eq!(b.event.created, 42);
        assert_eq!(
            b.event.kind,
            BillingEventKind::SubscriptionChanged {
                subscription_id: "sub_1".into(),
                status: "past_due".into(),
                deleted: false,
                seats: Some(0),
                agent_id: None,
            }
        );
        assert_eq!(i.checkout, Checkout::None);
        let b = intent(&event("invoice.payment_failed", json!({"id": "in_1", "customer": {"id": "cus_1"}})))
            .unwrap()
            .billing
            .unwrap();
        assert_eq!(
            b.event.kind,
            BillingEventKind::InvoicePaymentFailed { invoice_id: "in_1".into(), subscription_id: None }
        );
    }

    #[test]
    fn untracked_types_and_customerless_objects_are_not_billing() {
        let refund = intent(&event("charge.refunded", json!({"id": "ch_1", "customer": "cus_1"}))).unwrap();
        assert_eq!((refund.billing, refund.checkout), (None, Checkout::None));
        assert_eq!(intent(&event("invoice.paid", json!({"id": "in_1"}))).unwrap().billing, None);
        assert_eq!(
            intent(&event("invoice.created", json!({"id": "in_1", "customer": "c"}))).unwrap().billing,
            None
        );
    }

    #[test]
    fn a_paid_checkout_provisions_the_agent_its_metadata_names() {
        let meta = json!({"agentId": "a1", "userId": "u1", "region": "fsn1"});
        let i = intent(&event(COMPLETED, session(meta.clone(), json!({"id": "cus_9"}), "paid"))).unwrap();
        let Checkout::Provision(p) = i.checkout else { panic!("provision") };
        assert_eq!(
            (p.agent.agent_id.as_str(), p.agent.user_id.as_str(), p.agent.region.as_str()),
            ("a1", "u1", "fsn1")
        );
        assert_eq!(p.customer_id.as_deref(), Some("cus_9"));
        assert_eq!(p.command.source.event_id(), Some("evt_1"));
        assert!(matches!(
            p.command.source,
            ProvisionSource::Checkout { ref subscription_id, .. } if subscription_id.as_deref() == Some("sub_1")
        ));
        let b = i.billing.unwrap();
        assert!(matches!(b.event.kind, BillingEventKind::CheckoutCompleted { paid: true, .. }));
        assert_eq!(b.user_id.as_deref(), Some("u1"));
    }

    #[test]
    fn unpaid_and_agentless_checkouts_provision_nothing() {
        let meta = json!({"agentId": "a1", "userId": "u1", "region": "fsn1"});
        let unpaid = intent(&event(COMPLETED, session(meta.clone(), json!("cus_1"), "unpaid"))).unwrap();
        assert_eq!(unpaid.checkout, Checkout::AwaitingPayment);
        let later = intent(&event(ASYNC_PAID, session(meta, json!("cus_1"), "unpaid"))).unwrap();
        assert!(matches!(later.checkout, Checkout::Provision(_)));
        let plain =
            intent(&event(COMPLETED, session(json!({"userId": "u1"}), json!("cus_1"), "paid"))).unwrap();
        assert_eq!(plain.checkout, Checkout::WithoutAgent);
        let by_ref =
            json!({"id": "cs_2", "customer": "cus_1", "client_reference_id": "u9", "payment_status": "paid"});
        assert_eq!(
            intent(&event(COMPLETED, by_ref)).unwrap().billing.unwrap().user_id.as_deref(),
            Some("u9")
        );
    }

    /// `data.object` of each handled type, in Stripe's shape (API version 2025-03-31 or later:
    /// an invoice names its subscription under `parent.subscription_details`).
    fn object_of(kind: &str) -> Value {
        if kind.starts_with("checkout.session.") {
            session(json!({"userId": "u1"}), json!("cus_1"), "paid")
        } else if kind.starts_with("customer.subscription.") {
            let status = match kind {
                "customer.subscription.deleted" => "canceled",
                "customer.subscription.paused" => "paused",
                _ => "active",
            };
            json!({"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
                   "metadata": {}, "items": {"object": "list", "data": [
                       {"id": "si_1", "object": "subscription_item", "quantity": 1,
                        "price": {"id": "price_1", "recurring": {"usage_type": "licensed"}}}]}})
        } else if kind.starts_with("invoice.") {
            json!({"id": "in_1", "object": "invoice", "customer": "cus_1",
                   "parent": {"type": "subscription_details",
                              "subscription_details": {"subscription": "sub_1"}}})
        } else if kind.starts_with("customer.") {
            json!({"id": "cus_1", "object": "customer", "email": "a@example.com", "metadata": {}})
        } else {
            panic!("no object shape for {kind}")
        }
    }

    #[test]
    fn every_type_the_catch_up_asks_for_is_acted_on() {
        let (invoice, subscription) = ("in_1".to_owned(), Some("sub_1".to_owned()));
        for kind in slipway_providers::stripe::webhook::HANDLED_TYPES {
            let billing = intent(&event(kind, object_of(kind))).unwrap().billing;
            let b = billing.unwrap_or_else(|| panic!("{kind} is not acted on"));
            assert_eq!((b.customer_id.as_str(), b.event.event_id.as_str()), ("cus_1", "evt_1"), "{kind}");
            let expected = match kind {
                "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                    assert!(matches!(b.event.kind, BillingEventKind::CheckoutCompleted { paid: true, .. }));
                    continue;
                }
                "customer.subscription.created"
                | "customer.subscription.updated"
                | "customer.subscription.deleted"
                | "customer.subscription.paused"
                | "customer.subscription.resumed" => BillingEventKind::SubscriptionChanged {
                    subscription_id: "sub_1".into(),
                    status: object_of(kind)["status"].as_str().unwrap().into(),
                    deleted: kind == "customer.subscription.deleted",
                    agent_id: None,
                    seats: Some(1),
                },
                "customer.deleted" => BillingEventKind::CustomerDeleted,
                "invoice.paid" => BillingEventKind::InvoicePaid {
                    invoice_id: invoice.clone(),
                    subscription_id: subscription.clone(),
                },
                "invoice.payment_failed" => BillingEventKind::InvoicePaymentFailed {
                    invoice_id: invoice.clone(),
                    subscription_id: subscription.clone(),
                },
                "invoice.overdue" => BillingEventKind::InvoiceOverdue {
                    invoice_id: invoice.clone(),
                    subscription_id: subscription.clone(),
                },
                "invoice.voided" => BillingEventKind::InvoiceVoided {
                    invoice_id: invoice.clone(),
                    subscription_id: subscription.clone(),
                },
                "invoice.marked_uncollectible" => BillingEventKind::InvoiceUncollectible {
                    invoice_id: invoice.clone(),
                    subscription_id: subscription.clone(),
                },
                other => panic!("{other}: add its expected billing event here"),
            };
            assert_eq!(b.event.kind, expected, "{kind}");
        }
    }

    #[test]
    fn paused_and_resumed_subscriptions_change_like_updates() {
        for (kind, status) in
            [("customer.subscription.paused", "paused"), ("customer.subscription.resumed", "active")]
        {
            let object = json!({"id": "sub_1", "customer": "cus_1", "status": status,
                                "metadata": {"agentId": "a1"}});
            let b = intent(&event(kind, object)).unwrap().billing.unwrap();
            assert_eq!(
                b.event.kind,
                BillingEventKind::SubscriptionChanged {
                    subscription_id: "sub_1".into(),
                    status: status.into(),
                    deleted: false,
                    agent_id: Some("a1".into()),
                    seats: Some(0),
                },
                "{kind}"
            );
        }
    }

    #[test]
    fn a_deleted_customer_is_the_customer_the_object_is() {
        let b =
            intent(&event("customer.deleted", json!({"id": "cus_7", "object": "customer", "deleted": true})))
                .unwrap()
                .billing
                .unwrap();
        assert_eq!(
            (b.customer_id.as_str(), b.user_id, b.event.kind),
            ("cus_7", None, BillingEventKind::CustomerDeleted)
        );
        // Created or updated customers mean nothing to billing.
        let updated =
            intent(&event("customer.updated", json!({"id": "cus_7", "object": "customer"}))).unwrap();
        assert_eq!(updated.billing, None);
    }

    #[test]
    fn bad_metadata_is_explained() {
        let missing = json!({"agentId": "a1", "region": "fsn1"});
        assert_eq!(
            intent(&event(COMPLETED, session(missing, Value::Null, "paid"))).unwrap_err(),
            IntentError::InvalidMetadata("metadata.userId is missing".into())
        );
        let mars = json!({"agentId": "a1", "userId": "u1", "region": "mars"});
        let IntentError::InvalidMetadata(m) =
            intent(&event(COMPLETED, session(mars, Value::Null, "paid"))).unwrap_err();
        assert!(m.contains("region"), "{m}");
    }
}
