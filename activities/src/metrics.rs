//! Slipway's own worker metrics, exported next to the SDK's on the worker's Prometheus endpoint:
//! how long each saga step takes per provider, how often steps are retried, and how many
//! compensations ran and failed. The SDK already counts activity executions per activity type;
//! these add what an operator asks first: "which provider is slow or failing, and did rollbacks
//! leave anything behind?".
//!
//! Instruments are created once, on the meter the worker's runtime exports ([`install`]);
//! without it (unit tests, tools) recording is a no-op. One process-wide set is enough: every
//! worker in a process exports through the same endpoint.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, Gauge, GaugeF64, HistogramDuration, MetricKeyValue, MetricParameters, NewAttributes,
};
use temporalio_sdk::{
    SimplePlugin,
    activities::{ActivityError, ActivityInfo},
    interceptors::{ActivityInboundInterceptor, ExecuteActivityInput, ExecuteActivityOutput, Next},
};
use tracing::Instrument;

struct Instruments {
    meter: Arc<dyn CoreMeter>,
    step_duration: HistogramDuration,
    step_retries: Counter,
    compensations: Counter,
    compensations_failed: Counter,
    usage_unbilled: Counter,
    reconciled: Counter,
    agents_unconverged: Gauge,
    backlog: Gauge,
    backlog_age: GaugeF64,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

/// Create Slipway's instruments on `meter` (the first call wins).
pub fn install(meter: Arc<dyn CoreMeter>) {
    INSTRUMENTS.get_or_init(|| {
        let param = |name: &'static str, description: &'static str, unit: &'static str| {
            MetricParameters::builder().name(name).description(description).unit(unit).build()
        };
        Instruments {
            step_duration: meter.histogram_duration(param(
                "slipway_step_duration",
                "Duration of one attempt of a saga step, by provider, step and outcome.",
                "duration",
            )),
            step_retries: meter.counter(param(
                "slipway_step_retries",
                "Attempts of a saga step after the first, by provider and step.",
                "",
            )),
            compensations: meter.counter(param(
                "slipway_compensations_run",
                "Compensation attempts run, by provider and step.",
                "",
            )),
            compensations_failed: meter.counter(param(
                "slipway_compensations_failed",
                "Compensation attempts that failed, by provider and step.",
                "",
            )),
            usage_unbilled: meter.counter(param(
                "slipway_usage_unbilled",
                "Usage reports Stripe refused for good (kept as unbilled in the job's ledger), by meter event.",
                "",
            )),
            reconciled: meter.counter(param(
                "slipway_reconciled",
                "What the reconcilers did, by reconciler and outcome: Stripe events recovered or refused, GitHub deliveries redelivered or given up, orphans found or deleted (with their provider).",
                "",
            )),
            agents_unconverged: meter.gauge(param(
                "slipway_agents_unconverged",
                "Running agents whose billing command failed and waits to be tried again (visibility: SlipwayBilling = 'converging'), on this worker's task queue.",
                "",
            )),
            backlog: meter.gauge(param(
                "slipway_task_queue_backlog",
                "Tasks waiting for a worker (Temporal's approximate backlog count), by task queue and task type (workflow, activity): what an autoscaler scales workers on.",
                "",
            )),
            backlog_age: meter.gauge_f64(param(
                // Named with its unit: the exporter suffixes only the units it knows.
                "slipway_task_queue_backlog_age_seconds",
                "Age of the oldest task waiting for a worker (Temporal's approximate backlog age), in seconds, by task queue and task type.",
                "",
            )),
            meter,
        }
    });
}

/// A task queue's backlog as Temporal describes it: `count` tasks waiting, the oldest `age_secs`
/// old, for `task_type` (`workflow` or `activity`) tasks of `task_queue`; `version` labels (the
/// Worker Controller's names) when the figures are one Worker Deployment version's.
pub fn set_backlog(
    task_queue: &str,
    task_type: &'static str,
    version: Vec<(&'static str, String)>,
    count: u64,
    age_secs: f64,
) {
    let Some(m) = INSTRUMENTS.get() else { return };
    let mut kv = vec![
        MetricKeyValue::new("task_queue", task_queue.to_owned()),
        MetricKeyValue::new("task_type", task_type),
    ];
    kv.extend(version.into_iter().map(|(k, v)| MetricKeyValue::new(k, v)));
    let attrs = m.meter.new_attributes(NewAttributes::from(kv));
    m.backlog.record(count, &attrs);
    m.backlog_age.record(age_secs, &attrs);
}

/// The number of agents not yet where billing wants them (counted through visibility).
pub fn set_agents_unconverged(n: u64) {
    let Some(m) = INSTRUMENTS.get() else { return };
    let attrs = m.meter.new_attributes(NewAttributes::from(Vec::new()));
    m.agents_unconverged.record(n, &attrs);
}

/// `n` things a reconciler did: `reconciler` (`stripe`, `github`, `orphans`), `outcome`
/// (`recovered`, `refused`, `redelivered`, `given_up`, `found`, `deleted`) and, for orphans,
/// the provider.
pub fn record_reconciled(reconciler: &'static str, outcome: &'static str, provider: Option<&str>, n: u64) {
    let Some(m) = INSTRUMENTS.get() else { return };
    if n == 0 {
        return;
    }
    let mut kv = vec![MetricKeyValue::new("reconciler", reconciler), MetricKeyValue::new("outcome", outcome)];
    if let Some(p) = provider {
        kv.push(MetricKeyValue::new("provider", p.to_owned()));
    }
    let attrs = m.meter.new_attributes(NewAttributes::from(kv));
    m.reconciled.add(n, &attrs);
}

/// One usage report Stripe refused for good (the job keeps it as unbilled).
pub fn record_unbilled(event_name: &str) {
    let Some(m) = INSTRUMENTS.get() else { return };
    let attrs = m
        .meter
        .new_attributes(NewAttributes::from(vec![MetricKeyValue::new("event", event_name.to_owned())]));
    m.usage_unbilled.add(1, &attrs);
}

/// The provider a step talks to, from its activity type (`ProvisioningActivities::create_server`).
pub fn provider(activity_type: &str) -> &'static str {
    let step = activity_type.rsplit("::").next().unwrap_or(activity_type);
    match step {
        "create_server" | "wait_server_ready" | "delete_agent_server" | "stop_server" | "start_server" => {
            "hetzner"
        }
        "create_tailscale_key"
        | "find_tailscale_device"
        | "remove_tailscale_devices"
        | "revoke_tailscale_keys" => "tailscale",
        "dispatch_provision_job"
        | "find_provision_run"
        | "create_repository"
        | "delete_repository"
        | "open_pull_request"
        | "comment"
        | "can_write" => "github",
        "create_supabase_project"
        | "wait_supabase_healthy"
        | "apply_migrations"
        | "delete_supabase_project" => "supabase",
        "create_vercel_project" | "deploy_vercel" | "delete_vercel_project" => "vercel",
        "create_n8n_workflow" | "delete_n8n_workflow" => "n8n",
        "fetch_subscription_status"
        | "fetch_subscription"
        | "list_customer_subscriptions"
        | "report_usage"
        | "expire_checkout_session" => "stripe",
        "plan" | "code" | "review" => "llm",
        "stripe_catch_up" => "stripe",
        "github_redeliver" => "github",
        _ => "other",
    }
}

/// Whether a step undoes another (its runs and failures are counted as compensations).
pub fn is_compensation(activity_type: &str) -> bool {
    let step = activity_type.rsplit("::").next().unwrap_or(activity_type);
    matches!(
        step,
        "delete_agent_server"
            | "remove_tailscale_devices"
            | "revoke_tailscale_keys"
            | "delete_repository"
            | "delete_supabase_project"
            | "delete_vercel_project"
            | "delete_n8n_workflow"
    )
}

/// Measures every activity attempt the worker runs, so no step can be left out: register it
/// with [`step_plugin`]. Each attempt runs inside an `activity` span (workflow id, run id,
/// activity, attempt) that every log line of the attempt carries, and that joins the webhook's
/// trace when OTLP export is on; its duration, retry and compensation outcome are recorded on
/// the instruments [`install`] created.
#[derive(Debug, Default)]
pub struct StepInterceptor;

impl ActivityInboundInterceptor for StepInterceptor {
    fn execute_activity<'a>(
        &'a self,
        input: ExecuteActivityInput,
        next: Next<'a, ExecuteActivityInput, ExecuteActivityOutput<'a>>,
    ) -> ExecuteActivityOutput<'a> {
        Box::pin(async move {
            // Started on the first poll, not here: the tracing plugin's interceptor calls this
            // one before it attaches the `RunActivity` context to the future it gets back.
            let step = Step::start(input.activity_info());
            let result = next.run(input).instrument(step.span.clone()).await;
            step.finish(&result);
            result
        })
    }
}

/// A worker plugin carrying [`StepInterceptor`]. Registered as a worker plugin (not directly on
/// the options) so it runs inside the tracing plugin's activity span, which the client's plugins
/// add first: the step span then has the trace's `RunActivity` span as its parent.
pub fn step_plugin() -> SimplePlugin {
    SimplePlugin::builder("slipway-steps")
        .activity_inbound_interceptors(vec![Arc::new(StepInterceptor) as Arc<dyn ActivityInboundInterceptor>])
        .build()
}

/// One attempt of a step being measured.
struct Step {
    activity_type: String,
    attempt: u32,
    started: Instant,
    span: tracing::Span,
}

impl Step {
    fn start(info: &ActivityInfo) -> Self {
        let step = info.activity_type.rsplit("::").next().unwrap_or(&info.activity_type);
        let span = tracing::info_span!(
            "activity",
            otel.name = %format_args!("{} {step}", provider(&info.activity_type)),
            workflow_id = info.workflow_id.as_deref().unwrap_or_default(),
            run_id = info.workflow_run_id.as_deref().unwrap_or_default(),
            activity = %info.activity_type,
            attempt = info.attempt,
        );
        slipway_telemetry::follow_current_trace(&span);
        Self {
            activity_type: info.activity_type.clone(),
            attempt: info.attempt,
            started: Instant::now(),
            span,
        }
    }

    fn finish<T>(self, result: &Result<T, ActivityError>) {
        let Some(m) = INSTRUMENTS.get() else { return };
        let provider = provider(&self.activity_type);
        let step = self.activity_type.rsplit("::").next().unwrap_or(&self.activity_type).to_owned();
        let outcome = match result {
            Ok(_) => "ok",
            Err(ActivityError::Cancelled { .. }) => "cancelled",
            Err(_) => "error",
        };
        let attrs = |extra: Option<&'static str>| {
            let mut kvs =
                vec![MetricKeyValue::new("provider", provider), MetricKeyValue::new("step", step.clone())];
            if let Some(outcome) = extra {
                kvs.push(MetricKeyValue::new("outcome", outcome));
            }
            m.meter.new_attributes(NewAttributes::from(kvs))
        };
        m.step_duration.record(self.started.elapsed(), &attrs(Some(outcome)));
        if self.attempt > 1 {
            m.step_retries.add(1, &attrs(None));
        }
        if is_compensation(&self.activity_type) {
            m.compensations.add(1, &attrs(None));
            if result.is_err() {
                m.compensations_failed.add(1, &attrs(None));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_a_provider() {
        for step in [
            "ProvisioningActivities::create_server",
            "ProvisioningActivities::revoke_tailscale_keys",
            "StackActivities::deploy_vercel",
            "JobActivities::open_pull_request",
            "BillingActivities::fetch_subscription_status",
        ] {
            assert_ne!(provider(step), "other", "{step}");
        }
        assert_eq!(provider("BillingActivities::list_customer_subscriptions"), "stripe");
        assert!(is_compensation("ProvisioningActivities::delete_agent_server"));
        assert!(!is_compensation("ProvisioningActivities::create_server"));
    }
}
