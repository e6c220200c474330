//! Vercel REST API (`/vercel`, real base `https://api.vercel.com`).
//!
//! The product gives each customer a Vercel project linked to the GitHub repository it
//! generated, sets environment variables and deploys production, so those calls are
//! emulated with Vercel's versioned paths and `{"error": {"code", "message"}}` bodies. A
//! missing token answers 403 `forbidden` (`missingToken`), one other than the configured
//! `VERCEL_TOKEN` 403 `forbidden` (`invalidToken`), as Vercel does.
//!
//! Every object belongs to an account: the `teamId` query parameter when given, else the
//! token's personal account. Projects and deployments of another account are invisible, as
//! in production, and each call's `teamId` is recorded (`/_sandbox/state`, `vercel.calls`).
//! A Git link must name a repository that exists in the sandbox's GitHub, which is how the
//! real API refuses repositories its GitHub app cannot see.
//!
//! `GET /v10/projects` lists an account's projects most recently updated first, paged by
//! timestamp as Vercel's `pagination` object describes: `until=<pagination.next>` gives the next
//! (older) page, `from=<pagination.prev>` the previous one. No two projects share a millisecond,
//! so those timestamps never skip or repeat a project.
//!
//! Deployments are not driven by timers: their `readyState` follows from their age, `QUEUED`
//! for the first third of `vercel_ready_ms`, then `BUILDING`, then `READY`, when production
//! deployments also get the `<project>.vercel.app` alias. Deleting a project deletes its
//! deployments. Variable values are never answered; the inventory shows only `plain` ones.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::state::{Shared, credential, json_response, parse_body, random_alnum, random_lower};

/// Account of requests without `teamId` (real ids are opaque; this one is made up).
const PERSONAL_ACCOUNT: &str = "user_sandbox";
/// Recorded calls kept for the inventory; older ones are dropped first.
const CALLS_CAP: usize = 1000;
const TARGETS: &[&str] = &["production", "preview", "development"];
const ENV_TYPES: &[&str] = &["system", "secret", "encrypted", "plain", "sensitive"];

type Params = Query<Vec<(String, String)>>;

#[derive(Default)]
pub(crate) struct VercelState {
    projects: Vec<Project>,
    deployments: Vec<Deployment>,
    calls: Vec<Value>,
}

struct Project {
    id: String,
    name: String,
    account: String,
    created: DateTime<Utc>,
    framework: Option<String>,
    link: Option<Link>,
    env: Vec<EnvVar>,
}

struct Link {
    org: String,
    repo: String,
    repo_id: u64,
}

struct EnvVar {
    id: String,
    key: String,
    value: String,
    target: Vec<String>,
    kind: String,
    created: DateTime<Utc>,
}

struct Deployment {
    id: String,
    name: String,
    url: String,
    account: String,
    project_id: String,
    project_name: String,
    target: Option<String>,
    created: DateTime<Utc>,
    git: Link,
    git_ref: String,
}

impl Project {
    /// `updatedAt` in ms: nothing changes a project's own settings in the sandbox, so it is its
    /// creation time.
    fn updated_ms(&self) -> i64 {
        self.created.timestamp_millis()
    }

    fn to_json(&self, plain_values: bool) -> Value {
        let created = self.created.timestamp_millis();
        let link = self.link.as_ref().map(|l| {
            json!({"type": "github", "org": l.org, "repo": l.repo, "repoId": l.repo_id,
                "repoOwnerId": 1, "gitCredentialId": "cred_slipwaysandbox", "sourceless": false,
                "productionBranch": "main", "deployHooks": [], "createdAt": created, "updatedAt": created})
        });
        let env: Vec<Value> = self.env.iter().map(|e| e.to_json(plain_values)).collect();
        let regions = json!({"functionDefaultRegions": ["iad1"]});
        let mut project = json!({"id": self.id, "name": self.name, "accountId": self.account,
            "createdAt": created, "updatedAt": self.updated_ms(), "framework": self.framework,
            "nodeVersion": "22.x", "env": env,
            "directoryListing": false, "resourceConfig": regions, "defaultResourceConfig": regions,
            // No domain is assigned before the first deployment; Vercel's default retention.
            "alias": [], "deploymentExpiration": {"expirationDays": 180, "expirationDaysProduction": 365,
                "expirationDaysCanceled": 30, "expirationDaysErrored": 90, "deploymentsToKeep": 10}});
        // A project without a Git repository has no `link` at all (the description allows no null).
        if let Some(link) = link {
            project["link"] = link;
        }
        project
    }

    fn is(&self, id_or_name: &str, account: &str) -> bool {
        self.account == account && (self.id == id_or_name || self.name == id_or_name)
    }
}

impl EnvVar {
    fn to_json(&self, plain_values: bool) -> Value {
        let at = self.created.timestamp_millis();
        let mut env = json!({"id": self.id, "key": self.key, "target": self.target, "type": self.kind,
            "createdAt": at, "updatedAt": at});
        // `value` is always present (Vercel's description requires it): the value itself for a
        // plain variable when asked, otherwise an opaque stand-in, never the secret.
        env["value"] = if plain_values && self.kind == "plain" {
            json!(self.value)
        } else {
            json!(format!("enc_{}", crate::state::random_hex(24)))
        };
        env
    }
}

impl Deployment {
    fn ready_state(&self, now: DateTime<Utc>, ready_ms: u64) -> &'static str {
        let elapsed = (now - self.created).num_milliseconds().max(0) as u64;
        if elapsed >= ready_ms {
            "READY"
        } else if elapsed >= ready_ms / 3 {
            "BUILDING"
        } else {
            "QUEUED"
        }
    }

    fn to_json(&self, now: DateTime<Utc>, ready_ms: u64) -> Value {
        let state = self.ready_state(now, ready_ms);
        let created = self.created.timestamp_millis();
        let ready = (state == "READY").then_some(created + ready_ms as i64);
        let production = self.target.as_deref() == Some("production");
        let alias: Vec<String> = (ready.is_some() && production)
            .then(|| format!("{}.vercel.app", self.project_name))
            .into_iter()
            .collect();
        let mut deployment = json!({
            "id": self.id, "name": self.name, "url": self.url, "readyState": state, "status": state,
            "projectId": self.project_id, "ownerId": self.account, "target": self.target, "type": "LAMBDAS",
            "createdAt": created, "bootedAt": created, "buildingAt": created + ready_ms as i64 / 3,
            "alias": alias, "aliasAssigned": production && ready.is_some(), "buildSkipped": false,
            "inspectorUrl": format!("https://vercel.com/{}/{}/{}", self.account, self.project_name,
                self.id.trim_start_matches("dpl_")),
            // The `repoId` form Vercel answers for deployments created from a linked repository.
            "gitSource": {"type": "github", "repoId": self.git.repo_id, "ref": self.git_ref, "prId": null},
            "meta": {"githubOrg": self.git.org, "githubRepo": self.git.repo, "githubCommitRef": self.git_ref},
            "regions": ["iad1"], "public": false, "version": 2,
        });
        let more = json!({
            "build": {"env": []}, "env": [], "isInConcurrentBuildsQueue": false, "isInSystemBuildsQueue": false,
            "projectSettings": {}, "creator": {"uid": self.account, "username": "slipway"}, "plan": "hobby",
            "createdIn": "iad1", "routes": null, "lambdas": [], "aliasError": null,
        });
        if let (Some(d), Value::Object(more)) = (deployment.as_object_mut(), more) {
            d.extend(more);
            if let Some(at) = ready {
                d.insert("ready".into(), json!(at));
            }
        }
        deployment
    }
}

impl VercelState {
    pub(crate) fn dump(&self, ready_ms: u64) -> Value {
        let now = Utc::now();
        let projects: Vec<Value> = self.projects.iter().map(|p| p.to_json(true)).collect();
        let deployments: Vec<Value> = self.deployments.iter().map(|d| d.to_json(now, ready_ms)).collect();
        json!({"projects": projects, "deployments": deployments, "calls": self.calls})
    }

    fn project(&mut self, id_or_name: &str, account: &str) -> Option<&mut Project> {
        self.projects.iter_mut().find(|p| p.is(id_or_name, account))
    }

    /// A new project of `account`, created now, or a millisecond after the newest project when
    /// that is not earlier: timestamps are the list's page boundaries, so they must not repeat.
    fn new_project(
        &self,
        name: &str,
        account: &str,
        framework: Option<String>,
        link: Option<Link>,
    ) -> Project {
        let newest = self.projects.iter().map(|p| p.created.timestamp_millis()).max();
        let ms = Utc::now().timestamp_millis().max(newest.map_or(i64::MIN, |n| n + 1));
        Project {
            id: format!("prj_{}", random_alnum(28)),
            name: name.to_owned(),
            account: account.to_owned(),
            created: DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now),
            framework,
            link,
            env: vec![],
        }
    }

    /// One page of `account`'s projects whose name contains `search`, most recently updated
    /// first: the `limit` newest before `until` (ms), or, given only `from`, the `limit` oldest
    /// after it (the page before the one that starts there), shown newest first. With the page,
    /// `next` (its last `updatedAt`, when older projects remain) and `prev` (its first, when
    /// newer ones exist).
    fn project_page(
        &self,
        account: &str,
        search: &str,
        limit: usize,
        from: Option<i64>,
        until: Option<i64>,
    ) -> (Vec<&Project>, Option<i64>, Option<i64>) {
        let mut matching: Vec<&Project> =
            self.projects.iter().filter(|p| p.account == account && p.name.contains(search)).collect();
        matching.sort_by_key(|p| std::cmp::Reverse(p.updated_ms()));
        let window: Vec<&Project> = matching
            .iter()
            .copied()
            .filter(|p| from.is_none_or(|t| p.updated_ms() > t) && until.is_none_or(|t| p.updated_ms() < t))
            .collect();
        let page: Vec<&Project> = if from.is_some() && until.is_none() {
            window[window.len().saturating_sub(limit)..].to_vec()
        } else {
            window.into_iter().take(limit).collect()
        };
        let next =
            page.last().map(|p| p.updated_ms()).filter(|t| matching.iter().any(|p| p.updated_ms() < *t));
        let prev =
            page.first().map(|p| p.updated_ms()).filter(|t| matching.iter().any(|p| p.updated_ms() > *t));
        (page, next, prev)
    }
}

pub(crate) fn router(app: Shared) -> Router<Shared> {
    Router::new()
        .route("/v11/projects", post(create_project))
        .route("/v10/projects", get(list_projects).post(create_project))
        .route("/v9/projects/{id_or_name}", get(get_project).delete(delete_project))
        .route("/v10/projects/{id_or_name}/env", post(create_env))
        .route("/v13/deployments", post(create_deployment))
        .route("/v13/deployments/{id_or_url}", get(get_deployment))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "Not Found") })
        .layer(from_fn_with_state(app, guard))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": {"code": code, "message": message}}))
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", &format!("Invalid request: {message}"))
}

fn project_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "Project not found")
}

/// The account a request acts on: `teamId`, else the personal account.
fn account(query: &[(String, String)]) -> String {
    query.iter().find(|(k, _)| k == "teamId").map_or(PERSONAL_ACCOUNT, |(_, v)| v.as_str()).to_owned()
}

/// Authentication, and the record of each call's `teamId`.
async fn guard(State(app): State<Shared>, req: Request, next: Next) -> Response {
    match credential(req.headers()) {
        None => {
            return json_response(
                StatusCode::FORBIDDEN,
                json!({"error": {"code": "forbidden", "message": "The request is missing an authentication token",
                    "missingToken": true}}),
            );
        }
        Some(token) if token != app.config.vercel_token => {
            return json_response(
                StatusCode::FORBIDDEN,
                json!({"error": {"code": "forbidden", "message": "Not authorized", "invalidToken": true}}),
            );
        }
        Some(_) => {}
    }
    let team = url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "teamId")
        .map(|(_, v)| v.into_owned());
    {
        let mut state = app.lock();
        let calls = &mut state.vercel.calls;
        if calls.len() >= CALLS_CAP {
            calls.remove(0);
        }
        calls.push(json!({"method": req.method().as_str(), "path": req.uri().path(), "teamId": team}));
    }
    next.run(req).await
}

/// Vercel's project name rule.
fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && !name.contains("---")
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

const NAME_RULE: &str = "The name of a Project can only contain up to 100 lowercase alphanumeric characters \
     and the characters `.`, `_` and `-`, and cannot contain `---`.";

/// A variable from a request: (key, value, target, type). `type` defaults to `encrypted`.
/// Errors are the text for [`bad_request`].
fn parse_env(env: &Value) -> Result<(String, String, Vec<String>, String), &'static str> {
    let text = |field: &str| env.get(field).and_then(Value::as_str).map(str::to_owned);
    let Some(key) = text("key").filter(|k| !k.is_empty()) else {
        return Err("missing required property `key`.");
    };
    let Some(value) = text("value") else {
        return Err("missing required property `value`.");
    };
    let target: Vec<String> = match env.get("target") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    if target.is_empty() || target.iter().any(|t| !TARGETS.contains(&t.as_str())) {
        return Err("`target` must be a non-empty list of production, preview, development.");
    }
    let kind = text("type").unwrap_or_else(|| "encrypted".to_owned());
    if !ENV_TYPES.contains(&kind.as_str()) {
        return Err("`type` must be one of system, secret, encrypted, plain, sensitive.");
    }
    Ok((key, value, target, kind))
}

fn new_env((key, value, target, kind): (String, String, Vec<String>, String)) -> EnvVar {
    EnvVar { id: random_alnum(16), key, value, target, kind, created: Utc::now() }
}

/// `GET /v10/projects?search=&limit=&from=&until=&teamId=`: the account's projects (see
/// [`VercelState::project_page`]) with Vercel's `pagination` (`count`, `next`, `prev`).
/// `until` is what Vercel's own clients page forward with; the description names only `from`.
/// Its other filters (repository, Edge Config, build machine and the like) match nothing the
/// sandbox keeps and are ignored.
async fn list_projects(State(app): State<Shared>, Query(query): Params) -> Response {
    let account = account(&query);
    let param = |k: &str| query.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let search = param("search").unwrap_or_default();
    // Guess: the wording of Vercel's query validation, in the shape of its other 400s.
    if search.chars().count() > 100 {
        return bad_request("`search` should NOT be longer than 100 characters.");
    }
    // Guess: Vercel's default page size of 20, which its CLI also asks for.
    let limit = match param("limit").filter(|v| !v.is_empty()) {
        None => 20,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return bad_request("`limit` must be a number from 1 to 100."),
        },
    };
    let mut stamps = [None, None];
    for (slot, key) in stamps.iter_mut().zip(["from", "until"]) {
        *slot = match param(key).filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(ms) => Some(ms),
                Err(_) => return bad_request(&format!("`{key}` must be a timestamp in milliseconds.")),
            },
        };
    }
    let [from, until] = stamps;
    let state = app.lock();
    let (page, next, prev) =
        state.vercel.project_page(&account, &search.to_ascii_lowercase(), limit, from, until);
    let projects: Vec<Value> = page.iter().map(|p| p.to_json(false)).collect();
    let pagination = json!({"count": projects.len(), "next": next, "prev": prev});
    json_response(StatusCode::OK, json!({"projects": projects, "pagination": pagination}))
}

/// `POST /v11/projects` (and the older `/v10/projects`).
async fn create_project(State(app): State<Shared>, Query(query): Params, body: Bytes) -> Response {
    let account = account(&query);
    let Ok(body) = parse_body(&body).and_then(|b| if b.is_object() { Ok(b) } else { Err(String::new()) })
    else {
        return bad_request("the body must be a JSON object.");
    };
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return bad_request("missing required property `name`.");
    };
    if !valid_name(name) {
        return bad_request(NAME_RULE);
    }
    let framework = body.get("framework").and_then(Value::as_str).map(str::to_owned);
    let git = match body.get("gitRepository") {
        None | Some(Value::Null) => None,
        Some(repo) => {
            match (repo.get("type").and_then(Value::as_str), repo.get("repo").and_then(Value::as_str)) {
                (Some("github"), Some(full)) if full.split('/').count() == 2 => full.split_once('/'),
                (Some("github"), _) => return bad_request("`gitRepository.repo` must be `owner/name`."),
                _ => return bad_request("only `github` repositories can be linked in the sandbox."),
            }
        }
    };
    let env = match body.get("environmentVariables") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => match list.iter().map(parse_env).collect::<Result<Vec<_>, _>>() {
            Ok(env) => env,
            Err(e) => return bad_request(e),
        },
        Some(_) => return bad_request("`environmentVariables` must be an array."),
    };
    let mut state = app.lock();
    if state.vercel.projects.iter().any(|p| p.is(name, &account)) {
        // Guess: the real wording is not documented; the code is.
        return error(StatusCode::CONFLICT, "conflict", "Project already exists");
    }
    let link = match git {
        None => None,
        Some((org, repo)) => match state.github.repo_id(org, repo) {
            Some(repo_id) => Some(Link { org: org.to_owned(), repo: repo.to_owned(), repo_id }),
            // `repo_not_found` is what Vercel clients handle; the wording is a guess.
            None => {
                let message = format!(
                    "The repository \"{org}/{repo}\" couldn't be found in your linked GitHub account."
                );
                return error(StatusCode::BAD_REQUEST, "repo_not_found", &message);
            }
        },
    };
    let mut project = state.vercel.new_project(name, &account, framework, link);
    project.env = env.into_iter().map(new_env).collect();
    tracing::info!(project = %project.id, name, "vercel: project created");
    let body = project.to_json(false);
    state.vercel.projects.push(project);
    json_response(StatusCode::OK, body)
}

async fn get_project(State(app): State<Shared>, Path(id): Path<String>, Query(query): Params) -> Response {
    match app.lock().vercel.project(&id, &account(&query)) {
        Some(project) => json_response(StatusCode::OK, project.to_json(false)),
        None => project_not_found(),
    }
}

async fn delete_project(State(app): State<Shared>, Path(id): Path<String>, Query(query): Params) -> Response {
    let account = account(&query);
    let mut state = app.lock();
    let v = &mut state.vercel;
    let Some(index) = v.projects.iter().position(|p| p.is(&id, &account)) else {
        return project_not_found();
    };
    let project = v.projects.remove(index);
    v.deployments.retain(|d| d.project_id != project.id);
    tracing::info!(project = %project.id, "vercel: project deleted");
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /v10/projects/{idOrName}/env` with one variable or an array; `?upsert=true`
/// replaces a variable with the same key and an overlapping target instead of failing.
async fn create_env(
    State(app): State<Shared>,
    Path(id): Path<String>,
    Query(query): Params,
    body: Bytes,
) -> Response {
    let upsert = query.iter().any(|(k, v)| k == "upsert" && v == "true");
    let (items, single) = match parse_body(&body) {
        Ok(Value::Array(items)) => (items, false),
        Ok(item @ Value::Object(_)) => (vec![item], true),
        _ => return bad_request("the body must be a variable object or an array of them."),
    };
    let parsed = match items.iter().map(parse_env).collect::<Result<Vec<_>, _>>() {
        Ok(parsed) => parsed,
        Err(e) => return bad_request(e),
    };
    let mut state = app.lock();
    let Some(project) = state.vercel.project(&id, &account(&query)) else {
        return project_not_found();
    };
    let (mut created, mut failed) = (Vec::new(), Vec::new());
    for item in parsed {
        let clash =
            project.env.iter().position(|e| e.key == item.0 && e.target.iter().any(|t| item.2.contains(t)));
        match clash {
            Some(i) if upsert => {
                let id = project.env[i].id.clone();
                project.env[i] = EnvVar { id, ..new_env(item) };
                created.push(project.env[i].to_json(false));
            }
            // Guess: code and wording of the conflict are not in the reference.
            Some(i) => {
                let (key, target) = (&item.0, item.2.join(", "));
                let message =
                    format!("A variable with the name `{key}` already exists for the target {target}.");
                failed.push(json!({"error": {"code": "ENV_CONFLICT", "message": message, "key": key,
                    "envVarId": project.env[i].id}}));
            }
            None => {
                project.env.push(new_env(item));
                created.push(project.env.last().map(|e| e.to_json(false)).unwrap_or_default());
            }
        }
    }
    if single && created.is_empty() {
        return json_response(StatusCode::BAD_REQUEST, failed.pop().unwrap_or_default());
    }
    let created = if single { created.pop().unwrap_or_default() } else { Value::from(created) };
    json_response(StatusCode::CREATED, json!({"created": created, "failed": failed}))
}

/// `POST /v13/deployments` of a Git source: `gitSource` (`repoId` or `org` + `repo`, and
/// `ref`), or the project's own link. The project is `project` (id or name), else the one
/// named `name`, which is created when missing, as Vercel does.
async fn create_deployment(State(app): State<Shared>, Query(query): Params, body: Bytes) -> Response {
    let account = account(&query);
    let Ok(body) = parse_body(&body) else {
        return bad_request("the body must be a JSON object.");
    };
    let Some(name) = body.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return bad_request("missing required property `name`.");
    };
    let target = match body.get("target") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t == "production" || t == "staging" => Some(t.clone()),
        Some(_) => return bad_request("`target` must be `production`, `staging` or null."),
    };
    let source = body.get("gitSource").filter(|s| !s.is_null());
    if source.is_some_and(|s| s.get("type").and_then(Value::as_str) != Some("github")) {
        return bad_request("only `github` sources can be deployed in the sandbox.");
    }
    let text = |field: &str| source.and_then(|s| s.get(field)).and_then(Value::as_str);
    let git_ref = text("ref").unwrap_or("main").to_owned();
    let repo_id = source.and_then(|s| s.get("repoId")).and_then(|id| match id {
        Value::String(s) => s.parse::<u64>().ok(),
        other => other.as_u64(),
    });

    let mut state = app.lock();
    let state = &mut *state;
    let git = match (source, repo_id, text("org"), text("repo")) {
        (None, ..) => None,
        (Some(_), Some(id), ..) => {
            state.github.repo_by_id(id).map(|(org, repo)| Link { org, repo, repo_id: id })
        }
        (Some(_), None, Some(org), Some(repo)) => state.github.repo_id(org, repo).map(|id| Link {
            org: org.to_owned(),
            repo: repo.to_owned(),
            repo_id: id,
        }),
        (Some(_), None, ..) => None,
    };
    if source.is_some() && git.is_none() {
        // Guess: the code Vercel uses for a Git source it cannot resolve.
        let message = "The provided GitHub repository can't be found.";
        return error(StatusCode::BAD_REQUEST, "incorrect_git_source_info", message);
    }
    let v = &mut state.vercel;
    let project = match body.get("project").and_then(Value::as_str) {
        Some(id) => match v.projects.iter().position(|p| p.is(id, &account)) {
            Some(i) => i,
            None => return project_not_found(),
        },
        None => match v.projects.iter().position(|p| p.is(name, &account)) {
            Some(i) => i,
            None if valid_name(name) => {
                let project = v.new_project(name, &account, None, None);
                v.projects.push(project);
                v.projects.len() - 1
            }
            None => return bad_request(NAME_RULE),
        },
    };
    let project = &v.projects[project];
    let linked =
        project.link.as_ref().map(|l| Link { org: l.org.clone(), repo: l.repo.clone(), repo_id: l.repo_id });
    let Some(git) = git.or(linked) else {
        // Guess: what Vercel says to a deployment with neither files nor a Git source.
        return error(StatusCode::BAD_REQUEST, "missing_files", "Missing files");
    };
    let deployment = Deployment {
        id: format!("dpl_{}", random_alnum(28)),
        name: name.to_owned(),
        url: format!("{name}-{}.vercel.app", random_lower(9)),
        account: account.clone(),
        project_id: project.id.clone(),
        project_name: project.name.clone(),
        target,
        created: Utc::now(),
        git,
        git_ref,
    };
    tracing::info!(deployment = %deployment.id, project = %deployment.project_id, "vercel: deployment created");
    let body = deployment.to_json(deployment.created, app.config.vercel_ready_ms);
    v.deployments.push(deployment);
    json_response(StatusCode::OK, body)
}

async fn get_deployment(State(app): State<Shared>, Path(id): Path<String>, Query(query): Params) -> Response {
    let account = account(&query);
    let host = id.trim_start_matches("https://");
    let state = app.lock();
    match state.vercel.deployments.iter().find(|d| d.account == account && (d.id == id || d.url == host)) {
        Some(d) => json_response(StatusCode::OK, d.to_json(Utc::now(), app.config.vercel_ready_ms)),
        // Guess: the wording of a missing deployment.
        None => error(StatusCode::NOT_FOUND, "not_found", "Deployment not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Projects `names` of `account`, created in that order.
    fn with_projects(v: &mut VercelState, account: &str, names: &[&str]) {
        for name in names {
            let project = v.new_project(name, account, None, None);
            v.projects.push(project);
        }
    }

    fn names(page: &[&Project]) -> Vec<String> {
        page.iter().map(|p| p.name.clone()).collect()
    }

    #[test]
    fn project_timestamps_never_repeat() {
        let mut v = VercelState::default();
        with_projects(&mut v, "team_a", &["a", "b", "c", "d", "e"]);
        let stamps: Vec<i64> = v.projects.iter().map(Project::updated_ms).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    }

    #[test]
    fn project_pages_follow_next_and_prev() {
        let mut v = VercelState::default();
        with_projects(&mut v, "team_a", &["shop-1", "blog-2", "shop-3", "shop-4", "shop-5"]);
        with_projects(&mut v, "team_b", &["shop-6"]);
        let at = |name: &str| v.projects.iter().find(|p| p.name == name).map(Project::updated_ms);

        let (page, next, prev) = v.project_page("team_a", "", 2, None, None);
        assert_eq!(
            (names(&page), next, prev),
            (vec!["shop-5".to_owned(), "shop-4".into()], at("shop-4"), None)
        );
        let (page, next, prev) = v.project_page("team_a", "", 2, None, next);
        assert_eq!(
            (names(&page), next, prev),
            (vec!["shop-3".to_owned(), "blog-2".into()], at("blog-2"), at("shop-3"))
        );
        let (last, end, back) = v.project_page("team_a", "", 2, None, next);
        assert_eq!((names(&last), end, back), (vec!["shop-1".to_owned()], None, at("shop-1")));
        // `from` a page's `prev` gives the page before it.
        let (page, _, _) = v.project_page("team_a", "", 2, back, None);
        assert_eq!(names(&page), ["shop-3", "blog-2"]);
        let (page, _, prev) = v.project_page("team_a", "", 2, prev, None);
        assert_eq!((names(&page), prev), (vec!["shop-5".to_owned(), "shop-4".into()], None));

        let (page, next, prev) = v.project_page("team_a", "shop", 10, None, None);
        assert_eq!((names(&page).len(), next, prev), (4, None, None));
        assert_eq!(names(&v.project_page("team_b", "", 10, None, None).0), ["shop-6"]);
        assert!(v.project_page("user_sandbox", "", 10, None, None).0.is_empty());
        let (page, next, prev) = v.project_page("team_a", "", 10, at("shop-1"), at("shop-4"));
        assert_eq!(
            (names(&page), next, prev),
            (vec!["shop-3".to_owned(), "blog-2".into()], at("blog-2"), at("shop-3"))
        );
    }
}
