//! `ProvisionAgent` runs, addressed by run: a callback reaches exactly the saga run that
//! dispatched its job, and progress is read from one run.

use slipway_proto::model::{ActionsCallback, ProvisioningProgress};
use slipway_workflows::ProvisionAgentWorkflow;
use temporalio_client::{
    Client, NamespacedClient, WorkflowExecutionInfo, WorkflowHandle, WorkflowQueryOptions,
    WorkflowSignalOptions, errors::WorkflowInteractionError,
};

use super::{Gateway, GatewayError};

impl Gateway {
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
