//! The `Agent` workflow (`agent-<id>`): created as a draft, provisioned by signal-with-start
//! (a paid checkout: durable at once, run by the agent in turn) or update (the API, which
//! answers with the outcome), commanded, held for a checkout, read, listed.

use futures::StreamExt;
use slipway_proto::model::{
    AgentRecord, AgentSummary, AgentWorkflowInput, CheckoutHold, CommandOutcome, CommandRequest,
    LifecyclePolicy, OpenCheckout, ProvisionCommand, ProvisionOutcome, ProvisioningPolicy, agent_workflow_id,
};
use slipway_workflows::{AgentWorkflow, search_attributes};
use temporalio_client::{
    WorkflowExecuteUpdateOptions, WorkflowIdConflictPolicy, WorkflowListOptions, WorkflowQueryOptions,
    WorkflowSignalOptions, WorkflowStartOptions, errors::ClientError,
};

use super::{Gateway, GatewayError};

impl Gateway {
    fn agent_handle(
        &self,
        client: &temporalio_client::Client,
        agent_id: &str,
    ) -> temporalio_client::WorkflowHandle<temporalio_client::Client, AgentWorkflow> {
        client.get_workflow_handle::<AgentWorkflow>(agent_workflow_id(agent_id))
    }

    /// How an agent's workflow starts: its id never reused once closed (a destroyed agent stays
    /// destroyed), with its search attributes, summary and memo.
    fn agent_start(
        &self,
        agent: &AgentRecord,
        customer_id: Option<&str>,
        conflict: WorkflowIdConflictPolicy,
    ) -> WorkflowStartOptions {
        slipway_workflows::agent_start_options(&self.task_queue, agent, customer_id, conflict)
    }

    /// Hand a paid checkout to the agent's workflow, starting it if needed (signal-with-start):
    /// durable once this returns, without waiting for a worker. The agent drops a redelivery
    /// (same event id) and records what became of it. A closed agent workflow (destroyed) is
    /// never resurrected by a late event: `Closed`.
    pub async fn checkout_paid(
        &self,
        agent: AgentRecord,
        policy: ProvisioningPolicy,
        lifecycle: LifecyclePolicy,
        customer_id: Option<&str>,
        cmd: ProvisionCommand,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let options = self.agent_start(&agent, customer_id, WorkflowIdConflictPolicy::UseExisting);
        let input = AgentWorkflowInput::new(agent, policy, lifecycle, self.protocol);
        let call = client.signal_with_start_workflow(
            AgentWorkflow::run,
            input,
            AgentWorkflow::checkout,
            cmd,
            options,
        );
        match self.bounded(call).await? {
            Ok(_) => Ok(()),
            Err(e) if slipway_workflows::agent_closed(&e) => Err(GatewayError::Closed),
            Err(e) => Err(e.into()),
        }
    }

    /// Create an agent's workflow in `draft`; `Closed` if the id exists.
    pub async fn create_agent(
        &self,
        agent: AgentRecord,
        policy: ProvisioningPolicy,
        lifecycle: LifecyclePolicy,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let options = self.agent_start(&agent, None, WorkflowIdConflictPolicy::Fail);
        let input = AgentWorkflowInput::new(agent, policy, lifecycle, self.protocol);
        self.call(client.start_workflow(AgentWorkflow::run, input, options)).await.map(drop)
    }

    /// Agents matching a visibility query, from search attributes and memo only: listing never
    /// wakes workflows (a query per agent would need a worker for each, closed ones included).
    pub async fn list_agents(&self, query: &str, limit: usize) -> Result<Vec<AgentSummary>, GatewayError> {
        let client = self.client().await?;
        self.call(async {
            let mut stream =
                client.list_workflows(query.to_owned(), WorkflowListOptions::builder().limit(limit).build());
            let mut out = Vec::new();
            while let Some(exec) = stream.next().await {
                let exec = exec?;
                let attrs = exec.search_attributes();
                let memo = exec.memo();
                let text = |k: &str| memo.get::<String>(k).ok().flatten().unwrap_or_default();
                let Some(agent_id) = attrs.get(&search_attributes::AGENT_ID) else { continue };
                out.push(AgentSummary {
                    agent_id,
                    user_id: attrs.get(&search_attributes::USER_ID).unwrap_or_default(),
                    name: text("name"),
                    region: text("region"),
                    status: attrs.get(&search_attributes::STATUS).unwrap_or_default(),
                });
            }
            Ok::<_, ClientError>(out)
        })
        .await
    }

    /// Provision an existing agent (API path).
    pub async fn provision_existing(
        &self,
        agent_id: &str,
        cmd: ProvisionCommand,
        request_id: String,
    ) -> Result<ProvisionOutcome, GatewayError> {
        let client = self.client().await?;
        let opts = WorkflowExecuteUpdateOptions::builder().update_id(request_id).build();
        self.call(self.agent_handle(client, agent_id).execute_update(AgentWorkflow::provision, cmd, opts))
            .await
    }

    /// Run a stop / start / destroy on an agent.
    pub async fn command(
        &self,
        agent_id: &str,
        request: CommandRequest,
        request_id: String,
    ) -> Result<CommandOutcome, GatewayError> {
        let client = self.client().await?;
        let opts = WorkflowExecuteUpdateOptions::builder().update_id(request_id).build();
        self.call(self.agent_handle(client, agent_id).execute_update(AgentWorkflow::command, request, opts))
            .await
    }

    /// Hold a draft agent for a Checkout Session about to be created.
    pub async fn hold_for_checkout(
        &self,
        agent_id: &str,
        hold: CheckoutHold,
    ) -> Result<CommandOutcome, GatewayError> {
        let client = self.client().await?;
        let opts = WorkflowExecuteUpdateOptions::builder().build();
        self.call(self.agent_handle(client, agent_id).execute_update(
            AgentWorkflow::hold_for_checkout,
            hold,
            opts,
        ))
        .await
    }

    /// Record the Checkout Session created under a hold (`None` lifts the hold).
    pub async fn checkout_opened(
        &self,
        agent_id: &str,
        open: Option<OpenCheckout>,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let opts = WorkflowSignalOptions::builder().build();
        self.call(self.agent_handle(client, agent_id).signal(AgentWorkflow::checkout_opened, open, opts))
            .await
    }

    /// The agent's record, or `NotFound`.
    pub async fn agent(&self, agent_id: &str) -> Result<AgentRecord, GatewayError> {
        let client = self.client().await?;
        let opts = WorkflowQueryOptions::default();
        self.call(self.agent_handle(client, agent_id).query(AgentWorkflow::describe, (), opts)).await
    }
}
