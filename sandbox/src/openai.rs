//! OpenAI-compatible chat completions (`/openai`, real base `https://api.openai.com`).
//!
//! The coding bot asks a model to plan, write and review a change. A real model is slow,
//! costly and different every time, so the sandbox answers deterministically from a role tag
//! the product puts in the prompt, with OpenAI's response, usage and error shapes; the
//! product's parsing, retries and review loop are what get tested.
//!
//! Protocol: the sandbox routes on the request's structure, never on words in the prompt (a
//! product prompt is written for a real model). The step is the name of the JSON schema the
//! request's `response_format` (`json_schema`) constrains the answer to; the data is the last
//! `user` message, a JSON document whose `issue.title` is the issue title.
//! - `slipway_plan`: `{"summary": "Plan for: <title>", "steps": [3 steps], "files"}`, the files
//!   being every path the issue's text names, `README.md` when the request's `tree` has it, and
//!   `src/slipway_generated.rs`.
//! - `slipway_edits`: `{"edits", "delete": []}`: for each of the request's `files` (existing
//!   files with their content) one search/replace edit that keeps the first line and adds a
//!   note below it (`> Slipway: <title>` in Markdown, a comment in code), so the rest of the
//!   file is untouched; for each of its `new_files` the whole content (a Rust file
//!   `// generated for: <title>` ... with `// revised after review` when the request carries
//!   `review_feedback`).
//! - `slipway_review`: `{"verdict": "changes"|"approve", "comments"}`: `changes` for the first N
//!   review calls of each title (`POST /_sandbox/openai/review {"changes_first": N}`,
//!   default 0, which also restarts the counts), `approve` after.
//! - Anything else: a plain text answer.
//!
//! `usage` is deterministic too: `prompt_tokens` = ceil(characters of all message contents
//! / 4), `completion_tokens` = ceil(characters of the answer / 4). Every call is recorded in
//! `/_sandbox/state` (`openai.calls`). Faults apply as to any provider, with OpenAI's error
//! body. Only the configured key (`LLM_API_KEY`) is accepted; a missing or other key gets
//! OpenAI's 401 answers.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::post;
use chrono::Utc;
use serde_json::{Value, json};

use crate::state::{Shared, json_response, parse_body, random_alnum, random_hex};

/// Recorded calls kept for the inventory; older ones are dropped first.
const CALLS_CAP: usize = 1000;
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

#[derive(Clone, Copy, PartialEq)]
enum Tag {
    Plan,
    Code,
    Review,
}

impl Tag {
    fn name(self) -> &'static str {
        match self {
            Tag::Plan => "plan",
            Tag::Code => "code",
            Tag::Review => "review",
        }
    }
}

#[derive(Default)]
pub(crate) struct OpenAiState {
    calls: Vec<Value>,
    /// How many review calls per title answer `changes` before `approve`.
    changes_first: u64,
    /// Review calls so far per title.
    reviews: BTreeMap<String, u64>,
}

impl OpenAiState {
    pub(crate) fn dump(&self) -> Value {
        json!({"calls": self.calls, "changes_first": self.changes_first, "reviews": self.reviews})
    }
}

pub(crate) fn router(app: Shared) -> Router<Shared> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(invalid_url)
        .layer(from_fn_with_state(app, auth))
}

/// `/_sandbox/openai/...`.
pub(crate) fn control_router() -> Router<Shared> {
    Router::new().route("/review", post(control_review))
}

fn error(status: StatusCode, message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Response {
    json_response(status, json!({"error": {"message": message, "type": kind, "param": param, "code": code}}))
}

fn bad_request(message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    error(StatusCode::BAD_REQUEST, message, "invalid_request_error", param, code)
}

/// Requires `Authorization: Bearer <the configured key>`. A missing key gets OpenAI's "You
/// didn't provide an API key" (code null); another key its `invalid_api_key`, masked but its
/// first three and last four characters.
async fn auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let value =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default().trim();
    let key = value.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer ")).map(|_| value[7..].trim());
    match key {
        Some(key) if key == app.config.llm_api_key => next.run(req).await,
        None | Some("") => error(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
            None,
            None,
        ),
        Some(key) => {
            let chars: Vec<char> = key.chars().collect();
            let masked = if chars.len() > 8 {
                let head: String = chars[..3].iter().collect();
                let tail: String = chars[chars.len() - 4..].iter().collect();
                format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
            } else {
                "*".repeat(chars.len())
            };
            let message = format!(
                "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
            );
            error(StatusCode::UNAUTHORIZED, &message, "invalid_request_error", None, Some("invalid_api_key"))
        }
    }
}

async fn invalid_url(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    let path = uri.path().strip_prefix("/openai").unwrap_or(uri.path());
    let message = format!("Invalid URL ({method} {path})");
    error(StatusCode::NOT_FOUND, &message, "invalid_request_error", None, None)
}

/// The text of a message's `content`: a string, or the `text` of its parts.
fn text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect()
        }
        _ => String::new(),
    }
}

fn tokens(chars: usize) -> usize {
    chars.div_ceil(4)
}

/// `POST /v1/chat/completions`.
async fn chat_completions(State(app): State<Shared>, body: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        let message = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using \
            your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)";
        return bad_request(message, None, None);
    };
    let Some(model) = body.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) else {
        return bad_request("you must provide a model parameter", None, None);
    };
    let messages = match body.get("messages") {
        None | Some(Value::Null) => {
            return bad_request(
                "Missing required parameter: 'messages'.",
                Some("messages"),
                Some("missing_required_parameter"),
            );
        }
        Some(Value::Array(list)) if list.is_empty() => {
            let message = "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.";
            return bad_request(message, Some("messages"), Some("empty_array"));
        }
        Some(Value::Array(list)) => list,
        Some(_) => {
            let message = "Invalid type for 'messages': expected an array of objects, but got a value of another type instead.";
            return bad_request(message, Some("messages"), Some("invalid_type"));
        }
    };
    for (i, message) in messages.iter().enumerate() {
        let param = format!("messages[{i}].role");
        let Some(role) = message.get("role") else {
            let message = format!("Missing required parameter: '{param}'.");
            return bad_request(&message, Some(&param), Some("missing_required_parameter"));
        };
        let role = role.as_str();
        if !role.is_some_and(|r| ROLES.contains(&r)) {
            let message = format!(
                "Invalid value: '{}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.",
                role.unwrap_or_default()
            );
            return bad_request(&message, Some(&param), Some("invalid_value"));
        }
    }
    match body.get("temperature") {
        None | Some(Value::Null) => {}
        Some(Value::Number(t)) if t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) => {}
        Some(Value::Number(t)) => {
            let (side, code) = if t.as_f64().unwrap_or(0.0) < 0.0 {
                ("below minimum value. Expected a value >= 0", "decimal_below_min_value")
            } else {
                ("above maximum value. Expected a value <= 2", "decimal_above_max_value")
            };
            let message = format!("Invalid 'temperature': decimal {side}, but got {t} instead.");
            return bad_request(&message, Some("temperature"), Some(code));
        }
        Some(_) => {
            let message = "Invalid type for 'temperature': expected a decimal, but got another type instead.";
            return bad_request(message, Some("temperature"), Some("invalid_type"));
        }
    }
    let texts: Vec<String> = messages.iter().map(text).collect();
    match body.get("response_format").map(|f| f.get("type").and_then(Value::as_str)) {
        None | Some(Some("text" | "json_schema")) => {}
        Some(Some("json_object")) => {
            if !texts.iter().any(|t| t.to_ascii_lowercase().contains("json")) {
                let message = "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.";
                return bad_request(message, Some("messages"), None);
            }
        }
        Some(other) => {
            let message = format!(
                "Invalid value: '{}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
                other.unwrap_or_default()
            );
            return bad_request(&message, Some("response_format.type"), Some("invalid_value"));
        }
    }

    let role =
        |m: &Value, roles: &[&str]| m.get("role").and_then(Value::as_str).is_some_and(|r| roles.contains(&r));
    let tag = step_of(&body);
    let task = messages.iter().rposition(|m| role(m, &["user"])).map_or("", |i| texts[i].as_str());
    let data: Value = serde_json::from_str(task).unwrap_or(Value::Null);
    let title = match data["issue"]["title"].as_str() {
        Some(t) => t.trim().to_owned(),
        None => task.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned(),
    };

    let mut state = app.lock();
    let openai = &mut state.openai;
    let (answer, verdict) = match tag {
        Some(Tag::Plan) => (plan(&data, &title), None),
        Some(Tag::Code) => (code(&data, &title), None),
        Some(Tag::Review) => {
            let seen = openai.reviews.entry(title.clone()).or_default();
            *seen += 1;
            let changes = *seen <= openai.changes_first;
            (review(&title, changes), Some(if changes { "changes" } else { "approve" }))
        }
        None => (format!("Sandbox answer to: {title}"), None),
    };
    let prompt_tokens = tokens(texts.iter().map(|t| t.chars().count()).sum());
    let completion_tokens = tokens(answer.chars().count());
    if openai.calls.len() >= CALLS_CAP {
        openai.calls.remove(0);
    }
    openai.calls.push(json!({"tag": tag.map(Tag::name), "model": model, "title": title, "verdict": verdict,
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}));
    drop(state);
    tracing::info!(tag = tag.map(Tag::name), model, "openai: chat completion");

    let body = json!({
        "id": format!("chatcmpl-{}", random_alnum(29)),
        "object": "chat.completion",
        "created": Utc::now().timestamp(),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": null,
            "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "service_tier": "default",
        "system_fingerprint": "fp_sandbox",
    });
    let mut response = json_response(StatusCode::OK, body);
    if let Ok(id) = HeaderValue::from_str(&format!("req_{}", random_hex(32))) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

/// The step a request asks for, from its structure: the name of the JSON schema its
/// `response_format` constrains the answer to.
fn step_of(body: &serde_json::Map<String, Value>) -> Option<Tag> {
    let name = body.get("response_format")?.get("json_schema")?.get("name")?.as_str()?;
    match name {
        "slipway_plan" => Some(Tag::Plan),
        "slipway_edits" => Some(Tag::Code),
        "slipway_review" => Some(Tag::Review),
        _ => None,
    }
}

/// File extensions the stand-in recognises as paths when an issue names a file.
const EXTENSIONS: &[&str] = &[
    "md", "rs", "toml", "yml", "yaml", "json", "js", "ts", "tsx", "jsx", "py", "go", "rb", "txt", "lock",
    "sh", "html", "css", "sql", "env", "pem", "key",
];

/// Paths an issue's text names (`src/app.rs`, `.github/workflows/deploy.yml`, `Cargo.lock`).
fn named_paths(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let word = word.trim_matches(|c: char| "`'\"()[],:;!?".contains(c)).trim_end_matches('.');
        let ext = word.rsplit_once('.').map(|(_, e)| e);
        let looks_like_path = (word.contains('/') && !word.contains("://"))
            || ext.is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            || (word.starts_with('.') && word.len() > 1 && word[1..].chars().all(char::is_alphanumeric));
        if looks_like_path && !out.iter().any(|p| p == word) {
            out.push(word.to_owned());
        }
    }
    out
}

/// The plan: the files the issue names, the README when the repository has one, and the new
/// module every sandbox change adds.
fn plan(data: &Value, title: &str) -> String {
    let text = format!(
        "{} {}",
        data["issue"]["title"].as_str().unwrap_or(title),
        data["issue"]["body"].as_str().unwrap_or("")
    );
    let mut files = named_paths(&text);
    let tree: Vec<&str> =
        data["tree"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    for extra in ["README.md", GENERATED] {
        if (extra == GENERATED || tree.contains(&extra)) && !files.iter().any(|f| f == extra) {
            files.push(extra.to_owned());
        }
    }
    json!({
        "summary": format!("Plan for: {title}"),
        "steps": [
            format!("Add `{GENERATED}` with the code the issue asks for."),
            "Mention the change in the README.".to_owned(),
            "Open a pull request and ask for a review.".to_owned(),
        ],
        "files": files,
    })
    .to_string()
}

/// The new module every sandbox change creates.
const GENERATED: &str = "src/slipway_generated.rs";

/// A line saying what changed, as a comment in the file's language.
fn note(path: &str, title: &str) -> String {
    let text = format!("Slipway: {title}");
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("md") => format!("> {text}"),
        Some("rs" | "js" | "ts" | "tsx" | "jsx" | "go" | "c" | "h" | "java" | "css") => format!("// {text}"),
        Some("py" | "sh" | "yml" | "yaml" | "toml" | "rb") => format!("# {text}"),
        _ => text,
    }
}

/// The edits: after the first line of each existing file, a line saying what changed (the rest
/// of the file untouched); each new file created whole (with `// revised after review` when the
/// request carries review feedback).
fn code(data: &Value, title: &str) -> String {
    let revised = data["review_feedback"].as_str().is_some_and(|f| !f.is_empty());
    let mut edits = Vec::new();
    for file in data["files"].as_array().into_iter().flatten() {
        let (Some(path), Some(content)) = (file["path"].as_str(), file["content"].as_str()) else { continue };
        let Some(first) = content.split_inclusive('\n').next().filter(|l| !l.trim().is_empty()) else {
            continue;
        };
        let line = if first.ends_with('\n') { first.to_owned() } else { format!("{first}\n") };
        edits.push(
            json!({"path": path, "search": first, "replace": format!("{line}\n{}\n", note(path, title))}),
        );
    }
    let revision = if revised { "// revised after review\n" } else { "" };
    for path in data["new_files"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let content = if path.ends_with(".rs") {
            format!("// generated for: {title}\n{revision}pub fn answer() -> u32 {{ 42 }}\n")
        } else {
            format!("{}\n", note(path, title))
        };
        edits.push(json!({"path": path, "search": "", "replace": content}));
    }
    json!({"edits": edits, "delete": []}).to_string()
}

fn review(title: &str, changes: bool) -> String {
    let (verdict, comments) = if changes {
        ("changes", format!("Please add a doc comment to `answer()` saying how it addresses \"{title}\"."))
    } else {
        ("approve", format!("Looks good: the change addresses \"{title}\"."))
    };
    json!({"verdict": verdict, "comments": comments}).to_string()
}

/// `POST /_sandbox/openai/review` `{"changes_first": N}`.
async fn control_review(State(app): State<Shared>, body: Bytes) -> Response {
    let Some(n) = parse_body(&body).ok().and_then(|b| b.get("changes_first").and_then(Value::as_u64)) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "changes_first must be a whole number"}),
        );
    };
    let mut state = app.lock();
    state.openai.changes_first = n;
    state.openai.reviews.clear();
    json_response(StatusCode::OK, json!({"changes_first": n}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_keeps_the_file_and_a_new_file_is_whole() {
        let data = json!({"files": [{"path": "README.md", "content": "# shop\n\nSells things.\n"}],
            "new_files": ["src/slipway_generated.rs"], "review_feedback": "add docs"});
        let answer: Value = serde_json::from_str(&code(&data, "Add a button")).unwrap();
        assert_eq!(
            answer["edits"][0],
            json!({"path": "README.md", "search": "# shop\n", "replace": "# shop\n\n> Slipway: Add a button\n"})
        );
        assert_eq!(
            answer["edits"][1]["replace"],
            "// generated for: Add a button\n// revised after review\npub fn answer() -> u32 { 42 }\n"
        );
        assert_eq!(answer["edits"][1]["search"], "");
        assert_eq!(answer["delete"], json!([]));
        assert_eq!(tokens(0), 0);
        assert_eq!(tokens(5), 2);
    }

    #[test]
    fn a_plan_lists_the_paths_an_issue_names() {
        let data = json!({"issue": {"title": "Deploy", "body": "Please add `.github/workflows/deploy.yml`, see https://x.y/z."},
            "tree": ["README.md", "src/lib.rs"]});
        let plan: Value = serde_json::from_str(&plan(&data, "Deploy")).unwrap();
        assert_eq!(
            plan["files"],
            json!([".github/workflows/deploy.yml", "README.md", "src/slipway_generated.rs"])
        );
        assert_eq!(named_paths("e.g. use Cargo.lock and .env, not https://a.b/c"), ["Cargo.lock", ".env"]);
    }
}
