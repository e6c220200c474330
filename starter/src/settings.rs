//! Starter configuration, from the environment. Like the worker, a starter missing required
//! variables refuses to start with one message naming all of them.

use std::{net::SocketAddr, time::Duration};

use secrecy::SecretString;
use slipway_proto::model::ProvisioningPolicy;

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
    /// HMAC secret of the GitHub Actions callbacks.
    pub callback_secret: SecretString,
    /// HS256 secret of API bearer tokens.
    pub jwt_secret: SecretString,
    /// Longest a request waits on Temporal before answering 503.
    pub temporal_timeout: Duration,
    /// Saga knobs given to new agents.
    pub policy: ProvisioningPolicy,
}

/// Required variables, in the order they are reported.
pub const REQUIRED: [&str; 3] = ["STRIPE_WEBHOOK_SECRET", "GITHUB_CALLBACK_SECRET", "SLIPWAY_JWT_SECRET"];

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
        let defaults = ProvisioningPolicy::default();
        Ok(Self {
            http_addr: addr("SLIPWAY_HTTP_ADDR", "127.0.0.1:8080")?,
            grpc_addr: addr("SLIPWAY_GRPC_ADDR", "127.0.0.1:50051")?,
            task_queue: get("SLIPWAY_TASK_QUEUE").unwrap_or_else(|| "slipway".to_owned()),
            stripe_webhook_secret: secret("STRIPE_WEBHOOK_SECRET"),
            callback_secret: secret("GITHUB_CALLBACK_SECRET"),
            jwt_secret: secret("SLIPWAY_JWT_SECRET"),
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
            "missing required configuration: STRIPE_WEBHOOK_SECRET, GITHUB_CALLBACK_SECRET, SLIPWAY_JWT_SECRET \
             (see .env.example)"
        );
    }

    #[test]
    fn pinned_defaults() {
        let s = StarterSettings::from_lookup(|k| REQUIRED.contains(&k).then(|| "x".to_owned())).unwrap();
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.task_queue, "slipway");
    }
}
