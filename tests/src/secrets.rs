//! The fixed secrets of a test run, kept in one place because two sides must agree on each:
//! the sandbox signs (Stripe webhooks, GitHub webhooks, runner callbacks) with the value the
//! starter verifies with, and the worker authenticates to the sandbox's provider APIs with tokens
//! the sandbox accepts. The secret scan needs the complete list to look for leaks
//! ([`configured_secrets`]).

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
/// Payload encryption keys (`SLIPWAY_PAYLOAD_KEYS`): the current one, then an older one (the
/// rotation test writes with the older alone, then reads with both).
pub const PAYLOAD_KEY_CURRENT: &str =
    "test-2:8e7d6c5b4a392817f6e5d4c3b2a1908f8e7d6c5b4a392817f6e5d4c3b2a1908f";
/// The older key.
pub const PAYLOAD_KEY_OLD: &str = "test-1:1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
/// What every test process is given as `SLIPWAY_PAYLOAD_KEYS`.
pub const PAYLOAD_KEYS: &str = concat!(
    "test-2:8e7d6c5b4a392817f6e5d4c3b2a1908f8e7d6c5b4a392817f6e5d4c3b2a1908f",
    ",",
    "test-1:1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"
);

/// The test processes' payload encryption ([`PAYLOAD_KEYS`]).
pub fn encryption() -> slipway_codec::Encryption {
    slipway_codec::Encryption::from_lookup(|k| (k == "SLIPWAY_PAYLOAD_KEYS").then(|| PAYLOAD_KEYS.to_owned()))
        .expect("valid test keys")
}

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

/// Every secret value the harness configures, by the variable it is given as. The secret scan
/// (`slipway-secret-scan`, the replay tests) looks for each of these; values the sandbox issues
/// while tests run are recognised by their shape ([`secret_scan`](crate::secret_scan)). The private key counts by
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
    // Each key's secret part (the id is a name, not a secret).
    for key in [PAYLOAD_KEY_CURRENT, PAYLOAD_KEY_OLD] {
        secrets.push(("SLIPWAY_PAYLOAD_KEYS", key.split_once(':').map_or(key, |(_, k)| k).to_owned()));
    }
    secrets.extend(
        GITHUB_APP_PRIVATE_KEY
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .map(|l| ("GITHUB_APP_PRIVATE_KEY", l.to_owned())),
    );
    secrets
}
