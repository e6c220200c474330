//! The worker under test. By default it runs in-process, on its own thread and runtime, built by
//! the same `build_worker_with` the binary uses, so a test can restart it or hold workflow
//! patches back ([`PatchGate`]); it runs as an OS process (the `slipway-worker` binary) when a
//! test must SIGKILL it. Either way its configuration points every provider at the sandbox.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use slipway_worker::{WorkerSettings, build_worker_with};

use crate::{
    GITHUB_APP_PRIVATE_KEY, GITHUB_TOKEN, HETZNER_TOKEN, LLM_API_KEY, N8N_API_KEY, SEAL_KEY, STRIPE_API_KEY,
    SUPABASE_TOKEN, TAILSCALE_API_KEY, VERCEL_TOKEN, connect,
};

/// A switch that holds workflow patches back ([`Options::held_patches`](crate::Options::held_patches)).
#[derive(Clone, Default)]
pub struct PatchGate {
    held: Arc<std::sync::Mutex<Vec<String>>>,
}

impl std::fmt::Debug for PatchGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchGate").field("held", &self.held()).finish()
    }
}

impl PatchGate {
    /// Hold these patches back from now on (new runs take the old path).
    pub fn hold(&self, patches: &[&str]) {
        *self.held.lock().expect("gate") = patches.iter().map(|p| (*p).to_owned()).collect();
    }

    /// Let every patch through from now on.
    pub fn release(&self) {
        self.held.lock().expect("gate").clear();
    }

    fn held(&self) -> Vec<String> {
        self.held.lock().expect("gate").clone()
    }

    fn callback(&self) -> temporalio_sdk::PatchActivationCallback {
        let gate = self.clone();
        Arc::new(move |input| !gate.held().contains(&input.patch_id))
    }
}

/// Worker settings pointing every provider at `sandbox`.
pub fn worker_settings(sandbox: &str, task_queue: &str, callback_url: &str) -> WorkerSettings {
    let vars = worker_env(sandbox, task_queue, callback_url);
    WorkerSettings::from_lookup(|k| vars.get(k).cloned()).expect("valid test worker settings")
}

/// The environment of a test worker (what [`worker_settings`] reads), e.g. for the
/// `slipway-worker` binary.
pub fn worker_env(sandbox: &str, task_queue: &str, callback_url: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("SLIPWAY_TASK_QUEUE", task_queue.to_owned()),
        ("SLIPWAY_DEPLOYMENT", crate::DEPLOYMENT.to_owned()),
        ("SLIPWAY_PAYLOAD_KEYS", crate::PAYLOAD_KEYS.to_owned()),
        ("HETZNER_API_URL", format!("{sandbox}/hetzner/v1")),
        ("HETZNER_API_TOKEN", HETZNER_TOKEN.to_owned()),
        ("HETZNER_POLL_INTERVAL_MS", "100".to_owned()),
        ("TAILSCALE_API_URL", format!("{sandbox}/tailscale")),
        ("TAILSCALE_API_KEY", TAILSCALE_API_KEY.to_owned()),
        ("GITHUB_API_URL", format!("{sandbox}/github")),
        ("GITHUB_TOKEN", GITHUB_TOKEN.to_owned()),
        ("GITHUB_ACTIONS_REPO", crate::ACTIONS_REPO.to_owned()),
        ("SLIPWAY_CALLBACK_URL", callback_url.to_owned()),
        ("SLIPWAY_SEAL_KEY", SEAL_KEY.to_owned()),
        ("STRIPE_API_URL", format!("{sandbox}/stripe")),
        ("STRIPE_SECRET_KEY", STRIPE_API_KEY.to_owned()),
        ("SUPABASE_API_URL", format!("{sandbox}/supabase")),
        ("SUPABASE_MANAGEMENT_TOKEN", SUPABASE_TOKEN.to_owned()),
        ("SUPABASE_ORG_ID", "org-slipway-test".to_owned()),
        (
            "SUPABASE_MIGRATIONS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/client-stack").to_owned(),
        ),
        ("GITHUB_ORG", "slipway-clients".to_owned()),
        ("GITHUB_TEMPLATE_REPO", "slipway/client-stack-template".to_owned()),
        ("VERCEL_API_URL", format!("{sandbox}/vercel")),
        ("VERCEL_TOKEN", VERCEL_TOKEN.to_owned()),
        ("N8N_HOST", format!("{sandbox}/n8n")),
        ("N8N_API_KEY", N8N_API_KEY.to_owned()),
        ("STACK_POLL_INTERVAL_MS", "100".to_owned()),
        ("GITHUB_APP_ID", "424242".to_owned()),
        ("GITHUB_APP_PRIVATE_KEY", GITHUB_APP_PRIVATE_KEY.to_owned()),
        ("LLM_API_URL", format!("{sandbox}/openai")),
        ("LLM_API_KEY", LLM_API_KEY.to_owned()),
        ("SLIPWAY_METRICS_ADDR", "off".to_owned()),
        // The Stripe catch-up feeds missed events to this test's starter, signed as Stripe signs.
        (
            "SLIPWAY_STARTER_URL",
            callback_url.split_once("/callbacks/").map_or(callback_url, |(base, _)| base).to_owned(),
        ),
        ("STRIPE_WEBHOOK_SECRET", crate::STRIPE_SECRET.to_owned()),
    ])
}

/// The worker runs on its own thread and runtime (workflow futures are not `Send`), exactly as
/// the binary runs it, until told to stop.
pub(crate) fn spawn_worker(
    address: String,
    settings: WorkerSettings,
    held_patches: Option<PatchGate>,
) -> anyhow::Result<(tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let started = async {
                let client = connect(&address).await?;
                let runtime = slipway_worker::runtime(&settings)?;
                let worker = build_worker_with(&runtime, client, &settings, |options| {
                    if let Some(gate) = &held_patches {
                        options.patch_activation_callback = Some(gate.callback());
                    }
                })?;
                Ok::<_, anyhow::Error>((runtime, worker))
            }
            .await;
            let (_runtime, mut worker) = match started {
                Ok(w) => {
                    let _ = ready_tx.send(Ok(()));
                    w
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let shutdown = Arc::new(worker.shutdown_handle());
            tokio::spawn(async move {
                let _ = stop_rx.await;
                shutdown();
            });
            if let Err(e) = worker.run().await {
                eprintln!("test worker stopped with an error: {e}");
            }
        });
    });
    ready_rx.recv().context("worker thread died")??;
    Ok((stop_tx, thread))
}

/// Wait for a stopped test worker's thread, but not forever: the SDK's worker shutdown sometimes
/// waits out a long poll or a workflow it cannot evict, and a test that already asserted what it
/// wanted must not hang on that. A thread still running after the bound is left to the process.
pub(crate) fn join_worker(thread: std::thread::JoinHandle<()>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !thread.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if thread.is_finished() {
        let _ = thread.join();
    } else {
        eprintln!("the test worker did not stop within 20 s; leaving its thread behind");
    }
}

/// Path of a workspace binary (package and binary share the name) next to the test executable,
/// built first if missing (`cargo test` builds only the binaries of the package under test; CI
/// builds them all before the suite).
pub fn workspace_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::current_exe()?
        .parent()
        .and_then(|d| d.parent())
        .map(std::path::PathBuf::from)
        .context("target dir")?;
    let path = dir.join(name);
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo).args(["build", "-p", name, "--bin", name]).status()?;
        anyhow::ensure!(status.success(), "building {name} failed");
    }
    Ok(path)
}

/// A workspace binary (`name`) as a test's child process: only `env`, Temporal at `address`
/// (namespace `default`), `PATH` and `HOME`; errors-only logs, no stdin or stdout.
pub(crate) fn process_command(
    name: &str,
    env: &BTreeMap<&'static str, String>,
    address: &str,
) -> anyhow::Result<std::process::Command> {
    let mut cmd = std::process::Command::new(workspace_binary(name)?);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("TEMPORAL_ADDRESS", address)
        .env("TEMPORAL_NAMESPACE", "default")
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    for var in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    Ok(cmd)
}

/// The `slipway-worker` binary running as a child process with a test's environment.
pub(crate) struct WorkerProcess {
    child: Option<std::process::Child>,
    env: BTreeMap<&'static str, String>,
}

impl WorkerProcess {
    pub(crate) fn start(address: &str, env: BTreeMap<&'static str, String>) -> anyhow::Result<Self> {
        let mut me = Self { child: None, env };
        me.restart(address)?;
        Ok(me)
    }

    pub(crate) fn restart(&mut self, address: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the worker process is still running");
        let mut cmd = process_command("slipway-worker", &self.env, address)?;
        cmd.env("RUST_LOG", std::env::var("SLIPWAY_TEST_WORKER_LOG").unwrap_or_else(|_| "error".into()));
        self.child = Some(cmd.spawn().context("spawning slipway-worker")?);
        Ok(())
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap; returns the pid.
    pub(crate) fn kill(&mut self) -> anyhow::Result<u32> {
        let mut child = self.child.take().context("the worker process is not running")?;
        let pid = child.id();
        child.kill()?;
        child.wait()?;
        Ok(pid)
    }
}
