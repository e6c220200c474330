//! Activities of GitHub coding jobs: the model calls (plan, code, review), the GitHub calls
//! (comment, permission, repository reads, commit + pull request) and the usage report to Stripe.
//!
//! A job edits a customer's repository, so what it may do is decided here, not by the model:
//! - the plan names the files the change touches; each is checked against the [`PathPolicy`]
//!   (no CI, lockfiles, secrets, nothing outside the repository) and the context bounds
//!   ([`CodingLimits`]) before anything is read;
//! - the coding step reads those files through the GitHub API, shows them to the model, and
//!   applies the model's search/replace edits ([`code_edits`]), which must fit the files: a
//!   misfit fails the step visibly, it never rewrites a file;
//! - the review step sees the unified diff, checked against the policy again first.
//!
//! The model's answers are parsed here, at the edge: a malformed answer is worth another
//! completion; a refused path or an edit that does not apply is not (the same plan fails the
//! same way), and workflows only ever see typed values. Every answer was paid for, so a job
//! that accounts failures ([`LlmTask::account_failures`]) is told of an unusable one as an
//! answer carrying its tokens ([`Unusable`]), and decides itself whether to ask again; jobs
//! recorded before get an activity failure, retried by Temporal when a new completion may help.

pub mod code_edits;
pub mod path_policy;
pub mod prompts;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use slipway_proto::jobs::{
    CodeOut, CommentInput, LlmOut, LlmTask, MeterEventInput, PermissionInput, PullRequestInput,
    PullRequestOut, ReviewOut, Unusable,
};
use temporalio_macros::activities;
use temporalio_sdk::{
    ApplicationFailure,
    activities::{ActivityContext, ActivityError},
};

use slipway_providers::{
    ClientError,
    github::GitHubApp,
    llm::{Completion, LlmClient},
    stripe::StripeClient,
};

pub use code_edits::{EditAnswer, EditError};
pub use path_policy::{PathPolicy, Refusal};
use prompts::{Plan, Review};

use crate::error::IntoActivityError;

/// How much of a repository a job may show the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodingLimits {
    /// Most files one change may touch (`SLIPWAY_JOB_MAX_FILES`, default 8).
    pub max_files: usize,
    /// Most bytes of file content shown to the model in one step (`SLIPWAY_JOB_MAX_BYTES`,
    /// default 200 000).
    pub max_bytes: usize,
    /// Most repository paths listed to the planner (`SLIPWAY_JOB_MAX_TREE_PATHS`, default 2 000).
    pub max_tree_paths: usize,
}

impl Default for CodingLimits {
    fn default() -> Self {
        Self { max_files: 8, max_bytes: 200_000, max_tree_paths: 2_000 }
    }
}

/// The job activities.
#[derive(Debug)]
pub struct JobActivities {
    github: GitHubApp,
    llm: LlmClient,
    stripe: StripeClient,
    policy: PathPolicy,
    limits: CodingLimits,
}

impl JobActivities {
    /// Build from clients, the path policy and the context bounds.
    pub fn new(
        github: GitHubApp,
        llm: LlmClient,
        stripe: StripeClient,
        policy: PathPolicy,
        limits: CodingLimits,
    ) -> Self {
        Self { github, llm, stripe, policy, limits }
    }
}

/// A model answer the job cannot use, after the model was paid for it.
#[derive(Debug)]
struct Spoiled {
    reason: String,
    /// Another completion may be usable (a malformed answer); a refused path or an edit that
    /// does not apply fails the same way again.
    retry: bool,
}

impl Spoiled {
    /// A model answer that does not parse (worth another completion).
    fn malformed(step: &str, e: impl std::fmt::Display) -> Self {
        Self { reason: format!("the model's {step} answer is not usable: {e}"), retry: true }
    }

    /// A change the job will not make.
    fn refused(reason: String) -> Self {
        Self { reason, retry: false }
    }

    /// As an activity failure (runs recorded before failures were accounted).
    fn into_error(self) -> ActivityError {
        if self.retry {
            ActivityError::application(
                ApplicationFailure::builder(self.reason).type_name("InvalidModelOutput".to_owned()).build(),
            )
        } else {
            refused(self.reason)
        }
    }

    /// As the step's answer: the job sees why, and counts the tokens (see
    /// [`LlmTask::account_failures`]).
    fn into_unusable(self) -> Unusable {
        Unusable { reason: self.reason, retry: self.retry }
    }
}

/// The text of a model answer, unless the model declined to answer (its tokens still count).
fn said(completion: &Completion) -> Result<&str, Spoiled> {
    match &completion.refusal {
        Some(refusal) => Err(Spoiled::refused(format!("the model refused: {refusal}"))),
        None => Ok(&completion.content),
    }
}

/// A change the job will not make (the same plan would fail the same way: not retried).
fn refused(message: String) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(message)
            .type_name("ChangeRefused".to_owned())
            .non_retryable(true)
            .build(),
    )
}

/// What the job is told of a model answer it cannot use: an answer carrying the tokens the
/// answer cost (`spoiled_answer`), when the job accounts failures, or an activity failure as
/// before (the tokens are lost to the meter).
fn settle<T>(
    task: &LlmTask,
    result: Result<T, Spoiled>,
    spoiled_answer: impl FnOnce(Unusable) -> T,
) -> Result<T, ActivityError> {
    match result {
        Ok(out) => Ok(out),
        Err(spoiled) if task.account_failures => Ok(spoiled_answer(spoiled.into_unusable())),
        Err(spoiled) => Err(spoiled.into_error()),
    }
}

/// Parses the planning answer.
pub fn parse_plan(answer: &str) -> Result<Plan, String> {
    let json = prompts::json_object(answer).ok_or("no JSON object")?;
    let plan: Plan = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if plan.files.is_empty() {
        return Err("the plan names no file".into());
    }
    Ok(plan)
}

/// Parses the coding answer (edits, not files).
pub fn parse_edits(answer: &str) -> Result<EditAnswer, String> {
    let json = prompts::json_object(answer).ok_or("no JSON object")?;
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// Parses a review answer.
pub fn parse_review(answer: &str) -> Result<(bool, String), String> {
    let json = prompts::json_object(answer).ok_or("no JSON object")?;
    let r: Review = serde_json::from_str(json).map_err(|e| e.to_string())?;
    match r.verdict.as_str() {
        "approve" => Ok((true, r.comments)),
        "changes" => Ok((false, r.comments)),
        other => Err(format!("unknown verdict {other:?}")),
    }
}

/// The issue, as data.
fn issue(task: &LlmTask) -> serde_json::Value {
    json!({"repository": task.repo, "title": task.title, "body": task.body})
}

impl JobActivities {
    /// Refuses paths the policy protects, and changes larger than the bounds (the reason).
    fn check_paths<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        let paths: Vec<&str> = paths.into_iter().collect();
        let refusals = self.policy.refusals(paths.iter().copied());
        if !refusals.is_empty() {
            let list: Vec<String> = refusals.iter().map(ToString::to_string).collect();
            return Err(format!(
                "refused by Slipway's path policy: {} (an operator can allow a path with SLIPWAY_JOB_ALLOWED_PATHS)",
                list.join("; ")
            ));
        }
        if paths.len() > self.limits.max_files {
            return Err(format!(
                "the change touches {} files; a job may touch at most {} (SLIPWAY_JOB_MAX_FILES)",
                paths.len(),
                self.limits.max_files
            ));
        }
        Ok(())
    }

    /// One model call: the step's instructions, its data as a JSON document, the schema its
    /// answer must follow.
    async fn ask(
        &self,
        system: &str,
        data: &serde_json::Value,
        schema: (&'static str, serde_json::Value),
    ) -> Result<Completion, ActivityError> {
        self.llm
            .complete(system, &data.to_string(), Some(schema))
            .await
            .map_err(ClientError::into_activity_error)
    }

    /// The current content of `paths` at the default branch (absent files are left out),
    /// within the byte bound.
    async fn read_files(
        &self,
        task: &LlmTask,
        paths: &[String],
    ) -> Result<BTreeMap<String, String>, ActivityError> {
        let gh = &self.github;
        let inst = task.installation_id;
        let base = gh.default_branch(inst, &task.repo).await.map_err(ClientError::into_activity_error)?;
        let mut out = BTreeMap::new();
        let mut bytes = 0usize;
        for path in paths {
            if let Some(text) =
                gh.file(inst, &task.repo, path, &base).await.map_err(ClientError::into_activity_error)?
            {
                bytes += text.len();
                if bytes > self.limits.max_bytes {
                    return Err(refused(format!(
                        "the files the change touches exceed {} bytes (SLIPWAY_JOB_MAX_BYTES)",
                        self.limits.max_bytes
                    )));
                }
                out.insert(path.clone(), text);
            }
        }
        Ok(out)
    }
}

#[activities]
impl JobActivities {
    /// Planning: the steps and the files the change touches (checked against the policy).
    #[activity]
    pub async fn plan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        task: LlmTask,
    ) -> Result<LlmOut, ActivityError> {
        let gh = &self.github;
        let base = gh
            .default_branch(task.installation_id, &task.repo)
            .await
            .map_err(ClientError::into_activity_error)?;
        let (mut tree, mut truncated) = gh
            .tree(task.installation_id, &task.repo, &base)
            .await
            .map_err(ClientError::into_activity_error)?;
        if tree.len() > self.limits.max_tree_paths {
            tree.truncate(self.limits.max_tree_paths);
            truncated = true;
        }
        let data = json!({"issue": issue(&task), "tree": tree, "tree_truncated": truncated});
        let completion = self.ask(prompts::PLAN, &data, prompts::plan_schema()).await?;
        let (tokens, estimated) = (completion.tokens, completion.estimated);
        let plan = said(&completion)
            .and_then(|c| parse_plan(c).map_err(|e| Spoiled::malformed("plan", e)))
            .and_then(|plan| {
                self.check_paths(plan.files.iter().map(String::as_str)).map_err(Spoiled::refused)?;
                Ok(plan)
            });
        let plan = plan.map(|plan| LlmOut {
            content: plan.markdown(),
            tokens,
            files: plan.files,
            estimated,
            unusable: None,
        });
        settle(&task, plan, |unusable| LlmOut {
            content: String::new(),
            tokens,
            files: Vec::new(),
            estimated,
            unusable: Some(unusable),
        })
    }

    /// Coding: reads the files the plan touches, asks for edits, applies them.
    #[activity]
    pub async fn code(
        self: Arc<Self>,
        _ctx: ActivityContext,
        task: LlmTask,
    ) -> Result<CodeOut, ActivityError> {
        self.check_paths(task.plan_files.iter().map(String::as_str)).map_err(refused)?;
        let originals = self.read_files(&task, &task.plan_files).await?;
        let files: Vec<serde_json::Value> =
            originals.iter().map(|(path, content)| json!({"path": path, "content": content})).collect();
        let new_files: Vec<&String> =
            task.plan_files.iter().filter(|p| !originals.contains_key(*p)).collect();
        let data = json!({"issue": issue(&task), "plan": task.plan, "files": files, "new_files": new_files,
            "review_feedback": task.feedback});
        let completion = self.ask(prompts::CODE, &data, prompts::edits_schema()).await?;
        let (tokens, estimated) = (completion.tokens, completion.estimated);
        let files = said(&completion)
            .and_then(|c| parse_edits(c).map_err(|e| Spoiled::malformed("code", e)))
            .and_then(|answer| {
                self.check_paths(
                    answer
                        .edits
                        .iter()
                        .map(|e| e.path.as_str())
                        .chain(answer.delete.iter().map(String::as_str)),
                )
                .map_err(Spoiled::refused)?;
                code_edits::apply(&originals, &task.plan_files, &answer)
                    .map_err(|e| Spoiled::refused(format!("the model's edits do not apply: {e}")))
            });
        let out = files.map(|files| CodeOut { files, tokens, estimated, unusable: None });
        settle(&task, out, |unusable| CodeOut {
            files: Vec::new(),
            tokens,
            estimated,
            unusable: Some(unusable),
        })
    }

    /// Review: the diff, checked against the policy, then approved or sent back with comments.
    #[activity]
    pub async fn review(
        self: Arc<Self>,
        _ctx: ActivityContext,
        task: LlmTask,
    ) -> Result<ReviewOut, ActivityError> {
        self.check_paths(task.files.iter().map(|f| f.path.as_str())).map_err(refused)?;
        let paths: Vec<String> = task.files.iter().map(|f| f.path.clone()).collect();
        let originals = self.read_files(&task, &paths).await?;
        let diff = code_edits::unified_diff(&originals, &task.files);
        let data = json!({"issue": issue(&task), "plan": task.plan, "diff": diff});
        let completion = self.ask(prompts::REVIEW, &data, prompts::review_schema()).await?;
        let (tokens, estimated) = (completion.tokens, completion.estimated);
        let out = said(&completion)
            .and_then(|c| parse_review(c).map_err(|e| Spoiled::malformed("review", e)))
            .map(|(approved, comments)| ReviewOut { approved, comments, tokens, estimated, unusable: None });
        settle(&task, out, |unusable| ReviewOut {
            approved: false,
            comments: String::new(),
            tokens,
            estimated,
            unusable: Some(unusable),
        })
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

    /// Report usage to Stripe Billing (idempotent by identifier). A refusal for good (not a
    /// transient failure, which Temporal retries) is counted in `slipway_usage_unbilled`; the job
    /// keeps the usage as unbilled.
    #[activity]
    pub async fn report_usage(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: MeterEventInput,
    ) -> Result<(), ActivityError> {
        match self
            .stripe
            .meter_event(&input.event_name, &input.customer_id, input.value, &input.identifier)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                if e.retry() == slipway_providers::error::Retry::Permanent {
                    crate::metrics::record_unbilled(&input.event_name);
                }
                Err(e.into_activity_error())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(account_failures: bool) -> LlmTask {
        LlmTask {
            repo: "acme/shop".into(),
            installation_id: 1,
            title: "t".into(),
            body: String::new(),
            plan: None,
            plan_files: Vec::new(),
            feedback: None,
            files: Vec::new(),
            account_failures,
        }
    }

    /// An unusable answer reaches a job that accounts failures as a value (its tokens with it);
    /// a job recorded before gets the failure it always got.
    #[test]
    fn unusable_answers_are_values_for_jobs_that_account_them() {
        let spent = |u: Unusable| (u.reason, u.retry);
        let refused = || Err::<(String, bool), _>(Spoiled::refused("no".into()));
        let malformed = || Err::<(String, bool), _>(Spoiled::malformed("plan", "no JSON object"));
        assert_eq!(settle(&task(true), refused(), spent).unwrap(), ("no".to_owned(), false));
        let (reason, retry) = settle(&task(true), malformed(), spent).unwrap();
        assert!(retry && reason.contains("plan answer is not usable"), "{reason}");
        assert!(settle(&task(false), refused(), spent).is_err());
        assert!(settle(&task(false), malformed(), spent).is_err());
        assert_eq!(settle(&task(false), Ok(("ok".to_owned(), true)), spent).unwrap().0, "ok");
    }

    #[test]
    fn plans_name_their_files_and_fenced_answers_parse() {
        let plan =
            parse_plan("```json\n{\"summary\":\"s\",\"steps\":[\"a\"],\"files\":[\"README.md\"]}\n```")
                .unwrap();
        assert_eq!(plan.files, ["README.md"]);
        assert!(parse_plan("{\"summary\":\"s\",\"steps\":[],\"files\":[]}").is_err());
        assert!(parse_plan("no json here").is_err());
    }

    #[test]
    fn edits_are_parsed() {
        let answer =
            parse_edits("{\"edits\":[{\"path\":\"a.rs\",\"search\":\"x\",\"replace\":\"y\"}],\"delete\":[]}")
                .unwrap();
        assert_eq!(answer.edits[0].path, "a.rs");
        assert!(
            parse_edits("{\"files\":[{\"path\":\"a.rs\",\"content\":\"x\"}]}").is_err(),
            "whole files are not edits"
        );
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
