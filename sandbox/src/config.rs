//! Sandbox configuration, read from the same environment variables the product uses.
//!
//! The secrets must match what the product's webhook and callback handlers verify, so they
//! come from the product's own variables (`STRIPE_WEBHOOK_SECRET`, `GITHUB_CALLBACK_SECRET`)
//! and fall back to the documented dev values so `cargo run` works out of the box.

use std::fmt;
use std::net::SocketAddr;

/// Dev default of `STRIPE_WEBHOOK_SECRET`.
const DEV_STRIPE_WEBHOOK_SECRET: &str = "whsec_dev_slipway";
/// Dev default of `GITHUB_CALLBACK_SECRET`.
const DEV_CALLBACK_SECRET: &str = "dev-callback-secret";

/// How the sandbox listens, signs and paces its simulated work.
#[derive(Clone)]
pub struct SandboxConfig {
    /// `SLIPWAY_SANDBOX_ADDR`, default `127.0.0.1:8099`; tests use port 0.
    pub addr: SocketAddr,
    /// `GITHUB_CALLBACK_SECRET`: signs the fake Actions runner's callbacks.
    pub callback_secret: String,
    /// `STRIPE_WEBHOOK_SECRET`: signs Stripe webhook deliveries.
    pub stripe_webhook_secret: String,
    /// `SANDBOX_STRIPE_WEBHOOK_URL`, default `http://127.0.0.1:8080/webhooks/stripe`.
    pub stripe_webhook_url: String,
    /// `SANDBOX_HETZNER_ACTION_MS`, default 1500: how long a Hetzner action stays "running".
    pub hetzner_action_ms: u64,
    /// `SANDBOX_RUNNER_STEP_MS`, default 1000: delay between fake runner steps.
    pub runner_step_ms: u64,
    /// `SANDBOX_SUPABASE_READY_MS`, default 1500: how long a new Supabase project is `COMING_UP`.
    pub supabase_ready_ms: u64,
    /// `SANDBOX_VERCEL_READY_MS`, default 1000: how long a Vercel deployment takes to be `READY`.
    pub vercel_ready_ms: u64,
}

impl Default for SandboxConfig {
    /// The dev defaults, i.e. what [`SandboxConfig::from_env`] gives with nothing set.
    fn default() -> Self {
        SandboxConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8099)),
            callback_secret: DEV_CALLBACK_SECRET.to_owned(),
            stripe_webhook_secret: DEV_STRIPE_WEBHOOK_SECRET.to_owned(),
            stripe_webhook_url: "http://127.0.0.1:8080/webhooks/stripe".to_owned(),
            hetzner_action_ms: 1500,
            runner_step_ms: 1000,
            supabase_ready_ms: 1500,
            vercel_ready_ms: 1000,
        }
    }
}

impl SandboxConfig {
    /// Reads the configuration from the environment; unset or empty variables take defaults.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |key: &str| get(key).filter(|v| !v.trim().is_empty());
        let mut config = SandboxConfig::default();
        if let Some(v) = get("SLIPWAY_SANDBOX_ADDR") {
            config.addr =
                v.trim().parse().map_err(|e| format!("SLIPWAY_SANDBOX_ADDR={v:?} is not host:port: {e}"))?;
        }
        if let Some(v) = get("GITHUB_CALLBACK_SECRET") {
            config.callback_secret = v;
        }
        if let Some(v) = get("STRIPE_WEBHOOK_SECRET") {
            config.stripe_webhook_secret = v;
        }
        if let Some(v) = get("SANDBOX_STRIPE_WEBHOOK_URL") {
            config.stripe_webhook_url = v;
        }
        let millis = |key: &str, default: u64| match get(key) {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|e| format!("{key}={v:?} is not a number of milliseconds: {e}")),
            None => Ok(default),
        };
        config.hetzner_action_ms = millis("SANDBOX_HETZNER_ACTION_MS", config.hetzner_action_ms)?;
        config.runner_step_ms = millis("SANDBOX_RUNNER_STEP_MS", config.runner_step_ms)?;
        config.supabase_ready_ms = millis("SANDBOX_SUPABASE_READY_MS", config.supabase_ready_ms)?;
        config.vercel_ready_ms = millis("SANDBOX_VERCEL_READY_MS", config.vercel_ready_ms)?;
        Ok(config)
    }
}

impl fmt::Debug for SandboxConfig {
    /// Secrets are redacted so the config can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("addr", &self.addr)
            .field("callback_secret", &"<redacted>")
            .field("stripe_webhook_secret", &"<redacted>")
            .field("stripe_webhook_url", &self.stripe_webhook_url)
            .field("hetzner_action_ms", &self.hetzner_action_ms)
            .field("runner_step_ms", &self.runner_step_ms)
            .field("supabase_ready_ms", &self.supabase_ready_ms)
            .field("vercel_ready_ms", &self.vercel_ready_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_when_unset_or_empty() {
        let config = SandboxConfig::from_lookup(lookup(&[("STRIPE_WEBHOOK_SECRET", "")])).unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8099");
        assert_eq!(config.stripe_webhook_secret, "whsec_dev_slipway");
        assert_eq!(config.callback_secret, "dev-callback-secret");
        assert_eq!(config.hetzner_action_ms, 1500);
        assert_eq!(config.runner_step_ms, 1000);
        assert_eq!((config.supabase_ready_ms, config.vercel_ready_ms), (1500, 1000));
    }

    #[test]
    fn reads_overrides_and_rejects_garbage() {
        let config = SandboxConfig::from_lookup(lookup(&[
            ("SLIPWAY_SANDBOX_ADDR", "0.0.0.0:9000"),
            ("SANDBOX_RUNNER_STEP_MS", "5"),
            ("GITHUB_CALLBACK_SECRET", "s3cret"),
            ("SANDBOX_SUPABASE_READY_MS", "7"),
            ("SANDBOX_VERCEL_READY_MS", "8"),
        ]))
        .unwrap();
        assert_eq!(config.addr.port(), 9000);
        assert_eq!((config.supabase_ready_ms, config.vercel_ready_ms), (7, 8));
        assert_eq!(config.runner_step_ms, 5);
        assert_eq!(config.callback_secret, "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));
        let err = SandboxConfig::from_lookup(lookup(&[("SANDBOX_HETZNER_ACTION_MS", "soon")]));
        assert!(err.unwrap_err().contains("SANDBOX_HETZNER_ACTION_MS"));
    }
}
