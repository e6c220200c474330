//! Fault injection: the Temporal server crashes (SIGKILL) and comes back on its persistent
//! database in the middle of a burst of Stripe webhooks.
//!
//! Every event answered 2xx must have its effect (the agent provisioned); events that arrived
//! while Temporal was down must have been answered 503 `TEMPORAL_UNAVAILABLE` with
//! `Retry-After`, so Stripe redelivers them, and redelivered they are processed. Each event has
//! exactly one effect, however its deliveries went.
//!
//! The test runs its own dev server (`--db-filename` in a temporary directory, the search
//! attributes registered as `scripts/common.sh` does), found like the harness finds it
//! (`SLIPWAY_TEST_TEMPORAL_CLI`, the project's `.venv`, or `PATH`).

mod faults_support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use slipway_proto::model::AgentStatus;
use slipway_tests::{Options, SEARCH_ATTRIBUTES, TestApp};
use tokio::task::JoinSet;

use faults_support::{Answer, Inventory, deliver, deliver_until_accepted, outcomes, records, wait_settled};

/// Events in the burst, one every `GAP`.
const EVENTS: usize = 40;
const GAP: Duration = Duration::from_millis(300);

fn temporal_cli() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("SLIPWAY_TEST_TEMPORAL_CLI") {
        return Ok(p.into());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/temporal");
    if venv.is_file() {
        return Ok(venv);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("temporal")).find(|p| p.is_file()))
        .context("no Temporal CLI: run scripts/test once, or put `temporal` on PATH")
}

/// A Temporal dev server on a fixed port and SQLite file, which the test can crash and restart.
struct DevServer {
    cli: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl DevServer {
    async fn start(dir: PathBuf) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self { cli: temporal_cli()?, port, dir, child: None, starts: 0 };
        server.restart().await?;
        Ok(server)
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("temporal-{}.log", self.starts)))?;
        let mut cmd = Command::new(&self.cli);
        cmd.args(["server", "start-dev", "--ip", "127.0.0.1", "--headless", "--log-level", "warn"])
            .args(["--port", &self.port.to_string()])
            .arg("--db-filename")
            .arg(self.dir.join("temporal.db"));
        for sa in SEARCH_ATTRIBUTES {
            cmd.args(["--search-attribute", &format!("{sa}=Keyword")]);
        }
        self.child = Some(cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let healthy = Command::new(&self.cli)
                .args(["operator", "cluster", "health", "--address", &self.address()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if healthy {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!("Temporal dev server exited with {status}; see {}", self.dir.display());
            }
            anyhow::ensure!(Instant::now() < deadline, "Temporal dev server not healthy in 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL: a crash, not a shutdown.
    fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One first delivery: which event, when it was sent and answered, and the answer.
struct FirstDelivery {
    event: usize,
    sent: Instant,
    answered: Instant,
    answer: Answer,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_during_a_temporal_crash_are_refused_then_processed_once() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("slipway-faults-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let mut server = DevServer::start(dir).await?;
    println!("Temporal dev server on {} with {}", server.address(), server.dir.join("temporal.db").display());
    let app = std::sync::Arc::new(
        TestApp::spawn_with(Options { temporal_address: Some(server.address()), ..Options::default() })
            .await?,
    );
    let agents: Vec<String> = (0..EVENTS).map(|i| app.id(&format!("agent{i}"))).collect();
    let events: Vec<(String, String)> =
        (0..EVENTS).map(|i| app.checkout_event(&app.id(&format!("user{i}")), &agents[i], "hel1")).collect();

    // The burst: Stripe sends one event every GAP, each in its own request.
    let mut burst = JoinSet::new();
    let sender = {
        let (app, events) = (app.clone(), events.clone());
        async move {
            for (i, (body, _)) in events.into_iter().enumerate() {
                let app = app.clone();
                burst.spawn(async move {
                    let sent = Instant::now();
                    let answer = deliver(&app, &body).await;
                    FirstDelivery { event: i, sent, answered: Instant::now(), answer }
                });
                tokio::time::sleep(GAP).await;
            }
            burst.join_all().await
        }
    };
    // Meanwhile Temporal crashes 40% of the way in and stays down for 6 s (longer than the
    // starter's 3 s Temporal timeout, so some requests start and end in the outage).
    let outage = async {
        tokio::time::sleep(GAP * (EVENTS as u32) * 2 / 5).await;
        server.kill()?;
        let down = Instant::now();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let restarting = Instant::now();
        server.restart().await?;
        anyhow::Ok((down, restarting, Instant::now()))
    };
    let (firsts, outage) = tokio::join!(sender, outage);
    let (down, restarting, up) = outage?;
    println!(
        "Temporal killed at {:.1?}, restart began at {:.1?}, healthy at {:.1?}",
        down - started,
        restarting - started,
        up - started
    );

    // First answers: 2xx (accepted) or 503 TEMPORAL_UNAVAILABLE with Retry-After; nothing else.
    let mut refused = Vec::new();
    let mut accepted = 0;
    for d in &firsts {
        let a = &d.answer;
        let window = format!("sent {:.1?}, answered {:.1?}", d.sent - started, d.answered - started);
        if (200..300).contains(&a.status) {
            accepted += 1;
            // Sent and answered entirely while the server was dead is impossible to accept.
            assert!(
                !(d.sent > down && d.answered < restarting),
                "event {} accepted while down ({window})",
                d.event
            );
        } else {
            assert_eq!(
                (a.status, a.code.as_deref()),
                (503, Some("TEMPORAL_UNAVAILABLE")),
                "event {}: {a:?}",
                d.event
            );
            assert!(a.retry_after.is_some(), "503 without Retry-After: {a:?}");
            refused.push(d.event);
        }
    }
    println!("first deliveries: {accepted} accepted, {} refused with 503: {refused:?}", refused.len());
    assert!(!refused.is_empty(), "the outage refused no event: it did not hit the burst");
    assert!(accepted > 0, "no event accepted at all");
    let sent_while_down = firsts.iter().filter(|d| d.sent > down && d.answered < restarting).count();
    let before = firsts.iter().filter(|d| d.answered < down).count();
    println!("{before} answered before the crash, {sent_while_down} sent and answered during the outage");
    assert!(sent_while_down > 0, "no event was sent and answered entirely during the outage");

    // Stripe redelivers the refused events (and, to be sure, every accepted one once more:
    // a redelivery of an accepted event must not act again).
    let overall = tokio::time::Instant::now() + Duration::from_secs(120);
    let deadline = overall - Duration::from_secs(40);
    let redeliveries = futures::future::join_all(
        refused
            .iter()
            .map(|i| deliver_until_accepted(&app, &events[*i].0, Duration::from_millis(500), deadline)),
    )
    .await;
    for (i, answers) in refused.iter().zip(redeliveries) {
        let n = answers?.len();
        if n > 1 {
            println!("  event {i}: redelivered {n} times until accepted");
        }
    }
    for (i, (body, _)) in events.iter().enumerate().filter(|(i, _)| !refused.contains(i)) {
        let again = deliver(&app, body).await;
        assert!((200..300).contains(&again.status), "redelivery of accepted event {i}: {again:?}");
    }

    // Every event had its effect, exactly once.
    wait_settled(&app, EVENTS, overall.saturating_duration_since(tokio::time::Instant::now())).await?;
    let records = records(&app, &agents).await?;
    let tally = outcomes(&records)?;
    let reasons: Vec<(&String, Option<&String>)> =
        tally.rolled_back.iter().map(|a| (a, records[a].failure_reason.as_ref())).collect();
    assert_eq!(tally.active.len(), EVENTS, "rolled back: {reasons:?}");
    for (i, agent) in agents.iter().enumerate() {
        let audit = &records[agent].audit;
        let starts: Vec<_> = audit.iter().filter(|a| a.to == AgentStatus::Provisioning).collect();
        assert_eq!(starts.len(), 1, "{agent}: {audit:#?}");
        assert_eq!(starts[0].actor, format!("stripe:{}", events[i].1), "{agent}");
    }
    let state = app.sandbox_state().await?;
    let inventory = Inventory::of(&state)?;
    inventory.check_no_orphans(&tally.active)?;
    let dispatches = state["github"]["dispatches"].as_array().map_or(0, Vec::len);
    assert_eq!(dispatches, EVENTS, "one bootstrap job per event");
    println!(
        "{EVENTS} events, {EVENTS} agents active, inventory {:?}, {dispatches} dispatches; {:.1?} in all",
        inventory.totals(),
        started.elapsed()
    );
    drop(app);
    drop(server);
    Ok(())
}
