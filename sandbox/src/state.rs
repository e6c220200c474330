//! The one in-memory store behind every emulated provider, plus small shared helpers.
//!
//! All provider state lives in a single [`State`] behind one `Mutex`, so a request sees a
//! consistent snapshot and `/_sandbox/reset` is one assignment. Background tasks (the fake
//! Actions runner, Stripe webhook retries) capture the state's `generation` when they start
//! and stop touching anything once a reset or shutdown has bumped it, so a reset really is a
//! clean slate. The lock is never held across an `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{SandboxConfig, faults, github, hetzner, n8n, openai, stripe, supabase, tailscale, vercel};

/// How many request-log entries are kept; older ones are dropped first.
const REQUEST_LOG_CAP: usize = 10_000;

pub(crate) type Shared = Arc<App>;

/// Everything a handler needs: configuration, an HTTP client for outgoing calls, the state.
pub(crate) struct App {
    pub(crate) config: SandboxConfig,
    /// `http://host:port` of this sandbox, used in URLs the emulated APIs hand out.
    pub(crate) base_url: String,
    pub(crate) http: reqwest::Client,
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) generation: u64,
    pub(crate) hetzner: hetzner::HetznerState,
    pub(crate) tailscale: tailscale::TailscaleState,
    pub(crate) github: github::GithubState,
    pub(crate) stripe: stripe::StripeState,
    pub(crate) supabase: supabase::SupabaseState,
    pub(crate) vercel: vercel::VercelState,
    pub(crate) n8n: n8n::N8nState,
    pub(crate) openai: openai::OpenAiState,
    pub(crate) faults: faults::Faults,
    pub(crate) requests: VecDeque<Value>,
    /// Whole exchanges, when recording is on ([`crate::exchanges`]).
    pub(crate) exchanges: VecDeque<Value>,
}

impl App {
    pub(crate) fn new(config: SandboxConfig, base_url: String) -> Shared {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("reqwest client without TLS roots always builds");
        Arc::new(App { config, base_url, http, state: Mutex::new(State::default()) })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops all state and invalidates background tasks started before.
    pub(crate) fn reset(&self) {
        let mut state = self.lock();
        let generation = state.generation + 1;
        *state = State { generation, ..State::default() };
    }

    /// Runs `f` on the state only if no reset happened since `generation` was captured.
    pub(crate) fn with_current<R>(&self, generation: u64, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        let mut state = self.lock();
        (state.generation == generation).then(|| f(&mut state))
    }

    pub(crate) fn log_request(&self, method: &str, path: &str, status: u16) {
        let mut state = self.lock();
        if state.requests.len() >= REQUEST_LOG_CAP {
            state.requests.pop_front();
        }
        state.requests.push_back(json!({
            "method": method, "path": path, "status": status, "at": zulu(Utc::now()),
        }));
    }
}

pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The credential in `Authorization` with its scheme (`Bearer`, `token`, `Basic`) removed,
/// or `None` when the header is missing or carries no credential.
pub(crate) fn credential(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let token = match value.split_once(' ') {
        Some((_scheme, rest)) => rest.trim(),
        None if ["bearer", "token", "basic"].contains(&value.to_ascii_lowercase().as_str()) => "",
        None => value,
    };
    (!token.is_empty()).then_some(token)
}

/// The key of a request that may send it as `Bearer <key>` or as `Basic base64(<key>:)` (the key
/// as user name, as Stripe and Tailscale accept).
pub(crate) fn key_credential(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let raw = credential(headers)?;
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("basic "));
    if !basic {
        return Some(raw.to_owned());
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':').map_or(text.clone(), |(user, _)| user.to_owned()))
}

/// Parses a request body as JSON; an empty body counts as `{}`.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

/// `2016-01-30T23:55:00+00:00`, the format Hetzner uses.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// `2016-01-30T23:55:00Z`, the format GitHub and Tailscale use.
pub(crate) fn zulu(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `n` random characters from `[0-9A-Za-z]`.
pub(crate) fn random_alnum(n: usize) -> String {
    random_from(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", n)
}

/// `n` random characters from `[a-z]`.
pub(crate) fn random_lower(n: usize) -> String {
    random_from(b"abcdefghijklmnopqrstuvwxyz", n)
}

/// `n` random characters from `alphabet` (at most 256 ASCII characters), without bias.
fn random_from(alphabet: &[u8], n: usize) -> String {
    // Bytes at or above the largest multiple of the alphabet size are rejected, so every
    // character is equally likely; so are a v4 UUID's version and variant bytes (6 and 8).
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for (i, b) in uuid::Uuid::new_v4().as_bytes().iter().enumerate() {
            if i != 6 && i != 8 && usize::from(*b) < limit && out.len() < n {
                out.push(alphabet[usize::from(*b) % alphabet.len()] as char);
            }
        }
    }
    out
}

/// `n` random lowercase hex digits.
pub(crate) fn random_hex(n: usize) -> String {
    let mut out = String::with_capacity(n + 32);
    while out.len() < n {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(n);
    out
}

/// Lowercase hex HMAC-SHA256 of `data` under `secret`.
pub(crate) fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any size");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}
