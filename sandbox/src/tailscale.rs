//! Tailscale API v2 (`/tailscale/api/v2`, real base `https://api.tailscale.com/api/v2`).
//!
//! Auth keys (create, list, get, revoke) and devices (list, get, delete). Devices appear
//! when the fake Actions runner "boots" a VM that joins the tailnet, or through
//! `POST /_sandbox/tailscale/devices`. Errors use Tailscale's flat `{"message": ...}` shape.
//! Only the configured `TAILSCALE_API_KEY` is accepted (as Bearer, or as the user name of Basic
//! auth); anything else is 401 `API token invalid`.
//! The secret `key` value is only ever returned by the create call, as in production.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::state::{Shared, json_response, key_credential, parse_body, random_alnum, random_hex, zulu};

/// Longest key lifetime the real API accepts: 90 days.
const MAX_EXPIRY_SECONDS: i64 = 90 * 24 * 3600;

#[derive(Default)]
pub(crate) struct TailscaleState {
    keys: Vec<Key>,
    devices: Vec<Device>,
    /// Tailnet named by the first key-creating request; the runner's devices join it.
    pub(crate) first_tailnet: Option<String>,
    counter: u64,
}

struct Key {
    id: String,
    secret: String,
    tailnet: String,
    created: DateTime<Utc>,
    expiry_seconds: i64,
    description: String,
    capabilities: Value,
    tags: Vec<String>,
}

struct Device {
    id: String,
    node_id: String,
    hostname: String,
    tailnet: String,
    tags: Vec<String>,
    n: u64,
    created: DateTime<Utc>,
    machine_key: String,
    node_key: String,
}

pub(crate) fn router(app: Shared) -> Router<Shared> {
    Router::new()
        .route("/api/v2/tailnet/{tailnet}/keys", post(create_key).get(list_keys))
        .route("/api/v2/tailnet/{tailnet}/keys/{id}", get(get_key).delete(delete_key))
        .route("/api/v2/tailnet/{tailnet}/devices", get(list_devices))
        .route("/api/v2/device/{id}", get(get_device).delete(delete_device))
        .fallback(|| async { message(StatusCode::NOT_FOUND, "not found") })
        .layer(from_fn_with_state(app, auth))
}

fn message(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({"message": message}))
}

/// The configured API key, as Bearer or as Basic with the key as user name (both are documented
/// by Tailscale); anything else is 401 `API token invalid`.
async fn auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    match key_credential(req.headers()) {
        Some(key) if key == app.config.tailscale_api_key => next.run(req).await,
        _ => message(StatusCode::UNAUTHORIZED, "API token invalid"),
    }
}

/// Tailnets match when equal or when either is `-` (the token's default tailnet).
fn same_tailnet(a: &str, b: &str) -> bool {
    a == b || a == "-" || b == "-"
}

impl Key {
    fn to_json(&self, with_secret: bool) -> Value {
        let mut key = json!({
            "id": self.id, "keyType": "auth", "description": self.description,
            "created": zulu(self.created),
            "expires": zulu(self.created + Duration::seconds(self.expiry_seconds)),
            "expirySeconds": self.expiry_seconds, "invalid": false,
            "capabilities": self.capabilities, "tags": self.tags,
        });
        if with_secret {
            key["key"] = json!(self.secret);
        }
        key
    }
}

impl Device {
    fn to_json(&self) -> Value {
        let n = self.n;
        json!({
            "addresses": [format!("100.{}.{}.{}", 64 + ((n >> 16) & 63), (n >> 8) & 255, n & 255),
                          format!("fd7a:115c:a1e0::{n:x}")],
            "id": self.id, "nodeId": self.node_id, "user": "tagged-devices",
            "name": format!("{}.tailnet.ts.net", self.hostname), "hostname": self.hostname,
            "clientVersion": "1.80.3-t2b4c1a5d4-g1c1e5f3f2", "updateAvailable": false, "os": "linux",
            "created": zulu(self.created), "lastSeen": zulu(Utc::now()),
            "keyExpiryDisabled": true, "expires": "0001-01-01T00:00:00Z", "authorized": true,
            "isExternal": false, "machineKey": self.machine_key, "nodeKey": self.node_key,
            "blocksIncomingConnections": false,
            "tags": self.tags, "tailnetLockKey": "", "tailnetLockError": "",
        })
    }
}

impl TailscaleState {
    /// Registers a device as if a node had joined `tailnet` with an auth key.
    pub(crate) fn add_device(&mut self, hostname: &str, tags: Vec<String>, tailnet: &str) -> Value {
        self.counter += 1;
        let n = self.counter;
        let device = Device {
            id: format!("{}", 7_100_000_000_000_000 + n * 7919),
            node_id: format!("n{}CNTRL", random_alnum(10)),
            hostname: hostname.to_owned(),
            tailnet: tailnet.to_owned(),
            tags,
            n,
            created: Utc::now(),
            machine_key: format!("mkey:{}", random_hex(64)),
            node_key: format!("nodekey:{}", random_hex(64)),
        };
        let json = device.to_json();
        self.devices.push(device);
        json
    }

    pub(crate) fn dump(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                json!({"id": k.id, "tailnet": k.tailnet, "description": k.description, "tags": k.tags,
                    "created": zulu(k.created), "expires": zulu(k.created + Duration::seconds(k.expiry_seconds))})
            })
            .collect();
        let devices: Vec<Value> = self.devices.iter().map(Device::to_json).collect();
        json!({"keys": keys, "devices": devices})
    }
}

/// Validates a create-key body; returns (capabilities, tags, expiry, description).
fn validate_key(body: &Value) -> Result<(Value, Vec<String>, i64, String), String> {
    let create = body
        .pointer("/capabilities/devices/create")
        .filter(|c| c.is_object())
        .ok_or("capabilities.devices.create is required")?;
    for flag in ["reusable", "ephemeral", "preauthorized"] {
        if create.get(flag).is_some_and(|v| !v.is_boolean()) {
            return Err(format!("capabilities.devices.create.{flag} must be a boolean"));
        }
    }
    let tags: Vec<String> = match create.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tags)) => tags
            .iter()
            .map(|t| t.as_str().map(str::to_owned).ok_or("tags must be strings"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("tags must be an array of strings".to_owned()),
    };
    if let Some(bad) = tags.iter().find(|t| !t.starts_with("tag:") || t.len() <= 4) {
        return Err(format!("tags: invalid tag {bad:?}: tags must start with 'tag:'"));
    }
    let expiry = match body.get("expirySeconds") {
        None | Some(Value::Null) => MAX_EXPIRY_SECONDS,
        Some(v) => match v.as_i64() {
            Some(0) => MAX_EXPIRY_SECONDS,
            Some(s) if (1..=MAX_EXPIRY_SECONDS).contains(&s) => s,
            _ => {
                return Err(format!("expirySeconds must be between 1 and {MAX_EXPIRY_SECONDS}"));
            }
        },
    };
    let description = body.get("description").and_then(Value::as_str).unwrap_or("");
    if description.chars().count() > 50 {
        return Err("description must be at most 50 characters".to_owned());
    }
    let capabilities = json!({"devices": {"create": {
        "reusable": create.get("reusable").and_then(Value::as_bool).unwrap_or(false),
        "ephemeral": create.get("ephemeral").and_then(Value::as_bool).unwrap_or(false),
        "preauthorized": create.get("preauthorized").and_then(Value::as_bool).unwrap_or(false),
        "tags": tags,
    }}});
    Ok((capabilities, tags, expiry, description.to_owned()))
}

async fn create_key(State(app): State<Shared>, Path(tailnet): Path<String>, body: Bytes) -> Response {
    let validated = parse_body(&body).and_then(|body| validate_key(&body));
    let (capabilities, tags, expiry_seconds, description) = match validated {
        Ok(v) => v,
        Err(msg) => return message(StatusCode::BAD_REQUEST, &msg),
    };
    let id = format!("k{}CNTRL", random_alnum(11));
    let key = Key {
        secret: format!("tskey-auth-{id}-{}", random_alnum(33)),
        id,
        tailnet: tailnet.clone(),
        created: Utc::now(),
        expiry_seconds,
        description,
        capabilities,
        tags,
    };
    let body = key.to_json(true);
    let mut state = app.lock();
    state.tailscale.first_tailnet.get_or_insert(tailnet);
    state.tailscale.keys.push(key);
    json_response(StatusCode::OK, body)
}

async fn list_keys(State(app): State<Shared>, Path(tailnet): Path<String>) -> Response {
    let state = app.lock();
    let keys: Vec<Value> = state
        .tailscale
        .keys
        .iter()
        .filter(|k| same_tailnet(&k.tailnet, &tailnet))
        .map(|k| k.to_json(false))
        .collect();
    json_response(StatusCode::OK, json!({"keys": keys}))
}

async fn get_key(State(app): State<Shared>, Path((tailnet, id)): Path<(String, String)>) -> Response {
    let state = app.lock();
    match state.tailscale.keys.iter().find(|k| k.id == id && same_tailnet(&k.tailnet, &tailnet)) {
        Some(key) => json_response(StatusCode::OK, key.to_json(false)),
        None => message(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn delete_key(State(app): State<Shared>, Path((tailnet, id)): Path<(String, String)>) -> Response {
    let mut state = app.lock();
    let keys = &mut state.tailscale.keys;
    match keys.iter().position(|k| k.id == id && same_tailnet(&k.tailnet, &tailnet)) {
        Some(i) => {
            keys.remove(i);
            StatusCode::OK.into_response()
        }
        None => message(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn list_devices(State(app): State<Shared>, Path(tailnet): Path<String>) -> Response {
    let state = app.lock();
    let devices: Vec<Value> = state
        .tailscale
        .devices
        .iter()
        .filter(|d| same_tailnet(&d.tailnet, &tailnet))
        .map(Device::to_json)
        .collect();
    json_response(StatusCode::OK, json!({"devices": devices}))
}

async fn get_device(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let state = app.lock();
    match state.tailscale.devices.iter().find(|d| d.id == id || d.node_id == id) {
        Some(device) => json_response(StatusCode::OK, device.to_json()),
        None => message(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn delete_device(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let mut state = app.lock();
    let devices = &mut state.tailscale.devices;
    match devices.iter().position(|d| d.id == id || d.node_id == id) {
        Some(i) => {
            devices.remove(i);
            StatusCode::OK.into_response()
        }
        None => message(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `POST /_sandbox/tailscale/devices` `{"hostname", "tags"?, "tailnet"?}`: a node joins.
pub(crate) async fn control_add_device(State(app): State<Shared>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(msg) => return message(StatusCode::BAD_REQUEST, &msg),
    };
    let Some(hostname) = body.get("hostname").and_then(Value::as_str).filter(|h| !h.is_empty()) else {
        return message(StatusCode::BAD_REQUEST, "hostname is required");
    };
    let tags: Vec<String> = body
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let mut state = app.lock();
    let ts = &mut state.tailscale;
    let tailnet = body
        .get("tailnet")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| ts.first_tailnet.clone())
        .unwrap_or_else(|| "-".to_owned());
    let device = ts.add_device(hostname, tags, &tailnet);
    json_response(StatusCode::CREATED, device)
}
