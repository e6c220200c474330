//! What a coding job needs to know about Slipway itself, asked of Temporal: whether its GitHub
//! account is linked to a customer in good standing (the `GitHubLinks` and `Subscription`
//! workflows' queries), and a seat at that customer's `JobGate` (started if it is not running).
//!
//! These used to be asked by the starter before it answered GitHub, which made a webhook wait on
//! two queries and two starts, each needing a worker, against GitHub's 10 s limit. Asked here, by
//! the job's own workflow, the webhook needs one durable call, and each attempt of a job can ask
//! again (a subscription may lapse between a failure and its retry).
//!
//! The workflows live in a crate that depends on this one, so they are addressed by their
//! registered names (`GitHubLinks.get`, `Subscription.entitlement`, `JobGate.enqueue`); the
//! `lookups_use_the_registered_names` test in `slipway-workflows` (`job.rs`) keeps them in step.

use std::sync::Arc;

use serde::{Serialize, de::DeserializeOwned};
use slipway_proto::{
    billing::{Entitlement, customer_workflow_id},
    jobs::{
        GateSeat, GitHubLink, JobEntitlement, JobGateInput, github_links_workflow_id, job_gate_workflow_id,
    },
};
use temporalio_client::{
    Client, UntypedSignal, UntypedWorkflow, WorkflowStartOptions, errors::WorkflowStartError,
};
use temporalio_common::search_attributes::SearchAttributes;
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
}

/// The lookups.
#[derive(Clone)]
pub struct LookupActivities {
    client: Client,
    task_queue: String,
}

impl std::fmt::Debug for LookupActivities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupActivities").field("task_queue", &self.task_queue).finish_non_exhaustive()
    }
}

impl LookupActivities {
    /// Over a Temporal client of this deployment (`task_queue` names its singletons).
    pub fn new(client: Client, task_queue: String) -> Self {
        Self { client, task_queue }
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
                .static_summary(format!("job slots of {}", seat.customer_id))
                .build();
        let call = self.client.signal_with_start_workflow(
            UntypedWorkflow::new(names::GATE),
            raw(&gate),
            UntypedSignal::new(names::ENQUEUE),
            raw(&seat.job_id),
            options,
        );
        match call.await {
            Ok(_) => Ok(()),
            Err(WorkflowStartError::PayloadConversion(e)) => Err(permanent(e.to_string())),
            Err(e) => Err(transient(format!("the job gate of {}: {e}", seat.customer_id))),
        }
    }
}
