//! Checkout Sessions for the caller's subscription, optionally buying one agent's seat
//! (metadata `userId`, `agentId`, `region`). Completing one is what provisions: Stripe's
//! `checkout.session.completed` webhook carries the metadata back.
//!
//! Checkout is only for agents that can take it: the caller's own **draft** agent (an unknown
//! agent id is created as the caller's draft first), with no other session open. The agent's
//! workflow holds it for the session (`hold_for_checkout`) before Stripe is called, so two
//! concurrent requests cannot both open one; the hold becomes the session's `expires_at` once
//! Stripe answers, and is lifted if Stripe fails (answered 502 `STRIPE_ERROR`).

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use slipway_proto::model::{AgentRecord, CheckoutHold, CommandOutcome, OpenCheckout};
use slipway_providers::stripe::{CreatedCheckout, NewCheckout, metadata};

use super::{AgentService, Kind, ServiceError};
use crate::{AppState, auth::Claims, temporal::GatewayError, validate};

/// How long a hold lasts if the session is never recorded (the starter stopped mid-request).
const HOLD_SECS: i64 = 600;

/// What the caller asks for (both optional).
#[derive(Debug, Default, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutRequest {
    /// The agent whose seat the session buys.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$", example = "ag-1f2e3d4c5b6a")]
    pub agent_id: Option<String>,
    /// Its region (for an agent created by this request).
    #[schema(value_type = Option<crate::routes::api::Region>)]
    pub region: Option<String>,
}

/// Opens Checkout Sessions.
pub struct CheckoutService {
    app: AppState,
}

impl CheckoutService {
    /// Over the app state.
    pub fn new(app: AppState) -> Self {
        Self { app }
    }

    /// Opens a session for `user`; `idempotency_key` (the client's) makes a retry return the
    /// same session.
    pub async fn open(
        &self,
        user: &Claims,
        req: CheckoutRequest,
        idempotency_key: Option<&str>,
    ) -> Result<CreatedCheckout, ServiceError> {
        let app = &self.app;
        let mut fields = HashMap::from([(metadata::USER_ID.to_owned(), user.sub.clone())]);
        if let Some(agent_id) = &req.agent_id {
            // A region is needed only to create the agent (an existing one keeps its own).
            let problems: Vec<String> =
                [validate::agent_id(agent_id), req.region.as_deref().map_or(Ok(()), validate::region)]
                    .into_iter()
                    .filter_map(Result::err)
                    .collect();
            if !problems.is_empty() {
                return Err(ServiceError::new(Kind::Invalid, "INVALID_INPUT", problems.join("; ")));
            }
        }
        let customer_id = app.gateway.entitlement_for_user(&user.sub).await?.map(|e| e.customer_id);
        // Last before Stripe: hold the agent, so a failure above leaves no hold behind.
        if let Some(agent_id) = &req.agent_id {
            let region = self.hold(&user.sub, agent_id, req.region.as_deref().unwrap_or_default()).await?;
            fields.insert(metadata::AGENT_ID.to_owned(), agent_id.clone());
            fields.insert(metadata::REGION.to_owned(), region);
        }
        let settings = &app.settings;
        let created = app
            .stripe
            .create_checkout(&NewCheckout {
                user_id: user.sub.clone(),
                customer_id,
                price_id: settings.stripe_price_id.clone(),
                metadata: fields,
                success_url: format!(
                    "{}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
                    settings.public_url
                ),
                cancel_url: format!("{}/billing/cancelled", settings.public_url),
                idempotency_key: idempotency_key.map(|k| format!("checkout-{}-{k}", user.sub)),
            })
            .await;
        let open = created
            .as_ref()
            .ok()
            .map(|c| OpenCheckout { session_id: Some(c.id.clone()), expires_at: c.expires_at });
        if let Some(agent_id) = &req.agent_id
            && let Err(e) = app.gateway.checkout_opened(agent_id, open).await
        {
            // A hold left in place still refuses a second session until it expires.
            tracing::warn!(error = %e, agent_id, "could not record the checkout outcome on the agent");
        }
        created.map_err(|e| {
            tracing::error!(error = %e, "Stripe refused the checkout session");
            ServiceError::new(Kind::Upstream, "STRIPE_ERROR", "Stripe could not create the checkout session")
        })
    }

    /// Makes sure `agent_id` is the caller's draft with no checkout open, and holds it for the
    /// session about to be created. Creates it as the caller's draft when it does not exist yet.
    /// Returns the agent's region (an existing agent keeps its own).
    async fn hold(&self, user: &str, agent_id: &str, region: &str) -> Result<String, ServiceError> {
        let app = &self.app;
        let not_draft = |m: String| ServiceError::new(Kind::Conflict, "AGENT_NOT_DRAFT", m);
        let region = match app.gateway.agent(agent_id).await {
            Ok(a) if a.user_id != user => return Err(ServiceError::agent_not_found(agent_id)),
            Ok(a) => a.region,
            Err(GatewayError::NotFound) if region.is_empty() => {
                return Err(ServiceError::invalid(
                    "a new agent needs its region",
                    vec![("region".to_owned(), format!("required to create agent {agent_id}"))],
                ));
            }
            Err(GatewayError::NotFound) => {
                AgentService::new(app.clone()).check_draft_cap(user).await?;
                let agent = AgentRecord::draft(agent_id, user, region);
                match app.gateway.create_agent(agent, app.settings.policy.clone(), app.lifecycle()).await {
                    // Created now, or by a concurrent request (its owner is checked by the hold).
                    Ok(()) => {}
                    Err(GatewayError::Closed) if app.gateway.agent(agent_id).await.is_ok() => {}
                    Err(GatewayError::Closed) => {
                        return Err(not_draft(format!(
                            "agent {agent_id} existed and was destroyed; choose a new id"
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
                region.to_owned()
            }
            Err(GatewayError::Closed) => return Err(not_draft(format!("agent {agent_id} was destroyed"))),
            Err(e) => return Err(e.into()),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let hold = CheckoutHold { user_id: user.to_owned(), now, hold_until: now + HOLD_SECS };
        match app.gateway.hold_for_checkout(agent_id, hold).await {
            Ok(CommandOutcome::Accepted { .. }) => Ok(region),
            Ok(CommandOutcome::Refused { code, .. }) if code == "AGENT_NOT_FOUND" => {
                Err(ServiceError::agent_not_found(agent_id))
            }
            Ok(CommandOutcome::Refused { code, reason }) => {
                Err(ServiceError::new(Kind::Conflict, &code, reason))
            }
            Err(GatewayError::NotFound | GatewayError::Closed) => {
                Err(ServiceError::agent_not_found(agent_id))
            }
            Err(e) => Err(e.into()),
        }
    }
}
