//! Activities of GitHub coding jobs: the model calls (plan, code, review), the GitHub calls
//! (comment, permission, commit + pull request) and the usage report to Stripe.
//!
//! The model answers are parsed here, at the edge: a malformed answer is a retryable failure
//! (a new completion may be well-formed), and workflows only ever see typed values.

use std::sync::Arc;

use serde::Deserialize;
use slipway_proto::jobs::{
    CodeOut, CommentInput, FileChange, LlmOut, LlmTask, MeterEventInput, PermissionInput, PullRequestInput,
    PullRequestOut, ReviewOut,
};
use temporalio_macros::activities;
use temporalio_sdk::{
    ApplicationFailure,
    activities::{ActivityContext, ActivityError},
};

use slipway_providers::{ClientError, github::GitHubApp, llm::LlmClient, stripe::StripeClient};

use crate::error::IntoActivityError;

/// The job activities.
#[derive(Debug)]
pub struct JobActivities {
    github: GitHubApp,
    llm: LlmClient,
    stripe: StripeClient,
}

impl JobActivities {
    /// Build from clients.
    pub fn new(github: GitHubApp, llm: LlmClient, stripe: StripeClient) -> Self {
        Self { github, llm, stripe }
    }
}

/// System prompts; the `slipway:<step>` tag names the step for the model provider's logs.
const PLAN_PROMPT: &str = "You are Slipway's planner (slipway:plan). Read the GitHub issue and answer with a short, \
numbered implementation plan.";
const CODE_PROMPT: &str = "You are Slipway's coder (slipway:code). Implement the plan. Answer with JSON only: \
{\"files\":[{\"path\":\"...\",\"content\":\"...\"}],\"delete\":[\"path\"]}.";
const REVIEW_PROMPT: &str = "You are Slipway's reviewer (slipway:review). Review the proposed change against the \
issue. Answer with JSON only: {\"verdict\":\"approve\"|\"changes\",\"comments\":\"...\"}.";

#[derive(Deserialize)]
struct CodeAnswer {
    #[serde(default)]
    files: Vec<CodeFile>,
    #[serde(default)]
    delete: Vec<String>,
}

#[derive(Deserialize)]
struct CodeFile {
    path: String,
    content: String,
}

#[derive(Deserialize)]
struct ReviewAnswer {
    verdict: String,
    #[serde(default)]
    comments: String,
}

/// The first JSON object in a model answer (models sometimes wrap it in a code fence).
fn json_object(answer: &str) -> Option<&str> {
    let start = answer.find('{')?;
    let end = answer.rfind('}')?;
    (end > start).then(|| &answer[start..=end])
}

fn bad_output(step: &str, e: impl std::fmt::Display) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(format!("the model's {step} answer is not usable: {e}"))
            .type_name("InvalidModelOutput".to_owned())
            .build(),
    )
}

/// Parses a coding answer; paths must be relative and stay inside the repository.
pub fn parse_code(answer: &str) -> Result<Vec<FileChange>, String> {
    let json = json_object(answer).ok_or("no JSON object")?;
    let parsed: CodeAnswer = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut out: Vec<FileChange> =
        parsed.files.into_iter().map(|f| FileChange { path: f.path, content: Some(f.content) }).collect();
    out.extend(parsed.delete.into_iter().map(|path| FileChange { path, content: None }));
    if out.is_empty() {
        return Err("no files".into());
    }
    if let Some(bad) = out.iter().find(|f| {
        f.path.is_empty() || f.path.starts_with('/') || f.path.split('/').any(|p| p == ".." || p == ".git")
    }) {
        return Err(format!("unsafe path {:?}", bad.path));
    }
    Ok(out)
}

/// Parses a review answer.
pub fn parse_review(answer: &str) -> Result<(bool, String), String> {
    let json = json_object(answer).ok_or("no JSON object")?;
    let r: ReviewAnswer = serde_json::from_str(json).map_err(|e| e.to_string())?;
    match r.verdict.as_str() {
        "approve" => Ok((true, r.comments)),
        "changes" => Ok((false, r.comments)),
        other => Err(format!("unknown verdict {other:?}")),
    }
}

fn issue_text(task: &LlmTask) -> String {
    format!("{}\n\nRepository: {}\n\n{}", task.title, task.repo, task.body)
}

#[activities]
impl JobActivities {
    /// Planning: a short implementation plan.
    #[activity]
    pub async fn plan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        task: LlmTask,
    ) -> Result<LlmOut, ActivityError> {
        let (content, tokens) = self
            .llm
            .complete(PLAN_PROMPT, &issue_text(&task))
            .await
            .map_err(ClientError::into_activity_error)?;
        Ok(LlmOut { content, tokens })
    }

    /// Coding: the change, as files.
    #[activity]
    pub async fn code(
        self: Arc<Self>,
        _ctx: ActivityContext,
        task: LlmTask,
    ) -> Result<CodeOut, ActivityError> {
        let mut prompt = format!("{}\n\nPlan:\n{}", issue_text(&task), task.plan.clone().unwrap_or_default());
        // Context from the repository: its README at the default branch, if any.
        let gh = &self.github;
        let base = gh
            .default_branch(task.installation_id, &task.repo)
            .await
            .map_err(ClientError::into_activity_error)?;
        if let Some(readme) = gh
            .file(task.installation_id, &task.repo, "README.md", &base)
            .await
            .map_err(ClientError::into_activity_error)?
        {
            let excerpt: String = readme.chars().take(4000).collect();
            prompt.push_str(&format!("\n\nRepository README.md:\n{excerpt}"));
        }
        if let Some(feedback) = &task.feedback {
            prompt.push_str(&format!("\n\nReview feedback to address (revision:):\n{feedback}"));
        }
        let (content, tokens) =
            self.llm.complete(CODE_PROMPT, &prompt).await.map_err(ClientError::into_activity_error)?;
        let files = parse_code(&content).map_err(|e| bad_output("code", e))?;
        Ok(CodeOut { files, tokens })
    }

    /// Review: approve, or send back with comments.
    #[activity]
    pub async fn review(
        self: Arc<Self>,
        _ctx: ActivityContext,
        task: LlmTask,
    ) -> Result<ReviewOut, ActivityError> {
        let files: Vec<String> = task
            .files
            .iter()
            .map(|f| match &f.content {
                Some(c) => format!("--- {}\n{c}", f.path),
                None => format!("--- {} (deleted)", f.path),
            })
            .collect();
        let prompt = format!("{}\n\nProposed change:\n{}", issue_text(&task), files.join("\n"));
        let (content, tokens) =
            self.llm.complete(REVIEW_PROMPT, &prompt).await.map_err(ClientError::into_activity_error)?;
        let (approved, comments) = parse_review(&content).map_err(|e| bad_output("review", e))?;
        Ok(ReviewOut { approved, comments, tokens })
    }

    /// Commit the change on the job's branch and open (or find) the pull request.
    #[activity]
    pub async fn open_pull_request(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PullRequestInput,
    ) -> Result<PullRequestOut, ActivityError> {
        let gh = &self.github;
        let inst = input.installation_id;
        let result = async {
            if let Some(pr) = gh.open_pull(inst, &input.repo, &input.branch).await? {
                return Ok(pr);
            }
            let base = gh.default_branch(inst, &input.repo).await?;
            let files: Vec<(String, Option<String>)> =
                input.files.iter().map(|f| (f.path.clone(), f.content.clone())).collect();
            gh.commit_files(inst, &input.repo, &base, &input.branch, &input.commit_message, &files).await?;
            gh.open_pull_request(inst, &input.repo, &input.branch, &base, &input.title, &input.body).await
        }
        .await
        .map_err(ClientError::into_activity_error)?;
        let url = result.html_url.map(String::from).unwrap_or_default();
        Ok(PullRequestOut { number: result.number, url })
    }

    /// Create the job's issue comment, or edit it; returns its id.
    #[activity]
    pub async fn comment(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CommentInput,
    ) -> Result<u64, ActivityError> {
        let gh = &self.github;
        let r = match input.comment_id {
            Some(id) => {
                gh.update_comment(input.installation_id, &input.repo, id, &input.body).await.map(|()| id)
            }
            None => {
                gh.create_comment(input.installation_id, &input.repo, input.issue_number, &input.body).await
            }
        };
        r.map_err(ClientError::into_activity_error)
    }

    /// True if `login` may command jobs (write or admin on the repository).
    #[activity]
    pub async fn can_write(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PermissionInput,
    ) -> Result<bool, ActivityError> {
        let p = self
            .github
            .permission(input.installation_id, &input.repo, &input.login)
            .await
            .map_err(ClientError::into_activity_error)?;
        Ok(matches!(p.as_str(), "admin" | "write" | "maintain"))
    }

    /// Report usage to Stripe Billing (idempotent by identifier).
    #[activity]
    pub async fn report_usage(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: MeterEventInput,
    ) -> Result<(), ActivityError> {
        self.stripe
            .meter_event(&input.event_name, &input.customer_id, input.value, &input.identifier)
            .await
            .map_err(ClientError::into_activity_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_answers_are_parsed_even_when_fenced() {
        let files = parse_code(
            "```json\n{\"files\":[{\"path\":\"a.rs\",\"content\":\"x\"}],\"delete\":[\"old.rs\"]}\n```",
        )
        .unwrap();
        assert_eq!(
            files,
            vec![
                FileChange { path: "a.rs".into(), content: Some("x".into()) },
                FileChange { path: "old.rs".into(), content: None }
            ]
        );
    }

    #[test]
    fn unsafe_or_empty_changes_are_refused() {
        assert!(parse_code("{\"files\":[{\"path\":\"../etc/passwd\",\"content\":\"x\"}]}").is_err());
        assert!(parse_code("{\"files\":[{\"path\":\".git/config\",\"content\":\"x\"}]}").is_err());
        assert!(parse_code("{\"files\":[]}").is_err());
        assert!(parse_code("no json here").is_err());
    }

    #[test]
    fn reviews_are_parsed() {
        assert_eq!(
            parse_review("{\"verdict\":\"approve\",\"comments\":\"ok\"}").unwrap(),
            (true, "ok".into())
        );
        assert_eq!(
            parse_review("{\"verdict\":\"changes\",\"comments\":\"fix\"}").unwrap(),
            (false, "fix".into())
        );
        assert!(parse_review("{\"verdict\":\"maybe\"}").is_err());
    }
}
