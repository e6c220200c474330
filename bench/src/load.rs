//! Load generation and latency statistics.
//!
//! Fixed rates are **open loop**: request `i` is due at `start + i / rate` whatever happened to
//! the earlier ones, and its latency is measured from that scheduled time, not from when it
//! was actually sent, so a stalled system is charged for the queue it builds (no coordinated
//! omission). Saturation is **closed loop**: `concurrency` senders, each sending its next
//! request as soon as the previous one is answered.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::task::JoinSet;

/// Longest a single request may take before it counts as an error.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Latencies and errors of one phase.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stats {
    /// Requests sent.
    pub(crate) sent: usize,
    /// Requests that failed or timed out.
    pub(crate) errors: usize,
    /// Successful requests per second over the phase.
    pub(crate) achieved_per_sec: f64,
    /// Median latency of the successful requests (ms).
    pub(crate) p50_ms: f64,
    /// 99th percentile (ms).
    pub(crate) p99_ms: f64,
    /// Maximum (ms).
    pub(crate) max_ms: f64,
    /// First error message, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_error: Option<String>,
    /// Every successful request's latency (ms), sorted: what rounds are pooled from.
    #[serde(skip)]
    pub(crate) samples: Vec<f64>,
}

impl Stats {
    /// From per-request outcomes and the phase's wall time.
    pub(crate) fn from(outcomes: Vec<(Duration, Result<(), String>)>, wall: Duration) -> Self {
        let sent = outcomes.len();
        let mut first_error = None;
        let mut lat: Vec<f64> = Vec::with_capacity(sent);
        for (d, r) in outcomes {
            match r {
                Ok(()) => lat.push(d.as_secs_f64() * 1000.0),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        lat.sort_by(f64::total_cmp);
        let errors = sent - lat.len();
        Self {
            sent,
            errors,
            achieved_per_sec: lat.len() as f64 / wall.as_secs_f64().max(1e-9),
            p50_ms: percentile(&lat, 0.50),
            p99_ms: percentile(&lat, 0.99),
            max_ms: lat.last().copied().unwrap_or(f64::NAN),
            first_error,
            samples: lat,
        }
    }

    /// The answers of several phases of the same load as one (rates averaged).
    pub(crate) fn pooled(phases: &[Stats]) -> Self {
        let mut samples: Vec<f64> = phases.iter().flat_map(|p| p.samples.iter().copied()).collect();
        samples.sort_by(f64::total_cmp);
        let rate = phases.iter().map(|p| p.achieved_per_sec).sum::<f64>() / phases.len().max(1) as f64;
        Self {
            sent: phases.iter().map(|p| p.sent).sum(),
            errors: phases.iter().map(|p| p.errors).sum(),
            achieved_per_sec: rate,
            p50_ms: percentile(&samples, 0.50),
            p99_ms: percentile(&samples, 0.99),
            max_ms: samples.last().copied().unwrap_or(f64::NAN),
            first_error: phases.iter().find_map(|p| p.first_error.clone()),
            samples,
        }
    }
}

/// The 5th and 95th percentiles of `quantile(a) / quantile(b)` over `resamples` bootstrap
/// resamples of both sorted sample sets (each drawn with replacement, its own size), from a fixed
/// seed so a run's verdict is reproducible. NaN when either side is empty.
pub(crate) fn bootstrap_ratio(a: &[f64], b: &[f64], quantile: f64, resamples: usize) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    // SplitMix64: enough for resampling, no dependency.
    let mut state: u64 = 0x5eed_5eed_5eed_5eed;
    let mut next = move |n: usize| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    };
    let mut draw = |from: &[f64]| {
        let mut v: Vec<f64> = (0..from.len()).map(|_| from[next(from.len())]).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, quantile)
    };
    let mut ratios: Vec<f64> = (0..resamples.max(1)).map(|_| draw(a) / draw(b)).collect();
    ratios.sort_by(f64::total_cmp);
    (percentile(&ratios, 0.05), percentile(&ratios, 0.95))
}

/// Nearest-rank percentile of sorted values (NaN when empty).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn bounded<F: Future<Output = Result<(), String>>>(bound: Duration, fut: F) -> Result<(), String> {
    match tokio::time::timeout(bound, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {bound:?}")),
    }
}

/// Open loop: `rate` requests per second for `duration`; `make(i)` builds request `i`.
pub(crate) async fn open_loop<F, Fut>(rate: f64, duration: Duration, make: F) -> Stats
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    open_loop_bounded(rate, duration, REQUEST_TIMEOUT, make).await
}

/// [`open_loop`] with each request bounded at `bound` instead of [`REQUEST_TIMEOUT`].
pub(crate) async fn open_loop_bounded<F, Fut>(
    rate: f64,
    duration: Duration,
    bound: Duration,
    make: F,
) -> Stats
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let n = (rate * duration.as_secs_f64()).round() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let mut set = JoinSet::new();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let fut = make(i);
        set.spawn(async move {
            let r = bounded(bound, fut).await;
            (due.elapsed(), r)
        });
    }
    let mut outcomes = Vec::with_capacity(n as usize);
    while let Some(r) = set.join_next().await {
        outcomes.push(r.unwrap_or_else(|e| (Duration::ZERO, Err(format!("task: {e}")))));
    }
    // Throughput over the scheduled window (plus the tail), so a backlog lowers it.
    Stats::from(outcomes, start.elapsed())
}

/// Closed loop: `concurrency` senders for `duration`.
pub(crate) async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, make: F) -> Stats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let end = start + duration;
    let mut set = JoinSet::new();
    for _ in 0..concurrency {
        let (make, next) = (make.clone(), next.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < end {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sent = Instant::now();
                let r = bounded(REQUEST_TIMEOUT, make(i)).await;
                out.push((sent.elapsed(), r));
            }
            out
        });
    }
    let mut outcomes = Vec::new();
    while let Some(r) = set.join_next().await {
        outcomes.extend(r.unwrap_or_default());
    }
    Stats::from(outcomes, start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn errors_are_counted_not_timed() {
        let s = Stats::from(
            vec![
                (Duration::from_millis(10), Ok(())),
                (Duration::from_millis(999), Err("boom".into())),
                (Duration::from_millis(30), Ok(())),
            ],
            Duration::from_secs(1),
        );
        assert_eq!((s.sent, s.errors), (3, 1));
        assert_eq!(s.max_ms, 30.0);
        assert_eq!(s.first_error.as_deref(), Some("boom"));
        assert!((s.achieved_per_sec - 2.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn open_loop_charges_the_wait_from_the_schedule() {
        // One slow request at a time would hide the queue in a closed loop; here every request
        // takes 30 ms but they are due every 10 ms and run concurrently, so latency stays ~30 ms.
        let s = open_loop(100.0, Duration::from_millis(200), |_| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(())
        })
        .await;
        assert_eq!(s.sent, 20);
        assert_eq!(s.errors, 0);
        assert!(s.p50_ms >= 30.0 && s.p50_ms < 200.0, "{s:?}");
    }
}
