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
    pub(crate) events: EventsRow,
}

/// Scenario 5: the delay from a workflow's change to its event on an app's stream.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventsRow {
    pub(crate) agents: usize,
    /// `step` events timed.
    pub(crate) events: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) target_p95_ms: f64,
    /// The starter's `SLIPWAY_EVENTS_POLL_MS`.
    pub(crate) poll_ms: u64,
    /// Agents whose stream failed or whose provisioning did.
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct AckRow {
    /// Offered rate; `None` at saturation (closed loop).
    pub(crate) offered_per_sec: Option<f64>,
    /// Every round's answers, pooled.
    pub(crate) slipway: Stats,
    pub(crate) baseline: Stats,
    /// Slipway p50 / baseline p50, over the pooled answers.
    pub(crate) p50_ratio: f64,
    /// Slipway p99 / baseline p99, over the pooled answers.
    pub(crate) p99_ratio: f64,
    /// 90% bootstrap interval of the pooled p99 ratio.
    pub(crate) p99_interval: (f64, f64),
    /// Every round's `(p50 ratio, p99 ratio)`, in the order run.
    pub(crate) rounds: Vec<(f64, f64)>,
    /// The p99 ratio's interval is wider than [`AckRow::NOISY_SPREAD`] of the ratio: the run
    /// is too noisy to quote this row.
    pub(crate) noisy: bool,
}

impl AckRow {
    /// Widest 90% interval of the p99 ratio, relative to the ratio, a quotable row may have.
    pub(crate) const NOISY_SPREAD: f64 = 0.25;
    /// Bootstrap resamples per row.
    const RESAMPLES: usize = 400;

    /// A row from interleaved rounds of `(Slipway, baseline)` pairs (at least one). A p99 of one
    /// short round rests on its few slowest answers and moved by ±30% from round to round in
    /// earlier runs; the rounds' answers are pooled instead, and the ratio's bootstrap interval
    /// says how far it can be trusted.
    pub(crate) fn new(offered: Option<f64>, pairs: Vec<(Stats, Stats)>) -> Self {
        let rounds: Vec<(f64, f64)> =
            pairs.iter().map(|(s, b)| (s.p50_ms / b.p50_ms, s.p99_ms / b.p99_ms)).collect();
        let (slipways, baselines): (Vec<Stats>, Vec<Stats>) = pairs.into_iter().unzip();
        let (slipway, baseline) = (Stats::pooled(&slipways), Stats::pooled(&baselines));
        let p99_ratio = slipway.p99_ms / baseline.p99_ms;
        let p99_interval =
            crate::load::bootstrap_ratio(&slipway.samples, &baseline.samples, 0.99, Self::RESAMPLES);
        let width = (p99_interval.1 - p99_interval.0) / p99_ratio;
        Self {
            offered_per_sec: offered,
            p50_ratio: slipway.p50_ms / baseline.p50_ms,
            p99_ratio,
            p99_interval,
            // A NaN (a side with no answer) is noise too.
            noisy: width.is_nan() || width > Self::NOISY_SPREAD,
            slipway,
            baseline,
            rounds,
        }
    }

    /// The p99 ratio's 90% interval, the rounds' own p99 ratios, and whether it is too noisy to
    /// quote.
    pub(crate) fn spread(&self) -> String {
        let (lo, hi) = self.p99_interval;
        let rounds: Vec<String> = self.rounds.iter().map(|r| format!("{:.2}", r.1)).collect();
        let verdict = if self.noisy { " NOISY" } else { "" };
        format!("{lo:.2}–{hi:.2} (rounds: {}){verdict}", rounds.join(", "))
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
    /// CPU time each process of the stack spent per completed provisioning, in ms, from the
    /// burst's start until the workers were idle again: where a side's cost goes.
    pub(crate) cpu_ms_per_saga: Vec<(String, f64)>,
}

impl SagaSide {
    /// The CPU split, e.g. `temporal 41.0, worker 12.5, …, total 70.1 ms`.
    pub(crate) fn cpu_split(&self) -> String {
        let total: f64 = self.cpu_ms_per_saga.iter().map(|(_, ms)| ms).sum();
        let parts: Vec<String> = self
            .cpu_ms_per_saga
            .iter()
            .filter(|(_, ms)| *ms > 0.0)
            .map(|(n, ms)| format!("{n} {ms:.1}"))
            .collect();
        format!("{}; total {total:.1} ms", parts.join(", "))
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SagaRow {
    pub(crate) concurrent: usize,
    pub(crate) activities_per_saga: u32,
    pub(crate) slipway: SagaSide,
    /// The same workflows and messages with the bare SDK (`crate::baseline`).
    pub(crate) same_protocol: SagaSide,
    pub(crate) baseline: SagaSide,
    /// Slipway sagas/s over baseline sagas/s, the median over the rounds.
    pub(crate) throughput_ratio: f64,
    /// Slipway sagas/s over same-protocol sagas/s, the median over the rounds.
    pub(crate) same_protocol_ratio: f64,
    /// Every round's `(Slipway / same protocol, Slipway / bare)`, in the order run.
    pub(crate) rounds: Vec<(f64, f64)>,
    /// The rounds' same-protocol ratios spread more than [`AckRow::NOISY_SPREAD`] of their
    /// median: not to be quoted.
    pub(crate) noisy: bool,
}

impl SagaRow {
    /// A row from rounds of `(Slipway, same protocol, bare)` bursts (at least one); the sides
    /// shown are the median round's (by the same-protocol ratio).
    pub(crate) fn new(
        concurrent: usize,
        activities: u32,
        mut rounds: Vec<(SagaSide, SagaSide, SagaSide)>,
    ) -> Self {
        let ratios: Vec<(f64, f64)> =
            rounds.iter().map(|(s, p, b)| (s.per_sec / p.per_sec, s.per_sec / b.per_sec)).collect();
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let same: Vec<f64> = ratios.iter().map(|r| r.0).collect();
        let same_protocol_ratio = median(same.clone());
        let throughput_ratio = median(ratios.iter().map(|r| r.1).collect());
        let spread =
            same.iter().copied().fold(f64::MIN, f64::max) - same.iter().copied().fold(f64::MAX, f64::min);
        let at = ratios.iter().position(|r| r.0 == same_protocol_ratio).unwrap_or(0);
        let (slipway, same_protocol, baseline) = rounds.swap_remove(at);
        Self {
            concurrent,
            activities_per_saga: activities,
            slipway,
            same_protocol,
            baseline,
            throughput_ratio,
            same_protocol_ratio,
            noisy: (spread / same_protocol_ratio).is_nan()
                || spread / same_protocol_ratio > AckRow::NOISY_SPREAD,
            rounds: ratios,
        }
    }

    /// The rounds' same-protocol ratios, and whether they are too noisy to quote.
    pub(crate) fn spread(&self) -> String {
        let rounds: Vec<String> = self.rounds.iter().map(|r| format!("{:.2}", r.0)).collect();
        let verdict = if self.noisy { " NOISY" } else { "" };
        format!("rounds: {}{verdict}", rounds.join(", "))
    }
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
        check("events: streams or provisionings failed".to_owned(), self.events.errors);
        if !self.history.bounded {
            out.push("history: a run grew past the history limit".to_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stats of `n` answers: `n - tail` at `base` ms and `tail` at `slow` ms.
    fn stats(n: usize, base: f64, tail: usize, slow: f64) -> Stats {
        let outcomes = (0..n)
            .map(|i| {
                let ms = if i < n - tail { base } else { slow };
                (std::time::Duration::from_secs_f64(ms / 1000.0), Ok(()))
            })
            .collect();
        Stats::from(outcomes, std::time::Duration::from_secs(5))
    }

    fn side(per_sec: f64) -> SagaSide {
        SagaSide {
            checkout_ack: None,
            completed: 1,
            failed: 0,
            per_sec,
            p50_ms: 1.0,
            p99_ms: 1.0,
            webhook_retries: 0,
            first_error: None,
            cpu_ms_per_saga: Vec::new(),
        }
    }

    #[test]
    fn saga_rounds_report_the_median_round_and_flag_a_wide_spread() {
        // Powers of two, so the ratios are exact.
        let rounds = |slipway: &[f64]| slipway.iter().map(|&s| (side(s), side(8.0), side(32.0))).collect();
        let steady = SagaRow::new(200, 5, rounds(&[7.0, 7.5, 7.25]));
        assert_eq!((steady.same_protocol_ratio, steady.noisy), (0.90625, false));
        assert_eq!((steady.slipway.per_sec, steady.throughput_ratio), (7.25, 0.2265625));
        assert_eq!(steady.spread(), "rounds: 0.88, 0.94, 0.91");
        let noisy = SagaRow::new(200, 5, rounds(&[7.0, 4.0, 7.25]));
        assert!(noisy.noisy && noisy.spread().ends_with("NOISY"));
    }

    #[test]
    fn rounds_are_pooled_and_a_wide_interval_is_flagged() {
        // Three rounds of 500 answers, 2% of them slow on Slipway's side: the pooled p99s are
        // 20 and 10 ms, and every resample agrees.
        let steady = AckRow::new(
            Some(50.0),
            (0..3).map(|_| (stats(500, 10.0, 10, 20.0), stats(500, 10.0, 0, 10.0))).collect(),
        );
        assert_eq!((steady.slipway.sent, steady.baseline.sent), (1500, 1500));
        assert_eq!((steady.p99_ratio, steady.p99_interval, steady.noisy), (2.0, (2.0, 2.0), false));
        assert_eq!(steady.spread(), "2.00–2.00 (rounds: 2.00, 2.00, 2.00)");
        // 1% slow: the p99 sits on the edge of the tail, and resamples fall on both sides of it.
        let edge = AckRow::new(Some(50.0), vec![(stats(300, 10.0, 3, 40.0), stats(300, 10.0, 0, 10.0))]);
        assert!(edge.noisy, "{:?}", edge.p99_interval);
        assert!(edge.spread().ends_with("NOISY"));
    }
}
