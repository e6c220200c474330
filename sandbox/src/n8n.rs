//! n8n public API (`/n8n`, real base `https://<instance>`, paths `/api/v1/...`).
//!
//! The product installs workflows in a customer's n8n and activates them, so workflows are
//! emulated: list (with `name`, `active`, `limit` and an opaque `cursor`), create, get,
//! activate, deactivate and delete. As in n8n, the `X-N8N-API-KEY` header is required (and
//! must be the configured `N8N_API_KEY`: any other is 401 `unauthorized`), bodies
//! are validated against the published schema with the validator's wording
//! (`request/body must have required property 'settings'`), errors are `{"message": ...}`,
//! and only a workflow with an enabled trigger node (a webhook, or a `*Trigger` node other
//! than the manual one) can be activated. Names are not unique: each create makes a workflow.
//!
//! Workflows are stored as given; the sandbox does not execute them. The `parameters.path`
//! of their webhook nodes is shown in the inventory (`webhookPaths`), so tests can see which
//! webhook URLs the product registered, and two active workflows cannot share one.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::state::{Shared, json_response, parse_body, random_alnum};

const WEBHOOK_NODE: &str = "n8n-nodes-base.webhook";
const NO_TRIGGER: &str =
    "Workflow has no node to start the workflow - at least one trigger, poller or webhook node is required";
const REQUIRED: &[&str] = &["name", "nodes", "connections", "settings"];
const WRITABLE: &[&str] = &["name", "nodes", "connections", "settings", "staticData"];
const READ_ONLY: &[&str] = &["id", "active", "createdAt", "updatedAt", "tags", "isArchived", "versionId"];
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 250;

#[derive(Default)]
pub(crate) struct N8nState {
    workflows: Vec<Workflow>,
}

struct Workflow {
    id: String,
    name: String,
    active: bool,
    nodes: Vec<Value>,
    connections: Value,
    settings: Value,
    static_data: Value,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    version_id: String,
}

/// The project every sandbox workflow belongs to (n8n's personal project of the API key's user).
const PROJECT_ID: &str = "SlipwayProject01";

impl Workflow {
    fn to_json(&self) -> Value {
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let (created, updated) = (at(self.created), at(self.updated));
        // The published version, when active (n8n 2.x publishes a workflow by activating it).
        let active_version = self.active.then(|| {
            json!({"versionId": self.version_id, "workflowId": self.id, "nodes": self.nodes,
                "connections": self.connections, "nodeGroups": [], "authors": "Slipway", "name": self.name,
                "description": null, "autosaved": false, "createdAt": updated, "updatedAt": updated,
                "workflowPublishHistory": []})
        });
        let mut workflow = json!({
            "id": self.id, "name": self.name, "description": null, "active": self.active, "isArchived": false,
            "nodes": self.nodes, "connections": self.connections, "settings": self.settings,
            "staticData": self.static_data, "pinData": {}, "meta": null, "tags": [],
            "versionId": self.version_id, "triggerCount": if self.active { self.triggers().count() } else { 0 },
            "createdAt": created, "updatedAt": updated,
        });
        let more = json!({
            "activeVersionId": self.active.then(|| self.version_id.clone()), "activeVersion": active_version,
            "versionCounter": 1, "sourceWorkflowId": null, "nodeGroups": [], "parentFolder": null,
            "shared": [{"role": "workflow:owner", "workflowId": self.id, "projectId": PROJECT_ID,
                "project": {"id": PROJECT_ID, "name": "Slipway", "type": "personal", "icon": null,
                    "description": null, "customTelemetryTags": [], "creatorId": null,
                    "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z"},
                "createdAt": created, "updatedAt": updated}],
        });
        if let (Some(w), Value::Object(more)) = (workflow.as_object_mut(), more) {
            w.extend(more);
        }
        workflow
    }

    fn enabled_nodes(&self) -> impl Iterator<Item = &Value> {
        self.nodes.iter().filter(|n| n.get("disabled").and_then(Value::as_bool) != Some(true))
    }

    fn triggers(&self) -> impl Iterator<Item = &Value> {
        self.enabled_nodes().filter(|n| {
            let kind = n.get("type").and_then(Value::as_str).unwrap_or_default();
            kind == WEBHOOK_NODE || (kind.ends_with("Trigger") && kind != "n8n-nodes-base.manualTrigger")
        })
    }

    fn webhook_paths(&self) -> Vec<String> {
        self.enabled_nodes()
            .filter(|n| n.get("type").and_then(Value::as_str) == Some(WEBHOOK_NODE))
            .filter_map(|n| n.pointer("/parameters/path").and_then(Value::as_str))
            .map(|p| p.trim_matches('/').to_owned())
            .collect()
    }
}

impl N8nState {
    pub(crate) fn dump(&self) -> Value {
        let workflows: Vec<Value> = self
            .workflows
            .iter()
            .map(|w| {
                let mut workflow = w.to_json();
                workflow["webhookPaths"] = json!(w.webhook_paths());
                workflow
            })
            .collect();
        json!({"workflows": workflows})
    }

    fn workflow(&mut self, id: &str) -> Option<&mut Workflow> {
        self.workflows.iter_mut().find(|w| w.id == id)
    }
}

pub(crate) fn router(app: Shared) -> Router<Shared> {
    Router::new()
        .route("/api/v1/workflows", get(list_workflows).post(create_workflow))
        .route("/api/v1/workflows/{id}", get(get_workflow).delete(delete_workflow))
        .route("/api/v1/workflows/{id}/activate", post(activate))
        .route("/api/v1/workflows/{id}/deactivate", post(deactivate))
        .fallback(|| async { message(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|method: Method| async move {
            message(StatusCode::METHOD_NOT_ALLOWED, &format!("{method} method not allowed"))
        })
        .layer(from_fn_with_state(app, auth))
}

fn message(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({"message": message}))
}

fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Not Found")
}

/// `X-N8N-API-KEY` must be there (401 naming the header) and be the configured key (401
/// `unauthorized`, as n8n answers a key it does not know).
async fn auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let key = req.headers().get("x-n8n-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default().trim();
    if key.is_empty() {
        return message(StatusCode::UNAUTHORIZED, "'X-N8N-API-KEY' header required");
    }
    if key != app.config.n8n_api_key {
        return message(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    next.run(req).await
}

/// Cursors are opaque to clients; here they carry the offset of the next page.
fn cursor(offset: usize) -> String {
    hex::encode(format!("offset:{offset}"))
}

fn cursor_offset(cursor: &str) -> Option<usize> {
    let text = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
    text.strip_prefix("offset:")?.parse().ok()
}

async fn list_workflows(State(app): State<Shared>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let active = match param("active") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return message(StatusCode::BAD_REQUEST, "request/query/active must be boolean"),
    };
    let limit = match param("limit").map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return message(StatusCode::BAD_REQUEST, &format!("request/query/limit must be <= {MAX_LIMIT}"));
        }
    };
    let offset = match param("cursor").map(cursor_offset) {
        None => 0,
        Some(Some(offset)) => offset,
        Some(None) => return message(StatusCode::BAD_REQUEST, "An invalid cursor was provided"),
    };
    let state = app.lock();
    let matching: Vec<&Workflow> = state
        .n8n
        .workflows
        .iter()
        .filter(|w| param("name").is_none_or(|n| w.name == n) && active.is_none_or(|a| w.active == a))
        .collect();
    let data: Vec<Value> = matching.iter().skip(offset).take(limit).map(|w| w.to_json()).collect();
    let next = (offset + limit < matching.len()).then(|| cursor(offset + limit));
    json_response(StatusCode::OK, json!({"data": data, "nextCursor": next}))
}

/// Checks a create body the way n8n's OpenAPI validator does.
fn validate(body: &Map<String, Value>) -> Result<(), String> {
    if let Some(missing) = REQUIRED.iter().find(|k| !body.contains_key(**k)) {
        return Err(format!("request/body must have required property '{missing}'"));
    }
    for (field, kind) in
        [("name", "string"), ("nodes", "array"), ("connections", "object"), ("settings", "object")]
    {
        let value = &body[field];
        let ok = match kind {
            "string" => value.is_string(),
            "array" => value.is_array(),
            _ => value.is_object(),
        };
        if !ok {
            return Err(format!("request/body/{field} must be {kind}"));
        }
    }
    if let Some(field) = body.keys().find(|k| READ_ONLY.contains(&k.as_str())) {
        return Err(format!("request/body/{field} is read-only"));
    }
    if body.keys().any(|k| !WRITABLE.contains(&k.as_str())) {
        return Err("request/body must NOT have additional properties".to_owned());
    }
    for (i, node) in body["nodes"].as_array().into_iter().flatten().enumerate() {
        let Some(node) = node.as_object() else {
            return Err(format!("request/body/nodes/{i} must be object"));
        };
        if let Some(missing) = ["name", "type"].iter().find(|k| !node.get(**k).is_some_and(Value::is_string))
        {
            return Err(format!("request/body/nodes/{i} must have required property '{missing}'"));
        }
    }
    Ok(())
}

async fn create_workflow(State(app): State<Shared>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(Value::Object(body)) => body,
        Ok(_) => return message(StatusCode::BAD_REQUEST, "request/body must be object"),
        Err(_) => return message(StatusCode::BAD_REQUEST, "Invalid JSON in request body"),
    };
    if let Err(e) = validate(&body) {
        return message(StatusCode::BAD_REQUEST, &e);
    }
    let now = Utc::now();
    let workflow = Workflow {
        id: random_alnum(16),
        name: body["name"].as_str().unwrap_or_default().to_owned(),
        active: false,
        nodes: body["nodes"].as_array().cloned().unwrap_or_default(),
        connections: body["connections"].clone(),
        settings: body["settings"].clone(),
        static_data: body.get("staticData").cloned().unwrap_or(Value::Null),
        created: now,
        updated: now,
        version_id: uuid::Uuid::new_v4().to_string(),
    };
    tracing::info!(workflow = %workflow.id, name = %workflow.name, "n8n: workflow created");
    let response = workflow.to_json();
    app.lock().n8n.workflows.push(workflow);
    json_response(StatusCode::OK, response)
}

async fn get_workflow(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    match app.lock().n8n.workflow(&id) {
        Some(w) => json_response(StatusCode::OK, w.to_json()),
        None => not_found(),
    }
}

async fn delete_workflow(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let mut state = app.lock();
    let workflows = &mut state.n8n.workflows;
    match workflows.iter().position(|w| w.id == id) {
        Some(i) => json_response(StatusCode::OK, workflows.remove(i).to_json()),
        None => not_found(),
    }
}

async fn activate(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let mut state = app.lock();
    let n8n = &mut state.n8n;
    let Some(workflow) = n8n.workflows.iter().find(|w| w.id == id) else {
        return not_found();
    };
    if workflow.triggers().next().is_none() {
        return message(StatusCode::BAD_REQUEST, NO_TRIGGER);
    }
    let paths = workflow.webhook_paths();
    let taken = n8n.workflows.iter().filter(|w| w.active && w.id != id).flat_map(Workflow::webhook_paths);
    if let Some(path) = taken.into_iter().find(|p| paths.contains(p)) {
        // Guess: n8n refuses the activation; its exact wording differs between versions.
        let text = format!(
            "There is a conflict with one of the webhooks: path '{path}' is used by another active workflow"
        );
        return message(StatusCode::BAD_REQUEST, &text);
    }
    set_active(n8n, &id, true)
}

async fn deactivate(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    set_active(&mut app.lock().n8n, &id, false)
}

fn set_active(n8n: &mut N8nState, id: &str, active: bool) -> Response {
    let Some(workflow) = n8n.workflow(id) else {
        return not_found();
    };
    if workflow.active != active {
        (workflow.active, workflow.updated) = (active, Utc::now());
    }
    json_response(StatusCode::OK, workflow.to_json())
}
