//! `slipway replay <history.json>...`: replay recorded histories (the JSON `temporal workflow
//! show --output json` and the Web UI's download write, as under `tests/histories/`) against
//! this build's workflow code, the same registration the worker uses. One line per file, PASS
//! or FAIL with the reason; exit 1 if any file fails (nondeterminism, or a file that is not a
//! history).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{
    WorkflowReplayError, WorkflowReplayFailure, WorkflowReplayer, WorkflowReplayerOptions,
};

use crate::api::print_json;

/// Options of `slipway replay`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// History files (JSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print the results as a JSON array.
    #[arg(long)]
    json: bool,
}

/// The outcome for one file.
#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    /// The file.
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

async fn replay_one(replayer: &WorkflowReplayer, path: &Path) -> Outcome {
    let mut outcome = Outcome {
        file: path.display().to_string(),
        workflow_type: None,
        events: 0,
        passed: false,
        failure: None,
        message: None,
    };
    let read = std::fs::read(path).with_context(|| format!("reading {}", path.display())).and_then(|bytes| {
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

/// `slipway replay`.
pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<i32> {
    let options = slipway_workflows::register_all(WorkflowReplayerOptions::new())?.build();
    let replayer = WorkflowReplayer::new(options)?;
    let mut outcomes = Vec::new();
    for file in &args.files {
        let outcome = replay_one(&replayer, file).await;
        if !args.json {
            let kind = outcome.workflow_type.as_deref().unwrap_or("?");
            if outcome.passed {
                println!("PASS  {}  ({kind}, {} events)", outcome.file, outcome.events);
            } else {
                println!(
                    "FAIL  {}  ({kind}): {}: {}",
                    outcome.file,
                    outcome.failure.as_deref().unwrap_or("error"),
                    outcome.message.as_deref().unwrap_or("")
                );
            }
        }
        outcomes.push(outcome);
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if args.json {
        print_json(&outcomes)?;
    } else {
        println!("{} passed, {failed} failed", outcomes.len() - failed);
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
