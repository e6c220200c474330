//! The starter's only door to Temporal, one module per workflow type it talks to:
//! [`agents`] (`Agent`), [`provisioning`] (`ProvisionAgent` runs), [`billing`] (`Subscription`),
//! [`jobs`] (`Job`, `JobGate`, `GitHubLinks`) and [`stacks`] (`ClientStack`).
//!
//! Two rules live here:
//! - **Durable before 2xx.** Every operation returns only once Temporal has accepted it (the
//!   update was accepted and answered by the workflow, the signal was persisted). Anything else
//!   (server down, slow, refusing) becomes [`GatewayError::Unavailable`], which the HTTP layer
//!   answers with 503 so the sender retries.
//! - **Lazy connection.** The starter starts and answers health checks while Temporal is down;
//!   it connects on first use and keeps retrying on later requests.
//!
//! What an SDK error means to a caller is decided once, by the `From` conversions below
//! (a missing workflow is `NotFound`, an id taken by a closed run is `Closed`, the rest is
//! `Unavailable`), and every call goes through [`Gateway::call`], which bounds it in time.

pub mod agents;
pub mod billing;
pub mod jobs;
pub mod provisioning;
pub mod stacks;

use std::{sync::Arc, time::Duration};

use slipway_proto::model::PROTOCOL;
use slipway_workflows::AgentWorkflow;
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url,
    envconfig::LoadClientConfigProfileOptions,
    errors::{
        ClientError, WorkflowInteractionError, WorkflowQueryError, WorkflowStartError, WorkflowUpdateError,
    },
};
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
    /// The workflow id belongs to a closed run that may not be reused (e.g. a destroyed agent).
    #[error("workflow is closed")]
    Closed,
}

impl From<WorkflowInteractionError> for GatewayError {
    fn from(e: WorkflowInteractionError) -> Self {
        match e {
            WorkflowInteractionError::NotFound(_) => Self::NotFound,
            e => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<WorkflowQueryError> for GatewayError {
    fn from(e: WorkflowQueryError) -> Self {
        match e {
            WorkflowQueryError::NotFound(_) => Self::NotFound,
            e => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<WorkflowUpdateError> for GatewayError {
    fn from(e: WorkflowUpdateError) -> Self {
        match e {
            WorkflowUpdateError::NotFound(_) => Self::NotFound,
            e => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<WorkflowStartError> for GatewayError {
    fn from(e: WorkflowStartError) -> Self {
        match e {
            WorkflowStartError::AlreadyStarted { .. } => Self::Closed,
            e => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<ClientError> for GatewayError {
    fn from(e: ClientError) -> Self {
        Self::Unavailable(e.to_string())
    }
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
    /// Payload encryption of the client it connects (a client given ready carries its own).
    encryption: slipway_codec::Encryption,
    task_queue: String,
    timeout: Duration,
    /// The protocol of the runs this gateway starts (see `slipway_proto::model::PROTOCOL`).
    protocol: u32,
}

impl Gateway {
    /// A gateway that connects on first use, configured by Temporal's env config.
    pub fn new(task_queue: String, timeout: Duration, encryption: slipway_codec::Encryption) -> Self {
        Self {
            client: Arc::new(OnceCell::new()),
            target: Target::EnvConfig,
            encryption,
            task_queue,
            timeout,
            protocol: PROTOCOL,
        }
    }

    /// A gateway that connects on first use to `address` (e.g. `http://127.0.0.1:7233`).
    pub fn for_address(
        address: Url,
        namespace: &str,
        task_queue: String,
        timeout: Duration,
        encryption: slipway_codec::Encryption,
    ) -> Self {
        let target = Target::Address(address, namespace.to_owned());
        Self {
            client: Arc::new(OnceCell::new()),
            target,
            encryption,
            task_queue,
            timeout,
            protocol: PROTOCOL,
        }
    }

    /// A gateway around an existing client.
    pub fn with_client(client: Client, task_queue: String, timeout: Duration) -> Self {
        Self {
            client: Arc::new(OnceCell::new_with(Some(client))),
            target: Target::EnvConfig,
            encryption: slipway_codec::Encryption::Off,
            task_queue,
            timeout,
            protocol: PROTOCOL,
        }
    }

    /// Starts runs on `protocol` instead of this release's [`PROTOCOL`]: 0 acts as a release
    /// from before protocols (tests of upgrades run the previous release's starter this way).
    pub fn with_protocol(mut self, protocol: u32) -> Self {
        self.protocol = protocol;
        self
    }

    /// The protocol of the runs this gateway starts.
    pub fn protocol(&self) -> u32 {
        self.protocol
    }

    async fn client(&self) -> Result<&Client, GatewayError> {
        self.client
            .get_or_try_init(|| async {
                let (conn_opts, mut client_opts) = match &self.target {
                    Target::EnvConfig => {
                        ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
                            .map_err(|e| GatewayError::Unavailable(format!("client configuration: {e}")))?
                    }
                    Target::Address(url, namespace) => (
                        ConnectionOptions::new(url.clone()).identity("slipway-starter".to_owned()).build(),
                        ClientOptions::new(namespace.clone()).build(),
                    ),
                };
                client_opts.data_converter = self.encryption.data_converter();
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

    /// Runs `fut` within the gateway's time budget (in the caller's trace), leaving its own
    /// error for the caller to inspect.
    async fn bounded<T, E>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, GatewayError> {
        tokio::time::timeout(self.timeout, slipway_telemetry::in_current_trace(fut))
            .await
            .map_err(|_| GatewayError::Unavailable(format!("no answer within {:?}", self.timeout)))
    }

    /// Runs `fut` within the time budget and maps its error the one way errors are mapped.
    async fn call<T, E: Into<GatewayError>>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, GatewayError> {
        self.bounded(fut).await?.map_err(Into::into)
    }

    /// True if Temporal answers (for `/readyz`).
    pub async fn ready(&self) -> bool {
        let Ok(client) = self.client().await else { return false };
        let handle = client.get_workflow_handle::<AgentWorkflow>("slipway-readiness-probe");
        matches!(self.call(handle.describe(Default::default())).await, Ok(_) | Err(GatewayError::NotFound))
    }
}

/// `NotFound` read as "nothing yet" (a singleton workflow that was never started).
fn absent<T>(r: Result<T, GatewayError>) -> Result<Option<T>, GatewayError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(GatewayError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}
