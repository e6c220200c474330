//! Hetzner Cloud API (`/hetzner/v1`, real base `https://api.hetzner.cloud/v1`).
//!
//! Servers and their actions, with the real response envelopes, error objects
//! (`{"error":{"code","message","details"}}`), pagination `meta` and `RateLimit-*` headers.
//! Actions are not driven by timers: each one records when it started and when it will be
//! done, and every request first "settles" finished actions (applying their effect on the
//! server's status), so polling clients see `running` → `success` exactly as in production.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use crate::state::{Shared, credential, json_response, parse_body, rfc3339};

const RATE_LIMIT: f64 = 3600.0;

pub(crate) struct HetznerState {
    servers: BTreeMap<u64, Server>,
    actions: BTreeMap<u64, Action>,
    next_id: u64,
    tokens: f64,
    refilled_at: DateTime<Utc>,
    /// Lowest budget left seen so far (how close clients came to the limit).
    min_remaining: f64,
    /// Requests refused because the budget was spent (a well-behaved client causes none).
    exceeded: u64,
    /// Servers (by name) whose operating system ignores an ACPI shutdown request, as one without
    /// an ACPI daemon does: Hetzner's `shutdown` action still succeeds, the server keeps running.
    acpi_ignored: std::collections::BTreeSet<String>,
}

impl Default for HetznerState {
    fn default() -> Self {
        HetznerState {
            servers: BTreeMap::new(),
            actions: BTreeMap::new(),
            next_id: 0,
            tokens: RATE_LIMIT,
            refilled_at: Utc::now(),
            min_remaining: RATE_LIMIT,
            exceeded: 0,
            acpi_ignored: Default::default(),
        }
    }
}

struct Server {
    id: u64,
    name: String,
    status: &'static str,
    created: DateTime<Utc>,
    labels: Map<String, Value>,
    server_type: &'static ServerType,
    image: String,
    location: &'static Location,
}

struct Action {
    id: u64,
    command: &'static str,
    server_id: u64,
    started: DateTime<Utc>,
    finishes: DateTime<Utc>,
    /// Server status once the action succeeds.
    effect: Option<&'static str>,
    settled: bool,
}

struct Location {
    id: u64,
    name: &'static str,
    description: &'static str,
    country: &'static str,
    city: &'static str,
    latitude: f64,
    longitude: f64,
    network_zone: &'static str,
    datacenter: &'static str,
}

#[rustfmt::skip]
const LOCATIONS: &[Location] = &[
    Location { id: 1, name: "fsn1", description: "Falkenstein DC Park 1", country: "DE", city: "Falkenstein", latitude: 50.47612, longitude: 12.370071, network_zone: "eu-central", datacenter: "fsn1-dc14" },
    Location { id: 2, name: "nbg1", description: "Nuremberg DC Park 1", country: "DE", city: "Nuremberg", latitude: 49.452102, longitude: 11.076665, network_zone: "eu-central", datacenter: "nbg1-dc3" },
    Location { id: 3, name: "hel1", description: "Helsinki DC Park 1", country: "FI", city: "Helsinki", latitude: 60.169855, longitude: 24.938379, network_zone: "eu-central", datacenter: "hel1-dc2" },
    Location { id: 4, name: "ash", description: "Ashburn, VA", country: "US", city: "Ashburn, VA", latitude: 39.045821, longitude: -77.487073, network_zone: "us-east", datacenter: "ash-dc1" },
    Location { id: 5, name: "hil", description: "Hillsboro, OR", country: "US", city: "Hillsboro, OR", latitude: 45.54222, longitude: -122.95194, network_zone: "us-west", datacenter: "hil-dc1" },
    Location { id: 6, name: "sin", description: "Singapore", country: "SG", city: "Singapore", latitude: 1.283333, longitude: 103.833333, network_zone: "ap-southeast", datacenter: "sin-dc1" },
];

/// (name, cores, memory GB, disk GB, cpu_type, architecture)
type ServerType = (&'static str, u32, u32, u32, &'static str, &'static str);

#[rustfmt::skip]
const SERVER_TYPES: &[ServerType] = &[
    ("cx22", 2, 4, 40, "shared", "x86"), ("cx32", 4, 8, 80, "shared", "x86"),
    ("cx42", 8, 16, 160, "shared", "x86"), ("cx52", 16, 32, 320, "shared", "x86"),
    ("cx23", 2, 4, 40, "shared", "x86"), ("cx33", 4, 8, 80, "shared", "x86"),
    ("cx43", 8, 16, 160, "shared", "x86"), ("cx53", 16, 32, 320, "shared", "x86"),
    ("cpx11", 2, 2, 40, "shared", "x86"), ("cpx21", 3, 4, 80, "shared", "x86"),
    ("cpx31", 4, 8, 160, "shared", "x86"), ("cpx41", 8, 16, 240, "shared", "x86"),
    ("cpx51", 16, 32, 360, "shared", "x86"), ("cpx12", 1, 2, 40, "shared", "x86"),
    ("cpx22", 2, 4, 80, "shared", "x86"), ("cpx32", 4, 8, 160, "shared", "x86"),
    ("cpx42", 8, 16, 320, "shared", "x86"), ("cpx52", 12, 24, 480, "shared", "x86"),
    ("cpx62", 16, 32, 640, "shared", "x86"), ("cax11", 2, 4, 40, "shared", "arm"),
    ("cax21", 4, 8, 80, "shared", "arm"), ("cax31", 8, 16, 160, "shared", "arm"),
    ("cax41", 16, 32, 320, "shared", "arm"), ("ccx13", 2, 8, 80, "dedicated", "x86"),
    ("ccx23", 4, 16, 160, "dedicated", "x86"), ("ccx33", 8, 32, 240, "dedicated", "x86"),
    ("ccx43", 16, 64, 360, "dedicated", "x86"), ("ccx53", 32, 128, 600, "dedicated", "x86"),
];

pub(crate) fn router(app: Shared) -> Router<Shared> {
    Router::new()
        .route("/servers", get(list_servers).post(create_server))
        .route("/servers/{id}", get(get_server).delete(delete_server))
        .route("/servers/{id}/actions/{action}", post(server_action).get(get_server_action))
        .route("/actions/{id}", get(get_action))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "not found") })
        .layer(from_fn_with_state(app, guard))
}

/// `POST /_sandbox/hetzner/acpi` `{"server": name, "ignored": bool}`: make a server's operating
/// system ignore (or again honour) an ACPI shutdown request.
pub(crate) async fn control_acpi(State(app): State<Shared>, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_input", "body must be JSON");
    };
    let (Some(name), Some(ignored)) = (v["server"].as_str(), v["ignored"].as_bool()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "expected {\"server\": name, \"ignored\": bool}",
        );
    };
    let mut state = app.lock();
    let set = &mut state.hetzner.acpi_ignored;
    if ignored {
        set.insert(name.to_owned());
    } else {
        set.remove(name);
    }
    json_response(StatusCode::OK, json!({"server": name, "acpi_ignored": ignored}))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": {"code": code, "message": message, "details": {}}}))
}

/// 422 `invalid_input` naming the offending fields, as Hetzner's validation errors do.
fn invalid_input(fields: &[&str], message: &str) -> Response {
    let details: Vec<Value> = fields.iter().map(|f| json!({"name": f, "messages": [message]})).collect();
    let names: Vec<String> = fields.iter().map(|f| format!("'{f}'")).collect();
    let message =
        format!("invalid input in field{} {}", if fields.len() > 1 { "s" } else { "" }, names.join(", "));
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"error": {"code": "invalid_input", "message": message, "details": {"fields": details}}}),
    )
}

fn not_found(kind: &str, id: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", &format!("{kind} with ID '{id}' not found"))
}

/// Rate limiting (token bucket: 3600, +1/s) and authentication, with `RateLimit-*` headers
/// on every answer, as the real API does. Refusals are counted (`rate_limit.exceeded` in the
/// inventory), so tests can assert that Slipway stays within the budget.
async fn guard(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let (allowed, remaining, reset) = {
        let mut state = app.lock();
        let h = &mut state.hetzner;
        let now = Utc::now();
        let elapsed = (now - h.refilled_at).num_milliseconds().max(0) as f64 / 1000.0;
        h.tokens = (h.tokens + elapsed).min(RATE_LIMIT);
        h.refilled_at = now;
        let allowed = h.tokens >= 1.0;
        if allowed {
            h.tokens -= 1.0;
            h.min_remaining = h.min_remaining.min(h.tokens);
        } else {
            h.exceeded += 1;
        }
        let reset = now.timestamp() + (RATE_LIMIT - h.tokens).ceil() as i64;
        (allowed, h.tokens.floor() as u64, reset)
    };
    let mut response = if !allowed {
        error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", "limit of 3600 requests per hour reached")
    } else if credential(req.headers()) != Some(app.config.hetzner_token.as_str()) {
        error(StatusCode::UNAUTHORIZED, "unauthorized", "unable to authenticate")
    } else {
        next.run(req).await
    };
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(RATE_LIMIT as u64));
    headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
    response
}

impl HetznerState {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id + 40_000_000
    }

    /// Marks finished actions as settled and applies their effect on server status.
    fn settle(&mut self, now: DateTime<Utc>) {
        for action in self.actions.values_mut().filter(|a| !a.settled && a.finishes <= now) {
            action.settled = true;
            if let (Some(status), Some(server)) = (action.effect, self.servers.get_mut(&action.server_id)) {
                server.status = status;
            }
        }
    }

    fn start_action(
        &mut self,
        command: &'static str,
        server_id: u64,
        effect: Option<&'static str>,
        ms: u64,
    ) -> u64 {
        let id = self.next_id();
        let started = Utc::now();
        let finishes = started + Duration::milliseconds(ms as i64);
        self.actions.insert(id, Action { id, command, server_id, started, finishes, effect, settled: false });
        id
    }

    fn action_json(&self, id: u64, now: DateTime<Utc>) -> Value {
        let a = &self.actions[&id];
        let done = a.finishes <= now;
        let total = (a.finishes - a.started).num_milliseconds().max(1);
        let elapsed = (now - a.started).num_milliseconds().max(0);
        let progress = if done { 100 } else { (elapsed * 100 / total).min(99) };
        json!({
            "id": a.id, "command": a.command, "status": if done { "success" } else { "running" },
            "progress": progress, "started": rfc3339(a.started),
            "finished": done.then(|| rfc3339(a.finishes)),
            "resources": [{"id": a.server_id, "type": "server"}], "error": null,
        })
    }

    /// Settled state as JSON for `/_sandbox/state`.
    pub(crate) fn dump(&mut self) -> Value {
        let now = Utc::now();
        self.settle(now);
        let servers: Vec<Value> = self.servers.values().map(server_json).collect();
        let actions: Vec<Value> = self.actions.keys().map(|id| self.action_json(*id, now)).collect();
        let rate_limit = json!({"limit": RATE_LIMIT as u64, "remaining": self.tokens.floor() as u64,
            "min_remaining": self.min_remaining.floor() as u64, "exceeded": self.exceeded});
        json!({"servers": servers, "actions": actions, "rate_limit": rate_limit})
    }
}

fn server_json(s: &Server) -> Value {
    let (st_name, cores, memory, disk, cpu_type, arch) = *s.server_type;
    let loc = s.location;
    let n = s.id - 40_000_000;
    let ipv4 = format!("198.{}.{}.{}", 18 + ((n >> 16) & 1), (n >> 8) & 255, n & 255);
    let (os_flavor, os_version) = s.image.split_once('-').unwrap_or((&s.image, "unknown"));
    json!({
        "id": s.id, "name": s.name, "status": s.status, "created": rfc3339(s.created),
        "public_net": {
            "ipv4": {"id": s.id + 1_000_000, "ip": ipv4, "blocked": false,
                     "dns_ptr": format!("static.{}.clients.your-server.de", ipv4.split('.').rev().collect::<Vec<_>>().join("."))},
            "ipv6": {"id": s.id + 2_000_000, "ip": format!("2001:db8:{n:x}::/64"), "blocked": false, "dns_ptr": []},
            "floating_ips": [], "firewalls": [],
        },
        "private_net": [],
        "server_type": {"id": SERVER_TYPES.iter().position(|t| t.0 == st_name).unwrap_or(0) + 1, "name": st_name,
            "description": st_name.to_uppercase(), "cores": cores, "memory": memory, "disk": disk,
            "deprecated": false, "prices": [], "storage_type": "local", "cpu_type": cpu_type, "architecture": arch,
            "locations": LOCATIONS.iter().map(|l| json!({"id": l.id, "name": l.name, "deprecation": null,
                "recommended": true, "available": true})).collect::<Vec<_>>()},
        "location": {"id": loc.id, "name": loc.name, "description": loc.description, "country": loc.country,
            "city": loc.city, "latitude": loc.latitude, "longitude": loc.longitude, "network_zone": loc.network_zone},
        "datacenter": {"id": loc.id, "name": loc.datacenter, "description": format!("{} virtual DC", loc.city),
            "location": {"id": loc.id, "name": loc.name, "description": loc.description, "country": loc.country,
                "city": loc.city, "latitude": loc.latitude, "longitude": loc.longitude, "network_zone": loc.network_zone},
            "server_types": {"supported": [], "available": [], "available_for_migration": []}},
        "image": {"id": 100_000 + s.image.len() as u64, "type": "system", "status": "available", "name": s.image,
            "description": s.image, "os_flavor": os_flavor, "os_version": os_version, "rapid_deploy": true,
            "architecture": arch, "deprecated": null, "deleted": null, "labels": {}, "protection": {"delete": false},
            "image_size": null, "disk_size": 5, "created": "2024-04-25T00:00:00+00:00", "created_from": null,
            "bound_to": null},
        "iso": null, "rescue_enabled": false, "locked": false, "backup_window": null,
        "outgoing_traffic": 0, "ingoing_traffic": 0, "included_traffic": 21_990_232_555_520_u64,
        "protection": {"delete": false, "rebuild": false}, "labels": s.labels,
        "volumes": [], "load_balancers": [], "primary_disk_size": disk, "placement_group": null,
    })
}

/// RFC 1123 hostname of at most 63 characters.
fn valid_hostname(name: &str) -> bool {
    name.len() <= 63
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn string_field<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    body.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

async fn create_server(State(app): State<Shared>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(body) if body.is_object() => body,
        Ok(_) => {
            return error(StatusCode::BAD_REQUEST, "json_error", "request body must be a JSON object");
        }
        Err(message) => return error(StatusCode::BAD_REQUEST, "json_error", &message),
    };
    let image = match body.get("image") {
        Some(Value::Number(n)) => Some(format!("image-{n}")),
        other => other.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned),
    };
    let (name, server_type) = (string_field(&body, "name"), string_field(&body, "server_type"));
    let (Some(name), Some(server_type), Some(image)) = (name, server_type, image.clone()) else {
        let fields =
            [("name", name.is_none()), ("server_type", server_type.is_none()), ("image", image.is_none())];
        let missing: Vec<&str> = fields.iter().filter(|(_, m)| *m).map(|(f, _)| *f).collect();
        return invalid_input(&missing, "Missing data for required field.");
    };
    if !valid_hostname(name) {
        return invalid_input(&["name"], "Not a valid hostname (RFC 1123, at most 63 characters).");
    }
    let Some(server_type) = SERVER_TYPES.iter().find(|t| t.0 == server_type) else {
        return invalid_input(&["server_type"], "server type not found");
    };
    let location = match (string_field(&body, "datacenter"), string_field(&body, "location")) {
        (Some(dc), _) => LOCATIONS.iter().find(|l| l.datacenter == dc).ok_or("datacenter"),
        (None, Some(loc)) => LOCATIONS.iter().find(|l| l.name == loc).ok_or("location"),
        (None, None) => Ok(&LOCATIONS[0]),
    };
    let location = match location {
        Ok(location) => location,
        Err(field) => return invalid_input(&[field], &format!("{field} not found")),
    };
    let labels = match body.get("labels") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) if map.values().all(Value::is_string) => map.clone(),
        Some(_) => return invalid_input(&["labels"], "labels must be an object of string values"),
    };
    let start = body.get("start_after_create").and_then(Value::as_bool).unwrap_or(true);

    let ms = app.config.hetzner_action_ms;
    let mut state = app.lock();
    let h = &mut state.hetzner;
    let now = Utc::now();
    h.settle(now);
    if h.servers.values().any(|s| s.name == name) {
        return json_response(
            StatusCode::CONFLICT,
            json!({"error": {"code": "uniqueness_error", "message": "server name is already used",
                "details": {"fields": [{"name": "name"}]}}}),
        );
    }
    let id = h.next_id();
    let server = Server {
        id,
        name: name.to_owned(),
        status: "initializing",
        created: now,
        labels,
        server_type,
        image,
        location,
    };
    h.servers.insert(id, server);
    let create = h.start_action("create_server", id, Some(if start { "running" } else { "off" }), ms);
    let next: Vec<Value> = start
        .then(|| h.start_action("start_server", id, None, ms))
        .map(|a| h.action_json(a, now))
        .into_iter()
        .collect();
    tracing::info!(server = id, name, "hetzner: server created");
    json_response(
        StatusCode::CREATED,
        json!({"server": server_json(&h.servers[&id]), "action": h.action_json(create, now),
            "next_actions": next, "root_password": null}),
    )
}

async fn list_servers(State(app): State<Shared>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let number = |key: &str, default: u64| match param(key) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or(key.to_owned()),
    };
    let (page, per_page) = match (number("page", 1), number("per_page", 25)) {
        (Ok(page), Ok(per_page)) => (page, per_page.min(50)),
        (Err(field), _) | (_, Err(field)) => {
            return invalid_input(&[&field], "must be a positive integer");
        }
    };
    let statuses: Vec<&str> = query.iter().filter(|(k, _)| k == "status").map(|(_, v)| v.as_str()).collect();
    let selector = param("label_selector").unwrap_or("");

    let mut state = app.lock();
    let h = &mut state.hetzner;
    h.settle(Utc::now());
    let matching: Vec<Value> = h
        .servers
        .values()
        .filter(|s| param("name").is_none_or(|n| s.name == n))
        .filter(|s| statuses.is_empty() || statuses.contains(&s.status))
        .filter(|s| label_selector_matches(selector, &s.labels))
        .map(server_json)
        .collect();
    let total = matching.len() as u64;
    let last_page = total.div_ceil(per_page).max(1);
    let servers: Vec<Value> =
        matching.into_iter().skip(((page - 1) * per_page) as usize).take(per_page as usize).collect();
    json_response(
        StatusCode::OK,
        json!({"servers": servers, "meta": {"pagination": {
            "page": page, "per_page": per_page,
            "previous_page": (page > 1).then(|| page - 1),
            "next_page": (page < last_page).then(|| page + 1),
            "last_page": last_page, "total_entries": total,
        }}}),
    )
}

/// Hetzner label selectors: comma-separated `k=v`, `k==v`, `k!=v`, `k` (present), `!k`.
fn label_selector_matches(selector: &str, labels: &Map<String, Value>) -> bool {
    selector.split(',').map(str::trim).filter(|t| !t.is_empty()).all(|term| {
        let value = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
        if let Some((k, v)) = term.split_once("!=") {
            value(k) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            value(k) == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            value(k).is_none()
        } else {
            value(term).is_some()
        }
    })
}

async fn get_server(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let mut state = app.lock();
    let h = &mut state.hetzner;
    h.settle(Utc::now());
    match id.parse::<u64>().ok().and_then(|n| h.servers.get(&n)) {
        Some(server) => json_response(StatusCode::OK, json!({"server": server_json(server)})),
        None => not_found("server", &id),
    }
}

async fn delete_server(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let ms = app.config.hetzner_action_ms;
    let mut state = app.lock();
    let h = &mut state.hetzner;
    let now = Utc::now();
    h.settle(now);
    let Some(server) = id.parse::<u64>().ok().and_then(|n| h.servers.remove(&n)) else {
        return not_found("server", &id);
    };
    let action = h.start_action("delete_server", server.id, None, ms);
    tracing::info!(server = server.id, "hetzner: server deleted");
    json_response(StatusCode::OK, json!({"action": h.action_json(action, now)}))
}

async fn server_action(State(app): State<Shared>, Path((id, action)): Path<(String, String)>) -> Response {
    let (command, during, after) = match action.as_str() {
        "poweron" => ("start_server", "starting", "running"),
        "poweroff" => ("stop_server", "stopping", "off"),
        "shutdown" => ("shutdown_server", "stopping", "off"),
        "reboot" => ("reboot_server", "running", "running"),
        "reset" => ("reset_server", "running", "running"),
        _ => return error(StatusCode::NOT_FOUND, "not_found", "not found"),
    };
    let ms = app.config.hetzner_action_ms;
    let mut state = app.lock();
    let h = &mut state.hetzner;
    let now = Utc::now();
    h.settle(now);
    let Some(server) = id.parse::<u64>().ok().and_then(|n| h.servers.get_mut(&n)) else {
        return not_found("server", &id);
    };
    let ignored = action == "shutdown" && h.acpi_ignored.contains(&server.name);
    let (during, after) = if ignored { (server.status, server.status) } else { (during, after) };
    server.status = during;
    let server_id = server.id;
    let action_id = h.start_action(command, server_id, Some(after), ms);
    json_response(StatusCode::CREATED, json!({"action": h.action_json(action_id, now)}))
}

async fn get_server_action(
    State(app): State<Shared>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let mut state = app.lock();
    let h = &mut state.hetzner;
    h.settle(Utc::now());
    let Some(server_id) = id.parse::<u64>().ok().filter(|n| h.servers.contains_key(n)) else {
        return not_found("server", &id);
    };
    match action.parse::<u64>().ok().filter(|a| h.actions.get(a).is_some_and(|a| a.server_id == server_id)) {
        Some(action_id) => {
            json_response(StatusCode::OK, json!({"action": h.action_json(action_id, Utc::now())}))
        }
        None => not_found("action", &action),
    }
}

async fn get_action(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let mut state = app.lock();
    let h = &mut state.hetzner;
    let now = Utc::now();
    h.settle(now);
    match id.parse::<u64>().ok().filter(|a| h.actions.contains_key(a)) {
        Some(action_id) => json_response(StatusCode::OK, json!({"action": h.action_json(action_id, now)})),
        None => not_found("action", &id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_and_label_selectors() {
        assert!(valid_hostname("slipway-agent-1"));
        assert!(!valid_hostname("-bad"));
        assert!(!valid_hostname("under_score"));
        assert!(!valid_hostname(&"a".repeat(64)));
        let labels = json!({"app": "slipway", "agent": "a1"}).as_object().unwrap().clone();
        assert!(label_selector_matches("app=slipway,agent=a1", &labels));
        assert!(label_selector_matches("app==slipway, !missing, agent", &labels));
        assert!(!label_selector_matches("app=slipway,agent=a2", &labels));
        assert!(!label_selector_matches("agent!=a1", &labels));
    }
}
