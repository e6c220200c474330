//! The reconcilers recover what webhooks missed, on a real Temporal server with the sandbox
//! playing Stripe and GitHub, each run triggered the way an operator does it
//! (`slipway reconcile stripe|github`, through the worker's Temporal Schedules):
//! - Stripe catch-up: with every delivery of a checkout, a failed invoice and a deleted
//!   subscription refused by the starter (503) until Stripe stopped retrying, the catch-up alone
//!   provisions the paid agent exactly once, suspends and destroys it as the events say; a second
//!   run changes nothing.
//! - Stripe catch-up, one customer busy: of two customers' missed checkouts, the one whose user
//!   has a provisioning in flight is acknowledged like the other (a checkout is durable at once)
//!   and waits in its agent, which says why; the other customer's agent provisions at once; the
//!   next run feeds neither again.
//! - GitHub redelivery: an `issues.opened` delivery the starter answered 503 is redelivered on
//!   GitHub's side; the job runs exactly once; a second run asks for nothing.
//! - Orphan sweep: a server and an auth key made by hand under a destroyed agent's names are
//!   suspects at the first sweep, orphans at the second, deleted on `slipway orphans
//!   --delete` (or by the schedule with deleting on); those under the names of an agent
//!   Temporal never knew are kept and reported, never deleted; a live agent's resources and a saga in
//!   flight are never touched, even by sweeps that delete, with no grace period, while 20
//!   agents provision and the worker is SIGKILLed.

use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};
use slipway_proto::{
    jobs::{JobState, job_workflow_id},
    model::AgentStatus,
};
use slipway_sandbox::github_events;
use slipway_tests::{Options, TestApp, cli::slipway, server_status, wait_for, wait_until};

mod faults_support;

const WAIT: Duration = Duration::from_secs(90);

/// The ids of the servers the sandbox's Hetzner holds.
async fn server_ids(app: &TestApp) -> anyhow::Result<Vec<u64>> {
    let state = app.sandbox_state().await?;
    Ok(state["hetzner"]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_u64())
        .collect())
}

fn servers_created(requests: &[Value]) -> usize {
    requests.iter().filter(|r| r["method"] == "POST" && r["path"] == "/hetzner/v1/servers").count()
}

#[tokio::test]
async fn the_stripe_catch_up_alone_applies_events_stripe_gave_up_on_exactly_once() -> anyhow::Result<()> {
    const ATTEMPTS: usize = 2;
    let app =
        TestApp::spawn_with(Options { stripe_delivery: Some((ATTEMPTS as u32, 50)), ..Options::default() })
            .await?;
    app.reconciler_schedules(false).await?;
    let offline = app.offline_starter().await?;
    app.sandbox_post(
        "/_sandbox/stripe/webhook_endpoint",
        json!({"url": format!("{offline}/webhooks/stripe")}),
    )
    .await?;

    // A customer pays for an agent, a renewal fails, the subscription is cancelled: Stripe
    // tries to tell Slipway each time and the starter answers 503 every time.
    let (user, agent) = (app.id("user"), app.id("agent"));
    let token = app.token(&user, None);
    let (status, created) = app
        .api(
            Method::POST,
            "/api/billing/checkout",
            Some(&token),
            Some(json!({"agentId": agent, "region": "fsn1"})),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let session = created["id"].as_str().context("session id")?;
    let paid = app.sandbox_post(&format!("/_sandbox/stripe/checkout/{session}/complete"), json!({})).await?;
    let sub = paid["subscription_id"].as_str().context("subscription")?.to_owned();
    app.sandbox_post(&format!("/_sandbox/stripe/subscriptions/{sub}/payment_failed"), json!({})).await?;
    let cancelled = app
        .http
        .delete(format!("{}/stripe/v1/subscriptions/{sub}", app.sandbox.base_url))
        .bearer_auth(slipway_tests::STRIPE_API_KEY)
        .send()
        .await?;
    assert!(cancelled.status().is_success());

    // Until Stripe stops retrying.
    let events: Vec<(String, String, Vec<Value>)> = app
        .stripe_events_attempted(ATTEMPTS)
        .await?
        .iter()
        .map(|e| {
            let statuses = e["deliveries"].as_array().into_iter().flatten().map(|a| a["status"].clone());
            (
                e["id"].as_str().unwrap_or("").to_owned(),
                e["type"].as_str().unwrap_or("").to_owned(),
                statuses.collect(),
            )
        })
        .collect();
    assert!(events.iter().any(|(_, t, _)| t == "customer.subscription.deleted"), "{events:#?}");
    for (id, kind, statuses) in &events {
        assert!(statuses.iter().all(|s| s == 503), "{id} {kind} was delivered: {statuses:?}");
    }
    assert_eq!(app.agent(&agent).await?.map(|a| a.status), Some(AgentStatus::Draft), "nothing happened yet");
    assert_eq!(servers_created(&app.sandbox_requests().await?), 0);

    // The catch-up alone: provisioned once, suspended, destroyed, in the events' order.
    let (_, report) = app.reconcile("stripe", false).await?;
    let handled: Vec<&String> = events
        .iter()
        .filter(|(_, t, _)| slipway_providers::stripe::webhook::HANDLED_TYPES.contains(&t.as_str()))
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(report["listed"], handled.len(), "{report:#}");
    assert_eq!(report["delivered"], handled.len(), "{report:#}");
    assert_eq!(report["refused"], json!([]), "{report:#}");
    // A checkout is acknowledged once durable, so the subscription's later events may reach
    // its customer's workflow before the agent claims its seat: the claim is then parked (the
    // renewal failed) and denied once the subscription ends, or refused at once, and the agent
    // is never provisioned; otherwise it is provisioned, then suspended and destroyed. Either
    // way, at most one server ever and none left.
    let record = slipway_tests::wait_for("the agent settles", WAIT, || async {
        Ok(app
            .agent(&agent)
            .await?
            .filter(|a| a.status == AgentStatus::Destroyed || a.checkout_refusal.is_some()))
    })
    .await?;
    let reached = |status: AgentStatus| record.audit.iter().any(|e| e.to == status);
    let requests = app.sandbox_requests().await?;
    if record.status == AgentStatus::Destroyed {
        assert!(reached(AgentStatus::Active), "provisioned: {:#?}", record.audit);
        assert_eq!(servers_created(&requests), 1, "one server, ever");
    } else {
        assert_eq!(record.status, AgentStatus::Draft, "{record:#?}");
        assert_eq!(servers_created(&requests), 0, "refused before a server: {record:#?}");
    }
    eprintln!("the catch-up's checkout ended the agent {} ({:?})", record.status, record.checkout_refusal);
    let state = app.sandbox_state().await?;
    assert_eq!(state["hetzner"]["servers"].as_array().map_or(0, Vec::len), 0, "destroyed: {state:#}");

    // Again: the events it fed are not fed twice, and nothing changes.
    let (_, again) = app.reconcile("stripe", true).await?;
    assert_eq!(
        (again["delivered"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(handled.len() as u64)),
        "{again:#}"
    );
    assert_eq!(
        again["recent"].as_array().map(Vec::len),
        Some(handled.len()),
        "kept to one window: {again:#}"
    );
    assert_eq!(servers_created(&app.sandbox_requests().await?), servers_created(&requests), "nothing new");
    assert_eq!(app.agent(&agent).await?.map(|a| a.status), Some(record.status));
    Ok(())
}

/// Two customers' checkouts Stripe could not deliver (the starter answered 503), while the
/// first customer's user has a provisioning in flight (its job dispatched to a runner that never
/// calls back): that user's checkout must wait in its agent when fed. It is created first, so
/// feeding in order reaches it before the other customer's.
struct BusyCustomer {
    first: String,
    second: String,
    other: String,
    /// The busy user's missed event, then the other customer's.
    missed: [String; 2],
}

async fn busy_customer_and_two_missed_checkouts(app: &TestApp) -> anyhow::Result<BusyCustomer> {
    app.reconciler_schedules(false).await?;
    let (busy_user, first, second) = (app.id("user"), app.id("first"), app.id("second"));
    let (other_user, other) = (app.id("other"), app.id("agent"));
    app.runner("silent").await?;
    let (event, _) = app.checkout_event(&busy_user, &first, "fsn1");
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    let dispatched = first.as_str();
    wait_until("the first provisioning's job is dispatched", WAIT, || async move {
        let state = app.sandbox_state().await?;
        let dispatches = state["github"]["dispatches"].as_array().cloned().unwrap_or_default();
        Ok(dispatches.iter().any(|d| d["inputs"]["agent_id"] == dispatched))
    })
    .await?;
    app.runner("succeed").await?;

    let offline = app.offline_starter().await?;
    app.sandbox_post(
        "/_sandbox/stripe/webhook_endpoint",
        json!({"url": format!("{offline}/webhooks/stripe")}),
    )
    .await?;
    let mut missed = Vec::new();
    for (user, agent) in [(&busy_user, &second), (&other_user, &other)] {
        let body = json!({"userId": user, "agentId": agent, "region": "fsn1"});
        let sent = app.sandbox_post("/_sandbox/stripe/checkout/complete", body).await?;
        missed.push(sent["event_id"].as_str().context("event id")?.to_owned());
    }
    app.stripe_events_attempted(2).await?;
    let missed = [missed[0].clone(), missed[1].clone()];
    Ok(BusyCustomer { first, second, other, missed })
}

/// The catch-up's first run over [`busy_customer_and_two_missed_checkouts`]: both events fed
/// and acknowledged (a checkout is durable at once, nothing is deferred), the other customer's
/// agent provisioned while the first provisioning still runs, the busy user's waiting in its
/// agent with the reason.
async fn first_run_feeds_both(app: &TestApp, c: &BusyCustomer) -> anyhow::Result<()> {
    let (_, report) = app.reconcile("stripe", true).await?;
    assert_eq!((report["listed"].as_u64(), report["delivered"].as_u64()), (Some(2), Some(2)), "{report:#}");
    assert_eq!((&report["refused"], &report["deferred"]), (&json!([]), &json!([])), "{report:#}");
    let record = app.wait_for_status(&c.other, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");
    assert_eq!(server_status(&app.sandbox_state().await?, &c.other).as_deref(), Some("running"));
    let waiting = app.wait_for_checkout_refusal(&c.second, "PROVISIONING_IN_PROGRESS").await?;
    assert_eq!(waiting.event_id, c.missed[0], "{waiting:?}");
    assert_eq!(
        app.agent(&c.first).await?.map(|a| a.status),
        Some(AgentStatus::Provisioning),
        "the other customer did not wait for the busy user"
    );
    assert_eq!(app.agent(&c.second).await?.map(|a| a.status), Some(AgentStatus::Draft));
    Ok(())
}

/// Servers the sandbox's Hetzner holds named for `agent`.
fn servers_named(state: &Value, agent: &str) -> usize {
    state["hetzner"]["servers"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["name"] == format!("slipway-{agent}")).count())
}

#[tokio::test]
async fn a_missed_checkout_of_a_busy_user_holds_no_other_customer_and_waits_in_its_agent()
-> anyhow::Result<()> {
    let app = TestApp::spawn_with(Options { stripe_delivery: Some((2, 50)), ..Options::default() }).await?;
    let c = busy_customer_and_two_missed_checkouts(&app).await?;
    first_run_feeds_both(&app, &c).await?;

    // The next run feeds neither again (both within its overlap).
    let (_, next) = app.reconcile("stripe", true).await?;
    assert_eq!(
        (next["listed"].as_u64(), next["skipped"].as_u64(), next["delivered"].as_u64()),
        (Some(2), Some(2), Some(0)),
        "{next:#}"
    );
    assert_eq!(next["deferred"], json!([]), "{next:#}");
    assert_eq!(app.agent(&c.first).await?.map(|a| a.status), Some(AgentStatus::Provisioning));
    assert_eq!(servers_named(&app.sandbox_state().await?, &c.other), 1, "the other customer's, once");
    assert_eq!(servers_named(&app.sandbox_state().await?, &c.second), 0, "the busy user's waits");
    Ok(())
}

#[tokio::test]
async fn a_github_delivery_the_starter_refused_is_redelivered_and_runs_its_job_once() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.reconciler_schedules(false).await?;
    let s = app.github_account(true).await?;
    let offline = app.offline_starter().await?;

    app.set_hook_url(&format!("{offline}/webhooks/github")).await?;
    let issue = github_events::issues(
        "opened",
        &s.repo,
        s.installation,
        1,
        "Add a buy button",
        "Please.",
        &["slipway"],
        "maintainer",
    );
    let sent =
        app.sandbox_post("/_sandbox/github/webhooks", json!({"event": "issues", "payload": issue})).await?;
    assert_eq!(sent["status"], 503, "{sent}");
    app.set_hook_url(&format!("{}/webhooks/github", app.starter_url)).await?;
    assert!(app.gateway().job_status(&job_workflow_id(&s.repo, 1)).await.is_err(), "no job yet");

    let (_, report) = app.reconcile("github", false).await?;
    assert_eq!(report["failed"], 1, "{report:#}");
    let redelivered = report["redelivered"].as_array().context("redelivered")?;
    assert_eq!(redelivered.len(), 1, "{report:#}");
    assert_eq!(redelivered[0]["guid"], sent["delivery_id"], "{report:#}");
    assert_eq!(
        (redelivered[0]["event"].as_str(), redelivered[0]["action"].as_str()),
        (Some("issues"), Some("opened"))
    );

    let job = wait_for("the redelivered issue becomes a PR", WAIT, || async {
        let job = app.gateway().job_status(&job_workflow_id(&s.repo, 1)).await.ok();
        Ok(job.filter(|j| j.state == JobState::PrOpened))
    })
    .await?;
    assert!(job.pr_number.is_some(), "{job:#?}");
    let runs = app.runs(&job_workflow_id(&s.repo, 1)).await?;
    assert_eq!(runs.first, runs.current, "the job ran once");
    let state = app.sandbox_state().await?;
    let pulls = state["github"]["pulls"]
        .as_array()
        .map_or(0, |p| p.iter().filter(|p| p["repo"] == s.repo.as_str()).count());
    assert_eq!(pulls, 1, "one PR: {state:#}");

    // Nothing is left to redeliver: its redelivery succeeded.
    let (_, again) = app.reconcile("github", true).await?;
    assert_eq!(
        (again["failed"].as_u64(), again["redelivered"].as_array().map(Vec::len)),
        (Some(0), Some(0)),
        "{again:#}"
    );
    Ok(())
}

fn keys(report: &Value, field: &str) -> Vec<String> {
    let mut keys: Vec<String> = report[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.as_str().map(str::to_owned).or_else(|| {
                Some(format!("{}/{}/{}", v["provider"].as_str()?, v["kind"].as_str()?, v["id"].as_str()?))
            })
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn an_orphan_is_reported_twice_seen_then_deleted_on_request_and_owned_resources_are_kept()
-> anyhow::Result<()> {
    // Slow callbacks keep a second agent's saga in flight through the sweeps.
    let app = TestApp::spawn_with(Options { runner_step_ms: 1_500, ..Options::default() }).await?;
    app.reconciler_schedules(false).await?;
    let (live_user, live) = (app.id("user"), app.id("live"));
    app.subscribe(&live_user, Some((&live, "fsn1"))).await?;
    let record = app.wait_for_status(&live, &[AgentStatus::Active], WAIT).await?;
    let live_server = record.server.as_ref().context("server")?.id;
    let (busy_user, busy) = (app.id("user2"), app.id("busy"));
    app.subscribe(&busy_user, Some((&busy, "fsn1"))).await?;
    app.wait_for_status(&busy, &[AgentStatus::Provisioning], WAIT).await?;
    // Resources under the names of an agent that existed and was destroyed (Temporal knows it
    // is gone), and under the names of one Temporal never knew (another deployment's, an
    // operator's own): only what carries this deployment's mark or its owner's record of its id
    // can be an orphan. The ghost's server carries the mark; its key (a name alone) does not.
    let ghost = app.destroyed_agent("gone").await?;
    let (ghost_server, ghost_key) = app.ghost_resources(&ghost).await?;
    let stranger = app.id("stranger");
    let (stranger_server, stranger_key) = app.ghost_resources(&stranger).await?;
    // A server another deployment sharing the Hetzner project made for an agent id this
    // deployment also had and destroyed: never listed. One made before deployments were marked:
    // kept, nothing proves it ours.
    let theirs = app.labelled_server(&app.destroyed_agent("theirs").await?, Some("staging")).await?;
    let legacy = app.labelled_server(&app.destroyed_agent("legacy").await?, None).await?;
    // A device that registered under the live agent's hostname: the agent recorded its own.
    let own_device = record.tailscale.as_ref().and_then(|t| t.device_id.clone()).context("device id")?;
    let joined = app.joined_device(&format!("slipway-{live}")).await?;
    let unowned = {
        let mut u = vec![
            format!("hetzner/server/{stranger_server}"),
            format!("tailscale/auth_key/{stranger_key}"),
            format!("tailscale/auth_key/{ghost_key}"),
            format!("hetzner/server/{legacy}"),
            format!("tailscale/device/{joined}"),
        ];
        u.sort();
        u
    };
    let orphans = vec![format!("hetzner/server/{ghost_server}")];

    // First sighting: suspects, not orphans yet.
    let (_, first) = app.reconcile("orphans", true).await?;
    assert_eq!(keys(&first, "suspects"), orphans, "{first:#}");
    assert_eq!(keys(&first, "orphans"), Vec::<String>::new(), "{first:#}");
    assert_eq!(keys(&first, "unowned"), unowned, "kept and reported: {first:#}");
    // Second: orphans, reported, not deleted (deleting is off).
    let (_, second) = app.reconcile("orphans", false).await?;
    assert_eq!(keys(&second, "orphans"), orphans, "{second:#}");
    assert_eq!(keys(&second, "deleted"), Vec::<String>::new());
    assert_eq!(keys(&second, "unowned"), unowned, "{second:#}");
    let listed = slipway(Some(&app), &["orphans"]).await?;
    assert!(listed.code == Some(0) && listed.stdout.contains(&format!("slipway-{ghost}")), "{listed}");
    assert!(
        listed.stdout.contains(&format!("slipway-{stranger}")) && listed.stdout.contains("not provably"),
        "{listed}"
    );
    eprintln!("$ slipway orphans\n{}", listed.stdout);
    let state = app.sandbox_state().await?;
    assert!(
        state["hetzner"]["servers"].as_array().context("servers")?.iter().any(|s| s["id"] == ghost_server)
    );

    // Asked once: deleted; the live agent's server and the saga in flight untouched.
    let deleted = slipway(Some(&app), &["orphans", "--delete"]).await?;
    assert_eq!(deleted.code, Some(0), "{deleted}");
    eprintln!("$ slipway orphans --delete\n{}", deleted.stdout);
    assert_eq!(
        keys(&app.reconcile("orphans", true).await?.1, "suspects"),
        Vec::<String>::new(),
        "nothing left"
    );
    let servers = server_ids(&app).await?;
    assert!(!servers.contains(&ghost_server) && servers.contains(&live_server), "{servers:?}");
    assert!(servers.contains(&stranger_server), "an unknown owner's server is never deleted: {servers:?}");
    assert!(servers.contains(&theirs) && servers.contains(&legacy), "{servers:?}");
    let state = app.sandbox_state().await?;
    let devices: Vec<&str> = state["tailscale"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["nodeId"].as_str())
        .collect();
    assert!(devices.contains(&joined.as_str()) && devices.contains(&own_device.as_str()), "{devices:?}");
    assert!(
        !keys(&first, "suspects")
            .iter()
            .chain(&keys(&first, "unowned"))
            .any(|k| k.ends_with(&format!("/{theirs}"))),
        "another deployment's server is not this sweep's to judge: {first:#}"
    );
    let record = app.wait_for_status(&busy, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");
    let deletes = app
        .sandbox_requests()
        .await?
        .into_iter()
        .filter(|r| r["method"] == "DELETE" && r["path"].as_str().is_some_and(|p| p.starts_with("/hetzner/")))
        .count();
    assert_eq!(deletes, 1, "only the ghost server was deleted");

    // With deleting on (SLIPWAY_SWEEP_DELETE), the schedule's own runs delete.
    app.reconciler_schedules(true).await?;
    let (server2, key2) = app.ghost_resources(&app.destroyed_agent("gone2").await?).await?;
    app.reconcile("orphans", true).await?;
    let (_, swept) = app.reconcile("orphans", true).await?;
    assert_eq!(keys(&swept, "deleted"), vec![format!("hetzner/server/{server2}")], "{swept:#}");
    let mut unowned = unowned;
    unowned.push(format!("tailscale/auth_key/{key2}"));
    unowned.sort();
    assert_eq!(keys(&swept, "unowned"), unowned, "{swept:#}");
    assert!(server_ids(&app).await?.contains(&stranger_server));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_with_deleting_on_never_touch_twenty_provisionings_through_a_worker_sigkill()
-> anyhow::Result<()> {
    const AGENTS: usize = 20;
    let app = TestApp::spawn_with(Options {
        worker_process: true,
        policy: slipway_proto::model::ProvisioningPolicy {
            callback_deadline_secs: 120,
            dispatch_deadline_secs: 60,
        },
        ..Options::default()
    })
    .await?;
    app.reconciler_schedules(true).await?;
    let agents: Vec<String> = (0..AGENTS).map(|i| app.id(&format!("agent{i}"))).collect();
    let events: Vec<String> =
        (0..AGENTS).map(|i| app.checkout_event(&app.id(&format!("user{i}")), &agents[i], "fsn1").0).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let deliveries = futures::future::join_all(events.iter().map(|body| {
        faults_support::deliver_until_accepted(&app, body, Duration::from_millis(500), deadline)
    }));
    // Sweeps (deleting on, no grace period) while the sagas run; the worker is SIGKILLed after
    // the second and restarted a second later, in the middle of the third.
    let sweeps = async {
        let mut reports = Vec::new();
        for i in 0..5 {
            if i == 2 {
                app.kill_worker()?;
                let restart = async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    app.start_worker()
                };
                let (report, restarted) = tokio::join!(app.reconcile("orphans", true), restart);
                restarted?;
                reports.push(report?.1);
            } else {
                reports.push(app.reconcile("orphans", true).await?.1);
            }
        }
        anyhow::Ok(reports)
    };
    let (answers, reports) = tokio::join!(deliveries, sweeps);
    for a in answers {
        a?;
    }
    let reports = reports?;
    faults_support::wait_settled(&app, AGENTS, Duration::from_secs(150)).await?;
    let records = faults_support::records(&app, &agents).await?;
    // The SIGKILL may fail a saga (its rollback complete, as `faults.rs` allows); the sweeps
    // must not have caused anything.
    let tally = faults_support::outcomes(&records)?;
    println!("{} active, {} failed and rolled back", tally.active.len(), tally.rolled_back.len());
    for r in &reports {
        assert_eq!((keys(r, "orphans"), keys(r, "deleted")), (vec![], vec![]), "{r:#}");
    }
    let listed: Vec<u64> = reports.iter().map(|r| r["listed"].as_u64().unwrap_or(0)).collect();
    println!("sweeps listed {listed:?} Slipway resources; none an orphan, none deleted");
    assert!(listed.iter().any(|n| *n > 0), "the sweeps saw the sagas' resources");
    let servers = server_ids(&app).await?;
    assert_eq!(servers.len(), tally.active.len(), "one server per active agent: {servers:?}");
    for agent in &tally.active {
        let server = records[agent].server.as_ref().map(|s| s.id);
        assert!(server.is_some_and(|id| servers.contains(&id)), "{agent}'s server is gone");
    }
    // No active agent's server was ever asked to be deleted (a failed saga's rollback deletes
    // its own).
    let deleted: Vec<String> = app
        .sandbox_requests()
        .await?
        .into_iter()
        .filter(|r| r["method"] == "DELETE")
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .collect();
    for agent in &tally.active {
        let id = records[agent].server.as_ref().map(|s| s.id).unwrap_or_default();
        assert!(!deleted.contains(&format!("/hetzner/v1/servers/{id}")), "{agent}'s server was deleted");
    }
    Ok(())
}
