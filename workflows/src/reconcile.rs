//! The reconcilers that Temporal Schedules start (`reconcile-<name>@<task queue>`, created by
//! the worker): `StripeCatchUp` and `GitHubRedelivery`. Each run reports what it did as its
//! result (also its Web UI current details), and the schedule hands that result to the next run
//! as its last completion result: that is where the Stripe catch-up keeps its checkpoint.
//!
//! - `StripeCatchUp` feeds the Stripe events created since `checkpoint - overlap` (the first
//!   run: `lookback`) whose delivery failed, oldest first, through the webhook path, in batches;
//!   a long backlog continues as new with its progress. Events the previous run fed inside the
//!   overlap are not fed again (the webhook path would dedupe them anyway).
//! - `GitHubRedelivery` asks GitHub to redeliver the App's failed deliveries of the last 3 days.
//! - `OrphanSweep` lists what Slipway created at the providers, asks each owner's workflow what
//!   it holds, and reports (and, when allowed, deletes) what no live owner holds in two
//!   consecutive sweeps and is older than the grace period ([`orphans`], pure).

use std::time::Duration;

use serde::de::DeserializeOwned;
use slipway_activities::{ReconcileActivities, SweepActivities};
use slipway_proto::reconcile::{
    CatchUpProgress, CatchUpReport, CatchUpWindow, Owner, OwnerState, RedeliveryPolicy, RedeliveryReport,
    Resource, StripeCatchUpInput, SweepInput, SweepReport,
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ContinueAsNewOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::{options::retrying, unix};

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
        let mut progress = match input.resume.clone() {
            Some(p) => p,
            None => {
                let until = unix(ctx);
                let from = previous
                    .as_ref()
                    .map_or(until - input.lookback_secs as i64, |p| p.checkpoint - input.overlap_secs as i64);
                CatchUpProgress {
                    until,
                    from,
                    skip: previous.map(|p| p.recent).unwrap_or_default(),
                    report: CatchUpReport { from, checkpoint: until, ..CatchUpReport::default() },
                    fed: Vec::new(),
                    relisted: Vec::new(),
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
            progress.skip.extend(fed.iter().cloned());
            progress.fed.extend(fed);
            for id in batch.skipped_ids {
                if !progress.relisted.contains(&id) && !progress.fed.contains(&id) {
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
        // What the next run (starting at checkpoint - overlap) must not feed again; ids older
        // than this run's window are dropped, so the list never grows past one window.
        report.recent = progress.fed.into_iter().chain(progress.relisted).collect();
        ctx.set_current_details(details(&report, false));
        Ok(report)
    }
}

/// The Web UI's view of a catch-up.
fn details(r: &CatchUpReport, running: bool) -> String {
    let mut out = format!(
        "**Stripe catch-up{}**\n\n- window: events created {} … {} (Unix seconds)\n- undelivered events listed: {}\n- recovered through the webhook path: {}\n- already fed by the previous run: {}\n- refused: {}\n",
        if running { " (running)" } else { "" },
        r.from,
        r.checkpoint,
        r.listed,
        r.delivered,
        r.skipped,
        r.refused.len()
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

/// Which resources no live owner holds (`suspects`, by key), and which of them are orphans: held
/// by nobody in this sweep and in the previous one (`previous`), and older than `grace_secs`
/// (a resource whose age the provider does not say relies on the two sweeps alone). A live owner
/// that is busy (a saga in flight) holds everything with its name; an idle one holds what its
/// state names. Pure.
pub fn orphans(
    resources: &[Resource],
    owners: &[OwnerState],
    previous: &[String],
    now: i64,
    grace_secs: u64,
) -> (Vec<String>, Vec<Resource>) {
    let held = |r: &Resource| {
        owners.iter().find(|o| o.owner == r.owner).is_some_and(|o| {
            o.live
                && (o.busy
                    || o.holds.contains(&r.id)
                    || (r.kind == "device" && o.holds.contains(&format!("hostname:{}", r.name))))
        })
    };
    let mut suspects = Vec::new();
    let mut found = Vec::new();
    for r in resources.iter().filter(|r| !held(r)) {
        let key = r.key();
        let old_enough = r.created.is_none_or(|c| now - c >= grace_secs as i64);
        if previous.contains(&key) && old_enough {
            found.push(r.clone());
        }
        suspects.push(key);
    }
    (suspects, found)
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
        let (suspects, found) = orphans(&resources, &states, &before, unix(ctx), input.grace_secs);
        let mut report = SweepReport {
            listed: resources.len() as u32,
            suspects,
            orphans: found.clone(),
            delete: input.delete,
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
        }
    }

    fn state(agent: &str, live: bool, busy: bool, holds: &[&str]) -> OwnerState {
        OwnerState {
            owner: Owner::Agent(agent.into()),
            live,
            busy,
            holds: holds.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    #[test]
    fn an_orphan_is_unheld_twice_and_past_the_grace_period() {
        let ghost = server("1", "ghost", Some(0));
        let first =
            orphans(std::slice::from_ref(&ghost), &[state("ghost", false, false, &[])], &[], 10_000, 3600);
        assert_eq!(first, (vec!["hetzner/server/1".to_owned()], vec![]), "first sighting: a suspect only");
        let second = orphans(
            std::slice::from_ref(&ghost),
            &[state("ghost", false, false, &[])],
            &first.0,
            10_000,
            3600,
        );
        assert_eq!(second.1, vec![ghost.clone()]);
        let young = server("2", "ghost", Some(9_000));
        let (_, none) = orphans(
            &[young],
            &[state("ghost", false, false, &[])],
            &["hetzner/server/2".into()],
            10_000,
            3600,
        );
        assert!(none.is_empty(), "younger than the grace period");
    }

    #[test]
    fn live_owners_keep_what_they_name_and_busy_ones_keep_everything() {
        let (own, stray) = (server("1", "a1", Some(0)), server("2", "a1", Some(0)));
        let previous = vec!["hetzner/server/1".to_owned(), "hetzner/server/2".to_owned()];
        let resources = [own.clone(), stray.clone()];
        let (_, idle) = orphans(&resources, &[state("a1", true, false, &["1"])], &previous, 10_000, 0);
        assert_eq!(idle, vec![stray], "a second server its record does not name");
        let (suspects, busy) = orphans(&resources, &[state("a1", true, true, &[])], &previous, 10_000, 0);
        assert!(busy.is_empty() && suspects.is_empty(), "a saga in flight owns everything with its name");
        let (_, gone) = orphans(&resources, &[state("a1", false, false, &["1"])], &previous, 10_000, 0);
        assert_eq!(gone.len(), 2, "a destroyed agent holds nothing");
    }
}
