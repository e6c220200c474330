//! The run itself ([`Bench`]): a warm-up, then each scenario in turn (one child module each),
//! with the workers left to go idle and every process checked alive in between. What the
//! scenarios share is here: the clients, and the paths a saga or a command takes.

mod ack;
mod actions;
mod events;
mod history;
mod provisioning;
mod scale;

pub(crate) use actions::ProtocolRow;

use std::{
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::bail;
use serde_json::Value;
use slipway_proto::model::{
    AgentCommand, AgentRecord, CommandOutcome, CommandRequest, LifecyclePolicy, ProvisioningPolicy,
    provisioning_workflow_id,
};
use slipway_starter::Gateway;
use temporalio_client::{
    Client, UntypedWorkflow, Url, WorkflowGetResultOptions, WorkflowStartOptions,
    errors::WorkflowGetResultError,
};

use crate::{
    baseline::{BaselineSagaWorkflow, SAGA_ACTIVITIES},
    connect,
    machine::{Machine, wait_idle},
    plan::Plan,
    report::Report,
    stack::{self, Stack},
    stripe::{checkout_completed, now_secs, post_stripe},
};

pub(crate) struct Bench {
    /// Worker processes (Slipway's, baseline's), to wait for them to go idle between phases.
    workers: [u32; 2],
    /// Every process of the stack and this one (the load and the same-protocol client), by
    /// name, for the CPU each phase costs them.
    procs: Vec<(&'static str, u32)>,
    plan: Plan,
    client: Client,
    gateway: Gateway,
    http: reqwest::Client,
    starter_url: String,
    tag: String,
    /// Where the run's files go (the provisioning's histories under `protocol/`).
    out: std::path::PathBuf,
}

impl Bench {
    pub(crate) async fn new(stack: &Stack, plan: Plan, out: &std::path::Path) -> anyhow::Result<Self> {
        let client = connect(&stack.temporal_address).await?;
        let url = Url::from_str(&format!("http://{}", stack.temporal_address))?;
        let gateway = Gateway::for_address(
            url,
            "default",
            stack::TASK_QUEUE.to_owned(),
            Duration::from_secs(30),
            stack::encryption(),
        );
        let http = reqwest::Client::builder().pool_max_idle_per_host(512).build()?;
        let tag = format!("{:x}", now_secs() % 0xffff_ffff);
        let workers = [stack.worker.pid(), stack.baseline_worker.pid()];
        let procs = vec![
            ("temporal", stack.temporal.pid()),
            ("worker", stack.worker.pid()),
            ("starter", stack.starter.pid()),
            ("sandbox", stack.sandbox.pid()),
            ("baseline worker", stack.baseline_worker.pid()),
            ("bench", std::process::id()),
        ];
        Ok(Self {
            workers,
            procs,
            plan,
            client,
            gateway,
            http,
            starter_url: stack.starter_url.clone(),
            tag,
            out: out.to_owned(),
        })
    }

    async fn post_stripe(&self, body: Value) -> Result<Value, String> {
        post_stripe(&self.http, &self.starter_url, body).await
    }

    pub(crate) async fn run(&self, stack: &mut Stack) -> anyhow::Result<Report> {
        self.warm_up().await?;
        self.settle().await;
        stack.check_alive()?;
        let rss_idle = stack.worker.rss_kib().unwrap_or(0);
        let ack = self.ack_latency().await?;
        stack.check_alive()?;
        let provisioning = self.provisioning().await?;
        stack.check_alive()?;
        // The first Slipway provisioning of the burst (keys as `provisioning` makes them).
        let key = format!("p-{}-0", self.tag);
        let protocol = self
            .protocol_cost(
                &format!("ag-{key}"),
                &format!("u-{key}"),
                &format!("cus_{key}"),
                &format!("sp-{}-0", self.tag),
            )
            .await?;
        let history = self.history().await?;
        self.settle().await;
        stack.check_alive()?;
        let events = self.events().await?;
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
            protocol,
            scale,
            history,
            events,
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
        self.workflow_done(provisioning_workflow_id(user)).await
    }

    /// Waits for workflow `id` to complete (it may not have started yet).
    async fn workflow_done(&self, id: String) -> Result<(), String> {
        let handle = self.client.get_workflow_handle::<UntypedWorkflow>(id);
        // The checkout is acknowledged once durable: the agent starts its saga when the worker
        // gets to it, which in a burst is a while later.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match handle.get_result(WorkflowGetResultOptions::default()).await {
                Ok(_) => return Ok(()),
                Err(WorkflowGetResultError::Failed(f)) => return Err(format!("saga failed: {f:?}")),
                Err(e) => {
                    // Not started yet, or a poll that timed out: try again.
                    let msg = e.to_string();
                    if !msg.to_lowercase().contains("not found") && !msg.contains("deadline") {
                        return Err(msg);
                    }
                    if Instant::now() > deadline {
                        return Err(format!("saga result never available: {msg}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
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

    /// Between phases: wait until both workers have drained what the previous phase started.
    async fn settle(&self) {
        for pid in self.workers {
            if !wait_idle(pid).await {
                say!("  (process {pid} still busy after 180 s; going on)");
            }
        }
    }

    /// CPU ticks (1/100 s) each process used so far.
    fn cpu_ticks(&self) -> Vec<u64> {
        self.procs.iter().map(|(_, pid)| stack::cpu_ticks(*pid).unwrap_or(0)).collect()
    }

    /// CPU each process used since `before` ([`Self::cpu_ticks`]), in ms per one of `n` things.
    fn cpu_ms_per(&self, before: &[u64], n: usize) -> Vec<(String, f64)> {
        self.procs
            .iter()
            .zip(self.cpu_ticks().into_iter().zip(before))
            .map(|((name, _), (now, then))| {
                ((*name).to_owned(), now.saturating_sub(*then) as f64 * 10.0 / n.max(1) as f64)
            })
            .collect()
    }

    async fn create_agent(&self, agent_id: &str) -> Result<(), String> {
        self.create_draft(agent_id, &format!("bench-user-{}", self.tag)).await
    }

    /// A draft agent of `user`, created as `POST /api/agents` creates it (`Gateway::create_agent`).
    async fn create_draft(&self, agent_id: &str, user: &str) -> Result<(), String> {
        let agent = AgentRecord::draft(agent_id, user, "fsn1");
        let lifecycle = LifecyclePolicy {
            shutdown_wait_secs: 60,
            history_limit: self.plan.history_limit,
            ..LifecyclePolicy::default()
        };
        self.gateway
            .create_agent(agent, ProvisioningPolicy::default(), lifecycle)
            .await
            .map_err(|e| e.to_string())
    }

    /// `POST /api/agents/{id}/stop` does this update; on a draft agent the workflow answers
    /// `AGENT_NOT_RUNNING` (the API's 409), which is recorded in the history like any command.
    async fn command(&self, agent_id: &str, i: usize) -> Result<(), String> {
        self.command_via(&self.gateway, agent_id, i).await
    }

    /// [`Bench::command`] through `gateway` (whose timeout may differ from the starter's).
    async fn command_via(&self, gateway: &Gateway, agent_id: &str, i: usize) -> Result<(), String> {
        let request = CommandRequest {
            command: AgentCommand::Stop,
            actor: format!("user:bench-user-{}", self.tag),
            reason: "stop requested through the API".to_owned(),
        };
        match gateway.command(agent_id, request, format!("bench-{agent_id}-{i}")).await {
            Ok(CommandOutcome::Refused { code, .. }) if code == "AGENT_NOT_RUNNING" => Ok(()),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}
