//! GitHub App webhook payloads and their signature, for tests of the product's webhook handler.
//!
//! The sandbox sends these itself (`POST /_sandbox/github/webhooks`, pull requests closed
//! through the control plane), and other crates' tests can build and sign identical ones
//! without a running sandbox. The shapes follow GitHub's "Webhook events and payloads"
//! reference, trimmed to the fields a handler plausibly reads, with the three objects every
//! App delivery carries: `installation: {id}`, `repository` (`id`, `name`, `full_name`,
//! `owner.login`, `default_branch`) and `sender`.
//!
//! Ids are derived from names (a hash), so the same repository or user always gets the same
//! id, which matches the ids the sandbox gives repositories it seeds for the app.

use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::state::{hmac_hex, zulu};

/// Login of the app's bot user, the author of everything the app creates.
pub(crate) const BOT_LOGIN: &str = "slipway[bot]";
/// Default app id (`SandboxConfig::github_app_id`), named in `ping` payloads.
const DEFAULT_APP_ID: u64 = 424_242;
/// Events the sandbox's app subscribes to.
pub(crate) const APP_EVENTS: &[&str] = &["issues", "issue_comment", "pull_request"];

/// The `X-Hub-Signature-256` header value for `body`: `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(body: &[u8], secret: &str) -> String {
    format!("sha256={}", hmac_hex(secret, body))
}

/// An `issues` event (`opened`, `edited`, `labeled`, `closed`, ...) for issue `number` of
/// `repo` (`owner/name`). `labeled`/`unlabeled` also carry the last of `labels` as `label`;
/// `closed` issues are closed.
#[allow(clippy::too_many_arguments)] // One argument per field a handler reads.
pub fn issues(
    action: &str,
    repo: &str,
    installation_id: u64,
    number: u64,
    title: &str,
    body: &str,
    labels: &[&str],
    sender: &str,
) -> Value {
    let now = zulu(Utc::now());
    let labels: Vec<Value> = labels.iter().map(|name| label(repo, name)).collect();
    let closed = action == "closed";
    let mut payload = json!({
        "action": action,
        "issue": {
            "url": format!("https://api.github.com/repos/{repo}/issues/{number}"),
            "repository_url": format!("https://api.github.com/repos/{repo}"),
            "comments_url": format!("https://api.github.com/repos/{repo}/issues/{number}/comments"),
            "html_url": format!("https://github.com/{repo}/issues/{number}"),
            "id": stable_id("issue", &format!("{repo}#{number}")),
            "node_id": format!("I_kwDO{}", stable_id("issue", &format!("{repo}#{number}"))),
            "number": number, "title": title, "body": body, "user": user(sender),
            "labels": labels, "state": if closed { "closed" } else { "open" },
            "state_reason": if closed { Some("completed") } else { None },
            "locked": false, "assignee": null, "assignees": [], "milestone": null, "comments": 0,
            "created_at": now, "updated_at": now, "closed_at": if closed { Some(&now) } else { None },
            "author_association": association(repo, sender),
        },
        "repository": repository(repo),
        "sender": user(sender),
        "installation": installation(installation_id),
    });
    if action == "labeled" || action == "unlabeled" {
        payload["label"] = labels.last().cloned().unwrap_or(Value::Null);
    }
    payload
}

/// An `issue_comment` `created` event: `sender` commented `comment_body` on issue `number`.
pub fn issue_comment_created(
    repo: &str,
    installation_id: u64,
    number: u64,
    comment_body: &str,
    sender: &str,
) -> Value {
    let now = zulu(Utc::now());
    let comment_id = 2_000_000_000 + u64::from_le_bytes(uuid_bytes()) % 1_000_000_000;
    json!({
        "action": "created",
        "issue": {
            "url": format!("https://api.github.com/repos/{repo}/issues/{number}"),
            "html_url": format!("https://github.com/{repo}/issues/{number}"),
            "id": stable_id("issue", &format!("{repo}#{number}")),
            "number": number, "title": format!("Issue #{number}"), "state": "open", "locked": false,
            "labels": [], "comments": 1, "user": user(sender), "created_at": now, "updated_at": now,
        },
        "comment": {
            "url": format!("https://api.github.com/repos/{repo}/issues/comments/{comment_id}"),
            "html_url": format!("https://github.com/{repo}/issues/{number}#issuecomment-{comment_id}"),
            "issue_url": format!("https://api.github.com/repos/{repo}/issues/{number}"),
            "id": comment_id, "node_id": format!("IC_kwDO{comment_id}"), "body": comment_body,
            "user": user(sender), "created_at": now, "updated_at": now,
            "author_association": association(repo, sender),
        },
        "repository": repository(repo),
        "sender": user(sender),
        "installation": installation(installation_id),
    })
}

/// A `pull_request` `closed` event for the bot's pull request `number` from `head_ref` into
/// `main`, merged or not, closed by the repository's owner.
pub fn pull_request_closed(
    repo: &str,
    installation_id: u64,
    number: u64,
    head_ref: &str,
    merged: bool,
) -> Value {
    let now = zulu(Utc::now());
    let owner = repo.split('/').next().unwrap_or_default();
    let repository = repository(repo);
    let sha = |name: &str| {
        let digest = Sha256::digest(format!("{repo}:{name}").as_bytes());
        hex::encode(digest)[..40].to_owned()
    };
    let pull_request = json!({
        "url": format!("https://api.github.com/repos/{repo}/pulls/{number}"),
        "id": stable_id("pull", &format!("{repo}#{number}")),
        "node_id": format!("PR_kwDO{}", stable_id("pull", &format!("{repo}#{number}"))),
        "html_url": format!("https://github.com/{repo}/pull/{number}"),
        "diff_url": format!("https://github.com/{repo}/pull/{number}.diff"),
        "issue_url": format!("https://api.github.com/repos/{repo}/issues/{number}"),
        "number": number, "state": "closed", "locked": false, "title": format!("Slipway: {head_ref}"),
        "user": user(BOT_LOGIN), "body": null, "draft": false,
        "created_at": now, "updated_at": now, "closed_at": now,
        "merged_at": if merged { Some(&now) } else { None },
        "merge_commit_sha": if merged { Some(sha("merge")) } else { None },
        "head": {"label": format!("{owner}:{head_ref}"), "ref": head_ref, "sha": sha(head_ref),
            "user": user(owner), "repo": repository},
        "base": {"label": format!("{owner}:main"), "ref": "main", "sha": sha("main"),
            "user": user(owner), "repo": repository},
        "merged": merged, "mergeable": null, "merged_by": if merged { user(owner) } else { Value::Null },
        "comments": 0, "commits": 1, "additions": 0, "deletions": 0, "changed_files": 0,
        "author_association": "NONE",
    });
    json!({
        "action": "closed",
        "number": number,
        "pull_request": pull_request,
        "repository": repository,
        "sender": user(owner),
        "installation": installation(installation_id),
    })
}

/// The `ping` event GitHub sends when an App's webhook is set up.
pub fn ping(hook_id: u64) -> Value {
    let now = zulu(Utc::now());
    json!({
        "zen": "Keep it logically awesome.",
        "hook_id": hook_id,
        "hook": {
            "type": "App", "id": hook_id, "name": "web", "active": true, "events": APP_EVENTS,
            "config": {"content_type": "json", "insecure_ssl": "0",
                "url": "https://example.com/webhooks/github"},
            "updated_at": now, "created_at": now, "app_id": DEFAULT_APP_ID,
            "deliveries_url": format!("https://api.github.com/app/hook/deliveries"),
        },
    })
}

/// A positive id derived from `kind` and `name`, the same for the same inputs.
pub(crate) fn stable_id(kind: &str, name: &str) -> u64 {
    let digest = Sha256::digest(format!("{kind}:{}", name.to_ascii_lowercase()).as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    100_000_000 + u64::from_le_bytes(bytes) % 900_000_000
}

fn uuid_bytes() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    bytes
}

/// A user (or bot, for logins ending in `[bot]`) as GitHub embeds it in payloads.
pub(crate) fn user(login: &str) -> Value {
    let kind = if login.ends_with("[bot]") { "Bot" } else { "User" };
    account(login, kind)
}

/// A user, bot or organization as GitHub's `simple-user` schema has it (every required field).
pub(crate) fn account(login: &str, kind: &str) -> Value {
    let id = stable_id("user", login);
    let bot = kind == "Bot";
    let page = if bot { format!("apps/{}", login.trim_end_matches("[bot]")) } else { login.to_owned() };
    let prefix = match kind {
        "Bot" => "BOT",
        "Organization" => "O",
        _ => "U",
    };
    let api = format!("https://api.github.com/users/{}", login.replace("[bot]", "%5Bbot%5D"));
    json!({
        "login": login, "id": id, "node_id": format!("{prefix}_kgDO{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"), "gravatar_id": "",
        "url": api, "html_url": format!("https://github.com/{page}"),
        "followers_url": format!("{api}/followers"), "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"), "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"), "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"), "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"), "type": kind, "user_view_type": "public",
        "site_admin": false,
    })
}

/// What varies between repositories; the rest of GitHub's repository object follows from it.
#[derive(Debug, Clone)]
pub(crate) struct RepoFacts<'a> {
    /// `owner/name`.
    pub full_name: &'a str,
    /// Its id.
    pub id: u64,
    /// Private or public.
    pub private: bool,
    /// Description, if any.
    pub description: Option<&'a str>,
    /// A template repository.
    pub is_template: bool,
    /// Created (RFC 3339).
    pub created_at: &'a str,
}

/// `repo` (`owner/name`) as payloads embed it. The owner is shown as an organization.
pub(crate) fn repository(repo: &str) -> Value {
    repository_object(&RepoFacts {
        full_name: repo,
        id: stable_id("repo", repo),
        private: false,
        description: None,
        is_template: false,
        created_at: "2026-01-01T00:00:00Z",
    })
}

/// A repository with every field GitHub's `full-repository` and `repository` schemas require.
pub(crate) fn repository_object(f: &RepoFacts<'_>) -> Value {
    let repo = f.full_name;
    let (owner, name) = repo.split_once('/').unwrap_or((repo, repo));
    let api = format!("https://api.github.com/repos/{repo}");
    let mut object = json!({
        "id": f.id, "node_id": format!("R_kgDO{}", f.id), "name": name, "full_name": repo,
        "private": f.private, "visibility": if f.private { "private" } else { "public" },
        "owner": account(owner, "Organization"), "html_url": format!("https://github.com/{repo}"),
        "description": f.description, "fork": false, "url": api, "is_template": f.is_template,
        "clone_url": format!("https://github.com/{repo}.git"), "git_url": format!("git://github.com/{repo}.git"),
        "ssh_url": format!("git@github.com:{repo}.git"), "svn_url": format!("https://github.com/{repo}"),
        "mirror_url": null, "homepage": null, "language": null, "license": null,
        "default_branch": "main", "forks": 0, "forks_count": 0, "stargazers_count": 0, "watchers": 0,
        "watchers_count": 0, "open_issues": 0, "open_issues_count": 0, "size": 0, "network_count": 0,
        "subscribers_count": 0, "has_issues": true, "has_projects": true, "has_wiki": true, "has_pages": false,
        "has_downloads": true, "has_discussions": false, "archived": false, "disabled": false,
        "topics": [], "allow_forking": true, "web_commit_signoff_required": false,
        "created_at": f.created_at, "updated_at": f.created_at, "pushed_at": f.created_at,
    });
    for (key, suffix) in REPO_URLS {
        object[key] = json!(format!("{api}/{suffix}"));
    }
    object
}

/// The hypermedia URL templates of a repository object.
const REPO_URLS: [(&str, &str); 36] = [
    ("archive_url", "{archive_format}{/ref}"),
    ("assignees_url", "assignees{/user}"),
    ("blobs_url", "git/blobs{/sha}"),
    ("branches_url", "branches{/branch}"),
    ("collaborators_url", "collaborators{/collaborator}"),
    ("comments_url", "comments{/number}"),
    ("commits_url", "commits{/sha}"),
    ("compare_url", "compare/{base}...{head}"),
    ("contents_url", "contents/{+path}"),
    ("contributors_url", "contributors"),
    ("deployments_url", "deployments"),
    ("downloads_url", "downloads"),
    ("events_url", "events"),
    ("forks_url", "forks"),
    ("git_commits_url", "git/commits{/sha}"),
    ("git_refs_url", "git/refs{/sha}"),
    ("git_tags_url", "git/tags{/sha}"),
    ("hooks_url", "hooks"),
    ("issue_comment_url", "issues/comments{/number}"),
    ("issue_events_url", "issues/events{/number}"),
    ("issues_url", "issues{/number}"),
    ("keys_url", "keys{/key_id}"),
    ("labels_url", "labels{/name}"),
    ("languages_url", "languages"),
    ("merges_url", "merges"),
    ("milestones_url", "milestones{/number}"),
    ("notifications_url", "notifications{?since,all,participating}"),
    ("pulls_url", "pulls{/number}"),
    ("releases_url", "releases{/id}"),
    ("stargazers_url", "stargazers"),
    ("statuses_url", "statuses/{sha}"),
    ("subscribers_url", "subscribers"),
    ("subscription_url", "subscription"),
    ("tags_url", "tags"),
    ("teams_url", "teams"),
    ("trees_url", "git/trees{/sha}"),
];

/// The Slipway GitHub App as GitHub's `integration` schema has it.
pub(crate) fn integration(app_id: &Value, permissions: Value, events: &[&str], created_at: &str) -> Value {
    json!({"id": app_id, "slug": "slipway", "client_id": "Iv1.slipwaysandbox", "node_id": "A_kwDOSlipway",
        "name": "Slipway", "owner": account("slipway-dev", "Organization"),
        "description": "Turns issues into pull requests.", "external_url": "https://example.com",
        "html_url": "https://github.com/apps/slipway", "created_at": created_at, "updated_at": created_at,
        "permissions": permissions, "events": events})
}

fn installation(id: u64) -> Value {
    json!({"id": id, "node_id": format!("MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u{id}")})
}

fn label(repo: &str, name: &str) -> Value {
    let id = stable_id("label", &format!("{repo}:{name}"));
    json!({"id": id, "node_id": format!("LA_kwDO{id}"),
        "url": format!("https://api.github.com/repos/{repo}/labels/{name}"), "name": name, "color": "ededed", "default": false, "description": null})
}

/// `OWNER` for the repository's owner, else `NONE`.
fn association(repo: &str, login: &str) -> &'static str {
    if repo.split('/').next().is_some_and(|owner| owner.eq_ignore_ascii_case(login)) {
        "OWNER"
    } else {
        "NONE"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_installation_repository_and_sender() {
        let issue = issues("labeled", "acme/shop", 7, 12, "Add a button", "Please", &["slipway"], "alice");
        assert_eq!(issue["installation"]["id"], 7);
        assert_eq!(issue["repository"]["full_name"], "acme/shop");
        assert_eq!(issue["repository"]["owner"]["login"], "acme");
        assert_eq!(issue["repository"]["default_branch"], "main");
        assert_eq!(issue["sender"]["login"], "alice");
        assert_eq!(
            (issue["issue"]["number"].as_u64(), issue["label"]["name"].as_str()),
            (Some(12), Some("slipway"))
        );
        assert_eq!(issue["repository"]["id"], repository("acme/shop")["id"]);
        let comment = issue_comment_created("acme/shop", 7, 12, "/slipway retry", "acme");
        assert_eq!(comment["comment"]["author_association"], "OWNER");
        assert_eq!(comment["comment"]["body"], "/slipway retry");
        let closed = pull_request_closed("acme/shop", 7, 13, "slipway/issue-12", true);
        assert_eq!(closed["pull_request"]["merged"], true);
        assert_eq!(closed["pull_request"]["head"]["ref"], "slipway/issue-12");
        assert_eq!(ping(5)["hook"]["id"], 5);
        assert_eq!(
            signature(b"{}", "secret"),
            "sha256=77325902caca812dc259733aacd046b73817372c777b8d95b402647474516e13"
        );
    }
}
