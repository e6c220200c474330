//! Applying what a verified webhook asks for ([`crate::ingress`] names it): billing events to
//! the customer's workflow, paid checkouts with their billing event (the customer's workflow
//! hands them to the agent's), coding jobs to their issue's, each
//! durable in Temporal before the answer. The decisions that need state live here (what a late
//! event means), except a job's entitlement, which its own workflow decides so that GitHub's
//! delivery is answered after one durable call.
//!
//! Answers are JSON bodies for the sender (`{"received": true, "handled": …}`); Stripe and
//! GitHub only read the status, people read the rest.

use serde_json::{Value, json};
use slipway_proto::{
    billing::{CheckoutHandoff, customer_workflow_id},
    jobs::JobRequest,
    model::{AgentWorkflowInput, agent_workflow_id},
};

use super::ServiceError;
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

    /// A Stripe event: the billing event first, then the checkout's provisioning. A paid
    /// checkout with a billing event rides on it: the customer's workflow hands it to the
    /// agent's once applied (`BillingEvent::handoff`), so the answer waits for one durable call.
    pub async fn stripe(&self, mut intent: StripeIntent) -> Result<Value, ServiceError> {
        let app = &self.app;
        let billed = intent.billing.is_some();
        let mut handed_over = None;
        if let Some(b) = intent.billing.as_mut()
            && app.gateway.protocol() >= 1
        {
            match std::mem::replace(&mut intent.checkout, Checkout::None) {
                Checkout::Provision(paid) => {
                    handed_over = Some(paid.agent.agent_id.clone());
                    b.event.handoff = Some(Box::new(self.handoff(*paid)));
                }
                other => intent.checkout = other,
            }
        }
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
        if let Some(agent_id) = handed_over {
            tracing::info!(event_id = %intent.event_id, agent_id, "checkout handed to the customer's workflow for its agent");
            return Ok(json!({"received": true, "handled": true, "agent_id": agent_id}));
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

    /// What the customer's workflow needs to hand `paid` to its agent (starting it if needed).
    fn handoff(&self, paid: PaidCheckout) -> CheckoutHandoff {
        let app = &self.app;
        let agent = AgentWorkflowInput::new(
            paid.agent,
            app.settings.policy.clone(),
            app.lifecycle(),
            app.gateway.protocol(),
        );
        CheckoutHandoff { agent, customer_id: paid.customer_id, command: paid.command }
    }

    /// A paid checkout without a billing event (or from a starter acting as a release before
    /// protocol 1): handed to the agent's workflow by signal-with-start, so Stripe's answer
    /// waits only for Temporal to persist it, never for a worker, a seat claim or a saga's
    /// start (a launch-day burst of checkouts gets its 2xx at once). The agent drops a
    /// redelivery by event id, provisions in turn (waiting while the user's other provisioning
    /// is in flight) and records a refusal in its record (`checkout_refusal`, stable codes).
    async fn provision(&self, paid: PaidCheckout) -> Result<Value, ServiceError> {
        let app = &self.app;
        let agent_id = paid.agent.agent_id.clone();
        tracing::Span::current().record("workflow_id", agent_workflow_id(&agent_id));
        let accepted = app
            .gateway
            .checkout_paid(
                paid.agent.clone(),
                app.settings.policy.clone(),
                app.lifecycle(),
                paid.customer_id.as_deref(),
                paid.command.clone(),
            )
            .await;
        match accepted {
            Ok(()) => {
                tracing::info!(agent_id, "checkout handed to the agent");
                app.metrics.incr(Metric::WorkflowAccepted);
                Ok(json!({"received": true, "handled": true, "agent_id": agent_id}))
            }
            Err(GatewayError::Closed) => {
                tracing::info!(agent_id, "agent workflow closed; late event acknowledged");
                Ok(json!({"received": true, "handled": false, "reason": "agent no longer exists"}))
            }
            Err(e) => Err(e.into()),
        }
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
