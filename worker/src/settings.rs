//! Worker configuration, from the environment.
//!
//! Every provider base URL and credential is configuration (`.env.example` documents each and
//! where to get it). A worker missing required variables refuses to start with *one* message
//! naming all of them, so an operator fixes the deployment in one go instead of one restart per
//! variable. Secrets are held as `SecretString` and never printed.

use std::time::Duration;

use secrecy::SecretString;
use slipway_activities::{
    JobActivities, ProvisioningConfig, ReconcileActivities, Sealer, StackConfig,
    jobs::{CodingLimits, PathPolicy},
};
use slipway_providers::{
    ClientError,
    github::{GitHubApp, GitHubClient},
    hetzner::HetznerClient,
    llm::LlmClient,
    n8n::N8nClient,
    stripe::{
        StripeClient,
        events::{StripeEvents, WebhookEndpoint},
    },
    supabase::SupabaseClient,
    tailscale::TailscaleClient,
    vercel::VercelClient,
};

/// Why the worker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Required variables are unset or empty.
    #[error("missing required configuration: {} (see .env.example)", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// A variable is set to something unusable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything the worker needs besides the Temporal connection (which comes from Temporal's own
/// env config: `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `temporal.toml`).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Task queue (`SLIPWAY_TASK_QUEUE`, default `slipway`).
    pub task_queue: String,
    /// This deployment's identity (`SLIPWAY_DEPLOYMENT`), if set; else derived from the
    /// namespace ([`WorkerSettings::deployment`]).
    pub deployment: Option<String>,
    /// Hetzner API base URL.
    pub hetzner_api_url: String,
    /// Hetzner API token.
    pub hetzner_api_token: SecretString,
    /// Server type.
    pub hetzner_server_type: String,
    /// Image.
    pub hetzner_image: String,
    /// Action poll interval.
    pub hetzner_poll_interval: Duration,
    /// Tailscale API base URL.
    pub tailscale_api_url: String,
    /// Tailscale API key.
    pub tailscale_api_key: SecretString,
    /// Tailnet (`-` = the key's default tailnet).
    pub tailscale_tailnet: String,
    /// Tags for agent devices.
    pub tailscale_tags: Vec<String>,
    /// GitHub API base URL.
    pub github_api_url: String,
    /// GitHub token (needs `actions:write` on the repo).
    pub github_token: SecretString,
    /// `owner/repo` of the bootstrap workflow.
    pub github_actions_repo: String,
    /// Workflow file.
    pub github_actions_workflow: String,
    /// Git ref.
    pub github_actions_ref: String,
    /// Public URL of the starter's `POST /callbacks/github-actions`.
    pub callback_url: String,
    /// Key sealing secrets in histories (64 hex chars).
    pub seal_key: SecretString,
    /// Stripe API base URL.
    pub stripe_api_url: String,
    /// Stripe secret key.
    pub stripe_secret_key: SecretString,
    /// Supabase Management API base URL.
    pub supabase_api_url: String,
    /// Supabase management token.
    pub supabase_token: SecretString,
    /// Supabase organization of client projects.
    pub supabase_org_id: String,
    /// Region of client projects.
    pub supabase_region: String,
    /// Directory of the client schema migrations.
    pub migrations_dir: std::path::PathBuf,
    /// GitHub organization of client repositories.
    pub github_org: String,
    /// `owner/name` of the client template repository.
    pub github_template_repo: String,
    /// Vercel API base URL.
    pub vercel_api_url: String,
    /// Vercel token.
    pub vercel_token: SecretString,
    /// Vercel team, if any.
    pub vercel_team_id: Option<String>,
    /// n8n instance base URL.
    pub n8n_host: String,
    /// n8n API key.
    pub n8n_api_key: SecretString,
    /// Poll interval of the stack's wait steps.
    pub stack_poll_interval: Duration,
    /// GitHub App id.
    pub github_app_id: String,
    /// GitHub App private key (PEM).
    pub github_app_private_key: SecretString,
    /// OpenAI-compatible API base URL.
    pub llm_api_url: String,
    /// Its key.
    pub llm_api_key: SecretString,
    /// Model.
    pub llm_model: String,
    /// Paths coding jobs may touch despite the path policy (`SLIPWAY_JOB_ALLOWED_PATHS`).
    pub job_paths: PathPolicy,
    /// How much of a repository a coding job may show the model (`SLIPWAY_JOB_MAX_FILES`,
    /// `SLIPWAY_JOB_MAX_BYTES`, `SLIPWAY_JOB_MAX_TREE_PATHS`).
    pub job_limits: CodingLimits,
    /// How often a customer's job gate checks, while jobs hold its slots, that they still run
    /// (`SLIPWAY_JOB_GATE_CHECK_SECS`, default 300): a terminated job never gives its slot back.
    pub job_gate_check: Duration,
    /// How long in-flight activities may finish on shutdown (`SLIPWAY_WORKER_SHUTDOWN_SECS`, 30).
    pub shutdown_grace: Duration,
    /// Where the Prometheus endpoint (SDK and Slipway metrics) listens
    /// (`SLIPWAY_METRICS_ADDR`, default `127.0.0.1:9464`; `off` disables it).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Task slots, pollers and sticky cache (`SLIPWAY_WORKER_*`; unset = the SDK's defaults), per
    /// worker (the process runs two: [`crate::versioning`]).
    pub tuning: WorkerTuning,
    /// The Worker Deployment version (`TEMPORAL_DEPLOYMENT_NAME`, `TEMPORAL_WORKER_BUILD_ID`).
    pub version: crate::versioning::WorkerVersion,
    /// Payload encryption (`SLIPWAY_PAYLOAD_KEYS`, current key first; off only with
    /// `SLIPWAY_PAYLOAD_ENCRYPTION=off`).
    pub encryption: slipway_codec::Encryption,
    /// The starter's Stripe webhook endpoint the catch-up feeds missed events to
    /// (`SLIPWAY_STARTER_URL` + `/webhooks/stripe`; default `http://127.0.0.1:8080`).
    pub stripe_webhook_url: String,
    /// `STRIPE_WEBHOOK_SECRET`, to sign what the catch-up feeds as Stripe would (optional: without
    /// it the catch-up's runs fail, naming it).
    pub stripe_webhook_secret: Option<SecretString>,
    /// The reconcilers' schedules.
    pub reconcile: ReconcileSettings,
}

/// How often each reconciler runs and how far it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// `SLIPWAY_STRIPE_CATCHUP_INTERVAL_SECS`, default 600.
    pub stripe_every: Duration,
    /// `SLIPWAY_STRIPE_CATCHUP_LOOKBACK_SECS`: the first run's reach, default 30 days (all Stripe
    /// keeps).
    pub stripe_lookback: Duration,
    /// `SLIPWAY_STRIPE_CATCHUP_OVERLAP_SECS`: how far before the last checkpoint a run looks
    /// again, default 300.
    pub stripe_overlap: Duration,
    /// `SLIPWAY_GITHUB_REDELIVERY_INTERVAL_SECS`, default 3600 (github.com keeps deliveries 3 days).
    pub github_every: Duration,
    /// `SLIPWAY_SWEEP_INTERVAL_SECS`, default 3600.
    pub sweep_every: Duration,
    /// `SLIPWAY_SWEEP_GRACE_SECS`, default 3600: a resource younger than this is never an orphan.
    pub sweep_grace: Duration,
    /// `SLIPWAY_SWEEP_DELETE`, default `false`: delete confirmed orphans (else only report them).
    pub sweep_delete: bool,
    /// `SLIPWAY_RECONCILE_SCHEDULES`, default `on`: `off` leaves the schedules alone (e.g. a
    /// second worker pool on the same task queue).
    pub enabled: bool,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            stripe_every: Duration::from_secs(600),
            stripe_lookback: Duration::from_secs(30 * 24 * 3600),
            stripe_overlap: Duration::from_secs(300),
            github_every: Duration::from_secs(3600),
            sweep_every: Duration::from_secs(3600),
            sweep_grace: Duration::from_secs(3600),
            sweep_delete: false,
            enabled: true,
        }
    }
}

impl ReconcileSettings {
    /// From any lookup; unset variables keep the defaults.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let secs = |k: &str, default: Duration, min: u64| -> Result<Duration, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => {
                    v.parse::<u64>().ok().filter(|n| *n >= min).map(Duration::from_secs).ok_or_else(|| {
                        ConfigError::Invalid(format!("{k} must be a whole number of seconds, at least {min}"))
                    })
                }
            }
        };
        Ok(Self {
            stripe_every: secs("SLIPWAY_STRIPE_CATCHUP_INTERVAL_SECS", d.stripe_every, 1)?,
            stripe_lookback: secs("SLIPWAY_STRIPE_CATCHUP_LOOKBACK_SECS", d.stripe_lookback, 60)?,
            stripe_overlap: secs("SLIPWAY_STRIPE_CATCHUP_OVERLAP_SECS", d.stripe_overlap, 0)?,
            github_every: secs("SLIPWAY_GITHUB_REDELIVERY_INTERVAL_SECS", d.github_every, 1)?,
            sweep_every: secs("SLIPWAY_SWEEP_INTERVAL_SECS", d.sweep_every, 1)?,
            sweep_grace: secs("SLIPWAY_SWEEP_GRACE_SECS", d.sweep_grace, 0)?,
            sweep_delete: match get("SLIPWAY_SWEEP_DELETE").as_deref() {
                None | Some("false") | Some("off") => false,
                Some("true") | Some("on") => true,
                Some(v) => {
                    return Err(ConfigError::Invalid(format!(
                        "SLIPWAY_SWEEP_DELETE must be true or false, not `{v}`"
                    )));
                }
            },
            enabled: match get("SLIPWAY_RECONCILE_SCHEDULES").as_deref() {
                None | Some("on") | Some("true") => true,
                Some("off") | Some("false") => false,
                Some(v) => {
                    return Err(ConfigError::Invalid(format!(
                        "SLIPWAY_RECONCILE_SCHEDULES must be on or off, not `{v}`"
                    )));
                }
            },
        })
    }
}

/// Concurrency knobs of the worker. Each is optional: unset keeps the SDK's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerTuning {
    /// Workflows kept in the sticky cache (`SLIPWAY_WORKER_MAX_CACHED_WORKFLOWS`, SDK default 1000).
    pub max_cached_workflows: Option<usize>,
    /// Workflow tasks run at once (`SLIPWAY_WORKER_WORKFLOW_SLOTS`, SDK default 100).
    pub workflow_slots: Option<usize>,
    /// Activities run at once (`SLIPWAY_WORKER_ACTIVITY_SLOTS`, SDK default 100).
    pub activity_slots: Option<usize>,
    /// Concurrent workflow-task polls (`SLIPWAY_WORKER_WORKFLOW_POLLERS`, at least 2; SDK default 5).
    pub workflow_pollers: Option<usize>,
    /// Concurrent activity-task polls (`SLIPWAY_WORKER_ACTIVITY_POLLERS`; SDK default 5).
    pub activity_pollers: Option<usize>,
}

impl WorkerTuning {
    /// From any lookup; unset or empty variables stay `None`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let num = |k: &str, min: usize| -> Result<Option<usize>, ConfigError> {
            match get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n >= min => Ok(Some(n)),
                    _ => Err(ConfigError::Invalid(format!("{k} must be a whole number of at least {min}"))),
                },
            }
        };
        Ok(Self {
            max_cached_workflows: num("SLIPWAY_WORKER_MAX_CACHED_WORKFLOWS", 0)?,
            workflow_slots: num("SLIPWAY_WORKER_WORKFLOW_SLOTS", 1)?,
            activity_slots: num("SLIPWAY_WORKER_ACTIVITY_SLOTS", 1)?,
            workflow_pollers: num("SLIPWAY_WORKER_WORKFLOW_POLLERS", 2)?,
            activity_pollers: num("SLIPWAY_WORKER_ACTIVITY_POLLERS", 1)?,
        })
    }
}

/// Required variables, in the order they are reported.
pub const REQUIRED: [&str; 17] = [
    "HETZNER_API_TOKEN",
    "TAILSCALE_API_KEY",
    "GITHUB_TOKEN",
    "GITHUB_ACTIONS_REPO",
    "STRIPE_SECRET_KEY",
    "SLIPWAY_CALLBACK_URL",
    "SLIPWAY_SEAL_KEY",
    "SUPABASE_MANAGEMENT_TOKEN",
    "SUPABASE_ORG_ID",
    "GITHUB_ORG",
    "GITHUB_TEMPLATE_REPO",
    "VERCEL_TOKEN",
    "N8N_HOST",
    "N8N_API_KEY",
    "GITHUB_APP_ID",
    "GITHUB_APP_PRIVATE_KEY",
    "LLM_API_KEY",
];

impl WorkerSettings {
    /// From the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // The App key may be given inline (`\n` escapes allowed) or as a file path.
        let app_key = get("GITHUB_APP_PRIVATE_KEY")
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.replace("\\n", "\n"))
            .or_else(|| {
                get("GITHUB_APP_PRIVATE_KEY_PATH").and_then(|p| std::fs::read_to_string(p.trim()).ok())
            });
        let get = |k: &str| {
            if k == "GITHUB_APP_PRIVATE_KEY" {
                return app_key.clone();
            }
            get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
        };
        let missing: Vec<&'static str> = REQUIRED.iter().copied().filter(|k| get(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(ConfigError::Missing(missing));
        }
        let req = |k: &str| get(k).unwrap_or_default();
        let or = |k: &str, d: &str| get(k).unwrap_or_else(|| d.to_owned());
        let poll_ms: u64 = or("HETZNER_POLL_INTERVAL_MS", "5000").parse().map_err(|_| {
            ConfigError::Invalid("HETZNER_POLL_INTERVAL_MS must be a number of milliseconds".into())
        })?;
        let stack_poll_ms: u64 = or("STACK_POLL_INTERVAL_MS", "5000").parse().map_err(|_| {
            ConfigError::Invalid("STACK_POLL_INTERVAL_MS must be a number of milliseconds".into())
        })?;
        if req("GITHUB_TEMPLATE_REPO").split('/').filter(|p| !p.is_empty()).count() != 2 {
            return Err(ConfigError::Invalid("GITHUB_TEMPLATE_REPO must be owner/repo".into()));
        }
        let repo = req("GITHUB_ACTIONS_REPO");
        if repo.split('/').filter(|p| !p.is_empty()).count() != 2 {
            return Err(ConfigError::Invalid("GITHUB_ACTIONS_REPO must be owner/repo".into()));
        }
        let deployment = get("SLIPWAY_DEPLOYMENT");
        if let Some(d) = &deployment {
            check_deployment(d).map_err(ConfigError::Invalid)?;
        }
        let tags: Vec<String> =
            or("TAILSCALE_TAGS", "tag:slipway-agent").split(',').map(|t| t.trim().to_owned()).collect();
        if let Some(bad) = tags.iter().find(|t| !t.starts_with("tag:")) {
            return Err(ConfigError::Invalid(format!("TAILSCALE_TAGS entry {bad:?} must start with tag:")));
        }
        let count = |k: &str, d: usize| -> Result<usize, ConfigError> {
            match get(k) {
                None => Ok(d),
                Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ConfigError::Invalid(format!("{k} must be a positive whole number, not `{v}`"))
                }),
            }
        };
        let defaults = CodingLimits::default();
        let job_limits = CodingLimits {
            max_files: count("SLIPWAY_JOB_MAX_FILES", defaults.max_files)?,
            max_bytes: count("SLIPWAY_JOB_MAX_BYTES", defaults.max_bytes)?,
            max_tree_paths: count("SLIPWAY_JOB_MAX_TREE_PATHS", defaults.max_tree_paths)?,
        };
        let job_paths = PathPolicy::from_list(&get("SLIPWAY_JOB_ALLOWED_PATHS").unwrap_or_default());
        let job_gate_check = Duration::from_secs(count("SLIPWAY_JOB_GATE_CHECK_SECS", 300)? as u64);
        let tuning = WorkerTuning::from_lookup(get)?;
        let reconcile = ReconcileSettings::from_lookup(get)?;
        let version = crate::versioning::WorkerVersion::from_lookup(get)?;
        let starter = or("SLIPWAY_STARTER_URL", "http://127.0.0.1:8080");
        Ok(Self {
            task_queue: or("SLIPWAY_TASK_QUEUE", "slipway"),
            deployment,
            hetzner_api_url: or("HETZNER_API_URL", "https://api.hetzner.cloud/v1"),
            hetzner_api_token: SecretString::from(req("HETZNER_API_TOKEN")),
            hetzner_server_type: or("HETZNER_SERVER_TYPE", "cx22"),
            hetzner_image: or("HETZNER_IMAGE", "ubuntu-24.04"),
            hetzner_poll_interval: Duration::from_millis(poll_ms),
            tailscale_api_url: or("TAILSCALE_API_URL", "https://api.tailscale.com"),
            tailscale_api_key: SecretString::from(req("TAILSCALE_API_KEY")),
            tailscale_tailnet: or("TAILSCALE_TAILNET", "-"),
            tailscale_tags: tags,
            github_api_url: or("GITHUB_API_URL", "https://api.github.com"),
            github_token: SecretString::from(req("GITHUB_TOKEN")),
            github_actions_repo: repo,
            github_actions_workflow: or("GITHUB_ACTIONS_WORKFLOW", "provision-agent.yml"),
            github_actions_ref: or("GITHUB_ACTIONS_REF", "main"),
            callback_url: req("SLIPWAY_CALLBACK_URL"),
            seal_key: SecretString::from(req("SLIPWAY_SEAL_KEY")),
            stripe_api_url: or("STRIPE_API_URL", "https://api.stripe.com"),
            stripe_secret_key: SecretString::from(req("STRIPE_SECRET_KEY")),
            supabase_api_url: or("SUPABASE_API_URL", "https://api.supabase.com"),
            supabase_token: SecretString::from(req("SUPABASE_MANAGEMENT_TOKEN")),
            supabase_org_id: req("SUPABASE_ORG_ID"),
            supabase_region: or("SUPABASE_REGION", "eu-central-1"),
            migrations_dir: or("SUPABASE_MIGRATIONS_DIR", "migrations/client-stack").into(),
            github_org: req("GITHUB_ORG"),
            github_template_repo: req("GITHUB_TEMPLATE_REPO"),
            vercel_api_url: or("VERCEL_API_URL", "https://api.vercel.com"),
            vercel_token: SecretString::from(req("VERCEL_TOKEN")),
            vercel_team_id: get("VERCEL_TEAM_ID"),
            n8n_host: req("N8N_HOST"),
            n8n_api_key: SecretString::from(req("N8N_API_KEY")),
            stack_poll_interval: Duration::from_millis(stack_poll_ms),
            github_app_id: req("GITHUB_APP_ID"),
            github_app_private_key: SecretString::from(req("GITHUB_APP_PRIVATE_KEY")),
            llm_api_url: or("LLM_API_URL", "https://api.openai.com"),
            llm_api_key: SecretString::from(req("LLM_API_KEY")),
            llm_model: or("LLM_MODEL", "gpt-4o-mini"),
            job_paths,
            job_limits,
            job_gate_check,
            shutdown_grace: Duration::from_secs(
                or("SLIPWAY_WORKER_SHUTDOWN_SECS", "30").parse().map_err(|_| {
                    ConfigError::Invalid("SLIPWAY_WORKER_SHUTDOWN_SECS must be a number".into())
                })?,
            ),
            metrics_addr: match or("SLIPWAY_METRICS_ADDR", "127.0.0.1:9464").as_str() {
                "off" => None,
                addr => Some(addr.parse().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "SLIPWAY_METRICS_ADDR must be host:port or `off`, not `{addr}`"
                    ))
                })?),
            },
            tuning,
            version,
            encryption: slipway_codec::Encryption::from_lookup(get)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?,
            stripe_webhook_url: format!("{}/webhooks/stripe", starter.trim_end_matches('/')),
            stripe_webhook_secret: get("STRIPE_WEBHOOK_SECRET").map(SecretString::from),
            reconcile,
        })
    }

    /// The reconcilers' activities.
    pub fn reconcile(&self) -> Result<ReconcileActivities, ConfigError> {
        let invalid = |e: ClientError| ConfigError::Invalid(e.to_string());
        let endpoint = match &self.stripe_webhook_secret {
            Some(secret) => {
                Some(WebhookEndpoint::new(&self.stripe_webhook_url, secret.clone()).map_err(invalid)?)
            }
            None => None,
        };
        Ok(ReconcileActivities::new(
            StripeEvents::new(&self.stripe_api_url, &self.stripe_secret_key).map_err(invalid)?,
            endpoint,
            GitHubApp::new(&self.github_api_url, &self.github_app_id, &self.github_app_private_key)
                .map_err(invalid)?,
        ))
    }

    /// This deployment's identity: `SLIPWAY_DEPLOYMENT`, or else the Temporal namespace made
    /// label-safe (lower case, `[a-z0-9-]`, at most 40 characters). Every resource Slipway
    /// creates carries it where the provider has a place for it, and the orphan sweep only ever
    /// judges resources of its own deployment.
    pub fn deployment(&self, namespace: &str) -> String {
        self.deployment.clone().unwrap_or_else(|| deployment_from_namespace(namespace))
    }

    /// Configuration of the client-stack activities.
    pub fn stack(&self, deployment: &str) -> Result<StackConfig, ConfigError> {
        let invalid = |e: ClientError| ConfigError::Invalid(e.to_string());
        Ok(StackConfig {
            supabase: SupabaseClient::new(&self.supabase_api_url, self.supabase_token.clone())
                .map_err(invalid)?,
            supabase_org_id: self.supabase_org_id.clone(),
            supabase_region: self.supabase_region.clone(),
            migrations_dir: self.migrations_dir.clone(),
            github: GitHubClient::new(&self.github_api_url, self.github_token.clone()).map_err(invalid)?,
            github_org: self.github_org.clone(),
            github_template: self.github_template_repo.clone(),
            vercel: VercelClient::new(
                &self.vercel_api_url,
                self.vercel_token.clone(),
                self.vercel_team_id.clone(),
            )
            .map_err(invalid)?,
            n8n: N8nClient::new(&self.n8n_host, self.n8n_api_key.clone()).map_err(invalid)?,
            n8n_public_url: self.n8n_host.clone(),
            poll_interval: self.stack_poll_interval,
            deployment: deployment.to_owned(),
        })
    }

    /// The coding-job activities' clients.
    pub fn jobs(&self) -> Result<JobActivities, ConfigError> {
        let invalid = |e: ClientError| ConfigError::Invalid(e.to_string());
        Ok(JobActivities::new(
            GitHubApp::new(&self.github_api_url, &self.github_app_id, &self.github_app_private_key)
                .map_err(invalid)?,
            LlmClient::new(&self.llm_api_url, self.llm_api_key.clone(), &self.llm_model).map_err(invalid)?,
            self.stripe()?,
            self.job_paths.clone(),
            self.job_limits,
        ))
    }

    /// The Stripe client.
    pub fn stripe(&self) -> Result<StripeClient, ConfigError> {
        StripeClient::new(&self.stripe_api_url, &self.stripe_secret_key)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Build the provisioning activities' configuration (clients included).
    pub fn provisioning(&self, deployment: &str) -> Result<ProvisioningConfig, ConfigError> {
        let invalid = |e: ClientError| ConfigError::Invalid(e.to_string());
        Ok(ProvisioningConfig {
            hetzner: HetznerClient::new(&self.hetzner_api_url, self.hetzner_api_token.clone())
                .map_err(invalid)?,
            server_type: self.hetzner_server_type.clone(),
            image: self.hetzner_image.clone(),
            action_poll_interval: self.hetzner_poll_interval,
            tailscale: TailscaleClient::new(
                &self.tailscale_api_url,
                self.tailscale_api_key.clone(),
                &self.tailscale_tailnet,
            )
            .map_err(invalid)?,
            tailscale_tags: self.tailscale_tags.clone(),
            github: GitHubClient::new(&self.github_api_url, self.github_token.clone()).map_err(invalid)?,
            actions_repo: self.github_actions_repo.clone(),
            actions_workflow: self.github_actions_workflow.clone(),
            actions_ref: self.github_actions_ref.clone(),
            callback_url: self.callback_url.clone(),
            sealer: Sealer::from_hex(&self.seal_key).map_err(ConfigError::Invalid)?,
            deployment: deployment.to_owned(),
        })
    }
}

/// A deployment identity goes into a Hetzner label value and a repository description: 1–40
/// characters of `[a-z0-9-]`, a letter or digit at both ends.
fn check_deployment(d: &str) -> Result<(), String> {
    let ok = (1..=40).contains(&d.len())
        && d.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !d.starts_with('-')
        && !d.ends_with('-');
    ok.then_some(()).ok_or_else(|| {
        format!("SLIPWAY_DEPLOYMENT {d:?} must be 1-40 characters of a-z, 0-9 and '-', not starting or ending with '-'")
    })
}

/// The namespace as a deployment identity: lower case, other characters as `-`, at most 40.
fn deployment_from_namespace(namespace: &str) -> String {
    let mapped: String = namespace
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(40)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() { "default".to_owned() } else { trimmed.to_owned() }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A lookup over `pairs` (also the other settings modules' tests).
    /// Payload encryption is off unless the pairs configure it.
    pub(crate) fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let off = [("SLIPWAY_PAYLOAD_ENCRYPTION", "off")];
        let map: HashMap<String, String> =
            off.iter().chain(pairs).map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn names_every_missing_variable_at_once() {
        let err = WorkerSettings::from_lookup(lookup(&[("GITHUB_TOKEN", "x"), ("HETZNER_API_TOKEN", " ")]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required configuration: HETZNER_API_TOKEN, TAILSCALE_API_KEY, GITHUB_ACTIONS_REPO, \
             STRIPE_SECRET_KEY, SLIPWAY_CALLBACK_URL, SLIPWAY_SEAL_KEY, SUPABASE_MANAGEMENT_TOKEN, SUPABASE_ORG_ID, \
             GITHUB_ORG, GITHUB_TEMPLATE_REPO, VERCEL_TOKEN, N8N_HOST, N8N_API_KEY, GITHUB_APP_ID, \
             GITHUB_APP_PRIVATE_KEY, LLM_API_KEY (see .env.example)"
        );
    }

    #[test]
    fn defaults_point_at_the_real_apis() {
        let s = WorkerSettings::from_lookup(lookup(&[
            ("HETZNER_API_TOKEN", "h"),
            ("TAILSCALE_API_KEY", "t"),
            ("GITHUB_TOKEN", "g"),
            ("GITHUB_ACTIONS_REPO", "acme/agents"),
            ("SLIPWAY_CALLBACK_URL", "https://slipway.example/callbacks/github-actions"),
            ("SLIPWAY_SEAL_KEY", &"ab".repeat(32)),
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("SUPABASE_MANAGEMENT_TOKEN", "sbp_x"),
            ("SUPABASE_ORG_ID", "org"),
            ("GITHUB_ORG", "acme-clients"),
            ("GITHUB_TEMPLATE_REPO", "acme/stack-template"),
            ("VERCEL_TOKEN", "v"),
            ("N8N_HOST", "https://n8n.example.com"),
            ("N8N_API_KEY", "n"),
            ("GITHUB_APP_ID", "1"),
            ("GITHUB_APP_PRIVATE_KEY", include_str!("../../tests/fixtures/github-app-test-key.pem")),
            ("LLM_API_KEY", "sk-llm"),
        ]))
        .unwrap();
        assert_eq!(s.hetzner_api_url, "https://api.hetzner.cloud/v1");
        assert_eq!(s.tailscale_api_url, "https://api.tailscale.com");
        assert_eq!(s.github_api_url, "https://api.github.com");
        assert_eq!(s.stripe_api_url, "https://api.stripe.com");
        assert_eq!(s.task_queue, "slipway");
        assert!(s.provisioning("default").is_ok());
        assert!(s.stack("default").is_ok());
        assert!(s.jobs().is_ok());
        assert_eq!(s.llm_api_url, "https://api.openai.com");
        assert_eq!(s.supabase_api_url, "https://api.supabase.com");
        assert_eq!(s.vercel_api_url, "https://api.vercel.com");
        assert!(!format!("{s:?}").contains("acme/agents") || !format!("{s:?}").contains("abab"));
        assert_eq!(s.tuning, WorkerTuning::default());
        assert_eq!(s.job_gate_check, Duration::from_secs(300));
    }

    #[test]
    fn the_job_gate_check_interval_is_read_and_checked() {
        let with = |v: &str| {
            // Every required variable set to something valid (owner/repo where one is asked).
            let mut pairs: Vec<(&str, &str)> = REQUIRED.iter().map(|k| (*k, "acme/agents")).collect();
            pairs.push(("SLIPWAY_JOB_GATE_CHECK_SECS", v));
            WorkerSettings::from_lookup(lookup(&pairs))
        };
        assert_eq!(with("2").unwrap().job_gate_check, Duration::from_secs(2));
        for bad in ["0", "soon"] {
            let err = with(bad).unwrap_err();
            assert!(err.to_string().contains("SLIPWAY_JOB_GATE_CHECK_SECS"), "{err}");
        }
    }

    #[test]
    fn the_deployment_identity_is_checked_or_derived_from_the_namespace() {
        let with = |v: Option<&str>| {
            let mut pairs: Vec<(&str, &str)> = REQUIRED.iter().map(|k| (*k, "acme/agents")).collect();
            pairs.extend(v.map(|v| ("SLIPWAY_DEPLOYMENT", v)));
            WorkerSettings::from_lookup(lookup(&pairs))
        };
        assert_eq!(with(Some("staging-eu")).unwrap().deployment("default"), "staging-eu");
        let derived = with(None).unwrap();
        assert_eq!(derived.deployment("default"), "default");
        assert_eq!(derived.deployment("Prod.acme_42"), "prod-acme-42", "a Temporal Cloud namespace");
        assert_eq!(derived.deployment("..."), "default");
        for bad in ["Prod", "-x", "a b", &"x".repeat(41)] {
            let err = with(Some(bad)).unwrap_err();
            assert!(err.to_string().contains("SLIPWAY_DEPLOYMENT"), "{bad}: {err}");
        }
    }

    #[test]
    fn tuning_knobs_are_read_and_checked() {
        let t = WorkerTuning::from_lookup(lookup(&[
            ("SLIPWAY_WORKER_MAX_CACHED_WORKFLOWS", "500"),
            ("SLIPWAY_WORKER_WORKFLOW_SLOTS", "50"),
            ("SLIPWAY_WORKER_ACTIVITY_SLOTS", "200"),
            ("SLIPWAY_WORKER_WORKFLOW_POLLERS", "8"),
            ("SLIPWAY_WORKER_ACTIVITY_POLLERS", " "),
        ]))
        .unwrap();
        assert_eq!(
            t,
            WorkerTuning {
                max_cached_workflows: Some(500),
                workflow_slots: Some(50),
                activity_slots: Some(200),
                workflow_pollers: Some(8),
                activity_pollers: None,
            }
        );
        let err = WorkerTuning::from_lookup(lookup(&[("SLIPWAY_WORKER_WORKFLOW_POLLERS", "1")])).unwrap_err();
        assert!(err.to_string().contains("SLIPWAY_WORKER_WORKFLOW_POLLERS"), "{err}");
        assert!(WorkerTuning::from_lookup(lookup(&[("SLIPWAY_WORKER_ACTIVITY_SLOTS", "many")])).is_err());
    }
}
