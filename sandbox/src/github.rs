//! GitHub API (`/github`, real base `https://api.github.com`): Actions with a fake runner,
//! and repositories.
//!
//! Workflow dispatch is validated like GitHub does (unknown workflow → 404, missing or
//! unexpected inputs → 422, 204 or run details on success). Each run records its dispatch's
//! inputs and gets its `display_title` from the workflow's `run-name` evaluated over them (the
//! workflow's name without one), as GitHub does; the runs lists
//! (`GET …/actions/workflows/{workflow}/runs`, `GET …/actions/runs`) take the documented
//! filters (`event`, `created` in search syntax, `branch`, `status`, `head_sha`, `actor`,
//! `check_suite_id`) and pages, newest first. A dispatched `provision-agent.yml` then "runs": a
//! background task plays the job, posting signed callbacks to the product (`running`, then
//! `succeeded` or `failed`) and making the VM join the tailnet, so the whole provisioning loop
//! can run without the internet. `POST /_sandbox/github/runner` chooses the outcome of later
//! dispatches (`hold` keeps runs queued, as when no runner is free, until it changes).
//!
//! `repos` adds repositories generated from templates, which the product creates per
//! customer and Vercel projects link to, and lists an organization's repositories.
//!
//! The coding bot's side is a GitHub App, split by concern:
//! - `app`: installations, RS256 app JWTs, installation access tokens, collaborator
//!   permissions, and the control calls that install the app on seeded repositories;
//! - `git`: an in-memory object store per installed repository (blobs, trees, commits,
//!   branches) behind the Git Data and Contents endpoints;
//! - `pulls`: pull requests and issue comments;
//! - `hooks`: signed webhook deliveries to the product, one attempt each as on GitHub, and the
//!   App's webhook API over them (configuration, deliveries, redelivery).
//!
//! Repository endpoints of installed repositories take only live installation tokens, which
//! is what keeps the product honest about token exchange and expiry. Every other endpoint
//! keeps accepting any non-empty token, as before.

mod app;
mod git;
mod hooks;
pub(crate) mod oidc;
mod pulls;
mod repos;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::state::{Shared, hmac_hex, json_response, parse_body, random_hex, zulu};

const DOCS: &str = "https://docs.github.com/rest/actions";

struct Workflow {
    id: u64,
    file: &'static str,
    name: &'static str,
    /// Declared `workflow_dispatch` inputs: (name, required).
    inputs: &'static [(&'static str, bool)],
    /// The workflow's `run-name`, if it has one (`${{ inputs.<name> }}` expressions only).
    run_name: Option<&'static str>,
}

/// As `deploy/actions/provision-agent.yml` declares it.
const WORKFLOWS: &[Workflow] = &[Workflow {
    id: 104_215_001,
    file: "provision-agent.yml",
    name: "provision-agent",
    inputs: &[
        ("job_id", true),
        ("agent_id", true),
        ("region", true),
        ("callback_url", true),
        ("correlation_id", false),
    ],
    run_name: Some("provision ${{ inputs.agent_id }} [${{ inputs.correlation_id }}]"),
}];

/// The login every sandbox run is started by (`actor`, `triggering_actor`).
const ACTOR: &str = "slipway-sandbox";

/// `run-name` evaluated for one dispatch: each `${{ inputs.<name> }}` becomes the input's value
/// (empty when not given), as GitHub evaluates expressions in `run-name`.
fn evaluate_run_name(template: &str, inputs: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let expr = rest[start + 3..start + len].trim();
        if let Some(name) = expr.strip_prefix("inputs.") {
            match inputs.get(name.trim()) {
                Some(Value::String(v)) => out.push_str(v),
                Some(Value::Null) | None => {}
                Some(other) => out.push_str(&other.to_string()),
            }
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

#[derive(Clone, Copy, Default, PartialEq)]
enum Outcome {
    #[default]
    Succeed,
    Fail,
    Silent,
    /// Runs stay queued (no runner free, as on GitHub) until the outcome changes; then they
    /// play the new one.
    Hold,
}

#[derive(Default)]
pub(crate) struct GithubState {
    dispatches: Vec<Value>,
    runs: BTreeMap<u64, Run>,
    callbacks: Vec<Value>,
    outcome: Outcome,
    fail_reason: Option<String>,
    next_run: u64,
    /// Keyed by lowercase `owner/name`.
    repos: BTreeMap<String, repos::Repo>,
    next_repo: u64,
    /// Installations and installation tokens of the GitHub App.
    app: app::AppState,
    /// The accepted personal access token (from configuration; set again after a reset).
    pat: String,
    /// Git data of repositories the app is installed on, keyed by lowercase `owner/name`.
    git: BTreeMap<String, git::GitRepo>,
    pulls: pulls::PullsState,
    hooks: hooks::HooksState,
}

struct Run {
    id: u64,
    number: u64,
    repo: String,
    workflow: &'static Workflow,
    git_ref: String,
    head_sha: String,
    /// `run-name` evaluated over the inputs, or the workflow's name.
    display_title: String,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    status: &'static str,
    conclusion: Option<&'static str>,
}

impl Run {
    fn to_json(&self, base_url: &str) -> Value {
        let api = format!("{base_url}/github/repos/{}/actions/runs/{}", self.repo, self.id);
        json!({
            "id": self.id, "name": self.workflow.name, "node_id": format!("WFR_kwLO{}", self.id),
            "head_branch": self.git_ref.trim_start_matches("refs/heads/"), "head_sha": self.head_sha,
            "path": format!(".github/workflows/{}", self.workflow.file),
            "display_title": self.display_title, "run_number": self.number, "run_attempt": 1,
            "event": self.event(), "status": self.status, "conclusion": self.conclusion,
            "workflow_id": self.workflow.id, "url": api,
            "html_url": format!("https://github.com/{}/actions/runs/{}", self.repo, self.id),
            "jobs_url": format!("{api}/jobs"), "logs_url": format!("{api}/logs"),
            "cancel_url": format!("{api}/cancel"), "rerun_url": format!("{api}/rerun"),
            "artifacts_url": format!("{api}/artifacts"), "check_suite_id": self.check_suite_id(),
            "check_suite_url": format!("{base_url}/github/repos/{}/check-suites/{}", self.repo, self.check_suite_id()),
            "pull_requests": [], "head_commit": null,
            "actor": {"login": self.actor(), "type": "User"},
            "triggering_actor": {"login": self.actor(), "type": "User"},
            "workflow_url": format!("{base_url}/github/repos/{}/actions/workflows/{}", self.repo, self.workflow.id),
            "created_at": zulu(self.created), "updated_at": zulu(self.updated),
            "run_started_at": zulu(self.created),
            "repository": {"name": self.repo.split('/').nth(1), "full_name": self.repo},
        })
    }
}

impl Run {
    fn check_suite_id(&self) -> u64 {
        self.id + 1_000_000
    }

    /// Sandbox runs are all dispatched.
    fn event(&self) -> &'static str {
        "workflow_dispatch"
    }

    fn actor(&self) -> &'static str {
        ACTOR
    }

    fn branch(&self) -> &str {
        self.git_ref.trim_start_matches("refs/heads/")
    }
}

/// A `created` qualifier in GitHub's search syntax: `>=T`, `>T`, `<=T`, `<T`, `A..B` (either
/// side `*`), or a bare date or time. Dates (`YYYY-MM-DD`) cover their whole day (UTC).
#[derive(Debug, PartialEq)]
struct CreatedRange {
    from: Option<(DateTime<Utc>, bool)>,
    to: Option<(DateTime<Utc>, bool)>,
}

impl CreatedRange {
    /// `None` for a qualifier GitHub's search would not read (it then matches nothing).
    fn parse(q: &str) -> Option<CreatedRange> {
        let q = q.trim();
        let start = |v: &str| bound(v, false);
        let end = |v: &str| bound(v, true);
        if let Some(v) = q.strip_prefix(">=") {
            return Some(CreatedRange { from: Some((start(v)?, true)), to: None });
        }
        if let Some(v) = q.strip_prefix('>') {
            return Some(CreatedRange { from: Some((end(v)?, false)), to: None });
        }
        if let Some(v) = q.strip_prefix("<=") {
            return Some(CreatedRange { from: None, to: Some((end(v)?, true)) });
        }
        if let Some(v) = q.strip_prefix('<') {
            return Some(CreatedRange { from: None, to: Some((start(v)?, false)) });
        }
        if let Some((a, b)) = q.split_once("..") {
            let from = if a == "*" { None } else { Some((start(a)?, true)) };
            let to = if b == "*" { None } else { Some((end(b)?, true)) };
            return Some(CreatedRange { from, to });
        }
        Some(CreatedRange { from: Some((start(q)?, true)), to: Some((end(q)?, true)) })
    }

    fn contains(&self, t: DateTime<Utc>) -> bool {
        let after = self.from.is_none_or(|(f, inclusive)| if inclusive { t >= f } else { t > f });
        let before = self.to.is_none_or(|(e, inclusive)| if inclusive { t <= e } else { t < e });
        after && before
    }
}

/// A date or time of a `created` qualifier; a bare date is its first (`end: false`) or last
/// (`end: true`) instant.
fn bound(v: &str, end: bool) -> Option<DateTime<Utc>> {
    let v = v.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S") {
        return Some(t.and_utc());
    }
    let day = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()?;
    let t = if end { day.and_hms_milli_opt(23, 59, 59, 999)? } else { day.and_hms_opt(0, 0, 0)? };
    Some(t.and_utc())
}

impl GithubState {
    pub(crate) fn dump(&self, base_url: &str) -> Value {
        let runs: Vec<Value> = self.runs.values().map(|r| r.to_json(base_url)).collect();
        let repos: Vec<Value> = self.repos.values().map(|r| r.to_json(base_url)).collect();
        let mut dump =
            json!({"dispatches": self.dispatches, "runs": runs, "callbacks": self.callbacks, "repos": repos});
        dump["installations"] = self.app.dump_installations();
        dump["tokens_issued"] = self.app.dump_tokens_issued();
        dump["app_repos"] = self.git.values().map(git::GitRepo::dump).collect();
        dump["commits"] = self.git.values().flat_map(git::GitRepo::dump_commits).collect();
        dump["pulls"] = self.pulls.dump_pulls(&self.git);
        dump["comments"] = self.pulls.dump_comments();
        dump["deliveries"] = self.hooks.dump();
        dump
    }

    fn set_run(&mut self, id: u64, status: &'static str, conclusion: Option<&'static str>) {
        if let Some(run) = self.runs.get_mut(&id) {
            (run.status, run.conclusion, run.updated) = (status, conclusion, Utc::now());
        }
    }
}

pub(crate) fn router(app: Shared) -> Router<Shared> {
    Router::new()
        .route("/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches", post(dispatch))
        .route("/repos/{owner}/{repo}/actions/runs/{run_id}", get(get_run))
        .route("/repos/{owner}/{repo}/actions/runs", get(list_repo_runs))
        .route("/repos/{owner}/{repo}/actions/workflows/{workflow}/runs", get(list_workflow_runs))
        .route("/repos/{owner}/{repo}", get(repos::get_repo).delete(repos::delete_repo))
        .route("/repos/{owner}/{repo}/generate", post(repos::generate))
        .route("/orgs/{org}/repos", get(repos::list_for_org).post(repos::create_in_org))
        .route("/app", get(app::get_app))
        .route("/app/installations", get(app::list_installations))
        .route("/app/hook/config", get(hooks::get_config).patch(hooks::update_config))
        .route("/app/hook/deliveries", get(hooks::list_deliveries))
        .route("/app/hook/deliveries/{id}", get(hooks::get_delivery))
        .route("/app/hook/deliveries/{id}/attempts", post(hooks::redeliver))
        .route("/installation/repositories", get(app::token_repositories))
        .route("/app/installations/{id}/access_tokens", post(app::create_access_token))
        .route("/repos/{owner}/{repo}/installation", get(app::repo_installation))
        .route("/repos/{owner}/{repo}/collaborators/{username}/permission", get(app::permission))
        .route("/repos/{owner}/{repo}/git/ref/{*ref}", get(git::get_ref))
        .route("/repos/{owner}/{repo}/git/refs", post(git::create_ref))
        .route("/repos/{owner}/{repo}/git/refs/{*ref}", patch(git::update_ref).delete(git::delete_ref))
        .route("/repos/{owner}/{repo}/git/commits", post(git::create_commit))
        .route("/repos/{owner}/{repo}/git/commits/{sha}", get(git::get_commit))
        .route("/repos/{owner}/{repo}/git/trees", post(git::create_tree))
        .route("/repos/{owner}/{repo}/git/trees/{sha}", get(git::get_tree))
        .route("/repos/{owner}/{repo}/contents", get(git::get_root_contents))
        .route("/repos/{owner}/{repo}/contents/{*path}", get(git::get_contents).put(git::put_contents))
        .route("/repos/{owner}/{repo}/pulls", post(pulls::create).get(pulls::list))
        .route("/repos/{owner}/{repo}/pulls/{number}", get(pulls::get))
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            post(pulls::create_comment).get(pulls::list_comments),
        )
        .route("/repos/{owner}/{repo}/issues/comments/{id}", patch(pulls::update_comment))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not Found", "") })
        .layer(from_fn_with_state(app, auth))
        .layer(axum::middleware::from_fn(request_id))
}

/// Every GitHub answer carries `X-GitHub-Request-Id` (clients such as Octokit log it with each
/// failure) and the API version it was served with.
async fn request_id(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let part = |n: usize| crate::state::random_hex(n)[..n].to_ascii_uppercase();
    let value = format!("{}:{}:{}:{}:{}", part(4), part(4), part(6), part(6), part(8));
    if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
        response.headers_mut().insert("x-github-request-id", v);
    }
    response
        .headers_mut()
        .insert("x-github-api-version-selected", axum::http::HeaderValue::from_static("2022-11-28"));
    response
}

/// `/_sandbox/github/...`: the runner outcome, installing the app, collaborators, closing
/// pull requests and sending webhooks.
pub(crate) fn control_router() -> Router<Shared> {
    Router::new()
        .route("/runner", post(set_runner))
        .route("/installations", post(app::control_install))
        .route("/repos/{owner}/{repo}/collaborators/{user}", post(app::control_collaborator))
        .route("/repos/{owner}/{repo}/pulls/{number}/close", post(pulls::control_close))
        .route("/webhooks", post(hooks::control_send))
}

/// A GitHub error body: `message`, `documentation_url` and the status as a string.
fn fail(status: StatusCode, message: &str, documentation_url: &str) -> Response {
    json_response(
        status,
        json!({"message": message, "documentation_url": documentation_url,
            "status": status.as_u16().to_string()}),
    )
}

/// A refusal in GitHub's error shape, small enough to travel in a `Result`.
struct Failure {
    status: StatusCode,
    message: &'static str,
    documentation_url: String,
}

impl Failure {
    fn new(status: StatusCode, message: &'static str, documentation_url: &str) -> Failure {
        Failure { status, message, documentation_url: documentation_url.to_owned() }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        fail(self.status, self.message, &self.documentation_url)
    }
}

/// 422 `Validation Failed` with GitHub's `errors` list.
fn validation_failed(errors: Value, documentation_url: &str) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": "Validation Failed", "errors": errors, "documentation_url": documentation_url,
            "status": "422"}),
    )
}

/// What the sandbox's control plane answers to a request it cannot act on.
fn control_error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, json!({"error": message.into()}))
}

/// The key of repository maps: lowercase `owner/name`, as GitHub compares names.
fn repo_key(owner: &str, name: &str) -> String {
    format!("{owner}/{name}").to_ascii_lowercase()
}

fn error(status: StatusCode, message: &str, docs_path: &str) -> Response {
    json_response(
        status,
        json!({"message": message, "documentation_url": format!("{DOCS}{docs_path}"),
            "status": status.as_u16().to_string()}),
    )
}

/// GitHub's door: App endpoints check their JWT themselves (a missing one gets the JWT error
/// there); every other route takes the accepted personal access token or a live installation
/// token, and answers anything else 401 `Bad credentials`.
async fn auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    if app::takes_jwt(req.uri().path()) {
        return next.run(req).await;
    }
    let accepted = {
        let mut state = app.lock();
        if state.github.pat.is_empty() {
            state.github.pat = app.config.github_token.clone();
        }
        state.github.accepts(req.headers())
    };
    if accepted {
        next.run(req).await
    } else {
        json_response(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        )
    }
}

async fn dispatch(
    State(app): State<Shared>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    const DOC: &str = "/workflows#create-a-workflow-dispatch-event";
    let invalid = |message: &str| error(StatusCode::UNPROCESSABLE_ENTITY, message, DOC);
    let Some(wf) = WORKFLOWS.iter().find(|w| w.file == workflow || w.id.to_string() == workflow) else {
        return error(StatusCode::NOT_FOUND, "Not Found", DOC);
    };
    let body = match parse_body(&body) {
        Ok(Value::Object(body)) => body,
        Ok(_) | Err(_) => return error(StatusCode::BAD_REQUEST, "Problems parsing JSON", DOC),
    };
    let Some(git_ref) = body.get("ref").and_then(Value::as_str).filter(|r| !r.is_empty()) else {
        return invalid("Invalid request.\n\n\"ref\" wasn't supplied.");
    };
    let inputs = match body.get("inputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(inputs)) => inputs.clone(),
        Some(_) => {
            return invalid("Invalid request.\n\nFor 'properties/inputs', it is not an object.");
        }
    };
    let unexpected: Vec<&String> = inputs.keys().filter(|k| !wf.inputs.iter().any(|(n, _)| n == k)).collect();
    if !unexpected.is_empty() {
        return invalid(&format!("Unexpected inputs provided: {}", json!(unexpected)));
    }
    if let Some((missing, _)) = wf.inputs.iter().find(|(n, required)| *required && !inputs.contains_key(*n)) {
        return invalid(&format!("Required input '{missing}' not provided"));
    }
    let input = |name: &str| match inputs.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let full_repo = format!("{owner}/{repo}");
    let now = Utc::now();
    let display_title = wf.run_name.map_or_else(|| wf.name.to_owned(), |t| evaluate_run_name(t, &inputs));
    let (run_id, generation, outcome, reason) = {
        let mut state = app.lock();
        let generation = state.generation;
        let gh = &mut state.github;
        gh.next_run += 1;
        let run_id = 14_000_000_000 + gh.next_run * 37;
        gh.runs.insert(
            run_id,
            Run {
                id: run_id,
                number: gh.next_run,
                repo: full_repo.clone(),
                workflow: wf,
                git_ref: git_ref.to_owned(),
                head_sha: random_hex(40),
                display_title,
                created: now,
                updated: now,
                status: "queued",
                conclusion: None,
            },
        );
        gh.dispatches.push(json!({"workflow": wf.file, "repo": full_repo, "ref": git_ref,
            "inputs": inputs, "run_id": run_id, "at": zulu(now)}));
        (run_id, generation, gh.outcome, gh.fail_reason.clone())
    };
    tracing::info!(run_id, workflow = wf.file, "github: workflow dispatched");
    let job = Job {
        run_id,
        repo: full_repo.clone(),
        workflow: wf.file,
        git_ref: git_ref.to_owned(),
        generation,
        job_id: input("job_id"),
        agent_id: input("agent_id"),
        callback_url: input("callback_url"),
    };
    tokio::spawn(run_job(app.clone(), job, outcome, reason));
    if body.get("return_run_details").and_then(Value::as_bool) == Some(true) {
        let run_url = format!("{}/github/repos/{full_repo}/actions/runs/{run_id}", app.base_url);
        let html_url = format!("https://github.com/{full_repo}/actions/runs/{run_id}");
        json_response(
            StatusCode::OK,
            json!({"workflow_run_id": run_id, "run_url": run_url, "html_url": html_url}),
        )
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

async fn get_run(
    State(app): State<Shared>,
    Path((owner, repo, run_id)): Path<(String, String, String)>,
) -> Response {
    let state = app.lock();
    let full_repo = format!("{owner}/{repo}");
    match run_id.parse::<u64>().ok().and_then(|id| state.github.runs.get(&id)).filter(|r| r.repo == full_repo)
    {
        Some(run) => json_response(StatusCode::OK, run.to_json(&app.base_url)),
        None => error(StatusCode::NOT_FOUND, "Not Found", "/workflow-runs#get-a-workflow-run"),
    }
}

/// `GET /repos/{owner}/{repo}/actions/workflows/{workflow}/runs`: the workflow's runs (by file
/// name or id; an unknown workflow is 404).
async fn list_workflow_runs(
    State(app): State<Shared>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let Some(wf) = WORKFLOWS.iter().find(|w| w.file == workflow || w.id.to_string() == workflow) else {
        return error(StatusCode::NOT_FOUND, "Not Found", "/workflow-runs#list-workflow-runs-for-a-workflow");
    };
    let url = format!("{}/github/repos/{owner}/{repo}/actions/workflows/{workflow}/runs", app.base_url);
    list_runs(&app, &format!("{owner}/{repo}"), Some(wf.id), &query, &url)
}

/// `GET /repos/{owner}/{repo}/actions/runs`: every run of the repository.
async fn list_repo_runs(
    State(app): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let url = format!("{}/github/repos/{owner}/{repo}/actions/runs", app.base_url);
    list_runs(&app, &format!("{owner}/{repo}"), None, &query, &url)
}

/// One page of runs, newest first, filtered as GitHub documents: `actor`, `branch`, `event`,
/// `status` (a status or a conclusion), `created` (search syntax), `head_sha`,
/// `check_suite_id`; `per_page` (1..=100, default 30) and `page`, with a `Link` header while
/// other pages exist. A filter value no run can have lists nothing (GitHub does not refuse it).
fn list_runs(
    app: &Shared,
    full_repo: &str,
    workflow_id: Option<u64>,
    query: &[(String, String)],
    url: &str,
) -> Response {
    let param = |k: &str| query.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let created = param("created").map(CreatedRange::parse);
    let number =
        |k: &str, default: i64| param(k).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(default);
    let per_page = number("per_page", 30).clamp(1, 100) as usize;
    let page = number("page", 1).max(1) as usize;
    let state = app.lock();
    let mut runs: Vec<&Run> = state
        .github
        .runs
        .values()
        .filter(|r| r.repo.eq_ignore_ascii_case(full_repo))
        .filter(|r| workflow_id.is_none_or(|id| r.workflow.id == id))
        .filter(|r| param("actor").is_none_or(|a| a.eq_ignore_ascii_case(r.actor())))
        .filter(|r| param("branch").is_none_or(|b| r.branch() == b))
        .filter(|r| param("event").is_none_or(|e| e == r.event()))
        .filter(|r| param("status").is_none_or(|s| r.status == s || r.conclusion == Some(s)))
        .filter(|r| param("head_sha").is_none_or(|sha| r.head_sha == sha))
        .filter(|r| param("check_suite_id").is_none_or(|id| r.check_suite_id().to_string() == id))
        .filter(|r| match &created {
            None => true,
            Some(Some(range)) => range.contains(r.created),
            Some(None) => false,
        })
        .collect();
    runs.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    let total = runs.len();
    let body: Vec<Value> =
        runs.iter().skip((page - 1) * per_page).take(per_page).map(|r| r.to_json(&app.base_url)).collect();
    drop(state);
    let mut response = json_response(StatusCode::OK, json!({"total_count": total, "workflow_runs": body}));
    if let Some(link) = repos::page_links(url, query, page, total.div_ceil(per_page).max(1))
        && let Ok(value) = axum::http::HeaderValue::from_str(&link)
    {
        response.headers_mut().insert(axum::http::header::LINK, value);
    }
    response
}

/// `POST /_sandbox/github/runner` `{"outcome": "succeed"|"fail"|"silent"|"hold", "reason"?}`.
async fn set_runner(State(app): State<Shared>, body: Bytes) -> Response {
    let body = parse_body(&body).unwrap_or(Value::Null);
    let outcome = match body.get("outcome").and_then(Value::as_str) {
        Some("succeed") => Outcome::Succeed,
        Some("fail") => Outcome::Fail,
        Some("silent") => Outcome::Silent,
        Some("hold") => Outcome::Hold,
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "outcome must be succeed, fail, silent or hold"}),
            );
        }
    };
    let reason = body.get("reason").and_then(Value::as_str).map(str::to_owned);
    let mut state = app.lock();
    (state.github.outcome, state.github.fail_reason) = (outcome, reason.clone());
    json_response(StatusCode::OK, json!({"outcome": body["outcome"], "reason": reason}))
}

/// What one dispatched `provision-agent.yml` run needs to play its job.
struct Job {
    run_id: u64,
    repo: String,
    workflow: &'static str,
    git_ref: String,
    generation: u64,
    job_id: String,
    agent_id: String,
    callback_url: String,
}

/// Plays the provisioning job: running callback, VM joins the tailnet, final callback.
async fn run_job(app: Shared, job: Job, mut outcome: Outcome, mut reason: Option<String>) {
    // Held: queued until a runner is "free" (the outcome changes), then played as it says.
    while outcome == Outcome::Hold {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match app.with_current(job.generation, |s| (s.github.outcome, s.github.fail_reason.clone())) {
            Some(now) => (outcome, reason) = now,
            None => return,
        }
    }
    let step = Duration::from_millis(app.config.runner_step_ms);
    tokio::time::sleep(step).await;
    if app.with_current(job.generation, |s| s.github.set_run(job.run_id, "in_progress", None)).is_none()
        || outcome == Outcome::Silent
    {
        return;
    }
    let run_id = job.run_id.to_string();
    let running =
        json!({"job_id": job.job_id, "agent_id": job.agent_id, "status": "running", "run_id": run_id});
    post_callback(&app, &job, &running).await;
    tokio::time::sleep(step).await;
    let (last, conclusion) = if outcome == Outcome::Succeed {
        let joined = app.with_current(job.generation, |s| {
            let tailnet = s.tailscale.first_tailnet.clone().unwrap_or_else(|| "-".to_owned());
            let hostname = format!("slipway-{}", job.agent_id);
            s.tailscale.add_device(&hostname, vec!["tag:slipway-agent".to_owned()], &tailnet);
        });
        if joined.is_none() {
            return;
        }
        let done =
            json!({"job_id": job.job_id, "agent_id": job.agent_id, "status": "succeeded", "run_id": run_id});
        (done, "success")
    } else {
        let reason =
            reason.unwrap_or_else(|| "provisioning failed (sandbox runner outcome: fail)".to_owned());
        let failed = json!({"job_id": job.job_id, "agent_id": job.agent_id, "status": "failed",
            "run_id": run_id, "reason": reason});
        (failed, "failure")
    };
    post_callback(&app, &job, &last).await;
    app.with_current(job.generation, |s| s.github.set_run(job.run_id, "completed", Some(conclusion)));
}

/// POSTs a callback as the shipped `provision-agent.yml` does: the run's Actions OIDC token as
/// the bearer credential, and the HMAC fallback (`X-Slipway-Signature` over a body carrying its
/// `sent_at`). Retries on errors and non-2xx for about a minute.
async fn post_callback(app: &Shared, job: &Job, payload: &Value) {
    let mut payload = payload.clone();
    payload["sent_at"] = json!(Utc::now().timestamp());
    let body = serde_json::to_vec(&payload).expect("JSON values always serialize");
    let signature = format!("sha256={}", hmac_hex(&app.config.callback_secret, &body));
    let run = oidc::Run {
        repository: &job.repo,
        workflow: job.workflow,
        git_ref: &job.git_ref,
        run_id: job.run_id,
        audience: &app.config.actions_oidc_audience,
    };
    let token = oidc::mint(app, &run, 300);
    let mut attempts = Vec::new();
    // Like the shipped workflow's `curl --retry`: keep trying for about a minute (backoff from
    // 200 ms, capped at 4 s), so a callback outlives a Temporal restart or a busy starter.
    let started = tokio::time::Instant::now();
    for attempt in 0..40u32 {
        if attempt > 0 {
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
            tokio::time::sleep(Duration::from_millis((200u64 << (attempt - 1).min(5)).min(4_000))).await;
        }
        if app.with_current(job.generation, |_| ()).is_none() {
            return;
        }
        let result = app
            .http
            .post(&job.callback_url)
            .header("content-type", "application/json")
            .header("x-slipway-signature", &signature)
            .bearer_auth(&token)
            .body(body.clone())
            .send()
            .await;
        let (status, ok) = match &result {
            Ok(r) => (json!(r.status().as_u16()), r.status().is_success()),
            Err(e) => (json!(null), {
                tracing::warn!(url = %job.callback_url, error = %e, "runner callback failed");
                false
            }),
        };
        attempts.push(json!({"status": status, "at": zulu(Utc::now())}));
        if ok {
            break;
        }
    }
    app.with_current(job.generation, |s| {
        s.github.callbacks.push(json!({"run_id": job.run_id, "url": job.callback_url,
            "status": payload["status"], "attempts": attempts}));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_show_the_dispatch_inputs() {
        let inputs = json!({"agent_id": "a1", "correlation_id": "slipway-r1"});
        let inputs = inputs.as_object().unwrap();
        assert_eq!(evaluate_run_name(WORKFLOWS[0].run_name.unwrap(), inputs), "provision a1 [slipway-r1]");
        assert_eq!(evaluate_run_name("x ${{inputs.missing}} y", inputs), "x  y");
    }

    #[test]
    fn created_qualifiers_read_as_github_search_does() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let at = t("2026-03-01T10:00:00Z");
        let range = |q: &str| CreatedRange::parse(q).unwrap();
        assert!(range(">=2026-03-01T10:00:00Z").contains(at));
        assert!(!range(">2026-03-01T10:00:00Z").contains(at));
        assert!(range("<2026-03-02").contains(at));
        assert!(!range("<=2026-02-28").contains(at));
        assert!(range("2026-03-01").contains(at));
        assert!(range("2026-02-01..2026-03-01").contains(at));
        assert!(range("2026-03-01T09:00:00Z..*").contains(at));
        assert!(!range("*..2026-03-01T09:59:59Z").contains(at));
        assert_eq!(CreatedRange::parse(">=yesterday"), None);
    }
}
