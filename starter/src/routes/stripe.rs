//! `POST /webhooks/stripe`.
//!
//! Verify the signature over the raw body, read the event, then:
//! - billing events (`checkout.session.*`, `customer.subscription.*`, `invoice.paid`,
//!   `invoice.payment_failed`) go to the customer's `Subscription` workflow (signal-with-start;
//!   the workflow applies each event id once, in a sane order);
//! - a paid checkout that names an agent also asks that agent's workflow to provision
//!   (update-with-start, keyed by the event id).
//!
//! 2xx only once Temporal has accepted everything the event calls for.
//!
//! Answers: 200 handled / ignored; 400 bad signature, stale timestamp, malformed body; 413 over
//! 1 MiB; 422 a signed checkout with unusable metadata; 409 the owner already has a provisioning
//! in flight (Stripe retries later, so the paid agent is provisioned once the first finishes);
//! 503 Temporal did not accept (Stripe retries).

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::HeaderMap,
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use slipway_proto::{
    billing::{BillingEvent, BillingEventKind, customer_workflow_id},
    model::{AgentRecord, ProvisionCommand, ProvisionOutcome, ProvisionSource, agent_workflow_id},
};
use slipway_providers::stripe::{self, metadata};

use crate::{
    AppState,
    error::{ApiError, body_rejection},
    metrics::Metric,
    temporal::GatewayError,
    validate,
};

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    created: i64,
    data: EventData,
}

/// Stripe ids may come as a string or, when expanded, as an object with an `id`.
fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The billing meaning of an event: `(customer id, user id if known, event)`, or `None` for
/// types billing does not track.
fn billing_event(event: &Event) -> Result<Option<(String, Option<String>, BillingEvent)>, String> {
    let obj = &event.data.object;
    let customer = id_of(obj.get("customer"));
    let kind = match event.kind.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let meta = obj.get("metadata");
            let meta_str = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str).map(str::to_owned);
            let user_id = meta_str(metadata::USER_ID)
                .or_else(|| obj.get("client_reference_id").and_then(Value::as_str).map(str::to_owned));
            let paid = event.kind == "checkout.session.async_payment_succeeded"
                || matches!(
                    obj.get("payment_status").and_then(Value::as_str),
                    Some("paid" | "no_payment_required")
                );
            BillingEventKind::CheckoutCompleted {
                session_id: id_of(obj.get("id")).ok_or("checkout session without id")?,
                subscription_id: id_of(obj.get("subscription")),
                user_id,
                agent_id: meta_str(metadata::AGENT_ID),
                paid,
            }
        }
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => BillingEventKind::SubscriptionChanged {
            subscription_id: id_of(obj.get("id")).ok_or("subscription without id")?,
            status: obj
                .get("status")
                .and_then(Value::as_str)
                .ok_or("subscription without status")?
                .to_owned(),
            deleted: event.kind == "customer.subscription.deleted",
            seats: Some(seats(obj)),
            agent_id: obj
                .pointer("/metadata/agentId")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
        },
        "invoice.paid" => BillingEventKind::InvoicePaid {
            invoice_id: id_of(obj.get("id")).ok_or("invoice without id")?,
            subscription_id: invoice_subscription(obj),
        },
        "invoice.payment_failed" => BillingEventKind::InvoicePaymentFailed {
            invoice_id: id_of(obj.get("id")).ok_or("invoice without id")?,
            subscription_id: invoice_subscription(obj),
        },
        _ => return Ok(None),
    };
    let Some(customer) = customer else { return Ok(None) };
    let user = match &kind {
        BillingEventKind::CheckoutCompleted { user_id, .. } => user_id.clone(),
        _ => None,
    };
    Ok(Some((customer, user, BillingEvent { event_id: event.id.clone(), created: event.created, kind })))
}

/// A subscription's seats: the summed `quantity` of its licensed items. Metered items (usage
/// billing of coding jobs) have no quantity and give no seat.
fn seats(subscription: &Value) -> u32 {
    let items = subscription.pointer("/items/data").and_then(Value::as_array);
    let seats: u64 = items
        .into_iter()
        .flatten()
        .filter(|item| item.pointer("/price/recurring/usage_type").and_then(Value::as_str) != Some("metered"))
        .filter_map(|item| item.get("quantity").and_then(Value::as_u64))
        .sum();
    u32::try_from(seats).unwrap_or(u32::MAX)
}

/// The subscription an invoice bills: `parent.subscription_details.subscription` (API versions
/// since 2025-03-31), or the older top-level `subscription`.
fn invoice_subscription(invoice: &Value) -> Option<String> {
    id_of(invoice.pointer("/parent/subscription_details/subscription"))
        .or_else(|| id_of(invoice.get("subscription")))
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: Value,
}

#[derive(Debug, Deserialize)]
struct CheckoutSession {
    id: String,
    #[serde(default)]
    customer: Option<Value>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    payment_status: Option<String>,
    #[serde(default)]
    subscription: Option<Value>,
}

/// What a verified checkout asks for.
#[derive(Debug, PartialEq, Eq)]
struct CheckoutIntent {
    agent_id: String,
    user_id: String,
    region: String,
    customer_id: Option<String>,
}

/// Reads `agentId`, `userId`, `region` from the session metadata. `Ok(None)`: the checkout is
/// not for an agent (e.g. a plain subscription).
fn checkout_intent(session: &CheckoutSession) -> Result<Option<CheckoutIntent>, String> {
    let meta = session.metadata.clone().unwrap_or_default();
    let Some(agent_id) = meta.get(metadata::AGENT_ID).filter(|v| !v.is_empty()) else { return Ok(None) };
    let user_id = meta.get(metadata::USER_ID).ok_or("metadata.userId is missing")?;
    let region = meta.get(metadata::REGION).ok_or("metadata.region is missing")?;
    validate::agent_id(agent_id)?;
    validate::user_id(user_id)?;
    validate::region(region)?;
    let customer_id = match &session.customer {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Object(o)) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    Ok(Some(CheckoutIntent {
        agent_id: agent_id.clone(),
        user_id: user_id.clone(),
        region: region.clone(),
        customer_id,
    }))
}

/// The handler.
pub async fn webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(body_rejection)?;
    let payload = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("MALFORMED_PAYLOAD", "body is not UTF-8"))?;
    let header = headers.get(stripe::webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    stripe::webhook::verify(payload, header, app.settings.stripe_webhook_secret.expose_secret(), now)
        .map_err(|e| {
            app.metrics.incr(Metric::WebhookRejected);
            ApiError::bad_request(e.code(), e.to_string())
        })?;
    let event: Event = serde_json::from_str(payload).map_err(|e| {
        app.metrics.incr(Metric::WebhookRejected);
        ApiError::bad_request("MALFORMED_PAYLOAD", format!("not a Stripe event: {e}"))
    })?;
    app.metrics.incr(Metric::WebhookReceived);
    let span = tracing::Span::current();
    span.record("event_id", event.id.as_str());
    span.record("event_type", event.kind.as_str());

    let billing = billing_event(&event).map_err(|m| ApiError::bad_request("MALFORMED_PAYLOAD", m))?;
    let is_billing = billing.is_some();
    if let Some((customer, user, billing_event)) = billing {
        span.record("workflow_id", customer_workflow_id(&customer));
        let policy = app.settings.billing.clone();
        if let Err(e) = app.gateway.billing_event(&customer, user.as_deref(), billing_event, policy).await {
            app.metrics.incr(Metric::TemporalUnavailable);
            return Err(ApiError::unavailable(e.to_string()));
        }
        app.metrics.incr(Metric::WorkflowAccepted);
        tracing::info!(event_id = %event.id, event_type = %event.kind, customer = %customer, "billing event accepted");
    }
    match event.kind.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            checkout(&app, &event).await
        }
        _ if is_billing => Ok(Json(json!({"received": true, "handled": true}))),
        other => {
            tracing::info!(event_id = %event.id, event_type = other, "stripe event type not handled; acknowledged");
            Ok(Json(json!({"received": true, "handled": false})))
        }
    }
}

async fn checkout(app: &AppState, event: &Event) -> Result<Json<Value>, ApiError> {
    let session: CheckoutSession = serde_json::from_value(event.data.object.clone())
        .map_err(|e| ApiError::bad_request("MALFORMED_PAYLOAD", format!("not a checkout session: {e}")))?;
    let intent =
        checkout_intent(&session).map_err(|m| ApiError::unprocessable("INVALID_CHECKOUT_METADATA", m))?;
    let Some(intent) = intent else {
        tracing::info!(session_id = %session.id, "checkout without agentId: nothing to provision");
        return Ok(Json(json!({"received": true, "handled": false})));
    };
    // Asynchronous payment methods complete the session unpaid; provisioning waits for
    // `checkout.session.async_payment_succeeded`.
    if event.kind == "checkout.session.completed"
        && !matches!(session.payment_status.as_deref(), Some("paid" | "no_payment_required"))
    {
        tracing::info!(session_id = %session.id, "checkout completed unpaid; waiting for async payment");
        return Ok(Json(json!({"received": true, "handled": false, "reason": "awaiting payment"})));
    }

    tracing::Span::current().record("workflow_id", agent_workflow_id(&intent.agent_id));
    let agent = AgentRecord::draft(&intent.agent_id, &intent.user_id, &intent.region);
    let cmd = ProvisionCommand {
        source: ProvisionSource::Checkout {
            event_id: event.id.clone(),
            session_id: session.id.clone(),
            customer_id: intent.customer_id.clone(),
            // The seat this checkout paid for: its subscription, or the session of a one-off
            // payment (the customer's workflow keys both the same way).
            subscription_id: Some(id_of(session.subscription.as_ref()).unwrap_or_else(|| session.id.clone())),
            user_id: Some(intent.user_id.clone()),
        },
    };
    let outcome = app
        .gateway
        .provision(
            agent,
            app.settings.policy.clone(),
            app.lifecycle(),
            intent.customer_id.as_deref(),
            cmd,
            format!("stripe-{}", event.id),
        )
        .await;
    match outcome {
        Ok(ProvisionOutcome::Refused { code, reason })
            if code == slipway_workflows::agent::codes::PROVISIONING_IN_PROGRESS =>
        {
            app.metrics.incr(Metric::ProvisioningRefused);
            Err(ApiError::conflict("PROVISIONING_IN_PROGRESS", reason))
        }
        Ok(outcome) => {
            tracing::info!(agent_id = %intent.agent_id, ?outcome, "checkout handled");
            app.metrics.incr(Metric::WorkflowAccepted);
            Ok(Json(
                json!({"received": true, "handled": true, "agent_id": intent.agent_id, "result": outcome}),
            ))
        }
        Err(GatewayError::Closed) => {
            tracing::info!(agent_id = %intent.agent_id, "agent workflow closed; late event acknowledged");
            Ok(Json(json!({"received": true, "handled": false, "reason": "agent no longer exists"})))
        }
        Err(e) => {
            app.metrics.incr(Metric::TemporalUnavailable);
            Err(ApiError::unavailable(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, object: Value) -> Event {
        Event { id: "evt_1".into(), kind: kind.into(), created: 42, data: EventData { object } }
    }

    #[test]
    fn billing_events_are_mapped_from_stripe_objects() {
        let (cus, user, ev) = billing_event(&event(
            "customer.subscription.updated",
            json!({"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "past_due"}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!((cus.as_str(), user), ("cus_1", None));
        assert_eq!(ev.created, 42);
        assert_eq!(
            ev.kind,
            BillingEventKind::SubscriptionChanged {
                subscription_id: "sub_1".into(),
                status: "past_due".into(),
                deleted: false,
                seats: Some(0),
                agent_id: None,
            }
        );
        let (_, _, ev) = billing_event(&event(
            "invoice.payment_failed",
            json!({"id": "in_1", "customer": {"id": "cus_1"}}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            ev.kind,
            BillingEventKind::InvoicePaymentFailed { invoice_id: "in_1".into(), subscription_id: None }
        );
        let (_, user, ev) = billing_event(&event(
            "checkout.session.completed",
            json!({"id": "cs_1", "customer": "cus_1", "subscription": "sub_1", "payment_status": "paid",
                   "client_reference_id": "u9", "metadata": {}}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(user.as_deref(), Some("u9"));
        assert!(matches!(ev.kind, BillingEventKind::CheckoutCompleted { paid: true, .. }));
    }

    #[test]
    fn seats_and_invoice_subscriptions_are_read_from_stripe_objects() {
        let sub = slipway_sandbox_free_subscription();
        assert_eq!(seats(&sub), 3, "licensed quantities summed, metered item ignored");
        let (_, _, ev) = billing_event(&event(
            "invoice.paid",
            json!({"id": "in_1", "customer": "cus_1",
                   "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_9"}}}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            ev.kind,
            BillingEventKind::InvoicePaid {
                invoice_id: "in_1".into(),
                subscription_id: Some("sub_9".into())
            }
        );
        let legacy = json!({"id": "in_2", "customer": "cus_1", "subscription": "sub_8"});
        assert_eq!(invoice_subscription(&legacy).as_deref(), Some("sub_8"));
    }

    /// A subscription with two seats of one price, one of another and a metered price.
    fn slipway_sandbox_free_subscription() -> Value {
        json!({"id": "sub_1", "object": "subscription", "items": {"object": "list", "data": [
            {"id": "si_1", "quantity": 2, "price": {"id": "price_a", "recurring": {"usage_type": "licensed"}}},
            {"id": "si_2", "quantity": 1, "price": {"id": "price_b", "recurring": {"usage_type": "licensed"}}},
            {"id": "si_3", "price": {"id": "price_m", "recurring": {"usage_type": "metered"}}}
        ]}})
    }

    #[test]
    fn untracked_types_and_customerless_objects_are_not_billing() {
        assert!(
            billing_event(&event("charge.refunded", json!({"id": "ch_1", "customer": "cus_1"})))
                .unwrap()
                .is_none()
        );
        assert!(billing_event(&event("invoice.paid", json!({"id": "in_1"}))).unwrap().is_none());
        assert!(billing_event(&event("invoice.paid", json!({"customer": "cus_1"}))).is_err());
    }

    fn session(meta: &[(&str, &str)], customer: Value) -> CheckoutSession {
        CheckoutSession {
            id: "cs_1".into(),
            customer: Some(customer),
            metadata: Some(meta.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()),
            payment_status: Some("paid".into()),
            subscription: None,
        }
    }

    #[test]
    fn reads_the_pinned_metadata_keys() {
        let s = session(&[("agentId", "a1"), ("userId", "u1"), ("region", "fsn1")], json!("cus_1"));
        assert_eq!(
            checkout_intent(&s).unwrap(),
            Some(CheckoutIntent {
                agent_id: "a1".into(),
                user_id: "u1".into(),
                region: "fsn1".into(),
                customer_id: Some("cus_1".into())
            })
        );
    }

    #[test]
    fn expanded_customer_objects_are_read_too() {
        let s = session(&[("agentId", "a1"), ("userId", "u1"), ("region", "fsn1")], json!({"id": "cus_9"}));
        assert_eq!(checkout_intent(&s).unwrap().unwrap().customer_id.as_deref(), Some("cus_9"));
    }

    #[test]
    fn no_agent_means_nothing_to_provision() {
        assert_eq!(checkout_intent(&session(&[("userId", "u1")], Value::Null)).unwrap(), None);
    }

    #[test]
    fn bad_metadata_is_explained() {
        let missing = session(&[("agentId", "a1"), ("region", "fsn1")], Value::Null);
        assert_eq!(checkout_intent(&missing).unwrap_err(), "metadata.userId is missing");
        let region = session(&[("agentId", "a1"), ("userId", "u1"), ("region", "mars")], Value::Null);
        assert!(checkout_intent(&region).unwrap_err().contains("region"));
    }
}
