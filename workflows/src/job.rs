//! `Job`: one GitHub issue's coding job (`job-<owner>/<repo>#<n>`, one per issue).
//!
//! `queued → planning → coding → reviewing (→ coding, at most `max_review_rounds` times) →
//! pr_creating → pr_opened`, or `failed` / `cancelled`. Progress is one issue comment, edited as
//! the job advances, plus the `status` query and the `SlipwayStatus` search attribute.
//!
//! - At most N jobs of a customer run at once: the job waits for its customer's `JobGate`
//!   (`slot_granted`) and gives the slot back when it leaves the running states.
//! - Only people who can write to the repository spend its owner's subscription: the sender of
//!   the label that starts the job is checked before anything is looked up or asked of the model
//!   (anyone can open an issue, and an issue template can apply the label). `/slipway retry`,
//!   `/slipway cancel` and the label applied again arrive as the `command` signal, each sender
//!   checked (an activity) before it takes effect; a relabel is a retry for a job that waits
//!   for one (refused, failed) and nothing otherwise.
//! - Every model answer was paid for, so its tokens are counted as it arrives and billed however
//!   the attempt ends (PR opened, failed, refused midway, cancelled).
//! - While it waits, a job whose history is long continues as new, carrying its ledger and
//!   comment ([`JobResume`]): comments by anyone cannot drive it into Temporal's event limit.
//! - Billing: once the PR is open, one meter event for the PR and one for the tokens of the
//!   attempt are reported with deterministic identifiers, and recorded in a ledger in the
//!   workflow's state first checked before every report. Stripe forgets identifiers after 24 h;
//!   the ledger does not, so a usage is billed once however often anything is retried or replayed.
//!   A report Stripe refuses for good is kept as `unbilled` (shown in the status, counted by the
//!   worker's `slipway_usage_unbilled`), never dropped: an operator's `bill_again` signal
//!   (`slipway jobs bill`) reports it again with the same identifier, and the job does not end
//!   while it owes anything.

use std::time::Duration;

use slipway_activities::{JobActivities, LookupActivities};
use slipway_proto::{
    jobs::{
        CodeOut, CommentInput, FileChange, GateSeat, JobCommand, JobEntitlement, JobPhase, JobRequest,
        JobResume, JobState, JobStatus, LlmOut, LlmTask, MeterEventInput, PermissionInput, PullRequestClosed,
        PullRequestInput, ReviewOut, UnbilledUsage, Unusable, job_branch, job_gate_workflow_id,
    },
    model::{StepProgress, StepState},
};
use temporalio_common::{ActivityDefinition, RetryPolicy, data_converters::TemporalDeserializable};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ContinueAsNewOptions, SignalWorkflowOptions, SyncWorkflowContext, TimerOptions,
    WorkflowContext, WorkflowContextView, WorkflowResult, WorkflowTermination, workflows::select,
};

use crate::{
    JobGateWorkflow,
    saga::{self, Saga},
    search_attributes,
};

/// Why an attempt stopped early.
enum Stop {
    Cancelled,
    Failed(String),
}

/// How a queued job's wait for its slot ended.
enum SlotWait {
    Granted,
    /// Its history is long: it continues as new, still queued.
    Long,
}

/// How many relabel deliveries a job remembers (to hear a redelivery as one).
const RELABELS: usize = 16;

/// The job workflow.
#[workflow]
pub struct JobWorkflow {
    req: JobRequest,
    status: JobStatus,
    comment_id: Option<u64>,
    slot: bool,
    commands: Vec<JobCommand>,
    cancel_requested: bool,
    retry_requested: bool,
    /// Closes of pull requests on the job's branch name that may be its own: kept until the job
    /// knows its PR number ([`PullRequestClosed::ends_job`] decides).
    pr_closes: Vec<PullRequestClosed>,
    bill_again: bool,
    /// The run recorded [`WRITERS_PATCH`]: writers only, every token accounted, bounded history.
    hardened: bool,
    /// The job waits for a retry: only then does a relabel count as one.
    awaiting_retry: bool,
    /// The writer's command accepted last (the next attempt is theirs, on the issue as it
    /// read then).
    retried_by: Option<JobCommand>,
    /// Deliveries of the relabels heard (see [`RELABELS`]).
    relabels: Vec<String>,
    /// Tokens the current attempt has spent so far (billed however the attempt ends).
    attempt_tokens: u64,
    /// Where a continued run resumes (`None`: a fresh start).
    resume: Option<JobPhase>,
}

/// How many closes of pull requests the job has not opened (yet) it keeps while it has none.
const PENDING_CLOSES: usize = 8;

/// Jobs started by a starter that decided their entitlement itself (and opened the customer's
/// gate) replay without asking; newer jobs ask themselves (`LookupActivities`), on start and
/// before every retry.
const LOOKUP_PATCH: &str = "job-entitlement-in-workflow";

/// How long a refused job waits for a `/slipway retry` before it ends.
const REFUSED_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Jobs recorded before the unbilled ledger dropped a refused usage report; replays of their
/// histories must too.
const UNBILLED_PATCH: &str = "job-unbilled-ledger";
/// A retried job forgets its previous slot *before* asking the gate again, so a grant that
/// arrives while it asks (the gate answers at once when a slot is free) is kept. Runs recorded
/// before reset the slot after asking, which could erase that grant and leave the job queued.
const SLOT_PATCH: &str = "job-retry-keeps-new-grant";
/// Runs from this release on: the requester must be able to write to the repository before
/// anything is looked up or spent; a relabel retries a waiting job; every model answer's tokens
/// are counted and billed whichever way the attempt ends (unusable answers are asked again by
/// the job, not by Temporal, so none is lost); the job continues as new while it waits once its
/// history is long. Runs recorded before keep their old path.
const WRITERS_PATCH: &str = "job-writers-every-token";

/// How many answers one step asks the model for when an answer is malformed.
const MODEL_ASKS: u32 = 3;

/// How long one model call may take.
const MODEL_TIMEOUT: Duration = Duration::from_secs(300);

fn step_opts(summary: &str, timeout: Duration) -> ActivityOptions {
    crate::options::retrying(summary, timeout, None, 6)
}

/// A stable 64-bit FNV-1a hash (meter identifiers must be short and deterministic).
fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

const STEPS: [&str; 4] = ["planning", "coding", "reviewing", "pr_creating"];

#[workflow_methods]
impl JobWorkflow {
    /// Initial state (a continued run's comes with its input).
    #[init]
    pub fn new(_ctx: &WorkflowContextView, mut req: JobRequest) -> Self {
        let resumed = req.resume.take();
        let status = match &resumed {
            Some(r) => r.status.clone(),
            None => JobStatus {
                repo: req.repo.clone(),
                issue_number: req.issue_number,
                state: JobState::Queued,
                history: vec![JobState::Queued],
                steps: saga::fresh_steps(&STEPS),
                pr_number: None,
                pr_url: None,
                pr_outcome: None,
                tokens: 0,
                tokens_estimated: false,
                billed: Vec::new(),
                unbilled: Vec::new(),
                failure: None,
                attempt: 1,
            },
        };
        Self {
            req,
            status,
            comment_id: resumed.as_ref().and_then(|r| r.comment_id),
            slot: false,
            commands: resumed.as_ref().map(|r| r.commands.clone()).unwrap_or_default(),
            cancel_requested: false,
            retry_requested: false,
            pr_closes: resumed.as_ref().map(|r| r.pr_closes.clone()).unwrap_or_default(),
            bill_again: resumed.as_ref().is_some_and(|r| r.bill_again),
            hardened: false,
            awaiting_retry: resumed
                .as_ref()
                .is_some_and(|r| matches!(r.phase, JobPhase::Refused | JobPhase::Failed)),
            retried_by: None,
            relabels: resumed.as_ref().map(|r| r.relabels.clone()).unwrap_or_default(),
            attempt_tokens: 0,
            resume: resumed.map(|r| r.phase),
        }
    }

    /// Runs attempts until the PR is open and closed, or the job is cancelled.
    #[run(name = "Job")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<JobStatus> {
        let asks = ctx.state(|s| s.req.account.is_some()) && ctx.patched(LOOKUP_PATCH);
        let hardened = asks && ctx.patched(WRITERS_PATCH);
        ctx.state_mut(|s| s.hardened = hardened);
        let mut phase = match ctx.state(|s| s.resume) {
            Some(phase) => {
                Self::publish(ctx);
                phase
            }
            None => {
                if asks {
                    Self::entitle(ctx).await;
                }
                Self::publish(ctx);
                match ctx.state(|s| s.req.refusal.clone()) {
                    None => JobPhase::Queued,
                    Some(refusal) => {
                        Self::refuse(ctx, &refusal).await;
                        Self::set_state(ctx, JobState::Cancelled);
                        if !asks {
                            return Ok(ctx.state(|s| s.status.clone()));
                        }
                        // A job that decides for itself waits for the account to be linked or
                        // paid for: a writer's `/slipway retry` (or relabel) asks again.
                        JobPhase::Refused
                    }
                }
            }
        };
        loop {
            phase = match phase {
                JobPhase::Refused => {
                    if !Self::until_entitled(ctx).await? {
                        return Self::finish(ctx).await;
                    }
                    JobPhase::Queued
                }
                JobPhase::Queued => match Self::run_attempt(ctx).await? {
                    Some(next) => next,
                    None => return Self::finish(ctx).await,
                },
                JobPhase::Failed => {
                    if !Self::until_retried(ctx).await? {
                        Self::set_state(ctx, JobState::Cancelled);
                        Self::comment(ctx, "cancelled").await;
                        return Self::finish(ctx).await;
                    }
                    // Every attempt re-checks what the job may do (and takes a seat at the gate,
                    // which may grant it at once: the old slot is forgotten first).
                    let keeps_grant = ctx.patched(SLOT_PATCH);
                    if keeps_grant {
                        ctx.state_mut(|s| s.slot = false);
                    }
                    if asks {
                        Self::look_up(ctx).await;
                        if let Some(refusal) = ctx.state(|s| s.req.refusal.clone()) {
                            Self::refuse(ctx, &refusal).await;
                            Self::set_state(ctx, JobState::Cancelled);
                            if !Self::until_entitled(ctx).await? {
                                return Self::finish(ctx).await;
                            }
                        }
                    }
                    ctx.state_mut(|s| {
                        s.status.attempt += 1;
                        s.status.failure = None;
                        s.status.steps = saga::fresh_steps(&STEPS);
                        if !keeps_grant {
                            s.slot = false;
                        }
                    });
                    Self::set_state(ctx, JobState::Queued);
                    JobPhase::Queued
                }
                JobPhase::PrOpen => return Self::until_pr_closed(ctx).await,
                JobPhase::Owing => return Self::finish(ctx).await,
            };
        }
    }

    /// One attempt, from taking a slot to the PR opened; the next phase, or `None` once the
    /// job has ended (cancelled).
    async fn run_attempt(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<Option<JobPhase>> {
        Self::comment(ctx, "queued: waiting for a free slot").await;
        Self::request_slot(ctx).await;
        let outcome = match Self::wait_for_slot(ctx).await {
            Ok(SlotWait::Granted) => Self::attempt(ctx).await,
            Ok(SlotWait::Long) => return Err(Self::continue_as_new(ctx, JobPhase::Queued)),
            Err(stop) => Err(stop),
        };
        Self::release_slot(ctx).await;
        if ctx.state(|s| s.hardened) && outcome.is_err() {
            // The model was paid for whatever the attempt asked: the customer's meter hears it.
            Self::bill_attempt_tokens(ctx).await;
        }
        match outcome {
            Ok(()) => Ok(Some(JobPhase::PrOpen)),
            Err(Stop::Cancelled) => {
                Self::set_state(ctx, JobState::Cancelled);
                Self::comment(ctx, "cancelled").await;
                Ok(None)
            }
            Err(Stop::Failed(reason)) => {
                ctx.state_mut(|s| s.status.failure = Some(reason.clone()));
                Self::set_state(ctx, JobState::Failed);
                Self::comment(ctx, &format!("failed: {reason}\n\nComment `/slipway retry` to try again."))
                    .await;
                Ok(Some(JobPhase::Failed))
            }
        }
    }

    /// A failed job waits for a retry or a cancel from someone with write access: `true` for
    /// a retry, `false` for a cancel.
    async fn until_retried(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<bool> {
        ctx.state_mut(|s| s.awaiting_retry = true);
        loop {
            Self::continue_if_long(ctx, JobPhase::Failed)?;
            ctx.wait_condition(|s: &Self| !s.commands.is_empty()).await?;
            Self::handle_commands(ctx).await;
            if ctx.state(|s| s.cancel_requested) {
                ctx.state_mut(|s| s.awaiting_retry = false);
                return Ok(false);
            }
            if ctx.state_mut(|s| std::mem::take(&mut s.retry_requested)) {
                Self::take_over(ctx);
                return Ok(true);
            }
        }
    }

    /// A hardened job's next attempt belongs to the writer who retried it.
    fn take_over(ctx: &mut WorkflowContext<Self>) {
        ctx.state_mut(|s| {
            s.awaiting_retry = false;
            if let Some(c) = s.retried_by.take()
                && s.hardened
            {
                s.req.requested_by = c.login;
                if let Some(title) = c.title {
                    s.req.title = title;
                }
                if let Some(body) = c.body {
                    s.req.body = body;
                }
            }
        });
    }

    /// The requester's write access, then the job's entitlement ([`Self::look_up`]). Anyone
    /// can open an issue or trigger a label (an issue template applies it), but only people who
    /// can push to the repository may spend its owner's subscription.
    async fn entitle(ctx: &mut WorkflowContext<Self>) {
        let (hardened, login, repo) =
            ctx.state(|s| (s.hardened, s.req.requested_by.clone(), s.req.repo.clone()));
        if hardened {
            match Self::can_write(ctx, &login).await {
                Ok(true) => {}
                Ok(false) => {
                    let why = format!(
                        "@{login} needs write access to `{repo}` to start a job; someone who has it can \
                         comment `/slipway retry` or apply the label again"
                    );
                    ctx.state_mut(|s| s.req.refusal = Some(why));
                    return;
                }
                Err(why) => {
                    ctx.state_mut(|s| s.req.refusal = Some(why));
                    return;
                }
            }
        }
        Self::look_up(ctx).await;
    }

    /// Whether `login` can write to the job's repository (GitHub's collaborator permission:
    /// `write`, `maintain` or `admin`); `Err` with the reason when GitHub did not answer.
    async fn can_write(ctx: &mut WorkflowContext<Self>, login: &str) -> Result<bool, String> {
        let req = ctx.state(|s| s.req.clone());
        let input = PermissionInput {
            repo: req.repo.clone(),
            installation_id: req.installation_id,
            login: login.to_owned(),
        };
        let opts = step_opts(
            &format!("GitHub: check write access of {login} to {}", req.repo),
            Duration::from_secs(60),
        );
        ctx.execute_activity(JobActivities::can_write, input, opts)
            .await
            .map_err(|e| format!("could not check @{login}'s access: {}", crate::failure::activity(&e)))
    }

    /// Continues as new in `phase` once the history is long (a hardened job, while it waits).
    fn continue_if_long(ctx: &mut WorkflowContext<Self>, phase: JobPhase) -> WorkflowResult<()> {
        if Self::is_long(ctx) {
            return Err(Self::continue_as_new(ctx, phase));
        }
        Ok(())
    }

    /// A hardened job's history is long enough to continue as new (and nothing is mid-answer).
    fn is_long(ctx: &WorkflowContext<Self>) -> bool {
        let (hardened, limit) = ctx.state(|s| (s.hardened, s.req.policy.history_limit));
        hardened
            && (ctx.continue_as_new_suggested() || ctx.history_length() >= limit)
            && ctx.all_handlers_finished()
    }

    /// The next run of this job, carrying everything it said and owes (the run ends with it).
    fn continue_as_new(ctx: &mut WorkflowContext<Self>, phase: JobPhase) -> WorkflowTermination {
        let input = ctx.state(|s| {
            let mut req = s.req.clone();
            req.resume = Some(Box::new(JobResume {
                status: s.status.clone(),
                comment_id: s.comment_id,
                pr_closes: s.pr_closes.clone(),
                commands: s.commands.clone(),
                bill_again: s.bill_again,
                phase,
                relabels: s.relabels.clone(),
            }));
            req
        });
        match ctx.continue_as_new(input, ContinueAsNewOptions::default()) {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    /// The job ends: a hardened job owes nothing when it does (an operator's `bill_again`
    /// reports what Stripe refused).
    async fn finish(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<JobStatus> {
        if ctx.state(|s| s.hardened) {
            Self::until_billed(ctx, JobPhase::Owing).await?;
        }
        Ok(ctx.state(|s| s.status.clone()))
    }

    /// Waits until nothing is owed, reporting it again on each `bill_again` (continuing as new
    /// in `phase` if comments make the wait long).
    async fn until_billed(ctx: &mut WorkflowContext<Self>, phase: JobPhase) -> WorkflowResult<()> {
        while ctx.state(|s| !s.status.unbilled.is_empty()) {
            Self::continue_if_long(ctx, phase)?;
            ctx.wait_condition(|s: &Self| s.bill_again || !s.commands.is_empty()).await?;
            // Commands mean nothing to a job that has ended.
            ctx.state_mut(|s| s.commands.clear());
            if ctx.state(|s| s.bill_again) {
                Self::bill_unbilled(ctx).await;
            }
        }
        Ok(())
    }

    /// Decides the job's entitlement (its account's link, that customer's standing) and, when
    /// it may run, takes its seat at the customer's gate. A lookup that keeps failing refuses
    /// the job with the reason (a retry asks again).
    async fn look_up(ctx: &mut WorkflowContext<Self>) {
        let account = ctx.state(|s| s.req.account.clone().unwrap_or_default());
        let opts = step_opts(&format!("Slipway: entitlement of {account}"), Duration::from_secs(30));
        let decided = match ctx.execute_activity(LookupActivities::job_entitlement, account, opts).await {
            Ok(e) => e,
            Err(e) => JobEntitlement {
                customer_id: None,
                user_id: None,
                refusal: Some(format!("could not check the subscription: {}", crate::failure::activity(&e))),
            },
        };
        ctx.state_mut(|s| {
            s.req.customer_id = decided.customer_id.clone();
            s.req.user_id = decided.user_id.clone();
            s.req.refusal = decided.refusal.clone();
        });
        let Some(customer) = decided.customer_id else { return };
        let seat = GateSeat {
            customer_id: customer.clone(),
            job_id: ctx.info().workflow_id().to_owned(),
            max_running: ctx.state(|s| s.req.max_running.max(1)),
        };
        let opts = step_opts(&format!("Slipway: job gate of {customer}"), Duration::from_secs(30));
        if let Err(e) = ctx.execute_activity(LookupActivities::take_gate_seat, seat, opts).await {
            let why = format!("could not queue at the customer's job gate: {}", crate::failure::activity(&e));
            ctx.state_mut(|s| {
                s.req.customer_id = None;
                s.req.refusal = Some(why);
            });
        }
    }

    /// A refused job waits (up to 30 days) for a writer's `/slipway retry` (or, hardened, for
    /// the label applied again), then asks again: `true` once it may run, `false` if it was
    /// cancelled or nobody asked in time.
    async fn until_entitled(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<bool> {
        ctx.state_mut(|s| s.awaiting_retry = true);
        loop {
            Self::continue_if_long(ctx, JobPhase::Refused)?;
            let timer =
                TimerOptions::builder(REFUSED_WAIT).summary("wait for `/slipway retry`".to_owned()).build();
            let mut asked = false;
            select! {
                r = ctx.wait_condition(|s: &Self| !s.commands.is_empty()) => { asked = r.is_ok(); },
                _ = ctx.timer(timer) => {},
            };
            if !asked {
                ctx.state_mut(|s| s.awaiting_retry = false);
                return Ok(false);
            }
            Self::handle_commands(ctx).await;
            if ctx.state(|s| s.cancel_requested) {
                ctx.state_mut(|s| s.awaiting_retry = false);
                Self::comment(ctx, "cancelled").await;
                return Ok(false);
            }
            if !ctx.state_mut(|s| std::mem::take(&mut s.retry_requested)) {
                continue;
            }
            Self::take_over(ctx);
            Self::look_up(ctx).await;
            Self::publish(ctx);
            match ctx.state(|s| s.req.refusal.clone()) {
                None => {
                    ctx.state_mut(|s| {
                        s.status.failure = None;
                        s.status.attempt += 1;
                        s.status.steps = saga::fresh_steps(&STEPS);
                    });
                    Self::set_state(ctx, JobState::Queued);
                    return Ok(true);
                }
                Some(refusal) => {
                    ctx.state_mut(|s| s.awaiting_retry = true);
                    Self::refuse(ctx, &refusal).await;
                }
            }
        }
    }

    /// Records why the job may not run and says so on the issue (first: the job reads as
    /// cancelled only once the reason is there).
    async fn refuse(ctx: &mut WorkflowContext<Self>, refusal: &str) {
        ctx.state_mut(|s| s.status.failure = Some(refusal.to_owned()));
        Self::comment(ctx, &format!("Slipway cannot work on this issue: {refusal}")).await;
    }

    /// The customer's gate granted this job a slot.
    #[signal]
    pub fn slot_granted(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.slot = true;
    }

    /// `/slipway retry` or `/slipway cancel` from an issue comment, or the job's label applied
    /// again (checked before acting). A relabel only means something to a job waiting for a
    /// retry; the label that started a job, or one applied while it runs, is dropped here.
    #[signal]
    pub fn command(&mut self, _ctx: &mut SyncWorkflowContext<Self>, command: JobCommand) {
        if command.command == JobCommand::RELABEL {
            let heard = command
                .delivery
                .as_ref()
                .is_some_and(|d| self.req.trigger.as_ref() == Some(d) || self.relabels.contains(d));
            if !self.hardened || !self.awaiting_retry || heard {
                return;
            }
            if let Some(d) = &command.delivery {
                if self.relabels.len() >= RELABELS {
                    self.relabels.remove(0);
                }
                self.relabels.push(d.clone());
            }
        }
        self.commands.push(command);
    }

    /// An operator asks for the unbilled usage to be reported again.
    #[signal]
    pub fn bill_again(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.bill_again = true;
    }

    /// A pull request on the job's branch name was closed (`merged` or not). It ends the job
    /// only if it is the one the job opened, from the job's own repository: a fork can name its
    /// branch like the job's. A close that arrives before the job knows its PR number is kept
    /// for then (a PR closed as soon as it opened); others are dropped. Deterministic without a
    /// patch: recorded histories only hold a previous release's signals, which end the job as
    /// they always did.
    #[signal]
    pub fn pr_closed(&mut self, _ctx: &mut SyncWorkflowContext<Self>, closed: PullRequestClosed) {
        let opened = self.status.pr_number;
        if opened.is_some() && !closed.ends_job(opened) {
            return;
        }
        if self.pr_closes.len() >= PENDING_CLOSES {
            self.pr_closes.remove(0);
        }
        self.pr_closes.push(closed);
    }

    /// Merged or not, once the job's own pull request has closed (the latest close that counts).
    fn pr_outcome(&self) -> Option<bool> {
        self.pr_closes.iter().rev().find(|c| c.ends_job(self.status.pr_number)).map(|c| c.merged)
    }

    /// Where the job stands.
    #[query]
    pub fn status(&self, _ctx: &WorkflowContextView) -> JobStatus {
        self.status.clone()
    }
}

impl JobWorkflow {
    fn publish(ctx: &WorkflowContext<Self>) {
        let (state, customer, user) =
            ctx.state(|s| (s.status.state, s.req.customer_id.clone(), s.req.user_id.clone()));
        let mut attrs = vec![search_attributes::STATUS.value_set(state.as_str().to_owned())];
        if let Some(c) = customer {
            attrs.push(search_attributes::CUSTOMER_ID.value_set(c));
        }
        if let Some(u) = user {
            attrs.push(search_attributes::USER_ID.value_set(u));
        }
        ctx.upsert_search_attributes(attrs);
        let details = ctx.state(|s| crate::details::job(&s.status));
        ctx.set_current_details(details);
    }

    fn set_state(ctx: &WorkflowContext<Self>, state: JobState) {
        ctx.state_mut(|s| {
            s.status.state = state;
            s.status.history.push(state);
        });
        Self::publish(ctx);
    }

    /// Create or edit the job's single progress comment. Best effort: a comment that cannot be
    /// written never fails the job.
    async fn comment(ctx: &mut WorkflowContext<Self>, line: &str) {
        let (req, comment_id, status) = ctx.state(|s| (s.req.clone(), s.comment_id, s.status.clone()));
        let steps: Vec<String> = status
            .steps
            .iter()
            .map(|st| {
                format!(
                    "- {} {}{}",
                    st.name,
                    st.state.as_str(),
                    if st.detail.is_empty() { String::new() } else { format!(": {}", st.detail) }
                )
            })
            .collect();
        let body = format!(
            "**Slipway** — {} (attempt {})\n\n{line}\n\n{}",
            status.state.as_str(),
            status.attempt,
            steps.join("\n")
        );
        let summary = format!("GitHub: update progress comment on {}#{}", req.repo, req.issue_number);
        let input = CommentInput {
            repo: req.repo,
            installation_id: req.installation_id,
            issue_number: req.issue_number,
            comment_id,
            body,
        };
        if let Ok(id) = ctx
            .execute_activity(JobActivities::comment, input, step_opts(&summary, Duration::from_secs(60)))
            .await
        {
            ctx.state_mut(|s| s.comment_id = Some(id));
        }
    }

    async fn request_slot(ctx: &mut WorkflowContext<Self>) {
        let Some(customer) = ctx.state(|s| s.req.customer_id.clone()) else { return };
        let me = ctx.info().workflow_id().to_owned();
        let _ = ctx
            .external_workflow(job_gate_workflow_id(&customer), None)
            .signal(JobGateWorkflow::enqueue, me, SignalWorkflowOptions::default())
            .await;
    }

    async fn release_slot(ctx: &mut WorkflowContext<Self>) {
        let Some(customer) = ctx.state(|s| s.req.customer_id.clone()) else { return };
        let me = ctx.info().workflow_id().to_owned();
        ctx.state_mut(|s| s.slot = false);
        let _ = ctx
            .external_workflow(job_gate_workflow_id(&customer), None)
            .signal(JobGateWorkflow::release, me, SignalWorkflowOptions::default())
            .await;
    }

    async fn wait_for_slot(ctx: &mut WorkflowContext<Self>) -> Result<SlotWait, Stop> {
        loop {
            if ctx.state(|s| !s.slot) && Self::is_long(ctx) {
                return Ok(SlotWait::Long);
            }
            if ctx.wait_condition(|s: &Self| s.slot || !s.commands.is_empty()).await.is_err() {
                return Err(Stop::Cancelled);
            }
            Self::handle_commands(ctx).await;
            if ctx.state(|s| s.cancel_requested) {
                return Err(Stop::Cancelled);
            }
            if ctx.state(|s| s.slot) {
                return Ok(SlotWait::Granted);
            }
        }
    }

    /// Applies queued commands from people with write access; others get a reply. A relabel
    /// is a retry (only a job waiting for one keeps it, see [`Self::command`]).
    async fn handle_commands(ctx: &mut WorkflowContext<Self>) {
        let commands = ctx.state_mut(|s| std::mem::take(&mut s.commands));
        let repo = ctx.state(|s| s.req.repo.clone());
        for c in commands {
            // A retry means nothing to a hardened job that is not waiting for one (it would
            // linger and let a later refused command retry the job).
            let retry = matches!(c.command.as_str(), "retry" | JobCommand::RELABEL);
            if retry && ctx.state(|s| s.hardened && !s.awaiting_retry) {
                continue;
            }
            if !Self::can_write(ctx, &c.login).await.unwrap_or(false) {
                let verb = if c.command == JobCommand::RELABEL { "label" } else { c.command.as_str() };
                let line = if ctx.state(|s| s.hardened) {
                    format!("@{} needs write access to `{repo}` to {verb} the job", c.login)
                } else {
                    format!("@{} needs write access to `{}` the job", c.login, c.command)
                };
                Self::comment(ctx, &line).await;
                continue;
            }
            ctx.state_mut(|s| match c.command.as_str() {
                "cancel" => s.cancel_requested = true,
                "retry" | JobCommand::RELABEL => {
                    s.retry_requested = true;
                    s.retried_by = Some(c.clone());
                }
                _ => {}
            });
        }
    }

    /// Between steps: pending commands are applied, and a cancel stops the attempt.
    async fn checkpoint(ctx: &mut WorkflowContext<Self>) -> Result<(), Stop> {
        if ctx.state(|s| !s.commands.is_empty()) {
            Self::handle_commands(ctx).await;
        }
        if ctx.state(|s| s.cancel_requested) { Err(Stop::Cancelled) } else { Ok(()) }
    }

    async fn attempt(ctx: &mut WorkflowContext<Self>) -> Result<(), Stop> {
        let req = ctx.state(|s| s.req.clone());
        let fail = |ctx: &WorkflowContext<Self>, step: &str, e: &temporalio_sdk::ActivityExecutionError| {
            Stop::Failed(Self::fail(ctx, step, e))
        };
        let mut task = LlmTask {
            repo: req.repo.clone(),
            installation_id: req.installation_id,
            title: req.title.clone(),
            body: req.body.clone(),
            plan: None,
            plan_files: Vec::new(),
            feedback: None,
            files: Vec::new(),
            account_failures: ctx.state(|s| s.hardened),
        };
        ctx.state_mut(|s| s.attempt_tokens = 0);

        Self::set_state(ctx, JobState::Planning);
        Self::mark(ctx, "planning", StepState::Running, "");
        Self::comment(ctx, "planning").await;
        let summary = format!("LLM: plan {}#{}", req.repo, req.issue_number);
        let plan = Self::ask_model(ctx, || JobActivities::plan, &task, "planning", &summary).await?;
        Self::mark(ctx, "planning", StepState::Done, format!("{} tokens", plan.tokens));
        task.plan = Some(plan.content);
        task.plan_files = plan.files;
        Self::checkpoint(ctx).await?;

        let max_rounds = req.policy.max_review_rounds;
        let mut round = 0;
        let files: Vec<FileChange> = loop {
            Self::set_state(ctx, JobState::Coding);
            Self::mark(ctx, "coding", StepState::Running, format!("round {}", round + 1));
            Self::comment(ctx, "coding").await;
            let summary = format!("LLM: code {}#{} (round {})", req.repo, req.issue_number, round + 1);
            let code = Self::ask_model(ctx, || JobActivities::code, &task, "coding", &summary).await?;
            Self::mark(
                ctx,
                "coding",
                StepState::Done,
                format!("{} file(s), round {}", code.files.len(), round + 1),
            );
            Self::checkpoint(ctx).await?;

            Self::set_state(ctx, JobState::Reviewing);
            Self::mark(ctx, "reviewing", StepState::Running, "");
            Self::comment(ctx, "reviewing").await;
            task.files = code.files.clone();
            let summary = format!("LLM: review {}#{} (round {})", req.repo, req.issue_number, round + 1);
            let review = Self::ask_model(ctx, || JobActivities::review, &task, "reviewing", &summary).await?;
            Self::checkpoint(ctx).await?;
            if review.approved || round >= max_rounds {
                let verdict =
                    if review.approved { "approved" } else { "accepted after the last allowed round" };
                Self::mark(ctx, "reviewing", StepState::Done, verdict);
                break code.files;
            }
            round += 1;
            Self::mark(ctx, "reviewing", StepState::Done, format!("changes requested: {}", review.comments));
            task.feedback = Some(review.comments);
        };

        Self::set_state(ctx, JobState::PrCreating);
        Self::mark(ctx, "pr_creating", StepState::Running, "");
        Self::comment(ctx, "opening the pull request").await;
        let pr_input = PullRequestInput {
            repo: req.repo.clone(),
            installation_id: req.installation_id,
            issue_number: req.issue_number,
            branch: job_branch(req.issue_number),
            title: format!("Slipway: {}", req.title),
            body: format!(
                "Closes #{}.\n\nPlanned, written and reviewed by Slipway for @{}.\n\n### Plan\n{}",
                req.issue_number,
                req.requested_by,
                task.plan.clone().unwrap_or_default()
            ),
            commit_message: format!("Slipway: {} (#{})", req.title, req.issue_number),
            files,
        };
        let pr = ctx
            .execute_activity(
                JobActivities::open_pull_request,
                pr_input,
                step_opts(
                    &format!("GitHub: open pull request for {}#{}", req.repo, req.issue_number),
                    Duration::from_secs(120),
                ),
            )
            .await
            .map_err(|e| fail(ctx, "pr_creating", &e))?;
        ctx.state_mut(|s| {
            s.status.pr_number = Some(pr.number);
            s.status.pr_url = Some(pr.url.clone());
        });
        Self::mark(ctx, "pr_creating", StepState::Done, pr.url.clone());
        Self::set_state(ctx, JobState::PrOpened);
        Self::bill(ctx, pr.number).await;
        Self::comment(ctx, &format!("pull request opened: {}", pr.url)).await;
        Ok(())
    }

    /// One model step: asks until an answer can be used (see [`Self::usable`]); a failing call
    /// fails the step.
    async fn ask_model<AD>(
        ctx: &mut WorkflowContext<Self>,
        activity: impl Fn() -> AD,
        task: &LlmTask,
        step: &str,
        summary: &str,
    ) -> Result<AD::Output, Stop>
    where
        AD: ActivityDefinition<Input = LlmTask>,
        AD::Output: ModelAnswer + TemporalDeserializable,
    {
        let mut asked = 0;
        loop {
            let answer = ctx
                .execute_activity(activity(), task.clone(), step_opts(summary, MODEL_TIMEOUT))
                .await
                .map_err(|e| Stop::Failed(Self::fail(ctx, step, &e)))?;
            if let Some(answer) = Self::usable(ctx, step, answer, &mut asked)? {
                return Ok(answer);
            }
        }
    }

    /// Counts a model answer's tokens (the attempt's and the job's), then decides: the answer,
    /// `None` to ask the model again (a malformed answer, at most [`MODEL_ASKS`] times), or the
    /// step failed (a refused change, or malformed answers every time).
    fn usable<A: ModelAnswer>(
        ctx: &mut WorkflowContext<Self>,
        step: &str,
        answer: A,
        asked: &mut u32,
    ) -> Result<Option<A>, Stop> {
        let (tokens, estimated) = answer.spent();
        ctx.state_mut(|s| {
            s.attempt_tokens += tokens;
            s.status.tokens += tokens;
            s.status.tokens_estimated |= estimated;
        });
        let Some(unusable) = answer.unusable() else { return Ok(Some(answer)) };
        *asked += 1;
        if unusable.retry && *asked < MODEL_ASKS {
            return Ok(None);
        }
        let reason = format!("{step}: {}", unusable.reason);
        Self::mark(ctx, step, StepState::Failed, reason.clone());
        Err(Stop::Failed(reason))
    }

    /// The prefix of the job's meter identifiers: the issue, and its run when not the first
    /// (a later run of the issue's job bills under identifiers of its own).
    fn meter_base(req: &JobRequest) -> String {
        let mut base = format!("slw-{:016x}", fnv64(&format!("{}#{}", req.repo, req.issue_number)));
        if req.run > 1 {
            base.push_str(&format!("-r{}", req.run));
        }
        base
    }

    /// Reports the PR and the attempt's tokens once each (ledger first, then Stripe).
    async fn bill(ctx: &mut WorkflowContext<Self>, pr_number: u64) {
        let req = ctx.state(|s| s.req.clone());
        let pr = (format!("{}-pr-{pr_number}", Self::meter_base(&req)), req.policy.pr_meter_event.clone(), 1);
        let tokens = Self::attempt_tokens_usage(ctx);
        Self::report_all(ctx, [pr, tokens]).await;
    }

    /// Reports the tokens of an attempt that ended without a PR (failed, refused midway,
    /// cancelled) under the identifier a successful attempt would have used.
    async fn bill_attempt_tokens(ctx: &mut WorkflowContext<Self>) {
        let tokens = Self::attempt_tokens_usage(ctx);
        Self::report_all(ctx, [tokens]).await;
    }

    /// The attempt's tokens as a usage (`…-tokens-<attempt>`), handed over once: the attempt's
    /// count starts again from zero, so a later ending of the same attempt number (cancelled
    /// while queued for the next) reports nothing twice.
    fn attempt_tokens_usage(ctx: &mut WorkflowContext<Self>) -> (String, String, u64) {
        ctx.state_mut(|s| {
            let tokens = std::mem::take(&mut s.attempt_tokens);
            let identifier = format!("{}-tokens-{}", Self::meter_base(&s.req), s.status.attempt);
            (identifier, s.req.policy.tokens_meter_event.clone(), tokens)
        })
    }

    /// Reports each usage not yet in the ledger (and not zero).
    async fn report_all(
        ctx: &mut WorkflowContext<Self>,
        usages: impl IntoIterator<Item = (String, String, u64)>,
    ) {
        let Some(customer) = ctx.state(|s| s.req.customer_id.clone()) else { return };
        for (identifier, event_name, value) in usages {
            if value == 0 || ctx.state(|s| s.status.billed.contains(&identifier)) {
                continue;
            }
            let input = MeterEventInput { event_name, customer_id: customer.clone(), value, identifier };
            Self::report(ctx, input).await;
        }
    }

    /// One usage report: billed into the ledger, or (refused for good) kept as unbilled.
    async fn report(ctx: &mut WorkflowContext<Self>, input: MeterEventInput) {
        let opts = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_secs(1))
                    .maximum_interval(Duration::from_secs(300))
                    .build(),
            )
            .summary(format!("Stripe: report {} {}", input.value, input.event_name))
            .build();
        let identifier = input.identifier.clone();
        match ctx.execute_activity(JobActivities::report_usage, input.clone(), opts).await {
            Ok(()) => ctx.state_mut(|s| {
                s.status.unbilled.retain(|u| u.identifier != identifier);
                s.status.billed.push(identifier);
            }),
            Err(e) => {
                if ctx.patched(UNBILLED_PATCH) {
                    let reason = crate::failure::activity(&e);
                    ctx.state_mut(|s| {
                        s.status.unbilled.retain(|u| u.identifier != identifier);
                        s.status.unbilled.push(UnbilledUsage {
                            event_name: input.event_name,
                            value: input.value,
                            identifier,
                            reason,
                        });
                    });
                }
            }
        }
    }

    /// Reports every unbilled usage again (an operator's `bill_again`).
    async fn bill_unbilled(ctx: &mut WorkflowContext<Self>) {
        ctx.state_mut(|s| s.bill_again = false);
        let (customer, owed) = ctx.state(|s| (s.req.customer_id.clone(), s.status.unbilled.clone()));
        let Some(customer) = customer else { return };
        for u in owed {
            if ctx.state(|s| s.status.billed.contains(&u.identifier)) {
                ctx.state_mut(|s| s.status.unbilled.retain(|x| x.identifier != u.identifier));
                continue;
            }
            let input = MeterEventInput {
                event_name: u.event_name,
                customer_id: customer.clone(),
                value: u.value,
                identifier: u.identifier,
            };
            Self::report(ctx, input).await;
        }
    }

    async fn until_pr_closed(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<JobStatus> {
        loop {
            Self::continue_if_long(ctx, JobPhase::PrOpen)?;
            ctx.wait_condition(|s: &Self| s.pr_outcome().is_some() || !s.commands.is_empty() || s.bill_again)
                .await?;
            if ctx.state(|s| !s.commands.is_empty()) {
                // Retry and cancel do not apply to an opened PR; close the PR instead.
                ctx.state_mut(|s| s.commands.clear());
            }
            if ctx.state(|s| s.bill_again) {
                Self::bill_unbilled(ctx).await;
            }
            if let Some(merged) = ctx.state(|s| s.pr_outcome()) {
                let outcome = if merged { "merged" } else { "closed" };
                ctx.state_mut(|s| s.status.pr_outcome = Some(outcome.to_owned()));
                Self::comment(ctx, &format!("pull request {outcome}")).await;
                // A job that owes usage stays until an operator has it billed.
                if ctx.state(|s| s.hardened) {
                    Self::until_billed(ctx, JobPhase::PrOpen).await?;
                }
                while ctx.state(|s| !s.status.unbilled.is_empty()) {
                    ctx.wait_condition(|s: &Self| s.bill_again).await?;
                    Self::bill_unbilled(ctx).await;
                }
                return Ok(ctx.state(|s| s.status.clone()));
            }
        }
    }
}

/// A model step's answer: what it cost, and whether it can be used.
trait ModelAnswer {
    /// Tokens, and whether they are an estimate.
    fn spent(&self) -> (u64, bool);
    /// Why the answer cannot be used, if it cannot.
    fn unusable(&self) -> Option<&Unusable>;
}

macro_rules! model_answer {
    ($($t:ty),*) => {$(
        impl ModelAnswer for $t {
            fn spent(&self) -> (u64, bool) {
                (self.tokens, self.estimated)
            }
            fn unusable(&self) -> Option<&Unusable> {
                self.unusable.as_ref()
            }
        }
    )*};
}
model_answer!(LlmOut, CodeOut, ReviewOut);

/// A job tracks steps but creates nothing to undo: it has no compensations.
impl Saga for JobWorkflow {
    type Undo = std::convert::Infallible;

    fn steps_mut(&mut self) -> &mut Vec<StepProgress> {
        &mut self.status.steps
    }

    fn steps(&self) -> &[StepProgress] {
        &self.status.steps
    }

    fn details(&self) -> String {
        crate::details::job(&self.status)
    }

    fn undoes(undo: Self::Undo) -> &'static [&'static str] {
        match undo {}
    }

    async fn undo(
        _ctx: &mut WorkflowContext<Self>,
        undo: Self::Undo,
    ) -> Result<String, temporalio_sdk::ActivityExecutionError> {
        match undo {}
    }

    fn leftover(&self, undo: Self::Undo, _error: &str) -> String {
        match undo {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_identifiers_are_stable() {
        assert_eq!(fnv64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64("acme/shop#1"), fnv64("acme/shop#1"));
        assert_ne!(fnv64("acme/shop#1"), fnv64("acme/shop#2"));
    }
}

#[cfg(test)]
mod lookup_names {
    use slipway_activities::lookups::names;
    use temporalio_common::{QueryDefinition, SignalDefinition, WorkflowDefinition};

    use crate::{GitHubLinksWorkflow, JobGateWorkflow, SubscriptionWorkflow};

    /// The job's lookups address these workflows by name (see `slipway_activities::lookups`).
    #[test]
    fn lookups_use_the_registered_names() {
        assert_eq!(GitHubLinksWorkflow::run.name(), names::LINKS);
        assert_eq!(GitHubLinksWorkflow::get.name(), names::LINKS_GET);
        assert_eq!(SubscriptionWorkflow::run.name(), names::SUBSCRIPTION);
        assert_eq!(SubscriptionWorkflow::entitlement.name(), names::ENTITLEMENT);
        assert_eq!(JobGateWorkflow::run.name(), names::GATE);
        assert_eq!(JobGateWorkflow::enqueue.name(), names::ENQUEUE);
        assert_eq!(crate::StackRecordWorkflow::run.name(), names::STACK_RECORD);
        assert_eq!(crate::StackRecordWorkflow::settled.name(), names::SETTLED);
        assert_eq!(crate::AgentWorkflow::run.name(), names::AGENT);
        assert_eq!(crate::AgentWorkflow::checkout.name(), names::CHECKOUT);
    }
}
