//! GitHub webhook deliveries to the product, and the App's webhook API over them.
//!
//! Deliveries look like the GitHub App's: `X-GitHub-Event`, `X-GitHub-Delivery` (a GUID that
//! a redelivery reuses), `X-GitHub-Hook-ID`, `X-GitHub-Hook-Installation-Target-Type:
//! integration` with the app id as target, `X-Hub-Signature-256` over the exact body, and a
//! `GitHub-Hookshot/...` user agent. GitHub does not retry failed deliveries by itself, so
//! each is one attempt; the legacy SHA-1 `X-Hub-Signature` is not sent.
//!
//! A product that must not lose events reconciles through the App's webhook API, so that is
//! emulated as GitHub documents it ("REST API endpoints for GitHub App webhooks"), all with the
//! App's JWT:
//! - every attempt is recorded as a delivery with its own increasing numeric `id`, the event's
//!   `guid`, GitHub's `status` text (`OK`, `Invalid HTTP Response: 503`, `failed to connect`)
//!   and `status_code` (0 when nothing answered), and the request and response as sent and
//!   received; `GET /app/hook/deliveries` lists them newest first, paginated by an opaque
//!   `cursor` announced in a `Link: <...>; rel="next"` header, and `GET .../{id}` shows one;
//! - `POST /app/hook/deliveries/{id}/attempts` sends the same event again, with the same GUID,
//!   in the background (202 at once), recorded as a new delivery with `redelivery: true`;
//!   deliveries older than three days are refused, as on GitHub;
//! - `GET`/`PATCH /app/hook/config`: where and how deliveries go (`url`, `content_type`,
//!   `secret`, `insecure_ssl`); it starts as `SandboxConfig::github_webhook_url` and the webhook
//!   secret, and a reset goes back to them. The secret is never shown (`********`).
//!
//! `POST /_sandbox/github/webhooks` sends an event as GitHub would; sending again with the same
//! `delivery_id` is a redelivery too.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use super::app::verify_jwt;
use super::{control_error, fail, repo_key, validation_failed};
use crate::github_events::signature;
use crate::state::{Shared, json_response, parse_body, zulu};

/// The id of the app's webhook (`X-GitHub-Hook-ID`).
const HOOK_ID: u64 = 480_012_001;
/// Recorded deliveries kept; older ones are dropped first.
const DELIVERIES_CAP: usize = 1000;
/// Delivery ids count up from here (GitHub's are large numbers).
const FIRST_DELIVERY_ID: u64 = 31_000_000_000;
/// GitHub redelivers deliveries of the last three days only.
const REDELIVERY_WINDOW: TimeDelta = TimeDelta::days(3);
const DOCS: &str = "https://docs.github.com/rest/apps/webhooks";

/// The App's webhook configuration (`/app/hook/config`).
#[derive(Clone)]
struct HookConfig {
    url: String,
    /// `json` or `form`.
    content_type: String,
    /// `None`: deliveries are not signed.
    secret: Option<String>,
    /// `"0"` or `"1"`.
    insecure_ssl: String,
}

impl HookConfig {
    fn to_json(&self) -> Value {
        let mut config =
            json!({"url": self.url, "content_type": self.content_type, "insecure_ssl": self.insecure_ssl});
        if self.secret.is_some() {
            config["secret"] = json!("********");
        }
        config
    }
}

/// One delivery attempt, as GitHub keeps it.
struct Delivery {
    id: u64,
    guid: String,
    delivered_at: DateTime<Utc>,
    redelivery: bool,
    /// Seconds.
    duration: f64,
    status_code: u16,
    /// Why nothing answered (the client's error), when `status_code` is 0.
    error: Option<String>,
    event: String,
    payload: Value,
    url: String,
    request_headers: Map<String, Value>,
    response_headers: Map<String, Value>,
    response_body: Option<String>,
}

impl Delivery {
    /// GitHub's description of the outcome.
    fn status(&self) -> String {
        match (self.status_code, &self.error) {
            (200..=299, _) => "OK".to_owned(),
            (0, Some(e)) if e.contains("timed out") => "timed out".to_owned(),
            (0, _) => "failed to connect".to_owned(),
            (code, _) => format!("Invalid HTTP Response: {code}"),
        }
    }

    /// A `hook-delivery-item`.
    fn item(&self) -> Value {
        json!({
            "id": self.id, "guid": self.guid, "delivered_at": zulu(self.delivered_at),
            "redelivery": self.redelivery, "duration": self.duration, "status": self.status(),
            "status_code": self.status_code, "event": self.event,
            "action": self.payload.get("action").filter(|a| a.is_string()),
            "installation_id": self.payload["installation"]["id"].as_u64(),
            "repository_id": self.payload["repository"]["id"].as_u64(),
            "throttled_at": null,
        })
    }

    /// A `hook-delivery`: the item with the URL, request and response.
    fn full(&self) -> Value {
        let mut full = self.item();
        full["url"] = json!(self.url);
        full["request"] = json!({"headers": self.request_headers, "payload": self.payload});
        full["response"] = json!({"headers": self.response_headers, "payload": self.response_body});
        full
    }

    /// The inventory entry (`/_sandbox/state`).
    fn dump(&self) -> Value {
        let status = (self.status_code != 0).then_some(self.status_code);
        json!({
            "id": self.id, "guid": self.guid, "delivery_id": self.guid, "event": self.event,
            "action": self.payload.get("action"), "installation_id": self.payload["installation"]["id"],
            "repository": self.payload["repository"]["full_name"], "url": self.url, "status": status,
            "status_code": self.status_code, "error": self.error, "redelivery": self.redelivery,
            "duration": self.duration, "at": zulu(self.delivered_at),
        })
    }
}

#[derive(Default)]
pub(super) struct HooksState {
    /// Oldest first.
    deliveries: VecDeque<Delivery>,
    /// The id of the last delivery recorded.
    last_id: u64,
    /// Set by `PATCH /app/hook/config`; until then the configured URL and secret.
    config: Option<HookConfig>,
}

/// Why a delivery cannot be redelivered.
#[derive(Debug, PartialEq)]
enum Refusal {
    NotFound,
    /// Delivered more than three days ago.
    TooOld,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let doc = format!("{DOCS}#redeliver-a-delivery-for-an-app-webhook");
        match self {
            Refusal::NotFound => fail(StatusCode::NOT_FOUND, "Not Found", &doc),
            Refusal::TooOld => {
                let error = json!({"resource": "HookDelivery", "field": "delivered_at", "code": "custom",
                    "message": "Deliveries older than 3 days cannot be redelivered."});
                validation_failed(json!([error]), &doc)
            }
        }
    }
}

/// `status` of `GET /app/hook/deliveries`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Success,
    Failure,
}

impl HooksState {
    pub(super) fn dump(&self) -> Value {
        self.deliveries.iter().map(Delivery::dump).collect()
    }

    fn config(&self, app: &crate::state::App) -> HookConfig {
        self.config.clone().unwrap_or_else(|| HookConfig {
            url: app.config.github_webhook_url.clone(),
            content_type: "json".to_owned(),
            secret: Some(app.config.github_webhook_secret.clone()).filter(|s| !s.is_empty()),
            insecure_ssl: "0".to_owned(),
        })
    }

    fn record(&mut self, mut delivery: Delivery) -> u64 {
        self.last_id = self.last_id.max(FIRST_DELIVERY_ID) + 1;
        delivery.id = self.last_id;
        if self.deliveries.len() >= DELIVERIES_CAP {
            self.deliveries.pop_front();
        }
        self.deliveries.push_back(delivery);
        self.last_id
    }

    fn find(&self, id: &str) -> Option<&Delivery> {
        let id = id.parse::<u64>().ok()?;
        self.deliveries.iter().find(|d| d.id == id)
    }

    /// One page, newest first, from the delivery `cursor` names (`v1_<id>`: that id and older);
    /// with the cursor of the next page when there is one.
    fn page(
        &self,
        per_page: usize,
        cursor: Option<u64>,
        outcome: Option<Outcome>,
    ) -> (Vec<Value>, Option<String>) {
        let mut matching = self.deliveries.iter().rev().filter(|d| cursor.is_none_or(|c| d.id <= c)).filter(
            |d| match outcome {
                // As the description classifies them: 200-399 and 400-599.
                Some(Outcome::Success) => (200..=399).contains(&d.status_code),
                Some(Outcome::Failure) => (400..=599).contains(&d.status_code),
                None => true,
            },
        );
        let page: Vec<Value> = matching.by_ref().take(per_page).map(Delivery::item).collect();
        (page, matching.next().map(|next| format!("v1_{}", next.id)))
    }

    /// What a redelivery of delivery `id` sends again (event, payload, GUID).
    fn redeliverable(&self, id: &str, now: DateTime<Utc>) -> Result<(String, Value, String), Refusal> {
        let delivery = self.find(id).ok_or(Refusal::NotFound)?;
        if now - delivery.delivered_at > REDELIVERY_WINDOW {
            return Err(Refusal::TooOld);
        }
        Ok((delivery.event.clone(), delivery.payload.clone(), delivery.guid.clone()))
    }
}

/// Posts `payload` as event `event` once, where the App's webhook configuration says, and
/// records the attempt. Answers `{"delivery_id", "id", "status"}` with the GUID, the recorded
/// delivery's id and the receiver's status, or `null` and `error` when it could not be reached.
pub(super) async fn deliver(
    app: &Shared,
    event: &str,
    payload: &Value,
    delivery_id: Option<String>,
) -> Value {
    attempt(app, event, payload, delivery_id, false).await
}

/// One attempt; `redelivery` when asked through the API, otherwise when the GUID went out
/// before.
async fn attempt(
    app: &Shared,
    event: &str,
    payload: &Value,
    delivery_id: Option<String>,
    redelivery: bool,
) -> Value {
    let json_body = serde_json::to_vec(payload).expect("JSON values always serialize");
    let guid = delivery_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (generation, config) = {
        let mut state = app.lock();
        // Issue and pull request numbers in payloads are taken, as on GitHub.
        let repo = payload["repository"]["full_name"].as_str().and_then(|f| f.split_once('/'));
        let number =
            payload["issue"]["number"].as_u64().or_else(|| payload["pull_request"]["number"].as_u64());
        if let (Some((owner, name)), Some(number)) = (repo, number) {
            state.github.pulls.note_number(&repo_key(owner, name), number);
        }
        (state.generation, state.github.hooks.config(app))
    };
    let (content_type, body) = if config.content_type == "form" {
        let text = String::from_utf8(json_body).expect("serde_json writes UTF-8");
        let form =
            url::form_urlencoded::Serializer::new(String::new()).append_pair("payload", &text).finish();
        ("application/x-www-form-urlencoded", form.into_bytes())
    } else {
        ("application/json", json_body)
    };
    let mut headers = vec![
        ("Accept", "*/*".to_owned()),
        ("User-Agent", "GitHub-Hookshot/5f2e1c3".to_owned()),
        ("X-GitHub-Delivery", guid.clone()),
        ("X-GitHub-Event", event.to_owned()),
        ("X-GitHub-Hook-ID", HOOK_ID.to_string()),
        ("X-GitHub-Hook-Installation-Target-ID", app.config.github_app_id.clone()),
        ("X-GitHub-Hook-Installation-Target-Type", "integration".to_owned()),
        ("content-type", content_type.to_owned()),
    ];
    if let Some(secret) = &config.secret {
        headers.push(("X-Hub-Signature-256", signature(&body, secret)));
    }
    let mut request = app.http.post(&config.url).body(body);
    for (name, value) in &headers {
        request = request.header(*name, value);
    }
    let delivered_at = Utc::now();
    let started = Instant::now();
    let (status_code, response_headers, response_body, error) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let headers: Map<String, Value> = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
                .collect();
            let body = response.text().await.ok();
            (status, headers, body, None)
        }
        Err(e) => {
            tracing::warn!(url = %config.url, error = %e, "github webhook delivery failed");
            let reason = if e.is_timeout() { format!("timed out: {e}") } else { e.to_string() };
            (0, Map::new(), None, Some(reason))
        }
    };
    let duration = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    let status = (status_code != 0).then_some(status_code);
    tracing::info!(event, %guid, ?status, redelivery, "github: webhook delivered");
    let delivery = Delivery {
        id: 0,
        guid: guid.clone(),
        delivered_at,
        redelivery,
        duration,
        status_code,
        error: error.clone(),
        event: event.to_owned(),
        payload: payload.clone(),
        url: config.url,
        request_headers: headers.into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect(),
        response_headers,
        response_body,
    };
    let id = app.with_current(generation, |s| {
        let hooks = &mut s.github.hooks;
        let seen = hooks.deliveries.iter().any(|d| d.guid == guid);
        hooks.record(Delivery { redelivery: redelivery || seen, ..delivery })
    });
    let mut answer = json!({"delivery_id": guid, "id": id, "status": status});
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

/// `GET /app/hook/deliveries?per_page=&cursor=&status=`: newest first; a `Link` header names
/// the next page (`cursor=v1_<id>&per_page=<n>`) while one remains.
pub(super) async fn list_deliveries(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let doc = format!("{DOCS}#list-deliveries-for-an-app-webhook");
    if let Err(failure) = verify_jwt(&app, &headers) {
        return failure.into_response();
    }
    // GitHub takes out-of-range page sizes as the nearest allowed one.
    let per_page =
        query.get("per_page").and_then(|p| p.trim().parse::<i64>().ok()).unwrap_or(30).clamp(1, 100);
    let cursor = match query.get("cursor").map(String::as_str).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match c.strip_prefix("v1_").and_then(|id| id.parse::<u64>().ok()) {
            Some(id) => Some(id),
            None => return fail(StatusCode::BAD_REQUEST, "Invalid cursor", &doc),
        },
    };
    let outcome = match query.get("status").map(String::as_str) {
        None | Some("") => None,
        Some("success") => Some(Outcome::Success),
        Some("failure") => Some(Outcome::Failure),
        Some(other) => {
            let error = json!({"resource": "HookDelivery", "field": "status", "code": "invalid",
                "value": other, "message": "status must be one of: success, failure"});
            return validation_failed(json!([error]), &doc);
        }
    };
    let (page, next) = {
        let state = app.lock();
        state.github.hooks.page(per_page as usize, cursor, outcome)
    };
    let mut response = json_response(StatusCode::OK, Value::from(page));
    if let Some(next) = next {
        let status = query.get("status").filter(|s| !s.is_empty()).map(|s| format!("&status={s}"));
        let link = format!(
            "<{}/github/app/hook/deliveries?cursor={next}&per_page={per_page}{}>; rel=\"next\"",
            app.base_url,
            status.unwrap_or_default()
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}

/// `GET /app/hook/deliveries/{delivery_id}`: the delivery with its request and response.
pub(super) async fn get_delivery(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(failure) = verify_jwt(&app, &headers) {
        return failure.into_response();
    }
    let state = app.lock();
    match state.github.hooks.find(&id) {
        Some(delivery) => json_response(StatusCode::OK, delivery.full()),
        None => {
            fail(StatusCode::NOT_FOUND, "Not Found", &format!("{DOCS}#get-a-delivery-for-an-app-webhook"))
        }
    }
}

/// `POST /app/hook/deliveries/{delivery_id}/attempts`: 202 `{}`, then the same event goes out
/// again with the same GUID, to where the configuration says now.
pub(super) async fn redeliver(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(failure) = verify_jwt(&app, &headers) {
        return failure.into_response();
    }
    let found = app.lock().github.hooks.redeliverable(&id, Utc::now());
    let (event, payload, guid) = match found {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let app = app.clone();
    tokio::spawn(async move {
        attempt(&app, &event, &payload, Some(guid), true).await;
    });
    json_response(StatusCode::ACCEPTED, json!({}))
}

/// `GET /app/hook/config`.
pub(super) async fn get_config(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(failure) = verify_jwt(&app, &headers) {
        return failure.into_response();
    }
    let state = app.lock();
    json_response(StatusCode::OK, state.github.hooks.config(&app).to_json())
}

/// `PATCH /app/hook/config` `{"url"?, "content_type"?, "secret"?, "insecure_ssl"?}`: later
/// deliveries and redeliveries follow it. An empty `secret` removes it (deliveries go unsigned).
pub(super) async fn update_config(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let doc = format!("{DOCS}#update-a-webhook-configuration-for-an-app");
    if let Err(failure) = verify_jwt(&app, &headers) {
        return failure.into_response();
    }
    let Ok(Value::Object(body)) = parse_body(&body) else {
        return fail(StatusCode::BAD_REQUEST, "Problems parsing JSON", &doc);
    };
    let invalid = |field: &str, value: &Value| {
        let error = json!({"resource": "Hook", "field": field, "code": "invalid", "value": value});
        validation_failed(json!([error]), &doc)
    };
    let mut state = app.lock();
    let mut config = state.github.hooks.config(&app);
    for (field, value) in &body {
        match (field.as_str(), value) {
            ("url", Value::String(u))
                if url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https")) =>
            {
                config.url = u.clone();
            }
            ("content_type", Value::String(t)) if t == "json" || t == "form" => {
                config.content_type = t.clone()
            }
            ("secret", Value::String(s)) => config.secret = Some(s.clone()).filter(|s| !s.is_empty()),
            ("insecure_ssl", Value::String(v)) if v == "0" || v == "1" => config.insecure_ssl = v.clone(),
            ("insecure_ssl", Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 1) => {
                config.insecure_ssl = n.to_string();
            }
            ("url" | "content_type" | "secret" | "insecure_ssl", _) => return invalid(field, value),
            // GitHub ignores what the operation does not take.
            _ => {}
        }
    }
    let shown = config.to_json();
    state.github.hooks.config = Some(config);
    tracing::info!(url = %shown["url"], "github: app webhook configuration updated");
    json_response(StatusCode::OK, shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(status_code: u16, guid: &str, at: DateTime<Utc>) -> Delivery {
        Delivery {
            id: 0,
            guid: guid.to_owned(),
            delivered_at: at,
            redelivery: false,
            duration: 0.01,
            status_code,
            error: (status_code == 0).then(|| "error sending request".to_owned()),
            event: "issues".to_owned(),
            payload: json!({"action": "opened", "installation": {"id": 7}, "repository": {"id": 9}}),
            url: "http://127.0.0.1:9/hook".to_owned(),
            request_headers: Map::new(),
            response_headers: Map::new(),
            response_body: None,
        }
    }

    fn ids(page: &[Value]) -> Vec<u64> {
        page.iter().map(|d| d["id"].as_u64().unwrap()).collect()
    }

    #[test]
    fn items_carry_githubs_fields() {
        let now = Utc::now();
        let ok = delivery(200, "g", now).item();
        assert_eq!((ok["status"].as_str(), ok["status_code"].as_u64()), (Some("OK"), Some(200)));
        assert_eq!((ok["action"].as_str(), ok["installation_id"].as_u64()), (Some("opened"), Some(7)));
        assert_eq!((ok["repository_id"].as_u64(), ok["throttled_at"].is_null()), (Some(9), true));
        assert_eq!(delivery(503, "g", now).item()["status"], "Invalid HTTP Response: 503");
        let unreachable = delivery(0, "g", now).item();
        assert_eq!(
            (unreachable["status"].as_str(), unreachable["status_code"].as_u64()),
            (Some("failed to connect"), Some(0))
        );
        let mut ping = delivery(200, "g", now);
        ping.payload = json!({"zen": "Keep it logically awesome."});
        let ping = ping.item();
        assert!(
            ping["action"].is_null() && ping["installation_id"].is_null() && ping["repository_id"].is_null()
        );
    }

    #[test]
    fn pages_follow_the_cursor_newest_first() {
        let mut hooks = HooksState::default();
        let now = Utc::now();
        let recorded: Vec<u64> =
            [200, 503, 200, 0, 404].iter().map(|s| hooks.record(delivery(*s, "g", now))).collect();
        assert!(recorded.windows(2).all(|w| w[0] < w[1]), "ids increase");
        let (first, next) = hooks.page(2, None, None);
        assert_eq!(ids(&first), [recorded[4], recorded[3]]);
        let next = next.unwrap();
        assert_eq!(next, format!("v1_{}", recorded[2]));
        let cursor = next.strip_prefix("v1_").unwrap().parse().ok();
        let (second, next) = hooks.page(2, cursor, None);
        assert_eq!(ids(&second), [recorded[2], recorded[1]]);
        let cursor = next.unwrap().strip_prefix("v1_").unwrap().parse().ok();
        let (last, next) = hooks.page(2, cursor, None);
        assert_eq!((ids(&last), next), (vec![recorded[0]], None));
        let (failed, _) = hooks.page(30, None, Some(Outcome::Failure));
        assert_eq!(ids(&failed), [recorded[4], recorded[1]]);
        let (succeeded, _) = hooks.page(30, None, Some(Outcome::Success));
        assert_eq!(ids(&succeeded), [recorded[2], recorded[0]]);
    }

    #[test]
    fn the_cap_drops_the_oldest() {
        let mut hooks = HooksState::default();
        let now = Utc::now();
        let first = hooks.record(delivery(200, "g", now));
        for _ in 0..DELIVERIES_CAP {
            hooks.record(delivery(200, "g", now));
        }
        assert_eq!(hooks.deliveries.len(), DELIVERIES_CAP);
        assert!(hooks.find(&first.to_string()).is_none());
        assert!(hooks.find(&(first + 1).to_string()).is_some());
    }

    #[test]
    fn redelivery_within_three_days_only() {
        let mut hooks = HooksState::default();
        let now = Utc::now();
        let recent = hooks.record(delivery(503, "guid-recent", now - TimeDelta::days(2)));
        let old = hooks.record(delivery(503, "guid-old", now - TimeDelta::days(3) - TimeDelta::minutes(1)));
        let (event, payload, guid) = hooks.redeliverable(&recent.to_string(), now).ok().unwrap();
        assert_eq!(
            (event.as_str(), guid.as_str(), &payload["action"]),
            ("issues", "guid-recent", &json!("opened"))
        );
        let refused = hooks.redeliverable(&old.to_string(), now).err().unwrap();
        assert_eq!(refused, Refusal::TooOld);
        assert_eq!(refused.into_response().status(), StatusCode::UNPROCESSABLE_ENTITY);
        for unknown in ["1", "nope"] {
            let refused = hooks.redeliverable(unknown, now).err().unwrap();
            assert_eq!(refused.into_response().status(), StatusCode::NOT_FOUND);
        }
    }

    #[test]
    fn the_secret_is_never_shown() {
        let config = HookConfig {
            url: "https://example.com/hook".to_owned(),
            content_type: "json".to_owned(),
            secret: Some("s3cret".to_owned()),
            insecure_ssl: "0".to_owned(),
        };
        assert_eq!(
            config.to_json(),
            json!({"url": "https://example.com/hook", "content_type": "json", "insecure_ssl": "0", "secret": "********"})
        );
        let unsigned = HookConfig { secret: None, ..config };
        assert!(unsigned.to_json().get("secret").is_none());
    }
}
