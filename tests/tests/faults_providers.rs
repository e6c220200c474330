//! Fault injection: providers misbehaving at configured rates, and compensations that keep
//! failing.
//!
//! - Hetzner, Tailscale and GitHub answer 5xx, 429 with `Retry-After`, slowly, or drop the
//!   connection (before handling the request, or after: the lost answer) on a seeded share of
//!   requests. Every saga still completes, exactly one of each resource exists per agent, no
//!   request is retried before its `Retry-After`, and Hetzner's hourly budget is never exceeded.
//! - A compensation whose provider keeps answering 503 (not a 4xx: it is retried until its
//!   attempts run out, at the pace `Retry-After` asks): the other compensations still run and
//!   the leftover is reported (`rollback.rs` and `client_stack.rs` cover a compensation refused
//!   with a 4xx, which is not retried at all).
//!
//! Fault seeds come from `SLIPWAY_FAULT_SEED` (or the clock) and are printed.

mod faults_support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use slipway_proto::model::AgentStatus;
use slipway_tests::{SeededRng, TestApp};

use faults_support::{Inventory, deliver_until_accepted, outcomes, records, wait_settled};

const SAGAS: usize = 20;

/// The sandbox's fault table and Retry-After ledger.
async fn faults(app: &TestApp) -> anyhow::Result<Value> {
    Ok(app.http.get(format!("{}/_sandbox/faults", app.sandbox.base_url)).send().await?.json().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_complete_while_providers_misbehave_at_configured_rates() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut rng = SeededRng::from_env("SLIPWAY_FAULT_SEED");
    println!("seed {} (SLIPWAY_FAULT_SEED={} to replay the fault dice)", rng.seed, rng.seed);
    let app = TestApp::spawn().await?;
    // (method, path, misbehaviour, probability). On one path the faults roll in this order and
    // the first hit applies.
    let table = [
        ("POST", "/hetzner/v1/servers", json!({"status": 500}), 0.25),
        ("POST", "/hetzner/v1/servers", json!({"drop": "response"}), 0.2),
        ("GET", "/hetzner/v1/servers", json!({"latency_ms": 800}), 0.3),
        ("GET", "/hetzner/v1/actions/*", json!({"status": 429, "retry_after": 2}), 0.15),
        ("POST", "/tailscale/api/v2/tailnet/*/keys", json!({"status": 429, "retry_after": 3}), 0.25),
        ("POST", "/tailscale/api/v2/tailnet/*/keys", json!({"drop": "response"}), 0.15),
        ("GET", "/tailscale/api/v2/tailnet/*/devices", json!({"latency_ms": 1500}), 0.3),
        ("GET", "/tailscale/api/v2/tailnet/*/devices", json!({"status": 503}), 0.2),
        (
            "POST",
            "/github/repos/*/*/actions/workflows/*/dispatches",
            json!({"status": 503, "retry_after": 2}),
            0.25,
        ),
        ("POST", "/github/repos/*/*/actions/workflows/*/dispatches", json!({"drop": "request"}), 0.15),
    ];
    for (method, path, mut fault, p) in table {
        fault["method"] = json!(method);
        fault["path"] = json!(path);
        fault["probability"] = json!(p);
        fault["seed"] = json!(rng.next_u64());
        app.fault(fault).await?;
    }

    let agents: Vec<String> = (0..SAGAS).map(|i| app.id(&format!("agent{i}"))).collect();
    // One budget for the whole test, so it stays bounded however slow the machine is.
    let overall = tokio::time::Instant::now() + Duration::from_secs(170);
    let deadline = overall - Duration::from_secs(60);
    let delivered = futures::stream::iter(0..SAGAS)
        .map(|i| {
            let (event, _) = app.checkout_event(&app.id(&format!("user{i}")), &agents[i], "nbg1");
            let app = &app;
            async move { deliver_until_accepted(app, &event, Duration::from_millis(500), deadline).await }
        })
        .buffer_unordered(SAGAS)
        .collect::<Vec<_>>()
        .await;
    for d in delivered {
        d?;
    }
    wait_settled(&app, SAGAS, overall.saturating_duration_since(tokio::time::Instant::now())).await?;

    // Every saga completed: the faults were all transient.
    let records = records(&app, &agents).await?;
    let tally = outcomes(&records)?;
    let why: Vec<(&String, Option<&String>)> = tally
        .rolled_back
        .iter()
        .map(|a| (a, records.get(a).and_then(|r| r.failure_reason.as_ref())))
        .collect();
    assert_eq!(tally.active.len(), SAGAS, "all active; rolled back: {why:?}");
    // Lost answers did not duplicate anything: a retried server create adopted the server, a
    // retried key create revoked the key it could not see.
    let state = app.sandbox_state().await?;
    let inventory = Inventory::of(&state)?;
    inventory.check_no_orphans(&tally.active)?;
    assert_eq!(inventory.totals(), (SAGAS, SAGAS, SAGAS));

    let table = faults(&app).await?;
    println!("{SAGAS} sagas active in {:.1?}; faults (matched/hit):", started.elapsed());
    for f in table["faults"].as_array().unwrap() {
        let what = if !f["drop"].is_null() {
            format!("drop {}", f["drop"].as_str().unwrap())
        } else if !f["status"].is_null() {
            format!("{} retry_after={}", f["status"], f["retry_after"])
        } else {
            format!("latency {}ms", f["latency_ms"])
        };
        println!(
            "  {} {} p={} {what}: {}/{} (seed {})",
            f["method"].as_str().unwrap(),
            f["path"].as_str().unwrap(),
            f["probability"],
            f["matched"],
            f["hits"],
            f["seed"]
        );
    }
    let hits = |pred: &dyn Fn(&Value) -> bool| -> u64 {
        table["faults"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| pred(f))
            .map(|f| f["hits"].as_u64().unwrap())
            .sum()
    };
    // Each kind of misbehaviour actually happened (with these rates and traffic, missing one is
    // a one-in-many-thousands event; the seed above replays it).
    let server_errors =
        hits(&|f| f["status"].as_u64().is_some_and(|s| s >= 500) && f["retry_after"].is_null());
    let with_retry_after = hits(&|f| !f["retry_after"].is_null());
    let slow = hits(&|f| f["latency_ms"].as_u64().unwrap_or(0) > 0);
    let dropped = hits(&|f| !f["drop"].is_null());
    println!(
        "injected: {server_errors} 5xx, {with_retry_after} with Retry-After, {slow} slow, {dropped} dropped"
    );
    assert!(server_errors > 0 && with_retry_after > 0 && slow > 0 && dropped > 0, "{table:#}");

    // Retry-After honoured: no request identical to a refused one came back before the delay.
    let ledger = &table["retry_after"];
    println!(
        "Retry-After: {} answered, {} retried, {} early, smallest margin {} ms",
        ledger["answered"], ledger["retries"], ledger["early"], ledger["min_slack_ms"]
    );
    assert!(ledger["retries"].as_u64().unwrap() > 0, "{ledger}");
    assert_eq!(ledger["early"], 0, "retried before Retry-After: {ledger}");
    assert!(ledger["min_slack_ms"].as_i64().unwrap() >= 0, "{ledger}");

    // Hetzner's budget (3600 requests/hour, refilled 1/s) was never exceeded.
    let budget = &state["hetzner"]["rate_limit"];
    println!(
        "Hetzner budget: {} of {} left at the lowest, {} refused",
        budget["min_remaining"], budget["limit"], budget["exceeded"]
    );
    assert_eq!(budget["exceeded"], 0, "{budget}");
    Ok(())
}

/// Requests in the sandbox log matching `method` and a path prefix, with their timestamps.
async fn requests(app: &TestApp, method: &str, prefix: &str) -> anyhow::Result<Vec<Value>> {
    Ok(app
        .sandbox_requests()
        .await?
        .into_iter()
        .filter(|r| r["method"] == method && r["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_compensation_failing_persistently_is_reported_and_the_others_run() -> anyhow::Result<()> {
    let started = Instant::now();
    let app = TestApp::spawn().await?;
    // The bootstrap dispatch is refused (permanent), so the saga rolls back; Hetzner then answers
    // every server deletion with 503 and `Retry-After: 1`, for good.
    app.fault(
        json!({"method": "POST", "path": "/github/repos/*/*/actions/workflows/*/dispatches", "status": 422}),
    )
    .await?;
    app.fault(json!({"method": "DELETE", "path": "/hetzner/v1/servers/*", "status": 503, "retry_after": 1}))
        .await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);

    let record = app
        .wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], Duration::from_secs(120))
        .await?;
    assert_eq!(record.status, AgentStatus::Failed, "{record:#?}");
    let reason = record.failure_reason.clone().unwrap_or_default();
    println!("failed after {:.1?}: {reason}", started.elapsed());
    // The leftover is named, with the provider's answer, for a person to clean up.
    assert!(reason.contains("rollback incomplete"), "{reason}");
    assert!(reason.contains("hetzner_server compensation failed"), "{reason}");
    assert!(reason.contains("503"), "{reason}");
    assert!(reason.contains("actions_dispatch"), "the original failure is kept: {reason}");

    // The deletion was retried until the compensation's attempts ran out, never sooner than
    // Retry-After; the compensations after it (devices, keys) still ran.
    // 20 attempts at most; on a very busy machine an attempt can also fail before it gets to
    // the DELETE (e.g. its lookup timing out), so count at least two (a retry happened).
    let deletes = requests(&app, "DELETE", "/hetzner/v1/servers/").await?;
    println!("{} DELETE attempts, all answered 503", deletes.len());
    assert!((2..=20).contains(&deletes.len()), "the compensation has 20 attempts: {deletes:#?}");
    assert!(deletes.iter().all(|r| r["status"] == 503));
    let ledger = faults(&app).await?["retry_after"].clone();
    assert_eq!(ledger["retries"].as_u64(), Some(deletes.len() as u64 - 1), "{ledger}");
    assert_eq!(ledger["early"], 0, "{ledger}");
    let state = app.sandbox_state().await?;
    let inventory = Inventory::of(&state)?;
    assert_eq!(inventory.totals(), (1, 0, 0), "only the server is left: {state:#}");
    assert_eq!(inventory.servers.get(&agent), Some(&1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_compensation_failing_persistently_needs_attention_and_the_others_run() -> anyhow::Result<()>
{
    let started = Instant::now();
    let app = TestApp::spawn().await?;
    app.fault(json!({"method": "POST", "path": "/n8n/api/v1/workflows", "status": 400})).await?;
    app.fault(json!({"method": "DELETE", "path": "/github/repos/*/*", "status": 503, "retry_after": 1}))
        .await?;
    let client = app.id("acme");
    let admin = app.token("ops", Some("admin"));
    let body = json!({"clientId": client, "clientName": "Acme Bakery", "orgEmail": "ops@acme.example", "tier": "professional"});
    let (code, created) = app.api(Method::POST, "/api/provisioning", Some(&admin), Some(body)).await?;
    assert_eq!(code, 202, "{created}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        let (code, status) =
            app.api(Method::GET, &format!("/api/provisioning/{client}"), Some(&admin), None).await?;
        if code == 200 && !matches!(status["state"].as_str(), Some("provisioning" | "rolling_back")) {
            break status;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "stack did not settle: {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("settled after {:.1?}: {status:#}", started.elapsed());

    assert_eq!(status["state"], "needs_attention", "{status:#}");
    let leftovers = status["leftovers"].as_array().unwrap();
    assert_eq!(leftovers.len(), 1, "{status:#}");
    let left = leftovers[0].as_str().unwrap();
    assert!(left.starts_with(&format!("github repository of {client}")) && left.contains("503"), "{left}");
    // The repository deletion was retried to the end of its budget (8 attempts), paced by
    // Retry-After; Vercel and Supabase were still removed.
    let deletes = requests(&app, "DELETE", "/github/repos/").await?;
    println!("{} DELETE attempts, all answered 503", deletes.len());
    assert!((2..=8).contains(&deletes.len()), "the compensation has 8 attempts: {deletes:#?}");
    let ledger = faults(&app).await?["retry_after"].clone();
    assert_eq!(ledger["retries"].as_u64(), Some(deletes.len() as u64 - 1), "{ledger}");
    assert_eq!(ledger["early"], 0, "{ledger}");
    let state = app.sandbox_state().await?;
    let repos = state["github"]["repos"].as_array().unwrap();
    let client_repos = repos
        .iter()
        .filter(|r| r["full_name"].as_str().is_some_and(|n| n.starts_with("slipway-clients/")))
        .count();
    let count = |p: &str, k: &str| state[p][k].as_array().map_or(0, Vec::len);
    assert_eq!(
        [count("supabase", "projects"), client_repos, count("vercel", "projects"), count("n8n", "workflows")],
        [0, 1, 0, 0]
    );
    // Operators find it by search attribute.
    let query = format!("WorkflowId = 'client-stack-{client}' AND SlipwayStatus = 'needs_attention'");
    assert_eq!(app.client.count_workflows(query, Default::default()).await?.count(), 1);
    Ok(())
}

/// The sandbox's dropped connections really are connections closed without an answer (not an
/// error status a client would also retry), and `"response"` drops happen after the effect.
#[tokio::test]
async fn dropped_connections_end_without_an_answer() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let tailscale = format!("{}/tailscale/api/v2/tailnet/-/keys", app.sandbox.base_url);
    let key = json!({"description": "slipway agent probe", "capabilities": {"devices": {"create": {
        "reusable": false, "ephemeral": false, "preauthorized": true, "tags": ["tag:slipway-agent"]}}},
        "expirySeconds": 3600});
    let post = || app.http.post(&tailscale).bearer_auth("tskey-api-test").json(&key).send();

    app.fault(
        json!({"method": "POST", "path": "/tailscale/api/v2/tailnet/*/keys", "drop": "request", "count": 1}),
    )
    .await?;
    let err = post().await.expect_err("no answer");
    println!("drop request: {err}");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    assert_eq!(Inventory::of(&app.sandbox_state().await?)?.totals().1, 0, "request not handled");

    app.fault(
        json!({"method": "POST", "path": "/tailscale/api/v2/tailnet/*/keys", "drop": "response", "count": 1}),
    )
    .await?;
    let err = post().await.expect_err("no answer");
    println!("drop response: {err}");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    assert_eq!(Inventory::of(&app.sandbox_state().await?)?.totals().1, 1, "request handled, answer lost");

    // Once the faults are used up, the same request is answered.
    assert_eq!(post().await?.status(), 200);
    Ok(())
}
