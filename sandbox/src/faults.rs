//! Fault injection: make chosen provider requests slow, fail, or lose their connection, always
//! or at a configured rate, to exercise retry paths.
//!
//! A fault is matched before normal handling by method and path (`*` matches one segment).
//! Every matching fault rolls its own seeded dice (`probability`, default 1); the first one that
//! hits is applied: it sleeps `latency_ms`, then
//! - with a `status`, answers with that status, an optional `Retry-After` and an error body
//!   shaped like the provider's own (or the given body);
//! - with `"drop": "request"`, closes the connection without handling the request or answering;
//! - with `"drop": "response"`, handles the request (its effect happens) and then closes the
//!   connection without answering: the lost answer a client cannot tell from a lost request;
//! - with neither, passes the (slowed) request through.
//!
//! `count` limits how many requests a fault affects. `seed` makes a fault's dice reproducible
//! (the seed used is listed by `GET /_sandbox/faults`).
//!
//! Retry-After is checked as providers would like it honoured: after an injected answer with
//! `Retry-After: N`, the next request identical to the refused one (method, path, query and
//! body) should come no sooner than N seconds later. `GET /_sandbox/faults` reports how many
//! such retries came and how many came early, under `retry_after`.
//!
//! `/_sandbox/...` is never faulted, so a test can always clear faults or reset.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::state::{Shared, json_response, parse_body};

/// Largest request body the fingerprinting reads (provider requests are small).
const MAX_BODY: usize = 1 << 20;

#[derive(Default)]
pub(crate) struct Faults {
    list: Vec<Fault>,
    next_id: u64,
    retry_after: RetryAfterLedger,
}

#[derive(Clone, Copy, Deserialize, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum DropMode {
    /// Close the connection without handling the request.
    Request,
    /// Handle the request, then close the connection without answering.
    Response,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    method: Option<String>,
    path: String,
    status: Option<u16>,
    retry_after: Option<u64>,
    #[serde(default)]
    latency_ms: u64,
    count: Option<u64>,
    body: Option<Value>,
    probability: Option<f64>,
    drop: Option<DropMode>,
    seed: Option<u64>,
}

struct Fault {
    id: String,
    spec: FaultSpec,
    remaining: Option<u64>,
    /// Requests that matched method and path (whether or not the dice hit).
    matched: u64,
    /// Requests the fault was applied to.
    hits: u64,
    seed: u64,
    rng: SplitMix64,
}

impl Fault {
    fn to_json(&self) -> Value {
        let s = &self.spec;
        json!({
            "id": self.id, "method": s.method, "path": s.path, "status": s.status,
            "retry_after": s.retry_after, "latency_ms": s.latency_ms, "count": s.count,
            "probability": s.probability.unwrap_or(1.0), "drop": s.drop.map(|d| format!("{d:?}").to_lowercase()),
            "seed": self.seed, "remaining": self.remaining, "matched": self.matched, "hits": self.hits,
            "body": s.body,
        })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.remaining != Some(0)
            && self.spec.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path_matches(&self.spec.path, path)
    }

    /// Counts the match and rolls the dice; true if the fault applies to this request.
    fn roll(&mut self) -> bool {
        self.matched += 1;
        let p = self.spec.probability.unwrap_or(1.0);
        if p < 1.0 && self.rng.next_f64() >= p {
            return false;
        }
        self.hits += 1;
        if let Some(n) = self.remaining.as_mut() {
            *n -= 1;
        }
        true
    }
}

/// SplitMix64: tiny, seedable, good enough to pick which requests fail.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// When each refused request may come back, and how the retries behaved.
#[derive(Default)]
struct RetryAfterLedger {
    /// Fingerprint of a refused request → (when it was refused, the delay asked for).
    due: HashMap<u64, (Instant, Duration)>,
    /// Answers that carried `Retry-After`.
    answered: u64,
    /// Requests identical to a refused one that came back.
    retries: u64,
    /// Of those, how many came before the delay was over.
    early: u64,
    /// Smallest (gap - delay) observed, in milliseconds.
    min_slack_ms: Option<i64>,
}

impl RetryAfterLedger {
    fn observe(&mut self, fingerprint: u64, now: Instant) {
        if let Some((refused, delay)) = self.due.remove(&fingerprint) {
            let gap = now.duration_since(refused);
            let slack = gap.as_millis() as i64 - delay.as_millis() as i64;
            self.retries += 1;
            if gap < delay {
                self.early += 1;
                tracing::warn!(slack_ms = slack, "request retried before its Retry-After");
            }
            self.min_slack_ms = Some(self.min_slack_ms.map_or(slack, |m| m.min(slack)));
        }
    }

    fn to_json(&self) -> Value {
        json!({"answered": self.answered, "retries": self.retries, "early": self.early,
            "pending": self.due.len(), "min_slack_ms": self.min_slack_ms})
    }
}

/// Exact segment-wise match where a `*` pattern segment matches any one segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    pattern.len() == path.len() && pattern.iter().zip(&path).all(|(p, s)| *p == "*" || p == s)
}

fn fingerprint(method: &str, path: &str, query: Option<&str>, body: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    (method, path, query.unwrap_or(""), body).hash(&mut h);
    h.finish()
}

/// Middleware applying the first matching fault whose dice hit.
pub(crate) async fn middleware(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sandbox") {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_owned();
    if !app.lock().faults.list.iter().any(|f| f.matches(&method, &path)) {
        return next.run(req).await;
    }
    // A faulted path: read the body to recognise the same request when it is retried.
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return json_response(StatusCode::PAYLOAD_TOO_LARGE, json!({"message": "body too large"}));
    };
    let print = fingerprint(&method, &path, parts.uri.query(), &bytes);
    let req = Request::from_parts(parts, Body::from(bytes));
    let hit = {
        let mut state = app.lock();
        let faults = &mut state.faults;
        faults.retry_after.observe(print, Instant::now());
        let mut hit = None;
        for f in faults.list.iter_mut().filter(|f| f.matches(&method, &path)) {
            if f.roll() {
                hit = Some(f.spec.clone());
                break;
            }
        }
        hit
    };
    let Some(spec) = hit else {
        return next.run(req).await;
    };
    if spec.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(spec.latency_ms)).await;
    }
    if let Some(mode) = spec.drop {
        let Some(ConnectInfo(cut)) = req.extensions().get::<ConnectInfo<Cut>>().cloned() else {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"message": "sandbox: this server cannot drop connections"}),
            );
        };
        let response = match mode {
            DropMode::Request => json_response(StatusCode::SERVICE_UNAVAILABLE, json!({})),
            DropMode::Response => next.run(req).await,
        };
        tracing::info!(%path, ?mode, "injected fault: connection dropped");
        // Nothing of the response is written: the connection's writes fail from now on.
        cut.0.store(true, Ordering::SeqCst);
        return response;
    }
    let Some(status) = spec.status.and_then(|s| StatusCode::from_u16(s).ok()) else {
        return next.run(req).await;
    };
    tracing::info!(%path, status = status.as_u16(), "injected fault");
    let body = spec.body.unwrap_or_else(|| provider_error(&path, status));
    let mut response = json_response(status, body);
    // Marked, so a conformance check can tell the test's injected answers from the emulation's.
    response.headers_mut().insert("x-sandbox-fault", HeaderValue::from_static("injected"));
    if let Some(secs) = spec.retry_after {
        response.headers_mut().insert("retry-after", HeaderValue::from(secs));
        let mut state = app.lock();
        let ledger = &mut state.faults.retry_after;
        ledger.answered += 1;
        ledger.due.insert(print, (Instant::now(), Duration::from_secs(secs)));
    }
    response
}

/// The sandbox's TCP listener: each accepted connection carries a switch ([`Cut`]) a fault can
/// flip to make every later read and write fail, so the client sees the connection closed
/// without an answer.
pub(crate) struct CuttableListener(pub(crate) TcpListener);

/// A connection's switch, handed to requests as `ConnectInfo<Cut>`.
#[derive(Clone)]
pub(crate) struct Cut(Arc<AtomicBool>);

/// A TCP stream that fails once cut.
pub(crate) struct CuttableStream {
    inner: TcpStream,
    cut: Arc<AtomicBool>,
}

impl Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (inner, addr) = Listener::accept(&mut self.0).await;
        (CuttableStream { inner, cut: Arc::new(AtomicBool::new(false)) }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for Cut {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        Cut(stream.io().cut.clone())
    }
}

impl CuttableStream {
    fn check(&self) -> io::Result<()> {
        if self.cut.load(Ordering::SeqCst) {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "connection dropped by a sandbox fault"))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// An error body in the shape the provider owning `path` uses.
fn provider_error(path: &str, status: StatusCode) -> Value {
    let message = status.canonical_reason().unwrap_or("injected fault");
    if path.starts_with("/hetzner") {
        let code = match status.as_u16() {
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            422 => "invalid_input",
            423 => "locked",
            429 => "rate_limit_exceeded",
            503 => "unavailable",
            504 => "timeout",
            _ => "server_error",
        };
        json!({"error": {"code": code, "message": message, "details": {}}})
    } else if path.starts_with("/github") {
        json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.as_u16().to_string()})
    } else if path.starts_with("/vercel") {
        let code = match status.as_u16() {
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            429 => "rate_limited",
            s if s < 500 => "bad_request",
            _ => "internal_server_error",
        };
        json!({"error": {"code": code, "message": message}})
    } else if path.starts_with("/openai") {
        let (message, kind, code) = match status.as_u16() {
            401 => ("Incorrect API key provided.", "invalid_request_error", Some("invalid_api_key")),
            429 => ("Rate limit reached for requests", "requests", Some("rate_limit_exceeded")),
            s if s < 500 => (message, "invalid_request_error", None),
            503 => ("The engine is currently overloaded, please try again later", "server_error", None),
            _ => (
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            ),
        };
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    } else if path.starts_with("/stripe") {
        let kind = if status.is_server_error() { "api_error" } else { "invalid_request_error" };
        json!({"error": {"type": kind, "message": message}})
    } else {
        json!({"message": message})
    }
}

pub(crate) async fn create(State(app): State<Shared>, body: Bytes) -> Response {
    let spec = parse_body(&body)
        .and_then(|v| serde_json::from_value::<FaultSpec>(v).map_err(|e| format!("invalid fault: {e}")));
    let spec = match spec {
        Ok(spec) if !spec.path.starts_with('/') => Err("path must start with '/'".to_owned()),
        Ok(spec) if spec.status.is_some_and(|s| StatusCode::from_u16(s).is_err()) => {
            Err("status must be an HTTP status code".to_owned())
        }
        Ok(spec) if spec.probability.is_some_and(|p| !(0.0..=1.0).contains(&p)) => {
            Err("probability must be between 0 and 1".to_owned())
        }
        Ok(spec) if spec.drop.is_some() && spec.status.is_some() => {
            Err("a fault either drops the connection or answers with a status, not both".to_owned())
        }
        other => other,
    };
    let spec = match spec {
        Ok(spec) => spec,
        Err(message) => return json_response(StatusCode::BAD_REQUEST, json!({"error": message})),
    };
    let mut state = app.lock();
    state.faults.next_id += 1;
    let id = format!("fault_{}", state.faults.next_id);
    let remaining = spec.count;
    let seed = spec.seed.unwrap_or_else(|| {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
    });
    let rng = SplitMix64(seed);
    state.faults.list.push(Fault { id: id.clone(), spec, remaining, matched: 0, hits: 0, seed, rng });
    json_response(StatusCode::CREATED, json!({"id": id, "seed": seed}))
}

pub(crate) async fn list(State(app): State<Shared>) -> Response {
    let state = app.lock();
    let faults: Vec<Value> = state.faults.list.iter().map(Fault::to_json).collect();
    json_response(
        StatusCode::OK,
        json!({"faults": faults, "retry_after": state.faults.retry_after.to_json()}),
    )
}

pub(crate) async fn clear(State(app): State<Shared>) -> Response {
    app.lock().faults.list.clear();
    json_response(StatusCode::OK, json!({"cleared": true}))
}

#[cfg(test)]
mod tests {
    use super::{SplitMix64, path_matches};

    #[test]
    fn seeded_dice_repeat_and_hit_at_the_configured_rate() {
        let rolls = |seed| {
            let mut rng = SplitMix64(seed);
            (0..10_000).map(|_| rng.next_f64() < 0.2).collect::<Vec<_>>()
        };
        assert_eq!(rolls(7), rolls(7));
        assert_ne!(rolls(7), rolls(8));
        let hits = rolls(7).iter().filter(|h| **h).count();
        assert!((1_800..2_200).contains(&hits), "{hits}");
    }

    #[test]
    fn wildcard_matches_exactly_one_segment() {
        assert!(path_matches("/hetzner/v1/servers", "/hetzner/v1/servers/"));
        assert!(path_matches("/hetzner/v1/servers/*", "/hetzner/v1/servers/42"));
        assert!(!path_matches("/hetzner/v1/servers/*", "/hetzner/v1/servers"));
        assert!(!path_matches("/hetzner/v1/servers/*", "/hetzner/v1/servers/42/actions/poweron"));
    }
}
