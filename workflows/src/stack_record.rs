//! `StackRecord` (`stack-record-<client id>`): what a client stack that succeeded holds, for as
//! long as its resources live.
//!
//! The `ClientStack` saga closes when it succeeds, and Temporal's retention removes a closed
//! workflow (30 days in the shipped compose file). Its resources live on: read from Temporal
//! after that, their owner would be unknown. The saga therefore hands its final status to this
//! record before it completes (signal-with-start, so the first stack of a client starts it), and
//! the record idles until told something new: it costs no task while nothing changes, and
//! continues as new when its history grows. The orphan sweep asks it by id which resources the
//! stack holds; an owner with neither a record nor a saga is kept and reported, never deleted.

use slipway_proto::stack::ClientStackStatus;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ContinueAsNewOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// The record of one client's stack.
#[workflow]
pub struct StackRecordWorkflow {
    status: ClientStackStatus,
    changes: u64,
}

#[workflow_methods]
impl StackRecordWorkflow {
    /// The stack's status as the saga ended it (first start, or carried by continue-as-new).
    #[init]
    pub fn new(_ctx: &WorkflowContextView, status: ClientStackStatus) -> Self {
        Self { status, changes: 0 }
    }

    /// Idles between changes; continues as new when the history grows.
    #[run(name = "StackRecord")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        loop {
            let seen = ctx.state(|s| s.changes);
            ctx.wait_condition(|s: &Self| s.changes != seen).await?;
            if ctx.continue_as_new_suggested() && ctx.all_handlers_finished() {
                let status = ctx.state(|s| s.status.clone());
                ctx.continue_as_new(status, ContinueAsNewOptions::default())?;
            }
        }
    }

    /// A stack run of this client ended: what it holds now.
    #[signal]
    pub fn settled(&mut self, _ctx: &mut SyncWorkflowContext<Self>, status: ClientStackStatus) {
        if status.client_id == self.status.client_id {
            self.status = status;
            self.changes += 1;
        }
    }

    /// What the stack holds (the same shape as `ClientStack.status`).
    #[query]
    pub fn status(&self, _ctx: &WorkflowContextView) -> ClientStackStatus {
        self.status.clone()
    }
}
