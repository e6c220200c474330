//! Repositories: created from templates (`POST /repos/{owner}/{repo}/generate`), read and
//! deleted, so the product can give each customer a repository and Vercel can link to it.
//!
//! The sandbox knows every template without setup: a repository whose name ends in
//! `-template` exists as a template the first time it is named (public, owned by the owner in
//! the path). Repositories created with `POST /orgs/{org}/repos` and `"is_template": true`
//! are templates too. Generating from anything else answers 404, as GitHub does for a
//! repository that is missing, invisible to the token, or not a template. Names are unique
//! per owner, compared without regard to case as on GitHub.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::GithubState;
use crate::github_events::{RepoFacts, repository, repository_object};
use crate::state::{Shared, json_response, parse_body, zulu};

const DOCS: &str = "https://docs.github.com/rest/repos/repos";

pub(super) struct Repo {
    id: u64,
    owner: String,
    name: String,
    description: Option<String>,
    private: bool,
    is_template: bool,
    /// `owner/name` of the template it was generated from.
    template: Option<String>,
    created: DateTime<Utc>,
}

impl Repo {
    pub(super) fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    pub(super) fn to_json(&self, base_url: &str) -> Value {
        let full = self.full_name();
        let created = zulu(self.created);
        let mut repo = repository_object(&RepoFacts {
            full_name: &full,
            id: self.id,
            private: self.private,
            description: self.description.as_deref(),
            is_template: self.is_template,
            created_at: &created,
        });
        repo["url"] = json!(format!("{base_url}/github/repos/{full}"));
        repo["template_repository"] = self.template.as_deref().map_or(Value::Null, repository);
        repo
    }
}

fn key(owner: &str, name: &str) -> String {
    format!("{owner}/{name}").to_ascii_lowercase()
}

impl GithubState {
    /// The repository `owner/name`, bringing a seeded `*-template` repository into being.
    fn repo(&mut self, owner: &str, name: &str) -> Option<&Repo> {
        if name.ends_with("-template") && !self.repos.contains_key(&key(owner, name)) {
            self.insert_repo(owner, name, None, false, true, None);
        }
        self.repos.get(&key(owner, name))
    }

    /// The id of repository `owner/name`, if it exists (for Vercel's Git links).
    pub(crate) fn repo_id(&mut self, owner: &str, name: &str) -> Option<u64> {
        self.repo(owner, name).map(|r| r.id)
    }

    /// The id of repository `owner/name`, creating it (public, not a template) with `id` when
    /// missing, so repositories seeded for the GitHub App are also plain repositories.
    pub(super) fn ensure_repo(&mut self, owner: &str, name: &str, id: u64) -> u64 {
        if let Some(repo) = self.repos.get(&key(owner, name)) {
            return repo.id;
        }
        self.insert_repo(owner, name, None, false, false, None);
        if let Some(repo) = self.repos.get_mut(&key(owner, name)) {
            repo.id = id;
        }
        id
    }

    /// `(owner, name)` of the repository with this id.
    pub(crate) fn repo_by_id(&self, id: u64) -> Option<(String, String)> {
        self.repos.values().find(|r| r.id == id).map(|r| (r.owner.clone(), r.name.clone()))
    }

    fn insert_repo(
        &mut self,
        owner: &str,
        name: &str,
        description: Option<String>,
        private: bool,
        is_template: bool,
        template: Option<String>,
    ) -> &Repo {
        self.next_repo += 1;
        let repo = Repo {
            id: 870_000_000 + self.next_repo,
            owner: owner.to_owned(),
            name: name.to_owned(),
            description,
            private,
            is_template,
            template,
            created: Utc::now(),
        };
        self.repos.entry(key(owner, name)).or_insert(repo)
    }
}

fn error(status: StatusCode, message: &str, doc: &str) -> Response {
    json_response(
        status,
        json!({"message": message, "documentation_url": format!("{DOCS}#{doc}"), "status": status.as_u16().to_string()}),
    )
}

/// What GitHub answers when the new repository's name is taken.
fn name_taken(doc: &str) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": "Repository creation failed.",
            "errors": [{"resource": "Repository", "code": "custom", "field": "name",
                "message": "name already exists on this account"}],
            "documentation_url": format!("{DOCS}#{doc}"), "status": "422"}),
    )
}

/// A request GitHub refuses: status and message.
type Refusal = (StatusCode, &'static str);

/// The body of a repository-creating request and the new repository's name.
fn creation_fields(body: &[u8]) -> Result<(Map<String, Value>, String), Refusal> {
    let Ok(Value::Object(body)) = parse_body(body) else {
        return Err((StatusCode::BAD_REQUEST, "Problems parsing JSON"));
    };
    let Some(name) = body.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.\n\n\"name\" wasn't supplied."));
    };
    // GitHub replaces characters it does not allow in names with `-`.
    let name =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect();
    Ok((body, name))
}

fn description(body: &Map<String, Value>) -> Option<String> {
    body.get("description").and_then(Value::as_str).map(str::to_owned)
}

fn flag(body: &Map<String, Value>, field: &str) -> bool {
    body.get(field).and_then(Value::as_bool).unwrap_or(false)
}

/// `POST /repos/{template_owner}/{template_repo}/generate`.
pub(super) async fn generate(
    State(app): State<Shared>,
    Path((template_owner, template_repo)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    const DOC: &str = "create-a-repository-using-a-template";
    let (body, name) = match creation_fields(&body) {
        Ok(fields) => fields,
        Err((status, message)) => return error(status, message, DOC),
    };
    // Guess: without `owner` GitHub uses the authenticated user, whom the sandbox does not
    // know; the template's owner stands in.
    let owner =
        body.get("owner").and_then(Value::as_str).filter(|o| !o.is_empty()).unwrap_or(&template_owner);
    let mut state = app.lock();
    let gh = &mut state.github;
    let Some(template) =
        gh.repo(&template_owner, &template_repo).filter(|r| r.is_template).map(Repo::full_name)
    else {
        return error(StatusCode::NOT_FOUND, "Not Found", DOC);
    };
    if gh.repos.contains_key(&key(owner, &name)) {
        return name_taken(DOC);
    }
    let repo =
        gh.insert_repo(owner, &name, description(&body), flag(&body, "private"), false, Some(template));
    tracing::info!(repo = %repo.full_name(), "github: repository generated from template");
    json_response(StatusCode::CREATED, repo.to_json(&app.base_url))
}

/// `POST /orgs/{org}/repos`: an empty repository, or a template with `"is_template": true`.
pub(super) async fn create_in_org(
    State(app): State<Shared>,
    Path(org): Path<String>,
    body: Bytes,
) -> Response {
    const DOC: &str = "create-an-organization-repository";
    let (body, name) = match creation_fields(&body) {
        Ok(fields) => fields,
        Err((status, message)) => return error(status, message, DOC),
    };
    let mut state = app.lock();
    let gh = &mut state.github;
    if gh.repos.contains_key(&key(&org, &name)) {
        return name_taken(DOC);
    }
    let (private, is_template) = (flag(&body, "private"), flag(&body, "is_template"));
    let repo = gh.insert_repo(&org, &name, description(&body), private, is_template, None);
    json_response(StatusCode::CREATED, repo.to_json(&app.base_url))
}

pub(super) async fn get_repo(
    State(app): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    match app.lock().github.repo(&owner, &name) {
        Some(repo) => json_response(StatusCode::OK, repo.to_json(&app.base_url)),
        None => error(StatusCode::NOT_FOUND, "Not Found", "get-a-repository"),
    }
}

pub(super) async fn delete_repo(
    State(app): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    match app.lock().github.repos.remove(&key(&owner, &name)) {
        Some(repo) => {
            tracing::info!(repo = %repo.full_name(), "github: repository deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Not Found", "delete-a-repository"),
    }
}
