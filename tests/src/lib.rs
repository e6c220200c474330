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
//!
//! A test then acts only through what a user or a provider would use: signed webhooks, the REST
//! API, the sandbox's control endpoints, and Temporal's own client for assertions. So the
//! helpers are methods of [`TestApp`], grouped by concern in private modules:
//!
//! - `app`: [`TestApp`] and its lifecycle (start, restart or kill the worker, stop);
//! - `options`: the knobs of one test ([`Options`]);
//! - `temporal`: the dev server and clients to it;
//! - `worker`: the worker under test, in-process or as a process, and its settings;
//! - `secrets`: the secrets both sides of every signature share;
//! - `billing`, `github`, `sandbox`, `api`, `workflows`: Stripe deliveries and checkout, the
//!   GitHub App, the sandbox's control endpoints, REST calls and JWTs, and what Temporal reports
//!   (with the polling helpers);
//! - `logging`, `clock`: test logs for the secret scan, Unix time and the seeded RNG.
//!
//! Tests import everything from the crate root (`slipway_tests::TestApp`, `slipway_tests::now`,
//! ...), so the modules are free to move; only [`otlp`] and [`secret_scan`] are public modules.

mod api;
mod app;
mod billing;
pub mod cli;
mod clock;
pub mod conformance;
mod github;
mod logging;
mod options;
mod sandbox;
mod secrets;
mod temporal;
mod wait;
mod worker;
mod workflows;

pub mod otlp;
pub mod secret_scan;

pub use api::{EventStream, SseEvent, check_against_document, mint_token};
pub use app::{StarterProcess, TestApp, VersionWorker};
pub use clock::{SeededRng, now};
pub use github::GitHubAccount;
pub use logging::{LOG_DIR_ENV, init_logging};
pub use options::Options;
pub use sandbox::server_status;
pub use secrets::{
    CALLBACK_SECRET, GITHUB_APP_PRIVATE_KEY, GITHUB_TOKEN, GITHUB_WEBHOOK_SECRET, HETZNER_TOKEN, JWT_SECRET,
    LLM_API_KEY, N8N_API_KEY, PAYLOAD_KEY_CURRENT, PAYLOAD_KEY_OLD, PAYLOAD_KEYS, SEAL_KEY, STRIPE_API_KEY,
    STRIPE_SECRET, SUPABASE_TOKEN, TAILSCALE_API_KEY, VERCEL_TOKEN, configured_secrets, encryption,
};
pub use temporal::{SEARCH_ATTRIBUTES, connect, connect_with};
pub use wait::{wait_for, wait_until};
pub use worker::{PatchGate, worker_env, worker_settings, workspace_binary};
pub use workflows::{Runs, decrypt_payloads, replayer, visit_payloads};

/// The repository the worker dispatches `provision-agent.yml` to, and whose Actions OIDC tokens
/// the starter accepts on callbacks.
pub const ACTIONS_REPO: &str = "slipway/agents";

/// The test workers' deployment identity (`SLIPWAY_DEPLOYMENT`): on their servers' labels and
/// their repositories' descriptions.
pub const DEPLOYMENT: &str = "e2e";
