//! `Subscription`: one long-lived workflow per Stripe customer (`customer-<cus_id>`).
//!
//! It receives every billing-relevant Stripe event as the `stripe_event` signal (the starter
//! uses signal-with-start, so the first event creates it), applies each exactly once with the
//! order-independent rules of [`crate::billing`], and turns the result into commands to the
//! customer's agents: suspend on a failed payment, resume when paid, destroy when the grace
//! period ends or the subscription is deleted. The `entitlement` query is what gates
//! provisioning through the API.

use std::time::Duration;

use slipway_activities::BillingActivities;
use slipway_proto::{
    billing::{BillingEvent, BillingPolicy, BillingState, Entitlement, SubscriptionInput},
    model::{AgentCommand, CommandRequest, agent_workflow_id},
};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ContinueAsNewOptions, SignalWorkflowOptions, SyncWorkflowContext, TimerOptions,
    WorkflowContext, WorkflowContextView, WorkflowResult, workflows::select,
};

use crate::{
    AgentWorkflow,
    billing::{self, Effect},
    search_attributes,
};

/// The subscription workflow.
#[workflow]
pub struct SubscriptionWorkflow {
    customer_id: String,
    state: BillingState,
    policy: BillingPolicy,
    inbox: Vec<BillingEvent>,
}

fn unix(ctx: &WorkflowContext<SubscriptionWorkflow>) -> i64 {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

#[workflow_methods]
impl SubscriptionWorkflow {
    /// Restores the customer from its input (first start or continue-as-new).
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: SubscriptionInput) -> Self {
        Self { customer_id: input.customer_id, state: input.state, policy: input.policy, inbox: input.inbox }
    }

    /// Applies events one at a time; watches the grace period; never ends on its own.
    #[run(name = "Subscription")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        Self::publish(ctx);
        loop {
            let limit = ctx.state(|s| s.policy.history_limit);
            if (ctx.continue_as_new_suggested() || ctx.history_length() >= limit)
                && ctx.all_handlers_finished()
                && ctx.state(|s| s.inbox.is_empty())
            {
                let now = unix(ctx);
                let input = ctx.state_mut(|s| {
                    billing::prune(&mut s.state, now, s.policy.event_retention_secs);
                    SubscriptionInput {
                        customer_id: s.customer_id.clone(),
                        state: s.state.clone(),
                        policy: s.policy.clone(),
                        inbox: Vec::new(),
                    }
                });
                ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
            }

            let deadline =
                ctx.state(|s| s.state.delinquency.as_ref().filter(|d| !d.expired).map(|d| d.deadline));
            let event_ready = match deadline {
                Some(deadline) => {
                    let wait = Duration::from_secs(deadline.saturating_sub(unix(ctx)).max(1) as u64);
                    select! {
                        _ = ctx.wait_condition(|s: &Self| !s.inbox.is_empty()) => true,
                        _ = ctx.timer(TimerOptions::builder(wait).summary("payment grace period".to_owned()).build()) => false,
                    }
                }
                None => {
                    ctx.wait_condition(|s: &Self| !s.inbox.is_empty()).await?;
                    true
                }
            };
            let effects = if event_ready {
                let Some(event) = ctx.state_mut(|s| (!s.inbox.is_empty()).then(|| s.inbox.remove(0))) else {
                    continue;
                };
                let now = unix(ctx);
                let effects =
                    ctx.state_mut(|s| billing::apply(&mut s.state, &event, now, s.policy.grace_period_secs));
                Self::resolve(ctx, effects, event.created).await
            } else {
                ctx.state_mut(|s| billing::expire(&mut s.state))
            };
            Self::enforce(ctx, effects).await;
            Self::publish(ctx);
        }
    }

    /// A verified Stripe event for this customer. Duplicates are dropped here or when applied.
    #[signal]
    pub fn stripe_event(&mut self, _ctx: &mut SyncWorkflowContext<Self>, event: BillingEvent) {
        let known = self.state.applied.contains_key(&event.event_id)
            || self.inbox.iter().any(|e| e.event_id == event.event_id);
        if !known {
            self.inbox.push(event);
        }
    }

    /// An agent paid for by this customer (sent by the agent when its provisioning starts).
    #[signal]
    pub fn attach_agent(&mut self, _ctx: &mut SyncWorkflowContext<Self>, agent_id: String) {
        self.state.agents.insert(agent_id);
    }

    /// May this customer provision?
    #[query]
    pub fn entitlement(&self, _ctx: &WorkflowContextView) -> Entitlement {
        Entitlement {
            customer_id: self.customer_id.clone(),
            entitled: self.state.entitled(),
            status: self.state.subscription.as_ref().map(|s| s.status.clone()),
            delinquent: self.state.delinquency.as_ref().is_some_and(|d| !d.expired),
        }
    }

    /// Everything known about the customer.
    #[query]
    pub fn billing_state(&self, _ctx: &WorkflowContextView) -> BillingState {
        self.state.clone()
    }
}

impl SubscriptionWorkflow {
    /// Runs re-fetches (I/O, so activities) and folds their answers back in.
    async fn resolve(ctx: &mut WorkflowContext<Self>, effects: Vec<Effect>, created: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        for effect in effects {
            let Effect::RefetchSubscription(id) = effect else {
                out.push(effect);
                continue;
            };
            let opts = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
                .retry_policy(
                    RetryPolicy::builder()
                        .initial_interval(Duration::from_secs(1))
                        .maximum_interval(Duration::from_secs(60))
                        .maximum_attempts(10)
                        .build(),
                )
                .summary("re-fetch subscription from Stripe".to_owned())
                .build();
            // If Stripe cannot answer, keep the snapshot we have: the next event will settle it.
            if let Ok(status) =
                ctx.execute_activity(BillingActivities::fetch_subscription_status, id.clone(), opts).await
            {
                out.extend(ctx.state_mut(|s| billing::apply_refetched(&mut s.state, &id, &status, created)));
            }
        }
        out
    }

    /// Sends the commands the effects call for to every agent of the customer.
    async fn enforce(ctx: &mut WorkflowContext<Self>, effects: Vec<Effect>) {
        let (customer, agents) = ctx.state(|s| (s.customer_id.clone(), s.state.agents.clone()));
        for effect in effects {
            let (command, reason) = match effect {
                Effect::SuspendAgents => (AgentCommand::Suspend, "a payment failed".to_owned()),
                Effect::ResumeAgents => (AgentCommand::Resume, "the outstanding invoice was paid".to_owned()),
                Effect::DestroyAgents(reason) => (AgentCommand::Destroy, reason),
                Effect::RefetchSubscription(_) => continue,
            };
            for agent in &agents {
                let request =
                    CommandRequest { command, actor: format!("billing:{customer}"), reason: reason.clone() };
                // An agent that no longer runs (destroyed) cannot be signalled; nothing to do then.
                let _ = ctx
                    .external_workflow(agent_workflow_id(agent), None)
                    .signal(AgentWorkflow::billing, request, SignalWorkflowOptions::default())
                    .await;
            }
        }
    }

    fn publish(ctx: &WorkflowContext<Self>) {
        let (customer, user, status) = ctx.state(|s| {
            let status = match (&s.state.delinquency, &s.state.subscription) {
                (Some(d), _) if !d.expired => "grace_period".to_owned(),
                (_, Some(sub)) => sub.status.clone(),
                (_, None) => "none".to_owned(),
            };
            (s.customer_id.clone(), s.state.user_id.clone(), status)
        });
        let mut attrs = vec![
            search_attributes::CUSTOMER_ID.value_set(customer),
            search_attributes::STATUS.value_set(status.clone()),
        ];
        if let Some(user) = user {
            attrs.push(search_attributes::USER_ID.value_set(user));
        }
        ctx.upsert_search_attributes(attrs);
        let details = ctx.state(|s| crate::details::subscription(&s.customer_id, &status, &s.state));
        ctx.set_current_details(details);
    }
}
