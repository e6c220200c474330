//! `slipway jobs list|show`.
//!
//! - `list` reads Temporal's visibility directly (the API has no job listing): `Job` workflows
//!   on this deployment's task queue, with the `SlipwayStatus` / `SlipwayCustomerId` /
//!   `SlipwayUserId` search attributes the workflow keeps up to date. No workflow is woken.
//!   The connection comes from Temporal's env config (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
//!   `temporal.toml`), like the worker's.
//! - `show` asks the starter (`GET /api/jobs/{owner}/{repo}/{issue}`), which queries the job.
//! - `bill` asks the starter to have a job report its unbilled usage again
//!   (`POST /api/admin/jobs/{owner}/{repo}/{issue}/bill`); the job bills each usage once.

use std::time::SystemTime;

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use slipway_workflows::search_attributes;
use temporalio_client::WorkflowListOptions;

use crate::{
    api::{ApiArgs, cell, print_list, table},
    env,
};

/// `slipway jobs …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum JobsCommand {
    /// List coding jobs (newest first), from Temporal visibility.
    List(ListArgs),
    /// Show one job: state, steps, pull request, tokens, billing ledger.
    Show(ShowArgs),
    /// Report a job's unbilled usage (what Stripe refused) to Stripe again.
    Bill(ShowArgs),
}

/// Options of `jobs list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only jobs in this state (queued, planning, coding, reviewing, pr_creating, pr_opened, failed, cancelled).
    #[arg(long)]
    state: Option<String>,
    /// Only jobs billed to this Stripe customer.
    #[arg(long)]
    customer: Option<String>,
    /// Task queue of the deployment [default: $SLIPWAY_TASK_QUEUE, else slipway].
    #[arg(long)]
    task_queue: Option<String>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the jobs as a JSON array.
    #[arg(long)]
    json: bool,
}

/// Options of `jobs show`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The job: `owner/repo#N`, `owner/repo/N` or its workflow id `job-owner/repo#N`.
    job: String,
    #[command(flatten)]
    api: ApiArgs,
}

/// A job as listed.
#[derive(Debug, Serialize)]
pub(crate) struct JobSummary {
    /// `owner/repo#N`.
    pub(crate) job: String,
    /// Temporal workflow id.
    pub(crate) workflow_id: String,
    /// Latest run.
    pub(crate) run_id: String,
    /// Job state (`SlipwayStatus`).
    pub(crate) state: Option<String>,
    /// Temporal execution status (`Running`, `Completed`, ...).
    pub(crate) execution: String,
    /// Billed customer.
    pub(crate) customer_id: Option<String>,
    /// Linked user.
    pub(crate) user_id: Option<String>,
    /// Start (RFC 3339).
    pub(crate) started_at: Option<String>,
    /// Close (RFC 3339), once closed.
    pub(crate) closed_at: Option<String>,
}

/// Run a `jobs` command.
pub(crate) async fn run(cmd: JobsCommand) -> anyhow::Result<i32> {
    match cmd {
        JobsCommand::List(args) => list(args).await,
        JobsCommand::Show(args) => show(args).await,
        JobsCommand::Bill(args) => bill(args).await,
    }
}

/// `(owner, repo, issue)` from any of the accepted spellings.
pub(crate) fn parse_job(job: &str) -> anyhow::Result<(String, String, u64)> {
    let bare = job.strip_prefix("job-").unwrap_or(job);
    let parsed = bare
        .rsplit_once('#')
        .or_else(|| bare.rsplit_once('/'))
        .and_then(|(repo, n)| Some((repo.split_once('/')?, n.parse().ok()?)))
        .filter(|((owner, name), _)| !owner.is_empty() && !name.is_empty() && !name.contains('/'));
    let ((owner, name), number) =
        parsed.with_context(|| format!("{job:?} is not a job: use owner/repo#N (e.g. acme/shop#1)"))?;
    Ok((owner.to_owned(), name.to_owned(), number))
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', ""))
}

fn rfc3339(t: Option<SystemTime>) -> Option<String> {
    t.map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

async fn list(args: ListArgs) -> anyhow::Result<i32> {
    let task_queue = args.task_queue.unwrap_or_else(|| env::get("SLIPWAY_TASK_QUEUE"));
    let mut query = format!("WorkflowType = 'Job' AND TaskQueue = {}", quote(&task_queue));
    if let Some(state) = &args.state {
        query.push_str(&format!(" AND {} = {}", search_attributes::STATUS.name(), quote(state)));
    }
    if let Some(customer) = &args.customer {
        query.push_str(&format!(" AND {} = {}", search_attributes::CUSTOMER_ID.name(), quote(customer)));
    }
    let client = crate::api::connect_temporal().await?;
    let mut stream = client.list_workflows(query, WorkflowListOptions::builder().limit(args.limit).build());
    let mut jobs = Vec::new();
    while let Some(exec) = stream.next().await {
        let exec = exec.context("listing workflows")?;
        let attrs = exec.search_attributes();
        let id = exec.id().to_owned();
        jobs.push(JobSummary {
            job: id.strip_prefix("job-").unwrap_or(&id).to_owned(),
            workflow_id: id.clone(),
            run_id: exec.run_id().to_owned(),
            state: attrs.get(&search_attributes::STATUS),
            execution: format!("{:?}", exec.status()),
            customer_id: attrs.get(&search_attributes::CUSTOMER_ID),
            user_id: attrs.get(&search_attributes::USER_ID),
            started_at: rfc3339(exec.start_time()),
            closed_at: rfc3339(exec.close_time()),
        });
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let headers = ["JOB", "STATE", "WORKFLOW", "CUSTOMER", "STARTED"];
    print_list(&jobs, args.json, &format!("no jobs on task queue {task_queue}"), &headers, |j| {
        vec![j.job.clone(), opt(&j.state), j.execution.clone(), opt(&j.customer_id), opt(&j.started_at)]
    })
}

async fn show(args: ShowArgs) -> anyhow::Result<i32> {
    let (owner, repo, issue) = parse_job(&args.job)?;
    args.api.show(&format!("/api/jobs/{owner}/{repo}/{issue}"), describe).await
}

async fn bill(args: ShowArgs) -> anyhow::Result<i32> {
    let (owner, repo, issue) = parse_job(&args.job)?;
    let status = args.api.api()?.post(&format!("/api/admin/jobs/{owner}/{repo}/{issue}/bill")).await?;
    let owed = status["unbilled"].as_array().map_or(0, Vec::len);
    if args.api.json {
        crate::api::print_json(&status)?;
    } else {
        println!(
            "{owner}/{repo}#{issue}: {owed} unbilled usage(s) reported again; `slipway jobs show` tells when they are billed"
        );
    }
    Ok(0)
}

/// A job status for people.
fn describe(j: &Value) -> String {
    let history: Vec<String> = j["history"].as_array().into_iter().flatten().map(cell).collect();
    let mut lines = vec![
        format!("Job        {}#{}", cell(&j["repo"]), cell(&j["issue_number"])),
        format!("State      {}", cell(&j["state"])),
        format!("History    {}", if history.is_empty() { "-".to_owned() } else { history.join(" → ") }),
        format!("Attempt    {}", cell(&j["attempt"])),
        format!("Tokens     {}", cell(&j["tokens"])),
    ];
    if !j["pr_number"].is_null() {
        lines.push(format!(
            "PR         #{} {} {}",
            cell(&j["pr_number"]),
            cell(&j["pr_url"]),
            cell(&j["pr_outcome"])
        ));
    }
    if !j["failure"].is_null() {
        lines.push(format!("Failure    {}", cell(&j["failure"])));
    }
    let billed: Vec<String> = j["billed"].as_array().into_iter().flatten().map(cell).collect();
    lines.push(format!("Billed     {}", if billed.is_empty() { "-".to_owned() } else { billed.join(", ") }));
    for u in j["unbilled"].as_array().into_iter().flatten() {
        lines.push(format!(
            "Unbilled   {} {} ({}): {}",
            cell(&u["value"]),
            cell(&u["event_name"]),
            cell(&u["identifier"]),
            cell(&u["reason"])
        ));
    }
    if j["tokens_estimated"] == true {
        lines.push("Estimated  tokens partly estimated (a model answer carried no usage)".to_owned());
    }
    let steps = j["steps"].as_array().cloned().unwrap_or_default();
    if !steps.is_empty() {
        lines.push(String::new());
        let rows: Vec<Vec<String>> =
            steps.iter().map(|s| vec![cell(&s["name"]), cell(&s["state"]), cell(&s["detail"])]).collect();
        lines.push(table(&["STEP", "STATE", "DETAIL"], &rows));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_references_parse_in_every_spelling() {
        let want = ("acme".to_owned(), "shop".to_owned(), 12);
        assert_eq!(parse_job("acme/shop#12").unwrap(), want);
        assert_eq!(parse_job("job-acme/shop#12").unwrap(), want);
        assert_eq!(parse_job("acme/shop/12").unwrap(), want);
        for bad in ["acme#1", "acme/shop", "acme/shop#x", "/shop#1", "a/b/c#1"] {
            assert!(parse_job(bad).is_err(), "{bad}");
        }
    }
}
