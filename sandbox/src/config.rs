//! Sandbox configuration, read from the same environment variables the product uses.
//!
//! The secrets must match what the product's webhook and callback handlers verify, so they
//! come from the product's own variables (`STRIPE_WEBHOOK_SECRET`, `GITHUB_CALLBACK_SECRET`)
//! and fall back to the documented dev values so `cargo run` works out of the box.
//!
//! The GitHub App's public key defaults to the test key's public half (vendored in
//! `fixtures/github/`), so JWTs signed with the repository's throwaway test key verify with no
//! setup; a real deployment never points its product at the sandbox, so nothing secret is lost.

use std::fmt;
use std::net::SocketAddr;

/// Dev default of `STRIPE_WEBHOOK_SECRET`.
const DEV_STRIPE_WEBHOOK_SECRET: &str = "whsec_dev_slipway";
/// Dev default of `GITHUB_CALLBACK_SECRET`.
const DEV_CALLBACK_SECRET: &str = "dev-callback-secret";
/// The Stripe secret key the sandbox accepts by default (scripts/dev's).
const DEV_STRIPE_API_KEY: &str = "sk_test_dev_slipway";
/// The Hetzner API token the sandbox accepts by default (scripts/dev's).
const DEV_HETZNER_TOKEN: &str = "dev-hetzner-token";
/// The GitHub personal access token the sandbox accepts by default (scripts/dev's).
const DEV_GITHUB_TOKEN: &str = "ghp_dev";
/// The Tailscale API key the sandbox accepts by default (scripts/dev's).
const DEV_TAILSCALE_API_KEY: &str = "tskey-api-dev";
/// The Supabase Management API token the sandbox accepts by default (scripts/dev's).
const DEV_SUPABASE_TOKEN: &str = "sbp_dev";
/// The Vercel token the sandbox accepts by default (scripts/dev's).
const DEV_VERCEL_TOKEN: &str = "vercel_dev";
/// The n8n API key the sandbox accepts by default (scripts/dev's).
const DEV_N8N_API_KEY: &str = "n8n_dev";
/// The model API key the sandbox accepts by default (scripts/dev's).
const DEV_LLM_API_KEY: &str = "sk-llm-dev";
/// Dev default of `GITHUB_WEBHOOK_SECRET`.
const DEV_GITHUB_WEBHOOK_SECRET: &str = "dev-github-webhook-secret";
/// Public half of the throwaway test key that signs dev and test GitHub App JWTs.
const TEST_APP_PUBLIC_KEY: &str = include_str!("../fixtures/github/app-test-public-key.pem");

/// How the sandbox listens, signs and paces its simulated work.
#[derive(Clone)]
pub struct SandboxConfig {
    /// `SLIPWAY_SANDBOX_ADDR`, default `127.0.0.1:8099`; tests use port 0.
    pub addr: SocketAddr,
    /// `GITHUB_CALLBACK_SECRET`: signs the fake Actions runner's callbacks.
    pub callback_secret: String,
    /// `STRIPE_WEBHOOK_SECRET`: signs Stripe webhook deliveries.
    pub stripe_webhook_secret: String,
    /// `SANDBOX_STRIPE_WEBHOOK_URL`, default `http://127.0.0.1:8080/webhooks/stripe`: where
    /// Stripe events are delivered at start and after a reset (`POST
    /// /_sandbox/stripe/webhook_endpoint` moves it at runtime, as updating the endpoint does).
    pub stripe_webhook_url: String,
    /// `SANDBOX_STRIPE_DELIVERY_ATTEMPTS`, default 8: how many times an event is sent before
    /// Stripe gives up on it (the first attempt included; 0 records events without sending them,
    /// so they stay pending).
    pub stripe_delivery_attempts: u32,
    /// `SANDBOX_STRIPE_RETRY_MS`, default 500: the wait before the second attempt; each later
    /// wait doubles (real Stripe retries over three days; tests need seconds).
    pub stripe_retry_base_ms: u64,
    /// `SANDBOX_HETZNER_ACTION_MS`, default 1500: how long a Hetzner action stays "running".
    pub hetzner_action_ms: u64,
    /// `SANDBOX_RUNNER_STEP_MS`, default 1000: delay between fake runner steps.
    pub runner_step_ms: u64,
    /// `SANDBOX_SUPABASE_READY_MS`, default 1500: how long a new Supabase project is `COMING_UP`.
    pub supabase_ready_ms: u64,
    /// `SANDBOX_VERCEL_READY_MS`, default 1000: how long a Vercel deployment takes to be `READY`.
    pub vercel_ready_ms: u64,
    /// `SANDBOX_GITHUB_APP_ID`, default `424242`: the `iss` app JWTs must carry.
    pub github_app_id: String,
    /// `SANDBOX_GITHUB_APP_PUBLIC_KEY` (PEM text; `\n` escapes allowed): verifies app JWTs.
    /// Defaults to the public half of the repository's test key.
    pub github_app_public_key_pem: String,
    /// `SANDBOX_GITHUB_TOKEN_TTL_SECS`, default 3600: lifetime of installation access tokens.
    pub github_token_ttl_secs: u64,
    /// `SANDBOX_GITHUB_WEBHOOK_URL`, default `http://127.0.0.1:8080/webhooks/github`.
    pub github_webhook_url: String,
    /// `GITHUB_WEBHOOK_SECRET`: signs GitHub webhook deliveries (`X-Hub-Signature-256`).
    pub github_webhook_secret: String,
    /// `SANDBOX_ACTIONS_OIDC_AUDIENCE`, default `slipway`: the audience the runner asks for when
    /// it requests the Actions OIDC token it sends with each callback.
    pub actions_oidc_audience: String,
    /// `SANDBOX_ACTIONS_OIDC_ISSUER`: the issuer URL its tokens name and Slipway fetches keys
    /// from, when the sandbox is reached under another name than its own address (containers);
    /// default `<sandbox URL>/github-oidc`.
    pub actions_oidc_issuer: Option<String>,
    /// `SANDBOX_RECORD_EXCHANGES`, default `false`: record whole exchanges (bodies included,
    /// credentials never) for the conformance suite (`GET /_sandbox/exchanges`).
    pub record_exchanges: bool,
    /// `STRIPE_SECRET_KEY`: the one Stripe key the sandbox accepts; any other is refused as Stripe
    /// refuses an invalid key (401 `invalid_request_error`, "Invalid API Key provided").
    pub stripe_api_key: String,
    /// `HETZNER_API_TOKEN`: the one Hetzner token accepted; any other is 401 `unauthorized`.
    pub hetzner_token: String,
    /// `GITHUB_TOKEN`: the personal access token accepted on every repository route (as GitHub
    /// accepts a PAT of an account with access, on git refs, pulls and contents alike); any other
    /// credential that is not a live installation token or, on App routes, an App JWT is 401.
    pub github_token: String,
    /// `TAILSCALE_API_KEY`: the one API key accepted (Bearer, or Basic with the key as user);
    /// any other is 401 `{"message": "API token invalid"}`.
    pub tailscale_api_key: String,
    /// `SUPABASE_MANAGEMENT_TOKEN`: the one access token accepted; any other is 401
    /// `{"message": "Unauthorized"}`.
    pub supabase_token: String,
    /// `VERCEL_TOKEN`: the one token accepted; any other is 403 `forbidden` with
    /// `invalidToken: true`, as Vercel answers.
    pub vercel_token: String,
    /// `N8N_API_KEY`: the one `X-N8N-API-KEY` accepted; any other is 401 `unauthorized`.
    pub n8n_api_key: String,
    /// `LLM_API_KEY`: the one model API key accepted; any other is 401 `invalid_api_key`.
    pub llm_api_key: String,
}

impl Default for SandboxConfig {
    /// The dev defaults, i.e. what [`SandboxConfig::from_env`] gives with nothing set.
    fn default() -> Self {
        SandboxConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8099)),
            callback_secret: DEV_CALLBACK_SECRET.to_owned(),
            stripe_webhook_secret: DEV_STRIPE_WEBHOOK_SECRET.to_owned(),
            stripe_webhook_url: "http://127.0.0.1:8080/webhooks/stripe".to_owned(),
            stripe_delivery_attempts: 8,
            stripe_retry_base_ms: 500,
            hetzner_action_ms: 1500,
            runner_step_ms: 1000,
            supabase_ready_ms: 1500,
            vercel_ready_ms: 1000,
            github_app_id: "424242".to_owned(),
            github_app_public_key_pem: TEST_APP_PUBLIC_KEY.to_owned(),
            github_token_ttl_secs: 3600,
            github_webhook_url: "http://127.0.0.1:8080/webhooks/github".to_owned(),
            github_webhook_secret: DEV_GITHUB_WEBHOOK_SECRET.to_owned(),
            actions_oidc_audience: "slipway".to_owned(),
            actions_oidc_issuer: None,
            record_exchanges: false,
            stripe_api_key: DEV_STRIPE_API_KEY.to_owned(),
            hetzner_token: DEV_HETZNER_TOKEN.to_owned(),
            github_token: DEV_GITHUB_TOKEN.to_owned(),
            tailscale_api_key: DEV_TAILSCALE_API_KEY.to_owned(),
            supabase_token: DEV_SUPABASE_TOKEN.to_owned(),
            vercel_token: DEV_VERCEL_TOKEN.to_owned(),
            n8n_api_key: DEV_N8N_API_KEY.to_owned(),
            llm_api_key: DEV_LLM_API_KEY.to_owned(),
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
        if let Some(v) = get("SANDBOX_GITHUB_APP_ID") {
            config.github_app_id = v.trim().to_owned();
        }
        if let Some(v) = get("SANDBOX_GITHUB_APP_PUBLIC_KEY") {
            // `.env` files often carry a PEM on one line with `\n` escapes.
            let pem = v.trim().replace("\\n", "\n");
            jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|e| format!("SANDBOX_GITHUB_APP_PUBLIC_KEY is not an RSA public key in PEM: {e}"))?;
            config.github_app_public_key_pem = pem;
        }
        if let Some(v) = get("SANDBOX_GITHUB_WEBHOOK_URL") {
            config.github_webhook_url = v;
        }
        if let Some(v) = get("GITHUB_WEBHOOK_SECRET") {
            config.github_webhook_secret = v;
        }
        if let Some(v) = get("SANDBOX_ACTIONS_OIDC_AUDIENCE") {
            config.actions_oidc_audience = v.trim().to_owned();
        }
        if let Some(v) = get("STRIPE_SECRET_KEY") {
            config.stripe_api_key = v.trim().to_owned();
        }
        if let Some(v) = get("HETZNER_API_TOKEN") {
            config.hetzner_token = v.trim().to_owned();
        }
        if let Some(v) = get("GITHUB_TOKEN") {
            config.github_token = v.trim().to_owned();
        }
        for (key, field) in [
            ("TAILSCALE_API_KEY", &mut config.tailscale_api_key),
            ("SUPABASE_MANAGEMENT_TOKEN", &mut config.supabase_token),
            ("VERCEL_TOKEN", &mut config.vercel_token),
            ("N8N_API_KEY", &mut config.n8n_api_key),
            ("LLM_API_KEY", &mut config.llm_api_key),
        ] {
            if let Some(v) = get(key) {
                *field = v.trim().to_owned();
            }
        }
        if let Some(v) = get("SANDBOX_RECORD_EXCHANGES") {
            config.record_exchanges = v.trim() == "true";
        }
        if let Some(v) = get("SANDBOX_ACTIONS_OIDC_ISSUER") {
            config.actions_oidc_issuer = Some(v.trim().trim_end_matches('/').to_owned());
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
        config.stripe_retry_base_ms = millis("SANDBOX_STRIPE_RETRY_MS", config.stripe_retry_base_ms)?;
        if let Some(v) = get("SANDBOX_STRIPE_DELIVERY_ATTEMPTS") {
            config.stripe_delivery_attempts = v.trim().parse::<u32>().map_err(|e| {
                format!("SANDBOX_STRIPE_DELIVERY_ATTEMPTS={v:?} is not a number of attempts: {e}")
            })?;
        }
        if let Some(v) = get("SANDBOX_GITHUB_TOKEN_TTL_SECS") {
            config.github_token_ttl_secs = v.trim().parse::<u64>().map_err(|e| {
                format!("SANDBOX_GITHUB_TOKEN_TTL_SECS={v:?} is not a number of seconds: {e}")
            })?;
        }
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
            .field("stripe_delivery_attempts", &self.stripe_delivery_attempts)
            .field("stripe_retry_base_ms", &self.stripe_retry_base_ms)
            .field("hetzner_action_ms", &self.hetzner_action_ms)
            .field("runner_step_ms", &self.runner_step_ms)
            .field("supabase_ready_ms", &self.supabase_ready_ms)
            .field("vercel_ready_ms", &self.vercel_ready_ms)
            .field("github_app_id", &self.github_app_id)
            .field(
                "github_app_public_key_pem",
                &format_args!("<{} bytes>", self.github_app_public_key_pem.len()),
            )
            .field("github_token_ttl_secs", &self.github_token_ttl_secs)
            .field("github_webhook_url", &self.github_webhook_url)
            .field("github_webhook_secret", &"<redacted>")
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
        assert_eq!((config.github_app_id.as_str(), config.github_token_ttl_secs), ("424242", 3600));
        assert_eq!(config.github_webhook_url, "http://127.0.0.1:8080/webhooks/github");
        assert_eq!(config.github_webhook_secret, "dev-github-webhook-secret");
        assert_eq!((config.stripe_delivery_attempts, config.stripe_retry_base_ms), (8, 500));
        assert!(config.github_app_public_key_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    }

    #[test]
    fn reads_overrides_and_rejects_garbage() {
        let config = SandboxConfig::from_lookup(lookup(&[
            ("SLIPWAY_SANDBOX_ADDR", "0.0.0.0:9000"),
            ("SANDBOX_RUNNER_STEP_MS", "5"),
            ("GITHUB_CALLBACK_SECRET", "s3cret"),
            ("SANDBOX_SUPABASE_READY_MS", "7"),
            ("SANDBOX_VERCEL_READY_MS", "8"),
            ("SANDBOX_STRIPE_DELIVERY_ATTEMPTS", "3"),
            ("SANDBOX_STRIPE_RETRY_MS", "20"),
        ]))
        .unwrap();
        assert_eq!((config.stripe_delivery_attempts, config.stripe_retry_base_ms), (3, 20));
        assert_eq!(config.addr.port(), 9000);
        assert_eq!((config.supabase_ready_ms, config.vercel_ready_ms), (7, 8));
        assert_eq!(config.runner_step_ms, 5);
        assert_eq!(config.callback_secret, "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));
        let err = SandboxConfig::from_lookup(lookup(&[("SANDBOX_HETZNER_ACTION_MS", "soon")]));
        assert!(err.unwrap_err().contains("SANDBOX_HETZNER_ACTION_MS"));
        let err = SandboxConfig::from_lookup(lookup(&[("SANDBOX_STRIPE_DELIVERY_ATTEMPTS", "-1")]));
        assert!(err.unwrap_err().contains("SANDBOX_STRIPE_DELIVERY_ATTEMPTS"));
    }

    #[test]
    fn github_app_settings() {
        let one_line = TEST_APP_PUBLIC_KEY.trim().replace('\n', "\\n");
        let config = SandboxConfig::from_lookup(lookup(&[
            ("SANDBOX_GITHUB_APP_ID", "77"),
            ("SANDBOX_GITHUB_APP_PUBLIC_KEY", &one_line),
            ("SANDBOX_GITHUB_TOKEN_TTL_SECS", "5"),
            ("GITHUB_WEBHOOK_SECRET", "hook-secret"),
            ("SANDBOX_GITHUB_WEBHOOK_URL", "http://127.0.0.1:9/gh"),
        ]))
        .unwrap();
        assert_eq!((config.github_app_id.as_str(), config.github_token_ttl_secs), ("77", 5));
        assert_eq!(config.github_app_public_key_pem, TEST_APP_PUBLIC_KEY.trim());
        assert_eq!(config.github_webhook_url, "http://127.0.0.1:9/gh");
        assert!(!format!("{config:?}").contains("hook-secret"));
        let err = SandboxConfig::from_lookup(lookup(&[("SANDBOX_GITHUB_APP_PUBLIC_KEY", "nope")]));
        assert!(err.unwrap_err().contains("SANDBOX_GITHUB_APP_PUBLIC_KEY"));
        let err = SandboxConfig::from_lookup(lookup(&[("SANDBOX_GITHUB_TOKEN_TTL_SECS", "1h")]));
        assert!(err.unwrap_err().contains("SANDBOX_GITHUB_TOKEN_TTL_SECS"));
    }
}
