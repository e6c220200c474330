//! `Agent`: one long-lived workflow per agent (`agent-<agent_id>`), the single writer of the
//! agent's state.
//!
//! Why long-lived: Stripe redelivers an event for days, and later than Temporal keeps closed
//! histories. A workflow that stays open answers a late duplicate from its own state
//! ("already active") instead of provisioning again.
//!
//! Provisioning requests arrive as the `provision` update (the starter uses update-with-start,
//! keyed by the Stripe event id). The update answers only once the outcome is known: the saga
//! started, it was already running or done, or it was refused because the owner already has a
//! provisioning in flight. That answer is what the starter turns into 2xx or 409.

use slipway_proto::model::{
    AgentRecord, AgentStatus, AgentWorkflowInput, AuditEntry, ProvisionCommand, ProvisionOutcome,
    ProvisionRequest, ProvisionResult, ProvisioningPolicy, provisioning_workflow_id,
};
use temporalio_common::search_attributes::SearchAttributes;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ChildWorkflowStartError, ParentClosePolicy, StartChildWorkflowExecutionFailedCause,
    WorkflowContext, WorkflowContextView, WorkflowIdReusePolicy, WorkflowResult,
};

use crate::{ProvisionAgentWorkflow, failure, search_attributes};

/// Stable refusal codes (also the API's error codes).
pub mod codes {
    /// The owner already has a provisioning running (for another agent).
    pub const PROVISIONING_IN_PROGRESS: &str = "PROVISIONING_IN_PROGRESS";
    /// The agent is in a state that cannot be provisioned.
    pub const AGENT_NOT_PROVISIONABLE: &str = "AGENT_NOT_PROVISIONABLE";
    /// Temporal refused to start the saga for another reason.
    pub const PROVISIONING_NOT_STARTED: &str = "PROVISIONING_NOT_STARTED";
}

/// The agent workflow.
#[workflow]
pub struct AgentWorkflow {
    agent: AgentRecord,
    policy: ProvisioningPolicy,
    /// A provisioning request waiting for the main loop, with its sequence number.
    pending: Option<(u64, ProvisionCommand)>,
    /// Outcome per sequence number, collected by the update that asked.
    outcome: Option<(u64, ProvisionOutcome)>,
    next_seq: u64,
}

#[workflow_methods]
impl AgentWorkflow {
    /// Restores the agent from its input (first start or continue-as-new).
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: AgentWorkflowInput) -> Self {
        Self { agent: input.agent, policy: input.policy, pending: None, outcome: None, next_seq: 0 }
    }

    /// Main loop: runs one provisioning at a time, as requested by the `provision` update.
    #[run(name = "Agent")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<AgentRecord> {
        let status = ctx.state(|s| s.agent.status);
        Self::publish(ctx, status);
        loop {
            ctx.wait_condition(|s: &Self| s.pending.is_some()).await?;
            let Some((seq, cmd)) = ctx.state_mut(|s| s.pending.take()) else { continue };
            Self::provision_once(ctx, seq, cmd).await;
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
            if let Some(answer) = Self::short_answer(s.agent.status, s.pending.is_some()) {
                return Err(answer);
            }
            s.next_seq += 1;
            s.pending = Some((s.next_seq, cmd));
            Ok(s.next_seq)
        });
        let seq = match seq {
            Ok(seq) => seq,
            Err(answer) => return Ok(answer),
        };
        ctx.wait_condition(|s: &Self| s.outcome.as_ref().is_some_and(|(n, _)| *n == seq)).await?;
        let outcome = ctx.state_mut(|s| s.outcome.take().map(|(_, o)| o));
        Ok(outcome.unwrap_or(ProvisionOutcome::AlreadyProvisioning))
    }

    /// The agent's full record.
    #[query]
    pub fn describe(&self, _ctx: &WorkflowContextView) -> AgentRecord {
        self.agent.clone()
    }
}

impl AgentWorkflow {
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
        // A request may have waited while the state changed: check again.
        if let Some(answer) = Self::short_answer(agent.status, false) {
            ctx.state_mut(|s| s.outcome = Some((seq, answer)));
            return;
        }
        let request = ProvisionRequest {
            agent_id: agent.agent_id.clone(),
            user_id: agent.user_id.clone(),
            region: agent.region.clone(),
            policy,
        };
        let saga_id = provisioning_workflow_id(&agent.user_id);
        let options = ChildWorkflowOptions::builder()
            .workflow_id(saga_id.clone())
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
                ctx.state_mut(|s| s.outcome = Some((seq, refusal)));
                return;
            }
        };
        let run_id = child.run_id.clone();
        let actor = cmd.source.actor();
        ctx.state_mut(|s| {
            s.agent.provisioning_workflow_id = Some(saga_id.clone());
            s.agent.provisioning_run_id = Some(run_id.clone());
            s.agent.failure_reason = None;
            s.outcome = Some((seq, ProvisionOutcome::Started { workflow_id: saga_id.clone(), run_id }));
        });
        Self::transition(ctx, AgentStatus::Provisioning, &actor, "provisioning started");

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
        let (agent_id, user_id) = ctx.state(|s| (s.agent.agent_id.clone(), s.agent.user_id.clone()));
        ctx.upsert_search_attributes([
            search_attributes::AGENT_ID.value_set(agent_id),
            search_attributes::USER_ID.value_set(user_id),
            search_attributes::STATUS.value_set(status.as_str().to_owned()),
        ]);
        ctx.set_current_details(format!("status: {status}"));
    }
}

/// RFC 3339 (UTC, seconds) from Unix seconds, without a date library in workflow code.
fn format_rfc3339(secs: u64) -> String {
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

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_795_305_600), "2026-11-22T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400 + 3_661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn duplicates_and_wrong_states_get_short_answers() {
        assert_eq!(AgentWorkflow::short_answer(AgentStatus::Draft, false), None);
        assert_eq!(AgentWorkflow::short_answer(AgentStatus::Failed, false), None);
        assert_eq!(
            AgentWorkflow::short_answer(AgentStatus::Draft, true),
            Some(ProvisionOutcome::AlreadyProvisioning)
        );
        assert_eq!(
            AgentWorkflow::short_answer(AgentStatus::Active, false),
            Some(ProvisionOutcome::AlreadyActive)
        );
        assert!(matches!(
            AgentWorkflow::short_answer(AgentStatus::Destroyed, false),
            Some(ProvisionOutcome::Refused { code, .. }) if code == codes::AGENT_NOT_PROVISIONABLE
        ));
    }
}
