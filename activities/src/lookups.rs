//! What a coding job needs to know about Slipway itself, asked of Temporal: whether its GitHub
//! account is linked to a customer in good standing (the `GitHubLinks` and `Subscription`
//! workflows' queries), and a seat at that customer's `JobGate` (started if it is not running).
//! The gate asks here too, which of its slot holders have closed ([`GateCheck`]): a job that is
//! terminated never sends `release`, and without the check its slot would stay taken for good.
//! A client stack that succeeded tells its `StackRecord` here what it holds. A customer's
//! workflow starts an agent's here when a paid checkout names an agent whose workflow is not
//! running ([`LookupActivities::start_agent_for_checkout`]).
//!
//! These used to be asked by the starter before it answered GitHub, which made a webhook wait on
//! two queries and two starts, each needing a worker, against GitHub's 10 s limit. Asked here, by
//! the job's own workflow, the webhook needs one durable call, and each attempt of a job can ask
//! again (a subscription may lapse between a failure and its retry).
//!
//! The workflows live in a crate that depends on this one, so they are addressed by their
//! registered names (`GitHubLinks.get`, `Subscription.entitlement`, `JobGate.enqueue`); the
//! `lookups_use_the_registered_names` test in `slipway-workflows` (`job.rs`) keeps them in step.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use slipway_proto::{
    billing::{CheckoutHandoff, Entitlement, customer_workflow_id},
    jobs::{
        GateSeat, GitHubLink, JobEntitlement, JobGateInput, github_links_workflow_id, job_gate_workflow_id,
    },
    model::{AgentRecord, agent_workflow_id},
    stack::{ClientStackStatus, stack_record_workflow_id},
};
use temporalio_client::{
    Client, UntypedSignal, UntypedWorkflow, WorkflowExecutionStatus, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowStartOptions, errors::WorkflowStartError,
};
use temporalio_common::{MemoValues, search_attributes::SearchAttributes};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::temporal_ask::{self, permanent, raw, transient};

/// Registered names of the workflows and handlers asked.
pub mod names {
    /// The GitHub links singleton.
    pub const LINKS: &str = "GitHubLinks";
    /// Its query of one account's link.
    pub const LINKS_GET: &str = "get";
    /// A customer's billing workflow.
    pub const SUBSCRIPTION: &str = "Subscription";
    /// Its query of the customer's entitlement.
    pub const ENTITLEMENT: &str = "entitlement";
    /// A customer's job gate.
    pub const GATE: &str = "JobGate";
    /// Its signal queueing a job.
    pub const ENQUEUE: &str = "enqueue";
    /// A client stack's record of what it holds.
    pub const STACK_RECORD: &str = "StackRecord";
    /// Its signal with a stack run's final status.
    pub const SETTLED: &str = "settled";
    /// An agent's workflow.
    pub const AGENT: &str = "Agent";
    /// Its signal with a paid checkout.
    pub const CHECKOUT: &str = "checkout";
}

/// Whether a start of an agent's workflow (with [`agent_start_options`]) was refused because the
/// agent is closed: its id belongs to a closed run that may not be reused, i.e. it was destroyed,
/// and a late event must not bring it back. One answer for every place that starts agents.
pub fn agent_closed(err: &WorkflowStartError) -> bool {
    matches!(err, WorkflowStartError::Rpc(status) if status.code() == tonic::Code::AlreadyExists)
}

/// How an agent's workflow starts, wherever it is started (the starter's API and checkouts, a
/// customer's workflow handing a checkout over): its id never reused once closed (a destroyed
/// agent stays destroyed), with its search attributes, summary and memo (name, region: what
/// listing reads without waking the workflow).
pub fn agent_start_options(
    task_queue: &str,
    agent: &AgentRecord,
    customer_id: Option<&str>,
    conflict: WorkflowIdConflictPolicy,
) -> WorkflowStartOptions {
    use crate::search_attributes as sa;
    let mut attrs = vec![
        sa::AGENT_ID.value_set(agent.agent_id.clone()),
        sa::USER_ID.value_set(agent.user_id.clone()),
        sa::STATUS.value_set(agent.status.as_str().to_owned()),
    ];
    if let Some(c) = customer_id {
        attrs.push(sa::CUSTOMER_ID.value_set(c.to_owned()));
    }
    let mut memo = MemoValues::new();
    memo.insert("name", agent.name.clone());
    memo.insert("region", agent.region.clone());
    WorkflowStartOptions::new(task_queue.to_owned(), agent_workflow_id(&agent.agent_id))
        .id_conflict_policy(conflict)
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .search_attributes(SearchAttributes::new(attrs))
        .static_summary(format!("agent {} of {}", agent.agent_id, agent.user_id))
        .memo(memo)
        .build()
}

/// What a job gate learns from checking its slot holders ([`LookupActivities::closed_holders`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCheck {
    /// Holders whose workflow no longer runs (closed any way, or gone): their slots are free.
    pub closed: Vec<String>,
    /// When the gate should check again, while it has holders (the worker's
    /// `SLIPWAY_JOB_GATE_CHECK_SECS`, so an operator changes it without touching histories).
    pub next_check_secs: u64,
}

/// The lookups.
#[derive(Clone)]
pub struct LookupActivities {
    client: Client,
    task_queue: String,
    gate_check: Duration,
}

impl std::fmt::Debug for LookupActivities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupActivities")
            .field("task_queue", &self.task_queue)
            .field("gate_check", &self.gate_check)
            .finish_non_exhaustive()
    }
}

impl LookupActivities {
    /// Over a Temporal client of this deployment (`task_queue` names its singletons); job gates
    /// check their slot holders every `gate_check` while they have any.
    pub fn new(client: Client, task_queue: String, gate_check: Duration) -> Self {
        Self { client, task_queue, gate_check }
    }

    /// `workflow.query(arg)`, or `None` if the workflow does not exist.
    async fn query<I: Serialize + 'static, O: DeserializeOwned>(
        &self,
        workflow_id: &str,
        query: &str,
        arg: &I,
    ) -> Result<Option<O>, ActivityError> {
        temporal_ask::query(&self.client, workflow_id, query, arg).await
    }
}

#[activities]
impl LookupActivities {
    /// The job's entitlement: its account's link, then that customer's standing.
    #[activity]
    pub async fn job_entitlement(
        self: Arc<Self>,
        _ctx: ActivityContext,
        account: String,
    ) -> Result<JobEntitlement, ActivityError> {
        let links = github_links_workflow_id(&self.task_queue);
        let link: Option<Option<GitHubLink>> = self.query(&links, names::LINKS_GET, &account).await?;
        let Some(link) = link.flatten() else {
            return Ok(JobEntitlement {
                customer_id: None,
                user_id: None,
                refusal: Some(format!(
                    "the GitHub account `{account}` is not linked to a Slipway subscription; ask a Slipway admin to link it, then comment `/slipway retry`"
                )),
            });
        };
        let customer = customer_workflow_id(&link.customer_id);
        let standing: Option<Entitlement> = self.query(&customer, names::ENTITLEMENT, &()).await?;
        Ok(if standing.is_some_and(|e| e.entitled) {
            JobEntitlement { customer_id: Some(link.customer_id), user_id: Some(link.user_id), refusal: None }
        } else {
            JobEntitlement {
                customer_id: None,
                user_id: Some(link.user_id),
                refusal: Some(
                    "the linked Slipway subscription is not active; comment `/slipway retry` once it is"
                        .to_owned(),
                ),
            }
        })
    }

    /// Queues the job at its customer's gate, starting the gate if it is not running.
    #[activity]
    pub async fn take_gate_seat(
        self: Arc<Self>,
        _ctx: ActivityContext,
        seat: GateSeat,
    ) -> Result<(), ActivityError> {
        let gate = JobGateInput {
            customer_id: seat.customer_id.clone(),
            max_running: seat.max_running,
            running: Vec::new(),
            waiting: Vec::new(),
        };
        let options =
            WorkflowStartOptions::new(self.task_queue.clone(), job_gate_workflow_id(&seat.customer_id))
                .search_attributes(SearchAttributes::new([
                    crate::search_attributes::CUSTOMER_ID.value_set(seat.customer_id.clone())
                ]))
                .static_summary("job slots of one customer (its id is the workflow id)".to_owned())
                .build();
        let what = format!("the job gate of {}", seat.customer_id);
        self.signal_with_start(names::GATE, raw(&gate), names::ENQUEUE, raw(&seat.job_id), options, &what)
            .await
    }

    /// Hands a client stack's final status to its `StackRecord` (started if it is not running),
    /// the owner of the stack's resources once the saga's workflow is gone.
    #[activity]
    pub async fn record_stack(
        self: Arc<Self>,
        _ctx: ActivityContext,
        status: ClientStackStatus,
    ) -> Result<(), ActivityError> {
        let options =
            WorkflowStartOptions::new(self.task_queue.clone(), stack_record_workflow_id(&status.client_id))
                .static_summary(format!("what the client stack of {} holds", status.client_id))
                .build();
        let what = format!("the stack record of {}", status.client_id);
        self.signal_with_start(
            names::STACK_RECORD,
            raw(&status),
            names::SETTLED,
            raw(&status),
            options,
            &what,
        )
        .await
    }

    /// Starts the agent's workflow of a paid checkout with the checkout (signal-with-start), for
    /// a customer's workflow whose signal found no running agent: a checkout made outside the
    /// API. `false`: the agent's id belongs to a closed run that may not be reused (destroyed),
    /// and nothing is started.
    #[activity]
    pub async fn start_agent_for_checkout(
        self: Arc<Self>,
        _ctx: ActivityContext,
        handoff: CheckoutHandoff,
    ) -> Result<bool, ActivityError> {
        let options = agent_start_options(
            &self.task_queue,
            &handoff.agent.agent,
            handoff.customer_id.as_deref(),
            WorkflowIdConflictPolicy::UseExisting,
        );
        let call = self.client.signal_with_start_workflow(
            UntypedWorkflow::new(names::AGENT),
            raw(&handoff.agent),
            UntypedSignal::new(names::CHECKOUT),
            raw(&handoff.command),
            options,
        );
        match call.await {
            Ok(_) => Ok(true),
            Err(e) if agent_closed(&e) => Ok(false),
            Err(WorkflowStartError::PayloadConversion(e)) => Err(permanent(e.to_string())),
            Err(e) => Err(transient(format!("agent {}: {e}", handoff.agent.agent.agent_id))),
        }
    }

    /// Which of `holders` (workflow ids of jobs holding a slot) have closed: terminated, timed
    /// out, or ended any other way without sending `release`, or not found at all. A holder
    /// that cannot be asked fails the attempt (retried): a slot is only freed on an answer.
    #[activity]
    pub async fn closed_holders(
        self: Arc<Self>,
        _ctx: ActivityContext,
        holders: Vec<String>,
    ) -> Result<GateCheck, ActivityError> {
        let asks = holders.iter().map(|id| temporal_ask::status(&self.client, id));
        let statuses = futures::future::try_join_all(asks).await?;
        let closed = holders
            .into_iter()
            .zip(statuses)
            .filter(|(_, status)| has_closed(*status))
            .map(|(id, _)| id)
            .collect();
        Ok(GateCheck { closed, next_check_secs: self.gate_check.as_secs().max(1) })
    }
}

impl LookupActivities {
    /// Signal-with-start of a workflow by its registered names: durable once it returns. A
    /// payload that cannot be written fails for good; anything else (Temporal unreachable) is
    /// worth another attempt.
    async fn signal_with_start(
        &self,
        workflow: &str,
        input: temporalio_common::data_converters::RawValue,
        signal: &str,
        arg: temporalio_common::data_converters::RawValue,
        options: WorkflowStartOptions,
        what: &str,
    ) -> Result<(), ActivityError> {
        let call = self.client.signal_with_start_workflow(
            UntypedWorkflow::new(workflow),
            input,
            UntypedSignal::new(signal),
            arg,
            options,
        );
        match call.await {
            Ok(_) => Ok(()),
            Err(WorkflowStartError::PayloadConversion(e)) => Err(permanent(e.to_string())),
            Err(e) => Err(transient(format!("{what}: {e}"))),
        }
    }
}

/// Whether a holder with this status (`None`: not found) has closed and so left its slot. A paused
/// holder will resume and an unknown status is not guessed at: both keep their slot, as a
/// running one does (freeing a live job's slot would let the customer exceed its cap).
fn has_closed(status: Option<WorkflowExecutionStatus>) -> bool {
    use WorkflowExecutionStatus as S;
    status.is_none_or(|s| {
        matches!(s, S::Completed | S::Failed | S::Canceled | S::Terminated | S::ContinuedAsNew | S::TimedOut)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_has_closed_once_it_ended_or_is_gone_not_while_it_runs_or_pauses() {
        use WorkflowExecutionStatus as S;
        assert!(has_closed(None));
        for s in [S::Completed, S::Failed, S::Canceled, S::Terminated, S::ContinuedAsNew, S::TimedOut] {
            assert!(has_closed(Some(s)), "{s:?}");
        }
        for s in [S::Running, S::Paused, S::Unspecified, S::Unknown] {
            assert!(!has_closed(Some(s)), "{s:?}");
        }
    }
}
