//! Coding jobs: the `Job` workflow (`job-<owner>/<repo>#<n>`), its customer's `JobGate`, and the
//! `GitHubLinks` singleton mapping GitHub accounts to paying customers.

use slipway_proto::jobs::{
    GitHubLink, GitHubLinks, JobCommand, JobRequest, JobStatus, github_links_workflow_id, job_workflow_id,
};
use slipway_workflows::{GitHubLinksWorkflow, JobWorkflow, search_attributes};
use temporalio_client::{
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowSignalOptions,
    WorkflowStartOptions, WorkflowUpdateWithStartOptions,
};
use temporalio_common::search_attributes::SearchAttributes;

use super::{Gateway, GatewayError, absent};

impl Gateway {
    fn links_id(&self) -> String {
        github_links_workflow_id(&self.task_queue)
    }

    /// The link of a GitHub account, if any.
    pub async fn github_link(&self, account: &str) -> Result<Option<GitHubLink>, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<GitHubLinksWorkflow>(self.links_id());
        let query =
            handle.query(GitHubLinksWorkflow::get, account.to_owned(), WorkflowQueryOptions::default());
        Ok(absent(self.call(query).await)?.flatten())
    }

    /// Every GitHub link.
    pub async fn github_links(&self) -> Result<Vec<GitHubLink>, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<GitHubLinksWorkflow>(self.links_id());
        let query = handle.query(GitHubLinksWorkflow::list, (), WorkflowQueryOptions::default());
        Ok(absent(self.call(query).await)?.unwrap_or_default())
    }

    /// Link a GitHub account (update-with-start on the links singleton).
    pub async fn link_github(&self, link: GitHubLink) -> Result<GitHubLink, GatewayError> {
        let client = self.client().await?;
        let options = WorkflowUpdateWithStartOptions::new(
            self.task_queue.clone(),
            self.links_id(),
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

    /// Start the job of an issue: one call (a redelivery, or a second trigger, finds the job
    /// that exists). The job decides its entitlement and takes its customer's gate seat itself.
    pub async fn start_job(&self, req: JobRequest) -> Result<String, GatewayError> {
        let client = self.client().await?;
        let workflow_id = job_workflow_id(&req.repo, req.issue_number);
        let options = WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .search_attributes(SearchAttributes::new([
                search_attributes::STATUS.value_set("queued".to_owned())
            ]))
            .static_summary(format!("{}#{}: {}", req.repo, req.issue_number, req.title))
            .build();
        match self.call(client.start_workflow(JobWorkflow::run, req, options)).await {
            Ok(_) | Err(GatewayError::Closed) => Ok(workflow_id),
            Err(e) => Err(e),
        }
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
        self.call(handle.signal(JobWorkflow::command, command, opts)).await
    }

    /// Ask an issue's job to report its unbilled usage again.
    pub async fn job_bill_again(&self, workflow_id: &str, request_id: String) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<JobWorkflow>(workflow_id);
        let opts = WorkflowSignalOptions::builder().request_id(request_id).build();
        self.call(handle.signal(JobWorkflow::bill_again, (), opts)).await
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
        self.call(handle.signal(JobWorkflow::pr_closed, merged, opts)).await
    }

    /// A job's status.
    pub async fn job_status(&self, workflow_id: &str) -> Result<JobStatus, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<JobWorkflow>(workflow_id);
        self.call(handle.query(JobWorkflow::status, (), WorkflowQueryOptions::default())).await
    }
}
