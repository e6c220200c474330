//! Rate limits at the door, in memory, per starter process.
//!
//! Two budgets, both per minute and configurable (0 turns one off):
//! - **per user** on the REST API (`SLIPWAY_API_RATE_PER_MIN`, default 600): counted once the
//!   bearer token is verified, so one user cannot starve the others or flood Temporal;
//! - **per client IP** on requests that *fail* authentication (bad webhook signatures, bad or
//!   missing tokens; `SLIPWAY_AUTH_FAILURES_PER_MIN`, default 60): a guesser gets 429s instead of
//!   answers. Verification still runs first, so a validly signed webhook or a valid token is
//!   never refused by this budget: a provider's burst of hundreds of deliveries a second passes.
//!
//! Windows are fixed (one minute from the first request of a key); the answer is 429 with
//! `Retry-After` (seconds until the window ends) and the stable code `RATE_LIMITED`. Each starter
//! counts on its own: with N starters behind a load balancer a client gets up to N times the
//! budget, which is the point of a per-process guard rather than a quota.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{AppState, error::ApiError, metrics::ErrorCode};

/// Error codes that mean "the caller failed to authenticate".
const AUTH_FAILURES: [&str; 8] = [
    "INVALID_SIGNATURE",
    "INVALID_CALLBACK_TOKEN",
    "WRONG_RUN",
    "MISSING_SIGNATURE",
    "STALE_TIMESTAMP",
    "UNAUTHENTICATED",
    "INVALID_TOKEN",
    "INVALID_CALLBACK",
];

/// Keys kept before expired windows are swept.
const SWEEP_AT: usize = 10_000;

/// Fixed-window counters per key.
#[derive(Debug)]
pub struct Limiter {
    per_window: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    /// `per_window` requests per `window` and key; 0 = unlimited.
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self { per_window, window, counts: Mutex::new(HashMap::new()) }
    }

    /// Count one request of `key` at `now`: `Err(retry after)` once the budget is spent.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_window == 0 {
            return Ok(());
        }
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() >= SWEEP_AT {
            let window = self.window;
            counts.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = counts.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_window {
            return Err(self.window.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }

    /// [`Self::check_at`] now.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }
}

/// The two budgets of a starter.
#[derive(Debug)]
pub struct Limits {
    /// Per user, on the REST API.
    pub api: Limiter,
    /// Per client IP, on failed authentication.
    pub auth_failures: Limiter,
}

impl Limits {
    /// Budgets per minute (0 = unlimited).
    pub fn per_minute(api: u32, auth_failures: u32) -> Self {
        let minute = Duration::from_secs(60);
        Self { api: Limiter::new(api, minute), auth_failures: Limiter::new(auth_failures, minute) }
    }
}

/// The 429 answer.
pub fn too_many(retry_after: Duration, what: &str) -> Response {
    let secs = retry_after.as_secs().max(1);
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!("too many {what}; retry in {secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

/// Middleware: a request that failed authentication counts against its client IP; past the
/// budget its answer becomes 429. Successful authentication is never counted or refused here.
pub async fn auth_failures(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let resp = next.run(req).await;
    let failed = resp.extensions().get::<ErrorCode>().is_some_and(|c| AUTH_FAILURES.contains(&&*c.0));
    match (failed, ip) {
        (true, Some(ip)) => match app.limits.auth_failures.check(&ip) {
            Ok(()) => resp,
            Err(wait) => {
                tracing::warn!(client_ip = %ip, "authentication failures over the limit");
                too_many(wait, "failed authentications from this address")
            }
        },
        _ => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_budget_per_window_then_waits_for_the_next() {
        let l = Limiter::new(3, Duration::from_secs(60));
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at("u1", t), Ok(()));
        }
        assert_eq!(l.check_at("u1", t + Duration::from_secs(20)), Err(Duration::from_secs(40)));
        assert_eq!(l.check_at("u2", t), Ok(()), "keys are independent");
        assert_eq!(l.check_at("u1", t + Duration::from_secs(60)), Ok(()), "a new window");
    }

    #[test]
    fn zero_means_unlimited() {
        let l = Limiter::new(0, Duration::from_secs(60));
        let t = Instant::now();
        assert!((0..10_000).all(|_| l.check_at("k", t).is_ok()));
    }

    #[test]
    fn expired_keys_are_swept() {
        let l = Limiter::new(1, Duration::from_secs(1));
        let t = Instant::now();
        for i in 0..SWEEP_AT {
            let _ = l.check_at(&format!("k{i}"), t);
        }
        let _ = l.check_at("late", t + Duration::from_secs(2));
        assert_eq!(l.counts.lock().unwrap().len(), 1);
    }
}
