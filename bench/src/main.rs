//! `slipway-bench`: Slipway measured side by side with bare-Temporal baselines, on a local
//! Temporal dev server it starts itself. Run it through `scripts/bench` (which builds it and the
//! binaries under test); BENCHMARKS.md explains the method and the figures.
//!
//! ```text
//! slipway-bench [--quick] [--out DIR] [--bin-dir DIR] [--temporal PATH] [--temporal-port PORT]
//! slipway-bench baseline-worker      # internal: the baseline's worker process
//! ```

/// `[bench  12.3s] message` on stderr: the time since start shows where a run spends its minutes.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("[bench {:>6.1}s] {}", crate::started().elapsed().as_secs_f64(), format_args!($($arg)*))
    };
}

mod baseline;
mod load;
mod plot;
mod stack;

use std::{
    path::PathBuf,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use slipway_proto::{
    billing::{
        BillingEvent, BillingEventKind, BillingPolicy, BillingState, SubscriptionInput, customer_workflow_id,
    },
    model::{
        AgentCommand, AgentRecord, CommandOutcome, CommandRequest, LifecyclePolicy, ProvisioningPolicy,
        agent_workflow_id, provisioning_workflow_id,
    },
};
use slipway_starter::Gateway;
use slipway_workflows::{ProvisionAgentWorkflow, SubscriptionWorkflow, search_attributes};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowExecutionStatus,
    WorkflowGetResultOptions, WorkflowListOptions, WorkflowStartOptions, errors::WorkflowGetResultError,
};
use temporalio_common::search_attributes::SearchAttributes;

use crate::{
    baseline::{BaselineSagaWorkflow, SAGA_ACTIVITIES},
    load::Stats,
    stack::{Bins, Stack},
};

/// A client to the dev server at `address` (`host:port`).
pub async fn connect(address: &str) -> anyhow::Result<Client> {
    let url = Url::from_str(&format!("http://{address}"))?;
    let conn =
        Connection::connect(ConnectionOptions::new(url).identity("slipway-bench".to_owned()).build()).await?;
    Ok(Client::new(conn, ClientOptions::new("default").build())?)
}

/// When the bench started (first call).
fn started() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Sizes of one run.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    ack_rates: Vec<f64>,
    ack_phase_secs: u64,
    saturation_concurrency: usize,
    sagas: usize,
    agents: usize,
    command_samples: usize,
    command_rate: f64,
    history_commands: usize,
    sticky_cache: usize,
    history_limit: u32,
}

impl Plan {
    fn full() -> Self {
        Self {
            ack_rates: vec![50.0, 100.0, 200.0],
            ack_phase_secs: 5,
            saturation_concurrency: 64,
            sagas: 200,
            agents: 10_000,
            command_samples: 300,
            command_rate: 20.0,
            history_commands: 5_000,
            sticky_cache: 1000,
            history_limit: 5_000,
        }
    }

    fn quick() -> Self {
        Self {
            ack_rates: vec![50.0, 100.0, 200.0],
            ack_phase_secs: 3,
            saturation_concurrency: 32,
            sagas: 30,
            agents: 1_500,
            command_samples: 60,
            command_rate: 20.0,
            history_commands: 1_200,
            sticky_cache: 1000,
            history_limit: 5_000,
        }
    }
}

struct Args {
    quick: bool,
    out: PathBuf,
    bins: PathBuf,
    temporal: PathBuf,
    temporal_port: Option<u16>,
}

fn parse_args() -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let mut args = Args {
        quick: false,
        out: PathBuf::from(".state/bench"),
        bins: exe.parent().context("binary directory")?.to_path_buf(),
        temporal: PathBuf::from(".venv/bin/temporal"),
        temporal_port: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--out" => args.out = value()?.into(),
            "--bin-dir" => args.bins = value()?.into(),
            "--temporal" => args.temporal = value()?.into(),
            "--temporal-port" => args.temporal_port = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "slipway-bench [--quick] [--out DIR] [--bin-dir DIR] [--temporal PATH] [--temporal-port PORT]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("baseline-worker") {
        return baseline::run_worker().await;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = parse_args()?;
    let plan = if args.quick { Plan::quick() } else { Plan::full() };
    std::fs::create_dir_all(&args.out)?;
    let began = started();
    let port = match args.temporal_port {
        Some(p) => p,
        None => stack::free_port()?,
    };
    let bins = Bins { dir: args.bins.clone(), temporal: args.temporal.clone() };
    say!("starting Temporal (in-memory dev server), sandbox, starter, worker, baseline worker");
    let mut stack = Stack::start(&bins, &args.out, port).await?;
    let bench = Bench::new(&stack, plan.clone()).await?;
    // Ctrl-C / SIGTERM end the run with every process stopped (the stack stops them on drop).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        r = bench.run(&mut stack) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            say!("failed: {e:#}; process logs are in {}", args.out.display());
            return Err(e);
        }
    };
    let report = Report { run_secs: began.elapsed().as_secs_f64(), quick: args.quick, ..report };
    let json_path = args.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let png = args.out.join("ack-latency.png");
    let point = |load: f64, s: &Stats| plot::Point { load, p50: s.p50_ms, p99: s.p99_ms };
    let open: Vec<&AckRow> = report.ack.iter().filter(|r| r.offered_per_sec.is_some()).collect();
    let saturation = report.ack.iter().find(|r| r.offered_per_sec.is_none()).map(|r| {
        (point(r.slipway.achieved_per_sec, &r.slipway), point(r.baseline.achieved_per_sec, &r.baseline))
    });
    let plot = plot::ack_latency(
        &png,
        "Stripe webhook ack latency: Slipway starter vs raw signal-with-start",
        &open.iter().map(|r| point(r.offered_per_sec.unwrap_or_default(), &r.slipway)).collect::<Vec<_>>(),
        &open.iter().map(|r| point(r.offered_per_sec.unwrap_or_default(), &r.baseline)).collect::<Vec<_>>(),
        saturation,
    );
    print_table(&report);
    let md_path = args.out.join("results.md");
    std::fs::write(&md_path, markdown(&report))?;
    println!("\nresults: {} (and {}, the tables for BENCHMARKS.md)", json_path.display(), md_path.display());
    match plot {
        Ok(()) => println!("plot:    {}", png.display()),
        Err(e) => println!("plot:    not drawn: {e:#}"),
    }
    Ok(())
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
struct Report {
    quick: bool,
    run_secs: f64,
    machine: Machine,
    plan: Plan,
    worker_tuning: Vec<(String, String)>,
    ack_event: String,
    ack: Vec<AckRow>,
    provisioning: SagaRow,
    scale: ScaleRow,
    history: HistoryRow,
}

#[derive(Debug, Clone, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    memory_gib: f64,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            cpu_model,
            memory_gib: (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct AckRow {
    /// Offered rate; `None` at saturation (closed loop).
    offered_per_sec: Option<f64>,
    slipway: Stats,
    baseline: Stats,
    /// Slipway p50 / baseline p50.
    p50_ratio: f64,
    /// Slipway p99 / baseline p99.
    p99_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
struct SagaSide {
    completed: usize,
    failed: usize,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Checkout webhooks answered 503 and sent again.
    webhook_retries: usize,
    first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct SagaRow {
    concurrent: usize,
    activities_per_saga: u32,
    slipway: SagaSide,
    baseline: SagaSide,
    /// Slipway sagas/s over baseline sagas/s.
    throughput_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
struct ScaleRow {
    agents: usize,
    create_per_sec: f64,
    create_errors: usize,
    sticky_cache: usize,
    worker_rss_mib_before: f64,
    worker_rss_mib_after_create: f64,
    worker_rss_mib_after_commands: f64,
    command_in_cache: Stats,
    command_not_in_cache: Stats,
}

#[derive(Debug, Clone, Serialize)]
struct HistoryRow {
    commands: usize,
    errors: usize,
    secs: f64,
    history_limit: u32,
    current_run_history_length: i64,
    longest_run_history_length: i64,
    total_runs: usize,
    bounded: bool,
    first_error: Option<String>,
}

struct Bench {
    /// Worker processes (Slipway's, baseline's), to wait for them to go idle between phases.
    workers: [u32; 2],
    plan: Plan,
    client: Client,
    gateway: Gateway,
    http: reqwest::Client,
    starter_url: String,
    tag: String,
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn sign(payload: &str) -> String {
    let t = now_secs();
    let mut mac = Hmac::<Sha256>::new_from_slice(stack::STRIPE_WEBHOOK_SECRET.as_bytes()).expect("any key");
    mac.update(format!("{t}.{payload}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// `invoice.paid` for customer `cus`: the starter maps it to one signal-with-start.
fn invoice_paid(event_id: &str, cus: &str, invoice: &str) -> Value {
    // Stripe's real shapes (the sandbox's builders, from Stripe's own example objects), so the
    // starter does the work a real delivery costs: the full typed parse of the verified event.
    let now = now_secs();
    let object = slipway_sandbox::stripe::invoice_object(invoice, cus, &format!("sub_{cus}"), "paid", now);
    slipway_sandbox::stripe::event("invoice.paid", object, now, Some(event_id.to_owned()))
}

/// A paid `checkout.session.completed` for agent `agent` of `user`.
fn checkout_completed(event_id: &str, agent: &str, user: &str, cus: &str) -> Value {
    slipway_sandbox::stripe::checkout_session_completed_event(&slipway_sandbox::stripe::CheckoutArgs {
        user_id: user.to_owned(),
        agent_id: agent.to_owned(),
        region: "fsn1".to_owned(),
        customer_id: Some(cus.to_owned()),
        event_id: Some(event_id.to_owned()),
    })
}

impl Bench {
    async fn new(stack: &Stack, plan: Plan) -> anyhow::Result<Self> {
        let client = connect(&stack.temporal_address).await?;
        let url = Url::from_str(&format!("http://{}", stack.temporal_address))?;
        let gateway =
            Gateway::for_address(url, "default", stack::TASK_QUEUE.to_owned(), Duration::from_secs(30));
        let http = reqwest::Client::builder().pool_max_idle_per_host(512).build()?;
        let tag = format!("{:x}", now_secs() % 0xffff_ffff);
        let workers = [stack.worker.pid(), stack.baseline_worker.pid()];
        Ok(Self { workers, plan, client, gateway, http, starter_url: stack.starter_url.clone(), tag })
    }

    async fn post_stripe(&self, body: Value) -> Result<Value, String> {
        post_stripe(&self.http, &self.starter_url, body).await
    }

    async fn run(&self, stack: &mut Stack) -> anyhow::Result<Report> {
        self.warm_up().await?;
        self.settle().await;
        stack.check_alive()?;
        let rss_idle = stack.worker.rss_kib().unwrap_or(0);
        let ack = self.ack_latency().await?;
        stack.check_alive()?;
        let provisioning = self.provisioning().await?;
        stack.check_alive()?;
        let history = self.history().await?;
        self.settle().await;
        stack.check_alive()?;
        let scale = self.scale(stack, rss_idle).await?;
        stack.check_alive()?;
        Ok(Report {
            quick: false,
            run_secs: 0.0,
            machine: Machine::read(),
            plan: self.plan.clone(),
            worker_tuning: stack::WORKER_TUNING
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ack_event: "invoice.paid → signal-with-start of Subscription (customer-<cus>)".to_owned(),
            ack,
            provisioning,
            scale,
            history,
        })
    }

    /// One saga through each path, so connections, caches and the JIT-less but lazy parts of
    /// every process are warm before anything is timed.
    async fn warm_up(&self) -> anyhow::Result<()> {
        say!("warm-up: one provisioning saga and one baseline saga");
        let deadline = Instant::now() + Duration::from_secs(60);
        let id = format!("warm-{}", self.tag);
        loop {
            let r = self
                .post_stripe(checkout_completed(
                    &format!("evt_{id}"),
                    &id,
                    &format!("u-{id}"),
                    &format!("cus_{id}"),
                ))
                .await;
            match r {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => bail!("warm-up webhook never accepted: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        self.saga_result(&format!("u-{id}")).await.map_err(|e| anyhow::anyhow!("warm-up saga: {e}"))?;
        self.baseline_saga(&format!("warm-{}", self.tag))
            .await
            .map_err(|e| anyhow::anyhow!("warm-up baseline: {e}"))?;
        Ok(())
    }

    async fn saga_result(&self, user: &str) -> Result<(), String> {
        let handle =
            self.client.get_workflow_handle::<ProvisionAgentWorkflow>(provisioning_workflow_id(user));
        for _ in 0..100 {
            match handle.get_result(WorkflowGetResultOptions::default()).await {
                Ok(_) => return Ok(()),
                Err(WorkflowGetResultError::Failed(f)) => return Err(format!("saga failed: {f:?}")),
                Err(e) => {
                    // Not found yet (the update answered before the child was visible) or a poll
                    // that timed out: try again.
                    let msg = e.to_string();
                    if !msg.to_lowercase().contains("not found") && !msg.contains("deadline") {
                        return Err(msg);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Err("saga result never available".to_owned())
    }

    async fn baseline_saga(&self, id: &str) -> Result<(), String> {
        let options =
            WorkflowStartOptions::new(stack::BASELINE_TASK_QUEUE.to_owned(), format!("baseline-saga-{id}"))
                .build();
        let handle = self
            .client
            .start_workflow(BaselineSagaWorkflow::run, SAGA_ACTIVITIES, options)
            .await
            .map_err(|e| e.to_string())?;
        match handle.get_result(WorkflowGetResultOptions::default()).await {
            Ok(n) if n == SAGA_ACTIVITIES => Ok(()),
            Ok(n) => Err(format!("only {n} of {SAGA_ACTIVITIES} activities succeeded")),
            Err(e) => Err(e.to_string()),
        }
    }

    // ---- 1. webhook ack latency ---------------------------------------------------------------

    async fn ack_latency(&self) -> anyhow::Result<Vec<AckRow>> {
        let secs = Duration::from_secs(self.plan.ack_phase_secs);
        let mut rows = Vec::new();
        for (n, &rate) in self.plan.ack_rates.iter().enumerate() {
            say!("ack latency at {rate}/s for {secs:?} (Slipway, then baseline)");
            let slipway = load::open_loop(rate, secs, self.slipway_ack(format!("r{n}"))).await;
            self.settle().await;
            let baseline = load::open_loop(rate, secs, self.baseline_ack(format!("r{n}"))).await;
            self.settle().await;
            rows.push(AckRow::new(Some(rate), slipway, baseline));
        }
        let c = self.plan.saturation_concurrency;
        say!("ack latency at saturation: {c} concurrent senders for {secs:?}");
        let slipway = load::closed_loop(c, secs, self.slipway_ack("sat".to_owned())).await;
        self.settle().await;
        let baseline = load::closed_loop(c, secs, self.baseline_ack("sat".to_owned())).await;
        self.settle().await;
        rows.push(AckRow::new(None, slipway, baseline));
        Ok(rows)
    }

    /// Requests of the Slipway side: a signed `invoice.paid` to the starter.
    fn slipway_ack(
        &self,
        phase: String,
    ) -> impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync + 'static
    {
        let (http, url, tag) = (self.http.clone(), self.starter_url.clone(), self.tag.clone());
        move |i| {
            let key = format!("{tag}_s{phase}_{i}");
            let body = invoice_paid(&format!("evt_{key}"), &format!("cus_{key}"), &format!("in_{key}"));
            let (http, url) = (http.clone(), url.clone());
            Box::pin(async move { post_stripe(&http, &url, body).await.map(|_| ()) })
        }
    }

    /// Requests of the baseline: the same signal-with-start the starter sends for that event,
    /// straight to Temporal.
    fn baseline_ack(
        &self,
        phase: String,
    ) -> impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync + 'static
    {
        let (client, tag) = (self.client.clone(), self.tag.clone());
        move |i| {
            let key = format!("{tag}_b{phase}_{i}");
            let client = client.clone();
            Box::pin(async move {
                let customer = format!("cus_{key}");
                let options =
                    WorkflowStartOptions::new(stack::TASK_QUEUE.to_owned(), customer_workflow_id(&customer))
                        .search_attributes(SearchAttributes::new(vec![
                            search_attributes::CUSTOMER_ID.value_set(customer.clone()),
                        ]))
                        .static_summary(format!("Stripe customer {customer}"))
                        .build();
                let input = SubscriptionInput {
                    customer_id: customer.clone(),
                    state: BillingState::default(),
                    billing: None,
                    policy: BillingPolicy::default(),
                    inbox: Vec::new(),
                    claims: Vec::new(),
                    upgrade_attempted: false,
                };
                let event = BillingEvent {
                    event_id: format!("evt_{key}"),
                    created: now_secs(),
                    kind: BillingEventKind::InvoicePaid {
                        invoice_id: format!("in_{key}"),
                        subscription_id: None,
                    },
                };
                client
                    .signal_with_start_workflow(
                        SubscriptionWorkflow::run,
                        input,
                        SubscriptionWorkflow::stripe_event,
                        event,
                        options,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }
    }

    // ---- 2. provisioning throughput -----------------------------------------------------------

    async fn provisioning(&self) -> anyhow::Result<SagaRow> {
        let n = self.plan.sagas;
        say!("provisioning: {n} concurrent sagas through signed checkout webhooks");
        let slipway = self.run_sagas(true).await;
        self.settle().await;
        say!("provisioning baseline: {n} concurrent bare workflows of {SAGA_ACTIVITIES} no-op activities");
        let baseline = self.run_sagas(false).await;
        self.settle().await;
        Ok(SagaRow {
            concurrent: n,
            activities_per_saga: SAGA_ACTIVITIES,
            throughput_ratio: slipway.per_sec / baseline.per_sec,
            slipway,
            baseline,
        })
    }

    async fn run_sagas(&self, slipway: bool) -> SagaSide {
        let n = self.plan.sagas;
        let retries = std::sync::atomic::AtomicUsize::new(0);
        let retries = &retries;
        let start = Instant::now();
        let results: Vec<Result<Duration, String>> = stream::iter(0..n)
            .map(|i| async move {
                let key = format!("{}-{}-{i}", if slipway { "p" } else { "b" }, self.tag);
                let r = if slipway {
                    let user = format!("u-{key}");
                    let body = checkout_completed(
                        &format!("evt_{key}"),
                        &format!("ag-{key}"),
                        &user,
                        &format!("cus_{key}"),
                    );
                    // Stripe redelivers a webhook answered 503 (hours later; here after 1 s); the
                    // event id makes the redelivery apply once.
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        match self.post_stripe(body.clone()).await {
                            Ok(answer) if answer["result"]["outcome"] == "started" => {
                                break self.saga_result(&user).await;
                            }
                            Ok(answer) => break Err(format!("checkout not started: {answer}")),
                            Err(e) if e.starts_with("503") && attempt < 5 => {
                                retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            Err(e) => break Err(e),
                        }
                    }
                } else {
                    self.baseline_saga(&key).await
                };
                r.map(|()| start.elapsed())
            })
            .buffer_unordered(n)
            .collect()
            .await;
        let wall = start.elapsed();
        let mut lat: Vec<f64> =
            results.iter().filter_map(|r| r.as_ref().ok()).map(|d| d.as_secs_f64() * 1000.0).collect();
        lat.sort_by(f64::total_cmp);
        let last = lat.last().copied().unwrap_or(wall.as_secs_f64() * 1000.0);
        SagaSide {
            completed: lat.len(),
            failed: n - lat.len(),
            per_sec: lat.len() as f64 / (last / 1000.0).max(1e-9),
            p50_ms: load::percentile(&lat, 0.5),
            p99_ms: load::percentile(&lat, 0.99),
            webhook_retries: retries.load(std::sync::atomic::Ordering::Relaxed),
            first_error: results.into_iter().find_map(Result::err),
        }
    }

    // ---- 4. history growth --------------------------------------------------------------------

    async fn history(&self) -> anyhow::Result<HistoryRow> {
        let n = self.plan.history_commands;
        let agent_id = format!("hist-{}", self.tag);
        say!("history: {n} commands, one after the other, on agent {agent_id}");
        self.create_agent(&agent_id).await.map_err(|e| anyhow::anyhow!("create {agent_id}: {e}"))?;
        let start = Instant::now();
        let mut errors = 0;
        let mut first_error = None;
        for i in 0..n {
            if let Err(e) = self.command(&agent_id, i).await {
                errors += 1;
                if first_error.is_none() {
                    say!("  first command error (command {}): {e}", i + 1);
                    first_error = Some(format!("command {}: {e}", i + 1));
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        // Visibility is updated asynchronously: give it a moment before listing the runs.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let current = self
            .client
            .get_workflow_handle::<slipway_workflows::AgentWorkflow>(agent_workflow_id(&agent_id))
            .describe(Default::default())
            .await?
            .history_length() as i64;
        let query = format!("WorkflowId = '{}'", agent_workflow_id(&agent_id));
        let mut runs = self.client.list_workflows(query, WorkflowListOptions::builder().limit(1000).build());
        let (mut total_runs, mut longest) = (0, current);
        while let Some(run) = runs.next().await {
            let run = run?;
            total_runs += 1;
            if run.status() != WorkflowExecutionStatus::Running {
                longest = longest.max(run.history_length());
            }
        }
        Ok(HistoryRow {
            commands: n,
            errors,
            secs,
            history_limit: self.plan.history_limit,
            current_run_history_length: current,
            longest_run_history_length: longest,
            total_runs,
            // The workflow checks the limit between commands; a little past it is expected.
            bounded: current <= i64::from(self.plan.history_limit) + 100 && errors == 0,
            first_error,
        })
    }

    async fn create_agent(&self, agent_id: &str) -> Result<(), String> {
        let agent = AgentRecord::draft(agent_id, &format!("bench-user-{}", self.tag), "fsn1");
        let lifecycle = LifecyclePolicy { shutdown_wait_secs: 60, history_limit: self.plan.history_limit };
        self.gateway
            .create_agent(agent, ProvisioningPolicy::default(), lifecycle)
            .await
            .map_err(|e| e.to_string())
    }

    /// `POST /api/agents/{id}/stop` does this update; on a draft agent the workflow answers
    /// `AGENT_NOT_RUNNING` (the API's 409), which is recorded in the history like any command.
    async fn command(&self, agent_id: &str, i: usize) -> Result<(), String> {
        let request = CommandRequest {
            command: AgentCommand::Stop,
            actor: format!("user:bench-user-{}", self.tag),
            reason: "stop requested through the API".to_owned(),
        };
        match self.gateway.command(agent_id, request, format!("bench-{agent_id}-{i}")).await {
            Ok(CommandOutcome::Refused { code, .. }) if code == "AGENT_NOT_RUNNING" => Ok(()),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    // ---- 3. scale of entities -----------------------------------------------------------------

    async fn scale(&self, stack: &mut Stack, rss_idle_kib: u64) -> anyhow::Result<ScaleRow> {
        let n = self.plan.agents;
        say!("scale: creating {n} Agent workflows (the API's draft creation: one start each)");
        let start = Instant::now();
        let errors: usize = stream::iter(0..n)
            .map(|i| async move { self.create_agent(&self.scale_agent(i)).await.is_err() as usize })
            .buffer_unordered(32)
            .fold(0, |a, e| async move { a + e })
            .await;
        let create_per_sec = (n - errors) as f64 / start.elapsed().as_secs_f64();
        say!("  created in {:.1} s; waiting for the worker to go idle", start.elapsed().as_secs_f64());
        self.settle().await;
        stack.check_alive()?;
        let rss_after_create = stack.worker.rss_kib().unwrap_or(0);
        let samples = self.plan.command_samples.min(n / 4);
        let secs = Duration::from_secs_f64(samples as f64 / self.plan.command_rate);
        let this = Arc::new(self.clone_light());
        say!("  {samples} stop commands on the most recently created agents (in the sticky cache)");
        let hot = {
            let this = this.clone();
            load::open_loop(self.plan.command_rate, secs, move |i| {
                let this = this.clone();
                async move { this.command(&this.scale_agent(n - 1 - i as usize), 0).await }
            })
            .await
        };
        say!(
            "  {samples} stop commands on the oldest agents (evicted: cache {} < {n})",
            self.plan.sticky_cache
        );
        let cold = {
            let this = this.clone();
            load::open_loop(self.plan.command_rate, secs, move |i| {
                let this = this.clone();
                async move { this.command(&this.scale_agent(i as usize), 0).await }
            })
            .await
        };
        let rss_after_commands = stack.worker.rss_kib().unwrap_or(0);
        let mib = |k: u64| (k as f64 / 1024.0 * 10.0).round() / 10.0;
        Ok(ScaleRow {
            agents: n - errors,
            create_per_sec,
            create_errors: errors,
            sticky_cache: self.plan.sticky_cache,
            worker_rss_mib_before: mib(rss_idle_kib),
            worker_rss_mib_after_create: mib(rss_after_create),
            worker_rss_mib_after_commands: mib(rss_after_commands),
            command_in_cache: hot,
            command_not_in_cache: cold,
        })
    }

    fn scale_agent(&self, i: usize) -> String {
        format!("sc-{}-{i}", self.tag)
    }

    fn clone_light(&self) -> Self {
        Self {
            workers: self.workers,
            plan: self.plan.clone(),
            client: self.client.clone(),
            gateway: self.gateway.clone(),
            http: self.http.clone(),
            starter_url: self.starter_url.clone(),
            tag: self.tag.clone(),
        }
    }
}

async fn post_stripe(http: &reqwest::Client, url: &str, body: Value) -> Result<Value, String> {
    let payload = body.to_string();
    let resp = http
        .post(format!("{url}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", sign(&payload))
        .body(payload)
        .send()
        .await
        .map_err(|e| {
            // The causes (connection refused, reset, ...) are in the source chain.
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        })?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() { Ok(answer) } else { Err(format!("{status}: {answer}")) }
}

impl Bench {
    /// Between phases: wait until both workers have drained what the previous phase started.
    async fn settle(&self) {
        for pid in self.workers {
            wait_idle(pid).await;
        }
    }
}

/// Wait (at most 3 minutes) until process `pid` uses under 5% of a core over a second.
async fn wait_idle(pid: u32) {
    let ticks_per_sec = 100.0;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = stack::cpu_ticks(pid).unwrap_or(0);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stack::cpu_ticks(pid).unwrap_or(0);
        if (now.saturating_sub(last) as f64) < 0.05 * ticks_per_sec {
            return;
        }
        last = now;
    }
}

impl AckRow {
    fn new(offered: Option<f64>, slipway: Stats, baseline: Stats) -> Self {
        Self {
            offered_per_sec: offered,
            p50_ratio: slipway.p50_ms / baseline.p50_ms,
            p99_ratio: slipway.p99_ms / baseline.p99_ms,
            slipway,
            baseline,
        }
    }
}

fn print_table(r: &Report) {
    let m = &r.machine;
    println!();
    println!(
        "Slipway benchmarks{}  ({} CPUs, {}, {} GiB; run took {:.0} s)",
        if r.quick { " (QUICK: small sizes, not for publication)" } else { "" },
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        r.run_secs
    );
    println!(
        "worker tuning (both workers): {}",
        r.worker_tuning.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    );
    println!("\n1. Webhook ack latency, {} (baseline: the same RPC sent straight to Temporal)", r.ack_event);
    println!(
        "{:<14} | {:>8} {:>8} {:>8} {:>8} {:>6} | {:>8} {:>8} {:>8} {:>8} {:>6} | {:>6} {:>6}",
        "load",
        "ok/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "ok/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "p50 x",
        "p99 x"
    );
    println!(
        "{:<14} | {:^45} | {:^45} |",
        "", "Slipway (signed webhook → starter)", "baseline (raw signal-with-start)"
    );
    for row in &r.ack {
        let load = row
            .offered_per_sec
            .map_or(format!("saturation/{}", r.plan.saturation_concurrency), |x| format!("{x:.0}/s open"));
        let (s, b) = (&row.slipway, &row.baseline);
        println!(
            "{:<14} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6} | {:>6.2} {:>6.2}",
            load,
            s.achieved_per_sec,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.errors,
            b.achieved_per_sec,
            b.p50_ms,
            b.p99_ms,
            b.max_ms,
            b.errors,
            row.p50_ratio,
            row.p99_ratio
        );
    }
    let p = &r.provisioning;
    println!(
        "\n2. Provisioning, {} concurrent sagas ({} activities each), zero-latency sandbox providers",
        p.concurrent, p.activities_per_saga
    );
    println!(
        "{:<44} | {:>9} {:>7} {:>9} {:>9} {:>8}",
        "", "sagas/s", "failed", "p50 ms", "p99 ms", "retries"
    );
    for (name, s) in [
        ("Slipway (checkout webhook → saga completed)", &p.slipway),
        ("baseline (bare workflow, no-op activities)", &p.baseline),
    ] {
        println!(
            "{:<44} | {:>9.1} {:>7} {:>9.0} {:>9.0} {:>8}",
            name, s.per_sec, s.failed, s.p50_ms, s.p99_ms, s.webhook_retries
        );
    }
    println!("throughput ratio Slipway/baseline: {:.2}", p.throughput_ratio);
    if let Some(e) = p.slipway.first_error.as_ref().or(p.baseline.first_error.as_ref()) {
        println!("first saga error: {e}");
    }
    let s = &r.scale;
    println!(
        "\n3. Scale: {} Agent workflows (created at {:.0}/s, {} errors), sticky cache {}",
        s.agents, s.create_per_sec, s.create_errors, s.sticky_cache
    );
    println!(
        "worker RSS: {:.1} MiB idle → {:.1} MiB after creating → {:.1} MiB after the commands",
        s.worker_rss_mib_before, s.worker_rss_mib_after_create, s.worker_rss_mib_after_commands
    );
    for (name, c) in [
        ("stop command, agent in sticky cache", &s.command_in_cache),
        ("stop command, agent NOT in cache", &s.command_not_in_cache),
    ] {
        println!(
            "{:<38} | n={:<4} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  errors {}",
            name, c.sent, c.p50_ms, c.p99_ms, c.max_ms, c.errors
        );
    }
    let h = &r.history;
    println!(
        "\n4. History: {} stop commands on one agent in {:.0} s ({} errors): current run {} events, longest run {} (limit {}), {} runs in all: {}",
        h.commands,
        h.secs,
        h.errors,
        h.current_run_history_length,
        h.longest_run_history_length,
        h.history_limit,
        h.total_runs,
        if h.bounded {
            "BOUNDED by continue-as-new"
        } else {
            "NOT BOUNDED: the current run grew past the limit"
        }
    );
}

/// The results as Markdown tables, ready for BENCHMARKS.md.
fn markdown(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let f = |v: f64| if v.is_finite() { format!("{v:.1}") } else { "n/a".to_owned() };
    let _ = writeln!(o, "**1. Webhook ack latency** ({}; ms)\n", r.ack_event);
    let _ = writeln!(
        o,
        "| load | Slipway ok/s | p50 | p99 | max | errors | baseline ok/s | p50 | p99 | max | errors | p50 ratio | p99 ratio |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &r.ack {
        let load = row
            .offered_per_sec
            .map_or(format!("saturation ({} senders)", r.plan.saturation_concurrency), |x| {
                format!("{x:.0}/s")
            });
        let (s, b) = (&row.slipway, &row.baseline);
        let _ = writeln!(
            o,
            "| {load} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            f(s.achieved_per_sec),
            f(s.p50_ms),
            f(s.p99_ms),
            f(s.max_ms),
            s.errors,
            f(b.achieved_per_sec),
            f(b.p50_ms),
            f(b.p99_ms),
            f(b.max_ms),
            b.errors,
            row.p50_ratio,
            row.p99_ratio
        );
    }
    let p = &r.provisioning;
    let _ = writeln!(
        o,
        "\n**2. Provisioning**, {} concurrent sagas, {} activities each, zero-latency providers\n",
        p.concurrent, p.activities_per_saga
    );
    let _ = writeln!(
        o,
        "| | sagas/s | completed | failed | p50 ms | p99 ms | webhook retries |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (name, s) in [
        ("Slipway (checkout webhook → saga done)", &p.slipway),
        ("baseline (bare workflow, no-op activities)", &p.baseline),
    ] {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {:.0} | {:.0} | {} |",
            f(s.per_sec),
            s.completed,
            s.failed,
            s.p50_ms,
            s.p99_ms,
            s.webhook_retries
        );
    }
    let _ = writeln!(o, "\nThroughput ratio Slipway / baseline: **{:.2}**", p.throughput_ratio);
    let s = &r.scale;
    let _ = writeln!(
        o,
        "\n**3. Scale**: {} `Agent` workflows created at {:.0}/s ({} errors); sticky cache {}\n",
        s.agents, s.create_per_sec, s.create_errors, s.sticky_cache
    );
    let _ = writeln!(
        o,
        "| worker RSS idle | after creating | after the commands |\n|---:|---:|---:|\n| {} MiB | {} MiB | {} MiB |\n",
        f(s.worker_rss_mib_before),
        f(s.worker_rss_mib_after_create),
        f(s.worker_rss_mib_after_commands)
    );
    let _ = writeln!(
        o,
        "| `stop` command ({}/s, open loop) | n | p50 ms | p99 ms | max ms | errors |\n|---|---:|---:|---:|---:|---:|",
        r.plan.command_rate
    );
    for (name, c) in [
        ("agent in the sticky cache", &s.command_in_cache),
        ("agent NOT in the sticky cache", &s.command_not_in_cache),
    ] {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} |",
            c.sent,
            f(c.p50_ms),
            f(c.p99_ms),
            f(c.max_ms),
            c.errors
        );
    }
    let h = &r.history;
    let _ = writeln!(
        o,
        "\n**4. History**: {} `stop` commands on one agent ({} failed) → current run **{}** events, longest run {}, {} run(s) in all (limit {}): **{}**",
        h.commands,
        h.errors,
        h.current_run_history_length,
        h.longest_run_history_length,
        h.total_runs,
        h.history_limit,
        if h.bounded { "bounded" } else { "not bounded" }
    );
    if let Some(e) = &h.first_error {
        let _ = writeln!(o, "\nFirst failed command: {e}");
    }
    o
}
