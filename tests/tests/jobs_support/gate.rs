//! A job that closes without giving its slot back (an operator terminates it) does not block its
//! customer's other jobs: the customer's `JobGate` checks its holders (every
//! `SLIPWAY_JOB_GATE_CHECK_SECS`, 2 s here) and frees the slots of those that have closed.

use serde_json::{Value, json};
use slipway_proto::jobs::{JobGateInput, JobState, job_gate_workflow_id, job_workflow_id};
use slipway_tests::{Options, TestApp};
use slipway_workflows::JobGateWorkflow;
use temporalio_client::{
    UntypedWorkflow, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowFetchHistoryOptions,
    WorkflowHistory, WorkflowQueryOptions, WorkflowTerminateOptions,
};
use temporalio_common::protos::temporal::api::enums::v1::EventType;

use super::*;

/// The gate's running and waiting jobs, once `pred` holds for them.
async fn wait_gate(
    app: &TestApp,
    customer: &str,
    what: &str,
    pred: impl Fn(&JobGateInput) -> bool,
) -> anyhow::Result<JobGateInput> {
    slipway_tests::wait_for(what, WAIT, || async {
        let gate = app.client.get_workflow_handle::<JobGateWorkflow>(job_gate_workflow_id(customer));
        // Not started yet, or no answer yet: ask again.
        let snap = gate.query(JobGateWorkflow::snapshot, (), WorkflowQueryOptions::default()).await;
        Ok(snap.ok().filter(|s| pred(s)))
    })
    .await
}

#[tokio::test]
async fn a_terminated_job_returns_its_gate_slot() -> anyhow::Result<()> {
    // Arrange: one slot per customer. The model answers 503, so the first job visibly runs (holds
    // the slot, retrying its plan) while the second is queued behind it. A failing answer rather
    // than a slow one: nothing is left in flight when the test ends.
    let app = TestApp::spawn_with(Options {
        max_jobs_per_customer: 1,
        job_gate_check_secs: Some(2),
        ..Options::default()
    })
    .await?;
    let s = app.github_account(true).await?;
    app.fault(json!({"method": "POST", "path": "/openai/v1/chat/completions", "status": 503})).await?;
    let (first, second) = (job_workflow_id(&s.repo, 20), job_workflow_id(&s.repo, 21));
    deliver(&app, "issues", opened(&s, 20, "First"), "d-gate-20").await?;
    wait_job(&app, &s.repo, 20, |j| j.state == JobState::Planning).await?;
    deliver(&app, "issues", opened(&s, 21, "Second"), "d-gate-21").await?;
    wait_gate(&app, &s.customer, "the second job queued behind the first", |g| {
        g.running == [first.as_str()] && g.waiting == [second.as_str()]
    })
    .await?;
    assert_eq!(job(&app, &s.repo, 21).await?.map(|j| j.state), Some(JobState::Queued));

    // Act: an operator terminates the running job; it never sends `release`. The model is well
    // again for the next job.
    let handle = app.client.get_workflow_handle::<UntypedWorkflow>(first.clone());
    handle
        .terminate(WorkflowTerminateOptions::builder().reason("stuck, says the operator".to_owned()).build())
        .await?;
    let described = handle.describe(WorkflowDescribeOptions::default()).await?;
    assert_eq!(described.status(), WorkflowExecutionStatus::Terminated);
    let cleared = app.http.delete(format!("{}/_sandbox/faults", app.sandbox.base_url)).send().await?;
    anyhow::ensure!(cleared.status().is_success(), "faults not cleared: {}", cleared.status());

    // Assert: the gate frees the terminated job's slot, and the second job runs to its PR.
    let done = wait_job(&app, &s.repo, 21, |j| j.state == JobState::PrOpened).await?;
    assert!(done.history.contains(&JobState::Planning), "{:?}", done.history);
    let gate =
        wait_gate(&app, &s.customer, "the second job's slot given back", |g| g.running.is_empty()).await?;
    assert!(gate.waiting.is_empty(), "{gate:?}");

    // The gate's history: it checked its holders, cancelled its check timer once it had none
    // (an idle gate adds nothing), and replays with this code.
    let handle = app.client.get_workflow_handle::<JobGateWorkflow>(job_gate_workflow_id(&s.customer));
    let (json, kinds) = slipway_tests::wait_for("the gate's check timer cancelled", WAIT, || async {
        let json = handle.fetch_history(WorkflowFetchHistoryOptions::default()).to_json().await?;
        let kinds = event_kinds(&serde_json::from_slice(&json)?);
        // The last workflow task is done (its commands are in), no task is under way.
        let task = |k: &&i64| {
            (EventType::WorkflowTaskScheduled as i64..=EventType::WorkflowTaskFailed as i64).contains(*k)
        };
        let settled = kinds.iter().rev().find(task) == Some(&WORKFLOW_TASK_COMPLETED);
        Ok((settled && kinds.contains(&TIMER_CANCELED)).then_some((json, kinds)))
    })
    .await?;
    let text = String::from_utf8_lossy(&json);
    assert!(text.matches("closed_holders").count() >= 2, "checked at once, then on the timer: {kinds:?}");
    assert!(kinds.contains(&TIMER_FIRED), "{kinds:?}");
    let replayer = slipway_tests::replayer()?;
    replayer.replay_workflow(WorkflowHistory::from_json(&json)?).await?;
    Ok(())
}

const WORKFLOW_TASK_COMPLETED: i64 = EventType::WorkflowTaskCompleted as i64;
const TIMER_FIRED: i64 = EventType::TimerFired as i64;
const TIMER_CANCELED: i64 = EventType::TimerCanceled as i64;

fn event_kinds(history: &Value) -> Vec<i64> {
    history["events"].as_array().into_iter().flatten().filter_map(|e| e["event_type"].as_i64()).collect()
}
