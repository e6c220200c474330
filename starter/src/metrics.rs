//! Starter counters in the Prometheus text format. Deliberately tiny: the worker's Temporal
//! metrics come from the SDK runtime; these count what only the ingress sees.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter.
#[derive(Debug, Clone, Copy)]
pub enum Metric {
    /// Signed, well-formed webhook received.
    WebhookReceived,
    /// Webhook or callback rejected (signature, format).
    WebhookRejected,
    /// Start/update/signal accepted by Temporal.
    WorkflowAccepted,
    /// Provisioning refused because one is in flight.
    ProvisioningRefused,
    /// Answered 503 because Temporal did not accept.
    TemporalUnavailable,
}

const NAMES: [(&str, &str); 5] = [
    ("slipway_webhooks_received_total", "Signed, well-formed webhooks received."),
    ("slipway_webhooks_rejected_total", "Webhooks and callbacks rejected for signature or format."),
    ("slipway_temporal_accepted_total", "Workflow starts, updates and signals accepted by Temporal."),
    ("slipway_provisioning_refused_total", "Provisioning requests refused: one already in flight."),
    ("slipway_temporal_unavailable_total", "Requests answered 503 because Temporal did not accept."),
];

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    values: [AtomicU64; 5],
}

impl Metrics {
    /// Add one.
    pub fn incr(&self, m: Metric) {
        self.values[m as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self, m: Metric) -> u64 {
        self.values[m as usize].load(Ordering::Relaxed)
    }

    /// Prometheus exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ((name, help), v) in NAMES.iter().zip(&self.values) {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}
