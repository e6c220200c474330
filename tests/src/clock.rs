//! Time and chance: Unix seconds (token expiry, signature timestamps, event times) and the seeded
//! generator behind fault schedules, whose seed tests print so a run can be repeated.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A small seeded random number generator (SplitMix64) for fault schedules: the seed comes from
/// `var` if set, else from the clock, and tests print it so a run can be repeated.
pub struct SeededRng {
    /// The seed this generator started from.
    pub seed: u64,
    state: u64,
}

impl SeededRng {
    /// Seeded from the environment variable `var`, or from the clock.
    pub fn from_env(var: &str) -> Self {
        let seed = std::env::var(var).ok().and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        Self { seed, state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next_u64() % (high - low).max(1))
    }
}
