//! What a run measured ([`Report`]), one row type per scenario, written as `results.json`. The
//! scenarios fill the rows in; `render` turns the report into the printed table and Markdown.

use serde::Serialize;

use crate::{load::Stats, machine::Machine, plan::Plan};

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) quick: bool,
    pub(crate) run_secs: f64,
    pub(crate) machine: Machine,
    pub(crate) plan: Plan,
    pub(crate) worker_tuning: Vec<(String, String)>,
    pub(crate) ack_event: String,
    pub(crate) ack: Vec<AckRow>,
    pub(crate) provisioning: SagaRow,
    pub(crate) protocol: crate::bench::ProtocolRow,
    pub(crate) scale: ScaleRow,
    pub(crate) history: HistoryRow,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct AckRow {
    /// Offered rate; `None` at saturation (closed loop).
    pub(crate) offered_per_sec: Option<f64>,
    pub(crate) slipway: Stats,
    pub(crate) baseline: Stats,
    /// Slipway p50 / baseline p50.
    pub(crate) p50_ratio: f64,
    /// Slipway p99 / baseline p99.
    pub(crate) p99_ratio: f64,
}

impl AckRow {
    pub(crate) fn new(offered: Option<f64>, slipway: Stats, baseline: Stats) -> Self {
        Self {
            offered_per_sec: offered,
            p50_ratio: slipway.p50_ms / baseline.p50_ms,
            p99_ratio: slipway.p99_ms / baseline.p99_ms,
            slipway,
            baseline,
        }
    }
}

/// How long the answers to a burst of webhooks took.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AckSpread {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SagaSide {
    /// Slipway: how long each checkout webhook's answer took (the baseline has none).
    pub(crate) checkout_ack: Option<AckSpread>,
    pub(crate) completed: usize,
    pub(crate) failed: usize,
    pub(crate) per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Checkout webhooks answered 503 and sent again.
    pub(crate) webhook_retries: usize,
    pub(crate) first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SagaRow {
    pub(crate) concurrent: usize,
    pub(crate) activities_per_saga: u32,
    pub(crate) slipway: SagaSide,
    pub(crate) baseline: SagaSide,
    /// Slipway sagas/s over baseline sagas/s.
    pub(crate) throughput_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScaleRow {
    pub(crate) agents: usize,
    pub(crate) create_per_sec: f64,
    pub(crate) create_errors: usize,
    pub(crate) sticky_cache: usize,
    pub(crate) worker_rss_mib_before: f64,
    pub(crate) worker_rss_mib_after_create: f64,
    pub(crate) worker_rss_mib_after_commands: f64,
    pub(crate) command_in_cache: Stats,
    pub(crate) command_not_in_cache: Stats,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct HistoryRow {
    pub(crate) commands: usize,
    pub(crate) errors: usize,
    pub(crate) secs: f64,
    pub(crate) history_limit: u32,
    pub(crate) current_run_history_length: i64,
    pub(crate) longest_run_history_length: i64,
    pub(crate) total_runs: usize,
    pub(crate) bounded: bool,
    pub(crate) first_error: Option<String>,
}

impl Report {
    /// What went wrong in any phase: requests that failed, sagas that did not complete, a
    /// history that grew without bound. Empty when every phase did its work. A smoke or quick
    /// run fails on any of these; a full run reports them beside its figures.
    pub(crate) fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |what: String, n: usize| {
            if n > 0 {
                out.push(format!("{what}: {n}"));
            }
        };
        for row in &self.ack {
            let at = row.offered_per_sec.map_or("saturation".to_owned(), |r| format!("{r}/s"));
            check(format!("ack {at}: Slipway requests failed"), row.slipway.errors);
            check(format!("ack {at}: baseline requests failed"), row.baseline.errors);
        }
        let p = &self.provisioning;
        check("provisioning: checkout webhooks answered non-2xx".to_owned(), p.slipway.webhook_retries);
        check("provisioning: Slipway sagas failed".to_owned(), p.slipway.failed);
        check("provisioning: baseline sagas failed".to_owned(), p.baseline.failed);
        check(
            "provisioning: Slipway sagas not completed".to_owned(),
            p.concurrent - p.slipway.completed.min(p.concurrent),
        );
        check("scale: agents not created".to_owned(), self.scale.create_errors);
        check("scale: commands failed (cached)".to_owned(), self.scale.command_in_cache.errors);
        check("scale: commands failed (evicted)".to_owned(), self.scale.command_not_in_cache.errors);
        check("history: commands failed".to_owned(), self.history.errors);
        if !self.history.bounded {
            out.push("history: a run grew past the history limit".to_owned());
        }
        out
    }
}
