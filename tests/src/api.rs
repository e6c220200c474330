//! The REST API as a client calls it: JSON in and out, with bearer JWTs minted with the secret the
//! starter verifies them with, and every answer checked against the starter's OpenAPI document.

use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::{JWT_SECRET, TestApp, conformance::Contract, now};

impl TestApp {
    /// Call the REST API; returns the status and the JSON body (`null` if none).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let method_name = method.as_str().to_owned();
        let mut req = self.http.request(method, format!("{}{path}", self.starter_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        check_against_document(&method_name, path, status, &body);
        Ok((status, body))
    }

    /// Opens `GET /api/agents/{agent}/events` (resuming after `last_event_id`, if any); `Err`
    /// carries the refusal's status and body.
    pub async fn agent_events(
        &self,
        agent: &str,
        token: &str,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<Result<EventStream, (u16, Value)>> {
        let path = format!("/api/agents/{agent}/events");
        let mut req = self.http.get(format!("{}{path}", self.starter_url)).bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = serde_json::from_str(&resp.text().await?).unwrap_or(Value::Null);
            check_against_document("GET", &path, status, &body);
            return Ok(Err((status, body)));
        }
        let kind = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        anyhow::ensure!(kind.starts_with("text/event-stream"), "content-type {kind}");
        Ok(Ok(EventStream { resp, buf: String::new(), schemas: document() }))
    }

    /// A JWT for `sub` (and optionally `role`).
    pub fn token(&self, sub: &str, role: Option<&str>) -> String {
        mint_token(sub, role, JWT_SECRET)
    }
}

/// The starter's own OpenAPI document (what `GET /api/openapi.json` serves), as a contract whose
/// objects are closed: an answer carrying a field the document does not declare fails too.
fn document() -> &'static Contract {
    static DOCUMENT: OnceLock<Contract> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        Contract::from_spec("slipway", slipway_starter::openapi::document())
            .expect("the document loads")
            .closed()
    })
}

/// Every answer a test receives from `/api/` must be one the document declares: its status,
/// and a body valid against that status's schema (error `code`s included). A mismatch fails
/// the test that received it, so the document cannot drift from what the starter does.
pub fn check_against_document(method: &str, path: &str, status: u16, body: &Value) {
    if !path.starts_with("/api/") {
        return;
    }
    match document().check_answer(method, path, status, body) {
        None => panic!("{method} {path} is not an operation of the OpenAPI document"),
        Some(problems) if !problems.is_empty() => panic!(
            "the answer to {method} {path} ({status}) is not what the OpenAPI document declares: {}\nbody: {body}",
            problems.join("; ")
        ),
        Some(_) => {}
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `id:` (empty for none).
    pub id: String,
    /// `event:`.
    pub event: String,
    /// `data:`, parsed.
    pub data: Value,
}

/// An open event stream, read as a browser's `EventSource` reads it (each event's data checked
/// against its schema in the document).
pub struct EventStream {
    resp: reqwest::Response,
    buf: String,
    schemas: &'static Contract,
}

impl EventStream {
    /// The next event, waiting at most `within`; `Ok(None)` once the server closed the stream.
    pub async fn next(&mut self, within: std::time::Duration) -> anyhow::Result<Option<SseEvent>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut event = SseEvent { id: String::new(), event: "message".into(), data: Value::Null };
                let mut data = String::new();
                for line in frame.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => event.id = value.to_owned(),
                        "event" => event.event = value.to_owned(),
                        "data" => data.push_str(value),
                        _ => {} // comments (`:`) and `retry`
                    }
                }
                if data.is_empty() {
                    continue;
                }
                event.data = serde_json::from_str(&data)?;
                let problems = self.schemas.validate(&event_schema(&event.event), &event.data);
                anyhow::ensure!(
                    problems.is_empty(),
                    "event {} does not match its schema: {problems:?}",
                    event.event
                );
                return Ok(Some(event));
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .map_err(|_| anyhow::anyhow!("no event within {within:?}"))??;
            match chunk {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n")),
                None => return Ok(None),
            }
        }
    }

    /// The next event that is not a heartbeat.
    pub async fn next_change(&mut self, within: std::time::Duration) -> anyhow::Result<Option<SseEvent>> {
        loop {
            match self.next(within).await? {
                Some(e) if e.event == "heartbeat" => continue,
                other => return Ok(other),
            }
        }
    }
}

/// The schema of an event's data, by its `event:` name: its component, closed like every
/// object of the document.
fn event_schema(event: &str) -> Value {
    let name = match event {
        "state" => "StateEvent",
        "step" => "StepEvent",
        "end" => "EndEvent",
        _ => "HeartbeatEvent",
    };
    json!({"$ref": format!("#/components/schemas/{name}"), "unevaluatedProperties": false})
}

/// A signed HS256 JWT valid for an hour.
pub fn mint_token(sub: &str, role: Option<&str>, secret: &str) -> String {
    let claims = slipway_starter::auth::Claims {
        sub: sub.to_owned(),
        role: role.map(str::to_owned),
        exp: now() as u64 + 3600,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{check_against_document, document, event_schema};

    #[test]
    fn a_declared_answer_passes() {
        let agent = json!({"code": "AGENT_NOT_FOUND", "message": "no agent ag-1"});
        check_against_document("GET", "/api/agents/ag-1", 404, &agent);
    }

    #[test]
    #[should_panic(expected = "not what the OpenAPI document declares")]
    fn an_undeclared_code_fails() {
        check_against_document("GET", "/api/agents/ag-1", 404, &json!({"code": "NOPE", "message": "m"}));
    }

    #[test]
    #[should_panic(expected = "'owner' was unexpected")]
    fn an_undeclared_field_fails() {
        let extra = json!({"code": "AGENT_NOT_FOUND", "message": "no agent ag-1", "owner": "u-2"});
        check_against_document("GET", "/api/agents/ag-1", 404, &extra);
    }

    /// Every example the document shows is an answer it declares (closed objects included),
    /// and every successful JSON answer of `/api/` has one.
    #[test]
    fn every_example_of_the_document_is_an_answer_it_declares() {
        let doc = slipway_starter::openapi::document();
        let (mut checked, mut problems, mut missing) = (0, Vec::new(), Vec::new());
        for (template, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("operations") {
                for (status, response) in op["responses"].as_object().into_iter().flatten() {
                    for (media, content) in response["content"].as_object().into_iter().flatten() {
                        let example = &content["example"];
                        let at = format!("{} {template} {status} {media}", method.to_uppercase());
                        if example.is_null() {
                            let api = template.starts_with("/api/") && template != "/api/openapi.json";
                            if api && status.starts_with('2') && media == "application/json" {
                                missing.push(at);
                            }
                            continue;
                        }
                        checked += 1;
                        let found = if media == "text/event-stream" {
                            event_stream_problems(example.as_str().unwrap_or_default())
                        } else {
                            let status = status.parse().expect("a status");
                            document()
                                .check_answer(&method.to_uppercase(), template, status, example)
                                .expect("an operation")
                        };
                        problems.extend(found.into_iter().map(|p| format!("{at}: {p}")));
                    }
                }
            }
        }
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(missing, Vec::<String>::new(), "successful answers without an example");
        assert!(checked > 100, "{checked} examples");
    }

    /// Problems of an example event stream: each frame's data against its event's schema.
    fn event_stream_problems(text: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.trim().is_empty()).collect();
        for frame in &frames {
            let field = |name: &str| frame.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default();
            let data: Value = serde_json::from_str(field("data: ")).unwrap_or_default();
            problems.extend(document().validate(&event_schema(field("event: ")), &data));
        }
        if frames.len() < 3 {
            problems.push(format!("{} events", frames.len()));
        }
        problems
    }

    #[test]
    #[should_panic(expected = "status 418 is not declared")]
    fn an_undeclared_status_fails() {
        check_against_document("GET", "/api/agents", 418, &serde_json::Value::Null);
    }
}
