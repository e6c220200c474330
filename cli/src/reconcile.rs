//! `slipway reconcile stripe|github|orphans`: run a reconciler now, through its Temporal Schedule
//! (so the run is the schedule's, with its checkpoint, and shows in the Web UI like any other),
//! wait for it and print what it did. `--json` prints the run's report as is.
//!
//! `slipway orphans` prints the orphans the latest sweep found; `--delete` asks once for them to
//! be deleted: a sweep run outside the schedule, with deleting on and the latest sweep as its
//! previous one, so only what is still held by no live owner (checked again) is deleted.
//!
//! The connection comes from Temporal's env config (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
//! `temporal.toml`), like the worker's; the schedules are the worker's (it creates them).

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use slipway_proto::reconcile::{CatchUpReport, Reconciler, RedeliveryReport, SweepInput, SweepReport};
use slipway_workflows::OrphanSweepWorkflow;
use temporalio_client::{
    Client, UntypedWorkflow, WorkflowGetResultOptions, WorkflowStartOptions,
    schedules::{ScheduleDescriptionAction, ScheduleOverlapPolicy, TriggerScheduleOptions},
};

use crate::{api::print_json, env};

/// Which reconciler.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Which {
    /// Feed Stripe events whose delivery failed through the webhook path.
    Stripe,
    /// Ask GitHub to redeliver the App's failed webhook deliveries.
    Github,
    /// Sweep the providers for resources no live agent or client stack owns.
    Orphans,
}

/// `slipway reconcile`.
#[derive(Debug, Args)]
pub(crate) struct ReconcileArgs {
    /// The reconciler to run now.
    which: Which,
    #[command(flatten)]
    run: RunArgs,
}

/// What `reconcile` and `orphans` share: which deployment, how to print, how long to wait.
#[derive(Debug, Args)]
struct RunArgs {
    /// Print the run's report as JSON.
    #[arg(long)]
    json: bool,
    /// Task queue of the deployment (default `SLIPWAY_TASK_QUEUE`).
    #[arg(long)]
    task_queue: Option<String>,
    /// Give up waiting for the run after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

impl RunArgs {
    fn task_queue(&self) -> String {
        self.task_queue.clone().unwrap_or_else(|| env::get("SLIPWAY_TASK_QUEUE"))
    }

    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(self.timeout)
    }
}

/// The runs a schedule has started (recent and running), by workflow id, and when the newest
/// one started.
async fn runs(client: &Client, schedule_id: &str) -> anyhow::Result<(BTreeSet<String>, Option<SystemTime>)> {
    let d = client
        .get_schedule_handle(schedule_id)
        .describe(Default::default())
        .await
        .with_context(|| format!("schedule {schedule_id} (is a worker of this task queue running?)"))?;
    let recent = d.recent_actions();
    let newest = recent.iter().filter_map(|a| a.actual_time).max();
    let ids = recent
        .into_iter()
        .map(|a| a.workflow_id)
        .chain(d.running_actions().into_iter().map(|a| a.workflow_id))
        .collect();
    Ok((ids, newest))
}

pub(crate) async fn run(args: ReconcileArgs) -> anyhow::Result<i32> {
    let task_queue = args.run.task_queue();
    let reconciler = match args.which {
        Which::Stripe => Reconciler::Stripe,
        Which::Github => Reconciler::Github,
        Which::Orphans => Reconciler::Orphans,
    };
    let schedule_id = reconciler.schedule_id(&task_queue);
    let client = crate::api::connect_temporal().await?;
    let (before, newest) = runs(&client, &schedule_id).await?;
    // A schedule names its runs `<schedule id>-<time, to the second>`: a second run started in
    // the same second as the previous one would take its id and be dropped, so wait that out.
    if let Some(elapsed) = newest.and_then(|t| SystemTime::now().duration_since(t).ok())
        && elapsed < Duration::from_millis(1500)
    {
        tokio::time::sleep(Duration::from_millis(1500) - elapsed).await;
    }
    client
        .get_schedule_handle(&schedule_id)
        .trigger(ScheduleOverlapPolicy::BufferOne, TriggerScheduleOptions::default())
        .await
        .with_context(|| format!("triggering {schedule_id}"))?;
    let deadline = args.run.deadline();
    let workflow_id = loop {
        if let Some(id) = runs(&client, &schedule_id).await?.0.difference(&before).next() {
            break id.clone();
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{schedule_id} started no run in time");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("{schedule_id}: run {workflow_id}");
    match reconciler {
        Reconciler::Stripe => show(
            &result::<CatchUpReport>(&client, &workflow_id, deadline).await?,
            args.run.json,
            print_stripe,
        ),
        Reconciler::Github => show(
            &result::<RedeliveryReport>(&client, &workflow_id, deadline).await?,
            args.run.json,
            print_github,
        ),
        Reconciler::Orphans => {
            show(&result::<SweepReport>(&client, &workflow_id, deadline).await?, args.run.json, print_sweep)
        }
    }?;
    Ok(0)
}

/// A run's report (its result), once it has finished.
async fn result<T: serde::de::DeserializeOwned>(
    client: &Client,
    workflow_id: &str,
    deadline: tokio::time::Instant,
) -> anyhow::Result<T> {
    let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id.to_owned());
    let raw = tokio::time::timeout_at(deadline, handle.get_result(WorkflowGetResultOptions::default()))
        .await
        .with_context(|| format!("{workflow_id} did not finish in time"))??;
    let data = raw.payloads.first().map(|p| p.data.as_slice()).unwrap_or_default();
    serde_json::from_slice(data).with_context(|| format!("the report of {workflow_id}"))
}

/// Prints a report as JSON or for people.
fn show<T: serde::Serialize>(report: &T, json: bool, print: fn(&T)) -> anyhow::Result<()> {
    if json {
        print_json(report)
    } else {
        print(report);
        Ok(())
    }
}

/// `slipway orphans`.
#[derive(Debug, Args)]
pub(crate) struct OrphansArgs {
    /// Delete the orphans (checked once more first), once.
    #[arg(long)]
    delete: bool,
    #[command(flatten)]
    run: RunArgs,
}

pub(crate) async fn orphans(args: OrphansArgs) -> anyhow::Result<i32> {
    let task_queue = args.run.task_queue();
    let schedule_id = Reconciler::Orphans.schedule_id(&task_queue);
    let client = crate::api::connect_temporal().await?;
    let schedule = client
        .get_schedule_handle(&schedule_id)
        .describe(Default::default())
        .await
        .with_context(|| format!("schedule {schedule_id} (is a worker of this task queue running?)"))?;
    let latest = schedule.recent_actions().into_iter().max_by_key(|a| a.actual_time).map(|a| a.workflow_id);
    let deadline = args.run.deadline();
    let last: Option<SweepReport> = match &latest {
        Some(id) => Some(result(&client, id, deadline).await?),
        None => None,
    };
    let report = if args.delete {
        let ScheduleDescriptionAction::StartWorkflow(action) = schedule.action() else {
            anyhow::bail!("{schedule_id} does not start sweeps");
        };
        let policy: SweepInput = action.args().await?.unwrap_or_default();
        let input = SweepInput { delete: true, previous: last, ..policy };
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let workflow_id = format!("{schedule_id}-delete-{now}");
        let options = WorkflowStartOptions::new(task_queue.clone(), workflow_id.clone())
            .static_summary(
                "Orphan sweep asked for by an operator: delete what no live owner holds".to_owned(),
            )
            .build();
        let handle = client.start_workflow(OrphanSweepWorkflow::run, input, options).await?;
        eprintln!("{schedule_id}: run {workflow_id}");
        tokio::time::timeout_at(deadline, handle.get_result(WorkflowGetResultOptions::default()))
            .await
            .context("the sweep did not finish in time")??
    } else {
        let Some(report) = last else {
            eprintln!("no sweep has run yet: `slipway reconcile orphans` runs one");
            return Ok(1);
        };
        report
    };
    show(&report, args.run.json, print_sweep)?;
    Ok(0)
}

fn print_sweep(r: &SweepReport) {
    println!("Orphan sweep");
    println!("  resources listed            {}", r.listed);
    println!("  held by no live owner now   {}", r.suspects.len());
    println!("  orphans                     {}", r.orphans.len());
    println!(
        "  deleted                     {}{}",
        r.deleted.len(),
        if r.delete { "" } else { " (deleting is off)" }
    );
    println!("  kept, not provably ours     {}", r.unowned.len());
    let owner = |o: &slipway_proto::reconcile::Resource| match &o.owner {
        slipway_proto::reconcile::Owner::Agent(a) => format!("agent {a}"),
        slipway_proto::reconcile::Owner::ClientStack(c) => format!("client stack {c}"),
    };
    for o in &r.orphans {
        let done = if r.deleted.contains(&o.key()) { "deleted" } else { "orphan" };
        println!("    {done:<8} {} {} {} ({}), {}", o.provider, o.kind, o.name, o.id, owner(o));
    }
    for (key, why) in &r.failed {
        println!("    failed   {key}: {why}");
    }
    for o in &r.unowned {
        println!("    kept     {} {} {} ({}), {}", o.provider, o.kind, o.name, o.id, owner(o));
    }
    if !r.unowned.is_empty() {
        println!(
            "  kept: its owner is unknown to Temporal, or it carries no mark of this deployment and no record names its id"
        );
    }
}

fn print_stripe(r: &CatchUpReport) {
    println!("Stripe catch-up, events created {} … {} (Unix seconds)", r.from, r.checkpoint);
    println!("  undelivered events listed   {}", r.listed);
    println!("  recovered (webhook path)    {}", r.delivered);
    println!("  already fed by the last run {}", r.skipped);
    println!("  refused                     {}", r.refused.len());
    for e in &r.refused {
        println!("    {} {} HTTP {} {}", e.event_id, e.kind, e.status, e.code.as_deref().unwrap_or(""));
    }
    println!("  deferred to the next run    {}", r.deferred.len());
    for e in &r.deferred {
        println!(
            "    {} {} HTTP {} {} ({} run(s) in a row)",
            e.event_id,
            e.kind,
            e.status,
            e.code.as_deref().unwrap_or(""),
            e.attempts
        );
    }
}

fn print_github(r: &RedeliveryReport) {
    println!("GitHub redelivery");
    println!("  delivery attempts read      {}", r.scanned);
    println!("  failed deliveries           {}", r.failed);
    println!("  asked for again             {}", r.redelivered.len());
    println!("  given up                    {}", r.given_up.len());
    for d in
        r.redelivered.iter().map(|d| ("redelivered", d)).chain(r.given_up.iter().map(|d| ("given up", d)))
    {
        let (what, d) = d;
        println!(
            "    {what:<11} {} {}{} after {} attempt(s): {}",
            d.guid,
            d.event,
            d.action.as_deref().map(|a| format!(".{a}")).unwrap_or_default(),
            d.attempts,
            d.status
        );
    }
}
