//! The Slipway worker: one process that polls the task queue and runs every workflow and
//! activity. Scale out by running more of them against the same Temporal cluster; they share
//! nothing but Temporal.
//!
//! - [`settings`]: configuration from the environment (all-missing-at-once errors).
//! - [`build_worker`]: registers workflows and activities; used by `main` and by the tests, so
//!   the tests run exactly the worker that ships.

pub mod settings;

use slipway_activities::{BillingActivities, ProvisioningActivities, StackActivities};
use slipway_workflows::{
    AgentWorkflow, ClientStackWorkflow, GitHubLinksWorkflow, JobGateWorkflow, JobWorkflow,
    ProvisionAgentWorkflow, SubscriptionWorkflow,
};
use temporalio_client::{Client, ClientOptions, Connection, envconfig::LoadClientConfigProfileOptions};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

pub use settings::{ConfigError, WorkerSettings};

/// Connect to Temporal using Temporal's own env config (`TEMPORAL_ADDRESS`,
/// `TEMPORAL_NAMESPACE`, `temporal.toml`).
pub async fn connect_temporal() -> anyhow::Result<Client> {
    let (conn_opts, client_opts) = ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
        .map_err(|e| anyhow::anyhow!("Temporal client configuration: {e}"))?;
    let connection = Connection::connect(conn_opts).await?;
    Ok(Client::new(connection, client_opts)?)
}

/// A worker on `settings.task_queue` with every Slipway workflow and activity registered.
pub fn build_worker(runtime: &Runtime, client: Client, settings: &WorkerSettings) -> anyhow::Result<Worker> {
    let provisioning = ProvisioningActivities::new(settings.provisioning()?);
    let billing = BillingActivities::new(settings.stripe()?);
    let stack = StackActivities::new(settings.stack()?);
    let jobs = settings.jobs()?;
    let options = WorkerOptions::new(settings.task_queue.clone())
        .register_activities(provisioning)
        .register_activities(billing)
        .register_activities(stack)
        .register_activities(jobs)
        .register_workflow::<AgentWorkflow>()?
        .register_workflow::<ProvisionAgentWorkflow>()?
        .register_workflow::<SubscriptionWorkflow>()?
        .register_workflow::<ClientStackWorkflow>()?
        .register_workflow::<JobWorkflow>()?
        .register_workflow::<JobGateWorkflow>()?
        .register_workflow::<GitHubLinksWorkflow>()?
        .build();
    Ok(Worker::new(runtime, client, options)?)
}
