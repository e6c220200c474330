//! The baselines of the provisioning benchmark, on their own task queue and worker process with
//! the same worker settings (`SLIPWAY_WORKER_*`) as `slipway-worker`, written with the bare SDK
//! (no Slipway code):
//! - `BaselineSaga`: one workflow running as many no-op activities as the provisioning saga;
//! - the **same protocol** as one Slipway provisioning (`BaselineCustomer`, `BaselineAgent`,
//!   `BaselineProvision`): the same workflows, started the same way, exchanging the same signals,
//!   with the same child, timers and search-attribute upserts, as counted from Slipway's own
//!   histories (`<out>/protocol/`), and no-op activities. What Slipway costs beyond it is its own
//!   code: webhook verification, state, provider calls, callbacks through the starter.

use std::{sync::Arc, time::Duration};

use temporalio_client::{Client, WorkflowSignalOptions};
use temporalio_common::search_attributes::{SearchAttributeKey, SearchAttributes};
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ChildWorkflowOptions, Runtime, SignalWorkflowOptions, SyncWorkflowContext, TimerOptions,
    Worker, WorkerOptions, WorkflowContext, WorkflowContextView, WorkflowResult,
    activities::{ActivityContext, ActivityError},
    workflows::select,
};

/// Activities of the saga: Tailscale key, Hetzner server, server ready, Actions dispatch,
/// Tailscale device (the Actions callback is a signal, not an activity).
pub(crate) const SAGA_ACTIVITIES: u32 = 5;

/// No-op activities.
#[derive(Debug, Default)]
pub(crate) struct NoopActivities;

#[activities]
impl NoopActivities {
    /// Returns its input.
    #[activity]
    pub(crate) async fn noop(
        self: Arc<Self>,
        _ctx: ActivityContext,
        step: u32,
    ) -> Result<u32, ActivityError> {
        Ok(step)
    }
}

/// A workflow running `steps` no-op activities one after the other.
#[workflow]
pub(crate) struct BaselineSagaWorkflow {
    steps: u32,
}

#[workflow_methods]
impl BaselineSagaWorkflow {
    /// Input: the number of activities.
    #[init]
    pub(crate) fn new(_ctx: &WorkflowContextView, steps: u32) -> Self {
        Self { steps }
    }

    /// Runs the activities in sequence.
    #[run(name = "BaselineSaga")]
    pub(crate) async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u32> {
        let steps = ctx.state(|s| s.steps);
        let mut done = 0;
        for step in 0..steps {
            let opts = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30)).build();
            done += ctx.execute_activity(NoopActivities::noop, step, opts).await.map(|_| 1).unwrap_or(0);
        }
        Ok(done)
    }
}

/// The keyword attribute the protocol's workflows upsert (registered on the bench's server).
pub(crate) const STATUS: SearchAttributeKey<String> = SearchAttributeKey::keyword("SlipwayStatus");

/// Workflow id of the same-protocol customer, agent and provisioning of `key`.
pub(crate) fn protocol_ids(key: &str) -> (String, String, String) {
    (format!("baseline-customer-{key}"), format!("baseline-agent-{key}"), format!("baseline-provision-{key}"))
}

fn noop_step() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30)).build()
}

/// The protocol's activities: no-ops, and a dispatch whose "runner" sends the two callbacks.
pub(crate) struct ProtocolActivities {
    pub(crate) client: Client,
}

#[activities]
impl ProtocolActivities {
    /// A provider call that costs nothing.
    #[activity]
    pub(crate) async fn step(
        self: Arc<Self>,
        _ctx: ActivityContext,
        step: u32,
    ) -> Result<u32, ActivityError> {
        Ok(step)
    }

    /// The Actions dispatch: answered at once; the runner then calls back twice (in Slipway
    /// through the starter's callback endpoint, here as the two signals that endpoint sends).
    #[activity]
    pub(crate) async fn dispatch(
        self: Arc<Self>,
        _ctx: ActivityContext,
        provision_id: String,
    ) -> Result<(), ActivityError> {
        let client = self.client.clone();
        tokio::spawn(async move {
            let handle = client.get_workflow_handle::<BaselineProvisionWorkflow>(provision_id);
            for step in ["bootstrap", "done"] {
                let opts = WorkflowSignalOptions::builder().build();
                let _ = handle.signal(BaselineProvisionWorkflow::callback, step.to_owned(), opts).await;
            }
        });
        Ok(())
    }
}

/// Slipway's `Subscription` in a provisioning: started by the checkout event
/// (signal-with-start), keeps one wake-up timer, upserts its status once the event is applied,
/// hands the checkout to the agent by signal, answers the agent's seat claim by signal.
#[workflow]
pub(crate) struct BaselineCustomerWorkflow {
    /// Keys of the agents whose checkouts arrived, to hand over.
    checkouts: Vec<String>,
    claims: Vec<String>,
}

#[workflow_methods]
impl BaselineCustomerWorkflow {
    #[init]
    pub(crate) fn new(_ctx: &WorkflowContextView, _customer: String) -> Self {
        Self { checkouts: Vec::new(), claims: Vec::new() }
    }

    #[run(name = "BaselineCustomer")]
    pub(crate) async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        let timers = ctx.clone();
        let mut wake = timers.timer(TimerOptions::builder(Duration::from_secs(86_400)).build());
        let mut published = false;
        loop {
            let ready = select! {
                _ = ctx.wait_condition(|s: &Self| !s.checkouts.is_empty() || !s.claims.is_empty()) => true,
                _ = &mut wake => false,
            };
            if !ready {
                return Ok(());
            }
            let checkouts = ctx.state_mut(|s| std::mem::take(&mut s.checkouts));
            if !checkouts.is_empty() && !published {
                ctx.upsert_search_attributes([STATUS.value_set("active".to_owned())]);
                published = true;
            }
            for key in checkouts {
                let _ = ctx
                    .external_workflow(protocol_ids(&key).1, None)
                    .signal(BaselineAgentWorkflow::checkout, key, SignalWorkflowOptions::default())
                    .await;
            }
            for agent in ctx.state_mut(|s| std::mem::take(&mut s.claims)) {
                let _ = ctx
                    .external_workflow(agent, None)
                    .signal(BaselineAgentWorkflow::seat, true, SignalWorkflowOptions::default())
                    .await;
            }
        }
    }

    /// A paid checkout's event, naming its agent's key.
    #[signal]
    pub(crate) fn event(&mut self, _ctx: &mut SyncWorkflowContext<Self>, key: String) {
        self.checkouts.push(key);
    }

    /// An agent's seat claim (its workflow id).
    #[signal]
    pub(crate) fn claim(&mut self, _ctx: &mut SyncWorkflowContext<Self>, agent: String) {
        self.claims.push(agent);
    }
}

/// Slipway's `Agent` in a provisioning: started before (the API's draft), hears the checkout
/// from its customer's workflow, claims a seat
/// from its customer by signal and waits for the answer against a timer, starts the
/// provisioning as a child with its search attributes, upserts `provisioning`, then `active`,
/// and stays open (an entity workflow).
#[workflow]
pub(crate) struct BaselineAgentWorkflow {
    key: String,
    checkout: bool,
    seat: bool,
}

#[workflow_methods]
impl BaselineAgentWorkflow {
    #[init]
    pub(crate) fn new(_ctx: &WorkflowContextView, key: String) -> Self {
        Self { key, checkout: false, seat: false }
    }

    #[run(name = "BaselineAgent")]
    pub(crate) async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        ctx.wait_condition(|s: &Self| s.checkout).await?;
        let (customer, agent, provision) = protocol_ids(&ctx.state(|s| s.key.clone()));
        let _ = ctx
            .external_workflow(customer, None)
            .signal(BaselineCustomerWorkflow::claim, agent, SignalWorkflowOptions::default())
            .await;
        select! {
            _ = ctx.wait_condition(|s: &Self| s.seat) => {},
            _ = ctx.timer(TimerOptions::builder(Duration::from_secs(60)).build()) => {},
        };
        let options = ChildWorkflowOptions::builder()
            .workflow_id(provision)
            .search_attributes(SearchAttributes::new([STATUS.value_set("provisioning".to_owned())]))
            .build();
        let child = ctx.start_child_workflow(BaselineProvisionWorkflow::run, (), options).await;
        ctx.upsert_search_attributes([STATUS.value_set("provisioning".to_owned())]);
        if let Ok(child) = child {
            let _ = child.result().await;
        }
        ctx.upsert_search_attributes([STATUS.value_set("active".to_owned())]);
        // An entity: it stays open for the agent's lifetime (here, the bench's).
        ctx.wait_condition(|s: &Self| !s.checkout).await?;
        Ok(())
    }

    /// The paid checkout.
    #[signal]
    pub(crate) fn checkout(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _event: String) {
        self.checkout = true;
    }

    /// The customer's answer.
    #[signal]
    pub(crate) fn seat(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _granted: bool) {
        self.seat = true;
    }
}

/// Slipway's `ProvisionAgent`: three provider steps, the dispatch, its two callbacks (a deadline
/// timer only while they have not come), the device lookup, `active`.
#[workflow]
pub(crate) struct BaselineProvisionWorkflow {
    callbacks: u32,
}

#[workflow_methods]
impl BaselineProvisionWorkflow {
    #[init]
    pub(crate) fn new(_ctx: &WorkflowContextView, _input: ()) -> Self {
        Self { callbacks: 0 }
    }

    #[run(name = "BaselineProvision")]
    pub(crate) async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        for step in 0..3u32 {
            let _ = ctx.execute_activity(ProtocolActivities::step, step, noop_step()).await;
        }
        let id = ctx.workflow_id().to_owned();
        let _ = ctx.execute_activity(ProtocolActivities::dispatch, id, noop_step()).await;
        if ctx.state(|s| s.callbacks < 2) {
            select! {
                _ = ctx.wait_condition(|s: &Self| s.callbacks >= 2) => {},
                _ = ctx.timer(TimerOptions::builder(Duration::from_secs(1800)).build()) => {},
            };
        }
        let _ = ctx.execute_activity(ProtocolActivities::step, 4u32, noop_step()).await;
        ctx.upsert_search_attributes([STATUS.value_set("active".to_owned())]);
        Ok(())
    }

    /// A callback of the runner.
    #[signal]
    pub(crate) fn callback(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _step: String) {
        self.callbacks += 1;
    }
}

/// `slipway-bench baseline-worker`: connects with Temporal's env config (`TEMPORAL_ADDRESS`),
/// polls `BENCH_TASK_QUEUE` with the same `SLIPWAY_WORKER_*` tuning as `slipway-worker`.
pub(crate) async fn run_worker() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let task_queue = std::env::var("BENCH_TASK_QUEUE").unwrap_or_else(|_| "bench-baseline".to_owned());
    let tuning = slipway_worker::WorkerTuning::from_lookup(|k| std::env::var(k).ok())?;
    let encryption = slipway_codec::Encryption::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = slipway_worker::connect_temporal(&encryption).await?;
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let options = WorkerOptions::new(task_queue)
        .register_activities(NoopActivities)
        .register_activities(ProtocolActivities { client: client.clone() })
        .register_workflow::<BaselineSagaWorkflow>()?
        .register_workflow::<BaselineCustomerWorkflow>()?
        .register_workflow::<BaselineAgentWorkflow>()?
        .register_workflow::<BaselineProvisionWorkflow>()?
        .build();
    let mut worker = Worker::new(&runtime, client, tuning.apply(options))?;
    let shutdown = worker.shutdown_handle();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        shutdown();
    });
    worker.run().await?;
    Ok(())
}
