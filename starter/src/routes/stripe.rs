//! `POST /webhooks/stripe`.
//!
//! Verify the signature over the raw body, read the event, and for a paid checkout that names an
//! agent, ask that agent's workflow to provision (update-with-start, keyed by the event id) —
//! answering 2xx only once Temporal has accepted and the workflow has answered.
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
use slipway_proto::model::{AgentRecord, ProvisionCommand, ProvisionOutcome, ProvisionSource};
use tracing::Instrument;

use crate::{
    AppState,
    error::{ApiError, body_rejection},
    metrics::Metric,
    temporal::GatewayError,
    validate, verify,
};

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
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
    let Some(agent_id) = meta.get("agentId").filter(|v| !v.is_empty()) else { return Ok(None) };
    let user_id = meta.get("userId").ok_or("metadata.userId is missing")?;
    let region = meta.get("region").ok_or("metadata.region is missing")?;
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
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    verify::stripe(payload, header, app.settings.stripe_webhook_secret.expose_secret(), now).map_err(
        |e| {
            app.metrics.incr(Metric::WebhookRejected);
            ApiError::bad_request(e.code(), e.to_string())
        },
    )?;
    let event: Event = serde_json::from_str(payload).map_err(|e| {
        app.metrics.incr(Metric::WebhookRejected);
        ApiError::bad_request("MALFORMED_PAYLOAD", format!("not a Stripe event: {e}"))
    })?;
    app.metrics.incr(Metric::WebhookReceived);
    let span = tracing::info_span!("stripe_event", event_id = %event.id, event_type = %event.kind);

    match event.kind.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            checkout(&app, &event).instrument(span).await
        }
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

    let agent = AgentRecord::draft(&intent.agent_id, &intent.user_id, &intent.region);
    let cmd = ProvisionCommand {
        source: ProvisionSource::Checkout {
            event_id: event.id.clone(),
            session_id: session.id.clone(),
            customer_id: intent.customer_id.clone(),
        },
    };
    let outcome = app
        .gateway
        .provision(
            agent,
            app.settings.policy.clone(),
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

    fn session(meta: &[(&str, &str)], customer: Value) -> CheckoutSession {
        CheckoutSession {
            id: "cs_1".into(),
            customer: Some(customer),
            metadata: Some(meta.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()),
            payment_status: Some("paid".into()),
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
