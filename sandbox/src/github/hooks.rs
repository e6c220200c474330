//! GitHub webhook deliveries to the product (`SandboxConfig::github_webhook_url`).
//!
//! Deliveries look like the GitHub App's: `X-GitHub-Event`, `X-GitHub-Delivery` (a GUID that
//! a redelivery reuses), `X-GitHub-Hook-ID`, `X-GitHub-Hook-Installation-Target-Type:
//! integration` with the app id as target, `X-Hub-Signature-256` over the exact body, and a
//! `GitHub-Hookshot/...` user agent. GitHub does not retry failed deliveries by itself, so
//! each is one attempt; tests redeliver by sending again with the same `delivery_id`. The
//! legacy SHA-1 `X-Hub-Signature` is not sent.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use super::{control_error, repo_key};
use crate::github_events::signature;
use crate::state::{Shared, json_response, parse_body, zulu};

/// The id of the app's webhook (`X-GitHub-Hook-ID`).
const HOOK_ID: u64 = 480_012_001;
/// Recorded deliveries kept for the inventory; older ones are dropped first.
const DELIVERIES_CAP: usize = 1000;

#[derive(Default)]
pub(super) struct HooksState {
    deliveries: Vec<Value>,
}

impl HooksState {
    pub(super) fn dump(&self) -> Value {
        Value::from(self.deliveries.clone())
    }
}

/// Posts `payload` as event `event` once and records the attempt. Answers
/// `{"delivery_id", "status"}` with the receiver's status, or `null` and `error` when it
/// could not be reached.
pub(super) async fn deliver(
    app: &Shared,
    event: &str,
    payload: &Value,
    delivery_id: Option<String>,
) -> Value {
    let body = serde_json::to_vec(payload).expect("JSON values always serialize");
    let delivery_id = delivery_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let generation = {
        let mut state = app.lock();
        // Issue and pull request numbers in payloads are taken, as on GitHub.
        let repo = payload["repository"]["full_name"].as_str().and_then(|f| f.split_once('/'));
        let number =
            payload["issue"]["number"].as_u64().or_else(|| payload["pull_request"]["number"].as_u64());
        if let (Some((owner, name)), Some(number)) = (repo, number) {
            state.github.pulls.note_number(&repo_key(owner, name), number);
        }
        state.generation
    };
    let url = &app.config.github_webhook_url;
    let result = app
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "*/*")
        .header("user-agent", "GitHub-Hookshot/5f2e1c3")
        .header("x-github-event", event)
        .header("x-github-delivery", &delivery_id)
        .header("x-github-hook-id", HOOK_ID.to_string())
        .header("x-github-hook-installation-target-type", "integration")
        .header("x-github-hook-installation-target-id", &app.config.github_app_id)
        .header("x-hub-signature-256", signature(&body, &app.config.github_webhook_secret))
        .body(body)
        .send()
        .await;
    let (status, error) = match result {
        Ok(response) => (Some(response.status().as_u16()), None),
        Err(e) => {
            tracing::warn!(%url, error = %e, "github webhook delivery failed");
            (None, Some(e.to_string()))
        }
    };
    tracing::info!(event, %delivery_id, ?status, "github: webhook delivered");
    app.with_current(generation, |s| {
        let deliveries = &mut s.github.hooks.deliveries;
        let redelivery = deliveries.iter().any(|d| d["delivery_id"] == delivery_id.as_str());
        if deliveries.len() >= DELIVERIES_CAP {
            deliveries.remove(0);
        }
        deliveries.push(json!({
            "delivery_id": delivery_id, "event": event, "action": payload.get("action"),
            "installation_id": payload["installation"]["id"],
            "repository": payload["repository"]["full_name"],
            "url": url, "status": status, "error": error, "redelivery": redelivery, "at": zulu(Utc::now()),
        }));
    });
    let mut answer = json!({"delivery_id": delivery_id, "status": status});
    if let Some(error) = error {
        answer["error"] = json!(error);
    }
    answer
}

/// `POST /_sandbox/github/webhooks` `{"event", "payload", "delivery_id"?}`: delivers
/// `payload` like GitHub would (see `github_events` for payloads).
pub(super) async fn control_send(State(app): State<Shared>, body: Bytes) -> Response {
    let body = parse_body(&body).unwrap_or(Value::Null);
    let Some(event) = body.get("event").and_then(Value::as_str).filter(|e| !e.is_empty()) else {
        return control_error(StatusCode::BAD_REQUEST, "event must name a GitHub event, e.g. issues");
    };
    let Some(payload) = body.get("payload").filter(|p| p.is_object()) else {
        return control_error(StatusCode::BAD_REQUEST, "payload must be a JSON object");
    };
    let delivery_id = match body.get("delivery_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(_) => return control_error(StatusCode::BAD_REQUEST, "delivery_id must be a string"),
    };
    let answer = deliver(&app, event, payload, delivery_id).await;
    json_response(StatusCode::OK, answer)
}
