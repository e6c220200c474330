//! The `ClientStack` saga (`client-stack-<client id>`): started once per client (again only
//! after a failure), queried for its status. Once retention removed a saga that succeeded, its
//! `StackRecord` (`stack-record-<client id>`) answers for it: the stack exists, with that status.

use slipway_proto::model::saga_task_queue;
use slipway_proto::stack::{
    ClientStackRequest, ClientStackStatus, StackState, stack_record_workflow_id, stack_workflow_id,
};
use slipway_workflows::{ClientStackWorkflow, StackRecordWorkflow, search_attributes};
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
        let described = absent(self.call(handle.describe(Default::default())).await)?;
        if described.is_none() && self.recorded_stack(&req.client_id).await?.is_some() {
            // Succeeded long ago: retention removed the saga, its record says it holds a stack.
            return Ok((workflow_id, true));
        }
        let existed = described.is_some_and(|desc| {
            !matches!(
                desc.status(),
                WorkflowExecutionStatus::Failed
                    | WorkflowExecutionStatus::Terminated
                    | WorkflowExecutionStatus::Canceled
                    | WorkflowExecutionStatus::TimedOut
            )
        });
        // A saga: on the saga queue, pinned to the version that starts it.
        let options = WorkflowStartOptions::new(saga_task_queue(&self.task_queue), workflow_id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
            .search_attributes(SearchAttributes::new([
                search_attributes::STATUS.value_set("provisioning".to_owned())
            ]))
            // Summaries are user metadata, outside the payload codec's reach: no client name.
            .static_summary(format!("client stack {}", req.client_id))
            .build();
        match self.call(client.start_workflow(ClientStackWorkflow::run, req, options)).await {
            Ok(_) => Ok((workflow_id, existed)),
            // Completed successfully before: that stack is the answer.
            Err(GatewayError::Closed) => Ok((workflow_id, true)),
            Err(e) => Err(e),
        }
    }

    /// A client's stack status (query; works on running and finished stacks, and on stacks
    /// whose saga retention removed, through their record).
    pub async fn stack_status(&self, client_id: &str) -> Result<ClientStackStatus, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<ClientStackWorkflow>(stack_workflow_id(client_id));
        match self.call(handle.query(ClientStackWorkflow::status, (), WorkflowQueryOptions::default())).await
        {
            Err(GatewayError::NotFound) => {
                self.recorded_stack(client_id).await?.ok_or(GatewayError::NotFound)
            }
            answer => answer,
        }
    }

    /// The status a client's `StackRecord` holds, if it holds a stack that succeeded.
    async fn recorded_stack(&self, client_id: &str) -> Result<Option<ClientStackStatus>, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<StackRecordWorkflow>(stack_record_workflow_id(client_id));
        let status = absent(
            self.call(handle.query(StackRecordWorkflow::status, (), WorkflowQueryOptions::default())).await,
        )?;
        Ok(status.filter(|s| s.state == StackState::Succeeded))
    }
}
