//! The starter's Prometheus metrics. The worker's Temporal metrics come from the SDK runtime;
//! these describe what only the ingress sees: every request by route and status, how long a
//! webhook waited for its acknowledgement (the time Temporal took to make it durable), signature
//! failures and Temporal errors.
//!
//! Request-level series are recorded by one middleware ([`track`]) from the matched route and the
//! answer, so handlers stay free of bookkeeping: error answers carry their stable `code` in a
//! response extension ([`ErrorCode`]), from which signature failures and Temporal errors are
//! counted. Handlers only count domain events ([`Metric`]).

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// A domain event counted by a handler.
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
    /// Answered 503 because Temporal did not accept (counted by [`track`] from the answer's code).
    TemporalUnavailable,
}

const EVENTS: [(&str, &str); 5] = [
    ("slipway_webhooks_received_total", "Signed, well-formed webhooks received."),
    ("slipway_webhooks_rejected_total", "Webhooks and callbacks rejected for signature or format."),
    ("slipway_temporal_accepted_total", "Workflow starts, updates and signals accepted by Temporal."),
    ("slipway_provisioning_refused_total", "Provisioning requests refused: one already in flight."),
    ("slipway_temporal_unavailable_total", "Requests answered 503 because Temporal did not accept."),
];

/// The stable error `code` of an error answer, attached to the response for the metrics layer.
#[derive(Debug, Clone)]
pub struct ErrorCode(pub std::borrow::Cow<'static, str>);

/// Seconds: webhook acks are a few ms when Temporal is healthy and bounded by the gateway
/// timeout when it is not.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The starter's metrics; one registry per starter (tests run several in one process).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events: [IntCounter; 5],
    requests: IntCounterVec,
    durations: HistogramVec,
    ack: HistogramVec,
    signature_failures: IntCounterVec,
    temporal_errors: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every series (all start at zero, so dashboards see them before traffic).
    pub fn new() -> Self {
        let registry = Registry::new();
        let events = EVENTS.map(|(name, help)| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        });
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = HistogramVec::new(opts, labels).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let metrics = Self {
            requests: counter(
                "slipway_http_requests_total",
                "HTTP requests by route, method and status.",
                &["route", "method", "status"],
            ),
            durations: histogram(
                "slipway_http_request_duration_seconds",
                "HTTP request duration by route.",
                &["route"],
            ),
            ack: histogram(
                "slipway_webhook_ack_seconds",
                "Time from a webhook's arrival to its 2xx acknowledgement (Temporal accepted it).",
                &["route"],
            ),
            signature_failures: counter(
                "slipway_signature_failures_total",
                "Webhooks and callbacks refused for a missing, invalid or stale signature.",
                &["route", "code"],
            ),
            temporal_errors: counter(
                "slipway_temporal_errors_total",
                "Requests that failed because Temporal did not accept them in time (answered 503).",
                &["route"],
            ),
            events,
            registry,
        };
        for route in Self::INGRESS_ROUTES {
            metrics.temporal_errors.with_label_values(&[route]);
        }
        metrics
    }

    /// The ingress routes, whose error series exist from start-up (at zero) so that alerts on
    /// them can be written before the first failure.
    pub const INGRESS_ROUTES: [&'static str; 3] =
        ["/webhooks/stripe", "/webhooks/github", "/callbacks/github-actions"];

    /// Add one to a domain counter.
    pub fn incr(&self, m: Metric) {
        self.events[m as usize].inc();
    }

    /// Current value of a domain counter.
    pub fn get(&self, m: Metric) -> u64 {
        self.events[m as usize].get()
    }

    /// Record one answered request.
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64, code: Option<&str>) {
        self.requests.with_label_values(&[route, method, &status.to_string()]).inc();
        self.durations.with_label_values(&[route]).observe(seconds);
        let is_ingress = route.starts_with("/webhooks/") || route.starts_with("/callbacks/");
        if is_ingress && (200..300).contains(&status) {
            self.ack.with_label_values(&[route]).observe(seconds);
        }
        match code {
            Some(
                code @ ("MISSING_SIGNATURE"
                | "INVALID_SIGNATURE"
                | "STALE_TIMESTAMP"
                | "INVALID_CALLBACK_TOKEN"
                | "WRONG_RUN"),
            ) => {
                self.signature_failures.with_label_values(&[route, code]).inc();
            }
            Some("TEMPORAL_UNAVAILABLE") => {
                self.temporal_errors.with_label_values(&[route]).inc();
                self.incr(Metric::TemporalUnavailable);
            }
            _ => {}
        }
    }

    /// Prometheus exposition text.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding never fails");
        String::from_utf8(out).expect("Prometheus text is UTF-8")
    }
}

/// Middleware recording every request's route (the matched pattern, never the raw path, so
/// ids do not explode the label set), status, duration and error code.
pub async fn track(State(metrics): State<std::sync::Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    let code = resp.extensions().get::<ErrorCode>().map(|c| c.0.clone());
    let code = code.as_deref();
    metrics.observe(&route, &method, resp.status().as_u16(), started.elapsed().as_secs_f64(), code);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_named_series() {
        let m = Metrics::new();
        m.observe("/webhooks/stripe", "POST", 200, 0.004, None);
        m.observe("/webhooks/stripe", "POST", 400, 0.001, Some("INVALID_SIGNATURE"));
        m.observe("/webhooks/stripe", "POST", 503, 2.0, Some("TEMPORAL_UNAVAILABLE"));
        m.incr(Metric::WebhookReceived);
        let text = m.render();
        for line in [
            r#"slipway_http_requests_total{method="POST",route="/webhooks/stripe",status="200"} 1"#,
            r#"slipway_http_requests_total{method="POST",route="/webhooks/stripe",status="400"} 1"#,
            r#"slipway_webhook_ack_seconds_count{route="/webhooks/stripe"} 1"#,
            r#"slipway_webhook_ack_seconds_bucket{route="/webhooks/stripe",le="0.005"} 1"#,
            r#"slipway_signature_failures_total{code="INVALID_SIGNATURE",route="/webhooks/stripe"} 1"#,
            r#"slipway_temporal_errors_total{route="/webhooks/stripe"} 1"#,
            "slipway_webhooks_received_total 1",
            "slipway_temporal_unavailable_total 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }
}
