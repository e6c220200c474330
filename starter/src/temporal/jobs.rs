//! Coding jobs: the `Job` workflow (`job-<owner>/<repo>#<n>`), its customer's `JobGate`, and the
//! `GitHubLinks` singleton mapping GitHub accounts to paying customers.

use slipway_proto::jobs::{
    GitHubLink, GitHubLinks, JobCommand, JobRequest, JobStatus, PullRequestClosed, github_links_workflow_id,
    job_workflow_id,
};
use slipway_workflows::{GitHubLinksWorkflow, JobWorkflow, search_attributes};
use temporalio_client::{
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowSignalOptions,
    WorkflowStartOptions, WorkflowUpdateWithStartOptions, errors::WorkflowStartError,
};
use temporalio_common::{MemoValues, search_attributes::SearchAttributes};

use super::{Gateway, GatewayError, absent};

/// Memo of a job run: the delivery that started it, and its number among the issue's runs.
const MEMO_TRIGGER: &str = "trigger";
/// See [`MEMO_TRIGGER`].
const MEMO_RUN: &str = "run";

/// What the memo of an ended run says.
struct EndedRun {
    /// The delivery that started it.
    trigger: Option<String>,
    /// Its number among the issue's runs.
    run: u32,
}

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

    /// How a run of an issue's job starts: its memo names the delivery that asked and the run's
    /// number among the issue's runs.
    fn job_options(
        &self,
        req: &JobRequest,
        delivery: &str,
        reuse: WorkflowIdReusePolicy,
    ) -> WorkflowStartOptions {
        let mut memo = MemoValues::new();
        memo.insert(MEMO_TRIGGER, delivery.to_owned());
        memo.insert(MEMO_RUN, req.run);
        WorkflowStartOptions::new(self.task_queue.clone(), job_workflow_id(&req.repo, req.issue_number))
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(reuse)
            .memo(memo)
            .search_attributes(SearchAttributes::new([
                search_attributes::STATUS.value_set("queued".to_owned())
            ]))
            // Summaries are user metadata, outside the payload codec's reach: no issue text.
            .static_summary(format!("coding job {}#{}", req.repo, req.issue_number))
            .build()
    }

    /// Start the job of an issue (`delivery` is the GitHub delivery that asks): one call while
    /// the job runs or never ran (a redelivery, or a second trigger, finds the running job).
    /// A job that has ended (merged, closed, cancelled) starts again as a new run, numbered
    /// after it, unless this very delivery started it (a redelivery); its earlier runs stay in
    /// Temporal for audit. The job decides its entitlement and takes its gate seat itself.
    pub async fn start_job(&self, req: JobRequest, delivery: &str) -> Result<String, GatewayError> {
        let client = self.client().await?;
        let workflow_id = job_workflow_id(&req.repo, req.issue_number);
        let options = self.job_options(&req, delivery, WorkflowIdReusePolicy::RejectDuplicate);
        // The label again on a job that waits (refused, failed) retries it, once its sender's
        // write access is checked; a job that starts now, or runs, drops it.
        let relabel = JobCommand {
            command: JobCommand::RELABEL.to_owned(),
            login: req.requested_by.clone(),
            delivery: Some(delivery.to_owned()),
            title: Some(req.title.clone()),
            body: Some(req.body.clone()),
        };
        let call = client.signal_with_start_workflow(
            JobWorkflow::run,
            req.clone(),
            JobWorkflow::command,
            relabel,
            options,
        );
        match self.bounded(call).await? {
            Ok(_) => Ok(workflow_id),
            Err(WorkflowStartError::Rpc(status)) if status.code() == tonic::Code::AlreadyExists => {
                match self.ended_run(&workflow_id).await? {
                    Some(ended) => self.start_again(req, delivery, ended).await,
                    None => Ok(workflow_id),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Start the job of an issue again if it has ended (a `/slipway retry` the job itself can no
    /// longer hear); `NotFound` if it never existed.
    pub async fn restart_job(&self, req: JobRequest, delivery: &str) -> Result<String, GatewayError> {
        match self.ended_run(&job_workflow_id(&req.repo, req.issue_number)).await? {
            Some(ended) => self.start_again(req, delivery, ended).await,
            // Running: the command reached it after all.
            None => Ok(job_workflow_id(&req.repo, req.issue_number)),
        }
    }

    /// The memo of the job's latest run if it has ended (`None` while it runs).
    async fn ended_run(&self, workflow_id: &str) -> Result<Option<EndedRun>, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<JobWorkflow>(workflow_id.to_owned());
        let described = self.call(handle.describe(Default::default())).await?;
        let Some(info) = described.raw_description.workflow_execution_info.filter(|i| i.status != 1) else {
            return Ok(None);
        };
        let memo = info.memo.map(|m| m.fields).unwrap_or_default();
        let field =
            |k: &str| -> Option<serde_json::Value> { serde_json::from_slice(&memo.get(k)?.data).ok() };
        Ok(Some(EndedRun {
            trigger: field(MEMO_TRIGGER).and_then(|v| v.as_str().map(str::to_owned)),
            run: field(MEMO_RUN).and_then(|v| v.as_u64()).and_then(|r| u32::try_from(r).ok()).unwrap_or(1),
        }))
    }

    /// A new run after `ended`, numbered after it, unless `delivery` started that one.
    async fn start_again(
        &self,
        mut req: JobRequest,
        delivery: &str,
        ended: EndedRun,
    ) -> Result<String, GatewayError> {
        let workflow_id = job_workflow_id(&req.repo, req.issue_number);
        if ended.trigger.as_deref() == Some(delivery) {
            return Ok(workflow_id);
        }
        req.run = ended.run.max(1) + 1;
        let client = self.client().await?;
        let options = self.job_options(&req, delivery, WorkflowIdReusePolicy::AllowDuplicate);
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

    /// Tell an issue's job a pull request on its branch was closed (it ends only for its own).
    pub async fn job_pr_closed(
        &self,
        workflow_id: &str,
        closed: PullRequestClosed,
        request_id: String,
    ) -> Result<(), GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<JobWorkflow>(workflow_id);
        let opts = WorkflowSignalOptions::builder().request_id(request_id).build();
        self.call(handle.signal(JobWorkflow::pr_closed, closed, opts)).await
    }

    /// A job's status.
    pub async fn job_status(&self, workflow_id: &str) -> Result<JobStatus, GatewayError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<JobWorkflow>(workflow_id);
        self.call(handle.query(JobWorkflow::status, (), WorkflowQueryOptions::default())).await
    }
}
