//! `Job`: one GitHub issue's coding job (`job-<owner>/<repo>#<n>`, one per issue).
//!
//! `queued → planning → coding → reviewing (→ coding, at most `max_review_rounds` times) →
//! pr_creating → pr_opened`, or `failed` / `cancelled`. Progress is one issue comment, edited as
//! the job advances, plus the `status` query and the `SlipwayStatus` search attribute.
//!
//! - At most N jobs of a customer run at once: the job waits for its customer's `JobGate`
//!   (`slot_granted`) and gives the slot back when it leaves the running states.
//! - `/slipway retry` and `/slipway cancel` arrive as the `command` signal; the commenter's write
//!   access is checked (an activity) before either takes effect.
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
        CommentInput, FileChange, GateSeat, JobCommand, JobEntitlement, JobRequest, JobState, JobStatus,
        LlmTask, MeterEventInput, PermissionInput, PullRequestClosed, PullRequestInput, UnbilledUsage,
        job_branch, job_gate_workflow_id,
    },
    model::{StepProgress, StepState},
};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, SignalWorkflowOptions, SyncWorkflowContext, TimerOptions, WorkflowContext,
    WorkflowContextView, WorkflowResult, workflows::select,
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
    /// Initial state.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, req: JobRequest) -> Self {
        let status = JobStatus {
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
        };
        Self {
            req,
            status,
            comment_id: None,
            slot: false,
            commands: Vec::new(),
            cancel_requested: false,
            retry_requested: false,
            pr_closes: Vec::new(),
            bill_again: false,
        }
    }

    /// Runs attempts until the PR is open and closed, or the job is cancelled.
    #[run(name = "Job")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<JobStatus> {
        let asks = ctx.state(|s| s.req.account.is_some()) && ctx.patched(LOOKUP_PATCH);
        if asks {
            Self::look_up(ctx).await;
        }
        Self::publish(ctx);
        if let Some(refusal) = ctx.state(|s| s.req.refusal.clone()) {
            Self::refuse(ctx, &refusal).await;
            Self::set_state(ctx, JobState::Cancelled);
            if !asks {
                return Ok(ctx.state(|s| s.status.clone()));
            }
            // A job that decides for itself waits for the account to be linked or paid for:
            // a writer's `/slipway retry` asks again.
            if !Self::until_entitled(ctx).await? {
                return Ok(ctx.state(|s| s.status.clone()));
            }
        }
        loop {
            Self::comment(ctx, "queued: waiting for a free slot").await;
            Self::request_slot(ctx).await;
            let outcome = Self::wait_for_slot(ctx).await;
            let outcome = match outcome {
                Ok(()) => Self::attempt(ctx).await,
                Err(stop) => Err(stop),
            };
            Self::release_slot(ctx).await;
            match outcome {
                Ok(()) => return Self::until_pr_closed(ctx).await,
                Err(Stop::Cancelled) => {
                    Self::set_state(ctx, JobState::Cancelled);
                    Self::comment(ctx, "cancelled").await;
                    return Ok(ctx.state(|s| s.status.clone()));
                }
                Err(Stop::Failed(reason)) => {
                    ctx.state_mut(|s| s.status.failure = Some(reason.clone()));
                    Self::set_state(ctx, JobState::Failed);
                    Self::comment(
                        ctx,
                        &format!("failed: {reason}\n\nComment `/slipway retry` to try again."),
                    )
                    .await;
                    // Wait for a retry or a cancel from someone with write access.
                    loop {
                        ctx.wait_condition(|s: &Self| !s.commands.is_empty()).await?;
                        Self::handle_commands(ctx).await;
                        if ctx.state(|s| s.cancel_requested) {
                            Self::set_state(ctx, JobState::Cancelled);
                            Self::comment(ctx, "cancelled").await;
                            return Ok(ctx.state(|s| s.status.clone()));
                        }
                        if ctx.state_mut(|s| std::mem::take(&mut s.retry_requested)) {
                            break;
                        }
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
                                return Ok(ctx.state(|s| s.status.clone()));
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
                }
            }
        }
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

    /// A refused job waits (up to 30 days) for a writer's `/slipway retry`, then asks again:
    /// `true` once it may run, `false` if it was cancelled or nobody asked in time.
    async fn until_entitled(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<bool> {
        loop {
            let timer =
                TimerOptions::builder(REFUSED_WAIT).summary("wait for `/slipway retry`".to_owned()).build();
            let mut asked = false;
            select! {
                r = ctx.wait_condition(|s: &Self| !s.commands.is_empty()) => { asked = r.is_ok(); },
                _ = ctx.timer(timer) => {},
            };
            if !asked {
                return Ok(false);
            }
            Self::handle_commands(ctx).await;
            if ctx.state(|s| s.cancel_requested) {
                Self::comment(ctx, "cancelled").await;
                return Ok(false);
            }
            if !ctx.state_mut(|s| std::mem::take(&mut s.retry_requested)) {
                continue;
            }
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
                Some(refusal) => Self::refuse(ctx, &refusal).await,
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

    /// `/slipway retry` or `/slipway cancel` from an issue comment (checked before acting).
    #[signal]
    pub fn command(&mut self, _ctx: &mut SyncWorkflowContext<Self>, command: JobCommand) {
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

    async fn wait_for_slot(ctx: &mut WorkflowContext<Self>) -> Result<(), Stop> {
        loop {
            if ctx.wait_condition(|s: &Self| s.slot || !s.commands.is_empty()).await.is_err() {
                return Err(Stop::Cancelled);
            }
            Self::handle_commands(ctx).await;
            if ctx.state(|s| s.cancel_requested) {
                return Err(Stop::Cancelled);
            }
            if ctx.state(|s| s.slot) {
                return Ok(());
            }
        }
    }

    /// Applies queued commands from people with write access; others get a reply.
    async fn handle_commands(ctx: &mut WorkflowContext<Self>) {
        let commands = ctx.state_mut(|s| std::mem::take(&mut s.commands));
        let req = ctx.state(|s| s.req.clone());
        for c in commands {
            let input = PermissionInput {
                repo: req.repo.clone(),
                installation_id: req.installation_id,
                login: c.login.clone(),
            };
            let allowed = ctx
                .execute_activity(
                    JobActivities::can_write,
                    input,
                    step_opts(
                        &format!("GitHub: check write access of {} to {}", c.login, req.repo),
                        Duration::from_secs(60),
                    ),
                )
                .await
                .unwrap_or(false);
            if !allowed {
                Self::comment(ctx, &format!("@{} needs write access to `{}` the job", c.login, c.command))
                    .await;
                continue;
            }
            ctx.state_mut(|s| match c.command.as_str() {
                "cancel" => s.cancel_requested = true,
                "retry" => s.retry_requested = true,
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
        let llm = Duration::from_secs(300);
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
        };
        let mut attempt_tokens = 0u64;

        Self::set_state(ctx, JobState::Planning);
        Self::mark(ctx, "planning", StepState::Running, "");
        Self::comment(ctx, "planning").await;
        let plan = ctx
            .execute_activity(
                JobActivities::plan,
                task.clone(),
                step_opts(&format!("LLM: plan {}#{}", req.repo, req.issue_number), llm),
            )
            .await
            .map_err(|e| fail(ctx, "planning", &e))?;
        attempt_tokens += plan.tokens;
        Self::note_estimate(ctx, plan.estimated);
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
            let code = ctx
                .execute_activity(
                    JobActivities::code,
                    task.clone(),
                    step_opts(
                        &format!("LLM: code {}#{} (round {})", req.repo, req.issue_number, round + 1),
                        llm,
                    ),
                )
                .await
                .map_err(|e| fail(ctx, "coding", &e))?;
            attempt_tokens += code.tokens;
            Self::note_estimate(ctx, code.estimated);
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
            let review = ctx
                .execute_activity(
                    JobActivities::review,
                    task.clone(),
                    step_opts(
                        &format!("LLM: review {}#{} (round {})", req.repo, req.issue_number, round + 1),
                        llm,
                    ),
                )
                .await
                .map_err(|e| fail(ctx, "reviewing", &e))?;
            attempt_tokens += review.tokens;
            Self::note_estimate(ctx, review.estimated);
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
        ctx.state_mut(|s| s.status.tokens += attempt_tokens);

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
        Self::bill(ctx, pr.number, attempt_tokens).await;
        Self::comment(ctx, &format!("pull request opened: {}", pr.url)).await;
        Ok(())
    }

    /// Flags the job's token count as partly estimated (a model answer without `usage`).
    fn note_estimate(ctx: &mut WorkflowContext<Self>, estimated: bool) {
        if estimated {
            ctx.state_mut(|s| s.status.tokens_estimated = true);
        }
    }

    /// Reports the PR and the attempt's tokens once each (ledger first, then Stripe).
    async fn bill(ctx: &mut WorkflowContext<Self>, pr_number: u64, tokens: u64) {
        let (req, attempt) = ctx.state(|s| (s.req.clone(), s.status.attempt));
        let Some(customer) = req.customer_id.clone() else { return };
        let mut base = format!("slw-{:016x}", fnv64(&format!("{}#{}", req.repo, req.issue_number)));
        // A later run of the issue's job bills under identifiers of its own.
        if req.run > 1 {
            base.push_str(&format!("-r{}", req.run));
        }
        let usages = [
            (format!("{base}-pr-{pr_number}"), req.policy.pr_meter_event.clone(), 1),
            (format!("{base}-tokens-{attempt}"), req.policy.tokens_meter_event.clone(), tokens),
        ];
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
                while ctx.state(|s| !s.status.unbilled.is_empty()) {
                    ctx.wait_condition(|s: &Self| s.bill_again).await?;
                    Self::bill_unbilled(ctx).await;
                }
                return Ok(ctx.state(|s| s.status.clone()));
            }
        }
    }
}

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
    }
}
