//! Scenario 4, history growth: thousands of commands, one after the other, on one agent, to show
//! that continue-as-new keeps the current run's history near the limit.

use std::time::{Duration, Instant};

use futures::StreamExt;
use slipway_proto::model::agent_workflow_id;
use temporalio_client::{WorkflowExecutionStatus, WorkflowListOptions};

use super::Bench;
use crate::report::HistoryRow;

impl Bench {
    pub(crate) async fn history(&self) -> anyhow::Result<HistoryRow> {
        let n = self.plan.history_commands;
        let agent_id = format!("hist-{}", self.tag);
        say!("history: {n} commands, one after the other, on agent {agent_id}");
        self.create_agent(&agent_id).await.map_err(|e| anyhow::anyhow!("create {agent_id}: {e}"))?;
        let start = Instant::now();
        let mut errors = 0;
        let mut first_error = None;
        for i in 0..n {
            if let Err(e) = self.command(&agent_id, i).await {
                errors += 1;
                if first_error.is_none() {
                    say!("  first command error (command {}): {e}", i + 1);
                    first_error = Some(format!("command {}: {e}", i + 1));
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        // Visibility is updated asynchronously: give it a moment before listing the runs.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let current = self
            .client
            .get_workflow_handle::<slipway_workflows::AgentWorkflow>(agent_workflow_id(&agent_id))
            .describe(Default::default())
            .await?
            .history_length() as i64;
        let query = format!("WorkflowId = '{}'", agent_workflow_id(&agent_id));
        let mut runs = self.client.list_workflows(query, WorkflowListOptions::builder().limit(1000).build());
        let (mut total_runs, mut longest) = (0, current);
        while let Some(run) = runs.next().await {
            let run = run?;
            total_runs += 1;
            if run.status() != WorkflowExecutionStatus::Running {
                longest = longest.max(run.history_length());
            }
        }
        Ok(HistoryRow {
            commands: n,
            errors,
            secs,
            history_limit: self.plan.history_limit,
            current_run_history_length: current,
            longest_run_history_length: longest,
            total_runs,
            // The workflow checks the limit between commands; a little past it is expected.
            bounded: current <= i64::from(self.plan.history_limit) + 100 && errors == 0,
            first_error,
        })
    }
}
