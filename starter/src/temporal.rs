//! The starter's only door to Temporal.
//!
//! Two rules live here:
//! - **Durable before 2xx.** Every operation returns only once Temporal has accepted it (the
//!   update was accepted and answered by the workflow, the signal was persisted). Anything else
//!   (server down, slow, refusing) becomes [`GatewayError::Unavailable`], which the HTTP layer
//!   answers with 503 so the sender retries.
//! - **Lazy connection.** The starter starts and answers health checks while Temporal is down;
//!   it connects on first use and keeps retrying on later requests.

use std::{sync::Arc, time::Duration};

use slipway_proto::model::{
    ActionsCallback, AgentRecord, AgentWorkflowInput, ProvisionCommand, ProvisionOutcome, ProvisioningPolicy,
    ProvisioningProgress, agent_workflow_id,
};
use slipway_workflows::{AgentWorkflow, ProvisionAgentWorkflow, search_attributes};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, NamespacedClient, Url, WorkflowExecutionInfo,
    WorkflowHandle, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions,
    WorkflowSignalOptions, WorkflowUpdateWithStartOptions,
    envconfig::LoadClientConfigProfileOptions,
    errors::{
        WorkflowInteractionError, WorkflowQueryError, WorkflowStartError, WorkflowUpdateWithStartError,
    },
};
use temporalio_common::search_attributes::SearchAttributes;
use tokio::sync::OnceCell;

/// Why a Temporal operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Temporal is unreachable, too slow or failing: the caller should retry later.
    #[error("Temporal did not accept the request: {0}")]
    Unavailable(String),
    /// The target workflow (run) does not exist or has closed.
    #[error("workflow not found")]
    NotFound,
    /// The agent's workflow has closed for good (e.g. destroyed): nothing to do.
    #[error("agent workflow is closed")]
    Closed,
}

/// Where the gateway connects.
#[derive(Clone)]
enum Target {
    /// Temporal's env config (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `temporal.toml`).
    EnvConfig,
    /// An explicit address and namespace.
    Address(Url, String),
}

/// Shared handle to Temporal.
#[derive(Clone)]
pub struct Gateway {
    client: Arc<OnceCell<Client>>,
    target: Target,
    task_queue: String,
    timeout: Duration,
}

impl Gateway {
    /// A gateway that connects on first use, configured by Temporal's env config.
    pub fn new(task_queue: String, timeout: Duration) -> Self {
        Self { client: Arc::new(OnceCell::new()), target: Target::EnvConfig, task_queue, timeout }
    }

    /// A gateway that connects on first use to `address` (e.g. `http://127.0.0.1:7233`).
    pub fn for_address(address: Url, namespace: &str, task_queue: String, timeout: Duration) -> Self {
        let target = Target::Address(address, namespace.to_owned());
        Self { client: Arc::new(OnceCell::new()), target, task_queue, timeout }
    }

    /// A gateway around an existing client.
    pub fn with_client(client: Client, task_queue: String, timeout: Duration) -> Self {
        Self {
            client: Arc::new(OnceCell::new_with(Some(client))),
            target: Target::EnvConfig,
            task_queue,
            timeout,
        }
    }

    async fn client(&self) -> Result<&Client, GatewayError> {
        self.client
            .get_or_try_init(|| async {
                let (conn_opts, client_opts) = match &self.target {
                    Target::EnvConfig => {
                        ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
                            .map_err(|e| GatewayError::Unavailable(format!("client configuration: {e}")))?
                    }
                    Target::Address(url, namespace) => (
                        ConnectionOptions::new(url.clone()).identity("slipway-starter".to_owned()).build(),
                        ClientOptions::new(namespace.clone()).build(),
                    ),
                };
                let connect = Connection::connect(conn_opts);
                let connection = tokio::time::timeout(self.timeout, connect)
                    .await
                    .map_err(|_| GatewayError::Unavailable("connect timed out".into()))?
                    .map_err(|e| GatewayError::Unavailable(format!("connect: {e}")))?;
                Client::new(connection, client_opts).map_err(|e| GatewayError::Unavailable(e.to_string()))
            })
            .await
    }

    async fn bounded<T, E: std::fmt::Display>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, GatewayError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| GatewayError::Unavailable(format!("no answer within {:?}", self.timeout)))
    }

    /// True if Temporal answers (for `/readyz`).
    pub async fn ready(&self) -> bool {
        let Ok(client) = self.client().await else { return false };
        let handle = client.get_workflow_handle::<AgentWorkflow>("slipway-readiness-probe");
        matches!(
            self.bounded(handle.describe(Default::default())).await,
            Ok(Ok(_) | Err(WorkflowInteractionError::NotFound(_)))
        )
    }

    /// Ask the agent's workflow to provision it, starting the workflow if needed
    /// (update-with-start). `request_id` dedupes redeliveries (e.g. `stripe-evt_…`).
    pub async fn provision(
        &self,
        agent: AgentRecord,
        policy: ProvisioningPolicy,
        customer_id: Option<&str>,
        cmd: ProvisionCommand,
        request_id: String,
    ) -> Result<ProvisionOutcome, GatewayError> {
        let client = self.client().await?;
        let workflow_id = agent_workflow_id(&agent.agent_id);
        let mut attrs = vec![
            search_attributes::AGENT_ID.value_set(agent.agent_id.clone()),
            search_attributes::USER_ID.value_set(agent.user_id.clone()),
            search_attributes::STATUS.value_set(agent.status.as_str().to_owned()),
        ];
        if let Some(c) = customer_id {
            attrs.push(search_attributes::CUSTOMER_ID.value_set(c.to_owned()));
        }
        let options = WorkflowUpdateWithStartOptions::new(
            self.task_queue.clone(),
            workflow_id,
            WorkflowIdConflictPolicy::UseExisting,
        )
        // A closed agent workflow (destroyed) is never resurrected by a late event.
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .update_id(request_id)
        .search_attributes(SearchAttributes::new(attrs))
        .static_summary(format!("agent {} of {}", agent.agent_id, agent.user_id))
        .build();
        let input = AgentWorkflowInput { agent, policy };
        let call = client.execute_update_with_start_workflow(
            AgentWorkflow::run,
            input,
            AgentWorkflow::provision,
            cmd,
            options,
        );
        match self.bounded(call).await? {
            Ok(outcome) => Ok(outcome),
            Err(WorkflowUpdateWithStartError::Start(WorkflowStartError::AlreadyStarted { .. })) => {
                Err(GatewayError::Closed)
            }
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// Signal a GitHub Actions callback to exactly the saga run that dispatched the job.
    /// `request_id` makes a redelivered callback a no-op.
    pub async fn deliver_callback(
        &self,
        workflow_id: &str,
        run_id: &str,
        callback: ActionsCallback,
        request_id: String,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let info = WorkflowExecutionInfo::builder()
            .namespace(client.namespace())
            .workflow_id(workflow_id)
            .run_id(run_id.to_owned())
            .build();
        let handle = WorkflowHandle::<Client, ProvisionAgentWorkflow>::new(client.clone(), info);
        let opts = WorkflowSignalOptions::builder().request_id(request_id).build();
        match self.bounded(handle.signal(ProvisionAgentWorkflow::actions_callback, callback, opts)).await? {
            Ok(()) => Ok(()),
            Err(WorkflowInteractionError::NotFound(_)) => Err(GatewayError::NotFound),
            // A run id that is not a run id (a forged or mangled job id) names no workflow.
            Err(WorkflowInteractionError::Rpc(status)) if status.code() == tonic::Code::InvalidArgument => {
                Err(GatewayError::NotFound)
            }
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// The agent's record, or `NotFound`.
    pub async fn agent(&self, agent_id: &str) -> Result<AgentRecord, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<AgentWorkflow>(agent_workflow_id(agent_id));
        match self.bounded(handle.query(AgentWorkflow::describe, (), WorkflowQueryOptions::default())).await?
        {
            Ok(record) => Ok(record),
            Err(WorkflowQueryError::NotFound(_)) => Err(GatewayError::NotFound),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// Progress of one saga run.
    pub async fn provisioning_progress(
        &self,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<ProvisioningProgress, GatewayError> {
        let client = self.client().await?;
        let info = WorkflowExecutionInfo::builder()
            .namespace(client.namespace())
            .workflow_id(workflow_id)
            .run_id(run_id.to_owned())
            .build();
        let handle = WorkflowHandle::<Client, ProvisionAgentWorkflow>::new(client.clone(), info);
        match self
            .bounded(handle.query(ProvisionAgentWorkflow::progress, (), WorkflowQueryOptions::default()))
            .await?
        {
            Ok(p) => Ok(p),
            Err(WorkflowQueryError::NotFound(_)) => Err(GatewayError::NotFound),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }
}
