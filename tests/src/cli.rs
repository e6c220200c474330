//! The `slipway` command line as a person runs it: the binary (built if this test run has not),
//! configured for a running [`TestApp`] the way a developer's shell would be.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use serde_json::Value;

use crate::{GITHUB_WEBHOOK_SECRET, JWT_SECRET, STRIPE_SECRET, TestApp};

/// Path of the `slipway` binary, building it if this test run has not (`cargo test` builds only
/// the binaries of the package under test).
pub fn slipway_bin() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::current_exe()?.parent().and_then(|d| d.parent()).map(PathBuf::from).expect("target dir");
    let path = dir.join("slipway");
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo).args(["build", "-p", "slipway-cli", "--bin", "slipway"]).status()?;
        anyhow::ensure!(status.success(), "building slipway failed");
    }
    Ok(path)
}

/// What one run of `slipway` printed and returned.
pub struct Run {
    /// Exit code.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Standard output read as JSON (panics, showing both streams, if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Run `slipway args…` configured for `app` (its addresses, task queue and secrets), the way a
/// developer's shell would be.
pub async fn slipway(app: Option<&TestApp>, args: &[&str]) -> anyhow::Result<Run> {
    let mut cmd = tokio::process::Command::new(slipway_bin()?);
    cmd.args(args).env("NO_COLOR", "1");
    for var in ["SLIPWAY_HTTP_ADDR", "TEMPORAL_ADDRESS", "SLIPWAY_TASK_QUEUE", "TEMPORAL_NAMESPACE"] {
        cmd.env_remove(var);
    }
    if let Some(app) = app {
        cmd.env("SLIPWAY_HTTP_ADDR", app.starter_url.trim_start_matches("http://"))
            .env("TEMPORAL_ADDRESS", app.temporal_address())
            .env("TEMPORAL_NAMESPACE", "default")
            .env("SLIPWAY_TASK_QUEUE", &app.task_queue)
            .env("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
            .env("GITHUB_WEBHOOK_SECRET", GITHUB_WEBHOOK_SECRET)
            .env("SLIPWAY_JWT_SECRET", JWT_SECRET)
            .env("SLIPWAY_PAYLOAD_KEYS", crate::PAYLOAD_KEYS);
    }
    let Output { status, stdout, stderr } = cmd.output().await?;
    Ok(Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

impl TestApp {
    /// The worker's reconciler schedules for this app, on an interval that will not fire during
    /// a test: runs come from `slipway reconcile`, as an operator triggers them. The sweep has
    /// no grace period (only ownership protects a resource) and deletes when `sweep_delete`.
    pub async fn reconciler_schedules(&self, sweep_delete: bool) -> anyhow::Result<()> {
        let rare = std::time::Duration::from_secs(1_000_003);
        let settings = slipway_worker::ReconcileSettings {
            stripe_every: rare,
            github_every: rare,
            sweep_every: rare,
            sweep_grace: std::time::Duration::ZERO,
            sweep_delete,
            ..slipway_worker::ReconcileSettings::default()
        };
        slipway_worker::ensure_schedules(&self.client, &self.task_queue, &settings).await?;
        Ok(())
    }

    /// `slipway reconcile <which>` (with `--json` when `json`), checked to succeed: the run's
    /// workflow id and its report (as printed with `--json`; otherwise the run's result, read
    /// from Temporal, and the human summary echoed to the test's output).
    pub async fn reconcile(&self, which: &str, json: bool) -> anyhow::Result<(String, Value)> {
        let args: &[&str] = if json { &["reconcile", which, "--json"] } else { &["reconcile", which] };
        let run = slipway(Some(self), args).await?;
        anyhow::ensure!(run.code == Some(0), "slipway reconcile {which}: {run}");
        let workflow_id = run
            .stderr
            .lines()
            .find_map(|l| l.split_once(": run ").map(|(_, id)| id.trim().to_owned()))
            .ok_or_else(|| anyhow::anyhow!("no run named: {run}"))?;
        if json {
            return Ok((workflow_id, run.json()));
        }
        eprintln!("$ slipway reconcile {which}\n{}", run.stdout);
        let handle =
            self.client.get_workflow_handle::<temporalio_client::UntypedWorkflow>(workflow_id.clone());
        let raw = handle.get_result(Default::default()).await?;
        let data = raw.payloads.first().map(|p| p.data.clone()).unwrap_or_default();
        Ok((workflow_id, serde_json::from_slice(&data)?))
    }
}
