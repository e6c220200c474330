//! Scenario 3, scale of entities: many Agent workflows, the worker's memory as they are created,
//! and the latency of a command on agents in and out of the worker's sticky cache.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};

use slipway_starter::Gateway;

use super::Bench;
use crate::{load, report::ScaleRow, stack::Stack};

/// How long a command sent during the creation backlog may wait for its answer.
const BACKLOG_BOUND: Duration = Duration::from_secs(180);

impl Bench {
    pub(crate) async fn scale(&self, stack: &mut Stack, rss_idle_kib: u64) -> anyhow::Result<ScaleRow> {
        let n = self.plan.agents;
        say!("scale: creating {n} Agent workflows (the API's draft creation: one start each)");
        let start = Instant::now();
        let errors: usize = stream::iter(0..n)
            .map(|i| async move { self.create_agent(&self.scale_agent(i)).await.is_err() as usize })
            .buffer_unordered(32)
            .fold(0, |a, e| async move { a + e })
            .await;
        let create_per_sec = (n - errors) as f64 / start.elapsed().as_secs_f64();
        let samples = self.plan.command_samples.min(n / 4);
        let secs = Duration::from_secs_f64(samples as f64 / self.plan.command_rate);
        let this = Arc::new(self.clone_light());
        // What an earlier run of this bench measured as "cached" (p99 3.6 s, then 4.9 s): commands
        // sent while the server still hands the worker the first workflow tasks of the agents
        // just created. Each command waits behind that backlog (schedule-to-start), whatever the
        // cache holds; kept as its own phase so the effect stays visible and apart.
        say!(
            "  created in {:.1} s; {samples} stop commands at once, before the worker has caught up",
            start.elapsed().as_secs_f64()
        );
        // Bounded at 3 minutes, not the usual 15 s: this row measures the wait (a full run's
        // commands all took longer than 15 s), it does not give up on it.
        let patient = Arc::new(Gateway::with_client(
            self.client.clone(),
            crate::stack::TASK_QUEUE.to_owned(),
            BACKLOG_BOUND,
        ));
        let backlog = {
            let this = this.clone();
            load::open_loop_bounded(self.plan.command_rate, secs, BACKLOG_BOUND, move |i| {
                let (this, patient) = (this.clone(), patient.clone());
                async move { this.command_via(&patient, &this.scale_agent(n - 1 - samples - i as usize), 0).await }
            })
            .await
        };
        // The cached and evicted phases must not meet that backlog: wait as long as it takes (an
        // earlier bench gave up after 180 s, and on a slow day its "cached" phase was the backlog).
        say!("  waiting for the worker to go idle");
        let waited = Instant::now();
        let idle = crate::machine::wait_idle_for(stack.worker.pid(), Duration::from_secs(900)).await;
        let idle_after_create_secs = waited.elapsed().as_secs_f64();
        say!("  worker {} after {idle_after_create_secs:.0} s", if idle { "idle" } else { "STILL BUSY" });
        self.settle().await;
        stack.check_alive()?;
        let rss_after_create = stack.worker.rss_kib().unwrap_or(0);
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
            command_during_backlog: backlog,
            idle_after_create_secs,
            idle_after_create: idle,
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
            procs: self.procs.clone(),
            plan: self.plan.clone(),
            client: self.client.clone(),
            gateway: self.gateway.clone(),
            http: self.http.clone(),
            starter_url: self.starter_url.clone(),
            tag: self.tag.clone(),
            out: self.out.clone(),
        }
    }
}
