//! Facts about the machine and the processes under test: CPUs and memory, recorded with the
//! results because every figure depends on them, and the wait until a worker process is idle, so
//! that one phase's leftover work is not charged to the next.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stack;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory_gib: f64,
}

impl Machine {
    pub(crate) fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            cpu_model,
            memory_gib: (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

/// Wait (at most 3 minutes) until process `pid` uses under 5% of a core over a second.
pub(crate) async fn wait_idle(pid: u32) -> bool {
    wait_idle_for(pid, Duration::from_secs(180)).await
}

/// [`wait_idle`] for at most `max`; false when the process was still busy then.
pub(crate) async fn wait_idle_for(pid: u32, max: Duration) -> bool {
    let ticks_per_sec = 100.0;
    let deadline = Instant::now() + max;
    let mut last = stack::cpu_ticks(pid).unwrap_or(0);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stack::cpu_ticks(pid).unwrap_or(0);
        if (now.saturating_sub(last) as f64) < 0.05 * ticks_per_sec {
            return true;
        }
        last = now;
    }
    false
}
