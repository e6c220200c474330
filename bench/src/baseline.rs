//! The baseline of the provisioning benchmark: a bare SDK workflow running the same number of
//! activities as the provisioning saga, each a no-op, on its own task queue and worker process
//! with the same worker settings (`SLIPWAY_WORKER_*`) as `slipway-worker`.

use std::{sync::Arc, time::Duration};

use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, Runtime, Worker, WorkerOptions, WorkflowContext, WorkflowContextView, WorkflowResult,
    activities::{ActivityContext, ActivityError},
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

/// `slipway-bench baseline-worker`: connects with Temporal's env config (`TEMPORAL_ADDRESS`),
/// polls `BENCH_TASK_QUEUE` with the same `SLIPWAY_WORKER_*` tuning as `slipway-worker`.
pub(crate) async fn run_worker() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let task_queue = std::env::var("BENCH_TASK_QUEUE").unwrap_or_else(|_| "bench-baseline".to_owned());
    let tuning = slipway_worker::WorkerTuning::from_lookup(|k| std::env::var(k).ok())?;
    let client = slipway_worker::connect_temporal().await?;
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let options = WorkerOptions::new(task_queue)
        .register_activities(NoopActivities)
        .register_workflow::<BaselineSagaWorkflow>()?
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
