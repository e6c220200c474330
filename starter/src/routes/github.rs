//! `POST /webhooks/github`: the GitHub App's webhook.
//!
//! Verified (`X-Hub-Signature-256`, constant time) before anything else; deduplicated by
//! `X-GitHub-Delivery` (a redelivery keeps its id: it becomes the signal request id, and a job
//! is one workflow per issue). Answers within GitHub's 10 s budget, after the durable start or
//! signal:
//! - `ping` → 200;
//! - `issues` `opened` / `labeled` carrying the job label → start the issue's job (refused jobs
//!   start too: they only comment why — unlinked account, no active subscription);
//! - `issue_comment` `created` with `/slipway retry` or `/slipway cancel` → the job's `command`;
//! - `pull_request` `closed` on a `slipway/issue-<n>` branch → the job's `pr_closed`;
//! - anything else → 200, logged.

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use slipway_proto::jobs::{JobCommand, JobRequest, job_workflow_id};
use slipway_providers::github;

use crate::{
    AppState,
    error::{ApiError, body_rejection},
    metrics::Metric,
    temporal::GatewayError,
};

/// What a verified delivery asks for. Pure: unit-tested below.
#[derive(Debug, PartialEq, Eq)]
pub enum Intent {
    /// Nothing to do (logged).
    Ignore(String),
    /// Answer a ping.
    Pong,
    /// Start (or find) the job of an issue; `account` owns the repository.
    StartJob {
        /// Repository owner (the installation's account).
        account: String,
        /// `owner/name`.
        repo: String,
        /// Installation id.
        installation_id: u64,
        /// Issue number.
        number: u64,
        /// Title.
        title: String,
        /// Body.
        body: String,
        /// Who triggered it.
        sender: String,
    },
    /// A `/slipway` command for an issue's job.
    Command {
        /// Job workflow id.
        job: String,
        /// The command.
        command: JobCommand,
    },
    /// An issue's job PR closed.
    PrClosed {
        /// Job workflow id.
        job: String,
        /// Merged or just closed.
        merged: bool,
    },
}

/// Maps an event to an intent.
pub fn intent(event: &str, payload: &Value, label: &str) -> Result<Intent, String> {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    let repo = || s(&payload["repository"]["full_name"]).ok_or("repository.full_name missing");
    match event {
        "ping" => Ok(Intent::Pong),
        "issues" => {
            let action = payload["action"].as_str().unwrap_or_default();
            let labels: Vec<&str> = payload["issue"]["labels"]
                .as_array()
                .map(|a| a.iter().filter_map(|l| l["name"].as_str()).collect())
                .unwrap_or_default();
            let triggered = match action {
                "opened" => labels.contains(&label),
                "labeled" => payload["label"]["name"].as_str() == Some(label),
                _ => false,
            };
            if !triggered {
                return Ok(Intent::Ignore(format!("issues.{action} without the {label:?} label")));
            }
            Ok(Intent::StartJob {
                account: s(&payload["repository"]["owner"]["login"])
                    .ok_or("repository.owner.login missing")?,
                repo: repo()?,
                installation_id: payload["installation"]["id"].as_u64().ok_or("installation.id missing")?,
                number: payload["issue"]["number"].as_u64().ok_or("issue.number missing")?,
                title: s(&payload["issue"]["title"]).unwrap_or_default(),
                body: s(&payload["issue"]["body"]).unwrap_or_default(),
                sender: s(&payload["sender"]["login"]).unwrap_or_default(),
            })
        }
        "issue_comment" if payload["action"] == "created" => {
            let body = payload["comment"]["body"].as_str().unwrap_or_default().trim();
            let command = match body.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["/slipway", "retry", ..] => "retry",
                ["/slipway", "cancel", ..] => "cancel",
                _ => return Ok(Intent::Ignore("comment without a /slipway command".into())),
            };
            let number = payload["issue"]["number"].as_u64().ok_or("issue.number missing")?;
            Ok(Intent::Command {
                job: job_workflow_id(&repo()?, number),
                command: JobCommand {
                    command: command.to_owned(),
                    login: s(&payload["comment"]["user"]["login"])
                        .or_else(|| s(&payload["sender"]["login"]))
                        .unwrap_or_default(),
                },
            })
        }
        "pull_request" if payload["action"] == "closed" => {
            let head = payload["pull_request"]["head"]["ref"].as_str().unwrap_or_default();
            let Some(number) = head.strip_prefix("slipway/issue-").and_then(|n| n.parse().ok()) else {
                return Ok(Intent::Ignore("pull request not opened by Slipway".into()));
            };
            Ok(Intent::PrClosed {
                job: job_workflow_id(&repo()?, number),
                merged: payload["pull_request"]["merged"].as_bool().unwrap_or(false),
            })
        }
        other => Ok(Intent::Ignore(format!("event {other} not handled"))),
    }
}

/// The handler.
pub async fn webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(body_rejection)?;
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    github::webhook::verify(
        &body,
        header(github::webhook::SIGNATURE_HEADER),
        app.settings.github_webhook_secret.expose_secret().as_bytes(),
    )
    .map_err(|e| {
        app.metrics.incr(Metric::WebhookRejected);
        ApiError::unauthorized(e.code(), e.to_string())
    })?;
    let delivery = header("x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 100)
        .ok_or_else(|| ApiError::bad_request("MISSING_DELIVERY_ID", "X-GitHub-Delivery is required"))?
        .to_owned();
    let event = header("x-github-event").unwrap_or_default().to_owned();
    let span = tracing::Span::current();
    span.record("delivery_id", delivery.as_str());
    span.record("event_type", event.as_str());
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("MALFORMED_PAYLOAD", format!("not JSON: {e}")))?;
    app.metrics.incr(Metric::WebhookReceived);
    let intent = intent(&event, &payload, &app.settings.job_label)
        .map_err(|m| ApiError::bad_request("MALFORMED_PAYLOAD", m))?;
    let unavailable = |e: GatewayError| {
        app.metrics.incr(Metric::TemporalUnavailable);
        ApiError::unavailable(e.to_string())
    };
    let accepted = |v: Value| {
        app.metrics.incr(Metric::WorkflowAccepted);
        Ok((StatusCode::ACCEPTED, Json(v)))
    };
    match intent {
        Intent::Pong => Ok((StatusCode::OK, Json(json!({"pong": true})))),
        Intent::Ignore(why) => {
            tracing::info!(%delivery, %event, why, "github event ignored");
            Ok((StatusCode::OK, Json(json!({"received": true, "handled": false}))))
        }
        Intent::StartJob { account, repo, installation_id, number, title, body, sender } => {
            let link = app.gateway.github_link(&account).await.map_err(unavailable)?;
            let (customer_id, user_id, refusal) = match link {
                None => (
                    None,
                    None,
                    Some(format!(
                        "the GitHub account `{account}` is not linked to a Slipway subscription; ask a Slipway admin to link it"
                    )),
                ),
                Some(l) => {
                    let entitled =
                        app.gateway.customer_entitlement(&l.customer_id).await.map_err(unavailable)?;
                    if entitled.is_some_and(|e| e.entitled) {
                        (Some(l.customer_id), Some(l.user_id), None)
                    } else {
                        (
                            None,
                            Some(l.user_id),
                            Some("the linked Slipway subscription is not active".to_owned()),
                        )
                    }
                }
            };
            let req = JobRequest {
                repo,
                installation_id,
                issue_number: number,
                title,
                body,
                requested_by: sender,
                customer_id,
                user_id,
                refusal,
                policy: app.settings.job_policy.clone(),
            };
            let job =
                app.gateway.start_job(req, app.settings.max_jobs_per_customer).await.map_err(unavailable)?;
            tracing::info!(%delivery, %job, "github job accepted");
            accepted(json!({"job": job}))
        }
        Intent::Command { job, command } => {
            match app.gateway.job_command(&job, command, format!("gh-{delivery}")).await {
                Ok(()) => accepted(json!({"job": job})),
                Err(GatewayError::NotFound | GatewayError::Closed) => {
                    Ok((StatusCode::OK, Json(json!({"handled": false, "reason": "no job for this issue"}))))
                }
                Err(e) => Err(unavailable(e)),
            }
        }
        Intent::PrClosed { job, merged } => {
            match app.gateway.job_pr_closed(&job, merged, format!("gh-{delivery}")).await {
                Ok(()) => accepted(json!({"job": job})),
                Err(GatewayError::NotFound | GatewayError::Closed) => {
                    Ok((StatusCode::OK, Json(json!({"handled": false}))))
                }
                Err(e) => Err(unavailable(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(action: &str, labels: &[&str]) -> Value {
        json!({"action": action, "installation": {"id": 7},
               "repository": {"full_name": "acme/shop", "owner": {"login": "acme"}},
               "issue": {"number": 3, "title": "Add x", "body": "please", "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>()},
               "label": {"name": labels.last().copied().unwrap_or("")},
               "sender": {"login": "dev"}})
    }

    #[test]
    fn labelled_issues_start_jobs() {
        assert!(matches!(
            intent("issues", &issue("opened", &["slipway"]), "slipway").unwrap(),
            Intent::StartJob { number: 3, .. }
        ));
        assert!(matches!(
            intent("issues", &issue("labeled", &["bug", "slipway"]), "slipway").unwrap(),
            Intent::StartJob { .. }
        ));
        assert!(matches!(
            intent("issues", &issue("opened", &["bug"]), "slipway").unwrap(),
            Intent::Ignore(_)
        ));
        assert!(matches!(
            intent("issues", &issue("closed", &["slipway"]), "slipway").unwrap(),
            Intent::Ignore(_)
        ));
    }

    #[test]
    fn comments_and_prs_reach_the_issue_job() {
        let c = json!({"action": "created", "repository": {"full_name": "acme/shop"}, "issue": {"number": 3},
                       "comment": {"body": "/slipway cancel please", "user": {"login": "dev"}}});
        assert_eq!(
            intent("issue_comment", &c, "slipway").unwrap(),
            Intent::Command {
                job: "job-acme/shop#3".into(),
                command: JobCommand { command: "cancel".into(), login: "dev".into() }
            }
        );
        let pr = json!({"action": "closed", "repository": {"full_name": "acme/shop"},
                        "pull_request": {"merged": true, "head": {"ref": "slipway/issue-3"}}});
        assert_eq!(
            intent("pull_request", &pr, "slipway").unwrap(),
            Intent::PrClosed { job: "job-acme/shop#3".into(), merged: true }
        );
        assert_eq!(intent("ping", &json!({}), "slipway").unwrap(), Intent::Pong);
        assert!(matches!(intent("push", &json!({}), "slipway").unwrap(), Intent::Ignore(_)));
    }
}
