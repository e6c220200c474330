//! The saga kit: what `ProvisionAgent`, `ClientStack`, `Job` and the `Agent`'s destroy share,
//! so each reads as its business steps.
//!
//! - **Step tracking** ([`fresh_steps`], [`Saga::mark`], [`Saga::fail`]): every step is
//!   `pending → running → done | failed (→ compensated)`, with a one-line detail, kept in the
//!   workflow's state (its query shows it, with the log of changes where the saga keeps one,
//!   [`Saga::record_changes`]) and rendered into the Web UI's current details at every change.
//!   Neither is a command: they never touch the history.
//! - **Compensations** ([`compensate`]): undo actions registered as the saga goes, run once each,
//!   in reverse, each isolated (one failing never skips the others), each an activity the saga
//!   chooses the options of (detached cancellation, long retries). A step never started stays
//!   pending; a failed step keeps its failure with the rollback's result appended; the others
//!   become `compensated`. What could not be undone comes back as "left behind" lines.
//! - **Agent teardown** ([`AgentUndo`]): the three undo actions of an agent's resources, in the
//!   one order both the saga's rollback and the `Agent`'s destroy use.
//!
//! Commands are exactly those the four hand-written copies issued (same activities, order,
//! options and summaries): the recorded histories replay unchanged.

use std::future::Future;

use slipway_activities::ProvisioningActivities;
use slipway_proto::model::{AgentResources, StepProgress, StepState, server_name};
use temporalio_sdk::{ActivityExecutionError, ActivityOptions, WorkflowContext};

use crate::failure;

/// Every step of `names`, pending.
pub(crate) fn fresh_steps(names: &[&str]) -> Vec<StepProgress> {
    names
        .iter()
        .map(|n| StepProgress { name: (*n).to_owned(), state: StepState::Pending, detail: String::new() })
        .collect()
}

/// Sets a step's state and detail (unknown names are ignored).
pub(crate) fn set_step(steps: &mut [StepProgress], name: &str, state: StepState, detail: impl Into<String>) {
    if let Some(step) = steps.iter_mut().find(|s| s.name == name) {
        step.state = state;
        step.detail = detail.into();
    }
}

/// A workflow with tracked steps and, optionally, compensations.
pub(crate) trait Saga: Sized {
    /// Its undo actions.
    type Undo: Copy;

    /// Its steps.
    fn steps_mut(&mut self) -> &mut Vec<StepProgress>;

    /// Its steps.
    fn steps(&self) -> &[StepProgress];

    /// The Web UI's current details, from the state.
    fn details(&self) -> String;

    /// The steps an undo reverts.
    fn undoes(undo: Self::Undo) -> &'static [&'static str];

    /// Runs one undo; `Ok` carries what it did, for the step's detail.
    fn undo(
        ctx: &mut WorkflowContext<Self>,
        undo: Self::Undo,
    ) -> impl Future<Output = Result<String, ActivityExecutionError>>;

    /// The "left behind" line of an undo that failed with `error`.
    fn leftover(&self, undo: Self::Undo, error: &str) -> String;

    /// Logs the changes of its steps since the last call, stamped `at` (a saga whose query
    /// shows a change log keeps one; the others keep none).
    fn record_changes(&mut self, _at: &str) {}

    /// Sets a step and republishes the current details.
    fn mark(ctx: &WorkflowContext<Self>, name: &str, state: StepState, detail: impl Into<String>) {
        let detail = detail.into();
        let at = crate::rfc3339_millis(ctx.workflow_time());
        ctx.state_mut(|s| {
            set_step(s.steps_mut(), name, state, detail);
            s.record_changes(&at);
        });
        ctx.set_current_details(ctx.state(Self::details));
    }

    /// Marks a step failed by `err`; returns the reason (`"<step>: <provider's words>"`).
    fn fail(ctx: &WorkflowContext<Self>, name: &str, err: &ActivityExecutionError) -> String {
        let reason = format!("{name}: {}", failure::activity(err));
        Self::mark(ctx, name, StepState::Failed, reason.clone());
        reason
    }
}

/// Runs `undo` once each, in reverse registration order; returns what was left behind.
pub(crate) async fn compensate<S: Saga>(ctx: &mut WorkflowContext<S>, undo: &[S::Undo]) -> Vec<String> {
    let mut leftovers = Vec::new();
    for u in undo.iter().rev().copied() {
        match S::undo(ctx, u).await {
            Ok(detail) => {
                for step in S::undoes(u) {
                    let (state, old) = ctx.state(|s| {
                        s.steps()
                            .iter()
                            .find(|x| x.name == *step)
                            .map_or((StepState::Pending, String::new()), |x| (x.state, x.detail.clone()))
                    });
                    match state {
                        // Never started: nothing was undone.
                        StepState::Pending => {}
                        // The failed step keeps its failure; the rollback result is appended.
                        StepState::Failed => {
                            S::mark(ctx, step, StepState::Failed, format!("{old}; rolled back: {detail}"))
                        }
                        _ => S::mark(ctx, step, StepState::Compensated, detail.clone()),
                    }
                }
            }
            Err(e) => {
                let left = ctx.state(|s| s.leftover(u, &failure::activity(&e)));
                for step in S::undoes(u) {
                    let previous = ctx.state(|s| s.steps().iter().find(|x| x.name == *step).map(|x| x.state));
                    S::mark(
                        ctx,
                        step,
                        previous.unwrap_or(StepState::Failed),
                        format!("rollback failed: {left}"),
                    );
                }
                leftovers.push(left);
            }
        }
    }
    leftovers
}

/// What an agent may hold at the providers, undone in [`AgentUndo::TEARDOWN`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentUndo {
    /// Revoke its Tailscale auth keys.
    RevokeKeys,
    /// Delete its Hetzner server.
    DeleteServer,
    /// Remove its tailnet devices.
    RemoveDevices,
}

impl AgentUndo {
    /// The order a whole agent comes down in: devices first (it leaves the tailnet), then its
    /// server, then the keys that could bring a device back.
    pub(crate) const TEARDOWN: [Self; 3] = [Self::RemoveDevices, Self::DeleteServer, Self::RevokeKeys];

    /// What it is about, in a destroy's problem list.
    pub(crate) fn resource(self) -> &'static str {
        match self {
            Self::RevokeKeys => "tailscale keys",
            Self::DeleteServer => "server",
            Self::RemoveDevices => "tailscale devices",
        }
    }

    /// Runs it as an activity with the options `opts` gives for its summary.
    pub(crate) async fn run<W>(
        self,
        ctx: &mut WorkflowContext<W>,
        agent: &AgentResources,
        opts: impl Fn(&str) -> ActivityOptions,
    ) -> Result<String, ActivityExecutionError> {
        let id = &agent.agent_id;
        match self {
            Self::RemoveDevices => ctx
                .execute_activity(
                    ProvisioningActivities::remove_tailscale_devices,
                    agent.clone(),
                    opts(&format!("Tailscale: remove devices of {id}")),
                )
                .await
                .map(|n| format!("{n} device(s) removed")),
            Self::DeleteServer => ctx
                .execute_activity(
                    ProvisioningActivities::delete_agent_server,
                    agent.clone(),
                    opts(&format!("Hetzner: delete server {}", server_name(id))),
                )
                .await
                .map(|deleted| if deleted { "server deleted" } else { "no server to delete" }.to_owned()),
            Self::RevokeKeys => ctx
                .execute_activity(
                    ProvisioningActivities::revoke_tailscale_keys,
                    agent.clone(),
                    opts(&format!("Tailscale: revoke auth keys of {id}")),
                )
                .await
                .map(|n| format!("{n} key(s) revoked")),
        }
    }
}
