//! [`TestApp`]: one running Slipway per test (sandbox, starter, worker) against Temporal, and its
//! lifecycle: start it, restart or kill the worker, stop the starter, shut everything down. The
//! helpers that drive a running app live beside this module, one module per concern.

use std::{collections::BTreeMap, net::SocketAddr, str::FromStr};

use anyhow::Context;
use slipway_sandbox::{RunningSandbox, SandboxConfig};
use slipway_starter::{Application, Gateway, StarterSettings};
use slipway_worker::WorkerSettings;
use temporalio_client::{Client, Url};

use crate::{
    ACTIONS_REPO, CALLBACK_SECRET, GITHUB_TOKEN, GITHUB_WEBHOOK_SECRET, HETZNER_TOKEN, JWT_SECRET,
    LLM_API_KEY, N8N_API_KEY, Options, PatchGate, STRIPE_API_KEY, STRIPE_SECRET, SUPABASE_TOKEN,
    TAILSCALE_API_KEY, VERCEL_TOKEN, connect, init_logging,
    temporal::{TemporalServer, temporal_server},
    worker::{WorkerProcess, join_worker, process_command, spawn_worker},
    worker_env, worker_settings,
};

/// One running Slipway, sandbox included.
pub struct TestApp {
    /// Sandbox (provider stand-ins).
    pub sandbox: RunningSandbox,
    /// Starter HTTP base URL.
    pub starter_url: String,
    /// Starter's internal metrics URL (with [`Options::internal_metrics`]).
    pub starter_metrics_url: Option<String>,
    /// Starter gRPC address.
    pub grpc_addr: SocketAddr,
    /// A Temporal client for assertions.
    pub client: Client,
    /// Task queue of this test's worker.
    pub task_queue: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Unique suffix for ids of this test.
    pub unique: String,
    /// Worker's Prometheus endpoint, when [`Options::worker_metrics`] asked for one (the first
    /// worker process's, with several).
    pub worker_metrics: Option<SocketAddr>,
    /// Every worker process's Prometheus endpoint ([`Options::worker_processes`]), in order.
    pub worker_metrics_addrs: Vec<SocketAddr>,
    worker_stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker_address: String,
    worker_settings: WorkerSettings,
    held_patches: Option<PatchGate>,
    worker_thread: Option<std::thread::JoinHandle<()>>,
    worker_children: std::sync::Mutex<Vec<WorkerProcess>>,
    starter_stop: Option<tokio::sync::oneshot::Sender<()>>,
    starter_settings: StarterSettings,
    starter_env: BTreeMap<&'static str, String>,
    offline_stops: std::sync::Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
    _server: TemporalServer,
}

impl TestApp {
    /// Start everything with default options.
    pub async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_with(Options::default()).await
    }

    /// Start everything.
    pub async fn spawn_with(opts: Options) -> anyhow::Result<Self> {
        init_logging();
        let server = match &opts.temporal_address {
            Some(address) => TemporalServer::Shared(address.clone()),
            None => temporal_server().await?,
        };
        let address = server.address();
        let unique = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let task_queue = format!("slipway-test-{unique}");

        // The sandbox and the starter need each other's URLs: pick the sandbox port first, start
        // the starter (port 0), then the sandbox on the picked port.
        let sandbox_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let sandbox_addr = sandbox_listener.local_addr()?;
        let sandbox_url = format!("http://{sandbox_addr}");
        let starter_target = opts.starter_temporal_address.clone().unwrap_or_else(|| address.clone());
        let mut starter_env: BTreeMap<&'static str, String> = BTreeMap::from([
            ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET.to_owned()),
            ("GITHUB_CALLBACK_SECRET", CALLBACK_SECRET.to_owned()),
            ("SLIPWAY_JWT_SECRET", JWT_SECRET.to_owned()),
            ("GITHUB_WEBHOOK_SECRET", GITHUB_WEBHOOK_SECRET.to_owned()),
            ("SLIPWAY_MAX_JOBS_PER_CUSTOMER", opts.max_jobs_per_customer.to_string()),
            ("STRIPE_SECRET_KEY", STRIPE_API_KEY.to_owned()),
            ("STRIPE_PRICE_ID", "price_slipway_agent".to_owned()),
            ("STRIPE_API_URL", format!("{sandbox_url}/stripe")),
            ("SLIPWAY_SHUTDOWN_WAIT_SECS", opts.shutdown_wait_secs.to_string()),
            ("SLIPWAY_GRACE_PERIOD_SECS", opts.grace_period_secs.to_string()),
            ("SLIPWAY_HISTORY_LIMIT", opts.history_limit.to_string()),
            ("SLIPWAY_COMMAND_ATTEMPTS", opts.command_attempts.to_string()),
            ("SLIPWAY_CHECKOUT_RETRY_SECS", opts.checkout_retry_secs.to_string()),
            ("SLIPWAY_BILLING_REASSERT_SECS", opts.billing_reassert_secs.to_string()),
            ("SLIPWAY_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("SLIPWAY_GRPC_ADDR", "127.0.0.1:0".to_owned()),
            ("SLIPWAY_TASK_QUEUE", task_queue.clone()),
            ("SLIPWAY_TEMPORAL_TIMEOUT_MS", "3000".to_owned()),
            ("SLIPWAY_CALLBACK_DEADLINE_SECS", opts.policy.callback_deadline_secs.to_string()),
            ("SLIPWAY_DISPATCH_DEADLINE_SECS", opts.policy.dispatch_deadline_secs.to_string()),
            ("SLIPWAY_API_RATE_PER_MIN", opts.rate_limits.0.to_string()),
            ("SLIPWAY_AUTH_FAILURES_PER_MIN", opts.rate_limits.1.to_string()),
            ("SLIPWAY_MAX_DRAFT_AGENTS", opts.max_draft_agents.to_string()),
            // Event streams' keep-alive, short enough for a test to see one.
            ("SLIPWAY_EVENTS_HEARTBEAT_SECS", "1".to_owned()),
            ("SLIPWAY_PAYLOAD_KEYS", crate::PAYLOAD_KEYS.to_owned()),
            ("GITHUB_ACTIONS_REPO", ACTIONS_REPO.to_owned()),
            ("SLIPWAY_ACTIONS_OIDC_ISSUER", format!("{sandbox_url}/github-oidc")),
        ]);
        if opts.internal_metrics {
            starter_env.insert("SLIPWAY_STARTER_METRICS_ADDR", "127.0.0.1:0".to_owned());
        }
        if let Some(on) = opts.callback_hmac {
            starter_env.insert("SLIPWAY_CALLBACK_HMAC", on.to_string());
        }
        let settings = StarterSettings::from_lookup(|k| starter_env.get(k).cloned())?;
        let mut gateway = Gateway::for_address(
            Url::from_str(&format!("http://{starter_target}"))?,
            "default",
            task_queue.clone(),
            settings.temporal_timeout,
            settings.encryption.clone(),
        );
        if opts.held_patches.is_some() {
            // A test that holds patches back plays the release before them: its starter started
            // runs without a protocol, whose code asks the patches.
            gateway = gateway.with_protocol(0);
        }
        let starter_settings = settings.clone();
        let starter = Application::build(settings, gateway).await?;
        let starter_url = format!("http://{}", starter.http_addr());
        let starter_metrics_url = starter.metrics_addr().map(|a| format!("http://{a}/metrics"));
        let grpc_addr = starter.grpc_addr();
        let (starter_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(starter.run(async move {
            let _ = stop_rx.await;
        }));

        let defaults = SandboxConfig::default();
        let sandbox = slipway_sandbox::spawn_on(
            sandbox_listener,
            SandboxConfig {
                addr: sandbox_addr,
                callback_secret: CALLBACK_SECRET.to_owned(),
                stripe_webhook_secret: STRIPE_SECRET.to_owned(),
                stripe_webhook_url: format!("{starter_url}/webhooks/stripe"),
                hetzner_action_ms: opts.hetzner_action_ms,
                runner_step_ms: opts.runner_step_ms,
                github_webhook_url: format!("{starter_url}/webhooks/github"),
                github_webhook_secret: GITHUB_WEBHOOK_SECRET.to_owned(),
                record_exchanges: opts.record_exchanges,
                stripe_api_key: STRIPE_API_KEY.to_owned(),
                github_token: GITHUB_TOKEN.to_owned(),
                hetzner_token: opts.sandbox_hetzner_token.clone().unwrap_or_else(|| HETZNER_TOKEN.to_owned()),
                tailscale_api_key: TAILSCALE_API_KEY.to_owned(),
                supabase_token: SUPABASE_TOKEN.to_owned(),
                vercel_token: VERCEL_TOKEN.to_owned(),
                n8n_api_key: N8N_API_KEY.to_owned(),
                llm_api_key: LLM_API_KEY.to_owned(),
                stripe_delivery_attempts: opts
                    .stripe_delivery
                    .map_or(defaults.stripe_delivery_attempts, |d| d.0),
                stripe_retry_base_ms: opts.stripe_delivery.map_or(defaults.stripe_retry_base_ms, |d| d.1),
                ..defaults
            },
        )
        .await?;

        let mut worker_settings = worker_settings(
            &sandbox.base_url,
            &task_queue,
            &format!("{starter_url}/callbacks/github-actions"),
        );
        if let Some(secs) = opts.job_gate_check_secs {
            worker_settings.job_gate_check = std::time::Duration::from_secs(secs);
        }
        if let Some(version) = &opts.worker_version {
            worker_settings.version = version.clone();
        }
        let worker_metrics = if opts.worker_metrics {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            worker_settings.metrics_addr = Some(addr);
            Some(addr)
        } else {
            None
        };
        let mut worker_metrics_addrs = Vec::new();
        let (worker_stop, worker_thread, worker_children) = if opts.worker_process {
            let mut children = Vec::new();
            for i in 0..opts.worker_processes.max(1) {
                let mut env = worker_env(
                    &sandbox.base_url,
                    &task_queue,
                    &format!("{starter_url}/callbacks/github-actions"),
                );
                // Each process its own metrics endpoint (the first is `worker_metrics`).
                let metrics = match (i, worker_metrics) {
                    (0, Some(addr)) => Some(addr),
                    (_, Some(_)) => Some(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?),
                    (_, None) => None,
                };
                if let Some(addr) = metrics {
                    env.insert("SLIPWAY_METRICS_ADDR", addr.to_string());
                    worker_metrics_addrs.push(addr);
                }
                if let Some(secs) = opts.job_gate_check_secs {
                    env.insert("SLIPWAY_JOB_GATE_CHECK_SECS", secs.to_string());
                }
                env.extend(opts.worker_env.iter().cloned());
                children.push(WorkerProcess::start(&address, env)?);
            }
            (None, None, children)
        } else {
            worker_metrics_addrs.extend(worker_metrics);
            let (stop, thread) =
                spawn_worker(address.clone(), worker_settings.clone(), opts.held_patches.clone())?;
            (Some(stop), Some(thread), Vec::new())
        };
        let client = connect(&address).await?;

        Ok(Self {
            sandbox,
            starter_url,
            starter_metrics_url,
            grpc_addr,
            client,
            task_queue,
            http: reqwest::Client::new(),
            unique,
            worker_metrics,
            worker_metrics_addrs,
            worker_stop,
            worker_address: address.clone(),
            worker_settings,
            held_patches: opts.held_patches.clone(),
            worker_thread,
            worker_children: std::sync::Mutex::new(worker_children),
            starter_stop: Some(starter_stop),
            starter_settings,
            starter_env,
            offline_stops: std::sync::Mutex::default(),
            _server: server,
        })
    }

    /// The Temporal server's `host:port` (for processes configured through `TEMPORAL_ADDRESS`).
    pub fn temporal_address(&self) -> &str {
        &self.worker_address
    }

    /// An id unique to this test (`<prefix>-<unique>`).
    pub fn id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.unique)
    }

    /// Stop the worker (gracefully, as a deploy would) and start a fresh one: workflows resume
    /// from their histories on the new worker, with an empty cache.
    pub async fn restart_worker(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.worker_children.get_mut().map_or(true, |c| c.is_empty()),
            "the worker is a process: use kill_worker and start_worker"
        );
        if let Some(tx) = self.worker_stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.worker_thread.take() {
            tokio::task::spawn_blocking(move || join_worker(t)).await?;
        }
        let (stop, thread) = spawn_worker(
            self.worker_address.clone(),
            self.worker_settings.clone(),
            self.held_patches.clone(),
        )?;
        self.worker_stop = Some(stop);
        self.worker_thread = Some(thread);
        Ok(())
    }

    /// Another in-process worker of this app as `version` (a rollout's new version), holding
    /// `held` patches back if given; it stops when the returned handle is dropped or stopped.
    pub fn spawn_version(
        &self,
        version: slipway_worker::WorkerVersion,
        held: Option<PatchGate>,
    ) -> anyhow::Result<VersionWorker> {
        let mut settings = self.worker_settings.clone();
        settings.version = version;
        let (stop, thread) = spawn_worker(self.worker_address.clone(), settings, held)?;
        Ok(VersionWorker { stop: Some(stop), thread: Some(thread) })
    }

    /// Stop the app's own worker (gracefully), e.g. an old version once drained.
    pub async fn stop_worker(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.worker_stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.worker_thread.take() {
            tokio::task::spawn_blocking(move || join_worker(t)).await?;
        }
        Ok(())
    }

    /// SIGKILL the worker process (needs [`Options::worker_process`]): no graceful shutdown, no
    /// activity completes or fails; Temporal notices through timeouts. Returns its pid.
    pub fn kill_worker(&self) -> anyhow::Result<u32> {
        self.kill_worker_at(0)
    }

    /// Start the worker process again after [`TestApp::kill_worker`].
    pub fn start_worker(&self) -> anyhow::Result<()> {
        self.start_worker_at(0)
    }

    /// [`TestApp::kill_worker`] for the `i`th of [`Options::worker_processes`].
    pub fn kill_worker_at(&self, i: usize) -> anyhow::Result<u32> {
        let mut guard = self.worker_children.lock().unwrap_or_else(|p| p.into_inner());
        guard.get_mut(i).context("no such worker process (Options::worker_process, worker_processes)")?.kill()
    }

    /// [`TestApp::start_worker`] for the `i`th of [`Options::worker_processes`].
    pub fn start_worker_at(&self, i: usize) -> anyhow::Result<()> {
        let mut guard = self.worker_children.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .get_mut(i)
            .context("no such worker process (Options::worker_process, worker_processes)")?
            .restart(&self.worker_address)
    }

    /// Another starter of this app, the `slipway-starter` binary in its own process with the
    /// same configuration and Temporal, on its own ports; ready (its `/readyz` answered 200)
    /// when returned. It is SIGKILLed when dropped.
    pub async fn spawn_starter_process(&self) -> anyhow::Result<StarterProcess> {
        let port = || -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
        };
        let (http, grpc) = (port()?, port()?);
        let mut cmd = process_command("slipway-starter", &self.starter_env, &self.worker_address)?;
        cmd.env("SLIPWAY_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("SLIPWAY_GRPC_ADDR", format!("127.0.0.1:{grpc}"));
        let process = StarterProcess {
            child: cmd.spawn().context("spawning slipway-starter")?,
            url: format!("http://127.0.0.1:{http}"),
        };
        let ready = format!("{}/readyz", process.url);
        crate::wait_until("the second starter ready", std::time::Duration::from_secs(30), || async {
            Ok(self.http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()))
        })
        .await?;
        Ok(process)
    }

    /// A second starter of this app whose Temporal is unreachable: it verifies deliveries as
    /// usual and answers 503 (`TEMPORAL_UNAVAILABLE`), as a starter does while Temporal is down.
    /// Returns its base URL; it stops with the app.
    pub async fn offline_starter(&self) -> anyhow::Result<String> {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let gateway = Gateway::for_address(
            Url::from_str(&format!("http://{dead}"))?,
            "default",
            self.task_queue.clone(),
            std::time::Duration::from_millis(500),
            self.starter_settings.encryption.clone(),
        );
        let starter = Application::build(self.starter_settings.clone(), gateway).await?;
        let url = format!("http://{}", starter.http_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(starter.run(async move {
            let _ = stopped.await;
        }));
        self.offline_stops.lock().unwrap_or_else(|p| p.into_inner()).push(stop);
        Ok(url)
    }

    /// Stop worker and starter (also done on drop).
    pub async fn stop(mut self) {
        self.shutdown();
    }

    /// Stop only the starter, as a deploy would (SIGTERM): it stops accepting connections and
    /// drains the requests in flight.
    pub fn stop_starter(&mut self) {
        if let Some(tx) = self.starter_stop.take() {
            let _ = tx.send(());
        }
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.starter_stop.take() {
            let _ = tx.send(());
        }
        for tx in self.offline_stops.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = tx.send(());
        }
        if let Some(tx) = self.worker_stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.worker_thread.take() {
            join_worker(t);
        }
        for mut child in self.worker_children.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = child.kill();
        }
    }
}

/// A starter started by [`TestApp::spawn_starter_process`].
pub struct StarterProcess {
    child: std::process::Child,
    url: String,
}

impl StarterProcess {
    /// Its HTTP base URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for StarterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker started by [`TestApp::spawn_version`].
pub struct VersionWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VersionWorker {
    /// Stop it gracefully and wait (bounded) for its thread.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            tokio::task::spawn_blocking(move || join_worker(t)).await?;
        }
        Ok(())
    }
}

impl Drop for VersionWorker {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            join_worker(t);
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}
