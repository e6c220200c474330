//! Pull requests and issue comments on the repositories the app is installed on.
//!
//! The bot opens a pull request from the branch it pushed and keeps the issue informed with
//! a comment it edits as work progresses, so both are emulated with GitHub's validation: a
//! second open pull request for the same head and base, a head or base that does not exist,
//! or a head with nothing new answer 422 like GitHub. Issues themselves are not modelled:
//! any issue number can be commented on. Issues and pull requests share numbers on GitHub,
//! so a new pull request takes the number after the highest one seen (comments, webhook
//! payloads, earlier pull requests).
//!
//! A human merging or closing the pull request is `POST /_sandbox/github/repos/{o}/{r}/pulls/{n}/close`:
//! a merge creates a merge commit on the base branch, and either way the `pull_request`
//! `closed` webhook goes out.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::git::GitRepo;
use super::{Failure, GithubState, control_error, fail, hooks, repo_key, validation_failed};
use crate::github_events::{self, APP_EVENTS, BOT_LOGIN, integration, user};
use crate::state::{Shared, json_response, parse_body, zulu};

const PULLS_DOCS: &str = "https://docs.github.com/rest/pulls/pulls";
const COMMENTS_DOCS: &str = "https://docs.github.com/rest/issues/comments";

type Params = Query<Vec<(String, String)>>;

#[derive(Default)]
pub(super) struct PullsState {
    pulls: Vec<Pull>,
    comments: Vec<Comment>,
    /// Highest issue or pull request number seen per repository key.
    numbers: BTreeMap<String, u64>,
    next_comment: u64,
}

struct Pull {
    id: u64,
    repo: String,
    number: u64,
    title: String,
    body: Option<String>,
    head: String,
    base: String,
    draft: bool,
    open: bool,
    merged: bool,
    /// The head commit when the pull request closed; open ones follow their branch.
    closed_head: Option<String>,
    merge_commit: Option<String>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    closed: Option<DateTime<Utc>>,
}

struct Comment {
    id: u64,
    repo: String,
    number: u64,
    body: String,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

impl PullsState {
    /// Records that issue or pull request `number` exists in repository `key`.
    pub(super) fn note_number(&mut self, key: &str, number: u64) {
        let highest = self.numbers.entry(key.to_owned()).or_default();
        *highest = (*highest).max(number);
    }

    pub(super) fn dump_pulls(&self, git: &BTreeMap<String, GitRepo>) -> Value {
        self.pulls
            .iter()
            .map(|p| {
                let head_sha = git.get(&p.repo).and_then(|r| head_sha(r, p));
                json!({"repo": git.get(&p.repo).map(GitRepo::full_name), "number": p.number, "title": p.title,
                    "body": p.body, "head": p.head, "base": p.base, "head_sha": head_sha, "draft": p.draft,
                    "state": if p.open { "open" } else { "closed" }, "merged": p.merged,
                    "merge_commit_sha": p.merge_commit})
            })
            .collect()
    }

    pub(super) fn dump_comments(&self) -> Value {
        self.comments
            .iter()
            .map(|c| {
                json!({"id": c.id, "repo": c.repo, "number": c.number, "body": c.body,
                    "created_at": zulu(c.created), "updated_at": zulu(c.updated)})
            })
            .collect()
    }

    fn is_pull(&self, key: &str, number: u64) -> bool {
        self.pulls.iter().any(|p| p.repo == key && p.number == number)
    }
}

fn head_sha(repo: &GitRepo, pull: &Pull) -> Option<String> {
    pull.closed_head.clone().or_else(|| repo.branches.get(&pull.head).cloned())
}

fn pull_json(repo: &GitRepo, pull: &Pull, base_url: &str) -> Value {
    let full = repo.full_name();
    let api = format!("{base_url}/github/repos/{full}");
    let repository = repo.repository_json();
    let owner = user(&repo.owner);
    let n = pull.number;
    let mut pull_object = json!({
        "url": format!("{api}/pulls/{n}"), "id": pull.id, "node_id": format!("PR_kwDO{}", pull.id),
        "html_url": format!("https://github.com/{full}/pull/{n}"),
        "diff_url": format!("https://github.com/{full}/pull/{n}.diff"),
        "patch_url": format!("https://github.com/{full}/pull/{n}.patch"),
        "issue_url": format!("{api}/issues/{n}"), "comments_url": format!("{api}/issues/{n}/comments"),
        "number": n, "state": if pull.open { "open" } else { "closed" }, "locked": false,
        "title": pull.title, "body": pull.body, "user": user(BOT_LOGIN), "draft": pull.draft,
        "labels": [], "assignees": [], "requested_reviewers": [],
        "created_at": zulu(pull.created), "updated_at": zulu(pull.updated),
        "closed_at": pull.closed.map(zulu),
        "merged_at": if pull.merged { pull.closed.map(zulu) } else { None },
        "merge_commit_sha": pull.merge_commit, "merged": pull.merged,
        "merged_by": if pull.merged { owner.clone() } else { Value::Null },
        "head": {"label": format!("{}:{}", repo.owner, pull.head), "ref": pull.head,
            "sha": head_sha(repo, pull), "user": owner, "repo": repository},
        "base": {"label": format!("{}:{}", repo.owner, pull.base), "ref": pull.base,
            "sha": repo.branches.get(&pull.base), "user": owner, "repo": repository},
        "author_association": "NONE", "mergeable": null, "rebaseable": null, "mergeable_state": "unknown",
    });
    // The rest of GitHub's `pull-request` object: links, review bookkeeping, counts.
    let more = json!({
        "commits_url": format!("{api}/pulls/{n}/commits"),
        "review_comments_url": format!("{api}/pulls/{n}/comments"),
        "review_comment_url": format!("{api}/pulls/comments{{/number}}"),
        "statuses_url": format!("{api}/statuses/{}", head_sha(repo, pull).unwrap_or_default()),
        "_links": {
            "self": {"href": format!("{api}/pulls/{n}")},
            "html": {"href": format!("https://github.com/{full}/pull/{n}")},
            "issue": {"href": format!("{api}/issues/{n}")},
            "comments": {"href": format!("{api}/issues/{n}/comments")},
            "review_comments": {"href": format!("{api}/pulls/{n}/comments")},
            "review_comment": {"href": format!("{api}/pulls/comments{{/number}}")},
            "commits": {"href": format!("{api}/pulls/{n}/commits")},
            "statuses": {"href": format!("{api}/statuses/{}", head_sha(repo, pull).unwrap_or_default())},
        },
        "assignee": null, "milestone": null, "requested_teams": [], "auto_merge": null,
        "active_lock_reason": null, "maintainer_can_modify": false, "comments": 0, "review_comments": 0,
        "commits": 1, "additions": 0, "deletions": 0, "changed_files": 0,
    });
    if let (Some(obj), Value::Object(extra)) = (pull_object.as_object_mut(), more) {
        obj.extend(extra);
    }
    pull_object
}

fn comment_json(c: &Comment, full: &str, is_pull: bool, base_url: &str, app_id: &str) -> Value {
    let api = format!("{base_url}/github/repos/{full}");
    let kind = if is_pull { "pull" } else { "issues" };
    json!({
        "id": c.id, "node_id": format!("IC_kwDO{}", c.id), "url": format!("{api}/issues/comments/{}", c.id),
        "html_url": format!("https://github.com/{full}/{kind}/{}#issuecomment-{}", c.number, c.id),
        "issue_url": format!("{api}/issues/{}", c.number), "body": c.body, "user": user(BOT_LOGIN),
        "created_at": zulu(c.created), "updated_at": zulu(c.updated), "author_association": "NONE",
        "performed_via_github_app": integration(
            &app_id.parse::<u64>().map_or_else(|_| json!(app_id), Value::from),
            json!({"issues": "write", "pull_requests": "write", "contents": "write", "metadata": "read"}),
            APP_EVENTS,
            "2026-01-01T00:00:00Z",
        ),
    })
}

fn body_object(body: &[u8], doc: &str) -> Result<Map<String, Value>, Failure> {
    match parse_body(body) {
        Ok(Value::Object(body)) => Ok(body),
        _ => Err(Failure::new(StatusCode::BAD_REQUEST, "Problems parsing JSON", doc)),
    }
}

fn not_supplied(field: &str, doc: &str) -> Response {
    fail(StatusCode::UNPROCESSABLE_ENTITY, &format!("Invalid request.\n\n\"{field}\" wasn't supplied."), doc)
}

/// `POST /repos/{owner}/{repo}/pulls` `{"title", "head", "base", "body"?, "draft"?}`.
pub(super) async fn create(
    State(app): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc = format!("{PULLS_DOCS}#create-a-pull-request");
    let mut state = app.lock();
    let gh: &mut GithubState = &mut state.github;
    let key = match gh.authorize(&headers, &owner, &name, &doc) {
        Ok(key) => key,
        Err(failure) => return failure.into_response(),
    };
    let body = match body_object(&body, &doc) {
        Ok(body) => body,
        Err(failure) => return failure.into_response(),
    };
    let Some(repo) = gh.git.get(&key) else {
        return fail(StatusCode::NOT_FOUND, "Not Found", &doc);
    };
    let Some(head) = body.get("head").and_then(Value::as_str) else {
        return not_supplied("head", &doc);
    };
    let Some(base) = body.get("base").and_then(Value::as_str) else {
        return not_supplied("base", &doc);
    };
    let Some(title) = body.get("title").and_then(Value::as_str).filter(|t| !t.trim().is_empty()) else {
        return validation_failed(
            json!([{"resource": "PullRequest", "code": "missing_field", "field": "title"}]),
            &doc,
        );
    };
    // `head` is `branch` or `owner:branch`; forks are not modelled.
    let head_branch = match head.split_once(':') {
        Some((head_owner, branch)) if head_owner.eq_ignore_ascii_case(&repo.owner) => Some(branch),
        Some(_) => None,
        None => Some(head),
    };
    let head_sha = head_branch.and_then(|b| repo.branches.get(b));
    let (Some(head_branch), Some(head_sha)) = (head_branch, head_sha) else {
        return validation_failed(
            json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}]),
            &doc,
        );
    };
    let Some(base_sha) = repo.branches.get(base) else {
        return validation_failed(
            json!([{"resource": "PullRequest", "field": "base", "code": "invalid"}]),
            &doc,
        );
    };
    if gh.pulls.pulls.iter().any(|p| p.repo == key && p.open && p.head == head_branch && p.base == base) {
        let message = format!("A pull request already exists for {}:{head_branch}.", repo.owner);
        return validation_failed(
            json!([{"resource": "PullRequest", "code": "custom", "message": message}]),
            &doc,
        );
    }
    if repo.is_ancestor(head_sha, base_sha) {
        let message = format!("No commits between {base} and {head_branch}");
        return validation_failed(
            json!([{"resource": "PullRequest", "code": "custom", "message": message}]),
            &doc,
        );
    }
    let number = gh.pulls.numbers.get(&key).copied().unwrap_or(0) + 1;
    gh.pulls.note_number(&key, number);
    let now = Utc::now();
    let pull = Pull {
        id: 1_900_000_000 + gh.pulls.pulls.len() as u64 + 1,
        repo: key,
        number,
        title: title.to_owned(),
        body: body.get("body").and_then(Value::as_str).map(str::to_owned),
        head: head_branch.to_owned(),
        base: base.to_owned(),
        draft: body.get("draft").and_then(Value::as_bool).unwrap_or(false),
        open: true,
        merged: false,
        closed_head: None,
        merge_commit: None,
        created: now,
        updated: now,
        closed: None,
    };
    tracing::info!(repo = %repo.full_name(), number, "github: pull request opened");
    let response = pull_json(repo, &pull, &app.base_url);
    gh.pulls.pulls.push(pull);
    json_response(StatusCode::CREATED, response)
}

/// `GET /repos/{owner}/{repo}/pulls?state=open|closed|all&head=owner:branch&base=`, newest first.
pub(super) async fn list(
    State(app): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let doc = format!("{PULLS_DOCS}#list-pull-requests");
    let param = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let state_filter = param("state").unwrap_or("open");
    if !["open", "closed", "all"].contains(&state_filter) {
        return validation_failed(
            json!([{"resource": "PullRequest", "field": "state", "code": "invalid"}]),
            &doc,
        );
    }
    let state = app.lock();
    let gh = &state.github;
    let key = match gh.authorize(&headers, &owner, &name, &doc) {
        Ok(key) => key,
        Err(failure) => return failure.into_response(),
    };
    let Some(repo) = gh.git.get(&key) else {
        return fail(StatusCode::NOT_FOUND, "Not Found", &doc);
    };
    let head = param("head").map(|h| h.split_once(':').map_or((None, h), |(o, b)| (Some(o), b)));
    let list: Vec<Value> = gh
        .pulls
        .pulls
        .iter()
        .rev()
        .filter(|p| p.repo == key)
        .filter(|p| state_filter == "all" || p.open == (state_filter == "open"))
        .filter(|p| {
            head.is_none_or(|(o, b)| p.head == b && o.is_none_or(|o| o.eq_ignore_ascii_case(&repo.owner)))
        })
        .filter(|p| param("base").is_none_or(|b| p.base == b))
        .map(|p| pull_json(repo, p, &app.base_url))
        .collect();
    json_response(StatusCode::OK, Value::from(list))
}

/// `GET /repos/{owner}/{repo}/pulls/{pull_number}`.
pub(super) async fn get(
    State(app): State<Shared>,
    Path((owner, name, number)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let doc = format!("{PULLS_DOCS}#get-a-pull-request");
    let state = app.lock();
    let gh = &state.github;
    let key = match gh.authorize(&headers, &owner, &name, &doc) {
        Ok(key) => key,
        Err(failure) => return failure.into_response(),
    };
    let pull = number
        .parse::<u64>()
        .ok()
        .and_then(|n| gh.pulls.pulls.iter().find(|p| p.repo == key && p.number == n));
    match (gh.git.get(&key), pull) {
        (Some(repo), Some(pull)) => json_response(StatusCode::OK, pull_json(repo, pull, &app.base_url)),
        _ => fail(StatusCode::NOT_FOUND, "Not Found", &doc),
    }
}

/// `POST /repos/{owner}/{repo}/issues/{issue_number}/comments` `{"body"}`.
pub(super) async fn create_comment(
    State(app): State<Shared>,
    Path((owner, name, number)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc = format!("{COMMENTS_DOCS}#create-an-issue-comment");
    let mut state = app.lock();
    let gh: &mut GithubState = &mut state.github;
    let key = match gh.authorize(&headers, &owner, &name, &doc) {
        Ok(key) => key,
        Err(failure) => return failure.into_response(),
    };
    let Ok(number) = number.parse::<u64>() else {
        return fail(StatusCode::NOT_FOUND, "Not Found", &doc);
    };
    let body = match body_object(&body, &doc) {
        Ok(body) => body,
        Err(failure) => return failure.into_response(),
    };
    let Some(text) = body.get("body").and_then(Value::as_str) else {
        return not_supplied("body", &doc);
    };
    let now = Utc::now();
    gh.pulls.next_comment += 1;
    let comment = Comment {
        id: 2_100_000_000 + gh.pulls.next_comment,
        repo: key.clone(),
        number,
        body: text.to_owned(),
        created: now,
        updated: now,
    };
    gh.pulls.note_number(&key, number);
    let full = gh.git.get(&key).map(GitRepo::full_name).unwrap_or_default();
    let response = comment_json(
        &comment,
        &full,
        gh.pulls.is_pull(&key, number),
        &app.base_url,
        &app.config.github_app_id,
    );
    gh.pulls.comments.push(comment);
    json_response(StatusCode::CREATED, response)
}

/// `PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}` `{"body"}`.
pub(super) async fn update_comment(
    State(app): State<Shared>,
    Path((owner, name, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc = format!("{COMMENTS_DOCS}#update-an-issue-comment");
    let mut state = app.lock();
    let gh: &mut GithubState = &mut state.github;
    let key = match gh.authorize(&headers, &owner, &name, &doc) {
        Ok(key) => key,
        Err(failure) => return failure.into_response(),
    };
    let body = match body_object(&body, &doc) {
        Ok(body) => body,
        Err(failure) => return failure.into_response(),
    };
    let Some(text) = body.get("body").and_then(Value::as_str) else {
        return not_supplied("body", &doc);
    };
    let full = gh.git.get(&key).map(GitRepo::full_name).unwrap_or_default();
    let pulls = &mut gh.pulls;
    let Some(index) =
        id.parse::<u64>().ok().and_then(|id| pulls.comments.iter().position(|c| c.id == id && c.repo == key))
    else {
        return fail(StatusCode::NOT_FOUND, "Not Found", &doc);
    };
    let comment = &mut pulls.comments[index];
    comment.body = text.to_owned();
    comment.updated = Utc::now();
    let is_pull = pulls.is_pull(&key, pulls.comments[index].number);
    let response =
        comment_json(&pulls.comments[index], &full, is_pull, &app.base_url, &app.config.github_app_id);
    json_response(StatusCode::OK, response)
}

/// `GET /repos/{owner}/{repo}/issues/{issue_number}/comments`, oldest first.
pub(super) async fn list_comments(
    State(app): State<Shared>,
    Path((owner, name, number)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let doc = format!("{COMMENTS_DOCS}#list-issue-comments");
    let state = app.lock();
    let gh = &state.github;
    let key = match gh.authorize(&headers, &owner, &name, &doc) {
        Ok(key) => key,
        Err(failure) => return failure.into_response(),
    };
    let Ok(number) = number.parse::<u64>() else {
        return fail(StatusCode::NOT_FOUND, "Not Found", &doc);
    };
    let full = gh.git.get(&key).map(GitRepo::full_name).unwrap_or_default();
    let is_pull = gh.pulls.is_pull(&key, number);
    let list: Vec<Value> = gh
        .pulls
        .comments
        .iter()
        .filter(|c| c.repo == key && c.number == number)
        .map(|c| comment_json(c, &full, is_pull, &app.base_url, &app.config.github_app_id))
        .collect();
    json_response(StatusCode::OK, Value::from(list))
}

/// `POST /_sandbox/github/repos/{owner}/{repo}/pulls/{number}/close` `{"merged": bool}`:
/// what a maintainer does on github.com. Merging adds a merge commit to the base branch.
/// Answers with the pull request's new state and the `pull_request` `closed` delivery.
pub(super) async fn control_close(
    State(app): State<Shared>,
    Path((owner, name, number)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let merged =
        parse_body(&body).ok().and_then(|b| b.get("merged").and_then(Value::as_bool)).unwrap_or(false);
    let key = repo_key(&owner, &name);
    let payload = {
        let mut state = app.lock();
        let gh: &mut GithubState = &mut state.github;
        let (Some(repo), Ok(number)) = (gh.git.get_mut(&key), number.parse::<u64>()) else {
            return control_error(
                StatusCode::NOT_FOUND,
                format!("{owner}/{name} is not an installed repository"),
            );
        };
        let Some(pull) = gh.pulls.pulls.iter_mut().find(|p| p.repo == key && p.number == number) else {
            return control_error(
                StatusCode::NOT_FOUND,
                format!("no pull request #{number} in {owner}/{name}"),
            );
        };
        if !pull.open {
            return control_error(StatusCode::CONFLICT, format!("pull request #{number} is already closed"));
        }
        let Some(head) = head_sha(repo, pull) else {
            return control_error(
                StatusCode::CONFLICT,
                format!("the head branch {} no longer exists", pull.head),
            );
        };
        if merged {
            let message =
                format!("Merge pull request #{number} from {}/{}\n\n{}", repo.owner, pull.head, pull.title);
            match repo.merge(&pull.base, &head, message) {
                Some(sha) => pull.merge_commit = Some(sha),
                None => {
                    return control_error(
                        StatusCode::CONFLICT,
                        format!("the base branch {} is gone", pull.base),
                    );
                }
            }
        }
        let now = Utc::now();
        (pull.open, pull.merged, pull.closed_head, pull.closed, pull.updated) =
            (false, merged, Some(head), Some(now), now);
        tracing::info!(repo = %repo.full_name(), number, merged, "github: pull request closed");
        let mut payload = github_events::pull_request_closed(
            &repo.full_name(),
            repo.installation,
            number,
            &pull.head,
            merged,
        );
        payload["pull_request"] = pull_json(repo, pull, &app.base_url);
        payload["repository"] = repo.repository_json();
        payload
    };
    let delivery = hooks::deliver(&app, "pull_request", &payload, None).await;
    let pull = &payload["pull_request"];
    json_response(
        StatusCode::OK,
        json!({"number": pull["number"], "state": "closed", "merged": merged,
            "merge_commit_sha": pull["merge_commit_sha"], "delivery": delivery}),
    )
}
