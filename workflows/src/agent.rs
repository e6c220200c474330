//! `Agent`: one long-lived workflow per agent (`agent-<agent_id>`), the single writer of the
//! agent's state.
//!
//! Why long-lived: Stripe redelivers an event for days, and later than Temporal keeps closed
//! histories. A workflow that stays open answers a late duplicate from its own state
//! ("already active") instead of provisioning again. It closes only once destroyed.
//!
//! Everything that changes the agent goes through this workflow, one thing at a time:
//! - `checkout` (signal, from a paid Stripe Checkout, handed over by the customer's workflow, or
//!   by the starter's signal-with-start when the event has no customer): durable in Temporal
//!   before Stripe is answered, without a worker; dropped when its event
//!   was heard already, otherwise run in turn like `provision`, waiting while the user's other
//!   provisioning is in flight; what became of it is in the record (`checkout_refusal`).
//! - `provision` (update, from the API): starts the saga as a child; answers once the outcome
//!   is known.
//! - `command` (update, from the API): stop / start / destroy. Refused at once (nothing changes)
//!   when the state does not allow it; otherwise queued and answered when it begins.
//! - `billing` (signal, from the customer's `Subscription` workflow): suspend / resume / destroy.
//! - `seat` (signal, from the customer's `Subscription` workflow): the answer to the seat claim
//!   the agent sends before it provisions, or a parked seat granted once its invoices are paid.
//!
//! # Seats
//! Before starting its saga the agent claims a seat from its paying customer's workflow (the
//! checkout's subscription, or any free seat for an API call) and provisions only if it is
//! granted: that is what keeps an agent whose subscription is deleted, unpaid or full from
//! getting a server, whatever order Stripe's events arrive in. A destroyed agent frees its seat.
//! Runs recorded before seats existed (no `agent-seat-claims` marker) keep the old path, which
//! announced the agent with `attach_agent` after the saga started.
//!
//! # Billing as desired state
//! A billing command (suspend, resume, destroy) that fails after its activity's retry budget is
//! not final: the agent records it as `billing_retry` (shown in the Web UI's current details and
//! the API's record) and runs it again after a backoff (30 s doubling, at most an hour) until it
//! holds, or until the customer's workflow sends a newer command. A draft destroyed, or
//! provisioned through the API, while its Checkout Session is open first expires that session
//! at Stripe, so it cannot be paid for an agent that no longer wants it; a session that was paid
//! meanwhile frees its seat at the payer's workflow. Runs recorded before this (no
//! `agent-billing-desired-state` marker) keep the old behaviour.
//!
//! The main loop runs one provisioning or one command at a time, so commands never interleave.
//! Long histories continue-as-new, carrying the record, the queued commands and the checkouts
//! heard (waiting ones and the event ids remembered).

use std::time::Duration;

use slipway_activities::{BillingActivities, ProvisioningActivities};
use slipway_proto::{
    billing::{SeatAnswer, SeatClaim, SeatDecision, customer_workflow_id},
    model::{
        AgentCommand, AgentRecord, AgentResources, AgentStatus, AgentWorkflowInput, AuditEntry, BillingRetry,
        CheckoutHold, CheckoutRefusal, Checkouts, CommandOutcome, CommandRequest, LifecyclePolicy,
        OpenCheckout, PROTOCOL, ProvisionCommand, ProvisionOutcome, ProvisionRequest, ProvisionResult,
        ProvisionSource, ProvisioningPolicy, QueuedCommand, StopServerInput, provisioning_workflow_id,
        saga_task_queue,
    },
};
use temporalio_common::search_attributes::SearchAttributes;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ChildWorkflowOptions, ChildWorkflowStartError, ContinueAsNewOptions, ParentClosePolicy,
    SignalWorkflowOptions, StartChildWorkflowExecutionFailedCause, SyncWorkflowContext, TimerOptions,
    WorkflowContext, WorkflowContextView, WorkflowIdReusePolicy, WorkflowResult, workflows::select,
};

use crate::{ProvisionAgentWorkflow, SubscriptionWorkflow, failure, saga::AgentUndo, search_attributes};

/// Stable refusal codes (also the API's error codes).
pub mod codes {
    /// The owner already has a provisioning running (for another agent).
    pub const PROVISIONING_IN_PROGRESS: &str = "PROVISIONING_IN_PROGRESS";
    /// The agent is in a state that cannot be provisioned.
    pub const AGENT_NOT_PROVISIONABLE: &str = "AGENT_NOT_PROVISIONABLE";
    /// Temporal refused to start the saga for another reason.
    pub const PROVISIONING_NOT_STARTED: &str = "PROVISIONING_NOT_STARTED";
    /// Stop needs a running agent.
    pub const AGENT_NOT_RUNNING: &str = "AGENT_NOT_RUNNING";
    /// Start needs a stopped agent.
    pub const AGENT_NOT_STOPPED: &str = "AGENT_NOT_STOPPED";
    /// Start is refused while suspended for non-payment.
    pub const AGENT_SUSPENDED: &str = "AGENT_SUSPENDED";
    /// The agent is being provisioned, stopped or destroyed.
    pub const AGENT_BUSY: &str = "AGENT_BUSY";
    /// The agent no longer exists.
    pub const AGENT_DESTROYED: &str = "AGENT_DESTROYED";
    /// A billing command that does not apply in the current state (ignored).
    pub const NOT_APPLICABLE: &str = "NOT_APPLICABLE";
    /// The payer named by the checkout is not the agent's owner.
    pub const PAYER_NOT_OWNER: &str = "PAYER_NOT_OWNER";
    /// Checkout is only for draft agents.
    pub const AGENT_NOT_DRAFT: &str = "AGENT_NOT_DRAFT";
    /// A Checkout Session for this agent is already open.
    pub const CHECKOUT_ALREADY_OPEN: &str = "CHECKOUT_ALREADY_OPEN";
    /// No paying customer to claim a seat from.
    pub const NO_ACTIVE_SUBSCRIPTION: &str = "NO_ACTIVE_SUBSCRIPTION";
    /// The customer's workflow did not answer the seat claim in time (a later grant still
    /// provisions the agent).
    pub const SEAT_UNCONFIRMED: &str = "SEAT_UNCONFIRMED";
}

/// Marker of runs that claim a seat before provisioning (see the module docs).
pub const SEAT_PATCH: &str = "agent-seat-claims";

/// Marker of runs that hold billing as desired state (see the module docs): a billing command
/// that failed is retried until it holds, and a draft's open Checkout Session is expired before
/// the draft is destroyed or provisioned through the API.
pub const BILLING_DESIRED_PATCH: &str = "agent-billing-desired-state";

/// How long the agent waits for its customer's answer to a seat claim.
const SEAT_ANSWER_WAIT: Duration = Duration::from_secs(60);

/// The agent workflow.
#[workflow]
pub struct AgentWorkflow {
    agent: AgentRecord,
    policy: ProvisioningPolicy,
    lifecycle: LifecyclePolicy,
    /// A provisioning request waiting for the main loop, with its sequence number.
    pending_provision: Option<(u64, ProvisionCommand)>,
    /// Commands waiting for the main loop.
    queue: Vec<QueuedCommand>,
    /// True while the main loop runs a provisioning or a command.
    busy: bool,
    /// Answers to updates, by sequence number, collected by the update that asked.
    provision_answers: Vec<(u64, ProvisionOutcome)>,
    command_answers: Vec<(u64, CommandOutcome)>,
    next_seq: u64,
    /// Updates received by this run. Refused updates are answered by their handler and never
    /// wake the main loop, yet each one grows the history and counts towards the server's
    /// per-run update limit: [`UPDATES_PER_RUN`] bounds them with a continue-as-new.
    updates_this_run: u32,
    /// Set by a handler that answered on its own, so the main loop re-checks the history size.
    recheck: bool,
    /// The seat claim waiting for its answer, and the answer once it came.
    seat_claim: Option<u64>,
    seat_answer: Option<SeatAnswer>,
    /// `SlipwayBilling` was set on this run (it is then kept up to date).
    billing_attr: bool,
    /// Paid checkouts heard by signal, waiting their turn (see [`AgentWorkflow::checkout`]).
    checkouts: Checkouts,
    /// The run's protocol (see [`crate::protocol`]).
    protocol: u32,
}

/// `next_at` of a billing retry whose command is already queued.
const QUEUED: i64 = i64::MAX;

/// Whether an agent in `status` is where billing `command` wants it.
fn billing_holds(status: AgentStatus, command: AgentCommand) -> bool {
    use AgentStatus as S;
    match command {
        // Nothing runs: powered off, never provisioned, or gone.
        AgentCommand::Suspend => matches!(status, S::Suspended | S::Draft | S::Failed | S::Destroyed),
        AgentCommand::Resume => status != S::Suspended,
        AgentCommand::Destroy => status == S::Destroyed,
        AgentCommand::Stop | AgentCommand::Start => true,
    }
}

/// Updates one run accepts before it continues as new, well below the server's limit of 2,000
/// distinct updates per run.
pub const UPDATES_PER_RUN: u32 = 1_000;

fn refused(code: &str, reason: impl Into<String>) -> CommandOutcome {
    CommandOutcome::Refused { code: code.to_owned(), reason: reason.into() }
}

/// Whether `command` may run in `status`, and the state it leads to. Pure: unit-tested below.
pub fn check_command(status: AgentStatus, command: AgentCommand) -> Result<AgentStatus, CommandOutcome> {
    use AgentCommand as C;
    use AgentStatus as S;
    match (command, status) {
        (_, S::Destroyed) => Err(refused(codes::AGENT_DESTROYED, "the agent has been destroyed")),
        (_, S::Provisioning | S::Stopping | S::Destroying) => {
            Err(refused(codes::AGENT_BUSY, format!("the agent is {status}; try again when it is done")))
        }
        (C::Stop, S::Active) => Ok(S::Stopped),
        (C::Stop, _) => Err(refused(codes::AGENT_NOT_RUNNING, format!("the agent is {status}, not active"))),
        (C::Start, S::Stopped) => Ok(S::Active),
        (C::Start, S::Suspended) => Err(refused(
            codes::AGENT_SUSPENDED,
            "the agent is powered off by billing until its subscription is in good standing with a seat for it (see its audit trail)",
        )),
        (C::Start, _) => {
            Err(refused(codes::AGENT_NOT_STOPPED, format!("the agent is {status}, not stopped")))
        }
        (C::Destroy, _) => Ok(S::Destroyed),
        (C::Suspend, S::Active | S::Stopped) => Ok(S::Suspended),
        (C::Suspend, _) => {
            Err(refused(codes::NOT_APPLICABLE, format!("nothing to suspend: the agent is {status}")))
        }
        (C::Resume, S::Suspended) => Ok(S::Active),
        (C::Resume, _) => {
            Err(refused(codes::NOT_APPLICABLE, format!("nothing to resume: the agent is {status}")))
        }
    }
}

/// Options of lifecycle activities: retried with backoff, non-retryable failures end at once.
fn lifecycle_step(summary: &str, start_to_close: Duration, attempts: u32) -> ActivityOptions {
    crate::options::retrying(summary, start_to_close, Some(Duration::from_secs(60)), attempts)
}

#[workflow_methods]
impl AgentWorkflow {
    /// Restores the agent from its input (first start or continue-as-new).
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: AgentWorkflowInput) -> Self {
        let next_seq = input.queue.iter().map(|q| q.seq).max().unwrap_or(0);
        Self {
            agent: input.agent,
            policy: input.policy,
            lifecycle: input.lifecycle,
            pending_provision: None,
            queue: input.queue,
            busy: false,
            provision_answers: Vec::new(),
            command_answers: Vec::new(),
            next_seq,
            updates_this_run: 0,
            recheck: false,
            seat_claim: None,
            seat_answer: None,
            billing_attr: false,
            checkouts: input.checkouts,
            protocol: input.protocol,
        }
    }

    /// Main loop: one provisioning or one command at a time; ends once the agent is destroyed.
    #[run(name = "Agent")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<AgentRecord> {
        let status = ctx.state(|s| s.agent.status);
        Self::publish(ctx, status);
        loop {
            if ctx.state(|s| s.agent.status) == AgentStatus::Destroyed {
                // Let updates that are still answering finish before the workflow closes.
                ctx.wait_condition(|s: &Self| s.queue.is_empty()).await?;
                return Ok(ctx.state(|s| s.agent.clone()));
            }
            let limit = ctx.state(|s| s.lifecycle.history_limit);
            let long = |ctx: &WorkflowContext<Self>| {
                ctx.continue_as_new_suggested()
                    || ctx.history_length() >= limit
                    || ctx.state(|s| s.updates_this_run) >= UPDATES_PER_RUN
            };
            if long(ctx) && ctx.all_handlers_finished() && ctx.state(|s| s.pending_provision.is_none()) {
                let input = ctx.state(|s| AgentWorkflowInput {
                    agent: s.agent.clone(),
                    policy: s.policy.clone(),
                    lifecycle: s.lifecycle.clone(),
                    queue: s.queue.clone(),
                    checkouts: s.checkouts.clone(),
                    protocol: PROTOCOL,
                });
                ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
            }
            let retry_at =
                ctx.state(|s| s.agent.billing_retry.as_ref().map(|r| r.next_at).filter(|at| *at != QUEUED));
            let checkout_at = ctx.state(|s| s.checkouts.retry_at);
            match (retry_at, checkout_at) {
                (None, None) => ctx.wait_condition(Self::has_work).await?,
                // Only runs that recorded the desired-state marker ever schedule a billing retry,
                // and only runs that heard a checkout by signal a checkout retry.
                _ => Self::wait_for_retries(ctx, retry_at, checkout_at).await?,
            }
            if ctx.state_mut(|s| std::mem::take(&mut s.recheck)) {
                // Only refusals happened: nothing to run, but the history grew.
                continue;
            }
            ctx.state_mut(|s| s.busy = true);
            if let Some((seq, cmd)) = ctx.state_mut(|s| s.pending_provision.take()) {
                Self::provision_once(ctx, seq, cmd).await;
            } else if let Some(q) = ctx.state_mut(|s| (!s.queue.is_empty()).then(|| s.queue.remove(0))) {
                let billing = q.request.actor.starts_with("billing:").then(|| q.request.clone());
                Self::run_command(ctx, q).await;
                if let Some(request) = billing {
                    Self::after_billing_command(ctx, request).await;
                }
            } else if let Some(cmd) = ctx.state_mut(|s| s.checkouts.take_due()) {
                Self::provision_checkout(ctx, cmd).await;
            }
            ctx.state_mut(|s| s.busy = false);
        }
    }

    /// Ask for this agent to be provisioned. Idempotent: a duplicate answers
    /// `already_provisioning` / `already_active`; a refusal changes nothing.
    #[update]
    pub async fn provision(
        ctx: &mut WorkflowContext<Self>,
        cmd: ProvisionCommand,
    ) -> Result<ProvisionOutcome, Box<dyn std::error::Error + Send + Sync>> {
        let seq = ctx.state_mut(|s| {
            s.updates_this_run += 1;
            if let Some(answer) = Self::short_answer(s.agent.status, s.pending_provision.is_some()) {
                s.recheck = true;
                return Err(answer);
            }
            if s.busy || !s.queue.is_empty() {
                s.recheck = true;
                return Err(ProvisionOutcome::Refused {
                    code: codes::AGENT_BUSY.to_owned(),
                    reason: "a command is running on this agent; try again when it is done".to_owned(),
                });
            }
            s.next_seq += 1;
            s.pending_provision = Some((s.next_seq, cmd));
            Ok(s.next_seq)
        });
        let seq = match seq {
            Ok(seq) => seq,
            Err(answer) => return Ok(answer),
        };
        ctx.wait_condition(|s: &Self| s.provision_answers.iter().any(|(n, _)| *n == seq)).await?;
        let outcome = ctx.state_mut(|s| s.take_provision_answer(seq));
        Ok(outcome.unwrap_or(ProvisionOutcome::AlreadyProvisioning))
    }

    /// Stop, start or destroy (from the API). Refused at once when the state does not allow it;
    /// otherwise answered when the command begins (the state it leads to is in the answer).
    #[update]
    pub async fn command(
        ctx: &mut WorkflowContext<Self>,
        request: CommandRequest,
    ) -> Result<CommandOutcome, Box<dyn std::error::Error + Send + Sync>> {
        let seq = ctx.state_mut(|s| {
            s.updates_this_run += 1;
            // With nothing running or queued, the current state decides now.
            if !s.busy && s.queue.is_empty() && s.pending_provision.is_none() {
                check_command(s.agent.status, request.command).inspect_err(|_| s.recheck = true)?;
            }
            Ok::<_, CommandOutcome>(s.enqueue(request))
        });
        let seq = match seq {
            Ok(seq) => seq,
            Err(refusal) => return Ok(refusal),
        };
        ctx.wait_condition(|s: &Self| s.command_answers.iter().any(|(n, _)| *n == seq)).await?;
        let outcome = ctx.state_mut(|s| {
            let i = s.command_answers.iter().position(|(n, _)| *n == seq)?;
            Some(s.command_answers.remove(i).1)
        });
        Ok(outcome.unwrap_or_else(|| refused(codes::AGENT_BUSY, "lost answer")))
    }

    /// Billing decisions from the customer's subscription workflow: queued, run in order. The
    /// newest one replaces a retry of an older one (only a recorded retry is ever replaced, so
    /// runs from before retries replay unchanged).
    #[signal]
    pub fn billing(&mut self, _ctx: &mut SyncWorkflowContext<Self>, request: CommandRequest) {
        if self.agent.status != AgentStatus::Destroyed {
            self.agent.billing_retry = None;
            self.enqueue(request);
        }
    }

    /// Hold this draft agent for a Checkout Session about to be created: refused (`Refused`)
    /// when the agent is not a draft, not the caller's, or already has a session open.
    #[update]
    pub fn hold_for_checkout(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        hold: CheckoutHold,
    ) -> Result<CommandOutcome, Box<dyn std::error::Error + Send + Sync>> {
        self.updates_this_run += 1;
        self.recheck = true;
        if hold.user_id != self.agent.user_id {
            return Ok(refused("AGENT_NOT_FOUND", format!("no agent {}", self.agent.agent_id)));
        }
        if self.agent.status != AgentStatus::Draft || self.pending_provision.is_some() {
            return Ok(refused(
                codes::AGENT_NOT_DRAFT,
                format!(
                    "agent {} is {}; checkout is for draft agents",
                    self.agent.agent_id, self.agent.status
                ),
            ));
        }
        if let Some(open) = self.agent.open_checkout.as_ref().filter(|c| c.expires_at > hold.now) {
            let session = open.session_id.as_deref().unwrap_or("being created");
            return Ok(refused(
                codes::CHECKOUT_ALREADY_OPEN,
                format!("agent {} already has a checkout open ({session})", self.agent.agent_id),
            ));
        }
        self.agent.open_checkout = Some(OpenCheckout { session_id: None, expires_at: hold.hold_until });
        Ok(CommandOutcome::Accepted { status: self.agent.status, target: self.agent.status })
    }

    /// The Checkout Session created under a hold (`None`: it could not be created; the hold
    /// is lifted).
    #[signal]
    pub fn checkout_opened(&mut self, _ctx: &mut SyncWorkflowContext<Self>, open: Option<OpenCheckout>) {
        if self.agent.status == AgentStatus::Draft {
            self.agent.open_checkout = open;
        }
    }

    /// The customer's answer to this agent's seat claim, or a parked seat granted later.
    #[signal]
    pub fn seat(&mut self, _ctx: &mut SyncWorkflowContext<Self>, answer: SeatAnswer) {
        if self.seat_claim == Some(answer.request) {
            self.seat_answer = Some(answer);
            return;
        }
        // Unasked (a parked or reserved seat granted once paid, or a claim answered after the
        // agent stopped waiting): provision if the agent is still waiting for a server.
        let SeatDecision::Granted { subscription_id } = answer.decision else {
            // A parked claim denied later (its subscription ended before it was paid): the agent
            // no longer waits for a payment, and says why.
            if let SeatDecision::Denied { code, reason } = answer.decision
                && self.agent.awaiting_payment.take().is_some()
            {
                let event_id = self.checkouts.seen.last().cloned().unwrap_or_default();
                self.agent.checkout_refusal =
                    Some(CheckoutRefusal { event_id, code, reason, retry_at: None });
            }
            return;
        };
        let waiting = matches!(self.agent.status, AgentStatus::Draft | AgentStatus::Failed);
        if waiting && self.pending_provision.is_none() && self.seat_claim.is_none() {
            self.next_seq += 1;
            let source = ProvisionSource::Billing { customer_id: answer.customer_id, subscription_id };
            self.pending_provision = Some((self.next_seq, ProvisionCommand { source }));
        }
    }

    /// A paid checkout (`checkout.session.completed`), sent by the starter with
    /// signal-with-start: durable the moment the call returns, so Stripe is answered without
    /// waiting for a worker, a seat claim or the saga's start. A redelivery (the same event id)
    /// is dropped; the checkout then runs in turn with the agent's other work, as the
    /// `provision` update would ([`AgentWorkflow::provision_checkout`]).
    #[signal]
    pub fn checkout(&mut self, _ctx: &mut SyncWorkflowContext<Self>, cmd: ProvisionCommand) {
        if self.agent.status != AgentStatus::Destroyed {
            self.checkouts.hear(cmd);
        }
    }

    /// The agent's full record.
    #[query]
    pub fn describe(&self, _ctx: &WorkflowContextView) -> AgentRecord {
        self.agent.clone()
    }
}

impl AgentWorkflow {
    /// The answer `provision_once` gave to request `seq`, taken out of the list.
    fn take_provision_answer(&mut self, seq: u64) -> Option<ProvisionOutcome> {
        let i = self.provision_answers.iter().position(|(n, _)| *n == seq)?;
        Some(self.provision_answers.remove(i).1)
    }

    fn enqueue(&mut self, request: CommandRequest) -> u64 {
        self.next_seq += 1;
        self.queue.push(QueuedCommand { seq: self.next_seq, request });
        self.next_seq
    }

    /// Answers that need no saga: duplicates and wrong states.
    fn short_answer(status: AgentStatus, request_pending: bool) -> Option<ProvisionOutcome> {
        match status {
            AgentStatus::Draft | AgentStatus::Failed if request_pending => {
                Some(ProvisionOutcome::AlreadyProvisioning)
            }
            AgentStatus::Draft | AgentStatus::Failed => None,
            AgentStatus::Provisioning => Some(ProvisionOutcome::AlreadyProvisioning),
            AgentStatus::Active => Some(ProvisionOutcome::AlreadyActive),
            other => Some(ProvisionOutcome::Refused {
                code: codes::AGENT_NOT_PROVISIONABLE.to_owned(),
                reason: format!("agent is {other}; only draft or failed agents can be provisioned"),
            }),
        }
    }

    async fn provision_once(ctx: &mut WorkflowContext<Self>, seq: u64, cmd: ProvisionCommand) {
        let (agent, policy) = ctx.state(|s| (s.agent.clone(), s.policy.clone()));
        let answer = |ctx: &WorkflowContext<Self>, outcome| {
            ctx.state_mut(|s| s.provision_answers.push((seq, outcome)))
        };
        // A request may have waited while the state changed: check again.
        if let Some(outcome) = Self::short_answer(agent.status, false) {
            answer(ctx, outcome);
            return;
        }
        let seats = Self::patched(ctx, SEAT_PATCH);
        if seats && matches!(cmd.source, ProvisionSource::Api { .. }) {
            // Provisioned through the API: the open checkout must not buy it a second seat.
            Self::expire_open_checkout(ctx, true).await;
        }
        if seats && let Err(outcome) = Self::claim_seat(ctx, &cmd).await {
            answer(ctx, outcome);
            return;
        }
        let request = ProvisionRequest {
            agent_id: agent.agent_id.clone(),
            user_id: agent.user_id.clone(),
            region: agent.region.clone(),
            policy,
            protocol: ctx.state(|s| s.protocol),
        };
        let saga_id = provisioning_workflow_id(&agent.user_id);
        let options = ChildWorkflowOptions::builder()
            .workflow_id(saga_id.clone())
            // Pinned to the Worker Deployment version that starts it (the saga queue's worker
            // declares it); the task queue is not part of replay's checks, so runs that started
            // their saga on this queue replay unchanged.
            .task_queue(saga_task_queue(ctx.task_queue()))
            .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
            // The saga must finish its rollback even if this workflow is terminated.
            .parent_close_policy(ParentClosePolicy::Abandon)
            .search_attributes(SearchAttributes::new([
                search_attributes::AGENT_ID.value_set(agent.agent_id.clone()),
                search_attributes::USER_ID.value_set(agent.user_id.clone()),
                search_attributes::STATUS.value_set(AgentStatus::Provisioning.as_str().to_owned()),
            ]))
            .static_summary(format!("provision agent {} for {}", agent.agent_id, agent.user_id))
            .build();
        let child = match ctx.start_child_workflow(ProvisionAgentWorkflow::run, request, options).await {
            Ok(child) => child,
            Err(err) => {
                let refusal = match err {
                    ChildWorkflowStartError::StartFailed {
                        cause: StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
                        ..
                    } => ProvisionOutcome::Refused {
                        code: codes::PROVISIONING_IN_PROGRESS.to_owned(),
                        reason: format!(
                            "user {} already has a provisioning in flight ({saga_id}); retry when it has finished",
                            agent.user_id
                        ),
                    },
                    other => ProvisionOutcome::Refused {
                        code: codes::PROVISIONING_NOT_STARTED.to_owned(),
                        reason: other.to_string(),
                    },
                };
                answer(ctx, refusal);
                return;
            }
        };
        let run_id = child.run_id.clone();
        let actor = cmd.source.actor();
        let customer = cmd.source.customer_id().map(str::to_owned);
        ctx.state_mut(|s| {
            s.agent.provisioning_workflow_id = Some(saga_id.clone());
            s.agent.provisioning_run_id = Some(run_id.clone());
            s.agent.failure_reason = None;
            if customer.is_some() {
                s.agent.customer_id = customer.clone();
            }
        });
        answer(ctx, ProvisionOutcome::Started { workflow_id: saga_id, run_id });
        Self::transition(ctx, AgentStatus::Provisioning, &actor, "provisioning started");
        if let Some(customer) = customer.filter(|_| !seats) {
            // Runs from before seats: tell the paying customer's workflow about its agent.
            let agent_id = ctx.state(|s| s.agent.agent_id.clone());
            let _ = ctx
                .external_workflow(customer_workflow_id(&customer), None)
                .signal(SubscriptionWorkflow::attach_agent, agent_id, SignalWorkflowOptions::default())
                .await;
        }

        match child.result().await {
            Ok(ProvisionResult { server, tailscale, .. }) => {
                ctx.state_mut(|s| {
                    s.agent.server = Some(server);
                    s.agent.tailscale = Some(tailscale);
                });
                Self::transition(ctx, AgentStatus::Active, "saga", "provisioned");
            }
            Err(err) => {
                let reason = failure::child(&err);
                ctx.state_mut(|s| s.agent.failure_reason = Some(reason.clone()));
                Self::transition(ctx, AgentStatus::Failed, "saga", &reason);
            }
        }
    }

    async fn run_command(ctx: &mut WorkflowContext<Self>, queued: QueuedCommand) {
        let QueuedCommand { seq, request } = queued;
        let status = ctx.state(|s| s.agent.status);
        let answer =
            |ctx: &WorkflowContext<Self>, outcome| ctx.state_mut(|s| s.command_answers.push((seq, outcome)));
        let target = match check_command(status, request.command) {
            Ok(target) => target,
            Err(refusal) => {
                answer(ctx, refusal);
                return;
            }
        };
        let agent = AgentResources { agent_id: ctx.state(|s| s.agent.agent_id.clone()) };
        let (wait, attempts) =
            ctx.state(|s| (s.lifecycle.shutdown_wait_secs, s.lifecycle.command_attempts.max(1)));
        let server = slipway_proto::model::server_name(&agent.agent_id);
        let stop_opts = lifecycle_step(
            &format!("Hetzner: stop server {server}"),
            Duration::from_secs(wait + 300),
            attempts,
        );
        let actor = request.actor.as_str();
        match (request.command, status) {
            (AgentCommand::Stop, _) | (AgentCommand::Suspend, AgentStatus::Active) => {
                let interim =
                    if request.command == AgentCommand::Stop { AgentStatus::Stopping } else { status };
                answer(ctx, CommandOutcome::Accepted { status: interim, target });
                if interim != status {
                    Self::transition(ctx, interim, actor, &request.reason);
                }
                let stop = StopServerInput { agent_id: agent.agent_id.clone(), graceful_wait_secs: wait };
                match ctx.execute_activity(ProvisioningActivities::stop_server, stop, stop_opts).await {
                    Ok(()) => {
                        if target == AgentStatus::Suspended {
                            ctx.state_mut(|s| s.agent.suspended_from = Some(status));
                        }
                        Self::transition(ctx, target, actor, &request.reason);
                    }
                    Err(e) => {
                        let why = format!("{} failed: {}", request.command.as_str(), failure::activity(&e));
                        Self::transition(ctx, status, actor, &why);
                    }
                }
            }
            (AgentCommand::Suspend, _) => {
                // Already powered off: only the state changes.
                answer(ctx, CommandOutcome::Accepted { status, target });
                ctx.state_mut(|s| s.agent.suspended_from = Some(status));
                Self::transition(ctx, target, actor, &request.reason);
            }
            (AgentCommand::Start, _) | (AgentCommand::Resume, _) => {
                let back_to = if request.command == AgentCommand::Resume {
                    ctx.state(|s| s.agent.suspended_from).unwrap_or(AgentStatus::Active)
                } else {
                    AgentStatus::Active
                };
                answer(ctx, CommandOutcome::Accepted { status, target: back_to });
                if back_to == AgentStatus::Active {
                    let opts = lifecycle_step(
                        &format!("Hetzner: start server {server}"),
                        Duration::from_secs(600),
                        attempts,
                    );
                    if let Err(e) =
                        ctx.execute_activity(ProvisioningActivities::start_server, agent, opts).await
                    {
                        let why = format!("{} failed: {}", request.command.as_str(), failure::activity(&e));
                        Self::transition(ctx, status, actor, &why);
                        return;
                    }
                }
                ctx.state_mut(|s| s.agent.suspended_from = None);
                Self::transition(ctx, back_to, actor, &request.reason);
            }
            (AgentCommand::Destroy, _) => {
                answer(ctx, CommandOutcome::Accepted { status: AgentStatus::Destroying, target });
                Self::transition(ctx, AgentStatus::Destroying, actor, &request.reason);
                Self::expire_open_checkout(ctx, false).await;
                let mut problems = Vec::new();
                let opts = |what: &str| lifecycle_step(what, Duration::from_secs(120), attempts);
                for undo in AgentUndo::TEARDOWN {
                    if let Err(e) = undo.run(ctx, &agent, opts).await {
                        problems.push(format!("{}: {}", undo.resource(), failure::activity(&e)));
                    }
                }
                if problems.is_empty() {
                    Self::transition(ctx, AgentStatus::Destroyed, actor, &request.reason);
                    Self::release_seat(ctx).await;
                } else {
                    // Keep the agent visible (and destroyable again) rather than pretend.
                    let why = format!("destroy incomplete, retry: {}", problems.join("; "));
                    ctx.state_mut(|s| s.agent.failure_reason = Some(why.clone()));
                    Self::transition(ctx, AgentStatus::Failed, actor, &why);
                }
            }
        }
    }

    /// A billing command ran: if the agent is not where it asked, try again later (see the module
    /// docs); if it is, a pending retry is done.
    async fn after_billing_command(ctx: &mut WorkflowContext<Self>, request: CommandRequest) {
        let status = ctx.state(|s| s.agent.status);
        if billing_holds(status, request.command) {
            if ctx.state(|s| s.agent.billing_retry.is_some()) {
                ctx.state_mut(|s| s.agent.billing_retry = None);
                Self::publish(ctx, status);
            }
            return;
        }
        if !Self::patched(ctx, BILLING_DESIRED_PATCH) {
            return;
        }
        let now = crate::unix(ctx);
        ctx.state_mut(|s| {
            let attempt = s.agent.billing_retry.as_ref().map_or(0, |r| r.attempt) + 1;
            let last_error = s.agent.audit.last().map(|a| a.reason.clone()).unwrap_or_default();
            s.agent.billing_retry = Some(BillingRetry {
                request,
                attempt,
                next_at: now + BillingRetry::backoff_secs(attempt),
                last_error,
            });
        });
        Self::publish(ctx, status);
    }

    /// Expires the draft's open Checkout Session at Stripe (best effort: the destroy or the API
    /// provisioning goes on if Stripe cannot be reached); a session paid meanwhile frees the seat
    /// it reserved at the payer's workflow, unless `keep_seat` (the agent provisions on it).
    async fn expire_open_checkout(ctx: &mut WorkflowContext<Self>, keep_seat: bool) {
        let Some(session) = ctx.state(|s| s.agent.open_checkout.as_ref().and_then(|c| c.session_id.clone()))
        else {
            return;
        };
        if !Self::patched(ctx, BILLING_DESIRED_PATCH) {
            return;
        }
        let opts = crate::options::retrying(
            &format!("Stripe: expire checkout session {session}"),
            Duration::from_secs(30),
            None,
            5,
        );
        let expired = ctx.execute_activity(BillingActivities::expire_checkout_session, session, opts).await;
        ctx.state_mut(|s| s.agent.open_checkout = None);
        let Ok(expiry) = expired else { return };
        if let (false, "complete", Some(customer)) = (keep_seat, expiry.status.as_str(), expiry.customer_id) {
            let agent_id = ctx.state(|s| s.agent.agent_id.clone());
            let _ = ctx
                .external_workflow(customer_workflow_id(&customer), None)
                .signal(crate::SubscriptionWorkflow::release_seat, agent_id, SignalWorkflowOptions::default())
                .await;
        }
    }

    /// Runs a paid checkout heard by signal: what the `provision` update does, with the answer
    /// kept in the record instead of returned (Stripe was answered already). While the user's
    /// other provisioning is in flight the checkout waits (`LifecyclePolicy::checkout_retry_secs`)
    /// and is tried again,
    /// where the update path answered 409 and relied on Stripe's retry schedule (hours). Other
    /// refusals (a payer who does not own the agent, a subscription that ended) are final and
    /// read from [`AgentRecord::checkout_refusal`] with the same stable codes.
    async fn provision_checkout(ctx: &mut WorkflowContext<Self>, cmd: ProvisionCommand) {
        let seq = ctx.state_mut(|s| {
            s.next_seq += 1;
            s.next_seq
        });
        Self::provision_once(ctx, seq, cmd.clone()).await;
        let outcome = ctx.state_mut(|s| s.take_provision_answer(seq));
        let now = crate::unix(ctx);
        let retry_secs = ctx.state(|s| s.lifecycle.checkout_retry_secs.max(1));
        let event_id = cmd.source.event_id().unwrap_or_default().to_owned();
        ctx.state_mut(|s| match outcome {
            Some(ProvisionOutcome::Refused { code, reason }) => {
                let retry_at = (code == codes::PROVISIONING_IN_PROGRESS).then(|| now + retry_secs as i64);
                if retry_at.is_some() {
                    s.checkouts.waiting.insert(0, cmd);
                    s.checkouts.retry_at = retry_at;
                }
                s.agent.checkout_refusal = Some(CheckoutRefusal { event_id, code, reason, retry_at });
            }
            _ => s.agent.checkout_refusal = None,
        });
    }

    /// Something for the main loop: a provisioning, a command, a refusal's history to check, or
    /// a checkout whose turn it is.
    fn has_work(&self) -> bool {
        self.pending_provision.is_some()
            || !self.queue.is_empty()
            || self.recheck
            || (self.checkouts.retry_at.is_none() && !self.checkouts.waiting.is_empty())
    }

    /// Waits for work, or for the earlier of a billing command's retry and a waiting checkout's
    /// retry, and marks what came due. A billing retry alone keeps the timer (and summary) runs
    /// recorded before checkouts were signalled issued.
    async fn wait_for_retries(
        ctx: &mut WorkflowContext<Self>,
        billing_at: Option<i64>,
        checkout_at: Option<i64>,
    ) -> WorkflowResult<()> {
        let at = billing_at.into_iter().chain(checkout_at).min().unwrap_or_default();
        let wait = Duration::from_secs(at.saturating_sub(crate::unix(ctx)).max(1) as u64);
        let summary = if checkout_at.is_some() {
            "retry a waiting checkout or billing command"
        } else {
            "retry the billing command"
        };
        let timer = TimerOptions::builder(wait).summary(summary.to_owned()).build();
        let due = select! {
            _ = ctx.wait_condition(Self::has_work) => false,
            _ = ctx.timer(timer) => true,
        };
        if due {
            let now = crate::unix(ctx);
            ctx.state_mut(|s| {
                if s.checkouts.retry_at.is_some_and(|r| r <= now) {
                    s.checkouts.retry_at = None;
                }
                if let Some(retry) =
                    s.agent.billing_retry.as_mut().filter(|r| r.next_at != QUEUED && r.next_at <= now)
                {
                    retry.next_at = QUEUED;
                    let request = retry.request.clone();
                    s.enqueue(request);
                }
            });
        }
        Ok(())
    }

    /// Claims a seat from the paying customer's workflow; `Err` is the answer to give instead of
    /// provisioning.
    async fn claim_seat(
        ctx: &mut WorkflowContext<Self>,
        cmd: &ProvisionCommand,
    ) -> Result<(), ProvisionOutcome> {
        let (agent_id, user_id) = ctx.state(|s| (s.agent.agent_id.clone(), s.agent.user_id.clone()));
        let refused =
            |code: &str, reason: String| ProvisionOutcome::Refused { code: code.to_owned(), reason };
        if let ProvisionSource::Checkout { user_id: Some(payer), customer_id, .. } = &cmd.source
            && *payer != user_id
        {
            // The payer's workflow reserved a seat for this agent: it is the payer's to use.
            if let Some(customer) = customer_id.clone()
                && Self::patched(ctx, BILLING_DESIRED_PATCH)
            {
                let _ = ctx
                    .external_workflow(customer_workflow_id(&customer), None)
                    .signal(
                        crate::SubscriptionWorkflow::release_seat,
                        agent_id.clone(),
                        SignalWorkflowOptions::default(),
                    )
                    .await;
            }
            return Err(refused(codes::PAYER_NOT_OWNER, format!("agent {agent_id} is not {payer}'s")));
        }
        let Some(customer) = cmd.source.customer_id().map(str::to_owned) else {
            return Err(refused(codes::NO_ACTIVE_SUBSCRIPTION, "no paying Stripe customer".to_owned()));
        };
        let decision = if let ProvisionSource::Billing { subscription_id, .. } = &cmd.source {
            // The customer granted this seat on its own: no need to ask again.
            SeatDecision::Granted { subscription_id: subscription_id.clone() }
        } else {
            let request = ctx.state_mut(|s| {
                s.next_seq += 1;
                s.seat_claim = Some(s.next_seq);
                s.seat_answer = None;
                s.next_seq
            });
            let claim = SeatClaim {
                agent_id: agent_id.clone(),
                user_id: user_id.clone(),
                subscription_id: cmd.source.subscription_id().map(str::to_owned),
                request,
            };
            let sent = ctx
                .external_workflow(customer_workflow_id(&customer), None)
                .signal(crate::SubscriptionWorkflow::claim_seat, claim, SignalWorkflowOptions::default())
                .await;
            if sent.is_err() {
                ctx.state_mut(|s| s.seat_claim = None);
                return Err(refused(
                    codes::NO_ACTIVE_SUBSCRIPTION,
                    format!("no billing record for customer {customer}"),
                ));
            }
            let timer = TimerOptions::builder(SEAT_ANSWER_WAIT)
                .summary("wait for the customer's seat answer".to_owned())
                .build();
            select! {
                _ = ctx.wait_condition(|s: &Self| s.seat_answer.is_some()) => {},
                _ = ctx.timer(timer) => {},
            };
            let answer = ctx.state_mut(|s| {
                s.seat_claim = None;
                s.seat_answer.take()
            });
            match answer {
                Some(a) => a.decision,
                None => {
                    return Err(refused(
                        codes::SEAT_UNCONFIRMED,
                        format!(
                            "customer {customer} did not confirm a seat; a later confirmation provisions the agent"
                        ),
                    ));
                }
            }
        };
        match decision {
            SeatDecision::Granted { .. } => {
                ctx.state_mut(|s| {
                    s.agent.customer_id = Some(customer.clone());
                    s.agent.awaiting_payment = None;
                    s.agent.open_checkout = None;
                });
                Ok(())
            }
            SeatDecision::Parked { subscription_id, reason } => {
                ctx.state_mut(|s| {
                    s.agent.customer_id = Some(customer.clone());
                    s.agent.awaiting_payment = Some(subscription_id.clone());
                    s.agent.open_checkout = None;
                });
                let status = ctx.state(|s| s.agent.status);
                Self::publish(ctx, status);
                Err(ProvisionOutcome::AwaitingPayment { subscription_id, reason })
            }
            SeatDecision::Denied { code, reason } => Err(refused(&code, reason)),
        }
    }

    /// A destroyed agent frees its seat at its customer's workflow.
    async fn release_seat(ctx: &mut WorkflowContext<Self>) {
        let Some(customer) = ctx.state(|s| s.agent.customer_id.clone()) else { return };
        if !Self::patched(ctx, SEAT_PATCH) {
            return;
        }
        let agent_id = ctx.state(|s| s.agent.agent_id.clone());
        let _ = ctx
            .external_workflow(customer_workflow_id(&customer), None)
            .signal(crate::SubscriptionWorkflow::release_seat, agent_id, SignalWorkflowOptions::default())
            .await;
    }

    /// Whether the change `patch` (made before protocol 1) applies to this run.
    fn patched(ctx: &WorkflowContext<Self>, patch: &str) -> bool {
        crate::protocol::patched(ctx, ctx.state(|s| s.protocol), crate::protocol::LEAN, patch)
    }

    fn transition(ctx: &WorkflowContext<Self>, to: AgentStatus, actor: &str, reason: &str) {
        let at = ctx
            .workflow_time()
            .map(|t| format_rfc3339(t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()))
            .unwrap_or_default();
        ctx.state_mut(|s| {
            let from = s.agent.status;
            s.agent.status = to;
            s.agent.audit.push(AuditEntry {
                at,
                actor: actor.to_owned(),
                from,
                to,
                reason: reason.to_owned(),
            });
        });
        Self::publish(ctx, to);
    }

    /// Mirrors the status into search attributes and the UI's current details.
    fn publish(ctx: &WorkflowContext<Self>, status: AgentStatus) {
        let (agent_id, user_id, customer) =
            ctx.state(|s| (s.agent.agent_id.clone(), s.agent.user_id.clone(), s.agent.customer_id.clone()));
        let mut attrs = vec![
            search_attributes::AGENT_ID.value_set(agent_id),
            search_attributes::USER_ID.value_set(user_id),
            search_attributes::STATUS.value_set(status.as_str().to_owned()),
        ];
        if let Some(c) = customer {
            attrs.push(search_attributes::CUSTOMER_ID.value_set(c));
        }
        // `SlipwayBilling`: only once a billing command failed (never in runs from before
        // retries), so operators and the worker's gauge find the agents billing has not converged.
        let converging = ctx.state_mut(|s| {
            let converging = s.agent.billing_retry.is_some();
            s.billing_attr |= converging;
            s.billing_attr.then_some(converging)
        });
        if let Some(converging) = converging {
            let value = if converging { "converging" } else { "converged" };
            attrs.push(search_attributes::BILLING.value_set(value.to_owned()));
        }
        crate::protocol::upsert(ctx, ctx.state(|s| s.protocol), attrs);
        let details = ctx.state(|s| crate::details::agent(&s.agent));
        ctx.set_current_details(details);
    }
}

/// RFC 3339 (UTC, seconds) from Unix seconds, without a date library in workflow code.
pub(crate) fn format_rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use AgentCommand as C;
    use AgentStatus as S;

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_795_305_600), "2026-11-22T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400 + 3_661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn duplicates_and_wrong_states_get_short_answers() {
        assert_eq!(AgentWorkflow::short_answer(S::Draft, false), None);
        assert_eq!(AgentWorkflow::short_answer(S::Failed, false), None);
        assert_eq!(AgentWorkflow::short_answer(S::Draft, true), Some(ProvisionOutcome::AlreadyProvisioning));
        assert_eq!(AgentWorkflow::short_answer(S::Active, false), Some(ProvisionOutcome::AlreadyActive));
        assert!(matches!(
            AgentWorkflow::short_answer(S::Destroyed, false),
            Some(ProvisionOutcome::Refused { code, .. }) if code == codes::AGENT_NOT_PROVISIONABLE
        ));
    }

    fn code(r: Result<AgentStatus, CommandOutcome>) -> String {
        match r {
            Err(CommandOutcome::Refused { code, .. }) => code,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn command_table() {
        assert_eq!(check_command(S::Active, C::Stop), Ok(S::Stopped));
        assert_eq!(check_command(S::Stopped, C::Start), Ok(S::Active));
        assert_eq!(check_command(S::Stopped, C::Destroy), Ok(S::Destroyed));
        assert_eq!(check_command(S::Draft, C::Destroy), Ok(S::Destroyed));
        assert_eq!(check_command(S::Active, C::Suspend), Ok(S::Suspended));
        assert_eq!(check_command(S::Suspended, C::Resume), Ok(S::Active));
        assert_eq!(code(check_command(S::Stopped, C::Stop)), codes::AGENT_NOT_RUNNING);
        assert_eq!(code(check_command(S::Active, C::Start)), codes::AGENT_NOT_STOPPED);
        assert_eq!(code(check_command(S::Suspended, C::Start)), codes::AGENT_SUSPENDED);
        assert_eq!(code(check_command(S::Provisioning, C::Destroy)), codes::AGENT_BUSY);
        assert_eq!(code(check_command(S::Destroyed, C::Destroy)), codes::AGENT_DESTROYED);
        assert_eq!(code(check_command(S::Draft, C::Suspend)), codes::NOT_APPLICABLE);
    }
}
