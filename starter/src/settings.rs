//! Starter configuration, from the environment. Like the worker, a starter missing required
//! variables refuses to start with one message naming all of them.

use std::{net::SocketAddr, time::Duration};

use secrecy::SecretString;
use slipway_proto::{billing::BillingPolicy, jobs::JobPolicy, model::ProvisioningPolicy};

/// Why the starter cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Required variables are unset or empty.
    #[error("missing required configuration: {} (see .env.example)", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// A variable is set to something unusable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Shortest accepted `SLIPWAY_JWT_SECRET`.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Starter settings.
#[derive(Debug, Clone)]
pub struct StarterSettings {
    /// HTTP listen address (`SLIPWAY_HTTP_ADDR`, default `127.0.0.1:8080`).
    pub http_addr: SocketAddr,
    /// gRPC listen address (`SLIPWAY_GRPC_ADDR`, default `127.0.0.1:50051`).
    pub grpc_addr: SocketAddr,
    /// Task queue workflows are started on (`SLIPWAY_TASK_QUEUE`, default `slipway`).
    pub task_queue: String,
    /// Stripe endpoint signing secret (`whsec_…`).
    pub stripe_webhook_secret: SecretString,
    /// HMAC secret of the GitHub Actions callbacks (the fallback credential).
    pub callback_secret: SecretString,
    /// Accept HMAC-signed callbacks (`SLIPWAY_CALLBACK_HMAC`). Default: only while Actions OIDC
    /// is not configured (the shared secret proves no run); `true` keeps them as a fallback next
    /// to OIDC, `false` accepts only Actions OIDC tokens.
    pub callback_hmac: bool,
    /// Actions OIDC callbacks, enabled by `GITHUB_ACTIONS_REPO`.
    pub actions_oidc: Option<ActionsOidc>,
    /// HS256 secret of API bearer tokens (at least 32 bytes).
    pub jwt_secret: SecretString,
    /// Claims API tokens must carry (`SLIPWAY_JWT_ISSUER`, `SLIPWAY_JWT_AUDIENCE`; optional).
    pub jwt_pins: crate::auth::Pins,
    /// Where `/metrics` is served instead of the public listener (`SLIPWAY_STARTER_METRICS_ADDR`,
    /// e.g. `127.0.0.1:9464`); unset: on the public listener with the rest.
    pub metrics_addr: Option<SocketAddr>,
    /// Draft agents one user may hold (`SLIPWAY_MAX_DRAFT_AGENTS`, default 20; 0 = no cap).
    /// Every open checkout needs a draft, so this caps open checkouts too.
    pub max_draft_agents: u32,
    /// API requests per user and minute (`SLIPWAY_API_RATE_PER_MIN`, default 600; 0 = no limit).
    pub api_rate_per_min: u32,
    /// Failed authentications per client IP and minute before 429
    /// (`SLIPWAY_AUTH_FAILURES_PER_MIN`, default 60; 0 = no limit).
    pub auth_failures_per_min: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the client of the per-IP budget
    /// (`SLIPWAY_TRUSTED_PROXIES`: addresses and CIDR blocks, comma-separated; default none: the
    /// header is ignored and the peer address is the client).
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    /// Longest a request waits on Temporal before answering 503.
    pub temporal_timeout: Duration,
    /// Saga knobs given to new agents.
    pub policy: ProvisioningPolicy,
    /// Graceful shutdown budget of a stop (`SLIPWAY_SHUTDOWN_WAIT_SECS`, default 60).
    pub shutdown_wait_secs: u64,
    /// History length at which long-lived workflows continue-as-new (`SLIPWAY_HISTORY_LIMIT`).
    pub history_limit: u32,
    /// Attempts of one lifecycle command's activity before the command counts as failed
    /// (`SLIPWAY_COMMAND_ATTEMPTS`, default 10); billing commands are then retried later.
    pub command_attempts: u32,
    /// How long a paid checkout waits before it is tried again while its user's other
    /// provisioning is in flight (`SLIPWAY_CHECKOUT_RETRY_SECS`, default 30).
    pub checkout_retry_secs: u64,
    /// Knobs of new subscription workflows (`SLIPWAY_GRACE_PERIOD_SECS`, default 7 days).
    pub billing: BillingPolicy,
    /// Stripe API base URL (`STRIPE_API_URL`, default `https://api.stripe.com`).
    pub stripe_api_url: String,
    /// Stripe secret key (`STRIPE_SECRET_KEY`), for creating Checkout Sessions.
    pub stripe_secret_key: SecretString,
    /// Price of the subscription sold through Checkout (`STRIPE_PRICE_ID`).
    pub stripe_price_id: String,
    /// Where Checkout sends the customer back (`SLIPWAY_PUBLIC_URL`, default `http://localhost:8080`).
    pub public_url: String,
    /// GitHub App webhook secret (`GITHUB_WEBHOOK_SECRET`).
    pub github_webhook_secret: SecretString,
    /// Label that starts a job (`SLIPWAY_JOB_LABEL`, default `slipway`).
    pub job_label: String,
    /// Jobs of one customer running at once (`SLIPWAY_MAX_JOBS_PER_CUSTOMER`, default 2).
    pub max_jobs_per_customer: u32,
    /// Knobs of new jobs (`SLIPWAY_MAX_REVIEW_ROUNDS`, `STRIPE_METER_PR_EVENT`, `STRIPE_METER_TOKENS_EVENT`).
    pub job_policy: JobPolicy,
    /// How often an agent's event stream reads the agent while someone listens
    /// (`SLIPWAY_EVENTS_POLL_MS`, default 100): the delay an app sees, against one query per
    /// agent per interval, however many streams watch it.
    pub events_poll: Duration,
    /// Heartbeat of an idle event stream (`SLIPWAY_EVENTS_HEARTBEAT_SECS`, default 15), under
    /// the idle timeouts of proxies and load balancers.
    pub events_heartbeat: Duration,
    /// Event streams one user may hold open on this starter at once
    /// (`SLIPWAY_EVENTS_MAX_STREAMS`, default 16): a dashboard's tabs fit, a script opening
    /// streams in a loop is refused (429 `TOO_MANY_STREAMS`) before it costs a connection each.
    pub events_max_streams: usize,
    /// Payload encryption (`SLIPWAY_PAYLOAD_KEYS`, current key first; off only with
    /// `SLIPWAY_PAYLOAD_ENCRYPTION=off`).
    pub encryption: slipway_codec::Encryption,
    /// Web UI origins whose codec requests from this machine are decoded without a token
    /// (`SLIPWAY_CODEC_TRUSTED_ORIGINS`, comma-separated; a local stack only).
    pub codec_trusted_origins: Vec<String>,
}

/// What an Actions OIDC token on a callback must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionsOidc {
    /// Token issuer (`SLIPWAY_ACTIONS_OIDC_ISSUER`, default GitHub's).
    pub issuer: String,
    /// Audience the job requests (`SLIPWAY_ACTIONS_OIDC_AUDIENCE`, default `slipway`).
    pub audience: String,
    /// The repository the saga dispatches to (`GITHUB_ACTIONS_REPO`, `owner/repo`).
    pub repository: String,
    /// The workflow file it dispatches (`GITHUB_ACTIONS_WORKFLOW`, default `provision-agent.yml`).
    pub workflow: String,
    /// The ref it dispatches at (`GITHUB_ACTIONS_REF`, the worker's setting, default `main`), as
    /// the token's `ref` claim spells it: `refs/heads/main`.
    pub git_ref: String,
}

/// Required variables, in the order they are reported.
pub const REQUIRED: [&str; 6] = [
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_SECRET_KEY",
    "STRIPE_PRICE_ID",
    "GITHUB_CALLBACK_SECRET",
    "GITHUB_WEBHOOK_SECRET",
    "SLIPWAY_JWT_SECRET",
];

impl StarterSettings {
    /// From the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let missing: Vec<&'static str> = REQUIRED.iter().copied().filter(|k| get(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(ConfigError::Missing(missing));
        }
        let secret = |k: &str| SecretString::from(get(k).unwrap_or_default());
        let addr = |k: &str, d: &str| -> Result<SocketAddr, ConfigError> {
            get(k)
                .unwrap_or_else(|| d.to_owned())
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("{k} must be host:port")))
        };
        let num = |k: &str, d: u64| -> Result<u64, ConfigError> {
            get(k).map_or(Ok(d), |v| {
                v.parse().map_err(|_| ConfigError::Invalid(format!("{k} must be a number")))
            })
        };
        // HS256 is only as strong as its key: RFC 7518 §3.2 asks for at least 256 bits.
        if get("SLIPWAY_JWT_SECRET").is_some_and(|s| s.len() < MIN_JWT_SECRET_BYTES) {
            return Err(ConfigError::Invalid(format!(
                "SLIPWAY_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes (HS256 needs a 256-bit key)"
            )));
        }
        let defaults = ProvisioningPolicy::default();
        let history_limit = u32::try_from(num("SLIPWAY_HISTORY_LIMIT", 5_000)?)
            .map_err(|_| ConfigError::Invalid("SLIPWAY_HISTORY_LIMIT is too large".into()))?;
        let actions_oidc = match get("GITHUB_ACTIONS_REPO") {
            Some(repo) if repo.split('/').count() == 2 && !repo.starts_with('/') && !repo.ends_with('/') => {
                Some(ActionsOidc {
                    issuer: get("SLIPWAY_ACTIONS_OIDC_ISSUER")
                        .unwrap_or_else(|| slipway_providers::github::actions_oidc::GITHUB_ISSUER.to_owned()),
                    audience: get("SLIPWAY_ACTIONS_OIDC_AUDIENCE").unwrap_or_else(|| "slipway".to_owned()),
                    repository: repo,
                    workflow: get("GITHUB_ACTIONS_WORKFLOW")
                        .unwrap_or_else(|| "provision-agent.yml".to_owned()),
                    git_ref: slipway_providers::github::actions_oidc::qualified_ref(
                        &get("GITHUB_ACTIONS_REF").unwrap_or_else(|| "main".to_owned()),
                    ),
                })
            }
            Some(_) => return Err(ConfigError::Invalid("GITHUB_ACTIONS_REPO must be owner/repo".into())),
            None => None,
        };
        // The shared secret proves no run: with Actions OIDC configured, HMAC-signed callbacks are
        // accepted only when asked for.
        let callback_hmac = match get("SLIPWAY_CALLBACK_HMAC").as_deref() {
            None => actions_oidc.is_none(),
            Some("true") => true,
            Some("false") => false,
            Some(_) => {
                return Err(ConfigError::Invalid("SLIPWAY_CALLBACK_HMAC must be true or false".into()));
            }
        };
        let settings = Self {
            http_addr: addr("SLIPWAY_HTTP_ADDR", "127.0.0.1:8080")?,
            grpc_addr: addr("SLIPWAY_GRPC_ADDR", "127.0.0.1:50051")?,
            task_queue: get("SLIPWAY_TASK_QUEUE").unwrap_or_else(|| "slipway".to_owned()),
            stripe_webhook_secret: secret("STRIPE_WEBHOOK_SECRET"),
            callback_secret: secret("GITHUB_CALLBACK_SECRET"),
            callback_hmac,
            actions_oidc,
            jwt_secret: secret("SLIPWAY_JWT_SECRET"),
            jwt_pins: crate::auth::Pins {
                issuer: get("SLIPWAY_JWT_ISSUER"),
                audience: get("SLIPWAY_JWT_AUDIENCE"),
            },
            metrics_addr: get("SLIPWAY_STARTER_METRICS_ADDR")
                .map(|v| {
                    v.parse().map_err(|_| {
                        ConfigError::Invalid("SLIPWAY_STARTER_METRICS_ADDR must be host:port".into())
                    })
                })
                .transpose()?,
            max_draft_agents: u32::try_from(num("SLIPWAY_MAX_DRAFT_AGENTS", 20)?)
                .map_err(|_| ConfigError::Invalid("SLIPWAY_MAX_DRAFT_AGENTS is too large".into()))?,
            api_rate_per_min: u32::try_from(num("SLIPWAY_API_RATE_PER_MIN", 600)?)
                .map_err(|_| ConfigError::Invalid("SLIPWAY_API_RATE_PER_MIN is too large".into()))?,
            auth_failures_per_min: u32::try_from(num("SLIPWAY_AUTH_FAILURES_PER_MIN", 60)?)
                .map_err(|_| ConfigError::Invalid("SLIPWAY_AUTH_FAILURES_PER_MIN is too large".into()))?,
            trusted_proxies: get("SLIPWAY_TRUSTED_PROXIES")
                .map(|v| {
                    v.parse().map_err(|e| {
                        ConfigError::Invalid(format!(
                            "SLIPWAY_TRUSTED_PROXIES must list IP addresses or CIDR blocks: {e}"
                        ))
                    })
                })
                .transpose()?
                .unwrap_or_default(),
            temporal_timeout: Duration::from_millis(num("SLIPWAY_TEMPORAL_TIMEOUT_MS", 5000)?),
            policy: ProvisioningPolicy {
                callback_deadline_secs: num(
                    "SLIPWAY_CALLBACK_DEADLINE_SECS",
                    defaults.callback_deadline_secs,
                )?,
                dispatch_deadline_secs: num(
                    "SLIPWAY_DISPATCH_DEADLINE_SECS",
                    defaults.dispatch_deadline_secs,
                )?,
            },
            shutdown_wait_secs: num("SLIPWAY_SHUTDOWN_WAIT_SECS", 60)?,
            history_limit,
            command_attempts: u32::try_from(num("SLIPWAY_COMMAND_ATTEMPTS", 10)?)
                .map_err(|_| ConfigError::Invalid("SLIPWAY_COMMAND_ATTEMPTS is too large".into()))?
                .max(1),
            checkout_retry_secs: num("SLIPWAY_CHECKOUT_RETRY_SECS", 30)?.max(1),
            billing: BillingPolicy {
                grace_period_secs: num(
                    "SLIPWAY_GRACE_PERIOD_SECS",
                    BillingPolicy::default().grace_period_secs,
                )?,
                history_limit,
                reassert_secs: num("SLIPWAY_BILLING_REASSERT_SECS", BillingPolicy::default().reassert_secs)?
                    .max(60),
                ..BillingPolicy::default()
            },
            stripe_api_url: get("STRIPE_API_URL").unwrap_or_else(|| "https://api.stripe.com".to_owned()),
            stripe_secret_key: secret("STRIPE_SECRET_KEY"),
            stripe_price_id: get("STRIPE_PRICE_ID").unwrap_or_default(),
            public_url: get("SLIPWAY_PUBLIC_URL").unwrap_or_else(|| "http://localhost:8080".to_owned()),
            github_webhook_secret: secret("GITHUB_WEBHOOK_SECRET"),
            job_label: get("SLIPWAY_JOB_LABEL").unwrap_or_else(|| "slipway".to_owned()),
            max_jobs_per_customer: u32::try_from(num("SLIPWAY_MAX_JOBS_PER_CUSTOMER", 2)?)
                .map_err(|_| ConfigError::Invalid("SLIPWAY_MAX_JOBS_PER_CUSTOMER is too large".into()))?
                .max(1),
            job_policy: JobPolicy {
                max_review_rounds: u32::try_from(num("SLIPWAY_MAX_REVIEW_ROUNDS", 2)?).unwrap_or(2),
                pr_meter_event: get("STRIPE_METER_PR_EVENT")
                    .unwrap_or_else(|| JobPolicy::default().pr_meter_event),
                tokens_meter_event: get("STRIPE_METER_TOKENS_EVENT")
                    .unwrap_or_else(|| JobPolicy::default().tokens_meter_event),
                history_limit,
            },
            events_poll: Duration::from_millis(num("SLIPWAY_EVENTS_POLL_MS", 100)?.clamp(20, 10_000)),
            events_heartbeat: Duration::from_secs(num("SLIPWAY_EVENTS_HEARTBEAT_SECS", 15)?.clamp(1, 300)),
            events_max_streams: usize::try_from(num("SLIPWAY_EVENTS_MAX_STREAMS", 16)?.clamp(1, 10_000))
                .unwrap_or(16),
            encryption: slipway_codec::Encryption::from_lookup(get)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?,
            codec_trusted_origins: get("SLIPWAY_CODEC_TRUSTED_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().trim_end_matches('/').to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        };
        if !settings.callback_hmac && settings.actions_oidc.is_none() {
            return Err(ConfigError::Invalid(
                "SLIPWAY_CALLBACK_HMAC=false needs GITHUB_ACTIONS_REPO (Actions OIDC callbacks)".into(),
            ));
        }
        Ok(settings)
    }
}

/// For tests: every required variable set (32 bytes each), encryption off, then `extra`.
#[cfg(test)]
pub(crate) fn required_and(
    extra: &[(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> + use<> {
    let extra = extra.to_vec();
    move |k: &str| {
        extra.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned()).or_else(|| match k {
            "SLIPWAY_PAYLOAD_ENCRYPTION" => Some("off".to_owned()),
            k if REQUIRED.contains(&k) => Some("x".repeat(32)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_missing_variable() {
        let err = StarterSettings::from_lookup(|_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required configuration: STRIPE_WEBHOOK_SECRET, STRIPE_SECRET_KEY, STRIPE_PRICE_ID, \
             GITHUB_CALLBACK_SECRET, GITHUB_WEBHOOK_SECRET, SLIPWAY_JWT_SECRET (see .env.example)"
        );
    }

    #[test]
    fn pinned_defaults() {
        let s = StarterSettings::from_lookup(required_and(&[])).unwrap();
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.task_queue, "slipway");
        assert_eq!(s.jwt_pins, crate::auth::Pins::default());
    }

    #[test]
    fn hmac_callbacks_are_off_by_default_once_actions_oidc_is_configured() {
        let with = |extra: &'static [(&'static str, &'static str)]| {
            StarterSettings::from_lookup(move |k| {
                extra
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
                    .or_else(|| required_and(&[])(k))
            })
        };
        let s = with(&[]).unwrap();
        assert!(s.callback_hmac && s.actions_oidc.is_none(), "without OIDC, HMAC proves callbacks");
        let s = with(&[("GITHUB_ACTIONS_REPO", "acme/agents")]).unwrap();
        assert!(!s.callback_hmac, "with OIDC, HMAC is off unless asked for");
        assert_eq!(s.actions_oidc.unwrap().git_ref, "refs/heads/main");
        let s = with(&[("GITHUB_ACTIONS_REPO", "acme/agents"), ("SLIPWAY_CALLBACK_HMAC", "true")]).unwrap();
        assert!(s.callback_hmac);
        let s =
            with(&[("GITHUB_ACTIONS_REPO", "acme/agents"), ("GITHUB_ACTIONS_REF", "refs/tags/v1")]).unwrap();
        assert_eq!(s.actions_oidc.unwrap().git_ref, "refs/tags/v1");
        assert!(with(&[("SLIPWAY_CALLBACK_HMAC", "false")]).is_err(), "no proof at all");
    }

    #[test]
    fn short_jwt_secrets_are_refused_and_pins_are_read() {
        let lookup = |secret: &'static str| {
            move |k: &str| match k {
                "SLIPWAY_JWT_SECRET" => Some(secret.to_owned()),
                "SLIPWAY_JWT_ISSUER" => Some("https://auth.example.com".to_owned()),
                "SLIPWAY_JWT_AUDIENCE" => Some("slipway".to_owned()),
                k if REQUIRED.contains(&k) => Some("x".to_owned()),
                "SLIPWAY_PAYLOAD_ENCRYPTION" => Some("off".to_owned()),
                _ => None,
            }
        };
        let err = StarterSettings::from_lookup(lookup("too-short")).unwrap_err();
        assert!(err.to_string().contains("SLIPWAY_JWT_SECRET must be at least 32 bytes"), "{err}");
        let s = StarterSettings::from_lookup(lookup("0123456789abcdef0123456789abcdef")).unwrap();
        assert_eq!(s.jwt_pins.issuer.as_deref(), Some("https://auth.example.com"));
        assert_eq!(s.jwt_pins.audience.as_deref(), Some("slipway"));
    }
}
