//! GitHub App deliveries: [`GitHubDelivery`] (verified, identified, read once) and [`intent`],
//! the pure mapping from an event to what Slipway does about it:
//! - `ping` → answered;
//! - `issues` `opened` / `labeled` carrying the job label → start the issue's job;
//! - `issue_comment` `created` with `/slipway retry` or `/slipway cancel` → the job's `command`
//!   (a retry of a job that has ended starts it again, as a new run);
//! - `pull_request` `closed` on a `slipway/issue-<n>` branch whose head is in the repository
//!   itself → the job's `pr_closed`, naming the pull request (the job ends only for the one it
//!   opened); a fork's pull request is ignored here, whatever its branch is called (a fork can
//!   name its branch like any job's);
//! - anything else → acknowledged and logged.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use secrecy::ExposeSecret;
use slipway_proto::jobs::{JobCommand, PullRequestClosed, job_workflow_id};
use slipway_providers::github::webhook::{self, DELIVERY_HEADER, EVENT_HEADER, Event, SIGNATURE_HEADER};

use super::rejected;
use crate::{
    AppState,
    error::{ApiError, body_rejection},
    metrics::Metric,
};

/// A GitHub delivery whose signature verified.
#[derive(Debug)]
pub struct GitHubDelivery {
    /// `X-GitHub-Delivery` (kept on redelivery: the dedupe key).
    pub id: String,
    /// The event.
    pub event: Event,
}

impl FromRequest<AppState> for GitHubDelivery {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (signature, delivery, name) =
            (header(SIGNATURE_HEADER), header(DELIVERY_HEADER), header(EVENT_HEADER));
        let body = Bytes::from_request(req, app).await.map_err(body_rejection)?;
        let secret = app.settings.github_webhook_secret.expose_secret().as_bytes();
        webhook::verify(&body, signature.as_deref(), secret)
            .map_err(|e| rejected(app, ApiError::unauthorized(e.code(), e.to_string())))?;
        let id = delivery.filter(|d| !d.is_empty() && d.len() <= 100).ok_or_else(|| {
            rejected(app, ApiError::bad_request("MISSING_DELIVERY_ID", "X-GitHub-Delivery is required"))
        })?;
        let name = name.unwrap_or_default();
        let event = Event::parse(&name, &body)
            .map_err(|e| rejected(app, ApiError::bad_request("MALFORMED_PAYLOAD", e.to_string())))?;
        app.metrics.incr(Metric::WebhookReceived);
        let span = tracing::Span::current();
        span.record("delivery_id", id.as_str());
        span.record("event_type", name.as_str());
        Ok(Self { id, event })
    }
}

/// What a verified delivery asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Intent {
    /// Nothing to do (logged).
    Ignore(String),
    /// Answer a ping.
    Pong,
    /// Start (or find) the job of an issue.
    StartJob(IssueTrigger),
    /// A `/slipway` command for an issue's job.
    Command {
        /// Job workflow id.
        job: String,
        /// The command.
        command: JobCommand,
        /// For `retry`: the issue, to start the job again if it has ended.
        restart: Option<IssueTrigger>,
    },
    /// A pull request on an issue job's branch closed (the job checks it is its own).
    PrClosed {
        /// Job workflow id.
        job: String,
        /// Which pull request, from where, merged or not.
        closed: PullRequestClosed,
    },
}

/// An issue that asks for a coding job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueTrigger {
    /// Repository owner (the installation's account, which is what gets linked to a customer).
    pub account: String,
    /// `owner/name`.
    pub repo: String,
    /// Installation id.
    pub installation_id: u64,
    /// Issue number.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Who triggered it.
    pub sender: String,
}

/// Maps an event to an intent. Pure. `Err` names what a handled event lacks.
pub fn intent(event: &Event, label: &str) -> Result<Intent, String> {
    match event {
        Event::Ping => Ok(Intent::Pong),
        Event::Issues(e) => {
            let triggered = match e.action.as_str() {
                "opened" => e.issue.labels.iter().any(|l| l.name == label),
                "labeled" => e.label.as_ref().is_some_and(|l| l.name == label),
                _ => false,
            };
            if !triggered {
                return Ok(Intent::Ignore(format!("issues.{} without the {label:?} label", e.action)));
            }
            Ok(Intent::StartJob(IssueTrigger {
                account: e.repository.owner.login.clone(),
                repo: e.repository.full_name.clone(),
                installation_id: e.installation.as_ref().ok_or("installation.id missing")?.id,
                number: e.issue.number,
                title: e.issue.title.clone(),
                body: e.issue.body.clone().unwrap_or_default(),
                sender: e.sender.login.clone(),
            }))
        }
        Event::IssueComment(e) if e.action == "created" => {
            let command = match e.comment.body.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["/slipway", "retry", ..] => "retry",
                ["/slipway", "cancel", ..] => "cancel",
                _ => return Ok(Intent::Ignore("comment without a /slipway command".into())),
            };
            let restart =
                (command == "retry").then_some(e.installation.as_ref()).flatten().map(|i| IssueTrigger {
                    account: e.repository.owner.login.clone(),
                    repo: e.repository.full_name.clone(),
                    installation_id: i.id,
                    number: e.issue.number,
                    title: e.issue.title.clone(),
                    body: e.issue.body.clone().unwrap_or_default(),
                    sender: e.comment.user.login.clone(),
                });
            Ok(Intent::Command {
                job: job_workflow_id(&e.repository.full_name, e.issue.number),
                command: JobCommand {
                    command: command.to_owned(),
                    login: e.comment.user.login.clone(),
                    delivery: None,
                    title: Some(e.issue.title.clone()),
                    body: Some(e.issue.body.clone().unwrap_or_default()),
                },
                restart,
            })
        }
        Event::PullRequest(e) if e.action == "closed" => {
            let pr = &e.pull_request;
            let Some(number) = pr.head.name.strip_prefix("slipway/issue-").and_then(|n| n.parse().ok())
            else {
                return Ok(Intent::Ignore("pull request not opened by Slipway".into()));
            };
            // Slipway pushes its branches to the repository itself: a head anywhere else (a fork,
            // or a deleted one) is someone else's pull request, named like the job's branch.
            let base = pr.base_repo().unwrap_or(&e.repository.full_name);
            if !pr.head_repo().is_some_and(|h| h.eq_ignore_ascii_case(base)) {
                return Ok(Intent::Ignore(format!(
                    "pull request #{} from {} is not from {base}",
                    pr.number,
                    pr.head_repo().unwrap_or("a deleted fork")
                )));
            }
            Ok(Intent::PrClosed {
                job: job_workflow_id(&e.repository.full_name, number),
                closed: PullRequestClosed {
                    merged: pr.merged.unwrap_or(false),
                    number: Some(pr.number),
                    head_repo: pr.head_repo().map(str::to_owned),
                    base_repo: Some(base.to_owned()),
                },
            })
        }
        Event::IssueComment(e) => Ok(Intent::Ignore(format!("issue_comment.{} not handled", e.action))),
        Event::PullRequest(e) => Ok(Intent::Ignore(format!("pull_request.{} not handled", e.action))),
        Event::Other(name) => Ok(Intent::Ignore(format!("event {name} not handled"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(name: &str, v: Value) -> Event {
        Event::parse(name, v.to_string().as_bytes()).unwrap()
    }

    fn repo() -> Value {
        json!({"full_name": "acme/shop", "owner": {"login": "acme"}})
    }

    fn issue(action: &str, labels: &[&str]) -> Event {
        parse(
            "issues",
            json!({"action": action, "installation": {"id": 7}, "repository": repo(),
               "issue": {"number": 3, "title": "Add x", "body": "please",
                         "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>()},
               "label": {"name": labels.last().copied().unwrap_or("")},
               "sender": {"login": "dev"}}),
        )
    }

    #[test]
    fn labelled_issues_start_jobs() {
        let Intent::StartJob(t) = intent(&issue("opened", &["slipway"]), "slipway").unwrap() else {
            panic!("a job")
        };
        assert_eq!(
            (t.account.as_str(), t.repo.as_str(), t.number, t.installation_id),
            ("acme", "acme/shop", 3, 7)
        );
        assert!(matches!(
            intent(&issue("labeled", &["bug", "slipway"]), "slipway").unwrap(),
            Intent::StartJob(_)
        ));
        assert!(matches!(intent(&issue("opened", &["bug"]), "slipway").unwrap(), Intent::Ignore(_)));
        assert!(matches!(intent(&issue("closed", &["slipway"]), "slipway").unwrap(), Intent::Ignore(_)));
    }

    #[test]
    fn comments_and_prs_reach_the_issue_job() {
        let c = parse(
            "issue_comment",
            json!({"action": "created", "repository": repo(), "issue": {"number": 3},
                   "comment": {"body": "/slipway cancel please", "user": {"login": "dev"}}}),
        );
        assert_eq!(
            intent(&c, "slipway").unwrap(),
            Intent::Command {
                job: "job-acme/shop#3".into(),
                command: JobCommand {
                    command: "cancel".into(),
                    login: "dev".into(),
                    delivery: None,
                    title: Some(String::new()),
                    body: Some(String::new()),
                },
                restart: None,
            }
        );
        let retry = parse(
            "issue_comment",
            json!({"action": "created", "repository": repo(), "installation": {"id": 7},
                   "issue": {"number": 3, "title": "Fix it", "body": null},
                   "comment": {"body": "/slipway retry", "user": {"login": "dev"}}}),
        );
        let Intent::Command { restart: Some(t), .. } = intent(&retry, "slipway").unwrap() else {
            panic!("a retry carries the issue to start an ended job again")
        };
        assert_eq!(
            (t.repo.as_str(), t.number, t.installation_id, t.sender.as_str()),
            ("acme/shop", 3, 7, "dev")
        );
        let pr = |number: u64, head: Value| {
            parse(
                "pull_request",
                json!({"action": "closed", "repository": repo(),
                       "pull_request": {"number": number, "merged": true,
                           "head": {"ref": "slipway/issue-3", "repo": head},
                           "base": {"ref": "main", "repo": repo()}}}),
            )
        };
        assert_eq!(
            intent(&pr(13, repo()), "slipway").unwrap(),
            Intent::PrClosed {
                job: "job-acme/shop#3".into(),
                closed: PullRequestClosed {
                    merged: true,
                    number: Some(13),
                    head_repo: Some("acme/shop".into()),
                    base_repo: Some("acme/shop".into()),
                },
            }
        );
        // A fork's branch named like the job's (or a deleted fork's) reaches no job.
        let fork = json!({"full_name": "mallory/shop", "owner": {"login": "mallory"}});
        assert!(matches!(intent(&pr(14, fork), "slipway").unwrap(), Intent::Ignore(_)));
        assert!(matches!(intent(&pr(14, Value::Null), "slipway").unwrap(), Intent::Ignore(_)));
        assert_eq!(intent(&Event::Ping, "slipway").unwrap(), Intent::Pong);
        assert!(matches!(intent(&Event::Other("push".into()), "slipway").unwrap(), Intent::Ignore(_)));
    }
}
