//! Fault injection: the worker process is SIGKILLed at random moments while 100 provisionings
//! run. Whatever was in flight, every provisioning must end `active` or `failed` and rolled
//! back, and the sandbox inventory must hold nothing that does not belong to an active agent.
//!
//! The worker is the real `slipway-worker` binary in its own process (a thread cannot be
//! SIGKILLed). Each kill waits until the running worker has moved some agent forward, then a
//! random 0.5–3 s; the worker stays dead a random 0.1–1 s. The delays come from a seeded RNG;
//! the seed is printed, and `SLIPWAY_FAULT_SEED=<seed>` replays the same delays.

mod faults_support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use slipway_proto::model::ProvisioningPolicy;
use slipway_tests::{Options, SeededRng, TestApp};

use faults_support::{
    Inventory, count_agents, deliver_until_accepted, deliver_until_accepted_to, outcomes, records,
    wait_settled,
};

/// How many provisionings run at once (one user each: one provisioning per user at a time).
const PROVISIONINGS: usize = 100;
/// How many times the worker is killed.
const KILLS: usize = 3;

/// A number that grows with every agent transition (draft → provisioning → active/failed).
async fn progress(app: &TestApp) -> usize {
    let provisioning = count_agents(app, &["provisioning"]).await.unwrap_or(0);
    let settled = count_agents(app, &["active", "failed"]).await.unwrap_or(0);
    provisioning + 2 * settled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_leaves_every_provisioning_finished_and_no_orphans() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut rng = SeededRng::from_env("SLIPWAY_FAULT_SEED");
    println!("seed {} (SLIPWAY_FAULT_SEED={} to replay the kill schedule)", rng.seed, rng.seed);
    let app = TestApp::spawn_with(Options {
        worker_process: true,
        // Generous deadlines: a job's callback may arrive while no worker runs.
        policy: ProvisioningPolicy { callback_deadline_secs: 120, dispatch_deadline_secs: 60 },
        ..Options::default()
    })
    .await?;
    let agents: Vec<String> = (0..PROVISIONINGS).map(|i| app.id(&format!("agent{i}"))).collect();
    // Paid checkouts need no subscription on the webhook path (only the API gates on one).
    let events: Vec<(String, String)> = (0..PROVISIONINGS)
        .map(|i| app.checkout_event(&app.id(&format!("user{i}")), &agents[i], "fsn1"))
        .collect();

    // Stripe delivers the 100 events (50 connections at a time) and redelivers any non-2xx,
    // while the worker is killed and restarted on the seeded schedule.
    let schedule: Vec<(Duration, Duration)> =
        (0..KILLS).map(|_| (rng.millis(500, 3_000), rng.millis(100, 1_000))).collect();
    // One budget for the whole test, so it stays bounded however slow the machine is.
    let overall = tokio::time::Instant::now() + Duration::from_secs(170);
    let deadline = overall - Duration::from_secs(30);
    let deliveries = futures::stream::iter(events.iter())
        .map(|(body, _)| deliver_until_accepted(&app, body, Duration::from_millis(500), deadline))
        .buffer_unordered(50)
        .collect::<Vec<_>>();
    let kill_loop = async {
        let mut kills = Vec::new();
        let mut in_flight_at_kills = 0;
        for (before, down) in &schedule {
            // Kill a worker that is doing something: wait until an agent changed state since it
            // started, then for the random delay.
            let baseline = progress(&app).await;
            let waited = tokio::time::Instant::now();
            while progress(&app).await <= baseline && waited.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(*before).await;
            let pid = app.kill_worker()?;
            let at = started.elapsed();
            // What the dead worker left in flight (visibility answers without a worker).
            let provisioning = count_agents(&app, &["provisioning"]).await.unwrap_or(0);
            let active = count_agents(&app, &["active"]).await.unwrap_or(0);
            in_flight_at_kills += provisioning;
            tokio::time::sleep(down.saturating_sub(started.elapsed().saturating_sub(at))).await;
            app.start_worker()?;
            kills.push(format!(
                "SIGKILL pid {pid} at {at:.1?} ({provisioning} provisioning, {active} active), down {down:?}"
            ));
        }
        anyhow::Ok((kills, in_flight_at_kills))
    };
    let (answers, kills) = tokio::join!(deliveries, kill_loop);
    let (kills, in_flight_at_kills) = kills?;
    let answers = answers.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    for k in &kills {
        println!("  {k}");
    }
    assert!(in_flight_at_kills > 0, "no kill hit a provisioning in flight");
    let redelivered = answers.iter().filter(|a| a.len() > 1).count();
    let non_2xx: usize = answers.iter().map(|a| a.len() - 1).sum();
    println!(
        "deliveries: {PROVISIONINGS} events accepted; {redelivered} needed redelivery ({non_2xx} non-2xx answers)"
    );
    for a in answers.iter().flatten().filter(|a| !(200..300).contains(&a.status)) {
        // The starter answers 2xx only once the Agent workflow took the update, which needs a
        // worker: with none alive it must say "retry later" (503), nothing else.
        assert_eq!((a.status, a.code.as_deref()), (503, Some("TEMPORAL_UNAVAILABLE")), "{a:?}");
    }

    // Every provisioning finishes: Temporal times out the activities the dead workers held and
    // retries them on the live one.
    wait_settled(&app, PROVISIONINGS, overall.saturating_duration_since(tokio::time::Instant::now())).await?;
    let records = records(&app, &agents).await?;
    let tally = outcomes(&records)?;
    let state = app.sandbox_state().await?;
    let inventory = Inventory::of(&state)?;
    let (servers, keys, devices) = inventory.totals();
    println!(
        "outcomes: {} active, {} failed and rolled back; inventory: {servers} servers, {keys} keys, \
         {devices} devices; {:.1?} in all",
        tally.active.len(),
        tally.rolled_back.len(),
        started.elapsed()
    );
    for agent in &tally.rolled_back {
        println!("  {agent}: {}", records[agent].failure_reason.clone().unwrap_or_default());
    }
    inventory.check_no_orphans(&tally.active)?;
    // The server each active agent records is the one in the inventory.
    for agent in &tally.active {
        let recorded = records[agent].server.as_ref().map(|s| s.id);
        let actual = state["hetzner"]["servers"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["labels"]["slipway-agent"] == agent.as_str()))
            .and_then(|s| s["id"].as_u64());
        assert_eq!(recorded, actual, "{agent}");
    }
    assert_eq!(tally.active.len() + tally.rolled_back.len(), PROVISIONINGS);
    app.stop().await;
    Ok(())
}

/// What a worker process's Prometheus endpoint says it ran: workflow tasks and activities
/// (the SDK's own counters, summed over their labels).
async fn work_done(app: &TestApp, addr: std::net::SocketAddr) -> anyhow::Result<(f64, f64)> {
    let text = app.http.get(format!("http://{addr}/metrics")).send().await?.text().await?;
    let sum = |metric: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok((
        sum("temporal_workflow_task_execution_latency_seconds_count"),
        sum("temporal_activity_execution_latency_seconds_count"),
    ))
}

/// Scale-out on one Temporal server: three `slipway-worker` processes and two `slipway-starter`
/// processes. 200 paid checkouts (each its customer's billing event) are delivered to both
/// starters at once, as a duplicate delivery would; one worker is SIGKILLed once a third of the
/// agents are active, and started again. Every agent ends active with exactly one server, key and
/// device, nothing else is left in the sandbox, and every worker process ran part of the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_and_two_starters_share_the_work_and_survive_a_sigkill() -> anyhow::Result<()> {
    const N: usize = 200;
    const VICTIM: usize = 1;
    let started = Instant::now();
    let app = TestApp::spawn_with(Options {
        worker_process: true,
        worker_processes: 3,
        worker_metrics: true,
        policy: ProvisioningPolicy { callback_deadline_secs: 120, dispatch_deadline_secs: 60 },
        ..Options::default()
    })
    .await?;
    let second = app.spawn_starter_process().await?;
    let starters = [app.starter_url.clone(), second.url().to_owned()];
    let agents: Vec<String> = (0..N).map(|i| app.id(&format!("scale{i}"))).collect();
    let events: Vec<String> =
        (0..N).map(|i| app.checkout_event(&app.id(&format!("scaleuser{i}")), &agents[i], "fsn1").0).collect();

    let overall = tokio::time::Instant::now() + Duration::from_secs(360);
    let deliveries = futures::stream::iter(events.iter().flat_map(|e| starters.iter().map(move |s| (s, e))))
        .map(|(starter, event)| {
            deliver_until_accepted_to(
                &app,
                starter,
                event,
                Duration::from_millis(500),
                overall - Duration::from_secs(60),
            )
        })
        .buffer_unordered(50)
        .collect::<Vec<_>>();
    let kill = async {
        slipway_tests::wait_until("a third of the agents active", Duration::from_secs(180), || async {
            Ok(count_agents(&app, &["active"]).await.unwrap_or(0) >= N / 3)
        })
        .await?;
        let before = work_done(&app, app.worker_metrics_addrs[VICTIM]).await?;
        let pid = app.kill_worker_at(VICTIM)?;
        let in_flight = count_agents(&app, &["provisioning"]).await.unwrap_or(0);
        app.start_worker_at(VICTIM)?;
        println!(
            "SIGKILL worker {VICTIM} (pid {pid}) at {:.1?}, {in_flight} provisionings in flight; restarted",
            started.elapsed()
        );
        anyhow::Ok(before)
    };
    let (answers, before_kill) = tokio::join!(deliveries, kill);
    let before_kill = before_kill?;
    let answers = answers.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "{} deliveries accepted ({} needed more than one attempt)",
        answers.len(),
        answers.iter().filter(|a| a.len() > 1).count()
    );

    wait_settled(&app, N, overall.saturating_duration_since(tokio::time::Instant::now())).await?;
    let records = records(&app, &agents).await?;
    let tally = outcomes(&records)?;
    let failed: Vec<String> = tally
        .rolled_back
        .iter()
        .map(|agent| format!("{agent}: {}", records[agent].failure_reason.clone().unwrap_or_default()))
        .collect();
    assert!(failed.is_empty(), "every provisioning ends active: {failed:#?}");
    let state = app.sandbox_state().await?;
    let inventory = Inventory::of(&state)?;
    inventory.check_no_orphans(&tally.active)?;
    assert_eq!(inventory.totals(), (N, N, N), "one server, key and device per agent");

    // Every worker ran part of it (the victim: before its kill, or after its restart).
    let mut split = Vec::new();
    for (i, addr) in app.worker_metrics_addrs.iter().enumerate() {
        let mut done = work_done(&app, *addr).await?;
        if i == VICTIM {
            done = (done.0 + before_kill.0, done.1 + before_kill.1);
        }
        split.push(done);
    }
    println!(
        "per worker (workflow tasks, activities): {}; {N} agents active in {:.1?}",
        split
            .iter()
            .enumerate()
            .map(|(i, (w, a))| format!("worker {i}: {w}, {a}"))
            .collect::<Vec<_>>()
            .join("; "),
        started.elapsed()
    );
    for (i, (tasks, activities)) in split.iter().enumerate() {
        assert!(*tasks > 0.0 && *activities > 0.0, "worker {i} ran nothing: {split:?}");
    }
    app.stop().await;
    Ok(())
}
