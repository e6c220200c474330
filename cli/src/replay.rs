//! `slipway replay [<history.json>...] [--workflow-id ID...]`: replay histories against this
//! build's workflow code, with the same registration the worker uses. Files are in the SDK's
//! history JSON (`WorkflowHistory::to_json`, as under `tests/histories/`; the Rust SDK does not
//! read the proto-JSON of `temporal workflow show --output json` yet); `--workflow-id` fetches
//! the latest run's history from Temporal instead. One line per history, PASS or FAIL with the
//! reason; exit 1 if any fails (nondeterminism, or a file that is not a history).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use temporalio_client::{Client, UntypedWorkflow, WorkflowFetchHistoryOptions, WorkflowHistory};
use temporalio_sdk::workflow_replayer::{
    WorkflowReplayError, WorkflowReplayFailure, WorkflowReplayer, WorkflowReplayerOptions,
};

use crate::api::print_json;

/// Options of `slipway replay`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// History files (JSON).
    #[arg(required_unless_present = "workflow_id")]
    files: Vec<PathBuf>,
    /// Also replay the latest run of this workflow, fetched from Temporal (`TEMPORAL_ADDRESS`,
    /// `TEMPORAL_NAMESPACE`); repeatable.
    #[arg(long)]
    workflow_id: Vec<String>,
    /// Print the results as a JSON array.
    #[arg(long)]
    json: bool,
}

/// The outcome for one file.
#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    /// The file, or `workflow:<id>`.
    pub(crate) file: String,
    /// Workflow type named by its first event.
    pub(crate) workflow_type: Option<String>,
    /// Number of events.
    pub(crate) events: usize,
    /// True when it replayed.
    pub(crate) passed: bool,
    /// `nondeterminism`, `invalid_history`, `workflow_task_failure`, `unreadable`, ...
    pub(crate) failure: Option<String>,
    /// Details.
    pub(crate) message: Option<String>,
}

/// Workflow type named by a history's first event.
fn workflow_type(json: &serde_json::Value) -> Option<String> {
    let first = &json["events"][0]["attributes"];
    let attrs = first.as_object()?.values().next()?;
    attrs["workflow_type"]["name"].as_str().map(str::to_owned)
}

fn classify(e: &WorkflowReplayError) -> &'static str {
    match e {
        WorkflowReplayError::Replay(WorkflowReplayFailure::Nondeterminism { .. }) => "nondeterminism",
        WorkflowReplayError::Replay(WorkflowReplayFailure::InvalidHistory { .. }) => "invalid_history",
        WorkflowReplayError::Replay(WorkflowReplayFailure::WorkflowTaskFailure { .. }) => {
            "workflow_task_failure"
        }
        _ => "replay_error",
    }
}

fn outcome(file: String) -> Outcome {
    Outcome { file, workflow_type: None, events: 0, passed: false, failure: None, message: None }
}

/// Replay a history whose JSON is `bytes`.
async fn replay_json(
    replayer: &WorkflowReplayer,
    mut outcome: Outcome,
    bytes: anyhow::Result<Vec<u8>>,
) -> Outcome {
    let read = bytes.and_then(|bytes| {
        let value: serde_json::Value = serde_json::from_slice(&bytes).context("not JSON")?;
        let history = WorkflowHistory::from_json(&bytes).context("not a workflow history")?;
        Ok((value, history))
    });
    let (value, history) = match read {
        Ok(v) => v,
        Err(e) => {
            outcome.failure = Some("unreadable".to_owned());
            outcome.message = Some(format!("{e:#}"));
            return outcome;
        }
    };
    outcome.workflow_type = workflow_type(&value);
    outcome.events = value["events"].as_array().map_or(0, Vec::len);
    match replayer.replay_workflow(history).await {
        Ok(()) => outcome.passed = true,
        Err(e) => {
            outcome.failure = Some(classify(&e).to_owned());
            outcome.message = Some(e.to_string());
        }
    }
    outcome
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The latest run's history of `workflow_id`, as JSON.
async fn fetch(client: &Client, workflow_id: &str) -> anyhow::Result<Vec<u8>> {
    let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id);
    handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .with_context(|| format!("fetching the history of {workflow_id}"))
}

fn print(o: &Outcome) {
    let kind = o.workflow_type.as_deref().unwrap_or("?");
    if o.passed {
        println!("PASS  {}  ({kind}, {} events)", o.file, o.events);
    } else {
        println!(
            "FAIL  {}  ({kind}): {}: {}",
            o.file,
            o.failure.as_deref().unwrap_or("error"),
            o.message.as_deref().unwrap_or("")
        );
    }
}

/// `slipway replay`.
pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<i32> {
    // Encrypted histories replay with the keys that wrote them (plaintext ones pass through).
    let converter = crate::api::encryption()?.data_converter();
    let options =
        slipway_workflows::register_all(WorkflowReplayerOptions::new())?.data_converter(converter).build();
    let replayer = WorkflowReplayer::new(options)?;
    let mut outcomes = Vec::new();
    for file in &args.files {
        let o = replay_json(&replayer, outcome(file.display().to_string()), read(file)).await;
        if !args.json {
            print(&o);
        }
        outcomes.push(o);
    }
    if !args.workflow_id.is_empty() {
        let client = crate::api::connect_temporal().await?;
        for id in &args.workflow_id {
            let o = replay_json(&replayer, outcome(format!("workflow:{id}")), fetch(&client, id).await).await;
            if !args.json {
                print(&o);
            }
            outcomes.push(o);
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if args.json {
        print_json(&outcomes)?;
    } else {
        println!("{} passed, {failed} failed", outcomes.len() - failed);
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
