//! Applying what a verified webhook asks for ([`crate::ingress`] names it): billing events to
//! the customer's workflow, paid checkouts to the agent's, coding jobs to their issue's, each
//! durable in Temporal before the answer. The decisions that need state live here (what a late
//! event means), except a job's entitlement, which its own workflow decides so that GitHub's
//! delivery is answered after one durable call.
//!
//! Answers are JSON bodies for the sender (`{"received": true, "handled": …}`); Stripe and
//! GitHub only read the status, people read the rest.

use serde_json::{Value, json};
use slipway_proto::{
    billing::customer_workflow_id,
    jobs::JobRequest,
    model::{ProvisionOutcome, agent_workflow_id},
};

use super::{Kind, ServiceError};
use crate::{
    AppState,
    ingress::{
        github::{Intent, IssueTrigger},
        stripe::{Checkout, PaidCheckout, StripeIntent},
    },
    metrics::Metric,
    temporal::GatewayError,
};

/// Applies webhook intents.
pub struct WebhookService {
    app: AppState,
}

/// What a GitHub delivery led to: `accepted` (202, a workflow took it) or not (200).
#[derive(Debug)]
pub struct GitHubAnswer {
    /// A workflow accepted the delivery.
    pub accepted: bool,
    /// The body.
    pub body: Value,
}

impl WebhookService {
    /// Over the app state.
    pub fn new(app: AppState) -> Self {
        Self { app }
    }

    /// A Stripe event: the billing event first, then the checkout's provisioning.
    pub async fn stripe(&self, intent: StripeIntent) -> Result<Value, ServiceError> {
        let app = &self.app;
        let billed = intent.billing.is_some();
        if let Some(b) = intent.billing {
            tracing::Span::current().record("workflow_id", customer_workflow_id(&b.customer_id));
            let policy = app.settings.billing.clone();
            app.gateway
                .billing_event(&b.customer_id, b.user_id.as_deref(), b.event, policy)
                .await
                .map_err(ServiceError::from)?;
            app.metrics.incr(Metric::WorkflowAccepted);
            tracing::info!(event_id = %intent.event_id, event_type = %intent.kind, customer = %b.customer_id, "billing event accepted");
        }
        match intent.checkout {
            Checkout::Provision(paid) => self.provision(*paid).await,
            Checkout::AwaitingPayment => {
                tracing::info!(event_id = %intent.event_id, "checkout completed unpaid; waiting for async payment");
                Ok(json!({"received": true, "handled": false, "reason": "awaiting payment"}))
            }
            Checkout::WithoutAgent => {
                tracing::info!(event_id = %intent.event_id, "checkout without agentId: nothing to provision");
                Ok(json!({"received": true, "handled": false}))
            }
            Checkout::None => {
                if !billed {
                    tracing::info!(event_id = %intent.event_id, event_type = %intent.kind, "stripe event type not handled; acknowledged");
                }
                Ok(json!({"received": true, "handled": billed}))
            }
        }
    }

    /// A paid checkout: ask the agent's workflow to provision (update-with-start, keyed by the
    /// event id). An owner's provisioning in flight answers 409 so Stripe retries later.
    async fn provision(&self, paid: PaidCheckout) -> Result<Value, ServiceError> {
        let app = &self.app;
        let agent_id = paid.agent.agent_id.clone();
        tracing::Span::current().record("workflow_id", agent_workflow_id(&agent_id));
        let mut outcome = self.provision_update(&paid, paid.request_id.clone()).await;
        if let Ok(ProvisionOutcome::Refused { code, .. }) = &outcome
            && code == slipway_workflows::agent::codes::PROVISIONING_IN_PROGRESS
        {
            outcome = self.past_a_stale_refusal(&paid, outcome).await;
        }
        match outcome {
            Ok(ProvisionOutcome::Refused { code, reason })
                if code == slipway_workflows::agent::codes::PROVISIONING_IN_PROGRESS =>
            {
                app.metrics.incr(Metric::ProvisioningRefused);
                Err(ServiceError::new(Kind::Conflict, "PROVISIONING_IN_PROGRESS", reason))
            }
            Ok(outcome) => {
                tracing::info!(agent_id, ?outcome, "checkout handled");
                app.metrics.incr(Metric::WorkflowAccepted);
                Ok(json!({"received": true, "handled": true, "agent_id": agent_id, "result": outcome}))
            }
            Err(GatewayError::Closed) => {
                tracing::info!(agent_id, "agent workflow closed; late event acknowledged");
                Ok(json!({"received": true, "handled": false, "reason": "agent no longer exists"}))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The agent's `provision` update, with `update_id` (update-with-start).
    async fn provision_update(
        &self,
        paid: &PaidCheckout,
        update_id: String,
    ) -> Result<ProvisionOutcome, GatewayError> {
        let app = &self.app;
        app.gateway
            .provision(
                paid.agent.clone(),
                app.settings.policy.clone(),
                app.lifecycle(),
                paid.customer_id.as_deref(),
                paid.command.clone(),
                update_id,
            )
            .await
    }

    /// Temporal answers a completed update again from the workflow's history, so a delivery
    /// refused while the user's other provisioning ran is refused the same way for as long as
    /// the agent's workflow runs, however often Stripe (or the catch-up) sends it again. When
    /// that provisioning has ended since, the refusal is stale: ask again, once, under an update
    /// id naming the saga run that caused it (a redelivery asks the same question, and is
    /// answered from history again: one effect). A saga that provisioned this very agent means
    /// the event has had its effect.
    async fn past_a_stale_refusal(
        &self,
        paid: &PaidCheckout,
        refused: Result<ProvisionOutcome, GatewayError>,
    ) -> Result<ProvisionOutcome, GatewayError> {
        let app = &self.app;
        let latest = match app.gateway.latest_saga(&paid.agent.user_id).await {
            Ok(Some(latest)) if !latest.running => latest,
            Ok(_) => return refused,
            Err(e) => return Err(e),
        };
        if latest.agent_id.as_deref() == Some(paid.agent.agent_id.as_str()) {
            return Ok(ProvisionOutcome::AlreadyProvisioning);
        }
        tracing::info!(agent_id = %paid.agent.agent_id, after = %latest.run_id, "refusal outlived the provisioning that caused it; asking again");
        self.provision_update(paid, format!("{}~{}", paid.request_id, latest.run_id)).await
    }

    /// A GitHub delivery `delivery` (its id dedupes signals).
    pub async fn github(&self, delivery: &str, intent: Intent) -> Result<GitHubAnswer, ServiceError> {
        let app = &self.app;
        let answer = |accepted, body| Ok(GitHubAnswer { accepted, body });
        let request_id = format!("gh-{delivery}");
        let signalled = match intent {
            Intent::Pong => return answer(false, json!({"pong": true})),
            Intent::Ignore(why) => {
                tracing::info!(%delivery, why, "github event ignored");
                return answer(false, json!({"received": true, "handled": false}));
            }
            Intent::StartJob(trigger) => {
                let req = self.job_request(trigger, delivery);
                let job = app.gateway.start_job(req, delivery).await.map_err(ServiceError::from)?;
                tracing::info!(%delivery, %job, "github job accepted");
                Ok(job)
            }
            Intent::Command { job, command, restart } => {
                match (app.gateway.job_command(&job, command, request_id).await, restart) {
                    // A retry of a job that has ended starts it again, as a new run.
                    (Err(GatewayError::NotFound), Some(trigger)) => {
                        let req = self.job_request(trigger, delivery);
                        app.gateway.restart_job(req, delivery).await
                    }
                    (other, _) => other.map(|()| job),
                }
            }
            Intent::PrClosed { job, closed } => {
                app.gateway.job_pr_closed(&job, closed, request_id).await.map(|()| job)
            }
        };
        match signalled {
            Ok(job) => {
                app.metrics.incr(Metric::WorkflowAccepted);
                answer(true, json!({"job": job}))
            }
            Err(GatewayError::NotFound | GatewayError::Closed) => {
                answer(false, json!({"handled": false, "reason": "no job for this issue"}))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The job an issue asks for. Its entitlement (the account's link, that customer's
    /// standing) is decided by the job itself, so answering GitHub takes one durable call that
    /// needs no worker.
    fn job_request(&self, t: IssueTrigger, delivery: &str) -> JobRequest {
        JobRequest {
            repo: t.repo,
            installation_id: t.installation_id,
            issue_number: t.number,
            title: t.title,
            body: t.body,
            requested_by: t.sender,
            customer_id: None,
            user_id: None,
            refusal: None,
            policy: self.app.settings.job_policy.clone(),
            account: Some(t.account),
            max_running: self.app.settings.max_jobs_per_customer,
            run: 1,
            trigger: Some(delivery.to_owned()),
            resume: None,
        }
    }
}
