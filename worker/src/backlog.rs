//! The backlog gauges an autoscaler scales workers on: `slipway_task_queue_backlog` and
//! `slipway_task_queue_backlog_age_seconds`, per task queue and task type (workflow, activity),
//! read from Temporal every [`POLL`].
//!
//! Why two sources: an unversioned worker reports its task queues' backlog
//! (`DescribeTaskQueue`); a versioned one reports **its version's** backlog on each queue
//! (`DescribeWorkerDeploymentVersion` with task-queue stats), labelled as Temporal's Worker
//! Controller labels a version's metrics (`temporal_worker_deployment_name`,
//! `temporal_worker_build_id`, `temporal_namespace`), so that each version's autoscaler sees
//! its own work: a draining version scales down while the new one scales up. Every worker of a
//! version reports the same figures; a rule takes their maximum.

use std::time::Duration;

use temporalio_client::{Client, NamespacedClient};
use temporalio_common::protos::temporal::api::{
    deployment::v1::WorkerDeploymentVersion,
    enums::v1::{TaskQueueKind, TaskQueueType},
    taskqueue::v1::{TaskQueue, TaskQueueStats},
    workflowservice::v1::{DescribeTaskQueueRequest, DescribeWorkerDeploymentVersionRequest},
};
use tonic::IntoRequest;

use crate::versioning::WorkerVersion;

/// How often the worker reads the backlog.
pub const POLL: Duration = Duration::from_secs(10);

/// Keeps the gauges current for `task_queues` (the process's two) until the process ends.
pub fn spawn_gauges(client: Client, task_queues: [String; 2], version: WorkerVersion) {
    tokio::spawn(async move {
        loop {
            match read(&client, &task_queues, &version).await {
                Ok(rows) => {
                    let labels = version.deployment_name.as_ref().map(|deployment| VersionLabels {
                        deployment: deployment.clone(),
                        build_id: version.build_id.clone(),
                        namespace: client.namespace().to_owned(),
                    });
                    for row in rows {
                        slipway_activities::metrics::set_backlog(
                            &row.task_queue,
                            row.task_type,
                            labels.as_ref().map(VersionLabels::pairs).unwrap_or_default(),
                            row.count,
                            row.age_secs,
                        );
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not read the task queues' backlog"),
            }
            tokio::time::sleep(POLL).await;
        }
    });
}

/// The backlog of `task_queues` as this worker reports it: its version's share of each when
/// versioned, else the whole queues.
pub async fn read(
    client: &Client,
    task_queues: &[String],
    version: &WorkerVersion,
) -> anyhow::Result<Vec<Backlog>> {
    match &version.deployment_name {
        Some(deployment) => of_version(client, deployment, &version.build_id, task_queues).await,
        None => of_queues(client, task_queues).await,
    }
}

/// The identity labels of a version's metrics, as the Worker Controller names them.
struct VersionLabels {
    deployment: String,
    build_id: String,
    namespace: String,
}

impl VersionLabels {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("temporal_worker_deployment_name", self.deployment.clone()),
            ("temporal_worker_build_id", self.build_id.clone()),
            ("temporal_namespace", self.namespace.clone()),
        ]
    }
}

/// One queue's backlog for one task type.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    /// The task queue.
    pub task_queue: String,
    /// `workflow` or `activity`.
    pub task_type: &'static str,
    /// Tasks waiting (Temporal's approximate count).
    pub count: u64,
    /// How long the oldest has waited, in seconds.
    pub age_secs: f64,
}

fn task_type(kind: TaskQueueType) -> Option<&'static str> {
    match kind {
        TaskQueueType::Workflow => Some("workflow"),
        TaskQueueType::Activity => Some("activity"),
        _ => None,
    }
}

fn backlog(task_queue: &str, task_type: &'static str, stats: Option<TaskQueueStats>) -> Backlog {
    let stats = stats.unwrap_or_default();
    Backlog {
        task_queue: task_queue.to_owned(),
        task_type,
        count: u64::try_from(stats.approximate_backlog_count).unwrap_or(0),
        age_secs: stats.approximate_backlog_age.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9),
    }
}

/// The whole of each task queue (an unversioned worker).
async fn of_queues(client: &Client, task_queues: &[String]) -> anyhow::Result<Vec<Backlog>> {
    let mut service = client.connection().workflow_service();
    let mut rows = Vec::new();
    for queue in task_queues {
        for kind in [TaskQueueType::Workflow, TaskQueueType::Activity] {
            let request = DescribeTaskQueueRequest {
                namespace: client.namespace().to_owned(),
                task_queue: Some(TaskQueue {
                    name: queue.clone(),
                    kind: TaskQueueKind::Normal as i32,
                    ..TaskQueue::default()
                }),
                task_queue_type: kind as i32,
                report_stats: true,
                ..DescribeTaskQueueRequest::default()
            };
            let stats = service.describe_task_queue(request.into_request()).await?.into_inner().stats;
            rows.push(backlog(queue, task_type(kind).unwrap_or("workflow"), stats));
        }
    }
    Ok(rows)
}

/// This version's share of each of its task queues (a versioned worker). Queues Temporal does
/// not list for the version yet (no poller seen) report nothing.
async fn of_version(
    client: &Client,
    deployment: &str,
    build_id: &str,
    task_queues: &[String],
) -> anyhow::Result<Vec<Backlog>> {
    let mut service = client.connection().workflow_service();
    let request = DescribeWorkerDeploymentVersionRequest {
        namespace: client.namespace().to_owned(),
        deployment_version: Some(WorkerDeploymentVersion {
            deployment_name: deployment.to_owned(),
            build_id: build_id.to_owned(),
        }),
        report_task_queue_stats: true,
        ..DescribeWorkerDeploymentVersionRequest::default()
    };
    let answer = service.describe_worker_deployment_version(request.into_request()).await?.into_inner();
    Ok(answer
        .version_task_queues
        .into_iter()
        .filter(|q| task_queues.contains(&q.name))
        .filter_map(|q| Some(backlog(&q.name, task_type(q.r#type())?, q.stats)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_become_counts_and_seconds() {
        let mut stats = TaskQueueStats { approximate_backlog_count: 42, ..TaskQueueStats::default() };
        let age = stats.approximate_backlog_age.get_or_insert_with(Default::default);
        (age.seconds, age.nanos) = (3, 500_000_000);
        let row = backlog("slipway", "activity", Some(stats));
        assert_eq!((row.count, row.age_secs), (42, 3.5));
        let none = backlog("slipway", "workflow", None);
        assert_eq!((none.count, none.age_secs), (0, 0.0));
        assert_eq!(task_type(TaskQueueType::Nexus), None);
    }
}
