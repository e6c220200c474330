//! The end-to-end harness: every test meets Slipway the way a user does.
//!
//! [`TestApp::spawn`] starts, per test and in-process:
//! - a fresh **sandbox** (the provider APIs) on a free port,
//! - the real **worker** (the same `build_worker` the binary uses) on a unique task queue,
//! - the real **starter** (HTTP + gRPC) on free ports,
//!
//! all against a **real Temporal dev server**: the one `scripts/test` starts
//! (`SLIPWAY_TEST_TEMPORAL_ADDRESS`), or, when a test is run alone with plain `cargo test`, one
//! started for the test from the project's `.venv` (or `temporal` on `PATH`). Nothing about
//! Temporal is faked. Ids are unique per test so tests share the server safely.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use slipway_proto::model::{AgentRecord, AgentStatus, ProvisioningPolicy};
use slipway_sandbox::{RunningSandbox, SandboxConfig, stripe::CheckoutArgs};
use slipway_starter::{Application, Gateway, StarterSettings};
use slipway_worker::{WorkerSettings, build_worker_with};
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use temporalio_sdk::testing::{EphemeralExe, LocalWorkflowEnvironmentOptions, WorkflowEnvironment};

/// Secrets shared by the sandbox (which signs) and Slipway (which verifies) in tests.
pub const STRIPE_SECRET: &str = "whsec_test_slipway";
/// Callback HMAC secret.
pub const CALLBACK_SECRET: &str = "test-callback-secret";
/// GitHub App webhook secret.
pub const GITHUB_WEBHOOK_SECRET: &str = "test-github-webhook-secret";
/// JWT secret.
pub const JWT_SECRET: &str = "test-jwt-secret-of-at-least-32-bytes";
/// Seal key (hex).
pub const SEAL_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// Hetzner API token.
pub const HETZNER_TOKEN: &str = "test-hetzner-token";
/// Tailscale API key.
pub const TAILSCALE_API_KEY: &str = "tskey-api-test";
/// GitHub token (Actions dispatch, client stacks).
pub const GITHUB_TOKEN: &str = "ghp_test";
/// Stripe API key.
pub const STRIPE_API_KEY: &str = "sk_test_slipway";
/// Supabase management token.
pub const SUPABASE_TOKEN: &str = "sbp_test";
/// Vercel token.
pub const VERCEL_TOKEN: &str = "vercel_test";
/// n8n API key.
pub const N8N_API_KEY: &str = "n8n_test";
/// Model API key.
pub const LLM_API_KEY: &str = "sk-llm-test";
/// The GitHub App's private key (a throwaway test key).
pub const GITHUB_APP_PRIVATE_KEY: &str = include_str!("../fixtures/github-app-test-key.pem");
/// Env var naming a directory where every test process writes its log (debug level for the
/// Slipway crates), for the secret scan after the suite.
pub const LOG_DIR_ENV: &str = "SLIPWAY_TEST_LOG_DIR";

/// Every secret value the harness configures, by the variable it is given as. The secret scan
/// (`slipway-secret-scan`, the replay tests) looks for each of these; values the sandbox issues
/// while tests run are recognised by their shape ([`secret_scan`]). The private key counts by
/// each line of its body, so any fragment of it is found too.
pub fn configured_secrets() -> Vec<(&'static str, String)> {
    let mut secrets = vec![
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET.to_owned()),
        ("GITHUB_CALLBACK_SECRET", CALLBACK_SECRET.to_owned()),
        ("GITHUB_WEBHOOK_SECRET", GITHUB_WEBHOOK_SECRET.to_owned()),
        ("SLIPWAY_JWT_SECRET", JWT_SECRET.to_owned()),
        ("SLIPWAY_SEAL_KEY", SEAL_KEY.to_owned()),
        ("HETZNER_API_TOKEN", HETZNER_TOKEN.to_owned()),
        ("TAILSCALE_API_KEY", TAILSCALE_API_KEY.to_owned()),
        ("GITHUB_TOKEN", GITHUB_TOKEN.to_owned()),
        ("STRIPE_SECRET_KEY", STRIPE_API_KEY.to_owned()),
        ("SUPABASE_MANAGEMENT_TOKEN", SUPABASE_TOKEN.to_owned()),
        ("VERCEL_TOKEN", VERCEL_TOKEN.to_owned()),
        ("N8N_API_KEY", N8N_API_KEY.to_owned()),
        ("LLM_API_KEY", LLM_API_KEY.to_owned()),
    ];
    secrets.extend(
        GITHUB_APP_PRIVATE_KEY
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .map(|l| ("GITHUB_APP_PRIVATE_KEY", l.to_owned())),
    );
    secrets
}

pub mod otlp;
pub mod secret_scan;

/// Keyword search attributes to register on a dev server the harness starts itself.
pub const SEARCH_ATTRIBUTES: [&str; 4] = slipway_workflows::search_attributes::ALL;

/// Tunables of one test.
#[derive(Debug, Clone)]
pub struct Options {
    /// Saga knobs given to new agents.
    pub policy: ProvisioningPolicy,
    /// Sandbox: how long Hetzner actions run.
    pub hetzner_action_ms: u64,
    /// Sandbox: pause between runner callbacks.
    pub runner_step_ms: u64,
    /// Starter: Temporal address override (e.g. a dead port for the "Temporal down" test).
    pub starter_temporal_address: Option<String>,
    /// Run everything against this Temporal server (`host:port`) instead of the shared or an
    /// owned one (e.g. a server the test started with its Web UI, or one it restarts).
    pub temporal_address: Option<String>,
    /// Graceful shutdown budget of a stop.
    pub shutdown_wait_secs: u64,
    /// Payment grace period.
    pub grace_period_secs: u64,
    /// Continue-as-new threshold of long-lived workflows.
    pub history_limit: u32,
    /// Jobs of one customer running at once.
    pub max_jobs_per_customer: u32,
    /// Worker: serve Prometheus metrics on a free port ([`TestApp::worker_metrics`]).
    pub worker_metrics: bool,
    /// Run the worker as a separate OS process (the `slipway-worker` binary) instead of on a
    /// thread, so a test can SIGKILL it ([`TestApp::kill_worker`]).
    pub worker_process: bool,
    /// Extra environment of the worker process (with [`Options::worker_process`]).
    pub worker_env: Vec<(&'static str, String)>,
    /// Workflow changes (patch ids) the in-process worker holds back while the gate is closed,
    /// as a worker of the previous release would: runs started then take the old code path.
    pub held_patches: Option<PatchGate>,
    /// Starter: API requests per user and minute, and failed authentications per IP and minute
    /// (0 = no limit, the default here: tests poll and probe far more than a client would).
    pub rate_limits: (u32, u32),
    /// Starter: draft agents one user may hold.
    pub max_draft_agents: u32,
    /// Starter: serve `/metrics` on its own (internal) listener, not the public one.
    pub internal_metrics: bool,
}

/// A switch that holds workflow patches back ([`Options::held_patches`]).
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

impl Default for Options {
    fn default() -> Self {
        Self {
            policy: ProvisioningPolicy { callback_deadline_secs: 30, dispatch_deadline_secs: 60 },
            hetzner_action_ms: 300,
            runner_step_ms: 150,
            starter_temporal_address: None,
            temporal_address: None,
            shutdown_wait_secs: 2,
            grace_period_secs: 7 * 24 * 3600,
            history_limit: 5_000,
            max_jobs_per_customer: 2,
            worker_metrics: false,
            worker_process: false,
            worker_env: Vec::new(),
            held_patches: None,
            rate_limits: (0, 0),
            max_draft_agents: 20,
            internal_metrics: false,
        }
    }
}

/// A Temporal dev server to use: shared (scripts/test) or owned by this test.
enum TemporalServer {
    Shared(String),
    Owned { address: String, _env: Box<WorkflowEnvironment<temporalio_sdk::testing::LocalServer>> },
}

/// What [`TestApp::github_account`] set up.
#[derive(Debug, Clone)]
pub struct GitHubAccount {
    /// The paying user.
    pub user: String,
    /// Their Stripe customer.
    pub customer: String,
    /// The GitHub account (organisation) with the App installed.
    pub account: String,
    /// `account/shop`, the one repository of the installation.
    pub repo: String,
    /// The installation id.
    pub installation: u64,
}

/// What [`TestApp::runs`] reports.
#[derive(Debug, Clone)]
pub struct Runs {
    /// Id of the workflow's first run.
    pub first: String,
    /// Id of its current run.
    pub current: String,
    /// Events in the current run's history.
    pub history_length: usize,
}

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
    /// Worker's Prometheus endpoint, when [`Options::worker_metrics`] asked for one.
    pub worker_metrics: Option<SocketAddr>,
    worker_stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker_address: String,
    worker_settings: WorkerSettings,
    held_patches: Option<PatchGate>,
    worker_thread: Option<std::thread::JoinHandle<()>>,
    worker_child: std::sync::Mutex<Option<WorkerProcess>>,
    starter_stop: Option<tokio::sync::oneshot::Sender<()>>,
    _server: TemporalServer,
}

/// Initialise test logging once: to the test output with `TEST_LOG=1` (filtered by
/// `RUST_LOG`), and to `$SLIPWAY_TEST_LOG_DIR/<test binary>-<pid>.log` when that is set (debug
/// for the Slipway crates, info for the rest), which is what the secret scan reads.
pub fn init_logging() {
    use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let console = std::env::var_os("TEST_LOG").is_some().then(|| {
            tracing_subscriber::fmt::layer().with_test_writer().with_filter(EnvFilter::from_default_env())
        });
        let file = log_file().map(|file| {
            let crates = ["proto", "activities", "workflows", "worker", "starter", "sandbox", "tests"];
            let directives: Vec<String> = crates.iter().map(|c| format!("slipway_{c}=debug")).collect();
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .with_filter(EnvFilter::new(format!("info,{}", directives.join(","))))
        });
        // Trace export, when a test started it first (`slipway_telemetry::start_trace_export`).
        let otel = slipway_telemetry::otel_layer();
        if console.is_some() || file.is_some() || otel.is_some() {
            let _ = tracing_subscriber::registry().with(otel).with(console).with(file).try_init();
        }
    });
}

/// This process's log file under `$SLIPWAY_TEST_LOG_DIR`, if set.
fn log_file() -> Option<std::fs::File> {
    let dir = std::path::PathBuf::from(std::env::var_os(LOG_DIR_ENV)?);
    let exe = std::env::current_exe().ok();
    let name = exe.as_deref().and_then(|e| e.file_stem()).map_or("test".into(), |s| s.to_string_lossy());
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{name}-{}.log", std::process::id()));
    match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("cannot write the test log {}: {e}", path.display());
            None
        }
    }
}

fn find_temporal_cli() -> Option<String> {
    if let Ok(p) = std::env::var("SLIPWAY_TEST_TEMPORAL_CLI") {
        return Some(p);
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/temporal");
    if std::path::Path::new(venv).is_file() {
        return Some(venv.to_owned());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("temporal"))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
    })
}

async fn temporal_server() -> anyhow::Result<TemporalServer> {
    if let Ok(addr) = std::env::var("SLIPWAY_TEST_TEMPORAL_ADDRESS") {
        return Ok(TemporalServer::Shared(addr));
    }
    let exe =
        find_temporal_cli().context("no Temporal CLI: run scripts/test once, or put `temporal` on PATH")?;
    let mut extra = Vec::new();
    for sa in SEARCH_ATTRIBUTES {
        extra.push("--search-attribute".to_owned());
        extra.push(format!("{sa}=Keyword"));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let env = WorkflowEnvironment::start_local(
        LocalWorkflowEnvironmentOptions::builder()
            .server_executable(EphemeralExe::ExistingPath(exe))
            .port(port)
            .extra_args(extra)
            .build(),
    )
    .await?;
    Ok(TemporalServer::Owned { address: format!("127.0.0.1:{port}"), _env: Box::new(env) })
}

impl TemporalServer {
    fn address(&self) -> String {
        match self {
            Self::Shared(a) => a.clone(),
            Self::Owned { address, .. } => address.clone(),
        }
    }
}

/// A client to the test server at `address` (`host:port`).
pub async fn connect(address: &str) -> anyhow::Result<Client> {
    let url = Url::from_str(&format!("http://{address}"))?;
    let conn =
        Connection::connect(ConnectionOptions::new(url).identity("slipway-tests".to_owned()).build()).await?;
    Ok(Client::new(conn, ClientOptions::new("default").build())?)
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
        ("HETZNER_API_URL", format!("{sandbox}/hetzner/v1")),
        ("HETZNER_API_TOKEN", HETZNER_TOKEN.to_owned()),
        ("HETZNER_POLL_INTERVAL_MS", "100".to_owned()),
        ("TAILSCALE_API_URL", format!("{sandbox}/tailscale")),
        ("TAILSCALE_API_KEY", TAILSCALE_API_KEY.to_owned()),
        ("GITHUB_API_URL", format!("{sandbox}/github")),
        ("GITHUB_TOKEN", GITHUB_TOKEN.to_owned()),
        ("GITHUB_ACTIONS_REPO", "slipway/agents".to_owned()),
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
    ])
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
        let settings = StarterSettings::from_lookup(|k| match k {
            "STRIPE_WEBHOOK_SECRET" => Some(STRIPE_SECRET.to_owned()),
            "GITHUB_CALLBACK_SECRET" => Some(CALLBACK_SECRET.to_owned()),
            "SLIPWAY_JWT_SECRET" => Some(JWT_SECRET.to_owned()),
            "GITHUB_WEBHOOK_SECRET" => Some(GITHUB_WEBHOOK_SECRET.to_owned()),
            "SLIPWAY_MAX_JOBS_PER_CUSTOMER" => Some(opts.max_jobs_per_customer.to_string()),
            "STRIPE_SECRET_KEY" => Some(STRIPE_API_KEY.to_owned()),
            "STRIPE_PRICE_ID" => Some("price_slipway_agent".to_owned()),
            "STRIPE_API_URL" => Some(format!("{sandbox_url}/stripe")),
            "SLIPWAY_SHUTDOWN_WAIT_SECS" => Some(opts.shutdown_wait_secs.to_string()),
            "SLIPWAY_GRACE_PERIOD_SECS" => Some(opts.grace_period_secs.to_string()),
            "SLIPWAY_HISTORY_LIMIT" => Some(opts.history_limit.to_string()),
            "SLIPWAY_HTTP_ADDR" | "SLIPWAY_GRPC_ADDR" => Some("127.0.0.1:0".to_owned()),
            "SLIPWAY_TASK_QUEUE" => Some(task_queue.clone()),
            "SLIPWAY_TEMPORAL_TIMEOUT_MS" => Some("3000".to_owned()),
            "SLIPWAY_CALLBACK_DEADLINE_SECS" => Some(opts.policy.callback_deadline_secs.to_string()),
            "SLIPWAY_DISPATCH_DEADLINE_SECS" => Some(opts.policy.dispatch_deadline_secs.to_string()),
            "SLIPWAY_API_RATE_PER_MIN" => Some(opts.rate_limits.0.to_string()),
            "SLIPWAY_AUTH_FAILURES_PER_MIN" => Some(opts.rate_limits.1.to_string()),
            "SLIPWAY_MAX_DRAFT_AGENTS" => Some(opts.max_draft_agents.to_string()),
            "SLIPWAY_STARTER_METRICS_ADDR" if opts.internal_metrics => Some("127.0.0.1:0".to_owned()),
            _ => None,
        })?;
        let gateway = Gateway::for_address(
            Url::from_str(&format!("http://{starter_target}"))?,
            "default",
            task_queue.clone(),
            settings.temporal_timeout,
        );
        let starter = Application::build(settings, gateway).await?;
        let starter_url = format!("http://{}", starter.http_addr());
        let starter_metrics_url = starter.metrics_addr().map(|a| format!("http://{a}/metrics"));
        let grpc_addr = starter.grpc_addr();
        let (starter_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(starter.run(async move {
            let _ = stop_rx.await;
        }));

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
                ..SandboxConfig::default()
            },
        )
        .await?;

        let mut worker_settings = worker_settings(
            &sandbox.base_url,
            &task_queue,
            &format!("{starter_url}/callbacks/github-actions"),
        );
        let worker_metrics = if opts.worker_metrics {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            worker_settings.metrics_addr = Some(addr);
            Some(addr)
        } else {
            None
        };
        let (worker_stop, worker_thread, worker_child) = if opts.worker_process {
            let mut env = worker_env(
                &sandbox.base_url,
                &task_queue,
                &format!("{starter_url}/callbacks/github-actions"),
            );
            if let Some(addr) = worker_metrics {
                env.insert("SLIPWAY_METRICS_ADDR", addr.to_string());
            }
            env.extend(opts.worker_env.iter().cloned());
            (None, None, Some(WorkerProcess::start(&address, env)?))
        } else {
            let (stop, thread) =
                spawn_worker(address.clone(), worker_settings.clone(), opts.held_patches.clone())?;
            (Some(stop), Some(thread), None)
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
            worker_stop,
            worker_address: address.clone(),
            worker_settings,
            held_patches: opts.held_patches.clone(),
            worker_thread,
            worker_child: std::sync::Mutex::new(worker_child),
            starter_stop: Some(starter_stop),
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

    /// A signed `checkout.session.completed` event body (as Stripe sends it) and its id.
    pub fn checkout_event(&self, user_id: &str, agent_id: &str, region: &str) -> (String, String) {
        let event = slipway_sandbox::stripe::checkout_session_completed_event(&CheckoutArgs {
            user_id: user_id.to_owned(),
            agent_id: agent_id.to_owned(),
            region: region.to_owned(),
            customer_id: None,
            event_id: None,
        });
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        (serde_json::to_string(&event).expect("event serialises"), id)
    }

    /// POST a body to `/webhooks/stripe` with a fresh, valid signature.
    pub async fn post_stripe(&self, body: &str) -> anyhow::Result<reqwest::Response> {
        let header = slipway_sandbox::stripe::signature_header(body, STRIPE_SECRET, now());
        self.post_stripe_signed(body, &header).await
    }

    /// POST a body to `/webhooks/stripe` with the given `Stripe-Signature`.
    pub async fn post_stripe_signed(&self, body: &str, signature: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("{}/webhooks/stripe", self.starter_url))
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.to_owned())
            .send()
            .await?)
    }

    /// Install the GitHub App on `account` with one repository (in the sandbox); returns the
    /// installation id.
    pub async fn install_github_app(&self, account: &str, repo: &str) -> anyhow::Result<u64> {
        let inst = self
            .sandbox_post("/_sandbox/github/installations", json!({"account": account, "repos": [repo]}))
            .await?;
        inst["installation_id"].as_u64().context("installation id")
    }

    /// A paying user whose GitHub account has the App installed on one repository
    /// (`<acme-…>/shop`, with `maintainer` as a writer), linked to the user through the admin API
    /// when `link` is set: what a coding job needs before an issue webhook can start it.
    pub async fn github_account(&self, link: bool) -> anyhow::Result<GitHubAccount> {
        let user = self.id("user");
        let paid = self.subscribe(&user, None).await?;
        let customer = paid["customer_id"].as_str().context("customer id")?.to_owned();
        let account = self.id("acme");
        let repo = format!("{account}/shop");
        let installation = self.install_github_app(&account, &repo).await?;
        self.sandbox_post(
            &format!("/_sandbox/github/repos/{repo}/collaborators/maintainer"),
            json!({"permission": "write"}),
        )
        .await?;
        if link {
            let admin = self.token("ops", Some("admin"));
            let link = json!({"account": account, "userId": user, "customerId": customer});
            let (code, body) =
                self.api(reqwest::Method::POST, "/api/admin/github-links", Some(&admin), Some(link)).await?;
            anyhow::ensure!(code == 200, "linking {account}: {code} {body}");
        }
        Ok(GitHubAccount { user, customer, account, repo, installation })
    }

    /// A workflow's runs as Temporal describes it: first run id, current run id (they differ once
    /// it has continued as new) and the current run's history length.
    pub async fn runs(&self, workflow_id: &str) -> anyhow::Result<Runs> {
        let handle =
            self.client.get_workflow_handle::<slipway_workflows::AgentWorkflow>(workflow_id.to_owned());
        let desc = handle.describe(Default::default()).await?;
        let first = desc.raw_description.workflow_execution_info.as_ref().map(|i| i.first_run_id.clone());
        Ok(Runs {
            first: first.unwrap_or_default(),
            current: desc.run_id().to_owned(),
            history_length: desc.history_length(),
        })
    }

    /// The agent's record via the workflow query, or `None` if no agent workflow exists.
    pub async fn agent(&self, agent_id: &str) -> anyhow::Result<Option<AgentRecord>> {
        let gateway =
            Gateway::with_client(self.client.clone(), self.task_queue.clone(), Duration::from_secs(5));
        match gateway.agent(agent_id).await {
            Ok(r) => Ok(Some(r)),
            Err(slipway_starter::temporal::GatewayError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Poll until the agent reaches one of `statuses` (or fail after `timeout`).
    pub async fn wait_for_status(
        &self,
        agent_id: &str,
        statuses: &[AgentStatus],
        timeout: Duration,
    ) -> anyhow::Result<AgentRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(rec) = self.agent(agent_id).await? {
                if statuses.contains(&rec.status) {
                    return Ok(rec);
                }
                last = Some(rec);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("agent {agent_id} did not reach {statuses:?} in {timeout:?}; last: {last:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The sandbox inventory.
    pub async fn sandbox_state(&self) -> anyhow::Result<Value> {
        Ok(self.http.get(format!("{}/_sandbox/state", self.sandbox.base_url)).send().await?.json().await?)
    }

    /// Inject a fault into the sandbox.
    pub async fn fault(&self, fault: Value) -> anyhow::Result<()> {
        let r =
            self.http.post(format!("{}/_sandbox/faults", self.sandbox.base_url)).json(&fault).send().await?;
        anyhow::ensure!(r.status().is_success(), "fault not accepted: {}", r.text().await?);
        Ok(())
    }

    /// Set the fake Actions runner's outcome (`succeed`, `fail`, `silent`).
    pub async fn runner(&self, outcome: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/_sandbox/github/runner", self.sandbox.base_url))
            .json(&json!({"outcome": outcome, "reason": "bootstrap script exited with 1"}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "runner not set: {}", r.text().await?);
        Ok(())
    }

    /// The sandbox request log.
    pub async fn sandbox_requests(&self) -> anyhow::Result<Vec<Value>> {
        let v: Value = self
            .http
            .get(format!("{}/_sandbox/requests", self.sandbox.base_url))
            .send()
            .await?
            .json()
            .await?;
        Ok(match v {
            Value::Array(a) => a,
            Value::Object(mut o) => {
                o.remove("requests").and_then(|r| r.as_array().cloned()).unwrap_or_default()
            }
            _ => Vec::new(),
        })
    }

    /// Call the REST API; returns the status and the JSON body (`null` if none).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.starter_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A gateway over the test client (for queries the API does not expose).
    pub fn gateway(&self) -> Gateway {
        Gateway::with_client(self.client.clone(), self.task_queue.clone(), Duration::from_secs(5))
    }

    /// Subscribe `user` the way a customer does: `POST /api/billing/checkout` (optionally for an
    /// agent), then pay on the (sandbox) hosted page. Waits until the subscription entitles.
    /// Returns the sandbox's answer (`customer_id`, `subscription_id`, `invoice_id`, ...).
    pub async fn subscribe(&self, user: &str, agent: Option<(&str, &str)>) -> anyhow::Result<Value> {
        let token = self.token(user, None);
        let body = agent.map(|(id, region)| json!({"agentId": id, "region": region}));
        let (status, created) =
            self.api(reqwest::Method::POST, "/api/billing/checkout", Some(&token), body).await?;
        anyhow::ensure!(status == 201, "checkout: {status} {created}");
        let id = created["id"].as_str().context("session id")?;
        let paid: Value = self
            .http
            .post(format!("{}/_sandbox/stripe/checkout/{id}/complete", self.sandbox.base_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.gateway().entitlement_for_user(user).await?.is_some_and(|e| e.entitled) {
                return Ok(paid);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "subscription never became active");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stripe tells the starter that subscription `sub` of `customer` now has `seats` seats: a
    /// signed `customer.subscription.updated` in Stripe's shape (the seat count is the item's
    /// `quantity`), as Stripe sends after a quantity change. Waits until the customer's workflow
    /// applied it.
    pub async fn set_seats(&self, customer: &str, sub: &str, seats: u32) -> anyhow::Result<()> {
        let created = now() + 1;
        let mut object = slipway_sandbox::stripe::subscription_object(sub, customer, "active", created);
        object["items"]["data"][0]["quantity"] = json!(seats);
        let event = slipway_sandbox::stripe::event("customer.subscription.updated", object, created, None);
        let status = self.post_stripe(&event.to_string()).await?.status();
        anyhow::ensure!(status == 200, "quantity change: {status}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let billing = self.billing_state(customer).await?;
            if billing.subscriptions.get(sub).is_some_and(|s| s.seats == seats) {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "seats never applied: {billing:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POST to a sandbox control endpoint.
    pub async fn sandbox_post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self.http.post(format!("{}{path}", self.sandbox.base_url)).json(&body).send().await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path}: {status} {v}");
        Ok(v)
    }

    /// The customer's billing state (query on its subscription workflow).
    pub async fn billing_state(
        &self,
        customer_id: &str,
    ) -> anyhow::Result<slipway_proto::billing::CustomerBilling> {
        let handle = self.client.get_workflow_handle::<slipway_workflows::SubscriptionWorkflow>(
            slipway_proto::billing::customer_workflow_id(customer_id),
        );
        // Bounded: a query waits for a workflow task, and a test must fail (or retry), not hang,
        // when none comes.
        let query = handle.query(
            slipway_workflows::SubscriptionWorkflow::billing_state,
            (),
            temporalio_client::WorkflowQueryOptions::default(),
        );
        Ok(tokio::time::timeout(Duration::from_secs(10), query)
            .await
            .map_err(|_| anyhow::anyhow!("billing_state query of {customer_id}: no answer within 10 s"))??)
    }

    /// A JWT for `sub` (and optionally `role`).
    pub fn token(&self, sub: &str, role: Option<&str>) -> String {
        mint_token(sub, role, JWT_SECRET)
    }

    /// Stop the worker (gracefully, as a deploy would) and start a fresh one: workflows resume
    /// from their histories on the new worker, with an empty cache.
    pub async fn restart_worker(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.worker_child.get_mut().map_or(true, |c| c.is_none()),
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

    /// SIGKILL the worker process (needs [`Options::worker_process`]): no graceful shutdown, no
    /// activity completes or fails; Temporal notices through timeouts. Returns its pid.
    pub fn kill_worker(&self) -> anyhow::Result<u32> {
        let mut guard = self.worker_child.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_mut().context("the worker is not a process (Options::worker_process)")?.kill()
    }

    /// Start the worker process again after [`TestApp::kill_worker`].
    pub fn start_worker(&self) -> anyhow::Result<()> {
        let mut guard = self.worker_child.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_mut()
            .context("the worker is not a process (Options::worker_process)")?
            .restart(&self.worker_address)
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
        if let Some(tx) = self.worker_stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.worker_thread.take() {
            join_worker(t);
        }
        if let Some(mut child) = self.worker_child.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
        }
    }
}

/// Wait for a stopped test worker's thread, but not forever: the SDK's worker shutdown sometimes
/// waits out a long poll or a workflow it cannot evict, and a test that already asserted what it
/// wanted must not hang on that. A thread still running after the bound is left to the process.
fn join_worker(thread: std::thread::JoinHandle<()>) {
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

/// The `slipway-worker` binary running as a child process with a test's environment.
struct WorkerProcess {
    child: Option<std::process::Child>,
    env: BTreeMap<&'static str, String>,
}

impl WorkerProcess {
    fn start(address: &str, env: BTreeMap<&'static str, String>) -> anyhow::Result<Self> {
        let mut me = Self { child: None, env };
        me.restart(address)?;
        Ok(me)
    }

    fn restart(&mut self, address: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the worker process is still running");
        let mut cmd = std::process::Command::new(workspace_binary("slipway-worker")?);
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("TEMPORAL_ADDRESS", address)
            .env("TEMPORAL_NAMESPACE", "default")
            .env("RUST_LOG", std::env::var("SLIPWAY_TEST_WORKER_LOG").unwrap_or_else(|_| "error".into()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        for var in ["PATH", "HOME"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        self.child = Some(cmd.spawn().context("spawning slipway-worker")?);
        Ok(())
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap; returns the pid.
    fn kill(&mut self) -> anyhow::Result<u32> {
        let mut child = self.child.take().context("the worker process is not running")?;
        let pid = child.id();
        child.kill()?;
        child.wait()?;
        Ok(pid)
    }
}

/// A small seeded random number generator (SplitMix64) for fault schedules: the seed comes from
/// `var` if set, else from the clock, and tests print it so a run can be repeated.
pub struct SeededRng {
    /// The seed this generator started from.
    pub seed: u64,
    state: u64,
}

impl SeededRng {
    /// Seeded from the environment variable `var`, or from the clock.
    pub fn from_env(var: &str) -> Self {
        let seed = std::env::var(var).ok().and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        Self { seed, state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next_u64() % (high - low).max(1))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Status of an agent's Hetzner server in a sandbox inventory (`None`: no such server).
pub fn server_status(state: &Value, agent_id: &str) -> Option<String> {
    state["hetzner"]["servers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == format!("slipway-{agent_id}"))
        .and_then(|s| s["status"].as_str().map(str::to_owned))
}

/// A signed HS256 JWT valid for an hour.
pub fn mint_token(sub: &str, role: Option<&str>, secret: &str) -> String {
    let claims = slipway_starter::auth::Claims {
        sub: sub.to_owned(),
        role: role.map(str::to_owned),
        exp: now() as u64 + 3600,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}

/// Unix seconds.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The worker runs on its own thread and runtime (workflow futures are not `Send`), exactly as
/// the binary runs it, until told to stop.
fn spawn_worker(
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
