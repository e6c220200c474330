//! GitHub's webhook contract: verifying a delivery and reading the events Slipway acts on.
//!
//! **Verification** (GitHub's "Validating webhook deliveries"): `X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256 of the raw body>` under the webhook secret, compared in constant time,
//! over the raw bytes before any parsing. GitHub signs no timestamp; a delivery is identified by
//! `X-GitHub-Delivery` (kept on redelivery), which is what receivers dedupe on.
//!
//! **Reading**: the event's name comes from `X-GitHub-Event`; [`Event::parse`] reads the body once
//! into a typed view of the events Slipway handles (`ping`, `issues`, `issue_comment`,
//! `pull_request`), with only the fields Slipway reads (named as in GitHub's webhook schemas,
//! `@octokit/openapi-webhooks`) and tolerant of everything else. Other events are not read.

use serde::Deserialize;

use crate::signature::{SignatureError, hmac_sha256};

/// The header GitHub signs deliveries with.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The header naming the event.
pub const EVENT_HEADER: &str = "x-github-event";
/// The header identifying the delivery (the same on a redelivery).
pub const DELIVERY_HEADER: &str = "x-github-delivery";

/// Verify a delivery's signature over its raw body.
pub fn verify(body: &[u8], header: Option<&str>, secret: &[u8]) -> Result<(), SignatureError> {
    hmac_sha256(body, header, secret)
}

/// A verified delivery's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `ping`, sent when the hook is created.
    Ping,
    /// `issues`.
    Issues(IssuesEvent),
    /// `issue_comment`.
    IssueComment(IssueCommentEvent),
    /// `pull_request`.
    PullRequest(PullRequestEvent),
    /// Any other event, by name: acknowledged, not read.
    Other(String),
}

/// Why a signed body is not the event its header names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a GitHub `{event}` event: {reason}")]
pub struct EventError {
    /// The event's name.
    pub event: String,
    /// What did not parse.
    pub reason: String,
}

impl Event {
    /// Reads the body of a delivery of event `name`.
    pub fn parse(name: &str, body: &[u8]) -> Result<Self, EventError> {
        fn read<'a, T: Deserialize<'a>>(name: &str, body: &'a [u8]) -> Result<T, EventError> {
            serde_json::from_slice(body)
                .map_err(|e| EventError { event: name.to_owned(), reason: e.to_string() })
        }
        Ok(match name {
            "ping" => Self::Ping,
            "issues" => Self::Issues(read(name, body)?),
            "issue_comment" => Self::IssueComment(read(name, body)?),
            "pull_request" => Self::PullRequest(read(name, body)?),
            other => Self::Other(other.to_owned()),
        })
    }
}

/// A user or organization.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    /// `login`.
    pub login: String,
}

/// The repository an event happened in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Repository {
    /// `owner/name`.
    pub full_name: String,
    /// The owning account (the App's installation account).
    pub owner: Account,
}

/// The App installation that received the event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Installation {
    /// Its id (tokens are minted per installation).
    pub id: u64,
}

/// A label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Label {
    /// Its name.
    pub name: String,
}

/// An issue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Issue {
    /// Its number in the repository.
    pub number: u64,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Body (`null` when empty).
    #[serde(default)]
    pub body: Option<String>,
    /// Labels it carries.
    #[serde(default)]
    pub labels: Vec<Label>,
}

/// `issues` (`opened`, `labeled`, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IssuesEvent {
    /// `opened`, `labeled`, …
    pub action: String,
    /// The issue.
    pub issue: Issue,
    /// The label added, on `labeled`.
    #[serde(default)]
    pub label: Option<Label>,
    /// Where.
    pub repository: Repository,
    /// The App installation (absent for repository webhooks).
    #[serde(default)]
    pub installation: Option<Installation>,
    /// Who did it.
    pub sender: Account,
}

/// An issue comment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Comment {
    /// Its text.
    #[serde(default)]
    pub body: String,
    /// Its author.
    pub user: Account,
}

/// `issue_comment` (`created`, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IssueCommentEvent {
    /// `created`, `edited`, `deleted`.
    pub action: String,
    /// The issue (title and body too: a retry of an ended job starts it again from them).
    pub issue: Issue,
    /// The comment.
    pub comment: Comment,
    /// Where.
    pub repository: Repository,
    /// The App installation (absent for repository webhooks).
    #[serde(default)]
    pub installation: Option<Installation>,
}

/// The repository a pull request's branch lives in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BranchRepository {
    /// `owner/name`.
    pub full_name: String,
}

/// A branch reference.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Branch {
    /// The branch name.
    #[serde(rename = "ref")]
    pub name: String,
    /// Where the branch lives: the base repository, or a fork (`null` once a fork is deleted).
    #[serde(default)]
    pub repo: Option<BranchRepository>,
}

/// A pull request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequest {
    /// Its number in the base repository.
    pub number: u64,
    /// Merged (only meaningful once closed).
    #[serde(default)]
    pub merged: Option<bool>,
    /// Its head branch. A branch name proves nothing: a fork's branch may be named like any
    /// other; only the head repository says where the change comes from.
    pub head: Branch,
    /// The branch it merges into (always in the repository the event is about).
    pub base: Branch,
}

impl PullRequest {
    /// The head repository's `owner/name`, `None` for a deleted fork.
    pub fn head_repo(&self) -> Option<&str> {
        self.head.repo.as_ref().map(|r| r.full_name.as_str())
    }

    /// The base repository's `owner/name`, `None` if the payload leaves it out.
    pub fn base_repo(&self) -> Option<&str> {
        self.base.repo.as_ref().map(|r| r.full_name.as_str())
    }
}

/// `pull_request` (`closed`, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequestEvent {
    /// `opened`, `closed`, …
    pub action: String,
    /// The pull request.
    pub pull_request: PullRequest,
    /// Where.
    pub repository: Repository,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn githubs_documented_test_vector() {
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(verify(b"Hello, World!", Some(header), b"It's a Secret to Everybody"), Ok(()));
        assert_eq!(verify(b"Hello, World!", Some(header), b"another secret"), Err(SignatureError::Mismatch));
    }

    #[test]
    fn reads_the_events_slipway_handles() {
        let repo = json!({"full_name": "acme/shop", "owner": {"login": "acme"}, "private": false});
        let body = json!({"action": "opened", "issue": {"number": 3, "title": "Add x", "body": null,
            "labels": [{"name": "slipway", "color": "fff"}]}, "repository": repo,
            "installation": {"id": 7}, "sender": {"login": "dev"}});
        let Event::Issues(e) = Event::parse("issues", body.to_string().as_bytes()).unwrap() else {
            panic!("issues")
        };
        assert_eq!((e.issue.number, e.issue.body, e.installation.map(|i| i.id)), (3, None, Some(7)));
        let body = json!({"action": "closed", "number": 13, "repository": repo,
            "pull_request": {"number": 13, "merged": true,
                "head": {"ref": "slipway/issue-3", "sha": "abc", "repo": {"full_name": "mallory/shop"}},
                "base": {"ref": "main", "repo": repo}}});
        let Event::PullRequest(e) = Event::parse("pull_request", body.to_string().as_bytes()).unwrap() else {
            panic!("pull_request")
        };
        assert_eq!(e.pull_request.head.name, "slipway/issue-3");
        let pr = &e.pull_request;
        assert_eq!(
            (pr.number, pr.head_repo(), pr.base_repo()),
            (13, Some("mallory/shop"), Some("acme/shop"))
        );
        // A deleted fork's head repository is `null`.
        let body = json!({"action": "closed", "repository": repo,
            "pull_request": {"number": 14, "head": {"ref": "slipway/issue-3", "repo": null},
                "base": {"ref": "main", "repo": repo}}});
        let Event::PullRequest(e) = Event::parse("pull_request", body.to_string().as_bytes()).unwrap() else {
            panic!("pull_request")
        };
        assert_eq!(e.pull_request.head_repo(), None);
        assert_eq!(Event::parse("ping", b"{}").unwrap(), Event::Ping);
        assert_eq!(Event::parse("push", b"not json").unwrap(), Event::Other("push".into()));
        let err = Event::parse("issues", b"{\"action\": \"opened\"}").unwrap_err();
        assert!(err.to_string().contains("issues"), "{err}");
    }
}
