//! `Subscription`: one long-lived workflow per Stripe customer (`customer-<cus_id>`).
//!
//! It receives every billing-relevant Stripe event as the `stripe_event` signal (the starter
//! uses signal-with-start, so the first event creates it), applies each exactly once per
//! subscription with the order-independent rules of [`crate::billing`], and turns changes of a
//! subscription's standing into commands to *that subscription's* agents: suspend on a failed
//! payment, resume when paid, destroy when the grace period ends or the subscription is deleted.
//! It is also the single place that hands out seats: an agent sends `claim_seat` before it
//! provisions and gets a `seat` signal back (granted, parked until paid, or denied); a destroyed
//! agent sends `release_seat`. The `entitlement` query is the API's quick pre-check. A paid
//! checkout's event carries its agent's hand-over: once the event is applied (the seat reserved),
//! the checkout goes on to the agent's workflow by signal, or by an activity's signal-with-start
//! when that workflow does not run, so the starter answers Stripe after one Temporal call.
//!
//! # Desired state
//! After every change the rules ([`crate::billing`]) derive what every agent should be (running,
//! powered off, destroyed) and send each agent the difference from what it was last told; every
//! `reassert_secs` (a day by default) each agent is told again, whatever changed. The `Agent`
//! retries a billing command that failed until it holds. A signal that cannot reach an agent
//! (destroyed, closed) frees its seat.
//!
//! # Versions
//! Runs recorded before desired-state billing (a `billing-per-subscription` marker but no
//! `billing-desired-state` marker) keep the rules of [`crate::billing::v2`] so they replay
//! unchanged, and continue as new into the current rules at their next continue-as-new, when an
//! operator signals `upgrade`, or when an event of a type that release never received arrives
//! (`invoice.voided`, `invoice.marked_uncollectible`, `invoice.overdue`, `customer.deleted`):
//! none of these can occur in their histories, so the way out cannot change a replay.
//!
//! Runs recorded before per-subscription billing (no `billing-per-subscription` marker in their
//! history) keep the old single-snapshot rules ([`crate::billing::legacy`]) so they replay
//! unchanged. Such a run continues as new into the new rules, with its state migrated by
//! [`CustomerBilling::from_legacy`], at its next continue-as-new, or at once when an agent claims
//! a seat from it or an operator signals `upgrade`.

use std::time::Duration;

use slipway_activities::{BillingActivities, LookupActivities};
use slipway_proto::{
    billing::{
        AgentTarget, BillingEvent, BillingPolicy, BillingState, CheckoutHandoff, CustomerBilling,
        Entitlement, SeatAnswer, SeatClaim, SeatDecision, Standing, SubscriptionInput,
    },
    model::{AgentCommand, CommandRequest, PROTOCOL, agent_workflow_id},
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, CancellableFuture, ContinueAsNewOptions, SignalWorkflowOptions, SyncWorkflowContext,
    TimerOptions, WorkflowContext, WorkflowContextView, WorkflowResult, workflows::select,
};

use crate::{
    AgentWorkflow,
    billing::{self, Effect, legacy, v2},
    search_attributes, unix,
};

/// Marker of runs that track billing per subscription (see the module docs).
pub const PER_SUBSCRIPTION_PATCH: &str = "billing-per-subscription";

/// Marker of runs that enforce billing as desired state (see the module docs).
pub const DESIRED_STATE_PATCH: &str = "billing-desired-state";

/// Event kinds the rules of [`billing::v2`] and [`legacy`] never received: one arriving moves a
/// run on those rules to the current ones.
fn needs_current_rules(event: &BillingEvent) -> bool {
    use slipway_proto::billing::BillingEventKind as K;
    matches!(
        event.kind,
        K::InvoiceOverdue { .. }
            | K::InvoiceVoided { .. }
            | K::InvoiceUncollectible { .. }
            | K::CustomerDeleted
    )
}

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
    /// Someone asked to re-read the customer's subscriptions from Stripe now.
    sync: bool,
    /// When the next re-assertion is due, if carried over from the previous run.
    next_reassert: Option<i64>,
    /// The run's protocol (see [`crate::protocol`]).
    protocol: u32,
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
            releases: input.releases,
            attaches: input.attaches,
            upgrade: false,
            upgrade_attempted: input.upgrade_attempted,
            per_subscription: false,
            sync: false,
            next_reassert: input.next_reassert,
            protocol: input.protocol,
        }
    }

    /// Applies events and seat requests one at a time; watches grace periods; never ends on its
    /// own.
    #[run(name = "Subscription")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        let protocol = ctx.state(|s| s.protocol);
        let patched = |patch| crate::protocol::patched(ctx, protocol, crate::protocol::LEAN, patch);
        if patched(PER_SUBSCRIPTION_PATCH) {
            ctx.state_mut(|s| s.per_subscription = true);
            if patched(DESIRED_STATE_PATCH) { Self::run_desired(ctx).await } else { Self::run_v2(ctx).await }
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

    /// Re-read the customer's subscriptions (status and seats) from Stripe now, as the daily
    /// re-assertion does: what webhooks missed is applied (operators, and the conformance suite).
    #[signal]
    pub fn sync(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.sync = true;
    }

    /// Operator: move a run still on earlier rules to the current rules now.
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

    async fn run_v2(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        Self::publish(ctx);
        loop {
            let limit = ctx.state(|s| s.policy.history_limit);
            // Only signals the previous release never received (`upgrade`, new event kinds) move
            // a run to the current rules early; the rest is that release's loop, verbatim.
            let migrate = ctx.state(|s| s.upgrade || s.inbox.iter().any(needs_current_rules));
            if (migrate || (ctx.continue_as_new_suggested() || ctx.history_length() >= limit))
                && ctx.all_handlers_finished()
                && (migrate || ctx.state(|s| !s.has_work()))
            {
                let now = unix(ctx);
                let input = ctx.state_mut(|s| {
                    v2::prune(&mut s.billing, now, s.policy.event_retention_secs);
                    SubscriptionInput {
                        customer_id: s.customer_id.clone(),
                        state: BillingState { user_id: s.billing.user_id.clone(), ..BillingState::default() },
                        billing: Some(s.billing.clone()),
                        policy: s.policy.clone(),
                        inbox: std::mem::take(&mut s.inbox),
                        claims: std::mem::take(&mut s.claims),
                        releases: std::mem::take(&mut s.releases),
                        attaches: std::mem::take(&mut s.attaches),
                        next_reassert: None,
                        upgrade_attempted: false,
                        // Still on the previous rules: the next run asks the patches again.
                        protocol: s.protocol,
                    }
                });
                ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
            }

            let deadline = ctx.state(|s| v2::next_deadline(&s.billing));
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
            if ctx.state(|s| s.inbox.iter().any(needs_current_rules)) {
                continue;
            }
            let now = unix(ctx);
            let mut handoff = None;
            let effects = if work_ready {
                let Some(work) = ctx.state_mut(Self::next_work) else { continue };
                match work {
                    Work::Event(mut event) => {
                        handoff = event.handoff.take();
                        let effects = ctx.state_mut(|s| {
                            v2::apply(&mut s.billing, &event, now, s.policy.grace_period_secs)
                        });
                        Self::refetch_v2(ctx, effects, event.created).await
                    }
                    Work::Release(agent) => ctx.state_mut(|s| v2::release(&mut s.billing, &agent)),
                    Work::Attach(agent) => ctx.state_mut(|s| v2::attach_unclaimed(&mut s.billing, &agent)),
                    Work::Claim(claim) => ctx.state_mut(|s| v2::claim(&mut s.billing, &claim)),
                }
            } else {
                ctx.state_mut(|s| v2::expire(&mut s.billing, now))
            };
            Self::enforce_v2(ctx, effects).await;
            Self::hand_over(ctx, handoff).await;
            Self::publish(ctx);
        }
    }

    async fn run_desired(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        let now = unix(ctx);
        // A state carried over from the previous rules: seat order and the targets they sent;
        // its seats are Stripe's to say (earlier rules gave a legacy customer one per agent).
        let converted = ctx.state_mut(|s| {
            let carried =
                s.billing.seats_taken == 0 && s.billing.subscriptions.values().any(|b| !b.agents.is_empty());
            if s.billing.seats_taken == 0 {
                s.billing = billing::from_v2(std::mem::take(&mut s.billing));
            }
            carried
        });
        if converted {
            Self::sync_from_stripe(ctx).await;
        }
        // Every run starts by converging (a migrated state may ask for more than its rules did).
        let effects = ctx.state_mut(|s| billing::converge(&mut s.billing, now, s.policy.grace_period_secs));
        Self::enforce(ctx, effects).await;
        let lean = ctx.state(|s| s.protocol >= crate::protocol::LEAN);
        // A lean run started by an event publishes once that event is applied (one upsert).
        if !lean || ctx.state(|s| !s.has_work()) {
            Self::publish(ctx);
        }
        // A lean run keeps one wake-up timer until it fires or its time changes (the timer
        // outlives loop iterations, so it is made through a context of its own); earlier runs
        // started a new one at every iteration.
        let timers = ctx.clone();
        let mut wake_timer = None;
        let mut reassert_at =
            ctx.state(|s| s.next_reassert.unwrap_or(now + s.policy.reassert_secs.max(60) as i64));
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
                        releases: Vec::new(),
                        attaches: Vec::new(),
                        next_reassert: Some(reassert_at),
                        upgrade_attempted: false,
                        protocol: PROTOCOL,
                    }
                });
                ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
            }

            // One timer: the earliest of the next grace period's end and the next re-assertion.
            let deadline = ctx.state(|s| billing::next_deadline(&s.billing));
            let wake = deadline.map_or(reassert_at, |d| d.min(reassert_at));
            let wait = Duration::from_secs(wake.saturating_sub(unix(ctx)).max(1) as u64);
            let summary = if deadline.is_some_and(|d| d <= reassert_at) {
                "payment grace period"
            } else {
                "re-assert every agent's billing target"
            };
            let work_ready = if lean {
                if let Some((_, timer)) = wake_timer.take_if(|(at, _)| *at != wake) {
                    CancellableFuture::cancel(&timer);
                }
                let (_, timer) = wake_timer.get_or_insert_with(|| {
                    (wake, timers.timer(TimerOptions::builder(wait).summary(summary.to_owned()).build()))
                });
                let ready = select! {
                    _ = ctx.wait_condition(|s: &Self| s.has_work() || s.sync) => true,
                    _ = &mut *timer => false,
                };
                if !ready {
                    wake_timer = None;
                }
                ready
            } else {
                select! {
                    _ = ctx.wait_condition(|s: &Self| s.has_work() || s.sync) => true,
                    _ = ctx.timer(TimerOptions::builder(wait).summary(summary.to_owned()).build()) => false,
                }
            };
            if ctx.state_mut(|s| std::mem::take(&mut s.sync)) {
                Self::sync_from_stripe(ctx).await;
            }
            let now = unix(ctx);
            let (grace, reassert_secs) =
                ctx.state(|s| (s.policy.grace_period_secs, s.policy.reassert_secs.max(60)));
            let mut handoff = None;
            let effects = if work_ready {
                let Some(mut work) = ctx.state_mut(Self::next_work) else {
                    Self::publish(ctx);
                    continue;
                };
                if let Work::Event(event) = &mut work {
                    handoff = event.handoff.take();
                }
                ctx.state_mut(|s| {
                    let b = &mut s.billing;
                    match work {
                        Work::Event(event) => billing::apply(b, &event, now, grace),
                        Work::Release(agent) => billing::release(b, &agent, now, grace),
                        Work::Attach(agent) => billing::attach_unclaimed(b, &agent, now, grace),
                        Work::Claim(claim) => billing::claim(b, &claim, now, grace),
                    }
                })
            } else {
                let mut effects = ctx.state_mut(|s| billing::expire(&mut s.billing, now, grace));
                if now >= reassert_at {
                    Self::enforce(ctx, effects).await;
                    Self::sync_from_stripe(ctx).await;
                    effects = ctx.state_mut(|s| billing::reassert(&mut s.billing));
                    reassert_at = now + reassert_secs as i64;
                }
                effects
            };
            Self::enforce(ctx, effects).await;
            Self::hand_over(ctx, handoff).await;
            Self::publish(ctx);
        }
    }

    /// Hands a paid checkout to its agent's workflow, once its event is applied (the seat it
    /// reserved exists): a signal when the agent runs (the API created it), else a start with
    /// the checkout ([`LookupActivities::start_agent_for_checkout`]; a destroyed agent is not
    /// started again, and the seat reserved for it is released as a destroyed agent's is).
    /// Only events the starter sent with a handoff lead here, so
    /// histories recorded before replay unchanged. The agent drops a redelivered event by its id.
    async fn hand_over(ctx: &mut WorkflowContext<Self>, handoff: Option<Box<CheckoutHandoff>>) {
        let Some(handoff) = handoff else { return };
        let agent_id = handoff.agent.agent.agent_id.clone();
        let sent = ctx
            .external_workflow(agent_workflow_id(&agent_id), None)
            .signal(AgentWorkflow::checkout, handoff.command.clone(), SignalWorkflowOptions::default())
            .await;
        if sent.is_ok() {
            return;
        }
        let opts = crate::options::retrying(
            &format!("start agent {agent_id} with its paid checkout"),
            Duration::from_secs(30),
            None,
            10,
        );
        let started = ctx.execute_activity(LookupActivities::start_agent_for_checkout, *handoff, opts).await;
        if let Ok(false) = started {
            // Destroyed: the seat the event reserved for it is free again (next in the queue).
            ctx.state_mut(|s| s.releases.push(agent_id));
        }
    }

    /// Carries out the effects of the current rules, and what they lead to: a re-fetch's answer,
    /// a probe's findings, an agent that can no longer be reached (its seat is freed).
    async fn enforce(ctx: &mut WorkflowContext<Self>, effects: Vec<Effect>) {
        let customer = ctx.state(|s| s.customer_id.clone());
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            let now = unix(ctx);
            let grace = ctx.state(|s| s.policy.grace_period_secs);
            match effect {
                Effect::Command { agent, target, reason } => {
                    let command = match target {
                        AgentTarget::Run => AgentCommand::Resume,
                        AgentTarget::Off => AgentCommand::Suspend,
                        AgentTarget::Destroy => AgentCommand::Destroy,
                    };
                    let request = CommandRequest { command, actor: format!("billing:{customer}"), reason };
                    let sent = ctx
                        .external_workflow(agent_workflow_id(&agent), None)
                        .signal(AgentWorkflow::billing, request, SignalWorkflowOptions::default())
                        .await;
                    if sent.is_err() {
                        // The agent no longer runs (destroyed): its seat is free.
                        queue.extend(ctx.state_mut(|s| billing::release(&mut s.billing, &agent, now, grace)));
                    }
                }
                Effect::Answer(agent, mut answer) => {
                    answer.customer_id.clone_from(&customer);
                    let sent = ctx
                        .external_workflow(agent_workflow_id(&agent), None)
                        .signal(AgentWorkflow::seat, answer, SignalWorkflowOptions::default())
                        .await;
                    if sent.is_err() {
                        queue.extend(ctx.state_mut(|s| billing::release(&mut s.billing, &agent, now, grace)));
                    }
                }
                Effect::Refetch(id) => {
                    // If Stripe cannot answer, keep the state we have: the next event settles it.
                    if let Ok(fetched) = ctx
                        .execute_activity(
                            BillingActivities::fetch_subscription,
                            id.clone(),
                            refetch_options(),
                        )
                        .await
                    {
                        let now = unix(ctx);
                        queue.extend(ctx.state_mut(|s| {
                            billing::apply_refetched(&mut s.billing, &id, &fetched, now, grace)
                        }));
                    }
                }
                Effect::Verify(agents) => {
                    for agent in agents {
                        if !Self::probe(ctx, &customer, &agent).await {
                            let now = unix(ctx);
                            queue.extend(
                                ctx.state_mut(|s| billing::release(&mut s.billing, &agent, now, grace)),
                            );
                        }
                    }
                }
                Effect::Probe(agents, claim) => {
                    let mut gone = Vec::new();
                    for agent in agents {
                        if !Self::probe(ctx, &customer, &agent).await {
                            gone.push(agent);
                        }
                    }
                    let now = unix(ctx);
                    queue.extend(ctx.state_mut(|s| {
                        billing::claim_after_probe(&mut s.billing, &claim, &gone, now, grace)
                    }));
                }
            }
        }
    }

    /// Re-reads the customer's subscriptions from Stripe and applies them (Stripe unreachable:
    /// the state stays as it is, the next sync or event settles it).
    async fn sync_from_stripe(ctx: &mut WorkflowContext<Self>) {
        let customer = ctx.state(|s| s.customer_id.clone());
        let opts = crate::options::retrying(
            &format!("Stripe: list the subscriptions of {customer}"),
            Duration::from_secs(30),
            None,
            5,
        );
        let Ok(listed) =
            ctx.execute_activity(BillingActivities::list_customer_subscriptions, customer, opts).await
        else {
            return;
        };
        let now = unix(ctx);
        let effects = ctx
            .state_mut(|s| billing::apply_listed(&mut s.billing, &listed, now, s.policy.grace_period_secs));
        Self::enforce(ctx, effects).await;
    }

    /// Whether `agent`'s workflow still runs: it is sent a harmless answer (unasked, not a grant),
    /// and only whether that arrives matters.
    async fn probe(ctx: &mut WorkflowContext<Self>, customer: &str, agent: &str) -> bool {
        let subscription_id = ctx.state(|s| s.billing.seat_of(agent).map(str::to_owned)).unwrap_or_default();
        let probe = SeatAnswer {
            request: 0,
            customer_id: customer.to_owned(),
            decision: SeatDecision::Parked {
                subscription_id,
                reason: "seat reserved by a checkout".to_owned(),
            },
        };
        ctx.external_workflow(agent_workflow_id(agent), None)
            .signal(AgentWorkflow::seat, probe, SignalWorkflowOptions::default())
            .await
            .is_ok()
    }

    /// Runs re-fetches (I/O, so activities) and folds their answers back in.
    async fn refetch_v2(
        ctx: &mut WorkflowContext<Self>,
        effects: Vec<v2::Effect>,
        created: i64,
    ) -> Vec<v2::Effect> {
        let mut out = Vec::new();
        for effect in effects {
            let v2::Effect::Refetch(id) = effect else {
                out.push(effect);
                continue;
            };
            // If Stripe cannot answer, keep the state we have: the next event will settle it.
            if let Ok(status) = ctx
                .execute_activity(BillingActivities::fetch_subscription_status, id.clone(), refetch_options())
                .await
            {
                out.extend(ctx.state_mut(|s| v2::apply_refetched(&mut s.billing, &id, &status, created)));
            }
        }
        out
    }

    /// Sends the commands the effects call for to the agents they name.
    async fn enforce_v2(ctx: &mut WorkflowContext<Self>, effects: Vec<v2::Effect>) {
        let customer = ctx.state(|s| s.customer_id.clone());
        for effect in effects {
            let (command, agents, reason) = match effect {
                v2::Effect::Suspend(agents) => (AgentCommand::Suspend, agents, "a payment failed".to_owned()),
                v2::Effect::Resume(agents) => {
                    (AgentCommand::Resume, agents, "the outstanding invoices were paid".to_owned())
                }
                v2::Effect::Destroy(agents, reason) => (AgentCommand::Destroy, agents, reason),
                v2::Effect::Answer(agent, mut answer) => {
                    answer.customer_id.clone_from(&customer);
                    // An agent that no longer runs cannot be answered; its claim is moot then.
                    let _ = ctx
                        .external_workflow(agent_workflow_id(&agent), None)
                        .signal(AgentWorkflow::seat, answer, SignalWorkflowOptions::default())
                        .await;
                    continue;
                }
                v2::Effect::Refetch(_) => continue,
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
        crate::protocol::upsert(ctx, ctx.state(|s| s.protocol), attrs);
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
            let migrate = ctx.state(|s| {
                s.upgrade
                    || (!s.claims.is_empty() && !s.upgrade_attempted)
                    || s.inbox.iter().any(needs_current_rules)
            });
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
                        releases: Vec::new(),
                        attaches: Vec::new(),
                        next_reassert: None,
                        upgrade_attempted: migrate || s.upgrade_attempted,
                        // Still on the legacy rules: the next run asks the patches again.
                        protocol: s.protocol,
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
            if ctx.state(|s| s.inbox.iter().any(needs_current_rules)) {
                continue;
            }
            let mut handoff = None;
            let effects = if event_ready {
                let Some(mut event) = ctx.state_mut(|s| (!s.inbox.is_empty()).then(|| s.inbox.remove(0)))
                else {
                    Self::answer_claims_legacy(ctx).await;
                    continue;
                };
                let now = unix(ctx);
                handoff = event.handoff.take();
                let effects =
                    ctx.state_mut(|s| legacy::apply(&mut s.state, &event, now, s.policy.grace_period_secs));
                Self::resolve_legacy(ctx, effects, event.created).await
            } else {
                ctx.state_mut(|s| legacy::expire(&mut s.state))
            };
            Self::enforce_legacy(ctx, effects).await;
            Self::hand_over(ctx, handoff).await;
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
