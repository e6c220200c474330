//! The processes under test, each started by the bench and stopped when it ends: a Temporal dev
//! server (in-memory), the sandbox, `slipway-starter`, `slipway-worker`, and the baseline worker
//! (this binary's `baseline-worker` subcommand). Every process logs to a file in the output
//! directory.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// Dev secrets shared by the load generator (which signs) and the starter (which verifies).
pub(crate) const STRIPE_WEBHOOK_SECRET: &str = "whsec_bench_slipway";
/// HMAC secret of the sandbox runner's callbacks.
pub(crate) const CALLBACK_SECRET: &str = "bench-callback-secret";
/// Task queue of Slipway's worker in the bench.
pub(crate) const TASK_QUEUE: &str = "slipway-bench";
/// The starter's JWT secret (the events scenario signs its users' tokens with it).
pub(crate) const JWT_SECRET: &str = "bench-jwt-secret-of-at-least-32-bytes";
/// The payload keys of every process of the stack and of the bench's own clients: payloads
/// are encrypted, as in a deployment (the baseline too, so the ratios compare like with like).
pub(crate) const PAYLOAD_KEYS: &str =
    "bench-1:6c9a4c0e5b7f3d2a1908f7e6d5c4b3a29180f7e6d5c4b3a29180706050403021";

/// [`PAYLOAD_KEYS`] as the codec reads them.
pub(crate) fn encryption() -> slipway_codec::Encryption {
    slipway_codec::Encryption::from_lookup(|k| (k == "SLIPWAY_PAYLOAD_KEYS").then(|| PAYLOAD_KEYS.to_owned()))
        .expect("valid bench keys")
}

/// How often an event stream's agent is read: the starter's default, stated.
pub(crate) const EVENTS_POLL_MS: u64 = 100;

/// A JWT for `user`, valid for an hour.
pub(crate) fn token(user: &str) -> String {
    let exp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
            + 3600;
    let claims = slipway_starter::auth::Claims { sub: user.to_owned(), role: None, exp };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap_or_default()
}
/// Task queue of the baseline worker.
pub(crate) const BASELINE_TASK_QUEUE: &str = "bench-baseline";

/// Worker tuning used for both workers (see BENCHMARKS.md for why).
pub(crate) const WORKER_TUNING: [(&str, &str); 5] = [
    ("SLIPWAY_WORKER_MAX_CACHED_WORKFLOWS", "1000"),
    ("SLIPWAY_WORKER_WORKFLOW_SLOTS", "200"),
    ("SLIPWAY_WORKER_ACTIVITY_SLOTS", "200"),
    ("SLIPWAY_WORKER_WORKFLOW_POLLERS", "8"),
    ("SLIPWAY_WORKER_ACTIVITY_POLLERS", "8"),
];

/// A child process, killed on drop.
pub(crate) struct Proc {
    /// Name for messages.
    pub(crate) name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
        Ok(Self { name, child })
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status}); see its log in the output directory", self.name);
        }
        Ok(())
    }

    /// Resident memory (VmRSS) in KiB, from /proc.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
}

/// CPU time process `pid` used so far (user + system), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3; utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first, so the dev server and workers stop cleanly; then make sure.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where the binaries are.
pub(crate) struct Bins {
    /// Directory of `slipway-worker`, `slipway-starter`, `slipway-sandbox`, `slipway-bench`.
    pub(crate) dir: PathBuf,
    /// Temporal CLI.
    pub(crate) temporal: PathBuf,
}

/// Everything running.
pub(crate) struct Stack {
    /// `host:port` of the Temporal frontend.
    pub(crate) temporal_address: String,
    /// Starter base URL.
    pub(crate) starter_url: String,
    /// Sandbox base URL.
    pub(crate) sandbox_url: String,
    /// The worker under test.
    pub(crate) worker: Proc,
    /// The baseline worker.
    pub(crate) baseline_worker: Proc,
    /// Starter.
    pub(crate) starter: Proc,
    /// Sandbox.
    pub(crate) sandbox: Proc,
    /// Dev server (dropped last).
    pub(crate) temporal: Proc,
}

impl Stack {
    /// Start everything and wait until the starter is ready.
    pub(crate) async fn start(bins: &Bins, out: &Path, temporal_port: u16) -> anyhow::Result<Self> {
        let temporal_address = format!("127.0.0.1:{temporal_port}");
        // Another server on that port would silently take this run's traffic.
        if std::net::TcpListener::bind(("127.0.0.1", temporal_port)).is_err() {
            bail!("port {temporal_port} is already in use: pick another with --temporal-port");
        }
        // In-memory dev server: nothing is kept between runs, and no disk I/O is measured.
        let mut cmd = Command::new(&bins.temporal);
        cmd.args(["server", "start-dev", "--ip", "127.0.0.1", "--port", &temporal_port.to_string()])
            .args(["--headless", "--log-level", "warn"])
            .args(["--http-port", &free_port()?.to_string(), "--metrics-port", &free_port()?.to_string()]);
        for sa in slipway_workflows::search_attributes::ALL {
            cmd.args(["--search-attribute", &format!("{sa}=Keyword")]);
        }
        let mut temporal = Proc::spawn("temporal dev server", cmd, &out.join("temporal.log"))?;
        wait_temporal(&mut temporal, &temporal_address).await?;

        let sandbox_addr = format!("127.0.0.1:{}", free_port()?);
        let sandbox_url = format!("http://{sandbox_addr}");
        let starter_addr = format!("127.0.0.1:{}", free_port()?);
        let starter_url = format!("http://{starter_addr}");

        let mut cmd = Command::new(bins.dir.join("slipway-sandbox"));
        cmd.env("SLIPWAY_SANDBOX_ADDR", &sandbox_addr)
            .env("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET)
            .env("GITHUB_CALLBACK_SECRET", CALLBACK_SECRET)
            // The credentials the sandbox accepts: the ones the starter and worker below use.
            .env("STRIPE_SECRET_KEY", "sk_test_bench")
            .env("HETZNER_API_TOKEN", "bench-hetzner-token")
            .env("GITHUB_TOKEN", "ghp_bench")
            .env("TAILSCALE_API_KEY", "tskey-api-bench")
            .env("SUPABASE_MANAGEMENT_TOKEN", "sbp_bench")
            .env("VERCEL_TOKEN", "vercel_bench")
            .env("N8N_API_KEY", "n8n_bench")
            .env("LLM_API_KEY", "sk-llm-bench")
            .env("SANDBOX_STRIPE_WEBHOOK_URL", format!("{starter_url}/webhooks/stripe"))
            // Zero-latency providers: servers boot at once, the fake runner calls back at once.
            .env("SANDBOX_HETZNER_ACTION_MS", "0")
            .env("SANDBOX_RUNNER_STEP_MS", "0")
            .env("RUST_LOG", "warn");
        let sandbox = Proc::spawn("sandbox", cmd, &out.join("sandbox.log"))?;

        let mut cmd = Command::new(bins.dir.join("slipway-starter"));
        cmd.env("SLIPWAY_HTTP_ADDR", &starter_addr)
            .env("SLIPWAY_GRPC_ADDR", format!("127.0.0.1:{}", free_port()?))
            .env("SLIPWAY_TASK_QUEUE", TASK_QUEUE)
            .env("TEMPORAL_ADDRESS", &temporal_address)
            .env("TEMPORAL_NAMESPACE", "default")
            .env("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET)
            .env("STRIPE_SECRET_KEY", "sk_test_bench")
            .env("STRIPE_PRICE_ID", "price_bench")
            .env("STRIPE_API_URL", format!("{sandbox_url}/stripe"))
            .env("GITHUB_CALLBACK_SECRET", CALLBACK_SECRET)
            .env("GITHUB_WEBHOOK_SECRET", "bench-github-webhook-secret")
            // The starter refuses secrets shorter than 32 bytes.
            .env("SLIPWAY_JWT_SECRET", JWT_SECRET)
            .env("SLIPWAY_PAYLOAD_KEYS", PAYLOAD_KEYS)
            .env("SLIPWAY_EVENTS_POLL_MS", EVENTS_POLL_MS.to_string())
            .env("SLIPWAY_TEMPORAL_TIMEOUT_MS", "10000")
            .env("RUST_LOG", "warn");
        let starter = Proc::spawn("starter", cmd, &out.join("starter.log"))?;

        let mut cmd = Command::new(bins.dir.join("slipway-worker"));
        worker_env(&mut cmd, &temporal_address, &sandbox_url, &starter_url);
        let worker = Proc::spawn("worker", cmd, &out.join("worker.log"))?;

        let mut cmd = Command::new(bins.dir.join("slipway-bench"));
        cmd.arg("baseline-worker")
            .env("TEMPORAL_ADDRESS", &temporal_address)
            .env("TEMPORAL_NAMESPACE", "default")
            .env("BENCH_TASK_QUEUE", BASELINE_TASK_QUEUE)
            .env("SLIPWAY_PAYLOAD_KEYS", PAYLOAD_KEYS)
            .env("RUST_LOG", "warn")
            .envs(WORKER_TUNING);
        let baseline_worker = Proc::spawn("baseline worker", cmd, &out.join("baseline-worker.log"))?;

        let mut stack = Self {
            temporal_address,
            starter_url,
            sandbox_url,
            worker,
            baseline_worker,
            starter,
            sandbox,
            temporal,
        };
        stack.wait_ready().await?;
        Ok(stack)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            let starter = http.get(format!("{}/readyz", self.starter_url)).send().await;
            let sandbox = http.get(format!("{}/_sandbox/state", self.sandbox_url)).send().await;
            if matches!((&starter, &sandbox), (Ok(a), Ok(b)) if a.status().is_success() && b.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the starter or the sandbox did not become ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if any process has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        self.temporal.check_alive()?;
        self.sandbox.check_alive()?;
        self.starter.check_alive()?;
        self.worker.check_alive()?;
        self.baseline_worker.check_alive()
    }
}

fn worker_env(cmd: &mut Command, temporal: &str, sandbox: &str, starter: &str) {
    let vars = [
        ("TEMPORAL_ADDRESS", temporal.to_owned()),
        ("TEMPORAL_NAMESPACE", "default".to_owned()),
        ("SLIPWAY_TASK_QUEUE", TASK_QUEUE.to_owned()),
        ("SLIPWAY_PAYLOAD_KEYS", PAYLOAD_KEYS.to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("HETZNER_API_URL", format!("{sandbox}/hetzner/v1")),
        ("HETZNER_API_TOKEN", "bench-hetzner-token".to_owned()),
        // Actions finish at once in the sandbox; the first poll sees them done.
        ("HETZNER_POLL_INTERVAL_MS", "20".to_owned()),
        ("TAILSCALE_API_URL", format!("{sandbox}/tailscale")),
        ("TAILSCALE_API_KEY", "tskey-api-bench".to_owned()),
        ("GITHUB_API_URL", format!("{sandbox}/github")),
        ("GITHUB_TOKEN", "ghp_bench".to_owned()),
        ("GITHUB_ACTIONS_REPO", "slipway/agents".to_owned()),
        ("SLIPWAY_CALLBACK_URL", format!("{starter}/callbacks/github-actions")),
        ("SLIPWAY_SEAL_KEY", "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0".to_owned()),
        ("STRIPE_API_URL", format!("{sandbox}/stripe")),
        ("STRIPE_SECRET_KEY", "sk_test_bench".to_owned()),
        ("SUPABASE_API_URL", format!("{sandbox}/supabase")),
        ("SUPABASE_MANAGEMENT_TOKEN", "sbp_bench".to_owned()),
        ("SUPABASE_ORG_ID", "org-bench".to_owned()),
        ("GITHUB_ORG", "slipway-clients".to_owned()),
        ("GITHUB_TEMPLATE_REPO", "slipway/client-stack-template".to_owned()),
        ("VERCEL_API_URL", format!("{sandbox}/vercel")),
        ("VERCEL_TOKEN", "vercel_bench".to_owned()),
        ("N8N_HOST", format!("{sandbox}/n8n")),
        ("N8N_API_KEY", "n8n_bench".to_owned()),
        ("GITHUB_APP_ID", "424242".to_owned()),
        ("GITHUB_APP_PRIVATE_KEY", include_str!("../../tests/fixtures/github-app-test-key.pem").to_owned()),
        ("LLM_API_URL", format!("{sandbox}/openai")),
        ("LLM_API_KEY", "sk-llm-bench".to_owned()),
    ];
    cmd.envs(vars).envs(WORKER_TUNING);
}

async fn wait_temporal(proc: &mut Proc, address: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proc.check_alive()?;
        if crate::connect(address).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the Temporal dev server did not answer on {address} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
