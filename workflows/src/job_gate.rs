//! `JobGate`: one per customer (`job-gate-<customer>`), lets at most `max_running` of the
//! customer's jobs run at once. Jobs ask with `enqueue`, give back with `release`; the gate
//! answers with the job's `slot_granted` signal, in arrival order. Waiting jobs show as `queued`.

use slipway_proto::jobs::JobGateInput;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ContinueAsNewOptions, SignalWorkflowOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView,
    WorkflowResult,
};

use crate::JobWorkflow;

/// The gate workflow.
#[workflow]
pub struct JobGateWorkflow {
    input: JobGateInput,
    changes: u64,
}

#[workflow_methods]
impl JobGateWorkflow {
    /// Restores the gate.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: JobGateInput) -> Self {
        Self { input, changes: 1 }
    }

    /// Grants slots as they free up.
    #[run(name = "JobGate")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        let mut seen = 0;
        loop {
            ctx.wait_condition(|s: &Self| s.changes != seen).await?;
            seen = ctx.state(|s| s.changes);
            let granted = ctx.state_mut(|s| {
                let mut granted = Vec::new();
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

    /// A job asks for a slot (idempotent).
    #[signal]
    pub fn enqueue(&mut self, _ctx: &mut SyncWorkflowContext<Self>, job_id: String) {
        if !self.input.running.contains(&job_id) && !self.input.waiting.contains(&job_id) {
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
