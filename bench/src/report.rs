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
    /// The pair of the median round (by p99 ratio).
    pub(crate) slipway: Stats,
    pub(crate) baseline: Stats,
    /// Slipway p50 / baseline p50, the median over the rounds.
    pub(crate) p50_ratio: f64,
    /// Slipway p99 / baseline p99, the median over the rounds.
    pub(crate) p99_ratio: f64,
    /// Every round's `(p50 ratio, p99 ratio)`, in the order run.
    pub(crate) rounds: Vec<(f64, f64)>,
    /// The rounds' p99 ratios spread more than [`AckRow::NOISY_SPREAD`] around their median:
    /// the run is too noisy to quote this row.
    pub(crate) noisy: bool,
}

impl AckRow {
    /// Largest `(max - min) / median` of the rounds' p99 ratios a quotable row may have.
    pub(crate) const NOISY_SPREAD: f64 = 0.25;

    /// A row from interleaved rounds of `(Slipway, baseline)` pairs (at least one).
    pub(crate) fn new(offered: Option<f64>, mut pairs: Vec<(Stats, Stats)>) -> Self {
        let ratio = |s: &Stats, b: &Stats| (s.p50_ms / b.p50_ms, s.p99_ms / b.p99_ms);
        let rounds: Vec<(f64, f64)> = pairs.iter().map(|(s, b)| ratio(s, b)).collect();
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let p50_ratio = median(rounds.iter().map(|r| r.0).collect());
        let p99s: Vec<f64> = rounds.iter().map(|r| r.1).collect();
        let p99_ratio = median(p99s.clone());
        let spread =
            p99s.iter().copied().fold(f64::MIN, f64::max) - p99s.iter().copied().fold(f64::MAX, f64::min);
        let at_median = rounds.iter().position(|r| r.1 == p99_ratio).unwrap_or(0);
        let (slipway, baseline) = pairs.swap_remove(at_median);
        Self {
            offered_per_sec: offered,
            slipway,
            baseline,
            p50_ratio,
            p99_ratio,
            // A NaN spread (a side with no answer) is noise too.
            noisy: (spread / p99_ratio).is_nan() || spread / p99_ratio > Self::NOISY_SPREAD,
            rounds,
        }
    }

    /// `min–max` of the rounds' p99 ratios, and whether that is too noisy to quote.
    pub(crate) fn spread(&self) -> String {
        let p99s = self.rounds.iter().map(|r| r.1);
        let (lo, hi) = p99s.fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(r), hi.max(r)));
        let verdict = if self.noisy { " NOISY" } else { "" };
        format!("{lo:.2}–{hi:.2} ({} rounds){verdict}", self.rounds.len())
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
    /// The same workflows and messages with the bare SDK (`crate::baseline`).
    pub(crate) same_protocol: SagaSide,
    pub(crate) baseline: SagaSide,
    /// Slipway sagas/s over baseline sagas/s.
    pub(crate) throughput_ratio: f64,
    /// Slipway sagas/s over same-protocol sagas/s.
    pub(crate) same_protocol_ratio: f64,
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
    /// Commands sent right after the creations, while the worker still starts them.
    pub(crate) command_during_backlog: Stats,
    /// How long the worker took to go idle after the creations (and whether it did).
    pub(crate) idle_after_create_secs: f64,
    pub(crate) idle_after_create: bool,
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
        check("provisioning: same-protocol sagas failed".to_owned(), p.same_protocol.failed);
        check(
            "provisioning: Slipway sagas not completed".to_owned(),
            p.concurrent - p.slipway.completed.min(p.concurrent),
        );
        check("scale: agents not created".to_owned(), self.scale.create_errors);
        check(
            "scale: commands failed (during the backlog)".to_owned(),
            self.scale.command_during_backlog.errors,
        );
        check(
            "scale: worker never idle before the cached phase".to_owned(),
            usize::from(!self.scale.idle_after_create),
        );
        check("scale: commands failed (cached)".to_owned(), self.scale.command_in_cache.errors);
        check("scale: commands failed (evicted)".to_owned(), self.scale.command_not_in_cache.errors);
        check("history: commands failed".to_owned(), self.history.errors);
        if !self.history.bounded {
            out.push("history: a run grew past the history limit".to_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(p50_ms: f64, p99_ms: f64) -> Stats {
        Stats { sent: 1, errors: 0, achieved_per_sec: 1.0, p50_ms, p99_ms, max_ms: p99_ms, first_error: None }
    }

    #[test]
    fn a_row_reports_the_median_round_and_flags_a_wide_spread() {
        let pairs = |p99s: &[f64]| p99s.iter().map(|&p| (stats(10.0, p), stats(10.0, 10.0))).collect();
        let steady = AckRow::new(Some(50.0), pairs(&[11.0, 12.0, 11.5]));
        assert_eq!((steady.p99_ratio, steady.noisy), (1.15, false));
        assert_eq!(steady.slipway.p99_ms, 11.5, "the median round's pair");
        assert_eq!(steady.spread(), "1.10–1.20 (3 rounds)");
        let noisy = AckRow::new(Some(50.0), pairs(&[11.0, 30.0, 12.0]));
        assert_eq!((noisy.p99_ratio, noisy.noisy), (1.2, true));
        assert!(noisy.spread().ends_with("NOISY"));
    }
}
