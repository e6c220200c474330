//! `ProvisionAgent`: the saga that turns a paid request into a running agent.
//!
//! Steps (each an activity with timeouts and a retry policy):
//! 1. `tailscale_key`: one-off, pre-authorized, tagged auth key.
//! 2. `hetzner_server`: create (or adopt) `slipway-<agent>`, then `server_ready`: wait for its
//!    create action, polled by the activity at an interval that respects Hetzner's budget.
//! 3. `actions_dispatch`: `workflow_dispatch` of `provision-agent.yml`; transient failures are
//!    retried (the job stays pending, visibly) until the dispatch deadline. A retry adopts the run
//!    an earlier attempt started (found by the correlation id in its title) instead of
//!    dispatching a second one. When GitHub's answer named no run, `find_provision_run` looks
//!    it up in the runs list (retried for [`FIND_RUN_WINDOW`]).
//! 4. `actions_callback`: wait for the job's signed callback, until the callback deadline. Only
//!    callbacks of the dispatched run count; those that arrive before the run is known are held
//!    until it is (behind the [`FIND_RUN_PATCH`] patch; older runs bound the first callback's run).
//! 5. `tailscale_device`: record the device the VM joined as.
//!
//! On any failure: compensations run in reverse (remove devices, delete the server, revoke
//! keys). Each is registered *before* its step runs, because a step can create its resource
//! and still fail (lost answer); each runs on a detached cancellation token and in isolation, so
//! one failing compensation never skips the others. The workflow then fails with the reason.
//!
//! The workflow id is `provisioning-<user>`: Temporal refuses a second running workflow with the
//! same id, which is the one place "one provisioning in flight per user" is enforced.

use std::time::Duration;

use slipway_activities::ProvisioningActivities;
use slipway_proto::model::{
    ActionsCallback, AgentResources, CallbackStatus, CreateServerInput, DispatchInput, ProvisionRequest,
    ProvisionResult, ProvisioningProgress, StepChange, StepProgress, StepState, TailscaleKeyInput,
    TailscaleRef, job_id, record_step_changes, server_name,
};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityCloseTimeouts, ActivityExecutionError, ActivityOptions, ApplicationFailure, SyncWorkflowContext,
    TimerOptions, WorkflowCancellationToken, WorkflowContext, WorkflowContextView, WorkflowResult,
    workflows::select,
};

use crate::{
    saga::{self, AgentUndo, Saga},
    search_attributes,
};

/// Step names, in order (also the `progress` query's order).
pub mod steps {
    /// Tailscale auth key.
    pub const TAILSCALE_KEY: &str = "tailscale_key";
    /// Hetzner server creation.
    pub const HETZNER_SERVER: &str = "hetzner_server";
    /// Waiting for the server's create action.
    pub const SERVER_READY: &str = "server_ready";
    /// GitHub Actions dispatch.
    pub const ACTIONS_DISPATCH: &str = "actions_dispatch";
    /// Waiting for the job's callback.
    pub const ACTIONS_CALLBACK: &str = "actions_callback";
    /// Recording the tailnet device.
    pub const TAILSCALE_DEVICE: &str = "tailscale_device";
    /// All, in order.
    pub const ALL: [&str; 6] =
        [TAILSCALE_KEY, HETZNER_SERVER, SERVER_READY, ACTIONS_DISPATCH, ACTIONS_CALLBACK, TAILSCALE_DEVICE];
}

/// Patch: the saga knows its Actions run before it takes callbacks (from the dispatch, or from
/// the runs list), holding earlier callbacks, instead of binding the first callback's run.
pub const FIND_RUN_PATCH: &str = "provisioning-finds-its-actions-run";

/// How long the dispatch may go without a heartbeat before Temporal takes its worker for lost
/// and tries again (the activity beats every second while it runs).
pub const DISPATCH_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `find_provision_run` is retried before the saga gives up on finding its run.
pub const FIND_RUN_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Callbacks held while the run is unknown, at most (a run sends two or three).
const MAX_HELD: usize = 32;

/// Terminal outcome reported by the Actions job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JobOutcome {
    Succeeded,
    Failed(String),
}

/// The provisioning saga.
#[workflow]
pub struct ProvisionAgentWorkflow {
    req: ProvisionRequest,
    job_id: String,
    steps: Vec<StepProgress>,
    /// Every change of `steps`, for the API's event stream (query state only: no history).
    changes: Vec<StepChange>,
    failure: Option<String>,
    run_id: Option<String>,
    outcome: Option<JobOutcome>,
    /// Set ([`FIND_RUN_PATCH`]) when callbacks wait for the run to be known.
    holds_unbound: bool,
    /// Callbacks received while the run was unknown, applied once it is.
    held: Vec<ActionsCallback>,
}

/// Retry policy of ordinary API steps: transient failures back off up to a minute; the
/// activities mark permanent failures non-retryable, which ends retries at once.
fn api_step(summary: &str) -> ActivityOptions {
    crate::options::retrying(summary, Duration::from_secs(30), None, 10)
}

/// Compensations outlive a cancelled workflow (detached token) and retry longer: leaving a
/// paid-for server behind is worse than a slow rollback.
fn compensation_step(summary: &str) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(60))
                .maximum_attempts(20)
                .build(),
        )
        .cancellation_token(WorkflowCancellationToken::new())
        .summary(summary.to_owned())
        .build()
}

#[workflow_methods]
impl ProvisionAgentWorkflow {
    /// Builds the initial state; the job id names this exact run.
    #[init]
    pub fn new(ctx: &WorkflowContextView, req: ProvisionRequest) -> Self {
        let steps = saga::fresh_steps(&steps::ALL);
        Self {
            job_id: job_id(ctx.workflow_id(), ctx.run_id()),
            req,
            steps,
            changes: Vec::new(),
            failure: None,
            run_id: None,
            outcome: None,
            holds_unbound: false,
            held: Vec::new(),
        }
    }

    /// Runs the saga; on failure compensates in reverse and fails with the reason.
    #[run(name = "ProvisionAgent")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<ProvisionResult> {
        let mut compensations = Vec::new();
        match Self::provision(ctx, &mut compensations).await {
            Ok(result) => Ok(result),
            Err(reason) => {
                ctx.state_mut(|s| s.failure = Some(reason.clone()));
                let undo = Self::compensate(ctx, &compensations).await;
                let agent = ctx.state(|s| s.req.agent_id.clone());
                let message = if undo.is_empty() {
                    format!("provisioning agent {agent} failed and was rolled back: {reason}")
                } else {
                    format!(
                        "provisioning agent {agent} failed: {reason}; rollback incomplete, clean up by hand: {}",
                        undo.join("; ")
                    )
                };
                Err(ApplicationFailure::builder(message)
                    .type_name("ProvisioningFailed".to_owned())
                    .non_retryable(true)
                    .build()
                    .into())
            }
        }
    }

    /// Delivers a verified GitHub Actions callback. Callbacks of another job (an older saga
    /// run), another agent or another Actions run than the dispatched one are ignored, as are
    /// repeats after the outcome is known. While the dispatched run is not known yet, callbacks
    /// are held until it is.
    #[signal]
    pub fn actions_callback(&mut self, ctx: &mut SyncWorkflowContext<Self>, cb: ActionsCallback) {
        self.apply_callback(cb);
        self.record_changes(&crate::rfc3339_millis(ctx.workflow_time()));
    }

    /// Step-by-step progress, for the API, the demo and the Web UI.
    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> ProvisioningProgress {
        ProvisioningProgress {
            agent_id: self.req.agent_id.clone(),
            steps: self.steps.clone(),
            failure: self.failure.clone(),
            changes: self.changes.clone(),
        }
    }
}

impl ProvisionAgentWorkflow {
    /// [`Self::actions_callback`]'s decision.
    fn apply_callback(&mut self, cb: ActionsCallback) {
        if cb.job_id != self.job_id || cb.agent_id != self.req.agent_id || self.outcome.is_some() {
            return;
        }
        if self.holds_unbound && self.run_id.is_none() {
            if self.held.len() < MAX_HELD {
                self.held.push(cb);
            }
            return;
        }
        self.take_callback(cb);
    }

    /// Applies a callback of this job: callbacks of another run than the known one are
    /// ignored; without a known run (histories before [`FIND_RUN_PATCH`]) the first callback's
    /// run becomes the known one.
    fn take_callback(&mut self, cb: ActionsCallback) {
        // Once the run is known (from the dispatch, or the first callback), callbacks of any
        // other run are not this job's: an Actions OIDC token proves the run a callback names.
        if let (Some(known), Some(claimed)) = (&self.run_id, &cb.run_id)
            && known != claimed
        {
            return;
        }
        match cb.status {
            CallbackStatus::Running => {
                self.run_id = cb.run_id.clone().or(self.run_id.take());
                let detail = format!("job running (run {})", self.run_id.as_deref().unwrap_or("?"));
                saga::set_step(&mut self.steps, steps::ACTIONS_CALLBACK, StepState::Running, detail);
            }
            CallbackStatus::Succeeded => {
                self.run_id = cb.run_id.clone().or(self.run_id.take());
                self.outcome = Some(JobOutcome::Succeeded);
            }
            CallbackStatus::Failed => {
                let reason = cb.reason.unwrap_or_else(|| "no reason given".to_owned());
                self.outcome = Some(JobOutcome::Failed(reason));
            }
        }
    }

    /// The dispatched run is known: take the callbacks held until now, in arrival order.
    fn bind_run(&mut self, run: String) {
        self.run_id = Some(run);
        for cb in std::mem::take(&mut self.held) {
            if self.outcome.is_some() {
                break;
            }
            self.take_callback(cb);
        }
    }

    async fn provision(
        ctx: &mut WorkflowContext<Self>,
        compensations: &mut Vec<AgentUndo>,
    ) -> Result<ProvisionResult, String> {
        let req = ctx.state(|s| s.req.clone());
        // The agent starts the saga with these already set: a lean run upserts nothing here.
        crate::protocol::upsert(
            ctx,
            req.protocol,
            vec![
                search_attributes::AGENT_ID.value_set(req.agent_id.clone()),
                search_attributes::USER_ID.value_set(req.user_id.clone()),
                search_attributes::STATUS.value_set("provisioning".to_owned()),
            ],
        );
        let agent = AgentResources { agent_id: req.agent_id.clone() };

        // 1. Tailscale auth key.
        Self::mark(ctx, steps::TAILSCALE_KEY, StepState::Running, "");
        compensations.push(AgentUndo::RevokeKeys);
        let key = ctx
            .execute_activity(
                ProvisioningActivities::create_tailscale_key,
                TailscaleKeyInput { agent_id: req.agent_id.clone() },
                api_step(&format!("Tailscale: create auth key for {}", req.agent_id)),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::TAILSCALE_KEY, &e))?;
        Self::mark(ctx, steps::TAILSCALE_KEY, StepState::Done, format!("key {}", key.key_id));

        // 2. Hetzner server. The VM may join the tailnet as soon as it boots, so its device
        //    removal is registered together with the server.
        Self::mark(ctx, steps::HETZNER_SERVER, StepState::Running, "");
        compensations.push(AgentUndo::DeleteServer);
        compensations.push(AgentUndo::RemoveDevices);
        let server = ctx
            .execute_activity(
                ProvisioningActivities::create_server,
                CreateServerInput {
                    agent_id: req.agent_id.clone(),
                    user_id: req.user_id.clone(),
                    region: req.region.clone(),
                    sealed_auth_key: key.sealed_key.clone(),
                },
                api_step(&format!("Hetzner: create server {} in {}", server_name(&req.agent_id), req.region)),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::HETZNER_SERVER, &e))?;
        Self::mark(
            ctx,
            steps::HETZNER_SERVER,
            StepState::Done,
            format!("server {} ({})", server.id, server.name),
        );

        Self::mark(ctx, steps::SERVER_READY, StepState::Running, "waiting for create action");
        let server_id = server.id;
        let server = ctx
            .execute_activity(
                ProvisioningActivities::wait_server_ready,
                server,
                ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15 * 60))
                    .heartbeat_timeout(Duration::from_secs(60))
                    .retry_policy(
                        RetryPolicy::builder()
                            .initial_interval(Duration::from_secs(2))
                            .maximum_interval(Duration::from_secs(60))
                            .maximum_attempts(5)
                            .build(),
                    )
                    .summary(format!("Hetzner: wait for server {server_id} to run"))
                    .build(),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::SERVER_READY, &e))?;
        let ip = server.ipv4.clone().unwrap_or_else(|| "no IPv4".to_owned());
        Self::mark(ctx, steps::SERVER_READY, StepState::Done, format!("running at {ip}"));

        // 3. Dispatch the bootstrap job. Transient failures keep the job pending and retried
        //    (no attempt limit) until the dispatch deadline; permanent ones fail fast.
        let job_id = ctx.state(|s| s.job_id.clone());
        Self::mark(ctx, steps::ACTIONS_DISPATCH, StepState::Running, format!("job {job_id}"));
        let finds_run = crate::protocol::patched(ctx, req.protocol, crate::protocol::LEAN, FIND_RUN_PATCH);
        ctx.state_mut(|s| s.holds_unbound = finds_run);
        let dispatch = DispatchInput {
            job_id: job_id.clone(),
            agent_id: req.agent_id.clone(),
            region: req.region.clone(),
        };
        let dispatched_run = ctx
            .execute_activity(
                ProvisioningActivities::dispatch_provision_job,
                dispatch.clone(),
                // No start-to-close: a slow attempt that is still alive must not be run a second
                // time beside it (a retry adopts the run an earlier attempt started only if it
                // can read its title, the shipped workflow's run-name). The attempt heartbeats
                // instead, so one lost with its worker (killed, or its host gone) is retried
                // within the heartbeat timeout, and the retry adopts the run if it was started.
                ActivityOptions::with_schedule_to_close_timeout(Duration::from_secs(
                    req.policy.dispatch_deadline_secs,
                ))
                .heartbeat_timeout(DISPATCH_HEARTBEAT_TIMEOUT)
                .retry_policy(
                    RetryPolicy::builder()
                        .initial_interval(Duration::from_secs(1))
                        .backoff_coefficient(2.0)
                        .maximum_interval(Duration::from_secs(5 * 60))
                        .build(),
                )
                .summary(format!("GitHub: dispatch provision-agent.yml for {}", req.agent_id))
                .build(),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::ACTIONS_DISPATCH, &e))?;
        if finds_run {
            let run = match dispatched_run {
                Some(run) => run,
                None => {
                    Self::mark(
                        ctx,
                        steps::ACTIONS_DISPATCH,
                        StepState::Running,
                        format!("job {job_id} dispatched; finding its run"),
                    );
                    ctx.execute_activity(
                        ProvisioningActivities::find_provision_run,
                        dispatch,
                        ActivityOptions::with_close_timeouts(
                            ActivityCloseTimeouts::ScheduleAndStartToClose {
                                schedule_to_close: FIND_RUN_WINDOW,
                                start_to_close: Duration::from_secs(60),
                            },
                        )
                        .retry_policy(
                            RetryPolicy::builder()
                                .initial_interval(Duration::from_secs(2))
                                .backoff_coefficient(2.0)
                                .maximum_interval(Duration::from_secs(30))
                                .build(),
                        )
                        .summary(format!("GitHub: find the provision-agent.yml run of {}", req.agent_id))
                        .build(),
                    )
                    .await
                    .map_err(|e| Self::fail(ctx, steps::ACTIONS_DISPATCH, &e))?
                }
            };
            ctx.state_mut(|s| s.bind_run(run.clone()));
            Self::mark(
                ctx,
                steps::ACTIONS_DISPATCH,
                StepState::Done,
                format!("job {job_id} dispatched (run {run})"),
            );
        } else {
            ctx.state_mut(|s| s.run_id = s.run_id.take().or(dispatched_run.clone()));
            Self::mark(ctx, steps::ACTIONS_DISPATCH, StepState::Done, format!("job {job_id} dispatched"));
        }

        // 4. Wait for the job's final callback, or give up at the deadline.
        let deadline = req.policy.callback_deadline_secs;
        Self::mark(ctx, steps::ACTIONS_CALLBACK, StepState::Running, format!("waiting up to {deadline}s"));
        let known = ctx.state(|s| s.outcome.clone()).filter(|_| req.protocol >= crate::protocol::LEAN);
        let outcome = match known {
            // The final callback came with the dispatch's answer: a lean run starts no deadline.
            Some(outcome) => Some(outcome),
            None => select! {
                _ = ctx.wait_condition(|s: &Self| s.outcome.is_some()) => ctx.state(|s| s.outcome.clone()),
                _ = ctx.timer(TimerOptions::builder(Duration::from_secs(deadline))
                        .summary(format!("GitHub Actions: callback deadline for {}", req.agent_id)).build()) => None,
            },
        };
        let run_id = ctx.state(|s| s.run_id.clone());
        let run = run_id.clone().unwrap_or_else(|| "unknown".to_owned());
        match outcome {
            Some(JobOutcome::Succeeded) => {
                Self::mark(
                    ctx,
                    steps::ACTIONS_CALLBACK,
                    StepState::Done,
                    format!("job succeeded (run {run})"),
                );
            }
            Some(JobOutcome::Failed(reason)) => {
                let reason = format!("GitHub Actions job {job_id} (run {run}) failed: {reason}");
                Self::mark(ctx, steps::ACTIONS_CALLBACK, StepState::Failed, reason.clone());
                return Err(reason);
            }
            None => {
                let reason = format!(
                    "no final callback from GitHub Actions job {job_id} (run {run}) within {deadline}s; \
                     check the provision-agent.yml run on GitHub"
                );
                Self::mark(ctx, steps::ACTIONS_CALLBACK, StepState::Failed, reason.clone());
                return Err(reason);
            }
        }

        // 5. Record the device the VM joined as.
        Self::mark(ctx, steps::TAILSCALE_DEVICE, StepState::Running, "");
        let device_id = ctx
            .execute_activity(
                ProvisioningActivities::find_tailscale_device,
                agent,
                api_step(&format!("Tailscale: find device {}", server_name(&req.agent_id))),
            )
            .await
            .map_err(|e| Self::fail(ctx, steps::TAILSCALE_DEVICE, &e))?;
        let detail = match &device_id {
            Some(id) => format!("device {id}"),
            None => "VM has not joined the tailnet yet".to_owned(),
        };
        Self::mark(ctx, steps::TAILSCALE_DEVICE, StepState::Done, detail);
        ctx.upsert_search_attributes([search_attributes::STATUS.value_set("active".to_owned())]);

        Ok(ProvisionResult {
            server,
            tailscale: TailscaleRef { key_id: key.key_id, device_id },
            actions_run_id: run_id,
        })
    }

    /// Runs the compensations in reverse; returns the ones that failed, with why.
    async fn compensate(ctx: &mut WorkflowContext<Self>, compensations: &[AgentUndo]) -> Vec<String> {
        ctx.upsert_search_attributes([search_attributes::STATUS.value_set("failed".to_owned())]);
        let failed = saga::compensate(ctx, compensations).await;
        if !failed.is_empty() {
            // Something the saga created may still exist (and cost money): make it findable.
            ctx.upsert_search_attributes([search_attributes::STATUS.value_set("needs_attention".to_owned())]);
        }
        failed
    }
}

impl Saga for ProvisionAgentWorkflow {
    type Undo = AgentUndo;

    fn steps_mut(&mut self) -> &mut Vec<StepProgress> {
        &mut self.steps
    }

    fn record_changes(&mut self, at: &str) {
        record_step_changes(&mut self.changes, &self.steps, at);
    }

    fn steps(&self) -> &[StepProgress] {
        &self.steps
    }

    fn details(&self) -> String {
        let r = &self.req;
        crate::details::saga(
            &format!("Provisioning agent {} for {} in {}", r.agent_id, r.user_id, r.region),
            &self.steps,
        )
    }

    fn undoes(undo: AgentUndo) -> &'static [&'static str] {
        match undo {
            AgentUndo::RevokeKeys => &[steps::TAILSCALE_KEY],
            AgentUndo::DeleteServer => &[steps::HETZNER_SERVER],
            AgentUndo::RemoveDevices => &[steps::TAILSCALE_DEVICE],
        }
    }

    async fn undo(
        ctx: &mut WorkflowContext<Self>,
        undo: AgentUndo,
    ) -> Result<String, ActivityExecutionError> {
        let agent = AgentResources { agent_id: ctx.state(|s| s.req.agent_id.clone()) };
        undo.run(ctx, &agent, compensation_step).await
    }

    fn leftover(&self, undo: AgentUndo, error: &str) -> String {
        format!("{} compensation failed: {error}", Self::undoes(undo)[0])
    }
}
