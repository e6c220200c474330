//! The knobs of one test ([`Options`]): each says what it changes in the sandbox, the starter or
//! the worker, and the defaults are what most tests want (fast fakes, no rate limits).

use slipway_proto::model::ProvisioningPolicy;

use crate::PatchGate;

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
    /// Attempts of one lifecycle command's activity before the command counts as failed.
    pub command_attempts: u32,
    /// How long a paid checkout waits while its user's other provisioning is in flight.
    pub checkout_retry_secs: u64,
    /// How often the customer's workflow re-asserts every agent's billing target.
    pub billing_reassert_secs: u64,
    /// Jobs of one customer running at once.
    pub max_jobs_per_customer: u32,
    /// Worker: how often a job gate checks that its slot holders still run
    /// (`SLIPWAY_JOB_GATE_CHECK_SECS`); `None` keeps the worker's default (300 s).
    pub job_gate_check_secs: Option<u64>,
    /// Worker: serve Prometheus metrics on a free port ([`TestApp::worker_metrics`](crate::TestApp::worker_metrics)).
    pub worker_metrics: bool,
    /// Run the worker as a separate OS process (the `slipway-worker` binary) instead of on a
    /// thread, so a test can SIGKILL it ([`TestApp::kill_worker`](crate::TestApp::kill_worker)).
    pub worker_process: bool,
    /// How many worker processes (with [`Options::worker_process`]; default 1), each with its
    /// own metrics endpoint when [`Options::worker_metrics`] is set.
    pub worker_processes: usize,
    /// Extra environment of the worker process (with [`Options::worker_process`]).
    pub worker_env: Vec<(&'static str, String)>,
    /// Workflow changes (patch ids) the in-process worker holds back while the gate is closed,
    /// as a worker of the previous release would: runs started then take the old code path.
    pub held_patches: Option<PatchGate>,
    /// The in-process worker's Worker Deployment version (versioning on); unversioned if `None`.
    pub worker_version: Option<slipway_worker::WorkerVersion>,
    /// Starter: API requests per user and minute, and failed authentications per IP and minute
    /// (0 = no limit, the default here: tests poll and probe far more than a client would).
    pub rate_limits: (u32, u32),
    /// Starter: draft agents one user may hold.
    pub max_draft_agents: u32,
    /// Starter: serve `/metrics` on its own (internal) listener, not the public one.
    pub internal_metrics: bool,
    /// Starter: accept HMAC-signed Actions callbacks (`SLIPWAY_CALLBACK_HMAC`); `None` leaves it
    /// unset, the starter's default: off, since the test starter has Actions OIDC configured.
    /// OIDC tokens from the sandbox's issuer are always accepted.
    pub callback_hmac: Option<bool>,
    /// Sandbox: record whole exchanges for the conformance suite (`GET /_sandbox/exchanges`).
    pub record_exchanges: bool,
    /// Sandbox: accept this Hetzner token instead of the worker's (to see a refused credential).
    pub sandbox_hetzner_token: Option<String>,
    /// The sandbox's Stripe delivery schedule: attempts per event and the first retry's delay in
    /// ms (doubling); `None` keeps the sandbox's default (8 attempts from 500 ms).
    pub stripe_delivery: Option<(u32, u64)>,
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
            command_attempts: 10,
            checkout_retry_secs: 1,
            billing_reassert_secs: 24 * 3600,
            max_jobs_per_customer: 2,
            job_gate_check_secs: None,
            worker_metrics: false,
            worker_process: false,
            worker_processes: 1,
            worker_env: Vec::new(),
            held_patches: None,
            worker_version: None,
            rate_limits: (0, 0),
            max_draft_agents: 20,
            internal_metrics: false,
            callback_hmac: None,
            record_exchanges: false,
            sandbox_hetzner_token: None,
            stripe_delivery: None,
        }
    }
}
