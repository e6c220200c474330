//! Fault injection: make chosen provider requests slow or fail, to exercise retry paths.
//!
//! A fault is matched before normal handling by method and path (`*` matches one segment).
//! It first sleeps `latency_ms`, then, if it has a `status`, answers with that status, an
//! optional `Retry-After` and an error body shaped like the provider's own (or the given
//! body). `count` limits how many requests it affects; latency-only faults pass through.
//! `/_sandbox/...` is never faulted, so a test can always clear faults or reset.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::state::{Shared, json_response, parse_body};

#[derive(Default)]
pub(crate) struct Faults {
    list: Vec<Fault>,
    next_id: u64,
}

#[derive(Clone, Deserialize)]
struct FaultSpec {
    method: Option<String>,
    path: String,
    status: Option<u16>,
    retry_after: Option<u64>,
    #[serde(default)]
    latency_ms: u64,
    count: Option<u64>,
    body: Option<Value>,
}

struct Fault {
    id: String,
    spec: FaultSpec,
    remaining: Option<u64>,
    hits: u64,
}

impl Fault {
    fn to_json(&self) -> Value {
        let s = &self.spec;
        json!({
            "id": self.id, "method": s.method, "path": s.path, "status": s.status,
            "retry_after": s.retry_after, "latency_ms": s.latency_ms, "count": s.count,
            "remaining": self.remaining, "hits": self.hits, "body": s.body,
        })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.remaining != Some(0)
            && self.spec.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path_matches(&self.spec.path, path)
    }
}

/// Exact segment-wise match where a `*` pattern segment matches any one segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    pattern.len() == path.len() && pattern.iter().zip(&path).all(|(p, s)| *p == "*" || p == s)
}

/// Middleware applying the first active matching fault.
pub(crate) async fn middleware(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sandbox") {
        return next.run(req).await;
    }
    let hit = {
        let mut state = app.lock();
        let method = req.method().as_str();
        state.faults.list.iter_mut().find(|f| f.matches(method, &path)).map(|f| {
            f.hits += 1;
            if let Some(n) = f.remaining.as_mut() {
                *n -= 1;
            }
            f.spec.clone()
        })
    };
    let Some(spec) = hit else {
        return next.run(req).await;
    };
    if spec.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(spec.latency_ms)).await;
    }
    let Some(status) = spec.status.and_then(|s| StatusCode::from_u16(s).ok()) else {
        return next.run(req).await;
    };
    tracing::info!(%path, status = status.as_u16(), "injected fault");
    let body = spec.body.unwrap_or_else(|| provider_error(&path, status));
    let mut response = json_response(status, body);
    if let Some(secs) = spec.retry_after {
        response.headers_mut().insert("retry-after", HeaderValue::from(secs));
    }
    response
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
    state.faults.list.push(Fault { id: id.clone(), spec, remaining, hits: 0 });
    json_response(StatusCode::CREATED, json!({"id": id}))
}

pub(crate) async fn list(State(app): State<Shared>) -> Response {
    let state = app.lock();
    let faults: Vec<Value> = state.faults.list.iter().map(Fault::to_json).collect();
    json_response(StatusCode::OK, json!({"faults": faults}))
}

pub(crate) async fn clear(State(app): State<Shared>) -> Response {
    app.lock().faults.list.clear();
    json_response(StatusCode::OK, json!({"cleared": true}))
}

#[cfg(test)]
mod tests {
    use super::path_matches;

    #[test]
    fn wildcard_matches_exactly_one_segment() {
        assert!(path_matches("/hetzner/v1/servers", "/hetzner/v1/servers/"));
        assert!(path_matches("/hetzner/v1/servers/*", "/hetzner/v1/servers/42"));
        assert!(!path_matches("/hetzner/v1/servers/*", "/hetzner/v1/servers"));
        assert!(!path_matches("/hetzner/v1/servers/*", "/hetzner/v1/servers/42/actions/poweron"));
    }
}
