//! The reconcilers' payloads: what each scheduled run is asked to do and what it reports.
//!
//! Webhooks are at-least-once only while their sender keeps trying (Stripe for about three days,
//! GitHub not at all), so three reconcilers run as Temporal Schedules:
//! - `StripeCatchUp` feeds the Stripe events whose delivery failed back through the webhook path;
//! - `GitHubRedelivery` asks GitHub to redeliver the App's failed deliveries;
//! - `OrphanSweep` finds provider resources no live workflow owns.
//!
//! A scheduled run's result is the next run's starting point: Temporal hands the previous run's
//! completion result to the next run a schedule starts, so the checkpoint lives in the
//! workflows (and in continue-as-new input while a run pages through a backlog), never in a
//! database of Slipway's.

use serde::{Deserialize, Serialize};

/// Which reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reconciler {
    /// Stripe catch-up.
    Stripe,
    /// GitHub redelivery.
    Github,
    /// Orphan sweep.
    Orphans,
}

impl Reconciler {
    /// All three, in the order they are documented.
    pub const ALL: [Reconciler; 3] = [Reconciler::Stripe, Reconciler::Github, Reconciler::Orphans];

    /// `stripe`, `github`, `orphans`.
    pub fn name(self) -> &'static str {
        match self {
            Reconciler::Stripe => "stripe",
            Reconciler::Github => "github",
            Reconciler::Orphans => "orphans",
        }
    }

    /// The registered workflow type the schedule starts.
    pub fn workflow_type(self) -> &'static str {
        match self {
            Reconciler::Stripe => "StripeCatchUp",
            Reconciler::Github => "GitHubRedelivery",
            Reconciler::Orphans => "OrphanSweep",
        }
    }

    /// The schedule's id (one per deployment, i.e. per task queue), also the prefix of the
    /// workflow ids it starts.
    pub fn schedule_id(self, task_queue: &str) -> String {
        format!("reconcile-{}@{task_queue}", self.name())
    }
}

/// Input of a `StripeCatchUp` run. A schedule starts it with only the policy set; a run that
/// continues as new carries its progress in `resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeCatchUpInput {
    /// How far back the first run ever looks (Stripe keeps events 30 days).
    pub lookback_secs: u64,
    /// How far before the last checkpoint each run looks again, for events Stripe records late.
    pub overlap_secs: u64,
    /// Events fed per activity call.
    pub batch: u32,
    /// A run in progress, continued as new.
    #[serde(default)]
    pub resume: Option<CatchUpProgress>,
}

impl Default for StripeCatchUpInput {
    fn default() -> Self {
        Self { lookback_secs: 30 * 24 * 3600, overlap_secs: 300, batch: 200, resume: None }
    }
}

/// Where a `StripeCatchUp` run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CatchUpProgress {
    /// The run's upper bound (its start, Unix seconds): events created later are the next run's.
    pub until: i64,
    /// The next batch starts at events created at or after this (Unix seconds).
    pub from: i64,
    /// Event ids not to feed again (fed by this run, or by the previous one inside the overlap).
    pub skip: Vec<String>,
    /// What the run did so far.
    pub report: CatchUpReport,
    /// Ids this run fed (accepted or refused).
    #[serde(default)]
    pub fed: Vec<String>,
    /// Ids of `skip` that Stripe still listed in this run's window (an earlier run fed them).
    #[serde(default)]
    pub relisted: Vec<String>,
    /// The events the previous run deferred (its report's `deferred`), to count the runs in a
    /// row that defer one.
    #[serde(default)]
    pub carried: Vec<DeferredEvent>,
}

/// One activity call of the catch-up: feed the undelivered events created in `[from, until]`,
/// oldest first, at most `max_events`, skipping `skip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpWindow {
    /// Lower bound, inclusive (Unix seconds).
    pub from: i64,
    /// Upper bound, inclusive (Unix seconds).
    pub until: i64,
    /// Batch size.
    pub max_events: u32,
    /// Already fed.
    pub skip: Vec<String>,
    /// Defer an event the webhook path answers 409 ([`CatchUpBatch::deferred`]) and go on with
    /// the batch, instead of failing the batch (as runs started before deferring do).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub defer_conflicts: bool,
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CatchUpBatch {
    /// Undelivered events Stripe listed in the window (types Slipway handles).
    pub listed: u32,
    /// Listed events left out because they were fed already (`skip`).
    #[serde(default)]
    pub skipped_ids: Vec<String>,
    /// Ids of the events the webhook path accepted (2xx), in the order fed.
    pub delivered: Vec<String>,
    /// Events the webhook path refused for good (4xx other than 409/429), with its answer.
    pub refused: Vec<RefusedEvent>,
    /// Events the webhook path answered 409 (with `defer_conflicts`), in the order fed.
    #[serde(default)]
    pub deferred: Vec<DeferredEvent>,
    /// More events remain in the window after this batch.
    pub more: bool,
    /// Where the next batch starts (the `created` of the last event fed).
    pub next_from: i64,
}

/// An event the webhook path refused for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedEvent {
    /// `evt_…`.
    pub event_id: String,
    /// Its type.
    pub kind: String,
    /// HTTP status of the starter's answer.
    pub status: u16,
    /// The stable `code` of its error body, if any.
    pub code: Option<String>,
}

/// An event the webhook path answered 409: its owner is busy (`PROVISIONING_IN_PROGRESS`: the
/// user's provisioning in flight), which will change. It is left out of the ids fed, so the next
/// run lists it again (its window reaches back to `created`) and feeds it, alone; the other
/// events of the batch go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredEvent {
    /// `evt_…`.
    pub event_id: String,
    /// Its type.
    pub kind: String,
    /// When Stripe created it (Unix seconds).
    pub created: i64,
    /// HTTP status of the starter's answer (409).
    pub status: u16,
    /// The stable `code` of its error body, if any.
    pub code: Option<String>,
    /// Runs in a row that deferred it, this one included.
    pub attempts: u32,
}

/// What a `StripeCatchUp` run did; its result, and the next run's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CatchUpReport {
    /// The window looked at (Unix seconds).
    pub from: i64,
    /// Its end; the next run starts at `checkpoint - overlap`.
    pub checkpoint: i64,
    /// Undelivered events listed.
    pub listed: u32,
    /// Events fed through the webhook path and accepted.
    pub delivered: u32,
    /// Events skipped because an earlier run already fed them.
    pub skipped: u32,
    /// Events refused for good.
    pub refused: Vec<RefusedEvent>,
    /// Events answered 409, for the next run to feed again (not in `recent`).
    #[serde(default)]
    pub deferred: Vec<DeferredEvent>,
    /// Ids the next run must not feed again: those this run fed, and those it skipped because
    /// an earlier run had fed them and Stripe still lists them (no older ones, so the list stays
    /// as short as the window).
    pub recent: Vec<String>,
}

/// Input of a `GitHubRedelivery` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeliveryPolicy {
    /// Deliveries older than this are not asked for again (github.com keeps them 3 days).
    pub window_secs: u64,
    /// Redeliveries asked per run.
    pub max_per_run: u32,
    /// Attempts of one delivery (GUID) after which it is given up and reported.
    pub max_attempts: u32,
}

impl Default for RedeliveryPolicy {
    fn default() -> Self {
        Self { window_secs: 3 * 24 * 3600, max_per_run: 50, max_attempts: 5 }
    }
}

/// A delivery asked for again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedDelivery {
    /// `X-GitHub-Delivery`.
    pub guid: String,
    /// The attempt redelivered (GitHub's numeric delivery id).
    pub delivery_id: u64,
    /// `issues`, `issue_comment`, …
    pub event: String,
    /// Its action, if any.
    pub action: Option<String>,
    /// Attempts so far, this one not counted.
    pub attempts: u32,
    /// The last attempt's status (`Invalid HTTP Response: 503`, …).
    pub status: String,
}

/// What a `GitHubRedelivery` run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RedeliveryReport {
    /// Delivery attempts read (inside the window).
    pub scanned: u32,
    /// Deliveries (GUIDs) with no successful attempt.
    pub failed: u32,
    /// Those asked for again.
    pub redelivered: Vec<FailedDelivery>,
    /// Those given up (attempts exhausted, or past the run's cap), still failed.
    pub given_up: Vec<FailedDelivery>,
}

/// Input of an `OrphanSweep` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepInput {
    /// A resource younger than this is never an orphan (a saga may be creating it).
    pub grace_secs: u64,
    /// Delete confirmed orphans (`SLIPWAY_SWEEP_DELETE`, or an operator's `slipway orphans
    /// --delete`); otherwise only report them.
    pub delete: bool,
    /// The previous sweep, for a run a schedule did not start (`slipway orphans --delete`);
    /// scheduled runs get it from the schedule.
    #[serde(default)]
    pub previous: Option<SweepReport>,
}

impl Default for SweepInput {
    fn default() -> Self {
        Self { grace_secs: 3600, delete: false, previous: None }
    }
}

/// What owns a resource, by Slipway's names and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Owner {
    /// An agent (`agent-<id>`): its server, Tailscale auth keys and device.
    Agent(String),
    /// A client stack (`client-stack-<id>`): its Supabase project, n8n workflow, repository
    /// and Vercel project.
    ClientStack(String),
}

/// A provider resource Slipway created (by its names and labels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// `hetzner`, `tailscale`, `supabase`, `n8n`, `github`, `vercel`.
    pub provider: String,
    /// `server`, `auth_key`, `device`, `project`, `workflow`, `repository`.
    pub kind: String,
    /// The provider's id.
    pub id: String,
    /// Its name (or description).
    pub name: String,
    /// Who should own it.
    pub owner: Owner,
    /// When the provider says it was created (Unix seconds), if it says.
    pub created: Option<i64>,
    /// It carries this deployment's mark (its Hetzner label, its repository description's
    /// mark): Slipway of this deployment made it, even if no record names its id. A resource
    /// without the mark (a Tailscale device or key, a Supabase project, an n8n workflow: nothing
    /// Slipway can set on them tells deployments apart) is only ever an orphan when its owner's
    /// record names its id. Resources marked by another deployment are not listed at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub marked: bool,
}

impl Resource {
    /// `provider/kind/id`: the same resource across sweeps.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.provider, self.kind, self.id)
    }
}

/// What an owner's workflow says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerState {
    /// The owner.
    pub owner: Owner,
    /// Its workflow exists and has not ended for good (an agent not destroyed, a stack that is
    /// provisioning or ready).
    pub live: bool,
    /// It is creating or removing resources right now (a saga in flight): everything with its
    /// name is its own.
    pub busy: bool,
    /// The resource ids its state names.
    pub holds: Vec<String>,
    /// Temporal has no workflow of this owner: it never existed in this deployment (another
    /// deployment's resource, an operator's own `slipway-prod`), or retention removed its
    /// closed workflow (a client stack that succeeded long ago). Nothing proves the resource is
    /// an orphan, so it is kept and reported, never deleted.
    #[serde(default)]
    pub unknown: bool,
}

impl OwnerState {
    /// An owner whose workflow has ended for good and holds nothing.
    pub fn gone(owner: Owner) -> Self {
        Self { owner, live: false, busy: false, holds: Vec::new(), unknown: false }
    }

    /// An owner Temporal has no workflow of (see [`OwnerState::unknown`]).
    pub fn unknown(owner: Owner) -> Self {
        Self { owner, live: false, busy: false, holds: Vec::new(), unknown: true }
    }
}

/// What an `OrphanSweep` run found; its result, and the next sweep's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SweepReport {
    /// Resources listed at the providers (Slipway's names and labels).
    pub listed: u32,
    /// Keys of the resources with no live owner this time (orphans if seen again next time).
    pub suspects: Vec<String>,
    /// Orphans: no live owner in this sweep and the previous one, older than the grace period.
    pub orphans: Vec<Resource>,
    /// Orphans deleted by this run.
    pub deleted: Vec<String>,
    /// Orphans whose deletion failed, with why.
    pub failed: Vec<(String, String)>,
    /// Resources whose owner Temporal does not know ([`OwnerState::unknown`]): kept, reported
    /// for an operator to look at.
    #[serde(default)]
    pub unowned: Vec<Resource>,
    /// Whether this run was allowed to delete.
    pub delete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_ids_name_the_reconciler_and_the_deployment() {
        assert_eq!(Reconciler::Stripe.schedule_id("slipway"), "reconcile-stripe@slipway");
        assert_eq!(Reconciler::Orphans.workflow_type(), "OrphanSweep");
    }

    #[test]
    fn a_schedule_input_without_progress_decodes() {
        let input: StripeCatchUpInput =
            serde_json::from_str(r#"{"lookback_secs": 60, "overlap_secs": 5, "batch": 10}"#).unwrap();
        assert_eq!(input.resume, None);
    }
}
