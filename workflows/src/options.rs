//! The one retry policy of API-calling activities: start after 1 s, double up to a minute, a
//! bounded number of attempts. Activities mark permanent failures non-retryable themselves, so
//! this only paces the transient ones (5xx, 429, timeouts).

use std::time::Duration;

use temporalio_common::RetryPolicy;
use temporalio_sdk::ActivityOptions;

/// Options of an activity step: `start_to_close` per attempt, an optional heartbeat timeout for
/// activities that poll, and at most `max_attempts` attempts.
pub(crate) fn retrying(
    summary: &str,
    start_to_close: Duration,
    heartbeat: Option<Duration>,
    max_attempts: u32,
) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(start_to_close)
        .maybe_heartbeat_timeout(heartbeat)
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(60))
                .maximum_attempts(max_attempts)
                .build(),
        )
        .summary(summary.to_owned())
        .build()
}
