//! The GitHub App: installations, app JWTs, installation access tokens and collaborator
//! permissions.
//!
//! The product authenticates as the app with an RS256 JWT (`iss` = app id, `exp - iat` at
//! most 10 minutes), exchanges it for an installation token (`ghs_...`, one hour) and then
//! acts on the installation's repositories with that token. Each step is checked like GitHub
//! does, so expired JWTs, wrong keys, stale tokens and tokens of the wrong installation fail
//! here rather than in production. The JWT is verified with the configured public key
//! (`SandboxConfig::github_app_public_key_pem`), allowing 60 s of clock skew either way.
//!
//! There is no GitHub UI to install the app, so `POST /_sandbox/github/installations` does it:
//! it creates the account's installation and seeds each repository with a `main` branch and
//! one commit. Token values never appear in `/_sandbox/state`; only a count per installation.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};

use super::git::GitRepo;
use super::{Failure, GithubState, control_error, fail, repo_key};
use crate::github_events::{APP_EVENTS, RepoFacts, integration, repository_object, stable_id, user};
use crate::state::{App, Shared, credential, json_response, parse_body, random_alnum, zulu};

const REST_DOCS: &str = "https://docs.github.com/rest";
const APPS_DOCS: &str = "https://docs.github.com/rest/apps/apps";
/// Seconds of clock skew tolerated on `iat` and `exp`.
const SKEW_SECS: i64 = 60;
/// GitHub's cap on a JWT's lifetime.
const MAX_JWT_SECS: i64 = 600;
const UNDECODABLE: &str = "A JSON web token could not be decoded";
const BAD_IAT: &str =
    "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued";
const BAD_EXP: &str = "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires";
const EXP_TOO_FAR: &str = "'Expiration time' claim ('exp') is too far in the future";
/// Roles a collaborator can have, strongest first.
const ROLES: &[&str] = &["admin", "maintain", "write", "triage", "read", "none"];

/// What a repository gets when the installation request names no files.
fn default_files(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("README.md".to_owned(), format!("# {name}\n")),
        ("src/lib.rs".to_owned(), "pub fn add(a: i32, b: i32) -> i32 { a + b }\n".to_owned()),
    ])
}

/// The permissions every installation is granted.
fn granted_permissions() -> Map<String, Value> {
    let granted =
        json!({"contents": "write", "issues": "write", "pull_requests": "write", "metadata": "read"});
    granted.as_object().cloned().unwrap_or_default()
}

#[derive(Default)]
pub(super) struct AppState {
    installations: BTreeMap<u64, Installation>,
    tokens: Vec<Token>,
    /// Tokens issued per installation id.
    tokens_issued: BTreeMap<u64, u64>,
}

struct Installation {
    id: u64,
    account: String,
    account_type: &'static str,
    /// `owner/name` of each repository, as created.
    repos: Vec<String>,
    created: DateTime<Utc>,
}

struct Token {
    value: String,
    /// Repository keys the token may act on.
    repos: Vec<String>,
    expires: DateTime<Utc>,
}

impl Installation {
    fn to_json(&self, app: &App) -> Value {
        let account_id = stable_id("user", &self.account);
        let html_url = if self.account_type == "User" {
            format!("https://github.com/settings/installations/{}", self.id)
        } else {
            format!("https://github.com/organizations/{}/settings/installations/{}", self.account, self.id)
        };
        let app_id = app
            .config
            .github_app_id
            .parse::<u64>()
            .map_or_else(|_| json!(app.config.github_app_id), Value::from);
        json!({
            "id": self.id,
            "account": {"login": self.account, "id": account_id, "node_id": format!("O_kgDO{account_id}"),
                "type": self.account_type, "site_admin": false,
                "html_url": format!("https://github.com/{}", self.account)},
            "repository_selection": "selected",
            "access_tokens_url":
                format!("{}/github/app/installations/{}/access_tokens", app.base_url, self.id),
            "repositories_url": format!("{}/github/installation/repositories", app.base_url),
            "html_url": html_url, "app_id": app_id, "app_slug": "slipway",
            "target_id": account_id, "target_type": self.account_type,
            "permissions": granted_permissions(), "events": APP_EVENTS,
            "created_at": zulu(self.created), "updated_at": zulu(self.created),
            "single_file_name": null, "has_multiple_single_files": false, "single_file_paths": [],
            "suspended_by": null, "suspended_at": null,
        })
    }

    fn covers(&self, key: &str) -> bool {
        self.repos.iter().any(|r| r.eq_ignore_ascii_case(key))
    }
}

impl AppState {
    pub(super) fn dump_installations(&self) -> Value {
        self.installations
            .values()
            .map(|i| {
                json!({"id": i.id, "account": i.account, "account_type": i.account_type, "repos": i.repos,
                    "created_at": zulu(i.created)})
            })
            .collect()
    }

    pub(super) fn dump_tokens_issued(&self) -> Value {
        self.tokens_issued.iter().map(|(id, n)| (id.to_string(), json!(n))).collect::<Map<_, _>>().into()
    }
}

/// Paths that authenticate with the app's JWT rather than a token.
pub(super) fn takes_jwt(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    segments.first() == Some(&"app") || matches!(segments.as_slice(), ["repos", _, _, "installation"])
}

fn unauthorized(message: &'static str) -> Failure {
    Failure::new(StatusCode::UNAUTHORIZED, message, REST_DOCS)
}

/// Checks the request's `Authorization: Bearer <JWT>` like GitHub does for app endpoints.
pub(super) fn verify_jwt(app: &App, headers: &HeaderMap) -> Result<(), Failure> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default().trim();
    let Some(token) = value.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer ")).map(|_| value[7..].trim())
    else {
        return Err(unauthorized(UNDECODABLE));
    };
    let key = DecodingKey::from_rsa_pem(app.config.github_app_public_key_pem.as_bytes())
        .map_err(|_| unauthorized(UNDECODABLE))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|_| unauthorized(UNDECODABLE))?
        .claims;
    // GitHub takes the app id as a number or a string.
    let issuer = match claims.get("iss") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if issuer != app.config.github_app_id {
        return Err(unauthorized(UNDECODABLE));
    }
    let now = Utc::now().timestamp();
    let Some(iat) = claims.get("iat").and_then(Value::as_i64).filter(|iat| *iat <= now + SKEW_SECS) else {
        return Err(unauthorized(BAD_IAT));
    };
    let Some(exp) = claims.get("exp").and_then(Value::as_f64).filter(|exp| *exp > (now - SKEW_SECS) as f64)
    else {
        return Err(unauthorized(BAD_EXP));
    };
    if exp - iat as f64 > MAX_JWT_SECS as f64 || exp > (now + MAX_JWT_SECS + SKEW_SECS) as f64 {
        return Err(unauthorized(EXP_TOO_FAR));
    }
    Ok(())
}

impl GithubState {
    /// The unexpired installation token the request carries (`Bearer` or `token` scheme).
    fn live_token(&self, headers: &HeaderMap) -> Result<&Token, Failure> {
        let now = Utc::now();
        credential(headers)
            .and_then(|c| self.app.tokens.iter().find(|t| t.value == c && t.expires > now))
            .ok_or_else(|| unauthorized("Bad credentials"))
    }

    /// The key of repository `owner/name` if the request carries a live installation token
    /// that may act on it: 401 `Bad credentials` for any other credential, 404 when the
    /// token's installation does not cover the repository (GitHub hides what it cannot show).
    pub(super) fn authorize(
        &self,
        headers: &HeaderMap,
        owner: &str,
        name: &str,
        doc: &str,
    ) -> Result<String, Failure> {
        let key = repo_key(owner, name);
        let covered = if self.is_pat(headers) {
            // A personal access token of an account with access to every sandbox repository.
            true
        } else {
            self.live_token(headers)?.repos.contains(&key)
        };
        if !covered || !self.git.contains_key(&key) {
            return Err(Failure::new(StatusCode::NOT_FOUND, "Not Found", doc));
        }
        Ok(key)
    }

    /// True for a credential GitHub would take on a REST route: the accepted personal access
    /// token or a live installation token.
    pub(crate) fn accepts(&self, headers: &HeaderMap) -> bool {
        self.is_pat(headers) || self.live_token(headers).is_ok()
    }

    /// True when the request carries the accepted personal access token.
    pub(super) fn is_pat(&self, headers: &HeaderMap) -> bool {
        credential(headers).is_some_and(|c| c == self.pat)
    }

    /// True when the request's credential may see the private repository `key` (lowercase
    /// `owner/name`): the personal access token sees every one, a live installation token those
    /// its installation covers. Public repositories are visible to either.
    pub(super) fn sees_private(&self, headers: &HeaderMap, key: &str) -> bool {
        self.is_pat(headers) || self.live_token(headers).is_ok_and(|t| t.repos.iter().any(|r| r == key))
    }

    /// The installed repository `owner/name`, if the request may act on it (see [`Self::authorize`]).
    pub(super) fn authorized_repo(
        &mut self,
        headers: &HeaderMap,
        owner: &str,
        name: &str,
        doc: &str,
    ) -> Result<&mut GitRepo, Failure> {
        let key = self.authorize(headers, owner, name, doc)?;
        self.git.get_mut(&key).ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, "Not Found", doc))
    }
}

/// `GET /app`: the authenticated app.
pub(super) async fn get_app(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(failure) = verify_jwt(&app, &headers) {
        return failure.into_response();
    }
    let state = app.lock();
    let id =
        app.config.github_app_id.parse::<u64>().map_or_else(|_| json!(app.config.github_app_id), Value::from);
    let now = zulu(Utc::now());
    json_response(StatusCode::OK, {
        let mut app = integration(&id, Value::Object(granted_permissions()), APP_EVENTS, &now);
        app["installations_count"] = json!(state.github.app.installations.len());
        app
    })
}

/// `GET /installation/repositories` with an installation token: the repositories it covers.
pub(super) async fn token_repositories(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let state = app.lock();
    let gh = &state.github;
    let token = match gh.live_token(&headers) {
        Ok(token) => token,
        Err(failure) => return failure.into_response(),
    };
    let repos: Vec<Value> =
        token.repos.iter().filter_map(|key| gh.git.get(key)).map(GitRepo::repository_json).collect();
    json_response(
        StatusCode::OK,
        json!({"total_count": repos.len(), "repository_selection": "selected", "repositories": repos}),
    )
}

/// `GET /app/installations`.
pub(super) async fn list_installations(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(failure) = verify_jwt(&app, &headers) {
        return failure.into_response();
    }
    let state = app.lock();
    let list: Vec<Value> = state.github.app.installations.values().map(|i| i.to_json(&app)).collect();
    json_response(StatusCode::OK, Value::from(list))
}

/// `GET /repos/{owner}/{repo}/installation`.
pub(super) async fn repo_installation(
    State(app): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(failure) = verify_jwt(&app, &headers) {
        return failure.into_response();
    }
    let key = repo_key(&owner, &name);
    let state = app.lock();
    match state.github.app.installations.values().find(|i| i.covers(&key)) {
        Some(installation) => json_response(StatusCode::OK, installation.to_json(&app)),
        None => fail(
            StatusCode::NOT_FOUND,
            "Not Found",
            &format!("{APPS_DOCS}#get-a-repository-installation-for-the-authenticated-app"),
        ),
    }
}

/// `POST /app/installations/{installation_id}/access_tokens`, optionally narrowed to some
/// `repositories` (names) or `repository_ids` and to a subset of the granted `permissions`.
pub(super) async fn create_access_token(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc = format!("{APPS_DOCS}#create-an-installation-access-token-for-an-app");
    if let Err(failure) = verify_jwt(&app, &headers) {
        return failure.into_response();
    }
    let Ok(Value::Object(body)) = parse_body(&body) else {
        return fail(StatusCode::BAD_REQUEST, "Problems parsing JSON", &doc);
    };
    let mut state = app.lock();
    let gh = &mut state.github;
    let Some(installation) = id.parse::<u64>().ok().and_then(|id| gh.app.installations.get(&id)) else {
        return fail(StatusCode::NOT_FOUND, "Not Found", &doc);
    };
    let mut repos: Vec<(String, u64)> = installation
        .repos
        .iter()
        .map(|full| (full.clone(), gh.git.get(&full.to_ascii_lowercase()).map_or(0, |r| r.id)))
        .collect();
    let names: Option<Vec<&str>> = body
        .get("repositories")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).collect());
    let ids: Option<Vec<u64>> = body
        .get("repository_ids")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_u64).collect());
    if names.is_some() || ids.is_some() {
        let named = |full: &str, id: u64| {
            let name = full.split('/').nth(1).unwrap_or_default();
            names.as_ref().is_some_and(|n| n.iter().any(|n| n.eq_ignore_ascii_case(name)))
                || ids.as_ref().is_some_and(|ids| ids.contains(&id))
        };
        let known = names.iter().flatten().all(|n| {
            repos.iter().any(|(f, _)| f.split('/').nth(1).is_some_and(|r| r.eq_ignore_ascii_case(n)))
        }) && ids.iter().flatten().all(|id| repos.iter().any(|(_, r)| r == id));
        if !known {
            let message = "There is at least one repository that does not exist or is not accessible to the parent installation.";
            return fail(StatusCode::UNPROCESSABLE_ENTITY, message, &doc);
        }
        repos.retain(|(full, id)| named(full, *id));
    }
    let granted = granted_permissions();
    let permissions = match body.get("permissions") {
        Some(Value::Object(asked)) => {
            let level = |l: &str| ["read", "write", "admin"].iter().position(|x| *x == l);
            let allowed = asked.iter().all(|(k, v)| {
                let have = granted.get(k).and_then(Value::as_str).and_then(level);
                matches!((v.as_str().and_then(level), have), (Some(want), Some(have)) if want <= have)
            });
            if !allowed {
                return fail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The permissions requested are not granted to this installation.",
                    &doc,
                );
            }
            asked.clone()
        }
        _ => granted,
    };
    let now = Utc::now();
    let expires =
        now + TimeDelta::seconds(i64::try_from(app.config.github_token_ttl_secs).unwrap_or(i64::MAX / 2));
    let token = format!("ghs_{}", random_alnum(36));
    let installation_id = installation.id;
    gh.app.tokens.retain(|t| t.expires > now);
    gh.app.tokens.push(Token {
        value: token.clone(),
        repos: repos.iter().map(|(full, _)| full.to_ascii_lowercase()).collect(),
        expires,
    });
    *gh.app.tokens_issued.entry(installation_id).or_default() += 1;
    tracing::info!(installation_id, "github: installation token issued");
    let repositories: Vec<Value> = repos
        .iter()
        .map(|(full, id)| {
            repository_object(&RepoFacts {
                full_name: full,
                id: *id,
                private: false,
                description: None,
                is_template: false,
                created_at: "2026-01-01T00:00:00Z",
            })
        })
        .collect();
    json_response(
        StatusCode::CREATED,
        json!({"token": token, "expires_at": zulu(expires), "permissions": permissions,
            "repository_selection": "selected", "repositories": repositories}),
    )
}

/// `GET /repos/{owner}/{repo}/collaborators/{username}/permission`; people who are not
/// collaborators have `none` (the personal account owning the repository is `admin`).
pub(super) async fn permission(
    State(app): State<Shared>,
    Path((owner, name, username)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let doc =
        "https://docs.github.com/rest/collaborators/collaborators#get-repository-permissions-for-a-user";
    let mut state = app.lock();
    let gh = &mut state.github;
    let key = match gh.authorize(&headers, &owner, &name, doc) {
        Ok(key) => key,
        Err(failure) => return failure.into_response(),
    };
    let Some(repo) = gh.git.get(&key) else {
        return fail(StatusCode::NOT_FOUND, "Not Found", doc);
    };
    let personal_owner = gh
        .app
        .installations
        .get(&repo.installation)
        .is_some_and(|i| i.account_type == "User" && i.account.eq_ignore_ascii_case(&username));
    let role = match repo.collaborators.get(&username.to_ascii_lowercase()) {
        Some(role) => role.as_str(),
        None if personal_owner => "admin",
        None => "none",
    };
    let permission = match role {
        "maintain" => "write",
        "triage" => "read",
        other => other,
    };
    let rank = ROLES.iter().position(|r| *r == role).unwrap_or(ROLES.len());
    let at_least = |r: &str| ROLES.iter().position(|x| *x == r).is_some_and(|p| rank <= p);
    let mut user = user(&username);
    user["permissions"] = json!({"admin": at_least("admin"), "maintain": at_least("maintain"),
        "push": at_least("write"), "triage": at_least("triage"), "pull": at_least("read")});
    user["role_name"] = json!(role);
    json_response(StatusCode::OK, json!({"permission": permission, "role_name": role, "user": user}))
}

/// `POST /_sandbox/github/installations`
/// `{"account", "account_type"?: "Organization"|"User", "repos": ["owner/name"], "files"?: {path: content}}`:
/// installs the app on `account` (or adds repositories to its installation) and seeds each
/// new repository with `files` (default: a README and `src/lib.rs`) on `main`.
pub(super) async fn control_install(State(app): State<Shared>, body: Bytes) -> Response {
    let Ok(Value::Object(body)) = parse_body(&body) else {
        return control_error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let Some(account) =
        body.get("account").and_then(Value::as_str).filter(|a| !a.is_empty() && !a.contains('/'))
    else {
        return control_error(StatusCode::BAD_REQUEST, "account must be a login");
    };
    let account_type = match body.get("account_type").and_then(Value::as_str) {
        None | Some("Organization") => "Organization",
        Some("User") => "User",
        Some(_) => {
            return control_error(StatusCode::BAD_REQUEST, "account_type must be Organization or User");
        }
    };
    let Some(names) = body.get("repos").and_then(Value::as_array) else {
        return control_error(StatusCode::BAD_REQUEST, "repos must be a list of owner/name");
    };
    let mut repos = Vec::new();
    for name in names {
        let full = match name.as_str().map(|n| n.split_once('/').map_or((account, n), |(o, r)| (o, r))) {
            Some((owner, repo)) if owner.eq_ignore_ascii_case(account) && valid_repo_name(repo) => {
                format!("{account}/{repo}")
            }
            _ => {
                return control_error(
                    StatusCode::BAD_REQUEST,
                    format!("repos must be {account}/<name>: {name}"),
                );
            }
        };
        repos.push(full);
    }
    let files = match body.get("files") {
        None | Some(Value::Null) => None,
        Some(Value::Object(files)) => {
            let mut map = BTreeMap::new();
            for (path, content) in files {
                match content.as_str() {
                    Some(content) if super::git::valid_path(path) => {
                        map.insert(path.clone(), content.to_owned())
                    }
                    _ => {
                        return control_error(
                            StatusCode::BAD_REQUEST,
                            format!("files[{path:?}] must be text at a relative path"),
                        );
                    }
                };
            }
            Some(map)
        }
        Some(_) => return control_error(StatusCode::BAD_REQUEST, "files must map paths to contents"),
    };

    let mut state = app.lock();
    let gh = &mut state.github;
    let existing =
        gh.app.installations.values().find(|i| i.account.eq_ignore_ascii_case(account)).map(|i| i.id);
    let id = existing.unwrap_or(61_000_000 + gh.app.installations.len() as u64 + 1);
    if let Some(taken) =
        repos.iter().find(|full| gh.git.get(&full.to_ascii_lowercase()).is_some_and(|r| r.installation != id))
    {
        return control_error(StatusCode::CONFLICT, format!("{taken} belongs to another installation"));
    }
    let installation = gh.app.installations.entry(id).or_insert_with(|| Installation {
        id,
        account: account.to_owned(),
        account_type,
        repos: Vec::new(),
        created: Utc::now(),
    });
    for full in &repos {
        if !installation.covers(full) {
            installation.repos.push(full.clone());
        }
    }
    for full in &repos {
        let key = full.to_ascii_lowercase();
        if gh.git.contains_key(&key) {
            continue;
        }
        let (owner, name) = full.split_once('/').unwrap_or_default();
        let repo_id = gh.ensure_repo(owner, name, stable_id("repo", full));
        let files = files.clone().unwrap_or_else(|| default_files(name));
        gh.git.insert(key, GitRepo::new(owner, name, repo_id, id, &files));
    }
    tracing::info!(installation_id = id, account, "github: app installed");
    let status = if existing.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    json_response(status, json!({"installation_id": id, "account": account, "repos": repos}))
}

fn valid_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `POST /_sandbox/github/repos/{owner}/{repo}/collaborators/{user}` `{"permission"}` with
/// `admin`, `maintain`, `write`, `triage`, `read` or `none` (removes the collaborator).
pub(super) async fn control_collaborator(
    State(app): State<Shared>,
    Path((owner, name, username)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let body = parse_body(&body).unwrap_or(Value::Null);
    let Some(role) = body.get("permission").and_then(Value::as_str).filter(|p| ROLES.contains(p)) else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "permission must be admin, maintain, write, triage, read or none",
        );
    };
    let mut state = app.lock();
    let Some(repo) = state.github.git.get_mut(&repo_key(&owner, &name)) else {
        return control_error(
            StatusCode::NOT_FOUND,
            format!("{owner}/{name} is not a repository the app is installed on"),
        );
    };
    if role == "none" {
        repo.collaborators.remove(&username.to_ascii_lowercase());
    } else {
        repo.collaborators.insert(username.to_ascii_lowercase(), role.to_owned());
    }
    json_response(StatusCode::OK, json!({"repo": repo.full_name(), "user": username, "permission": role}))
}
