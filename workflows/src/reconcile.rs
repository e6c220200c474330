//! The reconcilers that Temporal Schedules start (`reconcile-<name>@<task queue>`, created by
//! the worker): `StripeCatchUp` and `GitHubRedelivery`. Each run reports what it did as its
//! result (also its Web UI current details), and the schedule hands that result to the next run
//! as its last completion result: that is where the Stripe catch-up keeps its checkpoint.
//!
//! - `StripeCatchUp` feeds the Stripe events created since `checkpoint - overlap` (the first
//!   run: `lookback`) whose delivery failed, oldest first, through the webhook path, in batches;
//!   a long backlog continues as new with its progress. Events the previous run fed inside the
//!   overlap are not fed again (the webhook path would dedupe them anyway). An event the
//!   starter answers 409 (its owner busy: a provisioning in flight) is deferred alone: named in
//!   the report's `deferred`, kept out of the ids fed, and fed again by the next run, whose
//!   window reaches back to it; the batch and every other customer's events go on. Runs
//!   recorded before that (without [`DEFER_PATCH`]) replay failing the batch on a 409, as they
//!   did.
//! - `GitHubRedelivery` asks GitHub to redeliver the App's failed deliveries of the last 3 days.
//! - `OrphanSweep` lists what Slipway created at the providers, asks each owner's workflow what
//!   it holds, and reports (and, when allowed, deletes) what no live owner holds in two
//!   consecutive sweeps and is older than the grace period ([`orphans`], pure).

use std::time::Duration;

use serde::de::DeserializeOwned;
use slipway_activities::{ReconcileActivities, SweepActivities};
use slipway_proto::reconcile::{
    CatchUpProgress, CatchUpReport, CatchUpWindow, DeferredEvent, Owner, OwnerState, RedeliveryPolicy,
    RedeliveryReport, Resource, StripeCatchUpInput, SweepInput, SweepReport,
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ContinueAsNewOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::{options::retrying, unix};

/// Catch-ups started before an event refused 409 was deferred alone (carried to the next run)
/// replay failing the whole batch on it.
pub const DEFER_PATCH: &str = "stripe-catch-up-defers-conflicts";

/// Patch: the orphan sweep trusts only this deployment's marks and its owners' records, never a
/// name alone (see [`orphans`]); runs recorded before it decide as they did.
pub const RECORD_PATCH: &str = "sweep-trusts-marks-and-records";

/// The previous scheduled run's result, if the schedule handed one over.
fn last_result<T: DeserializeOwned>(ctx: &WorkflowContextView) -> Option<T> {
    let payload = ctx.raw().last_completion_result.as_ref()?.payloads.first()?;
    serde_json::from_slice(&payload.data).ok()
}

/// The Stripe catch-up.
#[workflow]
pub struct StripeCatchUpWorkflow {
    input: StripeCatchUpInput,
    previous: Option<CatchUpReport>,
}

#[workflow_methods]
impl StripeCatchUpWorkflow {
    /// Takes the policy and, from the schedule, the previous run's report.
    #[init]
    pub fn new(ctx: &WorkflowContextView, input: StripeCatchUpInput) -> Self {
        Self { input, previous: last_result(ctx) }
    }

    /// Feeds the window's undelivered events in batches.
    #[run(name = "StripeCatchUp")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<CatchUpReport> {
        let (input, previous) = ctx.state(|s| (s.input.clone(), s.previous.clone()));
        let defers = ctx.patched(DEFER_PATCH);
        let mut progress = match input.resume.clone() {
            Some(p) => p,
            None => {
                let until = unix(ctx);
                let from = window_start(previous.as_ref(), &input, until, defers);
                let carried = match &previous {
                    Some(p) if defers => p.deferred.clone(),
                    _ => Vec::new(),
                };
                CatchUpProgress {
                    until,
                    from,
                    skip: previous.map(|p| p.recent).unwrap_or_default(),
                    report: CatchUpReport { from, checkpoint: until, ..CatchUpReport::default() },
                    fed: Vec::new(),
                    relisted: Vec::new(),
                    carried,
                }
            }
        };
        loop {
            ctx.set_current_details(details(&progress.report, true));
            let window = CatchUpWindow {
                from: progress.from,
                until: progress.until,
                max_events: input.batch.max(1),
                skip: progress.skip.clone(),
                defer_conflicts: defers,
            };
            let batch = ctx
                .execute_activity(
                    ReconcileActivities::stripe_catch_up,
                    window,
                    retrying(
                        "Stripe: feed undelivered events",
                        Duration::from_secs(600),
                        Some(Duration::from_secs(60)),
                        10,
                    ),
                )
                .await?;
            let r = &mut progress.report;
            // The first batch's listing is the run's; later ones list what is left.
            if r.listed == 0 {
                r.listed = batch.listed;
                r.skipped = batch.skipped_ids.len() as u32;
            }
            r.delivered += batch.delivered.len() as u32;
            r.refused.extend(batch.refused.iter().cloned());
            let fed: Vec<String> = batch
                .delivered
                .iter()
                .cloned()
                .chain(batch.refused.iter().map(|e| e.event_id.clone()))
                .collect();
            // Deferred: not fed again in this run (`skip`), but not among the ids fed either,
            // so the next run feeds it again.
            for e in batch.deferred {
                let before =
                    progress.carried.iter().find(|c| c.event_id == e.event_id).map_or(0, |c| c.attempts);
                progress.skip.push(e.event_id.clone());
                r.deferred.push(DeferredEvent { attempts: before + e.attempts.max(1), ..e });
            }
            progress.skip.extend(fed.iter().cloned());
            progress.fed.extend(fed);
            for id in batch.skipped_ids {
                let deferred = progress.report.deferred.iter().any(|d| d.event_id == id);
                if !deferred && !progress.relisted.contains(&id) && !progress.fed.contains(&id) {
                    progress.relisted.push(id);
                }
            }
            if !batch.more {
                break;
            }
            progress.from = batch.next_from;
            if ctx.continue_as_new_suggested() {
                let next = StripeCatchUpInput { resume: Some(progress.clone()), ..input.clone() };
                ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
            }
        }
        let mut report = progress.report;
        // What the next run (starting at checkpoint - overlap, or at its oldest deferred event)
        // must not feed again; ids older than this run's window are dropped, so the list never
        // grows past one window. Deferred ids are not in it: the next run feeds them again.
        report.recent = progress.fed.into_iter().chain(progress.relisted).collect();
        ctx.set_current_details(details(&report, false));
        Ok(report)
    }
}

/// Where a run's window starts: `lookback` before its start (`until`) on the first run, else
/// `overlap` before the last checkpoint, or earlier when the last run deferred an event older
/// than that (`carries`), at that event, so it is listed and fed again. The last run's `recent`
/// covers its whole window, which held every event it deferred, so nothing it fed is fed twice.
/// Pure.
pub fn window_start(
    previous: Option<&CatchUpReport>,
    input: &StripeCatchUpInput,
    until: i64,
    carries: bool,
) -> i64 {
    let Some(p) = previous else {
        return until - input.lookback_secs as i64;
    };
    let from = p.checkpoint - input.overlap_secs as i64;
    match p.deferred.iter().map(|d| d.created).min() {
        Some(oldest) if carries => from.min(oldest),
        _ => from,
    }
}

/// The Web UI's view of a catch-up.
fn details(r: &CatchUpReport, running: bool) -> String {
    let mut out = format!(
        "**Stripe catch-up{}**\n\n- window: events created {} … {} (Unix seconds)\n- undelivered events listed: {}\n- recovered through the webhook path: {}\n- already fed by the previous run: {}\n- refused: {}\n- deferred to the next run (answered 409): {}\n",
        if running { " (running)" } else { "" },
        r.from,
        r.checkpoint,
        r.listed,
        r.delivered,
        r.skipped,
        r.refused.len(),
        r.deferred.len()
    );
    for e in &r.refused {
        out.push_str(&format!(
            "  - `{}` ({}): HTTP {} {}\n",
            e.event_id,
            e.kind,
            e.status,
            e.code.as_deref().unwrap_or("")
        ));
    }
    for e in &r.deferred {
        out.push_str(&format!(
            "  - deferred `{}` ({}): HTTP {} {}, {} run(s) in a row\n",
            e.event_id,
            e.kind,
            e.status,
            e.code.as_deref().unwrap_or(""),
            e.attempts
        ));
    }
    out
}

/// The GitHub redelivery.
#[workflow]
pub struct GitHubRedeliveryWorkflow {
    policy: RedeliveryPolicy,
}

#[workflow_methods]
impl GitHubRedeliveryWorkflow {
    /// Takes the policy.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, policy: RedeliveryPolicy) -> Self {
        Self { policy }
    }

    /// Asks for the failed deliveries again.
    #[run(name = "GitHubRedelivery")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<RedeliveryReport> {
        let policy = ctx.state(|s| s.policy.clone());
        ctx.set_current_details("**GitHub redelivery (running)**".to_owned());
        let report = ctx
            .execute_activity(
                ReconcileActivities::github_redeliver,
                policy,
                retrying(
                    "GitHub: redeliver failed deliveries",
                    Duration::from_secs(600),
                    Some(Duration::from_secs(60)),
                    10,
                ),
            )
            .await?;
        let mut out = format!(
            "**GitHub redelivery**\n\n- delivery attempts read: {}\n- deliveries without a successful attempt: {}\n- asked for again: {}\n- given up: {}\n",
            report.scanned,
            report.failed,
            report.redelivered.len(),
            report.given_up.len()
        );
        for d in report.redelivered.iter().chain(&report.given_up) {
            out.push_str(&format!(
                "  - `{}` {}{} after {} attempt(s): {}\n",
                d.guid,
                d.event,
                d.action.as_deref().map(|a| format!(".{a}")).unwrap_or_default(),
                d.attempts,
                d.status
            ));
        }
        ctx.set_current_details(out);
        Ok(report)
    }
}

/// What one sweep decided about the resources it listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Findings {
    /// Keys of the resources no live owner holds (orphans if seen again next time).
    pub suspects: Vec<String>,
    /// Orphans: suspects this sweep and the previous one, past the grace period.
    pub orphans: Vec<Resource>,
    /// Resources whose owner Temporal does not know: kept and reported, never suspects.
    pub unowned: Vec<Resource>,
}

/// Which resources no live owner holds (`suspects`, by key), and which of them are orphans: held
/// by nobody in this sweep and in the previous one (`previous`), and older than `grace_secs`
/// (a resource whose age the provider does not say relies on the two sweeps alone). A live owner
/// that is busy (a saga in flight) holds everything with its name; an idle one holds what its
/// state names. Only an owner Temporal knows can be read as gone: a resource whose owner it does
/// not know (never existed in this deployment, or removed by retention) is kept and reported
/// (`unowned`), whatever its name says.
///
/// With `by_record` (runs since [`RECORD_PATCH`]), a name is not proof either: a resource that
/// does not carry this deployment's mark ([`Resource::marked`]) is Slipway's only when its
/// owner's record names its id; one it does not name (a device that registered under a live
/// agent's hostname, another deployment's project named like one of ours) is kept and reported.
/// Pure.
pub fn orphans(
    resources: &[Resource],
    owners: &[OwnerState],
    previous: &[String],
    now: i64,
    grace_secs: u64,
    by_record: bool,
) -> Findings {
    let owner = |r: &Resource| owners.iter().find(|o| o.owner == r.owner);
    let held = |r: &Resource| {
        owner(r).is_some_and(|o| {
            o.live
                && (o.busy
                    || o.holds.contains(&r.id)
                    || (r.kind == "device" && o.holds.contains(&format!("hostname:{}", r.name))))
        })
    };
    let mut found = Findings::default();
    for r in resources.iter().filter(|r| !held(r)) {
        let provably_ours =
            |o: &OwnerState| !o.unknown && (!by_record || r.marked || o.holds.contains(&r.id));
        if !owner(r).is_some_and(provably_ours) {
            found.unowned.push(r.clone());
            continue;
        }
        let key = r.key();
        let old_enough = r.created.is_none_or(|c| now - c >= grace_secs as i64);
        if previous.contains(&key) && old_enough {
            found.orphans.push(r.clone());
        }
        found.suspects.push(key);
    }
    found
}

/// The orphan sweep.
#[workflow]
pub struct OrphanSweepWorkflow {
    input: SweepInput,
    previous: Option<SweepReport>,
}

#[workflow_methods]
impl OrphanSweepWorkflow {
    /// Takes the policy and the previous sweep (the schedule's, or the operator's).
    #[init]
    pub fn new(ctx: &WorkflowContextView, input: SweepInput) -> Self {
        let previous = input.previous.clone().or_else(|| last_result(ctx));
        Self { input, previous }
    }

    /// Lists, asks the owners, reports, and deletes if allowed.
    #[run(name = "OrphanSweep")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<SweepReport> {
        let (input, previous) = ctx.state(|s| (s.input.clone(), s.previous.clone()));
        ctx.set_current_details("**Orphan sweep (running)**".to_owned());
        let minute = Duration::from_secs(60);
        let resources = ctx
            .execute_activity(
                SweepActivities::list_resources,
                (),
                retrying("Providers: list Slipway's resources", Duration::from_secs(300), None, 10),
            )
            .await?;
        let mut owners: Vec<Owner> = resources.iter().map(|r| r.owner.clone()).collect();
        owners.sort();
        owners.dedup();
        let states = ctx
            .execute_activity(
                SweepActivities::owner_states,
                owners,
                retrying(
                    "Temporal: ask the owners' workflows what they hold",
                    Duration::from_secs(300),
                    Some(minute),
                    10,
                ),
            )
            .await?;
        let before = previous.map(|p| p.suspects).unwrap_or_default();
        let by_record = ctx.patched(RECORD_PATCH);
        let Findings { suspects, orphans: found, unowned } =
            orphans(&resources, &states, &before, unix(ctx), input.grace_secs, by_record);
        let mut report = SweepReport {
            listed: resources.len() as u32,
            suspects,
            orphans: found.clone(),
            delete: input.delete,
            unowned,
            ..SweepReport::default()
        };
        ctx.set_current_details(sweep_details(&report));
        if !found.is_empty() {
            ctx.execute_activity(
                SweepActivities::record_orphans,
                found.clone(),
                retrying("Count the orphans found", Duration::from_secs(30), None, 3),
            )
            .await?;
        }
        if input.delete {
            for r in found {
                let summary = format!("{}: delete orphan {} {} ({})", r.provider, r.kind, r.name, r.id);
                match ctx
                    .execute_activity(
                        SweepActivities::delete_orphan,
                        r.clone(),
                        retrying(&summary, Duration::from_secs(120), None, 5),
                    )
                    .await
                {
                    Ok(_) => report.deleted.push(r.key()),
                    Err(e) => report.failed.push((r.key(), crate::failure::activity(&e))),
                }
            }
        }
        ctx.set_current_details(sweep_details(&report));
        Ok(report)
    }
}

/// The Web UI's view of a sweep.
fn sweep_details(r: &SweepReport) -> String {
    let mut out = format!(
        "**Orphan sweep**\n\n- resources with Slipway's names listed: {}\n- held by no live owner now: {}\n- orphans (also last sweep, past the grace period): {}\n- deleted: {}{}\n",
        r.listed,
        r.suspects.len(),
        r.orphans.len(),
        r.deleted.len(),
        if r.delete { "" } else { " (deleting is off: SLIPWAY_SWEEP_DELETE, or `slipway orphans --delete`)" }
    );
    for o in &r.orphans {
        out.push_str(&format!(
            "  - {} {} `{}` ({}), owner {:?}\n",
            o.provider, o.kind, o.name, o.id, o.owner
        ));
    }
    for (key, why) in &r.failed {
        out.push_str(&format!("  - could not delete `{key}`: {why}\n"));
    }
    if !r.unowned.is_empty() {
        out.push_str(&format!(
            "- kept, not provably this deployment's (owner unknown to Temporal, or no mark and no record of its id): {}\n",
            r.unowned.len()
        ));
        for u in &r.unowned {
            out.push_str(&format!(
                "  - {} {} `{}` ({}), owner {:?}\n",
                u.provider, u.kind, u.name, u.id, u.owner
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, agent: &str, created: Option<i64>) -> Resource {
        Resource {
            provider: "hetzner".into(),
            kind: "server".into(),
            id: id.into(),
            name: format!("slipway-{agent}"),
            owner: Owner::Agent(agent.into()),
            created,
            marked: true,
        }
    }

    fn state(agent: &str, live: bool, busy: bool, holds: &[&str]) -> OwnerState {
        OwnerState {
            owner: Owner::Agent(agent.into()),
            live,
            busy,
            holds: holds.iter().map(|h| (*h).to_owned()).collect(),
            unknown: false,
        }
    }

    #[test]
    fn an_orphan_is_unheld_twice_and_past_the_grace_period() {
        let ghost = server("1", "ghost", Some(0));
        let first = orphans(
            std::slice::from_ref(&ghost),
            &[state("ghost", false, false, &[])],
            &[],
            10_000,
            3600,
            true,
        );
        assert_eq!(
            (first.suspects.clone(), first.orphans.clone()),
            (vec!["hetzner/server/1".to_owned()], vec![]),
            "first sighting: a suspect only"
        );
        let second = orphans(
            std::slice::from_ref(&ghost),
            &[state("ghost", false, false, &[])],
            &first.suspects,
            10_000,
            3600,
            true,
        );
        assert_eq!(second.orphans, vec![ghost.clone()]);
        let young = server("2", "ghost", Some(9_000));
        let Findings { orphans: none, .. } = orphans(
            &[young],
            &[state("ghost", false, false, &[])],
            &["hetzner/server/2".into()],
            10_000,
            3600,
            true,
        );
        assert!(none.is_empty(), "younger than the grace period");
    }

    #[test]
    fn a_run_reaches_back_to_the_oldest_event_the_last_run_deferred() {
        let input =
            StripeCatchUpInput { lookback_secs: 1_000, overlap_secs: 100, ..StripeCatchUpInput::default() };
        assert_eq!(window_start(None, &input, 10_000, true), 9_000, "first run: the lookback");
        let deferred = |created| DeferredEvent {
            event_id: format!("evt_{created}"),
            kind: "checkout.session.completed".into(),
            created,
            status: 409,
            code: Some("PROVISIONING_IN_PROGRESS".into()),
            attempts: 1,
        };
        let mut last = CatchUpReport { checkpoint: 9_500, ..CatchUpReport::default() };
        assert_eq!(window_start(Some(&last), &input, 10_000, true), 9_400, "the overlap");
        last.deferred = vec![deferred(9_450), deferred(7_000)];
        assert_eq!(window_start(Some(&last), &input, 10_000, true), 7_000, "back to the oldest deferred");
        assert_eq!(window_start(Some(&last), &input, 10_000, false), 9_400, "runs before the patch");
    }

    #[test]
    fn live_owners_keep_what_they_name_and_busy_ones_keep_everything() {
        let (own, stray) = (server("1", "a1", Some(0)), server("2", "a1", Some(0)));
        let previous = vec!["hetzner/server/1".to_owned(), "hetzner/server/2".to_owned()];
        let resources = [own.clone(), stray.clone()];
        let idle = orphans(&resources, &[state("a1", true, false, &["1"])], &previous, 10_000, 0, true);
        assert_eq!(idle.orphans, vec![stray], "a second server its record does not name");
        let busy = orphans(&resources, &[state("a1", true, true, &[])], &previous, 10_000, 0, true);
        assert!(busy.orphans.is_empty() && busy.suspects.is_empty(), "a saga in flight owns everything");
        let gone = orphans(&resources, &[state("a1", false, false, &["1"])], &previous, 10_000, 0, true);
        assert_eq!(gone.orphans.len(), 2, "a destroyed agent holds nothing");
    }

    /// An owner Temporal does not know (retention removed a stack that succeeded; an operator's
    /// own `slipway-prod`; another deployment's agent) is never read as gone.
    #[test]
    fn what_an_unknown_owner_has_is_kept_and_reported_never_an_orphan() {
        let theirs = server("9", "prod", Some(0));
        let unknown = OwnerState::unknown(Owner::Agent("prod".into()));
        let previous = vec![theirs.key()];
        for owners in [vec![unknown], vec![]] {
            let found = orphans(std::slice::from_ref(&theirs), &owners, &previous, 10_000, 0, true);
            assert_eq!(found.unowned, vec![theirs.clone()]);
            assert!(found.orphans.is_empty() && found.suspects.is_empty(), "{found:?}");
        }
    }

    /// A name is no proof: an unmarked resource (a Tailscale device, a Supabase project) is
    /// Slipway's only when its owner's record names its id.
    #[test]
    fn an_unmarked_resource_is_an_orphan_only_when_its_owner_recorded_its_id() {
        let device = |id: &str| Resource {
            provider: "tailscale".into(),
            kind: "device".into(),
            id: id.into(),
            name: "slipway-a1".into(),
            owner: Owner::Agent("a1".into()),
            created: Some(0),
            marked: false,
        };
        let (recorded, stranger) = (device("n1"), device("n2"));
        let resources = [recorded.clone(), stranger.clone()];
        let previous = vec![recorded.key(), stranger.key()];
        // A live agent naming n1: n2 registered under its hostname is kept, not deleted.
        let live = orphans(&resources, &[state("a1", true, false, &["n1"])], &previous, 10_000, 0, true);
        assert_eq!((live.orphans, live.unowned), (vec![], vec![stranger.clone()]));
        // Once the agent is gone, what its record named is an orphan; the other is still kept.
        let gone = orphans(&resources, &[state("a1", false, false, &["n1"])], &previous, 10_000, 0, true);
        assert_eq!((gone.orphans, gone.unowned), (vec![recorded.clone()], vec![stranger.clone()]));
        // Runs recorded before the patch decide by name, as they did.
        let before = orphans(&resources, &[state("a1", false, false, &["n1"])], &previous, 10_000, 0, false);
        assert_eq!(before.orphans, vec![recorded, stranger]);
    }
}
