//! `Subscription`: one long-lived workflow per Stripe customer (`customer-<cus_id>`).
//!
//! It receives every billing-relevant Stripe event as the `stripe_event` signal (the starter
//! uses signal-with-start, so the first event creates it), applies each exactly once per
//! subscription with the order-independent rules of [`crate::billing`], and turns changes of a
//! subscription's standing into commands to *that subscription's* agents: suspend on a failed
//! payment, resume when paid, destroy when the grace period ends or the subscription is deleted.
//! It is also the single place that hands out seats: an agent sends `claim_seat` before it
//! provisions and gets a `seat` signal back (granted, parked until paid, or denied); a destroyed
//! agent sends `release_seat`. The `entitlement` query is the API's quick pre-check.
//!
//! # Versions
//! Runs recorded before per-subscription billing (no `billing-per-subscription` marker in their
//! history) keep the old single-snapshot rules ([`crate::billing::legacy`]) so they replay
//! unchanged. Such a run continues as new into the new rules, with its state migrated by
//! [`CustomerBilling::from_legacy`], at its next continue-as-new, or at once when an agent claims
//! a seat from it or an operator signals `upgrade`.

use std::time::Duration;

use slipway_activities::BillingActivities;
use slipway_proto::{
    billing::{
        BillingEvent, BillingPolicy, BillingState, CustomerBilling, Entitlement, SeatAnswer, SeatClaim,
        SeatDecision, Standing, SubscriptionInput,
    },
    model::{AgentCommand, CommandRequest, agent_workflow_id},
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ContinueAsNewOptions, SignalWorkflowOptions, SyncWorkflowContext, TimerOptions,
    WorkflowContext, WorkflowContextView, WorkflowResult, workflows::select,
};

use crate::{
    AgentWorkflow,
    billing::{self, Effect, legacy},
    search_attributes, unix,
};

/// Marker of runs that track billing per subscription (see the module docs).
pub const PER_SUBSCRIPTION_PATCH: &str = "billing-per-subscription";

/// The subscription workflow.
#[workflow]
pub struct SubscriptionWorkflow {
    customer_id: String,
    /// State of a run on the legacy rules (untouched by the per-subscription rules).
    state: BillingState,
    /// Per-subscription state.
    billing: CustomerBilling,
    policy: BillingPolicy,
    inbox: Vec<BillingEvent>,
    /// Seat claims waiting to be answered (after the events received before them).
    claims: Vec<SeatClaim>,
    /// Agents destroyed (seats to free), or announced by agents recorded before seats existed.
    releases: Vec<String>,
    attaches: Vec<String>,
    /// An operator asked a legacy run to move to the per-subscription rules now.
    upgrade: bool,
    /// This legacy run comes from an attempt to move (see [`SubscriptionInput::upgrade_attempted`]).
    upgrade_attempted: bool,
    /// This run applies the per-subscription rules.
    per_subscription: bool,
}

#[workflow_methods]
impl SubscriptionWorkflow {
    /// Restores the customer from its input (first start or continue-as-new).
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: SubscriptionInput) -> Self {
        let billing = input.billing.unwrap_or_else(|| CustomerBilling::from_legacy(&input.state));
        Self {
            customer_id: input.customer_id,
            state: input.state,
            billing,
            policy: input.policy,
            inbox: input.inbox,
            claims: input.claims,
            releases: Vec::new(),
            attaches: Vec::new(),
            upgrade: false,
            upgrade_attempted: input.upgrade_attempted,
            per_subscription: false,
        }
    }

    /// Applies events and seat requests one at a time; watches grace periods; never ends on its
    /// own.
    #[run(name = "Subscription")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        if ctx.patched(PER_SUBSCRIPTION_PATCH) {
            ctx.state_mut(|s| s.per_subscription = true);
            Self::run_per_subscription(ctx).await
        } else {
            Self::run_legacy(ctx).await
        }
    }

    /// A verified Stripe event for this customer. Duplicates are dropped here or when applied.
    #[signal]
    pub fn stripe_event(&mut self, _ctx: &mut SyncWorkflowContext<Self>, event: BillingEvent) {
        let known = self.state.applied.contains_key(&event.event_id)
            || self.billing.applied.contains_key(&event.event_id)
            || self.inbox.iter().any(|e| e.event_id == event.event_id);
        if !known {
            self.inbox.push(event);
        }
    }

    /// An agent paid for by this customer, announced by an `Agent` run recorded before seats
    /// existed (newer agents claim a seat instead).
    #[signal]
    pub fn attach_agent(&mut self, _ctx: &mut SyncWorkflowContext<Self>, agent_id: String) {
        // Both views: the signal may arrive before the run has decided which rules it follows.
        self.state.agents.insert(agent_id.clone());
        self.attaches.push(agent_id);
    }

    /// An agent asks for a seat before it provisions; answered with the agent's `seat` signal.
    #[signal]
    pub fn claim_seat(&mut self, _ctx: &mut SyncWorkflowContext<Self>, claim: SeatClaim) {
        self.claims.push(claim);
    }

    /// An agent was destroyed: its seat is free again.
    #[signal]
    pub fn release_seat(&mut self, _ctx: &mut SyncWorkflowContext<Self>, agent_id: String) {
        self.releases.push(agent_id);
    }

    /// Operator: move a run still on the legacy rules to the per-subscription rules now.
    #[signal]
    pub fn upgrade(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.upgrade = true;
    }

    /// May this customer provision?
    #[query]
    pub fn entitlement(&self, _ctx: &WorkflowContextView) -> Entitlement {
        if !self.per_subscription {
            return Entitlement {
                customer_id: self.customer_id.clone(),
                entitled: self.state.entitled(),
                status: self.state.subscription.as_ref().map(|s| s.status.clone()),
                delinquent: self.state.delinquency.as_ref().is_some_and(|d| !d.expired),
            };
        }
        let b = &self.billing;
        Entitlement {
            customer_id: self.customer_id.clone(),
            entitled: b.entitled(),
            status: Some(customer_status(b)),
            delinquent: b
                .subscriptions
                .values()
                .any(|s| !s.failed_invoices.is_empty() && s.standing() != Standing::Ended),
        }
    }

    /// Everything known about the customer, per subscription.
    #[query]
    pub fn billing_state(&self, _ctx: &WorkflowContextView) -> CustomerBilling {
        if self.per_subscription { self.billing.clone() } else { CustomerBilling::from_legacy(&self.state) }
    }
}

/// One word for the customer: the best standing over its subscriptions.
fn customer_status(b: &CustomerBilling) -> String {
    let best = b.subscriptions.values().min_by_key(|s| s.standing());
    match best {
        None => "none".to_owned(),
        Some(s) => match s.standing() {
            Standing::Good => s.status.clone(),
            Standing::Suspended if !s.failed_invoices.is_empty() => "grace_period".to_owned(),
            Standing::Suspended => s.status.clone(),
            Standing::Lapsed => "lapsed".to_owned(),
            Standing::Ended => "canceled".to_owned(),
        },
    }
}

/// What the per-subscription loop does next.
enum Work {
    Event(BillingEvent),
    Release(String),
    Attach(String),
    Claim(SeatClaim),
}

impl SubscriptionWorkflow {
    fn has_work(&self) -> bool {
        !self.inbox.is_empty()
            || !self.releases.is_empty()
            || !self.attaches.is_empty()
            || !self.claims.is_empty()
    }

    /// Events first (a checkout's event always precedes its agent's claim), then seats.
    fn next_work(&mut self) -> Option<Work> {
        if !self.inbox.is_empty() {
            Some(Work::Event(self.inbox.remove(0)))
        } else if !self.releases.is_empty() {
            Some(Work::Release(self.releases.remove(0)))
        } else if !self.attaches.is_empty() {
            Some(Work::Attach(self.attaches.remove(0)))
        } else if !self.claims.is_empty() {
            Some(Work::Claim(self.claims.remove(0)))
        } else {
            None
        }
    }

    async fn run_per_subscription(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        Self::publish(ctx);
        loop {
            let limit = ctx.state(|s| s.policy.history_limit);
            if (ctx.continue_as_new_suggested() || ctx.history_length() >= limit)
                && ctx.all_handlers_finished()
                && ctx.state(|s| !s.has_work())
            {
                let now = unix(ctx);
                let input = ctx.state_mut(|s| {
                    billing::prune(&mut s.billing, now, s.policy.event_retention_secs);
                    SubscriptionInput {
                        customer_id: s.customer_id.clone(),
                        state: BillingState { user_id: s.billing.user_id.clone(), ..BillingState::default() },
                        billing: Some(s.billing.clone()),
                        policy: s.policy.clone(),
                        inbox: Vec::new(),
                        claims: Vec::new(),
                        upgrade_attempted: false,
                    }
                });
                ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
            }

            let deadline = ctx.state(|s| billing::next_deadline(&s.billing));
            let work_ready = match deadline {
                Some(deadline) => {
                    let wait = Duration::from_secs(deadline.saturating_sub(unix(ctx)).max(1) as u64);
                    select! {
                        _ = ctx.wait_condition(|s: &Self| s.has_work()) => true,
                        _ = ctx.timer(TimerOptions::builder(wait).summary("payment grace period".to_owned()).build()) => false,
                    }
                }
                None => {
                    ctx.wait_condition(|s: &Self| s.has_work()).await?;
                    true
                }
            };
            let now = unix(ctx);
            let effects = if work_ready {
                let Some(work) = ctx.state_mut(Self::next_work) else { continue };
                match work {
                    Work::Event(event) => {
                        let effects = ctx.state_mut(|s| {
                            billing::apply(&mut s.billing, &event, now, s.policy.grace_period_secs)
                        });
                        Self::refetch(ctx, effects, event.created).await
                    }
                    Work::Release(agent) => ctx.state_mut(|s| billing::release(&mut s.billing, &agent)),
                    Work::Attach(agent) => {
                        ctx.state_mut(|s| billing::attach_unclaimed(&mut s.billing, &agent))
                    }
                    Work::Claim(claim) => ctx.state_mut(|s| billing::claim(&mut s.billing, &claim)),
                }
            } else {
                ctx.state_mut(|s| billing::expire(&mut s.billing, now))
            };
            Self::enforce(ctx, effects).await;
            Self::publish(ctx);
        }
    }

    /// Runs re-fetches (I/O, so activities) and folds their answers back in.
    async fn refetch(ctx: &mut WorkflowContext<Self>, effects: Vec<Effect>, created: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        for effect in effects {
            let Effect::Refetch(id) = effect else {
                out.push(effect);
                continue;
            };
            // If Stripe cannot answer, keep the state we have: the next event will settle it.
            if let Ok(status) = ctx
                .execute_activity(BillingActivities::fetch_subscription_status, id.clone(), refetch_options())
                .await
            {
                out.extend(
                    ctx.state_mut(|s| billing::apply_refetched(&mut s.billing, &id, &status, created)),
                );
            }
        }
        out
    }

    /// Sends the commands the effects call for to the agents they name.
    async fn enforce(ctx: &mut WorkflowContext<Self>, effects: Vec<Effect>) {
        let customer = ctx.state(|s| s.customer_id.clone());
        for effect in effects {
            let (command, agents, reason) = match effect {
                Effect::Suspend(agents) => (AgentCommand::Suspend, agents, "a payment failed".to_owned()),
                Effect::Resume(agents) => {
                    (AgentCommand::Resume, agents, "the outstanding invoices were paid".to_owned())
                }
                Effect::Destroy(agents, reason) => (AgentCommand::Destroy, agents, reason),
                Effect::Answer(agent, mut answer) => {
                    answer.customer_id.clone_from(&customer);
                    // An agent that no longer runs cannot be answered; its claim is moot then.
                    let _ = ctx
                        .external_workflow(agent_workflow_id(&agent), None)
                        .signal(AgentWorkflow::seat, answer, SignalWorkflowOptions::default())
                        .await;
                    continue;
                }
                Effect::Refetch(_) => continue,
            };
            Self::command_agents(ctx, command, &agents, &reason).await;
        }
    }

    /// Sends one billing command to each of `agents`, in order (both rule sets use it).
    async fn command_agents(
        ctx: &mut WorkflowContext<Self>,
        command: AgentCommand,
        agents: &[String],
        reason: &str,
    ) {
        let customer = ctx.state(|s| s.customer_id.clone());
        for agent in agents {
            let request =
                CommandRequest { command, actor: format!("billing:{customer}"), reason: reason.to_owned() };
            // An agent that no longer runs (destroyed) cannot be signalled; nothing to do then.
            let _ = ctx
                .external_workflow(agent_workflow_id(agent), None)
                .signal(AgentWorkflow::billing, request, SignalWorkflowOptions::default())
                .await;
        }
    }

    fn publish(ctx: &WorkflowContext<Self>) {
        let (user, status) = ctx.state(|s| {
            (s.billing.user_id.clone().or_else(|| s.state.user_id.clone()), customer_status(&s.billing))
        });
        let details = ctx.state(|s| crate::details::customer(&s.customer_id, &status, &s.billing));
        Self::publish_status(ctx, user, status, details);
    }

    /// Mirrors the customer into search attributes and the Web UI's current details (both rule
    /// sets use it).
    fn publish_status(ctx: &WorkflowContext<Self>, user: Option<String>, status: String, details: String) {
        let customer = ctx.state(|s| s.customer_id.clone());
        let mut attrs = vec![
            search_attributes::CUSTOMER_ID.value_set(customer),
            search_attributes::STATUS.value_set(status),
        ];
        if let Some(user) = user {
            attrs.push(search_attributes::USER_ID.value_set(user));
        }
        ctx.upsert_search_attributes(attrs);
        ctx.set_current_details(details);
    }
}

fn refetch_options() -> ActivityOptions {
    crate::options::retrying("re-fetch subscription from Stripe", Duration::from_secs(30), None, 10)
}

/// Runs recorded before per-subscription billing: the previous release's loop, unchanged in
/// the commands it issues, plus one way out (continue as new into the new rules) that only
/// signals those histories never contain can take.
impl SubscriptionWorkflow {
    async fn run_legacy(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        Self::publish_legacy(ctx);
        loop {
            let limit = ctx.state(|s| s.policy.history_limit);
            let migrate = ctx.state(|s| s.upgrade || (!s.claims.is_empty() && !s.upgrade_attempted));
            if (migrate || ctx.continue_as_new_suggested() || ctx.history_length() >= limit)
                && ctx.all_handlers_finished()
                && ctx.state(|s| s.inbox.is_empty() || migrate)
            {
                let now = unix(ctx);
                let input = ctx.state_mut(|s| {
                    legacy::prune(&mut s.state, now, s.policy.event_retention_secs);
                    SubscriptionInput {
                        customer_id: s.customer_id.clone(),
                        state: s.state.clone(),
                        billing: None,
                        policy: s.policy.clone(),
                        inbox: if migrate { std::mem::take(&mut s.inbox) } else { Vec::new() },
                        claims: std::mem::take(&mut s.claims),
                        upgrade_attempted: migrate || s.upgrade_attempted,
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
                        _ = ctx.wait_condition(|s: &Self| !s.inbox.is_empty() || s.upgrade || !s.claims.is_empty()) => true,
                        _ = ctx.timer(TimerOptions::builder(wait).summary("payment grace period".to_owned()).build()) => false,
                    }
                }
                None => {
                    ctx.wait_condition(|s: &Self| !s.inbox.is_empty() || s.upgrade || !s.claims.is_empty())
                        .await?;
                    true
                }
            };
            let effects = if event_ready {
                let Some(event) = ctx.state_mut(|s| (!s.inbox.is_empty()).then(|| s.inbox.remove(0))) else {
                    Self::answer_claims_legacy(ctx).await;
                    continue;
                };
                let now = unix(ctx);
                let effects =
                    ctx.state_mut(|s| legacy::apply(&mut s.state, &event, now, s.policy.grace_period_secs));
                Self::resolve_legacy(ctx, effects, event.created).await
            } else {
                ctx.state_mut(|s| legacy::expire(&mut s.state))
            };
            Self::enforce_legacy(ctx, effects).await;
            Self::publish_legacy(ctx);
        }
    }

    /// Seat claims a legacy run answers itself (only after a move to the new rules was held
    /// back): granted while the customer is entitled and not delinquent, with the agent attached.
    async fn answer_claims_legacy(ctx: &mut WorkflowContext<Self>) {
        if !ctx.state(|s| s.upgrade_attempted) {
            return;
        }
        let customer = ctx.state(|s| s.customer_id.clone());
        while let Some(claim) = ctx.state_mut(|s| (!s.claims.is_empty()).then(|| s.claims.remove(0))) {
            let decision = ctx.state_mut(|s| {
                let paid_up = s.state.entitled() && s.state.delinquency.is_none();
                match (&s.state.subscription, paid_up) {
                    (Some(sub), true) => {
                        s.state.agents.insert(claim.agent_id.clone());
                        SeatDecision::Granted { subscription_id: sub.id.clone() }
                    }
                    _ => SeatDecision::Denied {
                        code: billing::codes::NO_ACTIVE_SUBSCRIPTION.to_owned(),
                        reason: "the customer's subscription is not active".to_owned(),
                    },
                }
            });
            let answer = SeatAnswer { request: claim.request, customer_id: customer.clone(), decision };
            let _ = ctx
                .external_workflow(agent_workflow_id(&claim.agent_id), None)
                .signal(AgentWorkflow::seat, answer, SignalWorkflowOptions::default())
                .await;
        }
    }

    async fn resolve_legacy(
        ctx: &mut WorkflowContext<Self>,
        effects: Vec<legacy::Effect>,
        created: i64,
    ) -> Vec<legacy::Effect> {
        let mut out = Vec::new();
        for effect in effects {
            let legacy::Effect::RefetchSubscription(id) = effect else {
                out.push(effect);
                continue;
            };
            if let Ok(status) = ctx
                .execute_activity(BillingActivities::fetch_subscription_status, id.clone(), refetch_options())
                .await
            {
                out.extend(ctx.state_mut(|s| legacy::apply_refetched(&mut s.state, &id, &status, created)));
            }
        }
        out
    }

    async fn enforce_legacy(ctx: &mut WorkflowContext<Self>, effects: Vec<legacy::Effect>) {
        let agents: Vec<String> = ctx.state(|s| s.state.agents.iter().cloned().collect());
        for effect in effects {
            let (command, reason) = match effect {
                legacy::Effect::SuspendAgents => (AgentCommand::Suspend, "a payment failed".to_owned()),
                legacy::Effect::ResumeAgents => {
                    (AgentCommand::Resume, "the outstanding invoice was paid".to_owned())
                }
                legacy::Effect::DestroyAgents(reason) => (AgentCommand::Destroy, reason),
                legacy::Effect::RefetchSubscription(_) => continue,
            };
            Self::command_agents(ctx, command, &agents, &reason).await;
        }
    }

    fn publish_legacy(ctx: &WorkflowContext<Self>) {
        let (user, status) = ctx.state(|s| {
            let status = match (&s.state.delinquency, &s.state.subscription) {
                (Some(d), _) if !d.expired => "grace_period".to_owned(),
                (_, Some(sub)) => sub.status.clone(),
                (_, None) => "none".to_owned(),
            };
            (s.state.user_id.clone(), status)
        });
        let details = ctx.state(|s| crate::details::subscription(&s.customer_id, &status, &s.state));
        Self::publish_status(ctx, user, status, details);
    }
}
