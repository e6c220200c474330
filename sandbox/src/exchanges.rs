//! The exchange log: every request the sandbox receives from the product and every answer it
//! gives, recorded whole (method, path, query, headers, body; status, headers, body) so that a
//! conformance suite can check both sides against each provider's own API description.
//!
//! Off by default (`SANDBOX_RECORD_EXCHANGES=true` or [`SandboxConfig::record_exchanges`]
//! turns it on): it holds bodies. Credentials never enter it: `Authorization` keeps only its
//! scheme (`Bearer`, `Basic`, …) and every other credential-bearing header only the fact that it
//! was present. Served at `GET /_sandbox/exchanges`; the sandbox's own control paths are not
//! recorded.
//!
//! [`SandboxConfig::record_exchanges`]: crate::SandboxConfig::record_exchanges

use axum::{
    body::{Body, Bytes, to_bytes},
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::Response,
};
use serde_json::{Map, Value, json};

use crate::state::{Shared, json_response};

/// Exchanges kept before the oldest is dropped.
const CAP: usize = 20_000;
/// Largest body recorded (larger ones are noted, not kept).
const MAX_BODY: usize = 1024 * 1024;

/// Headers whose value is a credential: only their presence is recorded.
const SECRET_HEADERS: [&str; 5] =
    ["x-n8n-api-key", "x-api-key", "cookie", "x-slipway-signature", "stripe-signature"];

fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let name = name.as_str().to_ascii_lowercase();
        let value = value.to_str().unwrap_or_default();
        let recorded = if name == "authorization" {
            value.split_whitespace().next().unwrap_or_default().to_owned()
        } else if SECRET_HEADERS.contains(&name.as_str()) {
            "<present>".to_owned()
        } else {
            value.to_owned()
        };
        out.insert(name, Value::String(recorded));
    }
    Value::Object(out)
}

/// A body as JSON when it is JSON, as a form when it is a form, else as text.
fn body_json(content_type: Option<&str>, bytes: &Bytes) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if bytes.len() > MAX_BODY {
        return json!({"$too_large": bytes.len()});
    }
    let ct = content_type.unwrap_or_default();
    if ct.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<Value> = url::form_urlencoded::parse(bytes)
            .map(|(k, v)| json!([k.into_owned(), v.into_owned()]))
            .collect();
        return json!({"$form": pairs});
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| json!({"$text": String::from_utf8_lossy(bytes)}))
}

/// Middleware: records the exchange when recording is on.
pub(crate) async fn record(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !app.config.record_exchanges || path.starts_with("/_sandbox") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request = json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "headers": headers_json(&parts.headers),
        "body": body_json(content_type.as_deref(), &bytes),
    });
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let (rparts, rbody) = response.into_parts();
    let rbytes = to_bytes(rbody, usize::MAX).await.unwrap_or_default();
    let rtype = rparts.headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let answer = json!({
        "status": rparts.status.as_u16(),
        "headers": headers_json(&rparts.headers),
        "body": body_json(rtype.as_deref(), &rbytes),
    });
    {
        let mut state = app.lock();
        if state.exchanges.len() >= CAP {
            state.exchanges.pop_front();
        }
        state.exchanges.push_back(json!({"request": request, "response": answer}));
    }
    Response::from_parts(rparts, Body::from(rbytes))
}

/// `GET /_sandbox/exchanges`.
pub(crate) async fn list(State(app): State<Shared>) -> Response {
    let state = app.lock();
    if !app.config.record_exchanges {
        return json_response(
            StatusCode::CONFLICT,
            json!({"message": "exchange recording is off (SANDBOX_RECORD_EXCHANGES=true)"}),
        );
    }
    json_response(StatusCode::OK, Value::from_iter(state.exchanges.iter().cloned()))
}
