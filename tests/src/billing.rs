//! Stripe as tests drive it: signed webhook deliveries (signed with the shared secret, as the
//! sandbox's Stripe signs them), checkout paid on the sandbox's hosted page, seat changes, and the
//! billing state the customer's workflow holds.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use slipway_sandbox::stripe::CheckoutArgs;

use crate::{STRIPE_SECRET, TestApp, now};

impl TestApp {
    /// A signed `checkout.session.completed` event body (as Stripe sends it) and its id.
    pub fn checkout_event(&self, user_id: &str, agent_id: &str, region: &str) -> (String, String) {
        let event = slipway_sandbox::stripe::checkout_session_completed_event(&CheckoutArgs {
            user_id: user_id.to_owned(),
            agent_id: agent_id.to_owned(),
            region: region.to_owned(),
            customer_id: None,
            event_id: None,
        });
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        (serde_json::to_string(&event).expect("event serialises"), id)
    }

    /// POST a body to `/webhooks/stripe` with a fresh, valid signature.
    pub async fn post_stripe(&self, body: &str) -> anyhow::Result<reqwest::Response> {
        self.post_stripe_to(&self.starter_url, body).await
    }

    /// [`TestApp::post_stripe`] to the starter at `starter_url` (another starter of this app).
    pub async fn post_stripe_to(&self, starter_url: &str, body: &str) -> anyhow::Result<reqwest::Response> {
        let header = slipway_sandbox::stripe::signature_header(body, STRIPE_SECRET, now());
        self.post_stripe_signed_to(starter_url, body, &header).await
    }

    /// POST a body to `/webhooks/stripe` with the given `Stripe-Signature`.
    pub async fn post_stripe_signed(&self, body: &str, signature: &str) -> anyhow::Result<reqwest::Response> {
        self.post_stripe_signed_to(&self.starter_url, body, signature).await
    }

    async fn post_stripe_signed_to(
        &self,
        starter_url: &str,
        body: &str,
        signature: &str,
    ) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("{starter_url}/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.to_owned())
            .send()
            .await?)
    }

    /// Subscribe `user` the way a customer does: `POST /api/billing/checkout` (optionally for an
    /// agent), then pay on the (sandbox) hosted page. Waits until the subscription entitles.
    /// Returns the sandbox's answer (`customer_id`, `subscription_id`, `invoice_id`, ...).
    pub async fn subscribe(&self, user: &str, agent: Option<(&str, &str)>) -> anyhow::Result<Value> {
        let token = self.token(user, None);
        let body = agent.map(|(id, region)| json!({"agentId": id, "region": region}));
        let (status, created) =
            self.api(reqwest::Method::POST, "/api/billing/checkout", Some(&token), body).await?;
        anyhow::ensure!(status == 201, "checkout: {status} {created}");
        let id = created["id"].as_str().context("session id")?;
        let paid: Value = self
            .http
            .post(format!("{}/_sandbox/stripe/checkout/{id}/complete", self.sandbox.base_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.gateway().entitlement_for_user(user).await?.is_some_and(|e| e.entitled) {
                return Ok(paid);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "subscription never became active");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The customer changes subscription `sub` (one the sandbox holds) to `seats` seats at Stripe;
    /// Stripe sends `customer.subscription.updated` (the seat count is the item's `quantity`).
    /// Waits until the customer's workflow applied it.
    pub async fn set_seats(&self, customer: &str, sub: &str, seats: u32) -> anyhow::Result<()> {
        // At Stripe (the sandbox), which then sends `customer.subscription.updated`: later events
        // about the subscription carry the same quantity, as Stripe's would.
        self.sandbox_post(
            &format!("/_sandbox/stripe/subscriptions/{sub}/quantity"),
            json!({"quantity": seats}),
        )
        .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let billing = self.billing_state(customer).await?;
            if billing.subscriptions.get(sub).is_some_and(|s| s.seats == seats) {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "seats never applied: {billing:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The customer's billing state (query on its subscription workflow).
    pub async fn billing_state(
        &self,
        customer_id: &str,
    ) -> anyhow::Result<slipway_proto::billing::CustomerBilling> {
        let handle = self.client.get_workflow_handle::<slipway_workflows::SubscriptionWorkflow>(
            slipway_proto::billing::customer_workflow_id(customer_id),
        );
        // Bounded: a query waits for a workflow task, and a test must fail (or retry), not hang,
        // when none comes.
        let query = handle.query(
            slipway_workflows::SubscriptionWorkflow::billing_state,
            (),
            temporalio_client::WorkflowQueryOptions::default(),
        );
        Ok(tokio::time::timeout(Duration::from_secs(10), query)
            .await
            .map_err(|_| anyhow::anyhow!("billing_state query of {customer_id}: no answer within 10 s"))??)
    }
}
