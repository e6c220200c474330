//! Rate limits at the door, in memory, per starter process.
//!
//! Two budgets, both per minute and configurable (0 turns one off):
//! - **per user** on the REST API (`SLIPWAY_API_RATE_PER_MIN`, default 600): counted once the
//!   bearer token is verified, so one user cannot starve the others or flood Temporal;
//! - **per client IP** on requests that *fail* authentication (bad webhook signatures, bad or
//!   missing tokens; `SLIPWAY_AUTH_FAILURES_PER_MIN`, default 60): a guesser gets 429s instead of
//!   answers. Verification still runs first, so a validly signed webhook or a valid token is
//!   never refused by this budget: a provider's burst of hundreds of deliveries a second passes.
//!   The client IP is the peer address, or, behind a proxy listed in `SLIPWAY_TRUSTED_PROXIES`,
//!   the address that proxy vouches for ([`crate::client_ip`]).
//!
//! Windows are fixed (one minute from the first request of a key); the answer is 429 with
//! `Retry-After` (seconds until the window ends) and the stable code `RATE_LIMITED`. Each starter
//! counts on its own: with N starters behind a load balancer a client gets up to N times the
//! budget, which is the point of a per-process guard rather than a quota.
//!
//! # Memory: a fixed ceiling, and what it costs
//!
//! Each budget remembers at most [`CAPACITY`] keys (65,536), in about 4.1 MiB allocated once at
//! start-up and never grown ([`Limiter::ceiling_bytes`]; both budgets together stay under
//! 9 MiB, however many addresses knock). A key is stored as a 64-bit keyed hash (SipHash with a
//! per-process random seed), so an entry is 32 bytes whatever the key's length; two keys share a
//! counter with odds of about 10⁻¹⁰ at full capacity, and no caller can aim at a collision
//! without the seed.
//!
//! The keys are spread over [`SHARDS`] shards, each behind its own mutex; a shard keeps two
//! generations of 2,048 keys: the *young* one takes every key used since the last rotation, the
//! *old* one the keys of the generation before that have not been used since. A key found in the
//! old generation moves to the young one with its count. When the young generation is full it
//! becomes the old one and the previous old one, the keys unused for a whole generation, is
//! forgotten at once. Every request is O(1): a few hash lookups in one shard, and a rotation is
//! one 4 KiB `memset` per 2,048 new keys of a shard: nothing scans the keys per request.
//!
//! *Why forget the least recently used rather than refuse new keys:* forgetting a key only ever
//! gives that key a fresh budget, it never refuses anyone; a table that refused (or counted
//! against) newcomers when full would let whoever fills it lock every other client out.
//! *What an attacker gains:* a key that keeps knocking (once per 2,048 new keys of its shard is
//! enough) stays in the young generation, so it is never forgotten while it is refused. To reset *its own* counter an attacker must stop
//! and make at least 2,048 other distinct keys land in its shard, and the shard of a key is
//! secret (the seed), so about [`CAPACITY`]` / 2` = 32,768 distinct keys in all, each one a failed
//! authentication from an address it controls (API keys are verified user ids, which it cannot
//! mint). Those addresses already carry 32,768 budgets of their own, about 2 million failures a
//! minute at the default, so forgetting lets an attacker do nothing it could not do without it
//! until it controls tens of thousands of addresses; with more than [`CAPACITY`] addresses in
//! rotation each is forgotten before it returns and the per-IP budget no longer binds, where an
//! unbounded table would have allowed about 4 million failures a minute — a limit that no longer
//! protects anything either, and the price of a fixed ceiling. (An IPv6 host usually owns a whole
//! /64, so per-address budgets are weak for IPv6 attackers with or without eviction.)

use std::{
    collections::HashMap,
    hash::BuildHasher,
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

/// Keys one budget remembers at most: its memory ceiling.
pub const CAPACITY: usize = 65_536;

/// Shards of a full-size limiter, each behind its own mutex.
pub const SHARDS: usize = 16;

/// The count of one key.
#[derive(Debug, Clone, Copy)]
struct Count {
    /// When its window began.
    start: Instant,
    /// Requests counted in that window.
    used: u32,
}

/// Keys of one shard, in two generations (see the module docs).
#[derive(Debug)]
struct Shard {
    /// Keys used since the last rotation.
    young: HashMap<u64, Count>,
    /// Keys of the generation before, unused since.
    old: HashMap<u64, Count>,
    /// Keys a generation holds; both maps are allocated for this many and never grow.
    generation: usize,
}

impl Shard {
    fn new(generation: usize) -> Self {
        Self {
            young: HashMap::with_capacity(generation),
            old: HashMap::with_capacity(generation),
            generation,
        }
    }

    /// The count of `key`, moved into (or created in) the young generation.
    fn count(&mut self, key: u64, now: Instant) -> &mut Count {
        if !self.young.contains_key(&key) {
            let count = self.old.remove(&key).unwrap_or(Count { start: now, used: 0 });
            if self.young.len() >= self.generation {
                // The old generation, unused for a whole generation, is forgotten; `clear` keeps
                // the allocation.
                std::mem::swap(&mut self.young, &mut self.old);
                self.young.clear();
            }
            self.young.insert(key, count);
        }
        self.young.get_mut(&key).expect("the key was just inserted")
    }
}

/// Fixed-window counters per key, in bounded memory (see the module docs).
#[derive(Debug)]
pub struct Limiter {
    per_window: u32,
    window: Duration,
    /// Keyed hash of the keys (random per process).
    hasher: std::collections::hash_map::RandomState,
    /// Empty when unlimited.
    shards: Box<[Mutex<Shard>]>,
}

impl Limiter {
    /// `per_window` requests per `window` and key, for up to [`CAPACITY`] keys; 0 = unlimited.
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self::with_capacity(per_window, window, CAPACITY)
    }

    /// Like [`Self::new`], remembering up to `capacity` keys (rounded down to an even number per
    /// shard; [`SHARDS`] shards from 16 Ki keys up, one below).
    pub fn with_capacity(per_window: u32, window: Duration, capacity: usize) -> Self {
        let shards = if per_window == 0 {
            0
        } else if capacity >= SHARDS * 1024 {
            SHARDS
        } else {
            1
        };
        let generation = (capacity / shards.max(1) / 2).max(1);
        Self {
            per_window,
            window,
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..shards).map(|_| Mutex::new(Shard::new(generation))).collect(),
        }
    }

    /// Count one request of `key` at `now`: `Err(retry after)` once the budget is spent.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.shards.is_empty() {
            return Ok(());
        }
        let hash = self.hasher.hash_one(key);
        // The low bits pick the shard; the shard's map hashes the key again with its own seed.
        let shard = &self.shards[(hash % self.shards.len() as u64) as usize];
        let mut shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = shard.count(hash, now);
        if now.duration_since(count.start) >= self.window {
            *count = Count { start: now, used: 0 };
        }
        if count.used >= self.per_window {
            return Err(self.window.saturating_sub(now.duration_since(count.start)));
        }
        count.used += 1;
        Ok(())
    }

    /// [`Self::check_at`] now.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    /// Keys remembered now (at most [`Self::capacity`]).
    pub fn len(&self) -> usize {
        self.fold(|s| s.young.len() + s.old.len())
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys remembered at most (0 when unlimited: nothing is counted).
    pub fn capacity(&self) -> usize {
        self.fold(|s| 2 * s.generation)
    }

    /// Bytes of table allocated (once, at construction; the tables never grow): the memory
    /// ceiling. Approximate: hashbrown's power-of-two buckets, one control byte each.
    pub fn ceiling_bytes(&self) -> usize {
        let per_bucket = std::mem::size_of::<(u64, Count)>() + 1;
        // A table for `c` entries has the next power of two of `c * 8 / 7` buckets.
        self.fold(|s| (s.young.capacity() + s.old.capacity()).div_ceil(7) * 8 * per_bucket)
    }

    fn fold(&self, f: impl Fn(&Shard) -> usize) -> usize {
        self.shards.iter().map(|s| f(&s.lock().unwrap_or_else(std::sync::PoisonError::into_inner))).sum()
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

/// Middleware: a request that failed authentication counts against its client IP (the peer, or
/// the client a trusted proxy names); past the budget its answer becomes 429. Successful
/// authentication is never counted or refused here.
pub async fn auth_failures(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| app.settings.trusted_proxies.client_ip(c.0.ip(), req.headers()).to_string());
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
    fn zero_means_unlimited_and_allocates_nothing() {
        let l = Limiter::new(0, Duration::from_secs(60));
        let t = Instant::now();
        assert!((0..10_000).all(|_| l.check_at("k", t).is_ok()));
        assert_eq!((l.len(), l.capacity(), l.ceiling_bytes()), (0, 0, 0));
    }

    #[test]
    fn memory_stays_under_the_ceiling_with_100_000_addresses() {
        let l = Limiter::new(60, Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(l.capacity(), CAPACITY);
        let ceiling = l.ceiling_bytes();
        assert!(ceiling < 5 << 20, "ceiling {ceiling} bytes");
        for i in 0..100_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            assert_eq!(l.check_at(&ip, t), Ok(()), "a new address has its budget");
            assert!(l.shards.iter().all(|s| {
                let s = s.lock().unwrap();
                s.young.len() <= s.generation && s.old.len() <= s.generation
            }));
        }
        let len = l.len();
        assert!((CAPACITY / 2..=CAPACITY).contains(&len), "{len} keys remembered");
        assert_eq!(l.ceiling_bytes(), ceiling, "no table grew");
    }

    #[test]
    fn a_hot_key_stays_limited_under_churn() {
        let l = Limiter::new(5, Duration::from_secs(60));
        let t = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.check_at("attacker", t), Ok(()));
        }
        // 100,000 other addresses pass, more than the table holds; the attacker keeps knocking
        // (every 100 of them) and stays refused until its window ends.
        for i in 0..100_000u32 {
            let _ = l.check_at(&format!("churn-{i}"), t);
            if i % 100 == 0 {
                assert!(l.check_at("attacker", t).is_err(), "forgotten after {i} other keys");
            }
        }
        assert_eq!(l.check_at("attacker", t + Duration::from_secs(60)), Ok(()), "its next window");
    }

    #[test]
    fn a_key_is_forgotten_only_after_a_generation_of_other_keys() {
        // One shard of two generations of 50 keys: the documented trade-off, exactly.
        let l = Limiter::with_capacity(1, Duration::from_secs(60), 100);
        let t = Instant::now();
        assert_eq!(l.check_at("quiet", t), Ok(()));
        for i in 0..50 {
            let _ = l.check_at(&format!("k{i}"), t);
        }
        assert!(l.check_at("quiet", t).is_err(), "remembered after a generation, and moved up");
        for i in 50..150 {
            let _ = l.check_at(&format!("k{i}"), t);
        }
        assert_eq!(l.check_at("quiet", t), Ok(()), "forgotten after two generations of other keys");
        assert!(l.len() <= 100);
    }

    #[tokio::test]
    async fn clients_behind_a_trusted_proxy_have_their_own_failure_budget() {
        use tower::ServiceExt;

        let settings = crate::StarterSettings::from_lookup(|k| match k {
            "SLIPWAY_AUTH_FAILURES_PER_MIN" => Some("2".to_owned()),
            "SLIPWAY_TRUSTED_PROXIES" => Some("10.0.0.0/8".to_owned()),
            "SLIPWAY_PAYLOAD_ENCRYPTION" => Some("off".to_owned()),
            k if crate::settings::REQUIRED.contains(&k) => Some("x".repeat(32)),
            _ => None,
        })
        .unwrap();
        let router = crate::app(AppState::offline(settings));
        let knock = |peer: &str, xff: &str| {
            let mut req = axum::http::Request::get("/api/agents")
                .header("authorization", "Bearer not-a-token")
                .header("x-forwarded-for", xff)
                .body(axum::body::Body::empty())
                .unwrap();
            req.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
            let router = router.clone();
            async move {
                let resp = router.oneshot(req).await.unwrap();
                let status = resp.status().as_u16();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                (status, body["code"].as_str().unwrap_or_default().to_owned())
            }
        };

        // Two clients behind the proxy, each with its own budget; spoofed left-most entries
        // change nothing.
        let (refused, limited) = ((401, "INVALID_TOKEN".to_owned()), (429, "RATE_LIMITED".to_owned()));
        for _ in 0..2 {
            assert_eq!(knock("10.0.0.1:4000", "203.0.113.1").await, refused);
        }
        assert_eq!(knock("10.0.0.1:4000", "198.51.100.9, 203.0.113.1").await, limited);
        assert_eq!(knock("10.0.0.1:4000", "203.0.113.2").await, refused, "another client, same proxy");
        // A peer that is not a trusted proxy is its own client, whatever it claims.
        for xff in ["203.0.113.3", "203.0.113.4"] {
            assert_eq!(knock("192.0.2.1:5000", xff).await, refused);
        }
        assert_eq!(knock("192.0.2.1:5000", "203.0.113.5").await, limited);
    }
}
