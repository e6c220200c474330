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

use futures::StreamExt;
use slipway_proto::jobs::{
    GitHubLink, GitHubLinks, JobCommand, JobGateInput, JobRequest, JobStatus, github_links_workflow_id,
    job_gate_workflow_id, job_workflow_id,
};
use slipway_proto::stack::{ClientStackRequest, ClientStackStatus, stack_workflow_id};
use slipway_proto::{
    billing::{
        BillingEvent, BillingPolicy, BillingState, CustomerBilling, Entitlement, SubscriptionInput,
        customer_workflow_id,
    },
    model::{
        ActionsCallback, AgentRecord, AgentSummary, AgentWorkflowInput, CheckoutHold, CommandOutcome,
        CommandRequest, LifecyclePolicy, OpenCheckout, ProvisionCommand, ProvisionOutcome,
        ProvisioningPolicy, ProvisioningProgress, agent_workflow_id,
    },
};
use slipway_workflows::{
    AgentWorkflow, ClientStackWorkflow, GitHubLinksWorkflow, JobGateWorkflow, JobWorkflow,
    ProvisionAgentWorkflow, SubscriptionWorkflow, search_attributes,
};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, NamespacedClient, Url,
    WorkflowExecuteUpdateOptions, WorkflowExecutionInfo, WorkflowExecutionStatus, WorkflowHandle,
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowListOptions, WorkflowQueryOptions,
    WorkflowSignalOptions, WorkflowStartOptions, WorkflowUpdateWithStartOptions,
    envconfig::LoadClientConfigProfileOptions,
    errors::{
        WorkflowInteractionError, WorkflowQueryError, WorkflowStartError, WorkflowUpdateError,
        WorkflowUpdateWithStartError,
    },
};
use temporalio_common::{MemoValues, search_attributes::SearchAttributes};
use tokio::sync::OnceCell;

/// Name and region, shown when listing agents without querying them.
fn agent_memo(agent: &AgentRecord) -> MemoValues {
    let mut memo = MemoValues::new();
    memo.insert("name", agent.name.clone());
    memo.insert("region", agent.region.clone());
    memo
}

/// Maps a signal's result: a missing workflow is `NotFound`.
fn signal_result(r: Result<(), WorkflowInteractionError>) -> Result<(), GatewayError> {
    match r {
        Ok(()) => Ok(()),
        Err(WorkflowInteractionError::NotFound(_)) => Err(GatewayError::NotFound),
        Err(e) => Err(GatewayError::Unavailable(e.to_string())),
    }
}

/// Maps an update's result: a missing workflow is `NotFound`, anything else is unavailability.
fn update_result<T>(r: Result<T, WorkflowUpdateError>) -> Result<T, GatewayError> {
    match r {
        Ok(v) => Ok(v),
        Err(WorkflowUpdateError::NotFound(_)) => Err(GatewayError::NotFound),
        Err(e) => Err(GatewayError::Unavailable(e.to_string())),
    }
}

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
                Client::new(connection, slipway_telemetry::client_options(client_opts))
                    .map_err(|e| GatewayError::Unavailable(e.to_string()))
            })
            .await
    }

    async fn bounded<T, E: std::fmt::Display>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, GatewayError> {
        tokio::time::timeout(self.timeout, slipway_telemetry::in_current_trace(fut))
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
        lifecycle: LifecyclePolicy,
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
        .memo(agent_memo(&agent))
        .build();
        let input = AgentWorkflowInput { agent, policy, lifecycle, queue: Vec::new() };
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

    /// Create an agent's workflow in `draft` (fails if the id exists).
    pub async fn create_agent(
        &self,
        agent: AgentRecord,
        policy: ProvisioningPolicy,
        lifecycle: LifecyclePolicy,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let options = WorkflowStartOptions::new(self.task_queue.clone(), agent_workflow_id(&agent.agent_id))
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
            .search_attributes(SearchAttributes::new([
                search_attributes::AGENT_ID.value_set(agent.agent_id.clone()),
                search_attributes::USER_ID.value_set(agent.user_id.clone()),
                search_attributes::STATUS.value_set(agent.status.as_str().to_owned()),
            ]))
            .static_summary(format!("agent {} of {}", agent.agent_id, agent.user_id))
            .memo(agent_memo(&agent))
            .build();
        let input = AgentWorkflowInput { agent, policy, lifecycle, queue: Vec::new() };
        match self.bounded(client.start_workflow(AgentWorkflow::run, input, options)).await? {
            Ok(_) => Ok(()),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Err(GatewayError::Closed),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// Agents matching a visibility query, from search attributes and memo only: listing never
    /// wakes workflows (a query per agent would need a worker for each, closed ones included).
    pub async fn list_agents(&self, query: &str, limit: usize) -> Result<Vec<AgentSummary>, GatewayError> {
        let client = self.client().await?;
        self.bounded(async {
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
            Ok::<_, temporalio_client::errors::ClientError>(out)
        })
        .await?
        .map_err(|e| GatewayError::Unavailable(e.to_string()))
    }

    /// Provision an existing agent (API path).
    pub async fn provision_existing(
        &self,
        agent_id: &str,
        cmd: ProvisionCommand,
        request_id: String,
    ) -> Result<ProvisionOutcome, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<AgentWorkflow>(agent_workflow_id(agent_id));
        let opts = WorkflowExecuteUpdateOptions::builder().update_id(request_id).build();
        update_result(self.bounded(handle.execute_update(AgentWorkflow::provision, cmd, opts)).await?)
    }

    /// Run a stop / start / destroy on an agent.
    pub async fn command(
        &self,
        agent_id: &str,
        request: CommandRequest,
        request_id: String,
    ) -> Result<CommandOutcome, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<AgentWorkflow>(agent_workflow_id(agent_id));
        let opts = WorkflowExecuteUpdateOptions::builder().update_id(request_id).build();
        update_result(self.bounded(handle.execute_update(AgentWorkflow::command, request, opts)).await?)
    }

    /// Deliver a billing event to the customer's subscription workflow, creating it if needed
    /// (signal-with-start: durable once this returns).
    pub async fn billing_event(
        &self,
        customer_id: &str,
        user_id: Option<&str>,
        event: BillingEvent,
        policy: BillingPolicy,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let mut attrs = vec![search_attributes::CUSTOMER_ID.value_set(customer_id.to_owned())];
        if let Some(u) = user_id {
            attrs.push(search_attributes::USER_ID.value_set(u.to_owned()));
        }
        let options = WorkflowStartOptions::new(self.task_queue.clone(), customer_workflow_id(customer_id))
            .search_attributes(SearchAttributes::new(attrs))
            .static_summary(format!("Stripe customer {customer_id}"))
            .build();
        let input = SubscriptionInput {
            customer_id: customer_id.to_owned(),
            state: BillingState::default(),
            billing: Some(CustomerBilling {
                user_id: user_id.map(str::to_owned),
                ..CustomerBilling::default()
            }),
            policy,
            inbox: Vec::new(),
            claims: Vec::new(),
            upgrade_attempted: false,
        };
        let call = client.signal_with_start_workflow(
            SubscriptionWorkflow::run,
            input,
            SubscriptionWorkflow::stripe_event,
            event,
            options,
        );
        match self.bounded(call).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// The user's entitling subscription, if any (found through visibility, then queried).
    pub async fn entitlement_for_user(&self, user_id: &str) -> Result<Option<Entitlement>, GatewayError> {
        let client = self.client().await?;
        let query = format!(
            "WorkflowType = 'Subscription' AND SlipwayUserId = '{}' AND ExecutionStatus = 'Running'",
            user_id.replace('\'', "")
        );
        let ids: Vec<String> = self
            .bounded(async {
                let mut stream =
                    client.list_workflows(query, WorkflowListOptions::builder().limit(20).build());
                let mut ids = Vec::new();
                while let Some(exec) = stream.next().await {
                    ids.push(exec?.id().to_owned());
                }
                Ok::<_, temporalio_client::errors::ClientError>(ids)
            })
            .await?
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        let mut best = None;
        for id in ids {
            let handle = client.get_workflow_handle::<SubscriptionWorkflow>(id);
            match self
                .bounded(handle.query(SubscriptionWorkflow::entitlement, (), WorkflowQueryOptions::default()))
                .await?
            {
                Ok(e) if e.entitled => return Ok(Some(e)),
                Ok(e) => best = Some(e),
                Err(WorkflowQueryError::NotFound(_)) => {}
                Err(e) => return Err(GatewayError::Unavailable(e.to_string())),
            }
        }
        Ok(best)
    }

    /// Start a client's stack provisioning, or return the one that exists (running, or done
    /// successfully). A failed one can be started again. Returns `(workflow id, existed before)`.
    pub async fn start_stack(&self, req: ClientStackRequest) -> Result<(String, bool), GatewayError> {
        let client = self.client().await?;
        let workflow_id = stack_workflow_id(&req.client_id);
        let handle = client.get_workflow_handle::<ClientStackWorkflow>(workflow_id.clone());
        let existed = match self.bounded(handle.describe(Default::default())).await? {
            Ok(desc) => !matches!(
                desc.status(),
                WorkflowExecutionStatus::Failed
                    | WorkflowExecutionStatus::Terminated
                    | WorkflowExecutionStatus::Canceled
                    | WorkflowExecutionStatus::TimedOut
            ),
            Err(WorkflowInteractionError::NotFound(_)) => false,
            Err(e) => return Err(GatewayError::Unavailable(e.to_string())),
        };
        let options = WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
            .search_attributes(SearchAttributes::new([
                search_attributes::STATUS.value_set("provisioning".to_owned())
            ]))
            .static_summary(format!("client stack {} ({})", req.client_id, req.client_name))
            .build();
        match self.bounded(client.start_workflow(ClientStackWorkflow::run, req, options)).await? {
            Ok(_) => Ok((workflow_id, existed)),
            // Completed successfully before: that stack is the answer.
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok((workflow_id, true)),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// A client's stack status (query; works on running and finished stacks).
    pub async fn stack_status(&self, client_id: &str) -> Result<ClientStackStatus, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<ClientStackWorkflow>(stack_workflow_id(client_id));
        match self
            .bounded(handle.query(ClientStackWorkflow::status, (), WorkflowQueryOptions::default()))
            .await?
        {
            Ok(status) => Ok(status),
            Err(WorkflowQueryError::NotFound(_)) => Err(GatewayError::NotFound),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// The link of a GitHub account, if any.
    pub async fn github_link(&self, account: &str) -> Result<Option<GitHubLink>, GatewayError> {
        let client = self.client().await?;
        let handle =
            client.get_workflow_handle::<GitHubLinksWorkflow>(github_links_workflow_id(&self.task_queue));
        match self
            .bounded(handle.query(
                GitHubLinksWorkflow::get,
                account.to_owned(),
                WorkflowQueryOptions::default(),
            ))
            .await?
        {
            Ok(link) => Ok(link),
            Err(WorkflowQueryError::NotFound(_)) => Ok(None),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// Every GitHub link.
    pub async fn github_links(&self) -> Result<Vec<GitHubLink>, GatewayError> {
        let client = self.client().await?;
        let handle =
            client.get_workflow_handle::<GitHubLinksWorkflow>(github_links_workflow_id(&self.task_queue));
        match self
            .bounded(handle.query(GitHubLinksWorkflow::list, (), WorkflowQueryOptions::default()))
            .await?
        {
            Ok(links) => Ok(links),
            Err(WorkflowQueryError::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// Link a GitHub account (update-with-start on the links singleton).
    pub async fn link_github(&self, link: GitHubLink) -> Result<GitHubLink, GatewayError> {
        let client = self.client().await?;
        let options = WorkflowUpdateWithStartOptions::new(
            self.task_queue.clone(),
            github_links_workflow_id(&self.task_queue),
            WorkflowIdConflictPolicy::UseExisting,
        )
        .static_summary("GitHub account → Slipway customer links".to_owned())
        .build();
        let call = client.execute_update_with_start_workflow(
            GitHubLinksWorkflow::run,
            GitHubLinks::default(),
            GitHubLinksWorkflow::link,
            link,
            options,
        );
        self.bounded(call).await?.map_err(|e| GatewayError::Unavailable(e.to_string()))
    }

    /// A customer's entitlement (query on its subscription workflow).
    pub async fn customer_entitlement(&self, customer_id: &str) -> Result<Option<Entitlement>, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<SubscriptionWorkflow>(customer_workflow_id(customer_id));
        match self
            .bounded(handle.query(SubscriptionWorkflow::entitlement, (), WorkflowQueryOptions::default()))
            .await?
        {
            Ok(e) => Ok(Some(e)),
            Err(WorkflowQueryError::NotFound(_)) => Ok(None),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// Start the job of an issue (one per issue: a redelivery, or a second trigger, finds it),
    /// then make sure the customer's gate knows it is waiting.
    pub async fn start_job(&self, req: JobRequest, max_running: u32) -> Result<String, GatewayError> {
        let client = self.client().await?;
        let workflow_id = job_workflow_id(&req.repo, req.issue_number);
        let customer = req.customer_id.clone();
        let options = WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .search_attributes(SearchAttributes::new([
                search_attributes::STATUS.value_set("queued".to_owned())
            ]))
            .static_summary(format!("{}#{}: {}", req.repo, req.issue_number, req.title))
            .build();
        match self.bounded(client.start_workflow(JobWorkflow::run, req, options)).await? {
            Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => {}
            Err(e) => return Err(GatewayError::Unavailable(e.to_string())),
        }
        if let Some(customer) = customer {
            let gate = JobGateInput {
                customer_id: customer.clone(),
                max_running,
                running: Vec::new(),
                waiting: Vec::new(),
            };
            let options = WorkflowStartOptions::new(self.task_queue.clone(), job_gate_workflow_id(&customer))
                .search_attributes(SearchAttributes::new([
                    search_attributes::CUSTOMER_ID.value_set(customer.clone())
                ]))
                .static_summary(format!("job slots of {customer}"))
                .build();
            let call = client.signal_with_start_workflow(
                JobGateWorkflow::run,
                gate,
                JobGateWorkflow::enqueue,
                workflow_id.clone(),
                options,
            );
            self.bounded(call).await?.map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        }
        Ok(workflow_id)
    }

    /// Deliver a `/slipway` command to an issue's job.
    pub async fn job_command(
        &self,
        workflow_id: &str,
        command: JobCommand,
        request_id: String,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<JobWorkflow>(workflow_id);
        let opts = WorkflowSignalOptions::builder().request_id(request_id).build();
        signal_result(self.bounded(handle.signal(JobWorkflow::command, command, opts)).await?)
    }

    /// Tell an issue's job its pull request was closed.
    pub async fn job_pr_closed(
        &self,
        workflow_id: &str,
        merged: bool,
        request_id: String,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<JobWorkflow>(workflow_id);
        let opts = WorkflowSignalOptions::builder().request_id(request_id).build();
        signal_result(self.bounded(handle.signal(JobWorkflow::pr_closed, merged, opts)).await?)
    }

    /// A job's status.
    pub async fn job_status(&self, workflow_id: &str) -> Result<JobStatus, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<JobWorkflow>(workflow_id);
        match self.bounded(handle.query(JobWorkflow::status, (), WorkflowQueryOptions::default())).await? {
            Ok(s) => Ok(s),
            Err(WorkflowQueryError::NotFound(_)) => Err(GatewayError::NotFound),
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

    /// Hold a draft agent for a Checkout Session about to be created.
    pub async fn hold_for_checkout(
        &self,
        agent_id: &str,
        hold: CheckoutHold,
    ) -> Result<CommandOutcome, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<AgentWorkflow>(agent_workflow_id(agent_id));
        let opts = WorkflowExecuteUpdateOptions::builder().build();
        update_result(
            self.bounded(handle.execute_update(AgentWorkflow::hold_for_checkout, hold, opts)).await?,
        )
    }

    /// Record the Checkout Session created under a hold (`None` lifts the hold).
    pub async fn checkout_opened(
        &self,
        agent_id: &str,
        open: Option<OpenCheckout>,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<AgentWorkflow>(agent_workflow_id(agent_id));
        let opts = WorkflowSignalOptions::builder().build();
        signal_result(self.bounded(handle.signal(AgentWorkflow::checkout_opened, open, opts)).await?)
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
