//! What the fault-injection tests share: Stripe-like delivery with redelivery, waiting for many
//! agents to settle without asking the (possibly dead) worker, and the orphan check over the
//! sandbox inventory.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;
use slipway_proto::model::{AgentRecord, AgentStatus};
use slipway_tests::TestApp;

/// One answer of `/webhooks/stripe`.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// HTTP status; 0 if the request got no answer at all.
    pub(crate) status: u16,
    /// The error `code`, if any.
    pub(crate) code: Option<String>,
    /// `Retry-After`, if sent.
    pub(crate) retry_after: Option<String>,
}

/// POST a signed event once, the way one Stripe delivery attempt does.
pub(crate) async fn deliver(app: &TestApp, body: &str) -> Answer {
    deliver_to(app, &app.starter_url, body).await
}

/// [`deliver`] to the starter at `starter_url` (another starter of the app).
pub(crate) async fn deliver_to(app: &TestApp, starter_url: &str, body: &str) -> Answer {
    match app.post_stripe_to(starter_url, body).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after =
                resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            Answer { status, code: body["code"].as_str().map(str::to_owned), retry_after }
        }
        Err(_) => Answer { status: 0, code: None, retry_after: None },
    }
}

/// Deliver until a 2xx, as Stripe does (a fresh signature per attempt), pausing `pause` between
/// attempts (Stripe waits longer; the test compresses time). Returns every answer, in order.
pub(crate) async fn deliver_until_accepted(
    app: &TestApp,
    body: &str,
    pause: Duration,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Vec<Answer>> {
    deliver_until_accepted_to(app, &app.starter_url, body, pause, deadline).await
}

/// [`deliver_until_accepted`] to the starter at `starter_url`.
pub(crate) async fn deliver_until_accepted_to(
    app: &TestApp,
    starter_url: &str,
    body: &str,
    pause: Duration,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Vec<Answer>> {
    let mut answers = Vec::new();
    loop {
        let answer = deliver_to(app, starter_url, body).await;
        let ok = (200..300).contains(&answer.status);
        answers.push(answer);
        if ok {
            return Ok(answers);
        }
        if tokio::time::Instant::now() + pause > deadline {
            bail!("event never accepted; answers: {answers:?}");
        }
        tokio::time::sleep(pause).await;
    }
}

/// Count of `Agent` workflows of this test whose published status is one of `statuses`
/// (visibility: answered by the server even while no worker runs).
pub(crate) async fn count_agents(app: &TestApp, statuses: &[&str]) -> anyhow::Result<usize> {
    let list = statuses.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    let query =
        format!("TaskQueue = '{}' AND WorkflowType = 'Agent' AND SlipwayStatus IN ({list})", app.task_queue);
    Ok(app.client.count_workflows(query, Default::default()).await?.count())
}

/// Wait until `n` agents of this test are `active` or `failed`, printing progress now and then.
pub(crate) async fn wait_settled(app: &TestApp, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_print = tokio::time::Instant::now();
    loop {
        let settled = count_agents(app, &["active", "failed"]).await.unwrap_or(0);
        if settled >= n {
            return Ok(());
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!("  … {settled}/{n} agents settled");
            last_print = tokio::time::Instant::now();
        }
        if tokio::time::Instant::now() > deadline {
            bail!("only {settled} of {n} agents became active or failed within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every agent's record (workflow query), 8 at a time.
pub(crate) async fn records(
    app: &TestApp,
    agents: &[String],
) -> anyhow::Result<BTreeMap<String, AgentRecord>> {
    let results: Vec<_> = futures::stream::iter(agents.iter().cloned())
        .map(|a| async move {
            let rec = app.agent(&a).await;
            (a, rec)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut out = BTreeMap::new();
    for (agent, rec) in results {
        out.insert(agent.clone(), rec?.with_context(|| format!("agent {agent} unknown"))?);
    }
    Ok(out)
}

/// Tally of outcomes.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    /// Agents active.
    pub(crate) active: BTreeSet<String>,
    /// Agents failed and completely rolled back.
    pub(crate) rolled_back: BTreeSet<String>,
}

/// Every record must be `active`, or `failed` with a complete rollback.
pub(crate) fn outcomes(records: &BTreeMap<String, AgentRecord>) -> anyhow::Result<Outcomes> {
    let mut out = Outcomes::default();
    for (agent, rec) in records {
        match rec.status {
            AgentStatus::Active => {
                let server =
                    rec.server.as_ref().with_context(|| format!("{agent}: active without server"))?;
                anyhow::ensure!(server.name == format!("slipway-{agent}"), "{agent}: {rec:#?}");
                out.active.insert(agent.clone());
            }
            AgentStatus::Failed => {
                let reason = rec.failure_reason.clone().unwrap_or_default();
                anyhow::ensure!(
                    reason.contains("rolled back") && !reason.contains("rollback incomplete"),
                    "{agent} failed without a complete rollback: {reason}"
                );
                out.rolled_back.insert(agent.clone());
            }
            other => bail!("{agent} ended {other:?}: {rec:#?}"),
        }
    }
    Ok(out)
}

/// What the sandbox holds, per agent.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    /// Hetzner servers by agent label.
    pub(crate) servers: BTreeMap<String, usize>,
    /// Tailscale auth keys by agent (from the description `slipway agent <id>`).
    pub(crate) keys: BTreeMap<String, usize>,
    /// Tailscale devices by agent (from the hostname `slipway-<id>`).
    pub(crate) devices: BTreeMap<String, usize>,
}

impl Inventory {
    /// Read from `/_sandbox/state`.
    pub(crate) fn of(state: &Value) -> anyhow::Result<Self> {
        let mut inv = Self::default();
        for s in state["hetzner"]["servers"].as_array().context("servers")? {
            let agent = s["labels"]["slipway-agent"].as_str().unwrap_or("<unlabelled>").to_owned();
            *inv.servers.entry(agent).or_default() += 1;
        }
        for k in state["tailscale"]["keys"].as_array().context("keys")? {
            let d = k["description"].as_str().unwrap_or_default();
            let agent = d.strip_prefix("slipway agent ").unwrap_or(d).to_owned();
            *inv.keys.entry(agent).or_default() += 1;
        }
        for d in state["tailscale"]["devices"].as_array().context("devices")? {
            let h = d["hostname"].as_str().unwrap_or_default();
            let agent = h.strip_prefix("slipway-").unwrap_or(h).to_owned();
            *inv.devices.entry(agent).or_default() += 1;
        }
        Ok(inv)
    }

    /// No resource belongs to anything but an active agent, and no active agent has two of a
    /// kind; every active agent has its server.
    pub(crate) fn check_no_orphans(&self, active: &BTreeSet<String>) -> anyhow::Result<()> {
        for (kind, map) in [("server", &self.servers), ("auth key", &self.keys), ("device", &self.devices)] {
            for (agent, n) in map {
                anyhow::ensure!(active.contains(agent), "orphan: {n} {kind}(s) of non-active agent {agent}");
                anyhow::ensure!(*n == 1, "{n} {kind}s for agent {agent} (one expected)");
            }
        }
        for agent in active {
            anyhow::ensure!(self.servers.contains_key(agent), "active agent {agent} has no server");
        }
        Ok(())
    }

    /// `servers/keys/devices` totals, for the report.
    pub(crate) fn totals(&self) -> (usize, usize, usize) {
        let sum = |m: &BTreeMap<String, usize>| m.values().sum();
        (sum(&self.servers), sum(&self.keys), sum(&self.devices))
    }
}
