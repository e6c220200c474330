//! Determinism guard: every workflow type, on every path, replays against recorded histories.
//!
//! - `committed_histories_replay` replays every file under `tests/histories/` (recorded from
//!   real runs) with the current workflow code. A change that alters the commands a workflow
//!   issues on any recorded path fails here, before it can break workflows already running,
//!   naming the workflow type, the file and the first event that no longer matches. New files
//!   are picked up as they are added.
//! - The `live_*` tests play one family of paths each against a real Temporal server, sandbox,
//!   worker and starter, then replay what they produced and scan it for secrets. With
//!   `SLIPWAY_RECORD_HISTORIES=1` (or a directory) they also write the histories:
//!   `scripts/record-histories` re-records the whole corpus. Every scenario is driven to a
//!   known state before its histories are fetched, so a re-recording follows the same paths.
//!
//! | test | paths |
//! |---|---|
//! | `live_provisioning_paths` | saga success (the checkout heard by signal), a late Stripe event for an active agent, one provisioning per user (a second checkout waiting, retried, then provisioned), each saga step failing with its compensations, a compensation failing |
//! | `live_deadline_and_grace_period` | the callback deadline timer firing; the payment grace period running out |
//! | `live_agent_lifecycle` | provision, stop, start, suspend and resume (from active and from stopped), destroy, a destroy that fails and is retried, each wrong-state refusal |
//! | `live_subscription_orderings` | events in order, reversed and duplicated, a subscription deleted, a tie that makes it re-fetch from Stripe |
//! | `live_client_stack_paths` | success (handing its status to the client's `StackRecord`, recorded too), each of the seven activities failing, a compensation failing |
//! | `live_jobs` | PR merged, retry (refused to a reader, accepted from a writer), cancel while running, queued and failed, refused (unlinked account, the job asking for its entitlement itself and waiting for a retry), usage Stripe refused kept unbilled then billed on an operator's `bill_again`, a non-writer's labelled issue refused then run on a writer's relabel, a plan the path policy refuses (its tokens billed) then cancelled, the gate at its cap, the links registry |
//! | `live_seats` | one customer's subscriptions: a checkout parked behind an unpaid invoice then provisioned, one granted at once, one denied (subscription deleted first), a deletion that destroys only its own subscription's agent and frees its seat |
//! | `live_billing_desired_state` | a customer on the previous per-subscription rules moved by an event those rules never received (`invoice.voided`), then: a resume failing beyond its retry budget and retried until it holds, a downgrade powering the newest agent off, a pause and resume, an upgrade, a draft destroyed with its checkout open (session expired), a late checkout for it whose seat a probe frees for the next agent, the customer deleted |
//! | `live_legacy_customer_upgrade` | a customer run on the previous release's rules (the worker holds the change back): a seat claim moves it, held back it answers claims itself, an operator's `upgrade` moves it for good, then the new rules apply |
//! | `live_continue_as_new` | `Agent`, `Subscription` and `Job` (its pull request open) continuing as new past a small history limit |
//! | `live_versioned_rollout` | Worker Versioning: 20 sagas stalled on their Actions callback stay pinned to version A (the previous release, a saga step held back) and finish there after B became current; new sagas run pinned on B; 20 live agents auto-upgrade from A to B and answer commands with no failed task; A reports drained and stops |
//! | `live_reconcilers` | the Stripe catch-up recovering events (one refused for good), then finding them all fed; the GitHub redelivery asking for a failed delivery again, then finding nothing failed; the orphan sweep finding suspects, then orphans (reported), then deleting them, keeping what only a name ties to Slipway |
//!
//! Files are written one event per line: compact, and still reviewable in a diff.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};
use slipway_proto::{
    billing::customer_workflow_id,
    jobs::{JobState, JobStatus, github_links_workflow_id, job_gate_workflow_id, job_workflow_id},
    model::{AgentRecord, AgentStatus, ProvisioningPolicy, agent_workflow_id},
};
use slipway_sandbox::{
    github_events,
    stripe::{event, invoice_object, subscription_object},
};
use slipway_tests::{GitHubAccount, Options, TestApp, replayer, secret_scan::Scanner};
use slipway_workflows::{AgentWorkflow, JobGateWorkflow};
use temporalio_client::{
    WorkflowExecutionInfo, WorkflowFetchHistoryOptions, WorkflowHandle, WorkflowHistory, WorkflowQueryOptions,
};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

const WAIT: Duration = Duration::from_secs(90);

fn histories_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories")
}

/// The current code's recordings, replaced when re-recorded. Everything else under
/// `tests/histories/` was recorded from earlier code and is never rewritten: runs of that code
/// may still be open, so this code must keep replaying them.
fn recorded_dir() -> PathBuf {
    histories_dir().join("recorded")
}

/// The attribute kinds of a history's events, in order (`WorkflowExecutionStarted`, ...).
fn event_kinds(json: &Value) -> Vec<String> {
    json["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["attributes"].as_object()?.keys().next().cloned())
                .map(|k| k.trim_end_matches("EventAttributes").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Workflow type named by a history's first event.
fn workflow_type(json: &Value) -> Option<String> {
    let first = &json["events"][0]["attributes"];
    let attrs = first.as_object()?.values().next()?;
    attrs["workflow_type"]["name"].as_str().map(str::to_owned)
}

async fn replay(replayer: &WorkflowReplayer, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    match replay_once(replayer, bytes).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let at = break_point(replayer, bytes).await.unwrap_or_else(|| "event not located".to_owned());
            Err(anyhow::anyhow!("{name} no longer replays ({at}): {e}"))
        }
    }
}

async fn replay_once(replayer: &WorkflowReplayer, bytes: &[u8]) -> anyhow::Result<()> {
    // Bounded: a replay that never ends must fail with the history's name, not hang CI.
    tokio::time::timeout(
        Duration::from_secs(60),
        replayer.replay_workflow(WorkflowHistory::from_json(bytes)?),
    )
    .await
    .map_err(|_| anyhow::anyhow!("replay did not finish within 60 s"))??;
    Ok(())
}

/// Where a history stops replaying: the first event the code's commands no longer match, found
/// by replaying the history cut before each workflow task in turn (the shortest cut that fails
/// ends with the task whose recorded commands differ). Only run once a replay failed.
async fn break_point(replayer: &WorkflowReplayer, bytes: &[u8]) -> Option<String> {
    let history: Value = serde_json::from_slice(bytes).ok()?;
    let events = history["events"].as_array()?;
    let kind = |e: &Value| {
        e["attributes"].as_object()?.keys().next().map(|k| k.trim_end_matches("EventAttributes").to_owned())
    };
    for (end, _) in
        events.iter().enumerate().filter(|(_, e)| kind(e).as_deref() == Some("WorkflowTaskStarted"))
    {
        let mut cut = history.clone();
        cut["events"] = Value::Array(events[..=end].to_vec());
        if replay_once(replayer, &serde_json::to_vec(&cut).ok()?).await.is_ok() {
            continue;
        }
        // The commands of the task completed last before this cut.
        let completed =
            events[..end].iter().rposition(|e| kind(e).as_deref() == Some("WorkflowTaskCompleted"))?;
        let first = events.get(completed + 1)?;
        return Some(format!("at event {} ({})", first["event_id"], kind(first)?));
    }
    None
}

#[tokio::test]
async fn committed_histories_replay() -> anyhow::Result<()> {
    slipway_tests::init_logging();
    let replayer = replayer()?;
    // Earlier code's recordings (top level, frozen) and the current code's (`recorded/`):
    // long-lived runs started on an earlier release must go on running on this one.
    let mut files = Vec::new();
    for dir in [histories_dir(), recorded_dir()] {
        files.extend(std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()));
    }
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    let mut types = Vec::new();
    let mut continued = Vec::new();
    let mut failures = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path)?;
        let value: Value = serde_json::from_slice(&bytes).with_context(|| path.display().to_string())?;
        let kind = workflow_type(&value).with_context(|| format!("{}: no workflow type", path.display()))?;
        if event_kinds(&value).last().is_some_and(|k| k == "WorkflowExecutionContinuedAsNew") {
            continued.push(kind.clone());
        }
        types.push(kind.clone());
        let name = path.strip_prefix(histories_dir()).unwrap_or(path).display().to_string();
        // Every file is tried, so one run names every path a change breaks.
        if let Err(e) = replay(&replayer, &name, &bytes).await {
            failures.push(format!("{kind}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} committed histories no longer replay (see docs/testing.md, Replay corpus):\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    for required in [
        "Agent",
        "ProvisionAgent",
        "Subscription",
        "ClientStack",
        "StackRecord",
        "Job",
        "JobGate",
        "GitHubLinks",
    ] {
        assert!(types.iter().any(|t| t == required), "no committed history of {required}: {types:?}");
    }
    for required in ["Agent", "Subscription"] {
        assert!(continued.iter().any(|t| t == required), "no committed continue-as-new of {required}");
    }
    eprintln!("replayed {} committed histories", files.len());
    Ok(())
}

/// A code change that breaks a recorded history fails with the workflow type and the event the
/// replay broke at: here a saga whose first step became another activity (as a release that
/// changed the step without a patch would replay it).
#[tokio::test]
async fn a_history_the_code_no_longer_produces_is_named_by_type_and_event() -> anyhow::Result<()> {
    slipway_tests::init_logging();
    let replayer = replayer()?;
    let name = "provisioning-success-finds-run-protocol-1.json";
    let mut history: Value = serde_json::from_slice(&std::fs::read(recorded_dir().join(name))?)?;
    let kind = workflow_type(&history).context("workflow type")?;
    let event = history["events"]
        .as_array_mut()
        .and_then(|events| {
            events.iter_mut().find(|e| e["attributes"]["ActivityTaskScheduledEventAttributes"].is_object())
        })
        .context("an activity")?;
    let id = event["event_id"].as_i64().context("event id")?;
    event["attributes"]["ActivityTaskScheduledEventAttributes"]["activity_type"]["name"] =
        json!("ProvisioningActivities::renamed_step");
    let err = replay(&replayer, name, &serde_json::to_vec(&history)?).await.expect_err("must not replay");
    let message = format!("{kind}: {err}");
    eprintln!("{message}");
    assert!(message.starts_with("ProvisionAgent: provisioning-success"), "{message}");
    assert!(
        message.contains(&format!("(at event {id} (ActivityTaskScheduled))")),
        "names event {id}: {message}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Recording

/// Where `SLIPWAY_RECORD_HISTORIES` asks the histories to be written (`1`: `tests/histories`).
fn record_dir() -> Option<PathBuf> {
    match std::env::var("SLIPWAY_RECORD_HISTORIES") {
        Ok(v) if v == "1" => Some(recorded_dir()),
        Ok(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => None,
    }
}

/// Whether a history (as `to_json` writes it) is closed, or its last workflow-task event is a
/// completion (event types: 5 scheduled, 6 started, 7 completed, 8 timed out, 9 failed; closes:
/// 2 completed, 3 failed, 4 timed out, 21 canceled, 27 terminated, 28 continued as new).
fn between_workflow_tasks(history: &Value) -> bool {
    let kinds: Vec<i64> =
        history["events"].as_array().into_iter().flatten().filter_map(|e| e["event_type"].as_i64()).collect();
    let closed = kinds.last().is_some_and(|k| matches!(k, 2 | 3 | 4 | 21 | 27 | 28));
    closed || kinds.iter().rev().find(|k| matches!(k, 5..=9)).is_some_and(|k| *k == 7)
}

/// `{"events":[` one compact event per line `]}`.
fn one_event_per_line(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let value: Value = serde_json::from_slice(bytes)?;
    let obj = value.as_object().context("a history is an object")?;
    anyhow::ensure!(obj.len() == 1, "unexpected history fields: {:?}", obj.keys().collect::<Vec<_>>());
    let events = value["events"].as_array().context("events")?;
    let mut out = b"{\"events\":[\n".to_vec();
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        out.extend(serde_json::to_vec(e)?);
    }
    out.extend_from_slice(b"\n]}\n");
    Ok(out)
}

/// The histories one scenario produced.
struct Recorded {
    histories: Vec<(String, Vec<u8>)>,
}

impl Recorded {
    fn new() -> Self {
        Self { histories: Vec::new() }
    }

    /// Fetches a run's history (`run_id` `None`: the latest run) under `name`.
    async fn take(
        &mut self,
        app: &TestApp,
        name: &str,
        workflow_id: &str,
        run_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut info = WorkflowExecutionInfo::builder().namespace("default").workflow_id(workflow_id).build();
        info.run_id = run_id.map(str::to_owned);
        let handle = WorkflowHandle::<_, AgentWorkflow>::new(app.client.clone(), info);
        // A running workflow is recorded between workflow tasks. A history cut elsewhere is not
        // one a worker leaves behind, and the replayer waits forever on one with no completed
        // task: that is what a run that just continued as new looks like for up to a second
        // (the server delays its first task, `first_workflow_task_backoff`), and what stalled
        // this test before.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let json = loop {
            let json = handle.fetch_history(WorkflowFetchHistoryOptions::default()).to_json().await?;
            if between_workflow_tasks(&serde_json::from_slice(&json)?) {
                break json;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{workflow_id}: no completed workflow task to record after"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.histories.push((name.to_owned(), one_event_per_line(&json)?));
        Ok(())
    }

    /// Replays every history as it will be written, checks it holds no secret, and writes it
    /// when recording.
    async fn finish(self) -> anyhow::Result<()> {
        let replayer = replayer()?;
        let scanner = Scanner::default();
        let dir = record_dir();
        for (name, bytes) in &self.histories {
            // The history as Temporal holds it (payloads encrypted) replays with the keys...
            replay(&replayer, name, bytes).await?;
            // ... and, opened as the codec server opens it, carries no secret.
            let mut plain: Value = serde_json::from_slice(bytes)?;
            assert!(slipway_tests::decrypt_payloads(&mut plain)? > 0, "{name}: its payloads are encrypted");
            let first = &plain["events"][0];
            let decoded = slipway_tests::secret_scan::decoded_text(first);
            assert!(decoded.contains("{\""), "{name}: the input payload was decoded: {decoded}");
            let findings = scanner.scan_history(Path::new(name), &serde_json::to_vec(&plain)?)?;
            assert!(findings.is_empty(), "{name} holds secrets: {findings:#?}");
            if let Some(dir) = &dir {
                std::fs::create_dir_all(dir)?;
                std::fs::write(dir.join(format!("{name}.json")), bytes)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the scenarios

async fn clear_faults(app: &TestApp) -> anyhow::Result<()> {
    app.http.delete(format!("{}/_sandbox/faults", app.sandbox.base_url)).send().await?.error_for_status()?;
    Ok(())
}

/// Pays for `agent` through Checkout (a signed webhook) and waits until it settles.
async fn checkout(app: &TestApp, user: &str, agent: &str) -> anyhow::Result<AgentRecord> {
    let (event, _) = app.checkout_event(user, agent, "fsn1");
    let resp = app.post_stripe(&event).await?;
    anyhow::ensure!(resp.status() == 200, "checkout for {agent}: {}", resp.text().await?);
    app.wait_for_status(agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await
}

/// The saga run that provisioned (or failed to provision) an agent.
async fn take_saga(rec: &mut Recorded, app: &TestApp, name: &str, agent: &AgentRecord) -> anyhow::Result<()> {
    let id = agent.provisioning_workflow_id.as_deref().context("no saga")?;
    rec.take(app, name, id, agent.provisioning_run_id.as_deref()).await
}

async fn create_agent(app: &TestApp, token: &str, name: &str) -> anyhow::Result<String> {
    let (code, body) = app
        .api(Method::POST, "/api/agents", Some(token), Some(json!({"name": name, "region": "fsn1"})))
        .await?;
    anyhow::ensure!(code == 201, "create agent: {code} {body}");
    Ok(body["agent_id"].as_str().context("agent_id")?.to_owned())
}

/// `POST /api/agents/{agent}/{op}`; returns the status and the error code (if any).
async fn agent_op(
    app: &TestApp,
    token: &str,
    agent: &str,
    op: &str,
) -> anyhow::Result<(u16, Option<String>)> {
    let (code, body) = app.api(Method::POST, &format!("/api/agents/{agent}/{op}"), Some(token), None).await?;
    Ok((code, body["code"].as_str().map(str::to_owned)))
}

/// Runs `op` on `agent`, expects 202 and waits for `status`.
async fn lifecycle(
    app: &TestApp,
    token: &str,
    agent: &str,
    op: &str,
    status: AgentStatus,
) -> anyhow::Result<AgentRecord> {
    let (code, err) = agent_op(app, token, agent, op).await?;
    anyhow::ensure!(code == 202, "{op} {agent}: {code} {err:?}");
    app.wait_for_status(agent, &[status], WAIT).await
}

async fn wait_applied(app: &TestApp, customer: &str, n: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let applied = app.billing_state(customer).await.map(|s| s.applied.len()).unwrap_or(0);
        if applied >= n {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{customer}: {applied} of {n} events applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post_event(app: &TestApp, e: &Value) -> anyhow::Result<()> {
    let resp = app.post_stripe(&e.to_string()).await?;
    anyhow::ensure!(resp.status() == 200, "{}: {}", e["type"], resp.text().await?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ProvisionAgent and Agent: the saga's paths

#[tokio::test]
async fn live_provisioning_paths() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let mut rec = Recorded::new();

    // Success; then a second (distinct) paid event for the same agent: it changes nothing.
    let ok = checkout(&app, &app.id("okuser"), &app.id("okagent")).await?;
    assert_eq!(ok.status, AgentStatus::Active, "{ok:#?}");
    let (late, _) = app.checkout_event(&ok.user_id, &ok.agent_id, "fsn1");
    assert_eq!(app.post_stripe(&late).await?.status(), 200);
    let ok_workflow = agent_workflow_id(&ok.agent_id);
    slipway_tests::wait_until("the agent heard the late checkout", WAIT, || async {
        Ok(app.runs(&ok_workflow).await?.settled)
    })
    .await?;
    rec.take(&app, "agent-active-checkout-signal-protocol-1", &agent_workflow_id(&ok.agent_id), None).await?;
    take_saga(&mut rec, &app, "provisioning-success-finds-run-protocol-1", &ok).await?;

    // One provisioning per user: a second paid agent while the first is still provisioning
    // waits (the saga's workflow id is taken), then provisions once the first is done.
    app.fault(json!({"method": "POST", "path": "/hetzner/v1/servers", "latency_ms": 2500, "count": 1}))
        .await?;
    let busy_user = app.id("busyuser");
    let (first, second) = (app.id("busyfirst"), app.id("busysecond"));
    let (event, _) = app.checkout_event(&busy_user, &first, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    app.wait_for_status(&first, &[AgentStatus::Provisioning], WAIT).await?;
    let (event, _) = app.checkout_event(&busy_user, &second, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    app.wait_for_checkout_refusal(&second, "PROVISIONING_IN_PROGRESS").await?;
    let done = app.wait_for_status(&first, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(done.status, AgentStatus::Active, "{done:#?}");
    let waited = app.wait_for_status(&second, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(waited.status, AgentStatus::Active, "{waited:#?}");
    rec.take(
        &app,
        "agent-checkout-waited-for-provisioning-in-progress-protocol-1-handoff",
        &agent_workflow_id(&second),
        None,
    )
    .await?;
    clear_faults(&app).await?;

    // Each step failing, and a compensation failing: (history, faults, runner, reason).
    let dispatch =
        json!({"method": "POST", "path": "/github/repos/*/*/actions/workflows/*/dispatches", "status": 422});
    let paths: [(&str, Vec<Value>, &str, &str); 7] = [
        (
            "tailscale-key",
            vec![json!({"method": "POST", "path": "/tailscale/api/v2/tailnet/*/keys", "status": 403})],
            "succeed",
            "tailscale_key",
        ),
        (
            "hetzner-server",
            vec![json!({"method": "POST", "path": "/hetzner/v1/servers", "status": 422})],
            "succeed",
            "hetzner_server",
        ),
        (
            "server-ready",
            vec![json!({"method": "GET", "path": "/hetzner/v1/actions/*", "status": 403})],
            "succeed",
            "server_ready",
        ),
        ("actions-dispatch", vec![dispatch.clone()], "succeed", "actions_dispatch"),
        ("actions-job", vec![], "fail", "bootstrap script exited with 1"),
        (
            "tailscale-device",
            vec![
                json!({"method": "GET", "path": "/tailscale/api/v2/tailnet/*/devices", "status": 403, "count": 1}),
            ],
            "succeed",
            "tailscale_device",
        ),
        (
            "compensation",
            vec![dispatch, json!({"method": "DELETE", "path": "/hetzner/v1/servers/*", "status": 403})],
            "succeed",
            "rollback incomplete",
        ),
    ];
    for (name, faults, runner, reason) in paths {
        for f in faults {
            app.fault(f).await?;
        }
        app.runner(runner).await?;
        let agent = checkout(&app, &app.id(&format!("u{name}")), &app.id(&format!("a{name}"))).await?;
        let why = agent.failure_reason.clone().unwrap_or_default();
        assert_eq!(agent.status, AgentStatus::Failed, "{name}: {agent:#?}");
        assert!(why.contains(reason), "{name}: {why}");
        let history = if name == "compensation" {
            "provisioning-rollback-incomplete-finds-run-protocol-1".to_owned()
        } else {
            format!("provisioning-fail-{name}-finds-run-protocol-1")
        };
        take_saga(&mut rec, &app, &history, &agent).await?;
        if name == "actions-dispatch" {
            rec.take(
                &app,
                "agent-failed-checkout-signal-protocol-1",
                &agent_workflow_id(&agent.agent_id),
                None,
            )
            .await?;
        }
        clear_faults(&app).await?;
    }
    app.runner("succeed").await?;
    rec.finish().await
}

#[tokio::test]
async fn live_deadline_and_grace_period() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options {
        // Long enough for a healthy saga on a loaded machine, short enough to wait out.
        policy: ProvisioningPolicy { callback_deadline_secs: 8, dispatch_deadline_secs: 60 },
        // Longer than a suspension takes (a graceful stop), so `suspended` is seen first.
        grace_period_secs: 6,
        ..Options::default()
    })
    .await?;
    let mut rec = Recorded::new();

    // An unpaid invoice past the grace period: the timer fires and the agent is destroyed.
    let (user, agent) = (app.id("graceuser"), app.id("graceagent"));
    let paid = app.subscribe(&user, Some((&agent, "fsn1"))).await?;
    let customer = paid["customer_id"].as_str().context("customer")?.to_owned();
    let active = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(active.status, AgentStatus::Active, "{active:#?}");
    let sub = paid["subscription_id"].as_str().context("subscription")?;
    app.sandbox_post(&format!("/_sandbox/stripe/subscriptions/{sub}/payment_failed"), json!({})).await?;
    app.wait_for_status(&agent, &[AgentStatus::Suspended], WAIT).await?;
    let gone = app.wait_for_status(&agent, &[AgentStatus::Destroyed], WAIT).await?;
    assert!(gone.audit.last().is_some_and(|a| a.reason.contains("grace period")), "{gone:#?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !app.billing_state(&customer).await?.subscriptions.values().any(|s| s.lapsed) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "grace period not recorded as expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rec.take(
        &app,
        "subscription-grace-period-expired-desired-state-protocol-1-handoff",
        &customer_workflow_id(&customer),
        None,
    )
    .await?;
    rec.take(&app, "agent-destroyed-by-billing-checkout-signal-protocol-1", &agent_workflow_id(&agent), None)
        .await?;

    // The Actions job never calls back: the deadline timer fires and the saga rolls back.
    app.runner("silent").await?;
    let late = checkout(&app, &app.id("silentuser"), &app.id("silentagent")).await?;
    assert_eq!(late.status, AgentStatus::Failed, "{late:#?}");
    assert!(late.failure_reason.as_deref().unwrap_or_default().contains("no final callback"), "{late:#?}");
    take_saga(&mut rec, &app, "provisioning-fail-callback-deadline-finds-run-protocol-1", &late).await?;
    app.runner("succeed").await?;
    rec.finish().await
}

// ---------------------------------------------------------------------------------------------
// Agent: every command, in every state that changes what it does

#[tokio::test]
async fn live_agent_lifecycle() -> anyhow::Result<()> {
    use AgentStatus as S;
    let app = TestApp::spawn().await?;
    let mut rec = Recorded::new();
    let user = app.id("lifeuser");
    let token = app.token(&user, None);
    let paid = app.subscribe(&user, None).await?;
    let customer = paid["customer_id"].as_str().context("customer")?.to_owned();
    let sub = paid["subscription_id"].as_str().context("subscription")?;
    // Two seats, one per agent.
    app.set_seats(&customer, sub, 2).await?;
    let (a, b) = (create_agent(&app, &token, "first").await?, create_agent(&app, &token, "second").await?);

    // A: provision, refusals of each wrong state, stop and start.
    lifecycle(&app, &token, &a, "provision", S::Active).await?;
    assert_eq!(agent_op(&app, &token, &a, "provision").await?, (409, Some("AGENT_ALREADY_ACTIVE".into())));
    assert_eq!(agent_op(&app, &token, &a, "start").await?, (409, Some("AGENT_NOT_STOPPED".into())));
    lifecycle(&app, &token, &a, "stop", S::Stopped).await?;
    assert_eq!(agent_op(&app, &token, &a, "stop").await?, (409, Some("AGENT_NOT_RUNNING".into())));
    lifecycle(&app, &token, &a, "start", S::Active).await?;

    // B: provisioned, then stopped.
    lifecycle(&app, &token, &b, "provision", S::Active).await?;
    lifecycle(&app, &token, &b, "stop", S::Stopped).await?;

    // A failed renewal suspends both: A is powered off, B (already off) only changes state.
    let failed =
        app.sandbox_post(&format!("/_sandbox/stripe/subscriptions/{sub}/payment_failed"), json!({})).await?;
    for agent in [&a, &b] {
        app.wait_for_status(agent, &[S::Suspended], WAIT).await?;
    }
    assert_eq!(agent_op(&app, &token, &a, "start").await?, (409, Some("AGENT_SUSPENDED".into())));
    assert_eq!(agent_op(&app, &token, &b, "stop").await?, (409, Some("AGENT_NOT_RUNNING".into())));

    // Paying resumes each to where it was: A running again, B still stopped.
    let invoice = failed["invoice_id"].as_str().context("invoice")?;
    app.sandbox_post(&format!("/_sandbox/stripe/invoices/{invoice}/pay"), json!({})).await?;
    app.wait_for_status(&a, &[S::Active], WAIT).await?;
    let b_back = app.wait_for_status(&b, &[S::Stopped], WAIT).await?;
    assert!(b_back.audit.last().is_some_and(|e| e.from == S::Suspended), "{b_back:#?}");

    // Destroy A. Destroy B while Hetzner refuses: it fails and stays destroyable; again: done.
    lifecycle(&app, &token, &a, "destroy", S::Destroyed).await?;
    app.fault(json!({"method": "DELETE", "path": "/hetzner/v1/servers/*", "status": 403})).await?;
    let broken = lifecycle(&app, &token, &b, "destroy", S::Failed).await?;
    assert!(broken.failure_reason.as_deref().unwrap_or_default().contains("destroy incomplete"));
    clear_faults(&app).await?;
    lifecycle(&app, &token, &b, "destroy", S::Destroyed).await?;

    // Checkout, subscription created, invoice paid, two seats, payment failed, past due, paid,
    // active.
    wait_applied(&app, &customer, 8).await?;
    rec.take(&app, "agent-lifecycle-desired-state-protocol-1", &agent_workflow_id(&a), None).await?;
    rec.take(
        &app,
        "agent-suspended-while-stopped-destroy-retried-desired-state-protocol-1",
        &agent_workflow_id(&b),
        None,
    )
    .await?;
    rec.take(
        &app,
        "subscription-suspend-resume-desired-state-protocol-1-handoff",
        &customer_workflow_id(&customer),
        None,
    )
    .await?;
    rec.finish().await
}

// ---------------------------------------------------------------------------------------------
// Subscription: event orderings

/// One customer's billing story, in the order Stripe created it: subscribed, paid, a renewal
/// fails, past due, then `end` (`paid`: paid late; `deleted`: cancelled).
fn story(customer: &str, tag: &str, end: &str) -> Vec<Value> {
    let sub = format!("sub_{tag}");
    let id = |k: &str| Some(format!("evt_{tag}_{k}"));
    let t = 1_800_000_000;
    let last = match end {
        "deleted" => event(
            "customer.subscription.deleted",
            subscription_object(&sub, customer, "canceled", t + 30),
            t + 30,
            id("e"),
        ),
        _ => event(
            "invoice.paid",
            invoice_object(&format!("in_{tag}_2"), customer, &sub, "paid", t + 20),
            t + 20,
            id("e"),
        ),
    };
    vec![
        event("customer.subscription.created", subscription_object(&sub, customer, "active", t), t, id("a")),
        event(
            "invoice.paid",
            invoice_object(&format!("in_{tag}_1"), customer, &sub, "paid", t + 1),
            t + 1,
            id("b"),
        ),
        event(
            "invoice.payment_failed",
            invoice_object(&format!("in_{tag}_2"), customer, &sub, "open", t + 10),
            t + 10,
            id("c"),
        ),
        event(
            "customer.subscription.updated",
            subscription_object(&sub, customer, "past_due", t + 11),
            t + 11,
            id("d"),
        ),
        last,
    ]
}

#[tokio::test]
async fn live_subscription_orderings() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let mut rec = Recorded::new();
    let tag = |k: &str| format!("{k}{}", app.unique);

    // In order, each applied before the next is sent.
    let customer = format!("cus_{}", tag("inorder"));
    for (n, e) in story(&customer, &tag("o"), "paid").iter().enumerate() {
        post_event(&app, e).await?;
        wait_applied(&app, &customer, n + 1).await?;
    }
    rec.take(&app, "subscription-in-order-desired-state-protocol-1", &customer_workflow_id(&customer), None)
        .await?;

    // Newest first, with duplicates (Stripe retries): the same outcome.
    let shuffled = format!("cus_{}", tag("shuffled"));
    let events = story(&shuffled, &tag("s"), "paid");
    for i in [4, 3, 4, 1, 2, 0, 3, 1] {
        post_event(&app, &events[i]).await?;
    }
    wait_applied(&app, &shuffled, 5).await?;
    let (a, b) = (app.billing_state(&customer).await?, app.billing_state(&shuffled).await?);
    assert_eq!(
        (a.entitled(), a.subscriptions.values().map(|s| s.status.clone()).collect::<Vec<_>>()),
        (b.entitled(), b.subscriptions.values().map(|s| s.status.clone()).collect::<Vec<_>>()),
        "delivery order changed the outcome"
    );
    rec.take(
        &app,
        "subscription-reversed-duplicated-desired-state-protocol-1-handoff",
        &customer_workflow_id(&shuffled),
        None,
    )
    .await?;

    // Cancelled: deletion is terminal.
    let deleted = format!("cus_{}", tag("deleted"));
    for (n, e) in story(&deleted, &tag("d"), "deleted").iter().enumerate() {
        post_event(&app, e).await?;
        wait_applied(&app, &deleted, n + 1).await?;
    }
    assert!(
        app.billing_state(&deleted).await?.subscriptions.values().all(|s| s.ended),
        "deletion ends the subscription"
    );
    rec.take(&app, "subscription-deleted-desired-state-protocol-1", &customer_workflow_id(&deleted), None)
        .await?;

    // Two updates with the same `created` that disagree: the workflow asks Stripe.
    let user = app.id("tieuser");
    let paid = app.subscribe(&user, None).await?;
    let real = paid["customer_id"].as_str().context("customer")?.to_owned();
    let sub = paid["subscription_id"].as_str().context("subscription")?;
    let before = app.billing_state(&real).await?.applied.len();
    let t = slipway_tests::now() + 3600;
    for (k, status) in [("x", "past_due"), ("y", "active")] {
        let e = event(
            "customer.subscription.updated",
            subscription_object(sub, &real, status, t),
            t,
            Some(format!("evt_{}_{k}", tag("tie"))),
        );
        post_event(&app, &e).await?;
        wait_applied(&app, &real, before + if k == "x" { 1 } else { 2 }).await?;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = app.billing_state(&real).await?;
        if s.subscriptions.values().any(|x| x.status == "active" && x.as_of == t) {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no re-fetch: {s:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rec.take(
        &app,
        "subscription-refetch-on-tie-desired-state-protocol-1",
        &customer_workflow_id(&real),
        None,
    )
    .await?;
    rec.finish().await
}

// ---------------------------------------------------------------------------------------------
// Seats: several subscriptions of one customer, claims granted, parked and denied

/// A checkout of `agent` naming subscription `sub` of `customer`, as Stripe delivers it.
fn checkout_for(app: &TestApp, user: &str, agent: &str, customer: &str, sub: &str) -> anyhow::Result<Value> {
    let mut checkout: Value = serde_json::from_str(&app.checkout_event(user, agent, "fsn1").0)?;
    checkout["data"]["object"]["customer"] = json!(customer);
    checkout["data"]["object"]["subscription"] = json!(sub);
    Ok(checkout)
}

#[tokio::test]
async fn live_seats() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let mut rec = Recorded::new();
    let tag = |k: &str| format!("{k}{}", app.unique);
    let user = app.id("seatuser");
    let customer = format!("cus_{}", tag("seats"));
    let (sub_a, sub_b, sub_c) =
        (format!("sub_{}", tag("a")), format!("sub_{}", tag("b")), format!("sub_{}", tag("c")));
    let (parked, granted, late) = (app.id("parked"), app.id("granted"), app.id("late"));
    let t = slipway_tests::now();
    let sub_event = |kind: &str, sub: &str, status: &str, at: i64| {
        event(kind, subscription_object(sub, &customer, status, at), at, None)
    };

    // Subscription A's renewal failed before its checkout was processed: the claim is parked,
    // and paying the invoice provisions the agent.
    post_event(&app, &sub_event("customer.subscription.created", &sub_a, "active", t)).await?;
    let invoice = format!("in_{}", tag("a1"));
    post_event(
        &app,
        &event(
            "invoice.payment_failed",
            invoice_object(&invoice, &customer, &sub_a, "open", t + 1),
            t + 1,
            None,
        ),
    )
    .await?;
    wait_applied(&app, &customer, 2).await?;
    let resp = app.post_stripe(&checkout_for(&app, &user, &parked, &customer, &sub_a)?.to_string()).await?;
    assert_eq!(resp.status(), 200);
    let record = slipway_tests::wait_for("the parked agent awaits payment", WAIT, || async {
        Ok(app.agent(&parked).await?.filter(|r| r.awaiting_payment.is_some()))
    })
    .await?;
    assert_eq!(
        (record.status, record.awaiting_payment.as_deref()),
        (AgentStatus::Draft, Some(sub_a.as_str()))
    );
    post_event(
        &app,
        &event("invoice.paid", invoice_object(&invoice, &customer, &sub_a, "paid", t + 2), t + 2, None),
    )
    .await?;
    let record = app.wait_for_status(&parked, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");

    // Subscription B, in good standing: granted at once.
    post_event(&app, &sub_event("customer.subscription.created", &sub_b, "active", t + 3)).await?;
    let resp = app.post_stripe(&checkout_for(&app, &user, &granted, &customer, &sub_b)?.to_string()).await?;
    assert_eq!(resp.status(), 200);
    app.wait_for_status(&granted, &[AgentStatus::Active], WAIT).await?;

    // Subscription C was deleted before its checkout was processed: denied, nothing created.
    post_event(&app, &sub_event("customer.subscription.created", &sub_c, "active", t + 4)).await?;
    post_event(&app, &sub_event("customer.subscription.deleted", &sub_c, "canceled", t + 5)).await?;
    wait_applied(&app, &customer, 8).await?;
    let resp = app.post_stripe(&checkout_for(&app, &user, &late, &customer, &sub_c)?.to_string()).await?;
    assert_eq!(resp.status(), 200);
    app.wait_for_checkout_refusal(&late, "SUBSCRIPTION_ENDED").await?;

    // Deleting A destroys A's agent only; B's keeps running.
    post_event(&app, &sub_event("customer.subscription.deleted", &sub_a, "canceled", t + 6)).await?;
    app.wait_for_status(&parked, &[AgentStatus::Destroyed], WAIT).await?;
    assert_eq!(app.agent(&granted).await?.map(|a| a.status), Some(AgentStatus::Active));
    // The destroyed agent's seat was released.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.billing_state(&customer).await?.subscriptions[&sub_a].agents.contains_key(&parked) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "seat never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.sandbox_state().await?["hetzner"]["servers"].as_array().map_or(0, Vec::len), 1);

    rec.take(
        &app,
        "subscription-seats-parked-granted-denied-desired-state-protocol-1-handoff",
        &customer_workflow_id(&customer),
        None,
    )
    .await?;
    rec.take(
        &app,
        "agent-seat-parked-then-granted-destroyed-checkout-signal-protocol-1",
        &agent_workflow_id(&parked),
        None,
    )
    .await?;
    rec.take(&app, "agent-seat-granted-checkout-signal-protocol-1", &agent_workflow_id(&granted), None)
        .await?;
    rec.take(
        &app,
        "agent-seat-denied-subscription-ended-checkout-signal-protocol-1",
        &agent_workflow_id(&late),
        None,
    )
    .await?;
    rec.finish().await
}

// ---------------------------------------------------------------------------------------------
// A customer of the previous release moving to per-subscription billing

/// Every run of a workflow, oldest first (visibility lists closed runs too).
async fn run_ids(app: &TestApp, workflow_id: &str) -> anyhow::Result<Vec<String>> {
    use futures::StreamExt;
    let query = format!("WorkflowId = '{workflow_id}'");
    let mut stream =
        app.client.list_workflows(query, temporalio_client::WorkflowListOptions::builder().limit(20).build());
    let mut runs = Vec::new();
    while let Some(exec) = stream.next().await {
        let exec = exec?;
        runs.push((exec.start_time(), exec.run_id().to_owned()));
    }
    runs.sort();
    Ok(runs.into_iter().map(|(_, id)| id).collect())
}

#[tokio::test]
async fn live_legacy_customer_upgrade() -> anyhow::Result<()> {
    use slipway_workflows::{SubscriptionWorkflow, subscription::PER_SUBSCRIPTION_PATCH};
    // The worker holds per-subscription billing back, as the previous release did.
    let gate = slipway_tests::PatchGate::default();
    gate.hold(&[PER_SUBSCRIPTION_PATCH]);
    let app = TestApp::spawn_with(Options { held_patches: Some(gate.clone()), ..Options::default() }).await?;
    let mut rec = Recorded::new();
    let (user, agent) = (app.id("legacyuser"), app.id("legacyagent"));

    // The agent's seat claim reaches a legacy run: it tries to move (continue as new), is held
    // back, and answers the claim with the old rules. The agent is provisioned.
    let paid = app.subscribe(&user, Some((&agent, "fsn1"))).await?;
    let customer = paid["customer_id"].as_str().context("customer")?.to_owned();
    let record = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");

    // Old rules still apply: a failed renewal suspends.
    let sub = paid["subscription_id"].as_str().context("subscription")?;
    let failed =
        app.sandbox_post(&format!("/_sandbox/stripe/subscriptions/{sub}/payment_failed"), json!({})).await?;
    app.wait_for_status(&agent, &[AgentStatus::Suspended], WAIT).await?;

    // The new release is out: an operator moves the customer.
    gate.release();
    let workflow = customer_workflow_id(&customer);
    let legacy_runs = run_ids(&app, &workflow).await?;
    assert_eq!(legacy_runs.len(), 2, "the first run moved once and was held back: {legacy_runs:?}");
    app.client
        .get_workflow_handle::<SubscriptionWorkflow>(workflow.clone())
        .signal(SubscriptionWorkflow::upgrade, (), temporalio_client::WorkflowSignalOptions::default())
        .await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while run_ids(&app, &workflow).await?.len() < 3 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the upgrade never continued as new");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Migrated: one subscription holding the agent's seat, suspended by its unpaid invoice.
    let billing = app.billing_state(&customer).await?;
    assert_eq!(billing.seat_of(&agent), Some(sub), "{billing:#?}");
    assert_eq!(billing.subscriptions[sub].standing(), slipway_proto::billing::Standing::Suspended);
    // And the new rules apply from there: paying resumes the agent.
    let invoice = failed["invoice_id"].as_str().context("invoice")?;
    app.sandbox_post(&format!("/_sandbox/stripe/invoices/{invoice}/pay"), json!({})).await?;
    app.wait_for_status(&agent, &[AgentStatus::Active], WAIT).await?;
    assert!(app.billing_state(&customer).await?.entitled());

    rec.take(&app, "subscription-legacy-claim-held-back-desired-state", &workflow, Some(&legacy_runs[0]))
        .await?;
    rec.take(
        &app,
        "subscription-legacy-answers-claims-then-upgraded-desired-state",
        &workflow,
        Some(&legacy_runs[1]),
    )
    .await?;
    rec.take(&app, "subscription-upgraded-from-legacy-desired-state", &workflow, None).await?;
    rec.finish().await
}

// ---------------------------------------------------------------------------------------------
// Billing as desired state, and a customer of the previous release moving to it

#[tokio::test]
async fn live_billing_desired_state() -> anyhow::Result<()> {
    use slipway_workflows::subscription::DESIRED_STATE_PATCH;
    // The worker first holds desired-state billing back, as the previous release did.
    let gate = slipway_tests::PatchGate::default();
    gate.hold(&[DESIRED_STATE_PATCH]);
    let app = TestApp::spawn_with(Options {
        held_patches: Some(gate.clone()),
        command_attempts: 2,
        ..Options::default()
    })
    .await?;
    let mut rec = Recorded::new();
    let user = app.id("desireduser");
    let token = app.token(&user, None);
    let first = app.id("first");

    // A customer on the previous rules, one agent, then two seats and a second agent.
    let paid = app.subscribe(&user, Some((&first, "fsn1"))).await?;
    let (customer, sub) = (
        paid["customer_id"].as_str().context("customer")?.to_owned(),
        paid["subscription_id"].as_str().context("subscription")?.to_owned(),
    );
    app.wait_for_status(&first, &[AgentStatus::Active], WAIT).await?;
    app.set_seats(&customer, &sub, 2).await?;
    let second = create_agent(&app, &token, "second").await?;
    lifecycle(&app, &token, &second, "provision", AgentStatus::Active).await?;
    // Every later event is built here with the subscription's quantity, as Stripe would send it.
    let sub_event = |kind: &str, status: &str, seats: u32, at: i64| {
        let mut object = subscription_object(&sub, &customer, status, at);
        object["items"]["data"][0]["quantity"] = json!(seats);
        event(kind, object, at, None)
    };
    let invoice = format!("in_{}desired", app.unique);
    let t = slipway_tests::now() + 2;
    post_event(
        &app,
        &event("invoice.payment_failed", invoice_object(&invoice, &customer, &sub, "open", t), t, None),
    )
    .await?;
    app.wait_for_status(&first, &[AgentStatus::Suspended], WAIT).await?;
    app.wait_for_status(&second, &[AgentStatus::Suspended], WAIT).await?;

    // The new release is out; the merchant voids the failed invoice: an event the previous
    // rules never received moves the run to the current rules, which apply it. Hetzner fails to
    // power the second agent on beyond its command's retry budget: it tries again later.
    gate.release();
    let workflow = customer_workflow_id(&customer);
    let v2_runs = run_ids(&app, &workflow).await?;
    let server = app.agent(&second).await?.and_then(|a| a.server).context("second's server")?.id;
    app.fault(json!({"method": "POST", "path": format!("/hetzner/v1/servers/{server}/actions/poweron"), "status": 503, "count": 3}))
        .await?;
    post_event(
        &app,
        &event("invoice.voided", invoice_object(&invoice, &customer, &sub, "void", t + 1), t + 1, None),
    )
    .await?;
    app.wait_for_status(&first, &[AgentStatus::Active], WAIT).await?;
    app.wait_for_status(&second, &[AgentStatus::Active], Duration::from_secs(120)).await?;
    anyhow::ensure!(run_ids(&app, &workflow).await?.len() > v2_runs.len(), "the run never moved");

    // Quantity 2 → 1 powers the newest agent off; a pause powers the other off too; resuming
    // and paying the seat again brings both back.
    // (Seats carried over from the previous rules are ordered by agent id: either may go.)
    let t = slipway_tests::now() + 3;
    post_event(&app, &sub_event("customer.subscription.updated", "active", 1, t)).await?;
    let (on, off) = slipway_tests::wait_for("the downgrade powering one agent off", WAIT, || async {
        let status = |a: Option<AgentRecord>| a.map(|a| a.status);
        let (a, b) = (status(app.agent(&first).await?), status(app.agent(&second).await?));
        Ok(match (a, b) {
            (Some(AgentStatus::Active), Some(AgentStatus::Suspended)) => {
                Some((first.clone(), second.clone()))
            }
            (Some(AgentStatus::Suspended), Some(AgentStatus::Active)) => {
                Some((second.clone(), first.clone()))
            }
            _ => None,
        })
    })
    .await?;
    post_event(&app, &sub_event("customer.subscription.paused", "paused", 1, t + 1)).await?;
    app.wait_for_status(&on, &[AgentStatus::Suspended], WAIT).await?;
    post_event(&app, &sub_event("customer.subscription.resumed", "active", 1, t + 2)).await?;
    app.wait_for_status(&on, &[AgentStatus::Active], WAIT).await?;
    assert_eq!(app.agent(&off).await?.map(|a| a.status), Some(AgentStatus::Suspended));
    post_event(&app, &sub_event("customer.subscription.updated", "active", 2, t + 3)).await?;
    app.wait_for_status(&off, &[AgentStatus::Active], WAIT).await?;

    // A draft with an open checkout is destroyed: its session is expired at Stripe.
    let draft = app.id("draft");
    let (status, body) = app
        .api(
            Method::POST,
            "/api/billing/checkout",
            Some(&token),
            Some(json!({"agentId": draft, "region": "fsn1"})),
        )
        .await?;
    anyhow::ensure!(status == 201, "checkout: {status} {body}");
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{draft}/destroy"), Some(&token), None).await?;
    anyhow::ensure!(status == 202, "destroy: {status} {body}");
    app.wait_for_status(&draft, &[AgentStatus::Destroyed], WAIT).await?;
    // A checkout for it paid anyway: the seat is the customer's next agent's (a probe finds the
    // draft gone). Stripe deletes the customer at the end: every agent is destroyed.
    let late = format!("sub_{}late", app.unique);
    let t = slipway_tests::now() + 7;
    post_event(
        &app,
        &event("customer.subscription.created", subscription_object(&late, &customer, "active", t), t, None),
    )
    .await?;
    post_event(&app, &checkout_for(&app, &user, &draft, &customer, &late)?).await?;
    let third = create_agent(&app, &token, "third").await?;
    lifecycle(&app, &token, &third, "provision", AgentStatus::Active).await?;

    let billing = app.billing_state(&customer).await?;
    anyhow::ensure!(billing.seat_of(&third) == Some(late.as_str()), "{billing:#?}");
    let deleted = json!({"id": customer, "object": "customer", "deleted": true});
    post_event(&app, &event("customer.deleted", deleted, slipway_tests::now() + 8, None)).await?;
    for agent in [&first, &second, &third] {
        app.wait_for_status(agent, &[AgentStatus::Destroyed], WAIT).await?;
    }

    let runs = run_ids(&app, &workflow).await?;
    rec.take(
        &app,
        "subscription-per-subscription-moved-by-new-event",
        &workflow,
        Some(&v2_runs[v2_runs.len() - 1]),
    )
    .await?;
    rec.take(&app, "subscription-desired-state", &workflow, Some(&runs[runs.len() - 1])).await?;
    rec.take(&app, "agent-billing-retried-then-destroyed", &agent_workflow_id(&second), None).await?;
    rec.take(&app, "agent-billing-resumed-then-destroyed-checkout-signal", &agent_workflow_id(&first), None)
        .await?;
    rec.take(
        &app,
        "agent-draft-destroyed-checkout-expired-checkout-signal",
        &agent_workflow_id(&draft),
        None,
    )
    .await?;
    rec.finish().await
}

// ---------------------------------------------------------------------------------------------
// ClientStack: success, each activity failing, a compensation failing

async fn stack(app: &TestApp, client: &str) -> anyhow::Result<Value> {
    let body =
        json!({"clientId": client, "clientName": "Replay", "orgEmail": "ops@example.com", "tier": "starter"});
    Ok(app.settled_stack(body).await?.1)
}

#[tokio::test]
async fn live_client_stack_paths() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let mut rec = Recorded::new();
    let n8n_create = json!({"method": "POST", "path": "/n8n/api/v1/workflows", "status": 400});
    // (history, faults, expected state, failed step)
    let paths: [(&str, Vec<Value>, &str, &str); 9] = [
        ("client-stack-success-recorded", vec![], "ready", ""),
        (
            "client-stack-fail-supabase-create",
            vec![json!({"method": "POST", "path": "/supabase/v1/projects", "status": 403})],
            "rolled_back",
            "supabase_project",
        ),
        (
            "client-stack-fail-supabase-health",
            vec![json!({"method": "GET", "path": "/supabase/v1/projects/*/health", "status": 403})],
            "rolled_back",
            "supabase_project",
        ),
        (
            "client-stack-fail-schema",
            vec![json!({"method": "POST", "path": "/supabase/v1/projects/*/database/query", "status": 400})],
            "rolled_back",
            "schema",
        ),
        (
            "client-stack-fail-github",
            vec![json!({"method": "POST", "path": "/github/repos/*/*/generate", "status": 403})],
            "rolled_back",
            "github_repository",
        ),
        (
            "client-stack-fail-vercel-project",
            vec![json!({"method": "POST", "path": "/vercel/v11/projects", "status": 400})],
            "rolled_back",
            "vercel",
        ),
        (
            "client-stack-fail-vercel-deploy",
            vec![json!({"method": "POST", "path": "/vercel/v13/deployments", "status": 400})],
            "rolled_back",
            "vercel",
        ),
        ("client-stack-fail-n8n", vec![n8n_create.clone()], "rolled_back", "n8n_workflow"),
        (
            "client-stack-rollback-incomplete",
            vec![n8n_create, json!({"method": "DELETE", "path": "/github/repos/*/*", "status": 403})],
            "needs_attention",
            "n8n_workflow",
        ),
    ];
    for (i, (name, faults, state, step)) in paths.into_iter().enumerate() {
        for f in faults {
            app.fault(f).await?;
        }
        let client = app.id(&format!("stack{i}"));
        let status = stack(&app, &client).await?;
        assert_eq!(status["state"], state, "{name}: {status:#}");
        assert!(status["failure"].as_str().unwrap_or_default().starts_with(step), "{name}: {status:#}");
        rec.take(&app, name, &format!("client-stack-{client}"), None).await?;
        if state == "ready" {
            rec.take(&app, "stack-record", &format!("stack-record-{client}"), None).await?;
        }
        clear_faults(&app).await?;
    }
    rec.finish().await
}

// ---------------------------------------------------------------------------------------------
// Job, JobGate, GitHubLinks

async fn deliver(app: &TestApp, event: &str, payload: Value, delivery: &str) -> anyhow::Result<()> {
    app.sandbox_post(
        "/_sandbox/github/webhooks",
        json!({"event": event, "payload": payload, "delivery_id": delivery}),
    )
    .await?;
    Ok(())
}

async fn wait_job(
    app: &TestApp,
    repo: &str,
    number: u64,
    what: &str,
    pred: impl Fn(&JobStatus) -> bool,
) -> anyhow::Result<JobStatus> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = app.gateway().job_status(&job_workflow_id(repo, number)).await.ok();
        if let Some(s) = &last
            && pred(s)
        {
            return Ok(s.clone());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "job {repo}#{number} not {what}: {last:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the sandbox's issue comments contain `text`.
async fn wait_comment(app: &TestApp, text: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !app.sandbox_state().await?["github"]["comments"].to_string().contains(text) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no comment saying {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn wait_gate(app: &TestApp, customer: &str, waiting: &str) -> anyhow::Result<()> {
    let handle = app.client.get_workflow_handle::<JobGateWorkflow>(job_gate_workflow_id(customer));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snap = handle.query(JobGateWorkflow::snapshot, (), WorkflowQueryOptions::default()).await;
        if snap.as_ref().is_ok_and(|s| s.waiting.iter().any(|j| j == waiting)) {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{waiting} never queued at the gate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn live_jobs() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { max_jobs_per_customer: 1, ..Options::default() }).await?;
    let mut rec = Recorded::new();
    let GitHubAccount { repo, installation, customer, .. } = app.github_account(true).await?;
    let open = |n: u64, title: &str| {
        github_events::issues("opened", &repo, installation, n, title, "", &["slipway"], "maintainer")
    };
    let say = |n: u64, text: &str, who: &str| {
        github_events::issue_comment_created(&repo, installation, n, text, who)
    };
    let close_pr = |pr: u64, merged: bool| {
        let path = format!("/_sandbox/github/repos/{repo}/pulls/{pr}/close");
        let app = &app;
        async move { app.sandbox_post(&path, json!({"merged": merged})).await }
    };
    let running = |s: &JobStatus| {
        matches!(s.state, JobState::Planning | JobState::Coding | JobState::Reviewing | JobState::PrCreating)
    };

    // 1. Issue → one review round sent back → PR → billed → merged.
    app.sandbox_post("/_sandbox/openai/review", json!({"changes_first": 1})).await?;
    deliver(&app, "issues", open(1, "Replay me"), "r-1").await?;
    let j =
        wait_job(&app, &repo, 1, "billed", |s| s.state == JobState::PrOpened && s.billed.len() == 2).await?;
    assert!(j.history.iter().filter(|s| **s == JobState::Coding).count() >= 2, "{j:#?}");
    close_pr(j.pr_number.context("pr")?, true).await?;
    wait_job(&app, &repo, 1, "merged", |s| s.pr_outcome.as_deref() == Some("merged")).await?;

    // 2. The model is down: failed. A reader's retry is refused; a writer's runs attempt 2;
    //    the PR is closed without merging.
    app.fault(json!({"method": "POST", "path": "/openai/v1/chat/completions", "status": 400})).await?;
    deliver(&app, "issues", open(2, "Fix the bug"), "r-2").await?;
    wait_job(&app, &repo, 2, "failed", |s| s.state == JobState::Failed).await?;
    deliver(&app, "issue_comment", say(2, "/slipway retry", "drive-by"), "r-2a").await?;
    wait_comment(&app, "@drive-by needs write access").await?;
    clear_faults(&app).await?;
    deliver(&app, "issue_comment", say(2, "/slipway retry", "maintainer"), "r-2b").await?;
    let j =
        wait_job(&app, &repo, 2, "retried", |s| s.state == JobState::PrOpened && s.billed.len() == 2).await?;
    assert_eq!(j.attempt, 2);
    close_pr(j.pr_number.context("pr")?, false).await?;
    wait_job(&app, &repo, 2, "closed", |s| s.pr_outcome.as_deref() == Some("closed")).await?;

    // 3. Cancelled while the model works on the plan.
    app.fault(json!({"method": "POST", "path": "/openai/v1/chat/completions", "latency_ms": 1500})).await?;
    deliver(&app, "issues", open(3, "Another"), "r-3").await?;
    wait_job(&app, &repo, 3, "planning", |s| s.state == JobState::Planning).await?;
    deliver(&app, "issue_comment", say(3, "/slipway cancel", "maintainer"), "r-3a").await?;
    wait_job(&app, &repo, 3, "cancelled", |s| s.state == JobState::Cancelled).await?;
    clear_faults(&app).await?;

    // 4. Failed, then cancelled instead of retried.
    app.fault(json!({"method": "POST", "path": "/openai/v1/chat/completions", "status": 400})).await?;
    deliver(&app, "issues", open(4, "Give up"), "r-4").await?;
    wait_job(&app, &repo, 4, "failed", |s| s.state == JobState::Failed).await?;
    deliver(&app, "issue_comment", say(4, "/slipway cancel", "maintainer"), "r-4a").await?;
    wait_job(&app, &repo, 4, "cancelled", |s| s.state == JobState::Cancelled).await?;
    clear_faults(&app).await?;

    // 5. At the cap (1): #11 waits for #10; #12 is cancelled while it waits.
    app.fault(json!({"method": "POST", "path": "/openai/v1/chat/completions", "latency_ms": 700})).await?;
    deliver(&app, "issues", open(10, "First"), "r-10").await?;
    wait_job(&app, &repo, 10, "running", running).await?;
    deliver(&app, "issues", open(11, "Second"), "r-11").await?;
    wait_gate(&app, &customer, &job_workflow_id(&repo, 11)).await?;
    deliver(&app, "issues", open(12, "Third"), "r-12").await?;
    wait_gate(&app, &customer, &job_workflow_id(&repo, 12)).await?;
    deliver(&app, "issue_comment", say(12, "/slipway cancel", "maintainer"), "r-12a").await?;
    let j12 = wait_job(&app, &repo, 12, "cancelled", |s| s.state == JobState::Cancelled).await?;
    assert!(!j12.history.contains(&JobState::Planning), "#12 never ran: {j12:#?}");
    for n in [10, 11] {
        wait_job(&app, &repo, n, "opened", |s| s.state == JobState::PrOpened && s.billed.len() == 2).await?;
    }
    clear_faults(&app).await?;

    // 6. An account nobody linked: refused with a comment, no model call.
    let stranger = app.id("strangers");
    let other = format!("{stranger}/app");
    let other_inst = app.install_github_app(&stranger, &other).await?;
    app.sandbox_post(
        &format!("/_sandbox/github/repos/{other}/collaborators/dev"),
        json!({"permission": "write"}),
    )
    .await?;
    let issue = github_events::issues("opened", &other, other_inst, 1, "Hi", "", &["slipway"], "dev");
    deliver(&app, "issues", issue, "r-s1").await?;
    let refused = wait_job(&app, &other, 1, "refused", |s| s.state == JobState::Cancelled).await?;
    assert!(refused.failure.as_deref().unwrap_or_default().contains("not linked"), "{refused:#?}");

    // 7. Stripe refuses the usage for good: kept unbilled, billed once when an operator asks.
    app.fault(json!({"method": "POST", "path": "/stripe/v1/billing/meter_events", "status": 400})).await?;
    deliver(&app, "issues", open(13, "Owed"), "r-13").await?;
    wait_job(&app, &repo, 13, "owing", |s| s.state == JobState::PrOpened && s.unbilled.len() == 2).await?;
    clear_faults(&app).await?;
    app.gateway().job_bill_again(&job_workflow_id(&repo, 13), "r-13-bill".to_owned()).await?;
    let j = wait_job(&app, &repo, 13, "billed", |s| s.unbilled.is_empty() && s.billed.len() == 2).await?;
    close_pr(j.pr_number.context("pr")?, true).await?;
    wait_job(&app, &repo, 13, "merged", |s| s.pr_outcome.as_deref() == Some("merged")).await?;

    // 8. A non-writer's labelled issue: refused, nothing spent; a writer's relabel runs it.
    let by_anyone =
        github_events::issues("opened", &repo, installation, 14, "Anyone", "", &["slipway"], "drive-by");
    deliver(&app, "issues", by_anyone, "r-14").await?;
    wait_job(&app, &repo, 14, "refused", |s| s.state == JobState::Cancelled).await?;
    wait_comment(&app, "@drive-by needs write access").await?;
    let by_writer =
        github_events::issues("labeled", &repo, installation, 14, "Anyone", "", &["slipway"], "maintainer");
    deliver(&app, "issues", by_writer, "r-14a").await?;
    let j = wait_job(&app, &repo, 14, "relabelled", |s| s.state == JobState::PrOpened && s.billed.len() == 2)
        .await?;
    close_pr(j.pr_number.context("pr")?, true).await?;
    wait_job(&app, &repo, 14, "merged", |s| s.pr_outcome.as_deref() == Some("merged")).await?;

    // 9. A plan the path policy refuses: failed, its tokens billed; then cancelled.
    let refused_plan = github_events::issues(
        "opened",
        &repo,
        installation,
        15,
        "Deploy on push",
        "Add .github/workflows/deploy.yml",
        &["slipway"],
        "maintainer",
    );
    deliver(&app, "issues", refused_plan, "r-15").await?;
    wait_job(&app, &repo, 15, "failed, billed", |s| s.state == JobState::Failed && s.billed.len() == 1)
        .await?;
    deliver(&app, "issue_comment", say(15, "/slipway cancel", "maintainer"), "r-15a").await?;
    wait_job(&app, &repo, 15, "cancelled", |s| s.state == JobState::Cancelled).await?;

    for (name, id) in [
        ("job-unbilled-then-billed-writers", job_workflow_id(&repo, 13)),
        ("job-merged-writers", job_workflow_id(&repo, 1)),
        ("job-retried-pr-closed-writers", job_workflow_id(&repo, 2)),
        ("job-cancelled-while-running-tokens-billed", job_workflow_id(&repo, 3)),
        ("job-cancelled-after-failure-writers", job_workflow_id(&repo, 4)),
        ("job-waited-for-slot-writers", job_workflow_id(&repo, 11)),
        ("job-cancelled-while-queued-writers", job_workflow_id(&repo, 12)),
        ("job-refused-unlinked-writers", job_workflow_id(&other, 1)),
        ("job-refused-non-writer-then-relabelled", job_workflow_id(&repo, 14)),
        ("job-refused-plan-tokens-billed-cancelled", job_workflow_id(&repo, 15)),
        ("job-gate-checks-holders", job_gate_workflow_id(&customer)),
        ("github-links", github_links_workflow_id(&app.task_queue)),
    ] {
        rec.take(&app, name, &id, None).await?;
    }
    rec.finish().await
}

// ---------------------------------------------------------------------------------------------
// Continue-as-new: the history limit is a setting (`SLIPWAY_HISTORY_LIMIT`), small here

#[tokio::test]
async fn live_continue_as_new() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { history_limit: 40, ..Options::default() }).await?;
    let mut rec = Recorded::new();

    // Agent: provisioned, then stop/start until it has continued as new.
    let user = app.id("canuser");
    let token = app.token(&user, None);
    app.subscribe(&user, None).await?;
    let agent = create_agent(&app, &token, "long-lived").await?;
    lifecycle(&app, &token, &agent, "provision", AgentStatus::Active).await?;
    let agent_wf = agent_workflow_id(&agent);
    for _ in 0..2 {
        lifecycle(&app, &token, &agent, "stop", AgentStatus::Stopped).await?;
        lifecycle(&app, &token, &agent, "start", AgentStatus::Active).await?;
    }
    let runs = app.runs(&agent_wf).await?;
    let (first, last) = (runs.first, runs.current);
    assert_ne!(first, last, "the agent continued as new");
    rec.take(&app, "agent-continued-as-new-first-run-desired-state-protocol-1", &agent_wf, Some(&first))
        .await?;
    rec.take(&app, "agent-continued-as-new-last-run-desired-state-protocol-1", &agent_wf, None).await?;

    // Subscription: renewals until it has continued as new (each applied before the next).
    let customer = format!("cus_{}", app.id("renewals"));
    let sub = format!("sub_{}", app.unique);
    let t = 1_800_000_000;
    let workflow = customer_workflow_id(&customer);
    let created =
        event("customer.subscription.created", subscription_object(&sub, &customer, "active", t), t, None);
    post_event(&app, &created).await?;
    wait_applied(&app, &customer, 1).await?;
    let mut n = 1;
    loop {
        let runs = app.runs(&workflow).await?;
        if runs.first != runs.current {
            break;
        }
        anyhow::ensure!(n < 40, "the subscription never continued as new");
        let invoice = invoice_object(&format!("in_{}_{n}", app.unique), &customer, &sub, "paid", t + n);
        post_event(&app, &event("invoice.paid", invoice, t + n, None)).await?;
        n += 1;
        wait_applied(&app, &customer, n as usize).await?;
    }
    let first = app.runs(&workflow).await?.first;
    rec.take(
        &app,
        "subscription-continued-as-new-first-run-desired-state-protocol-1",
        &workflow,
        Some(&first),
    )
    .await?;
    rec.take(&app, "subscription-continued-as-new-last-run-desired-state-protocol-1", &workflow, None)
        .await?;

    // Job: its pull request open, it continues as new at once (the limit is small), then
    // again on comments; the PR merged ends the last run.
    let GitHubAccount { repo, installation, .. } = app.github_account(true).await?;
    let issue =
        github_events::issues("opened", &repo, installation, 1, "Long", "", &["slipway"], "maintainer");
    deliver(&app, "issues", issue, "can-1").await?;
    let j =
        wait_job(&app, &repo, 1, "billed", |s| s.state == JobState::PrOpened && s.billed.len() == 2).await?;
    let job = job_workflow_id(&repo, 1);
    let mut n = 0;
    loop {
        let runs = app.runs(&job).await?;
        if runs.first != runs.current {
            break;
        }
        anyhow::ensure!(n < 40, "the job never continued as new");
        let comment =
            github_events::issue_comment_created(&repo, installation, 1, "/slipway retry", "drive-by");
        deliver(&app, "issue_comment", comment, &format!("can-1-{n}")).await?;
        n += 1;
        slipway_tests::wait_until("the job processed the comment", WAIT, || async {
            let now = app.runs(&job).await?;
            Ok((now.current != runs.current || now.history_length > runs.history_length) && now.settled)
        })
        .await?;
    }
    let first = app.runs(&job).await?.first;
    app.sandbox_post(
        &format!("/_sandbox/github/repos/{repo}/pulls/{}/close", j.pr_number.context("pr")?),
        json!({"merged": true}),
    )
    .await?;
    wait_job(&app, &repo, 1, "merged", |s| s.pr_outcome.as_deref() == Some("merged")).await?;
    rec.take(&app, "job-continued-as-new-first-run", &job, Some(&first)).await?;
    rec.take(&app, "job-continued-as-new-last-run", &job, None).await?;
    rec.finish().await
}

#[tokio::test]
async fn live_reconcilers() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { stripe_delivery: Some((1, 10)), ..Options::default() }).await?;
    app.reconciler_schedules(false).await?;
    let mut rec = Recorded::new();
    let offline = app.offline_starter().await?;

    // Stripe: two checkouts Stripe could not deliver (the starter answered 503), one of them
    // naming a region Slipway does not serve (refused for good when fed).
    app.sandbox_post(
        "/_sandbox/stripe/webhook_endpoint",
        json!({"url": format!("{offline}/webhooks/stripe")}),
    )
    .await?;
    for (agent, region) in [("good", "fsn1"), ("mars", "mars")] {
        let body = json!({"userId": app.id("recuser"), "agentId": app.id(agent), "region": region});
        app.sandbox_post("/_sandbox/stripe/checkout/complete", body).await?;
    }
    app.stripe_events_attempted(1).await?;
    let (first, report) = app.reconcile("stripe", true).await?;
    assert_eq!(
        (report["delivered"].as_u64(), report["refused"].as_array().map(Vec::len)),
        (Some(1), Some(1)),
        "{report:#}"
    );
    rec.take(&app, "reconcile-stripe-recovered-defers-conflicts", &first, None).await?;
    let (again, report) = app.reconcile("stripe", true).await?;
    assert_eq!((report["delivered"].as_u64(), report["skipped"].as_u64()), (Some(0), Some(2)), "{report:#}");
    rec.take(&app, "reconcile-stripe-nothing-new-defers-conflicts", &again, None).await?;

    // GitHub: a delivery the starter answered 503, asked for again; then nothing left.
    let live = format!("{}/webhooks/stripe", app.starter_url);
    app.sandbox_post("/_sandbox/stripe/webhook_endpoint", json!({"url": live})).await?;
    app.set_hook_url(&format!("{offline}/webhooks/github")).await?;
    let s = app.github_account(false).await?;
    let comment =
        github_events::issue_comment_created(&s.repo, s.installation, 1, "/slipway cancel", "maintainer");
    let sent = app
        .sandbox_post("/_sandbox/github/webhooks", json!({"event": "issue_comment", "payload": comment}))
        .await?;
    assert_eq!(sent["status"], 503, "{sent}");
    app.set_hook_url(&format!("{}/webhooks/github", app.starter_url)).await?;
    let (first, report) = app.reconcile("github", true).await?;
    assert_eq!(report["redelivered"].as_array().map(Vec::len), Some(1), "{report:#}");
    rec.take(&app, "reconcile-github-redelivered", &first, None).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (again, report) = app.reconcile("github", true).await?;
        if report["failed"] == 0 {
            rec.take(&app, "reconcile-github-nothing-failed", &again, None).await?;
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the redelivery never arrived: {report:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Orphans: a server (this deployment's label) and a key made by hand under a destroyed
    // agent's names: the server a suspect, then an orphan (reported), then deleted once deleting
    // is on; the key, which no record names, kept and reported. (Under names Temporal never
    // knew both would be kept: nothing proves them orphans.) Recorded beside the runs before the
    // sweep trusted only marks and records (`reconcile-orphans-*`).
    app.ghost_resources(&app.destroyed_agent("gone").await?).await?;
    let (first, report) = app.reconcile("orphans", true).await?;
    assert_eq!(report["suspects"].as_array().map(Vec::len), Some(1), "{report:#}");
    assert_eq!(report["unowned"].as_array().map(Vec::len), Some(1), "{report:#}");
    rec.take(&app, "reconcile-orphans-suspects-by-record", &first, None).await?;
    let (second, report) = app.reconcile("orphans", true).await?;
    assert_eq!(report["orphans"].as_array().map(Vec::len), Some(1), "{report:#}");
    rec.take(&app, "reconcile-orphans-reported-by-record", &second, None).await?;
    app.reconciler_schedules(true).await?;
    let (third, report) = app.reconcile("orphans", true).await?;
    assert_eq!(report["deleted"].as_array().map(Vec::len), Some(1), "{report:#}");
    rec.take(&app, "reconcile-orphans-deleted-by-record", &third, None).await?;
    rec.finish().await
}

// ---------------------------------------------------------------------------------------------
// A versioned rollout: sagas finish on the version that started them, agents move to the new one

/// What a rollout test reads from one history (fetched once).
struct RunFacts {
    /// Build id and versioning behaviour of each workflow task the workers completed.
    versions: Vec<(String, String)>,
    /// Whether the history holds the marker of the patch asked about.
    marked: bool,
    /// Workflow tasks that failed.
    failed: usize,
}

/// [`RunFacts`] of `workflow_id`'s history, with `patch`'s marker.
async fn run_facts(app: &TestApp, workflow_id: &str, patch: &str) -> anyhow::Result<RunFacts> {
    use base64::Engine;
    let events = app.events(workflow_id).await?;
    let versions = events
        .iter()
        .filter(|(kind, _)| kind == "WorkflowTaskCompleted")
        .map(|(_, attrs)| {
            let build = attrs["deployment_version"]["build_id"]
                .as_str()
                .or_else(|| attrs["worker_version"]["build_id"].as_str())
                .unwrap_or_default()
                .to_owned();
            // Temporal's VersioningBehavior: 1 pinned, 2 auto-upgrade.
            let behavior = match attrs["versioning_behavior"].as_i64() {
                Some(1) => "pinned",
                Some(2) => "auto-upgrade",
                _ => "unversioned",
            };
            (build, behavior.to_owned())
        })
        .collect();
    let patch_of = |attrs: &Value| {
        let data = attrs["details"]["patch-data"]["payloads"][0]["data"].as_str()?;
        let json: Value =
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(data).ok()?).ok()?;
        json["id"].as_str().map(str::to_owned)
    };
    let marked = events
        .iter()
        .any(|(kind, attrs)| kind == "MarkerRecorded" && patch_of(attrs).as_deref() == Some(patch));
    let failed = events.iter().filter(|(kind, _)| kind == "WorkflowTaskFailed").count();
    Ok(RunFacts { versions, marked, failed })
}

#[tokio::test]
async fn live_versioned_rollout() -> anyhow::Result<()> {
    use futures::future::try_join_all;
    use slipway_proto::model::provisioning_workflow_id;
    use slipway_worker::{
        WorkerVersion,
        versioning::{self, Adoption},
    };
    use slipway_workflows::provisioning::FIND_RUN_PATCH;
    let deployment = format!("slipway-rollout-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let version =
        |build: &str| WorkerVersion { deployment_name: Some(deployment.clone()), build_id: build.to_owned() };
    // Version A plays the previous release: its saga lacks a step B has (held back by patch).
    let gate = slipway_tests::PatchGate::default();
    gate.hold(&[FIND_RUN_PATCH]);
    let mut app = TestApp::spawn_with(Options {
        held_patches: Some(gate),
        worker_version: Some(version("A")),
        ..Options::default()
    })
    .await?;
    // A deployment's first version becomes current by itself (as the worker binary does).
    assert_eq!(versioning::adopt_if_unset(&app.client, &version("A"), WAIT).await?, Adoption::Adopted);

    // 20 live agents, provisioned on A; then 20 sagas stalled on their Actions callback (the
    // runner holds their runs queued).
    const N: usize = 20;
    let pairs = |prefix: &str, n: usize| -> Vec<(String, String)> {
        (0..n).map(|i| (app.id(&format!("{prefix}user{i}")), app.id(&format!("{prefix}{i}")))).collect()
    };
    let (live, stalled, fresh) = (pairs("live", N), pairs("stalled", N), pairs("fresh", 5));
    try_join_all(live.iter().map(|(user, agent)| app.subscribe(user, Some((agent, "fsn1"))))).await?;
    for (_, agent) in &live {
        app.wait_for_status(agent, &[AgentStatus::Active], WAIT).await?;
    }
    app.runner("hold").await?;
    try_join_all(stalled.iter().map(|(user, agent)| app.subscribe(user, Some((agent, "fsn1"))))).await?;
    slipway_tests::wait_until("20 Actions runs queued behind the held runner", WAIT, || async {
        let state = app.sandbox_state().await?;
        let queued = state["github"]["runs"]
            .as_array()
            .map_or(0, |runs| runs.iter().filter(|r| r["status"] == "queued").count());
        Ok(queued == N)
    })
    .await?;

    // What A's workers report to an autoscaler: A's own share of each of its two task queues.
    let queues = [app.task_queue.clone(), versioning::saga_task_queue(&app.task_queue)];
    let backlog = slipway_worker::backlog::read(&app.client, &queues, &version("A")).await?;
    let mut seen: Vec<(String, &str)> = backlog.iter().map(|b| (b.task_queue.clone(), b.task_type)).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (queues[0].clone(), "activity"),
            (queues[0].clone(), "workflow"),
            (queues[1].clone(), "activity"),
            (queues[1].clone(), "workflow")
        ],
        "{backlog:?}"
    );

    // Version B starts and becomes current (once Temporal has seen its pollers).
    let b = app.spawn_version(version("B"), None)?;
    slipway_tests::wait_until("version B current", WAIT, || async {
        Ok(versioning::set_current(&app.client, &deployment, "B").await.is_ok())
    })
    .await?;

    // The runner frees up: the stalled sagas finish; new provisionings run; every live agent
    // answers a stop and a start.
    app.runner("succeed").await?;
    for (_, agent) in &stalled {
        app.wait_for_status(agent, &[AgentStatus::Active], WAIT).await?;
    }
    try_join_all(fresh.iter().map(|(user, agent)| app.subscribe(user, Some((agent, "fsn1"))))).await?;
    for (_, agent) in &fresh {
        app.wait_for_status(agent, &[AgentStatus::Active], WAIT).await?;
    }
    for (user, agent) in &live {
        let token = app.token(user, None);
        lifecycle(&app, &token, agent, "stop", AgentStatus::Stopped).await?;
        lifecycle(&app, &token, agent, "start", AgentStatus::Active).await?;
    }

    // Which version ran what.
    // The distinct (build, behaviour) runs of tasks, in order: e.g. A auto-upgrade, then B.
    let builds = |versions: &[(String, String)]| -> Vec<String> {
        let mut b: Vec<String> = versions.iter().map(|(b, behavior)| format!("{b} {behavior}")).collect();
        b.dedup();
        b
    };
    for (user, _) in &stalled {
        let saga = provisioning_workflow_id(user);
        let run = run_facts(&app, &saga, FIND_RUN_PATCH).await?;
        assert_eq!(builds(&run.versions), ["A pinned"], "{saga} is pinned to A: {:?}", run.versions);
        assert_eq!((run.marked, run.failed), (false, 0), "{saga} ran A's code");
    }
    for (user, _) in &fresh {
        let saga = provisioning_workflow_id(user);
        let run = run_facts(&app, &saga, FIND_RUN_PATCH).await?;
        assert_eq!(builds(&run.versions), ["B pinned"], "{saga} started on B: {:?}", run.versions);
        assert_eq!((run.marked, run.failed), (true, 0), "{saga} ran B's code");
    }
    for (_, agent) in &live {
        let workflow = agent_workflow_id(agent);
        let run = run_facts(&app, &workflow, FIND_RUN_PATCH).await?;
        assert_eq!(
            builds(&run.versions),
            ["A auto-upgrade", "B auto-upgrade"],
            "{workflow} moved from A to B: {:?}",
            run.versions
        );
        assert_eq!(run.failed, 0, "{workflow}");
    }
    let (first_saga, first_agent) = (provisioning_workflow_id(&stalled[0].0), agent_workflow_id(&live[0].1));

    // A has nothing left to run: Temporal reports it drained, and it stops; the work goes on.
    slipway_tests::wait_until("version A drained", Duration::from_secs(60), || async {
        Ok(versioning::drainage(&app.client, &deployment, "A").await? == "DRAINED")
    })
    .await?;
    app.stop_worker().await?;
    let (user, agent) = &live[0];
    lifecycle(&app, &app.token(user, None), agent, "stop", AgentStatus::Stopped).await?;
    let tasks = |run: RunFacts| run.versions.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>().join("");
    eprintln!(
        "rollout timeline (one letter per workflow task, the version that ran it): {N} stalled sagas pinned to A (e.g. {first_saga}: {}); {} new sagas pinned to B; {N} live agents auto-upgraded from A to B, no task failed (e.g. {first_agent}: {}); A drained, then stopped",
        tasks(run_facts(&app, &first_saga, FIND_RUN_PATCH).await?),
        fresh.len(),
        tasks(run_facts(&app, &first_agent, FIND_RUN_PATCH).await?),
    );
    b.stop().await?;
    Ok(())
}

/// Every payload object (`{"metadata", "data"}`) of a history's JSON with where it sits (the
/// path of field names), except search attributes: plaintext by design, and ids only.
fn payloads_of(value: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("metadata") && map.contains_key("data") {
                out.push((path.to_owned(), value.clone()));
                return;
            }
            for (k, v) in map {
                if k == "search_attributes" || k == "searchAttributes" {
                    continue;
                }
                payloads_of(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for v in items {
                payloads_of(v, path, out);
            }
        }
        _ => {}
    }
}

/// `temporal workflow show` of one run, as JSON (what anyone with access to the namespace reads).
async fn shown(app: &TestApp, workflow_id: &str, run_id: &str) -> anyhow::Result<Value> {
    let cli = std::env::var("SLIPWAY_TEST_TEMPORAL_CLI").context("SLIPWAY_TEST_TEMPORAL_CLI")?;
    let out = tokio::process::Command::new(cli)
        .args(["workflow", "show", "--address", app.temporal_address(), "--namespace", "default"])
        .args(["--workflow-id", workflow_id, "--run-id", run_id, "--output", "json"])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "temporal workflow show {workflow_id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// No customer data in plaintext in Temporal: after a paid provisioning, a client stack and a
/// coding job, every payload of every run (`temporal workflow show`) is sealed, under the
/// current key, and none of the customer's email, name, issue text or Stripe ids is readable in
/// any payload; opened with the keys, the same histories do hold them (the check looks in the
/// right places).
#[tokio::test]
async fn no_customer_data_reaches_temporal_in_plaintext() -> anyhow::Result<()> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let app = TestApp::spawn().await?;
    // A paid agent: its customer's and subscription's Stripe ids.
    let user = app.id("user");
    let agent = app.id("agent");
    let paid = app.subscribe(&user, Some((&agent, "fsn1"))).await?;
    app.wait_for_status(&agent, &[AgentStatus::Active], WAIT).await?;
    let customer = paid["customer_id"].as_str().context("customer id")?.to_owned();
    let subscription = paid["subscription_id"].as_str().context("subscription id")?.to_owned();
    // A client stack: its organisation's email and name.
    let client = app.id("client");
    let (org_email, org_name) = ("founder@very-private-startup.io", "Very Private Startup GmbH");
    app.settled_stack(
        json!({"clientId": client, "clientName": org_name, "orgEmail": org_email, "tier": "starter"}),
    )
    .await?;
    // A coding job: its issue's text.
    let s = app.github_account(true).await?;
    let issue = "Rotate the Zanzibar ledger keys before the audit";
    let opened = github_events::issues(
        "opened",
        &s.repo,
        s.installation,
        5,
        issue,
        "Confidential.",
        &["slipway"],
        "maintainer",
    );
    app.sandbox_post(
        "/_sandbox/github/webhooks",
        json!({"event": "issues", "payload": opened, "delivery_id": app.id("d")}),
    )
    .await?;
    slipway_tests::wait_for("the job's pull request", WAIT, || async {
        let status = app.gateway().job_status(&job_workflow_id(&s.repo, 5)).await.ok();
        Ok(status.filter(|j| j.state == JobState::PrOpened))
    })
    .await?;

    let sensitive = [org_email, org_name, issue, customer.as_str(), subscription.as_str()];
    let queues = [app.task_queue.clone(), format!("{}-sagas", app.task_queue)];
    let query = format!("TaskQueue = '{}' OR TaskQueue = '{}'", queues[0], queues[1]);
    let mut runs = app
        .client
        .list_workflows(query, temporalio_client::WorkflowListOptions::builder().limit(500).build());
    let (mut sealed, mut histories) = (0, 0);
    let mut found_when_opened = std::collections::BTreeSet::new();
    let (mut plaintext, mut leaks) = (Vec::new(), Vec::new());
    while let Some(run) = futures::StreamExt::next(&mut runs).await {
        let run = run?;
        let history = shown(&app, run.id(), run.run_id()).await?;
        histories += 1;
        let mut payloads = Vec::new();
        payloads_of(&history, "", &mut payloads);
        for (path, p) in &payloads {
            let encoding =
                b64.decode(p["metadata"]["encoding"].as_str().unwrap_or_default()).unwrap_or_default();
            let data = String::from_utf8_lossy(
                &b64.decode(p["data"].as_str().unwrap_or_default()).unwrap_or_default(),
            )
            .into_owned();
            for s in sensitive.iter().filter(|s| data.contains(**s)) {
                leaks.push(format!("{} {path}: {s:?} in plaintext: {data}", run.id()));
            }
            // Outside the codec's reach in the Rust SDK, and so the only plaintext allowed: user
            // metadata (start, activity and timer summaries), which must carry no customer data
            // (checked above), and the patch markers Core itself writes (a patch's name).
            if ["userMetadata", "user_metadata", "patch-data"].iter().any(|p| path.contains(p)) {
                continue;
            }
            if encoding == slipway_codec::ENCODING.as_bytes() {
                sealed += 1;
                let key = b64.decode(p["metadata"][slipway_codec::KEY_ID].as_str().unwrap_or_default())?;
                assert_eq!(key, b"test-2", "{path}: sealed under the current key");
            } else {
                plaintext.push(format!("{} {path}: {}", run.id(), String::from_utf8_lossy(&encoding)));
            }
        }
        let mut opened = history.clone();
        slipway_tests::decrypt_payloads(&mut opened)?;
        let text = slipway_tests::secret_scan::decoded_text(&opened);
        found_when_opened.extend(sensitive.iter().filter(|s| text.contains(**s)).map(|s| (*s).to_owned()));
    }
    assert!(leaks.is_empty(), "customer data in plaintext:\n{}", leaks.join("\n"));
    assert!(histories >= 6 && sealed >= 50, "{histories} histories, {sealed} sealed payloads");
    assert!(plaintext.is_empty(), "payloads in plaintext:\n{}", plaintext.join("\n"));
    assert_eq!(
        found_when_opened.len(),
        sensitive.len(),
        "opened, the histories hold them all: {found_when_opened:?}"
    );
    Ok(())
}

/// Keys rotate without breaking old histories: a run whose payloads were sealed under the old
/// key alone is carried on by processes holding the new key first (they read the old, write the
/// new), its history replays with both keys and not without the old one, and the codec server
/// opens it for an operator, and for nobody else.
#[tokio::test]
async fn a_history_sealed_under_an_old_key_replays_and_decodes_after_rotation() -> anyhow::Result<()> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let app = TestApp::spawn().await?;
    let old_only = slipway_codec::Encryption::from_lookup(|k| {
        (k == "SLIPWAY_PAYLOAD_KEYS").then(|| slipway_tests::PAYLOAD_KEY_OLD.to_owned())
    })?;
    let before_rotation = slipway_tests::connect_with(app.temporal_address(), &old_only).await?;
    let gateway = slipway_starter::Gateway::with_client(
        before_rotation,
        app.task_queue.clone(),
        Duration::from_secs(5),
    );
    let (agent, user, name) = (app.id("agent"), app.id("user"), "Ledger box of Ada Lovelace");
    let mut record = AgentRecord::draft(&agent, &user, "fsn1");
    record.name = name.to_owned();
    gateway.create_agent(record, ProvisioningPolicy::default(), Default::default()).await?;

    // The app's processes hold test-2 first, test-1 after: they read it and answer.
    let token = app.token(&user, None);
    let (status, body) = app.api(Method::GET, &format!("/api/agents/{agent}"), Some(&token), None).await?;
    assert_eq!((status, body["name"].as_str()), (200, Some(name)), "{body}");
    let (status, body) =
        app.api(Method::POST, &format!("/api/agents/{agent}/stop"), Some(&token), None).await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("AGENT_NOT_RUNNING")), "{body}");

    let handle = app.client.get_workflow_handle::<AgentWorkflow>(agent_workflow_id(&agent));
    let bytes = handle.fetch_history(WorkflowFetchHistoryOptions::default()).to_json().await?;
    let history: Value = serde_json::from_slice(&bytes)?;
    let mut payloads = Vec::new();
    payloads_of(&history, "", &mut payloads);
    let keys: std::collections::BTreeSet<String> = payloads
        .iter()
        .filter_map(|(_, p)| p["metadata"][slipway_codec::KEY_ID].as_str())
        .map(|k| String::from_utf8_lossy(&b64.decode(k).unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(
        keys,
        ["test-1", "test-2"].map(str::to_owned).into(),
        "the input under the old key, the rest under the new"
    );

    replay(&replayer()?, "rotated", &bytes).await?;
    let current_only = slipway_codec::Encryption::from_lookup(|k| {
        (k == "SLIPWAY_PAYLOAD_KEYS").then(|| slipway_tests::PAYLOAD_KEY_CURRENT.to_owned())
    })?;
    let without_old = WorkflowReplayer::new(
        slipway_workflows::register_all(WorkflowReplayerOptions::new())?
            .data_converter(current_only.data_converter())
            .build(),
    )?;
    assert!(
        replay_once(&without_old, &bytes).await.is_err(),
        "without the old key the history does not replay"
    );

    // The codec server: the first payload (the input, under the old key), for an operator.
    let (_, first) = payloads.first().context("a payload")?;
    let body = json!({"payloads": [first]});
    let decode = |token: Option<String>| {
        let req = app.http.post(format!("{}/codec/decode", app.starter_url)).json(&body);
        async move {
            Ok::<_, anyhow::Error>(
                match token {
                    Some(t) => req.bearer_auth(t),
                    None => req,
                }
                .send()
                .await?,
            )
        }
    };
    let opened: Value =
        decode(Some(app.token("ops", Some("admin")))).await?.error_for_status()?.json().await?;
    let data = b64.decode(opened["payloads"][0]["data"].as_str().unwrap_or_default())?;
    assert!(String::from_utf8_lossy(&data).contains(name), "decoded for the operator");
    assert_eq!(decode(Some(token)).await?.status(), 403, "a user is not an operator");
    assert_eq!(decode(None).await?.status(), 401, "nor is anyone without a token");
    Ok(())
}
