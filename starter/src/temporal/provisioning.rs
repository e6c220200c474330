//! `ProvisionAgent` runs, addressed by run: a callback reaches exactly the saga run that
//! dispatched its job, and progress is read from one run.

use slipway_proto::model::{ActionsCallback, ProvisioningProgress, provisioning_workflow_id};
use slipway_workflows::ProvisionAgentWorkflow;
use temporalio_client::{
    Client, NamespacedClient, WorkflowExecutionInfo, WorkflowHandle, WorkflowQueryOptions,
    WorkflowSignalOptions, errors::WorkflowInteractionError,
};

use super::{Gateway, GatewayError};

/// A user's latest `ProvisionAgent` run (the saga's workflow id is the user's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestSaga {
    /// Its run id.
    pub run_id: String,
    /// It is still running.
    pub running: bool,
    /// The agent it provisions (`SlipwayAgentId`).
    pub agent_id: Option<String>,
}

impl Gateway {
    /// The user's latest provisioning saga, if they ever had one.
    pub async fn latest_saga(&self, user_id: &str) -> Result<Option<LatestSaga>, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<ProvisionAgentWorkflow>(provisioning_workflow_id(user_id));
        let described = match self.call(handle.describe(Default::default())).await {
            Ok(d) => d,
            Err(GatewayError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(info) = described.raw_description.workflow_execution_info.as_ref() else { return Ok(None) };
        let agent_id = info
            .search_attributes
            .as_ref()
            .and_then(|sa| sa.indexed_fields.get("SlipwayAgentId"))
            .and_then(|p| serde_json::from_slice::<String>(&p.data).ok());
        Ok(Some(LatestSaga {
            run_id: info.execution.as_ref().map(|e| e.run_id.clone()).unwrap_or_default(),
            // 1 = running.
            running: info.status == 1,
            agent_id,
        }))
    }

    fn saga_run(
        &self,
        client: &Client,
        workflow_id: &str,
        run_id: &str,
    ) -> WorkflowHandle<Client, ProvisionAgentWorkflow> {
        let info = WorkflowExecutionInfo::builder()
            .namespace(client.namespace())
            .workflow_id(workflow_id)
            .run_id(run_id.to_owned())
            .build();
        WorkflowHandle::new(client.clone(), info)
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
        let handle = self.saga_run(client, workflow_id, run_id);
        let opts = WorkflowSignalOptions::builder().request_id(request_id).build();
        match self.bounded(handle.signal(ProvisionAgentWorkflow::actions_callback, callback, opts)).await? {
            // A run id that is not a run id (a forged or mangled job id) names no workflow.
            Err(WorkflowInteractionError::Rpc(status)) if status.code() == tonic::Code::InvalidArgument => {
                Err(GatewayError::NotFound)
            }
            r => r.map_err(Into::into),
        }
    }

    /// Progress of one saga run.
    pub async fn provisioning_progress(
        &self,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<ProvisioningProgress, GatewayError> {
        let client = self.client().await?;
        let handle = self.saga_run(client, workflow_id, run_id);
        self.call(handle.query(ProvisionAgentWorkflow::progress, (), WorkflowQueryOptions::default())).await
    }
}
