//! `JobGate`: one per customer (`job-gate-<customer>`), lets at most `max_running` of the
//! customer's jobs run at once. Jobs ask with `enqueue`, give back with `release`; the gate
//! answers with the job's `slot_granted` signal, in arrival order. Waiting jobs show as `queued`.
//!
//! A job that closes without sending `release` (an operator terminates it, a run timeout ends
//! it) would hold its slot for ever, and once the customer's cap is reached every other job of
//! theirs would wait for good. So while the gate has holders it checks them: at once when it
//! first has some (this tells it how often to check: the worker's `SLIPWAY_JOB_GATE_CHECK_SECS`,
//! default 300 s), then on a timer, asking Temporal which of them have closed
//! (`LookupActivities::closed_holders`) and freeing their slots. The timer runs across changes
//! (a busy gate still checks on time) and is cancelled when the last holder leaves: an idle gate
//! adds nothing to its history. Runs recorded before the check (without [`CHECK_PATCH`]) replay
//! without it.

use std::time::Duration;

use slipway_activities::LookupActivities;
use slipway_proto::jobs::JobGateInput;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    CancellableFuture, ContinueAsNewOptions, SignalWorkflowOptions, SyncWorkflowContext, TimerOptions,
    WorkflowContext, WorkflowContextView, WorkflowResult, workflows::select,
};

use crate::JobWorkflow;

/// Gates started before they checked their holders replay without checking.
pub const CHECK_PATCH: &str = "job-gate-checks-holders";

/// How often holders are checked when the worker could not be asked (the setting's default).
const FALLBACK_CHECK: Duration = Duration::from_secs(300);

/// The gate workflow.
#[workflow]
pub struct JobGateWorkflow {
    input: JobGateInput,
    changes: u64,
    /// The run checks its holders ([`CHECK_PATCH`]).
    checks: bool,
    /// Holders that asked again: a new run of a job whose previous run closed holding the slot
    /// (terminated, then retried before a check noticed). Granted again, or it would wait for a
    /// slot it already holds.
    regrant: Vec<String>,
}

#[workflow_methods]
impl JobGateWorkflow {
    /// Restores the gate.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: JobGateInput) -> Self {
        Self { input, changes: 1, checks: false, regrant: Vec::new() }
    }

    /// Grants slots as they free up (and, while jobs hold slots, checks that they still run).
    #[run(name = "JobGate")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        let checks = ctx.patched(CHECK_PATCH);
        ctx.state_mut(|s| s.checks = checks);
        let mut seen = 0;
        // How often to check the holders: unknown until the first check answers.
        let mut every: Option<Duration> = None;
        // The check timer outlives loop iterations, so it is made through a context of its own
        // (a timer borrows the context that made it).
        let timers = ctx.clone();
        let mut check_timer = None;
        loop {
            let holders = checks && ctx.state(|s| !s.input.running.is_empty());
            if !holders && let Some(timer) = check_timer.take() {
                // An idle gate keeps no timer: its firing would only add history.
                CancellableFuture::cancel(&timer);
            }
            let due = if !holders {
                ctx.wait_condition(|s: &Self| s.changes != seen).await?;
                false
            } else if let Some(every) = every {
                let timer = check_timer.get_or_insert_with(|| {
                    timers.timer(
                        TimerOptions::builder(every).summary("check the slot holders".to_owned()).build(),
                    )
                });
                select! {
                    r = ctx.wait_condition(|s: &Self| s.changes != seen) => { r?; false },
                    _ = &mut *timer => true,
                }
            } else {
                // The first holders of this run: check them now, which says how often to.
                true
            };
            if due {
                check_timer = None;
                every = Some(Self::free_closed_slots(ctx).await.unwrap_or(every.unwrap_or(FALLBACK_CHECK)));
            }
            seen = ctx.state(|s| s.changes);
            let granted = ctx.state_mut(|s| {
                let mut granted = std::mem::take(&mut s.regrant);
                while (s.input.running.len() as u32) < s.input.max_running && !s.input.waiting.is_empty() {
                    let job = s.input.waiting.remove(0);
                    s.input.running.push(job.clone());
                    granted.push(job);
                }
                granted
            });
            for job in granted {
                // A job that no longer runs cannot take its slot: give it back.
                let sent = ctx
                    .external_workflow(job.clone(), None)
                    .signal(JobWorkflow::slot_granted, (), SignalWorkflowOptions::default())
                    .await;
                if sent.is_err() {
                    ctx.state_mut(|s| {
                        s.input.running.retain(|j| j != &job);
                        s.changes += 1;
                    });
                }
            }
            if ctx.continue_as_new_suggested() && ctx.all_handlers_finished() {
                let input = ctx.state(|s| s.input.clone());
                ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
            }
        }
    }

    /// Asks which holders have closed and frees their slots (and any place they still hold in
    /// the queue); `Some(next check interval)`, or `None` if the worker could not answer (the
    /// holders are then checked again at the next interval).
    async fn free_closed_slots(ctx: &mut WorkflowContext<Self>) -> Option<Duration> {
        let holders = ctx.state(|s| s.input.running.clone());
        // Summaries are user metadata, which the payload codec does not reach: no customer ids.
        let opts =
            crate::options::retrying("Slipway: job slots still held", Duration::from_secs(60), None, 5);
        let check = ctx.execute_activity(LookupActivities::closed_holders, holders, opts).await.ok()?;
        if !check.closed.is_empty() {
            ctx.state_mut(|s| {
                s.input.running.retain(|j| !check.closed.contains(j));
                s.input.waiting.retain(|j| !check.closed.contains(j));
                s.changes += 1;
            });
        }
        Some(Duration::from_secs(check.next_check_secs.max(1)))
    }

    /// A job asks for a slot (idempotent).
    #[signal]
    pub fn enqueue(&mut self, _ctx: &mut SyncWorkflowContext<Self>, job_id: String) {
        if self.checks && self.input.running.contains(&job_id) && !self.regrant.contains(&job_id) {
            self.regrant.push(job_id);
            self.changes += 1;
        } else if !self.input.running.contains(&job_id) && !self.input.waiting.contains(&job_id) {
            self.input.waiting.push(job_id);
            self.changes += 1;
        }
    }

    /// A job gives its slot back (or leaves the queue).
    #[signal]
    pub fn release(&mut self, _ctx: &mut SyncWorkflowContext<Self>, job_id: String) {
        self.input.running.retain(|j| j != &job_id);
        self.input.waiting.retain(|j| j != &job_id);
        self.changes += 1;
    }

    /// Running and waiting jobs.
    #[query]
    pub fn snapshot(&self, _ctx: &WorkflowContextView) -> JobGateInput {
        self.input.clone()
    }
}
