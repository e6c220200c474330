//! Repositories: created from templates (`POST /repos/{owner}/{repo}/generate`) or in an
//! organization (`POST /orgs/{org}/repos`), read, listed per organization
//! (`GET /orgs/{org}/repos`) and deleted, so the product can give each customer a repository,
//! find the ones it made, and Vercel can link to them.
//!
//! The sandbox knows every template without setup: a repository whose name ends in
//! `-template` exists as a template the first time it is named (public, owned by the owner in
//! the path). Repositories created with `POST /orgs/{org}/repos` and `"is_template": true`
//! are templates too. Generating from anything else answers 404, as GitHub does for a
//! repository that is missing, invisible to the token, or not a template. Names are unique
//! per owner, compared without regard to case as on GitHub.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{GithubState, validation_failed};
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

    /// The repository as lists carry it (GitHub's `minimal-repository`): without the fields only
    /// a single repository's answer (`full-repository`) has.
    fn minimal_json(&self, base_url: &str) -> Value {
        let mut repo = self.to_json(base_url);
        if let Some(fields) = repo.as_object_mut() {
            for only_full in ["template_repository", "network_count", "subscribers_count"] {
                fields.remove(only_full);
            }
        }
        repo
    }
}

/// Which of an organization's repositories a list shows (`type`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// `all`, `sources` (the sandbox has no forks) and `member` (the caller reaches every
    /// repository it can see).
    All,
    Public,
    Private,
    Forks,
}

/// The order of a list (`sort`); `updated` and `pushed` order as `created` does, since a sandbox
/// repository's `updated_at` and `pushed_at` are its `created_at`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sort {
    Created,
    FullName,
}

/// What `GET /orgs/{org}/repos` was asked for.
#[derive(Debug, PartialEq)]
struct ListQuery {
    kind: Kind,
    sort: Sort,
    descending: bool,
    per_page: usize,
    page: usize,
}

impl ListQuery {
    /// The query as GitHub reads it: an unknown `type`, `sort` or `direction` is refused with
    /// the field named (`Err`), a page size beyond 1..=100 taken as the nearest allowed one and
    /// a page before the first as the first.
    fn parse(query: &[(String, String)]) -> Result<ListQuery, &'static str> {
        let param = |k: &str| query.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let kind = match param("type").unwrap_or("all") {
            "all" | "sources" | "member" => Kind::All,
            "public" => Kind::Public,
            "private" => Kind::Private,
            "forks" => Kind::Forks,
            _ => return Err("type"),
        };
        let sort = match param("sort").unwrap_or("created") {
            "created" | "updated" | "pushed" => Sort::Created,
            "full_name" => Sort::FullName,
            _ => return Err("sort"),
        };
        let descending = match param("direction") {
            None => sort != Sort::FullName,
            Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err("direction"),
        };
        let number =
            |k: &str, default: i64| param(k).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(default);
        let per_page = number("per_page", 30).clamp(1, 100) as usize;
        let page = number("page", 1).max(1) as usize;
        Ok(ListQuery { kind, sort, descending, per_page, page })
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

    /// The repositories of `org` that `visible` lets through, of the kind asked for, in the order
    /// asked for (creation, then id, breaks ties), and how many there are before paging.
    fn org_repos(
        &self,
        org: &str,
        list: &ListQuery,
        visible: impl Fn(&str, &Repo) -> bool,
    ) -> (Vec<&Repo>, usize) {
        let mut repos: Vec<&Repo> = self
            .repos
            .iter()
            .filter(|(key, repo)| repo.owner.eq_ignore_ascii_case(org) && visible(key, repo))
            .map(|(_, repo)| repo)
            .filter(|repo| match list.kind {
                Kind::All => true,
                Kind::Public => !repo.private,
                Kind::Private => repo.private,
                Kind::Forks => false,
            })
            .collect();
        let by_created = |a: &&Repo, b: &&Repo| a.created.cmp(&b.created).then(a.id.cmp(&b.id));
        repos.sort_by(|a, b| {
            let order = match list.sort {
                Sort::Created => by_created(a, b),
                Sort::FullName => {
                    let name = |r: &Repo| r.full_name().to_ascii_lowercase();
                    name(a).cmp(&name(b)).then_with(|| by_created(a, b))
                }
            };
            if list.descending { order.reverse() } else { order }
        });
        let total = repos.len();
        let page: Vec<&Repo> = repos
            .into_iter()
            .skip((list.page - 1).saturating_mul(list.per_page))
            .take(list.per_page)
            .collect();
        (page, total)
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

/// `GET /orgs/{org}/repos?type=&sort=&direction=&per_page=&page=`: the organization's
/// repositories the credential can see (every public one; private ones the personal access
/// token or the installation token reaches), as `minimal-repository` objects, one page of them,
/// with GitHub's `Link` header (`prev`, `next`, `last`, `first`) while other pages exist.
/// An organization without repositories lists none: the sandbox creates organizations on first
/// use (`POST /orgs/{org}/repos` takes any), so none is unknown.
pub(super) async fn list_for_org(
    State(app): State<Shared>,
    Path(org): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    const DOC: &str = "list-organization-repositories";
    let list = match ListQuery::parse(&query) {
        Ok(list) => list,
        // Guess: GitHub's wording for a value outside the documented choices.
        Err(field) => {
            let error = json!({"resource": "Repository", "field": field, "code": "invalid"});
            return validation_failed(json!([error]), &format!("{DOCS}#{DOC}"));
        }
    };
    let state = app.lock();
    let gh = &state.github;
    let (page, total) =
        gh.org_repos(&org, &list, |key, repo| !repo.private || gh.sees_private(&headers, key));
    let admin = gh.is_pat(&headers);
    let body: Vec<Value> = page
        .iter()
        .map(|repo| {
            let mut item = repo.minimal_json(&app.base_url);
            // The personal access token's account administers every sandbox repository.
            if admin {
                item["permissions"] =
                    json!({"admin": true, "maintain": true, "push": true, "triage": true, "pull": true});
            }
            item
        })
        .collect();
    drop(state);
    let mut response = json_response(StatusCode::OK, Value::from(body));
    let url = format!("{}/github/orgs/{org}/repos", app.base_url);
    if let Some(link) = page_links(&url, &query, list.page, total.div_ceil(list.per_page).max(1))
        && let Ok(value) = HeaderValue::from_str(&link)
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// GitHub's `Link` header for page `page` of `last`: `prev` and `next` where they exist, `last`
/// when after this page, `first` when before it; the other query parameters kept as given.
pub(super) fn page_links(url: &str, query: &[(String, String)], page: usize, last: usize) -> Option<String> {
    let to = |n: usize| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query.iter().filter(|(k, _)| k != "page") {
            q.append_pair(k, v);
        }
        q.append_pair("page", &n.to_string());
        format!("{url}?{}", q.finish())
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", to(page - 1)));
    }
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", to(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", to(last)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"first\"", to(1)));
    }
    (!links.is_empty()).then(|| links.join(", "))
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

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn names(repos: &[&Repo]) -> Vec<String> {
        repos.iter().map(|r| r.name.clone()).collect()
    }

    #[test]
    fn list_queries_take_github_defaults_and_refuse_unknown_choices() {
        let defaults = ListQuery::parse(&[]).unwrap();
        assert_eq!(
            defaults,
            ListQuery { kind: Kind::All, sort: Sort::Created, descending: true, per_page: 30, page: 1 }
        );
        let by_name = ListQuery::parse(&query(&[("sort", "full_name"), ("per_page", "500"), ("page", "0")]));
        assert_eq!(
            by_name.unwrap(),
            ListQuery { kind: Kind::All, sort: Sort::FullName, descending: false, per_page: 100, page: 1 }
        );
        let private =
            ListQuery::parse(&query(&[("type", "private"), ("direction", "asc"), ("per_page", "0")]));
        assert_eq!((private.as_ref().unwrap().kind, private.as_ref().unwrap().per_page), (Kind::Private, 1));
        assert!(!private.unwrap().descending);
        assert_eq!(ListQuery::parse(&query(&[("type", "owner")])), Err("type"));
        assert_eq!(ListQuery::parse(&query(&[("sort", "stars")])), Err("sort"));
        assert_eq!(ListQuery::parse(&query(&[("direction", "up")])), Err("direction"));
    }

    #[test]
    fn organization_lists_filter_sort_and_page() {
        let mut gh = GithubState::default();
        for (name, private) in [("b-shop", true), ("a-site", false), ("c-api", true)] {
            gh.insert_repo("acme", name, None, private, false, None);
        }
        gh.insert_repo("Other", "z", None, false, false, None);
        // Made in this order, a millisecond apart at least.
        let start = Utc::now();
        for (i, repo) in gh.repos.values_mut().filter(|r| r.owner == "acme").enumerate() {
            repo.created = start + TimeDelta::milliseconds(i as i64);
        }
        let all = |_: &str, _: &Repo| true;
        let list = |pairs: &[(&str, &str)]| ListQuery::parse(&query(pairs)).unwrap();

        let (page, total) = gh.org_repos("ACME", &list(&[]), all);
        assert_eq!((names(&page), total), (vec!["c-api".to_owned(), "b-shop".into(), "a-site".into()], 3));
        let (page, _) = gh.org_repos("acme", &list(&[("sort", "full_name")]), all);
        assert_eq!(names(&page), ["a-site", "b-shop", "c-api"]);
        let (page, _) = gh.org_repos("acme", &list(&[("type", "public")]), all);
        assert_eq!(names(&page), ["a-site"]);
        let (page, total) = gh.org_repos("acme", &list(&[("type", "private"), ("direction", "asc")]), all);
        assert_eq!((names(&page), total), (vec!["b-shop".to_owned(), "c-api".into()], 2));
        assert!(gh.org_repos("acme", &list(&[("type", "forks")]), all).0.is_empty());
        let (page, total) = gh.org_repos("acme", &list(&[("per_page", "2"), ("page", "2")]), all);
        assert_eq!((names(&page), total), (vec!["a-site".to_owned()], 3));
        let (page, total) = gh.org_repos("acme", &list(&[("per_page", "2"), ("page", "3")]), all);
        assert_eq!((page.len(), total), (0, 3));
        let public_only = |_: &str, r: &Repo| !r.private;
        assert_eq!(names(&gh.org_repos("acme", &list(&[]), public_only).0), ["a-site"]);
        assert!(gh.org_repos("nobody", &list(&[]), all).0.is_empty());
    }

    #[test]
    fn page_links_name_the_neighbours_and_keep_the_query() {
        let url = "http://sb/github/orgs/acme/repos";
        let q = query(&[("per_page", "2"), ("page", "2"), ("sort", "full_name")]);
        assert_eq!(
            page_links(url, &q, 2, 3).unwrap(),
            format!(
                "<{url}?per_page=2&sort=full_name&page=1>; rel=\"prev\", \
                 <{url}?per_page=2&sort=full_name&page=3>; rel=\"next\", \
                 <{url}?per_page=2&sort=full_name&page=3>; rel=\"last\", \
                 <{url}?per_page=2&sort=full_name&page=1>; rel=\"first\""
            )
        );
        assert_eq!(
            page_links(url, &[], 1, 2).unwrap(),
            format!("<{url}?page=2>; rel=\"next\", <{url}?page=2>; rel=\"last\"")
        );
        assert_eq!(page_links(url, &[], 1, 1), None);
        assert_eq!(
            page_links(url, &[], 3, 2).unwrap(),
            format!("<{url}?page=2>; rel=\"prev\", <{url}?page=1>; rel=\"first\"")
        );
    }
}
