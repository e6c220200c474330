//! The `ClientStack` saga (`stack-<client id>`): started once per client (again only after a
//! failure), queried for its status.

use slipway_proto::stack::{ClientStackRequest, ClientStackStatus, stack_workflow_id};
use slipway_workflows::{ClientStackWorkflow, search_attributes};
use temporalio_client::{
    WorkflowExecutionStatus, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions,
    WorkflowStartOptions,
};
use temporalio_common::search_attributes::SearchAttributes;

use super::{Gateway, GatewayError, absent};

impl Gateway {
    /// Start a client's stack provisioning, or return the one that exists (running, or done
    /// successfully). A failed one can be started again. Returns `(workflow id, existed before)`.
    pub async fn start_stack(&self, req: ClientStackRequest) -> Result<(String, bool), GatewayError> {
        let client = self.client().await?;
        let workflow_id = stack_workflow_id(&req.client_id);
        let handle = client.get_workflow_handle::<ClientStackWorkflow>(workflow_id.clone());
        let existed = absent(self.call(handle.describe(Default::default())).await)?.is_some_and(|desc| {
            !matches!(
                desc.status(),
                WorkflowExecutionStatus::Failed
                    | WorkflowExecutionStatus::Terminated
                    | WorkflowExecutionStatus::Canceled
                    | WorkflowExecutionStatus::TimedOut
            )
        });
        let options = WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
            .search_attributes(SearchAttributes::new([
                search_attributes::STATUS.value_set("provisioning".to_owned())
            ]))
            .static_summary(format!("client stack {} ({})", req.client_id, req.client_name))
            .build();
        match self.call(client.start_workflow(ClientStackWorkflow::run, req, options)).await {
            Ok(_) => Ok((workflow_id, existed)),
            // Completed successfully before: that stack is the answer.
            Err(GatewayError::Closed) => Ok((workflow_id, true)),
            Err(e) => Err(e),
        }
    }

    /// A client's stack status (query; works on running and finished stacks).
    pub async fn stack_status(&self, client_id: &str) -> Result<ClientStackStatus, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<ClientStackWorkflow>(stack_workflow_id(client_id));
        self.call(handle.query(ClientStackWorkflow::status, (), WorkflowQueryOptions::default())).await
    }
}
