//! Payloads of GitHub-driven coding jobs (`Job`), their per-customer concurrency gate
//! (`JobGate`) and the account links (`GitHubLinks`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::StepProgress;

/// Workflow id of the job for one issue (one job per issue).
pub fn job_workflow_id(repo: &str, issue_number: u64) -> String {
    format!("job-{repo}#{issue_number}")
}

/// Workflow id of a customer's job gate.
pub fn job_gate_workflow_id(customer_id: &str) -> String {
    format!("job-gate-{customer_id}")
}

/// Workflow id of the registry that links GitHub accounts to Slipway users and customers: one
/// per deployment, which is identified by its task queue within the namespace.
pub fn github_links_workflow_id(task_queue: &str) -> String {
    format!("github-links@{task_queue}")
}

/// Branch a job pushes to.
pub fn job_branch(issue_number: u64) -> String {
    format!("slipway/issue-{issue_number}")
}

/// A GitHub account (user or organization) linked to a paying Slipway user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitHubLink {
    /// GitHub login of the installation's account.
    pub account: String,
    /// Slipway user.
    pub user_id: String,
    /// Stripe customer billed for its jobs.
    pub customer_id: String,
}

/// State of the links workflow (carried across continue-as-new).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitHubLinks {
    /// By account login (lower-case).
    pub links: BTreeMap<String, GitHubLink>,
}

/// Knobs of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobPolicy {
    /// How many times the review may send the work back to coding.
    pub max_review_rounds: u32,
    /// Stripe meter event for opened pull requests.
    pub pr_meter_event: String,
    /// Stripe meter event for LLM tokens.
    pub tokens_meter_event: String,
    /// History length at which a waiting job continues as new (carrying its ledger): well
    /// before Temporal's event limit, however many comments its issue gets.
    #[serde(default = "default_history_limit")]
    pub history_limit: u32,
}

fn default_history_limit() -> u32 {
    5_000
}

impl Default for JobPolicy {
    fn default() -> Self {
        Self {
            max_review_rounds: 2,
            pr_meter_event: "slipway_pull_requests".to_owned(),
            tokens_meter_event: "slipway_llm_tokens".to_owned(),
            history_limit: default_history_limit(),
        }
    }
}

/// Input of a job (from the `issues` webhook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRequest {
    /// `owner/name`.
    pub repo: String,
    /// GitHub App installation covering the repository.
    pub installation_id: u64,
    /// Issue number.
    pub issue_number: u64,
    /// Issue title.
    pub title: String,
    /// Issue body.
    pub body: String,
    /// Who opened or labelled it.
    pub requested_by: String,
    /// Billed customer; `None` when refused.
    pub customer_id: Option<String>,
    /// Linked Slipway user, if any.
    pub user_id: Option<String>,
    /// Why the job may not run (unlinked account, no subscription), commented on the issue.
    pub refusal: Option<String>,
    /// Knobs.
    pub policy: JobPolicy,
    /// The GitHub account the repository belongs to. When set, the job decides its own
    /// entitlement (the account's link, that customer's standing) instead of being told: the
    /// webhook then needs one durable call, whatever the state of the worker.
    #[serde(default)]
    pub account: Option<String>,
    /// Jobs of one customer that may run at once (its gate's cap), for a job that opens its
    /// customer's gate itself.
    #[serde(default)]
    pub max_running: u32,
    /// Which run of the issue's job this is (1, or 0 when not told): a job that ended starts
    /// again as run 2, 3, ..., billed under identifiers of its own.
    #[serde(default)]
    pub run: u32,
    /// The GitHub delivery that started this run (its redelivery is no relabel).
    #[serde(default)]
    pub trigger: Option<String>,
    /// Where a job that continued as new stands (`None` for a fresh start).
    #[serde(default)]
    pub resume: Option<Box<JobResume>>,
}

/// What a job carries across continue-as-new: everything it has said and owes, and where it
/// waits. A job continues as new only while it waits (for a PR to close, for a retry, for its
/// slot), never mid-step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobResume {
    /// The status, ledger (`billed`, `unbilled`) included.
    pub status: JobStatus,
    /// The job's progress comment.
    pub comment_id: Option<u64>,
    /// Closes of pull requests kept until the job knows its own.
    pub pr_closes: Vec<PullRequestClosed>,
    /// Commands not yet applied.
    pub commands: Vec<JobCommand>,
    /// An operator asked for the unbilled usage to be reported again.
    pub bill_again: bool,
    /// Where the job waits.
    pub phase: JobPhase,
    /// The deliveries of the relabels it has heard (a redelivery retries nothing).
    #[serde(default)]
    pub relabels: Vec<String>,
}

/// Where a waiting job waits (see [`JobResume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    /// Queued for a slot at its customer's gate (its seat there is kept).
    Queued,
    /// Refused (not a writer, no link, no subscription): waits for a writer's retry or relabel.
    Refused,
    /// An attempt failed: waits for a writer's retry or cancel.
    Failed,
    /// The pull request is open: waits for it to close.
    PrOpen,
    /// Ended, but owes usage Stripe refused: waits for an operator's `bill_again`.
    Owing,
}

/// What a job may do: its account's link and that customer's standing, decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobEntitlement {
    /// The customer billed; `None` when refused.
    pub customer_id: Option<String>,
    /// The linked Slipway user, if any.
    pub user_id: Option<String>,
    /// Why the job may not run, if it may not.
    pub refusal: Option<String>,
}

/// A job's seat at its customer's gate (the gate is started if it is not running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateSeat {
    /// The customer.
    pub customer_id: String,
    /// The job's workflow id.
    pub job_id: String,
    /// The gate's cap, if it has to be started.
    pub max_running: u32,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a slot.
    Queued,
    /// Asking the model for a plan.
    Planning,
    /// Asking the model for the change.
    Coding,
    /// Asking the model to review the change.
    Reviewing,
    /// Committing and opening the pull request.
    PrCreating,
    /// Pull request open (waiting for it to be merged or closed).
    PrOpened,
    /// Something failed; `/slipway retry` starts again.
    Failed,
    /// Cancelled, or refused before starting.
    Cancelled,
}

impl JobState {
    /// Value of the `SlipwayStatus` search attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Planning => "planning",
            Self::Coding => "coding",
            Self::Reviewing => "reviewing",
            Self::PrCreating => "pr_creating",
            Self::PrOpened => "pr_opened",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A `/slipway …` command from an issue comment, or the job's label applied again
/// ([`JobCommand::RELABEL`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCommand {
    /// `retry`, `cancel`, or `relabel`.
    pub command: String,
    /// Commenter's login (must have write access).
    pub login: String,
    /// The GitHub delivery that carried it.
    #[serde(default)]
    pub delivery: Option<String>,
    /// The issue's title as the delivery shows it: a retry works on the issue as it reads now,
    /// not as it read when someone without write access opened it.
    #[serde(default)]
    pub title: Option<String>,
    /// The issue's body, likewise.
    #[serde(default)]
    pub body: Option<String>,
}

impl JobCommand {
    /// The job's label applied again: a retry for a job that waits for one, nothing otherwise.
    pub const RELABEL: &'static str = "relabel";
}

/// The `pr_closed` signal: a pull request on the job's branch name was closed.
///
/// A branch name proves nothing (a fork's branch may be named like the job's), so the signal
/// carries which pull request closed and where its head lives, and the job ends only for the
/// pull request it opened from its own repository ([`PullRequestClosed::ends_job`]). Releases
/// before this one sent a bare `merged` boolean, which still reads (as [`PullRequestClosed::legacy`])
/// so recorded histories replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(from = "PullRequestClosedWire")]
pub struct PullRequestClosed {
    /// Merged, or just closed.
    pub merged: bool,
    /// The pull request's number; `None` only in a previous release's signal.
    #[serde(default)]
    pub number: Option<u64>,
    /// The head repository's `owner/name` (`None`: a deleted fork, or a previous release's signal).
    #[serde(default)]
    pub head_repo: Option<String>,
    /// The base repository's `owner/name`.
    #[serde(default)]
    pub base_repo: Option<String>,
}

/// What a `pr_closed` signal looks like on the wire: a struct, or a previous release's boolean.
#[derive(Deserialize)]
#[serde(untagged)]
enum PullRequestClosedWire {
    Legacy(bool),
    Bound {
        merged: bool,
        #[serde(default)]
        number: Option<u64>,
        #[serde(default)]
        head_repo: Option<String>,
        #[serde(default)]
        base_repo: Option<String>,
    },
}

impl From<PullRequestClosedWire> for PullRequestClosed {
    fn from(w: PullRequestClosedWire) -> Self {
        match w {
            PullRequestClosedWire::Legacy(merged) => Self::legacy(merged),
            PullRequestClosedWire::Bound { merged, number, head_repo, base_repo } => {
                Self { merged, number, head_repo, base_repo }
            }
        }
    }
}

impl PullRequestClosed {
    /// A previous release's signal (only `merged`): it names no pull request.
    pub fn legacy(merged: bool) -> Self {
        Self { merged, number: None, head_repo: None, base_repo: None }
    }

    /// Whether this close ends a job that opened `opened` (its PR number, `None` before it
    /// opened one). A previous release's signal ends the job as it always did (only such a
    /// release's starter sends one, and recorded histories must replay); any other must name
    /// the job's own pull request, whose head is in the base repository (not a fork).
    pub fn ends_job(&self, opened: Option<u64>) -> bool {
        let Some(number) = self.number else { return true };
        let same_repo = match (&self.head_repo, &self.base_repo) {
            (Some(head), Some(base)) => head.eq_ignore_ascii_case(base),
            _ => false,
        };
        opened == Some(number) && same_repo
    }
}

/// Result of the `status` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatus {
    /// `owner/name`.
    pub repo: String,
    /// Issue number.
    pub issue_number: u64,
    /// State.
    pub state: JobState,
    /// States passed through, in order.
    pub history: Vec<JobState>,
    /// Steps of the current attempt.
    pub steps: Vec<StepProgress>,
    /// Pull request, once opened.
    pub pr_number: Option<u64>,
    /// Its URL.
    pub pr_url: Option<String>,
    /// `merged` or `closed` once the PR is closed.
    pub pr_outcome: Option<String>,
    /// LLM tokens used so far.
    pub tokens: u64,
    /// True once a model answer came without `usage` and its tokens were estimated.
    #[serde(default)]
    pub tokens_estimated: bool,
    /// Meter event identifiers already reported (the once-only ledger).
    pub billed: Vec<String>,
    /// Usage Stripe refused for good: kept here, reported again when an operator asks
    /// (`slipway jobs bill`), and billed once then.
    #[serde(default)]
    pub unbilled: Vec<UnbilledUsage>,
    /// Why it failed or was refused.
    pub failure: Option<String>,
    /// Attempt number (1 + retries).
    pub attempt: u32,
}

/// Output of an LLM step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LlmOut {
    /// The model's answer (the plan, as Markdown).
    pub content: String,
    /// Prompt + completion tokens of the call.
    pub tokens: u64,
    /// The paths the plan touches (checked against the path policy).
    #[serde(default)]
    pub files: Vec<String>,
    /// `tokens` is an estimate (the answer carried no `usage`).
    #[serde(default)]
    pub estimated: bool,
    /// The answer cannot be used (only with [`LlmTask::account_failures`]); `tokens` still counts.
    #[serde(default)]
    pub unusable: Option<Unusable>,
}

/// A file the change writes (`content: None` deletes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileChange {
    /// Path in the repository.
    pub path: String,
    /// New content; `None` deletes.
    pub content: Option<String>,
}

/// Input of the planning / coding / review activities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LlmTask {
    /// `owner/name`.
    pub repo: String,
    /// Installation (to read files).
    pub installation_id: u64,
    /// Issue title.
    pub title: String,
    /// Issue body.
    pub body: String,
    /// The plan (coding, review).
    pub plan: Option<String>,
    /// The paths the plan touches: the only ones coding may read and change.
    #[serde(default)]
    pub plan_files: Vec<String>,
    /// Review feedback to address (coding after `changes`).
    pub feedback: Option<String>,
    /// The proposed change (review).
    pub files: Vec<FileChange>,
    /// Answer an unusable or refused model answer as [`Unusable`] with its tokens, instead of
    /// failing the activity (which loses what the model was paid for). Runs recorded before
    /// leave it unset.
    #[serde(default)]
    pub account_failures: bool,
}

/// A model answer the job cannot use, with the tokens it cost (see [`LlmTask::account_failures`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unusable {
    /// Why.
    pub reason: String,
    /// Asking again may help (a malformed answer); `false`: the same plan fails the same way
    /// (a refused path, an edit that does not apply).
    pub retry: bool,
}

/// Output of the coding activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CodeOut {
    /// The change.
    pub files: Vec<FileChange>,
    /// Tokens used.
    pub tokens: u64,
    /// `tokens` is an estimate (the answer carried no `usage`).
    #[serde(default)]
    pub estimated: bool,
    /// The answer cannot be used (only with [`LlmTask::account_failures`]); `tokens` still counts.
    #[serde(default)]
    pub unusable: Option<Unusable>,
}

/// Output of the review activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviewOut {
    /// Approved.
    pub approved: bool,
    /// Comments (the feedback when not approved).
    pub comments: String,
    /// Tokens used.
    pub tokens: u64,
    /// `tokens` is an estimate (the answer carried no `usage`).
    #[serde(default)]
    pub estimated: bool,
    /// The answer cannot be used (only with [`LlmTask::account_failures`]); `tokens` still counts.
    #[serde(default)]
    pub unusable: Option<Unusable>,
}

/// Input of the pull-request activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullRequestInput {
    /// `owner/name`.
    pub repo: String,
    /// Installation.
    pub installation_id: u64,
    /// Issue number (linked from the body).
    pub issue_number: u64,
    /// Branch to push.
    pub branch: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Commit message.
    pub commit_message: String,
    /// The change.
    pub files: Vec<FileChange>,
}

/// An opened pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullRequestOut {
    /// Number.
    pub number: u64,
    /// URL.
    pub url: String,
}

/// Input of the issue-comment activity (create or edit the job's one comment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommentInput {
    /// `owner/name`.
    pub repo: String,
    /// Installation.
    pub installation_id: u64,
    /// Issue number.
    pub issue_number: u64,
    /// Existing comment to edit, if any.
    pub comment_id: Option<u64>,
    /// Body.
    pub body: String,
}

/// Input of the permission check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PermissionInput {
    /// `owner/name`.
    pub repo: String,
    /// Installation.
    pub installation_id: u64,
    /// Login.
    pub login: String,
}

/// A usage the job owes but Stripe refused for good (the ledger's unbilled side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnbilledUsage {
    /// Meter event name.
    pub event_name: String,
    /// Quantity.
    pub value: u64,
    /// The deterministic identifier it will be reported with.
    pub identifier: String,
    /// Stripe's answer, last time.
    pub reason: String,
}

/// A usage report for Stripe Billing meter events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeterEventInput {
    /// Meter event name.
    pub event_name: String,
    /// Stripe customer.
    pub customer_id: String,
    /// Quantity.
    pub value: u64,
    /// Deterministic identifier (Stripe dedupes it for 24 h; the job's ledger forever).
    pub identifier: String,
}

/// Input of a customer's job gate (and what it carries across continue-as-new).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobGateInput {
    /// Customer.
    pub customer_id: String,
    /// At most this many jobs run at once.
    pub max_running: u32,
    /// Jobs holding a slot.
    pub running: Vec<String>,
    /// Jobs waiting, in arrival order.
    pub waiting: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pr_close_ends_only_the_job_that_opened_it() {
        let read = |v: serde_json::Value| serde_json::from_value::<PullRequestClosed>(v).unwrap();
        // A previous release's signal (a bare boolean) still reads, and ends the job as before.
        let legacy = read(json!(true));
        assert_eq!(legacy, PullRequestClosed::legacy(true));
        assert!(legacy.ends_job(Some(13)) && legacy.ends_job(None));
        let own = PullRequestClosed {
            merged: true,
            number: Some(13),
            head_repo: Some("acme/shop".into()),
            base_repo: Some("acme/shop".into()),
        };
        assert_eq!(read(serde_json::to_value(&own).unwrap()), own);
        assert!(own.ends_job(Some(13)));
        assert!(!own.ends_job(Some(12)), "another pull request");
        assert!(!own.ends_job(None), "the job opened none");
        let fork = PullRequestClosed { head_repo: Some("mallory/shop".into()), ..own.clone() };
        assert!(!fork.ends_job(Some(13)), "a fork");
        let deleted_fork = PullRequestClosed { head_repo: None, ..own.clone() };
        assert!(!deleted_fork.ends_job(Some(13)), "a deleted fork");
        // Fields a later release adds are optional on the wire.
        assert_eq!(read(json!({"merged": false})), PullRequestClosed::legacy(false));
    }
}
