//! Optional OpenTelemetry trace export over OTLP, so one webhook can be followed as one trace:
//! the starter's HTTP request, its Temporal start/signal/update, the workflow run, and each
//! activity attempt with the provider call it makes.
//!
//! Two sources of spans meet here:
//! - The Temporal SDK's tracing plugin (`temporalio_sdk::opentelemetry`) creates the Temporal
//!   spans (`SignalWithStartWorkflow:…`, `RunWorkflow:…`, `StartActivity:…`, `RunActivity:…`)
//!   and carries W3C trace context between processes in the `_tracer-data` header of each
//!   start, signal, update and activity task. It uses the global tracer provider installed here.
//! - Slipway's own `tracing` spans (the starter's `http` span, the worker's `activity` span)
//!   become OpenTelemetry spans through `tracing-opentelemetry`; [`in_current_trace`] and
//!   [`follow_current_trace`] stitch the two together at the process edges.
//!
//! Export is off unless an OTLP endpoint is configured with the standard variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, OTLP/HTTP protobuf,
//! usually port 4318) and `OTEL_SDK_DISABLED` is not `true`: a Slipway without a collector pays
//! nothing and its workflow histories carry no trace header.
//!
//! Workflow spans must be the same on replay: the provider uses the SDK's `WorkflowIdGenerator`
//! (span ids from the workflow's deterministic random stream) and `WorkflowSpanProcessor` (spans
//! started while replaying are not exported again).

use std::{future::Future, sync::OnceLock};

use opentelemetry::{
    Context,
    context::FutureExt as _,
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchSpanProcessor, SdkTracerProvider},
};
use temporalio_client::ClientOptions;
use temporalio_sdk::opentelemetry::{OpenTelemetryPlugin, WorkflowIdGenerator, WorkflowSpanProcessor};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Where and as whom to export traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// Full OTLP/HTTP traces URL (`…/v1/traces`); `None` lets the exporter read
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` itself.
    pub traces_endpoint: Option<String>,
    /// `service.name` of the spans (`OTEL_SERVICE_NAME` wins when set).
    pub service_name: String,
}

impl TraceExport {
    /// Export configured by the standard OpenTelemetry variables, or `None` when no endpoint is
    /// set or the SDK is disabled.
    pub fn from_env(default_service_name: &str) -> Option<Self> {
        Self::from_lookup(default_service_name, |k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any variable source (tests).
    pub fn from_lookup(default_service_name: &str, var: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return None;
        }
        set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
        Some(Self {
            traces_endpoint: None,
            service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service_name.to_owned()),
        })
    }

    /// Export to an OTLP/HTTP collector at `base` (e.g. `http://127.0.0.1:4318`).
    pub fn to_collector(base: &str, service_name: &str) -> Self {
        Self {
            traces_endpoint: Some(format!("{}/v1/traces", base.trim_end_matches('/'))),
            service_name: service_name.to_owned(),
        }
    }
}

/// The installed tracer provider; its presence is what "tracing is on" means.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Build the OTLP exporter and install the global tracer provider and W3C propagator. Returns
/// the provider for the `tracing` layer.
pub(crate) fn install(export: &TraceExport) -> Result<SdkTracerProvider, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(endpoint) = &export.traces_endpoint {
        exporter = exporter.with_endpoint(endpoint.clone());
    }
    let exporter = exporter.build().map_err(|e| format!("OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_id_generator(WorkflowIdGenerator::default())
        .with_span_processor(WorkflowSpanProcessor::new(BatchSpanProcessor::builder(exporter).build()))
        .with_resource(Resource::builder().with_service_name(export.service_name.clone()).build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let _ = PROVIDER.set(provider.clone());
    Ok(provider)
}

/// The tracer that turns Slipway's `tracing` spans into OpenTelemetry spans.
pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::SdkTracer {
    provider.tracer("slipway")
}

/// The installed provider, if trace export is on.
pub(crate) fn provider() -> Option<&'static SdkTracerProvider> {
    PROVIDER.get()
}

/// Whether traces are exported in this process.
pub fn tracing_enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Flush and stop the exporter (spans still buffered are sent). Called when [`crate::Telemetry`]
/// drops; only the first call does anything.
pub(crate) fn shutdown() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = PROVIDER.get().map_or(Ok(()), SdkTracerProvider::shutdown));
    if let Err(e) = result {
        // Already shut down, or the collector is gone: nothing left to do at exit.
        eprintln!("slipway: trace export shutdown: {e}");
    }
}

/// `options` with the SDK's tracing plugin added when tracing is on, so every start, signal,
/// update and query made through the client, and every workflow and activity a worker built on
/// it runs, joins the caller's trace. Unchanged when tracing is off.
pub fn client_options(options: ClientOptions) -> ClientOptions {
    if !tracing_enabled() {
        return options;
    }
    ClientOptions::new(options.namespace.clone())
        .data_converter(options.data_converter.clone())
        .client_interceptors(options.client_interceptors.clone())
        .plugins(options.plugins().iter().cloned())
        .plugin(OpenTelemetryPlugin::builder().build())
        .build()
}

/// Run `future` (a Temporal client call) with the current `tracing` span as its OpenTelemetry
/// parent: the SDK plugin reads the OpenTelemetry context, not `tracing`'s.
pub fn in_current_trace<F: Future>(future: F) -> impl Future<Output = F::Output> {
    future.with_context(tracing::Span::current().context())
}

/// Parent `span` on the current OpenTelemetry context when it has a span (inside an activity:
/// the plugin's `RunActivity` span), so Slipway's span and its logs sit in the webhook's trace.
pub fn follow_current_trace(span: &tracing::Span) {
    if !tracing_enabled() {
        return;
    }
    let current = Context::current();
    if current.has_active_span() {
        let _ = span.set_parent(current);
    }
}

#[cfg(test)]
mod tests {
    use super::TraceExport;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(TraceExport::from_lookup("slipway-worker", lookup(&[])), None);
        assert_eq!(
            TraceExport::from_lookup("slipway-worker", lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            None
        );
        assert_eq!(
            TraceExport::from_lookup(
                "slipway-worker",
                lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "TRUE")])
            ),
            None
        );
    }

    #[test]
    fn on_with_either_endpoint_and_named_by_otel_service_name() {
        let on = TraceExport::from_lookup(
            "slipway-worker",
            lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]),
        );
        assert_eq!(on.map(|e| e.service_name).as_deref(), Some("slipway-worker"));
        let named = TraceExport::from_lookup(
            "slipway-worker",
            lookup(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces"),
                ("OTEL_SERVICE_NAME", "w-eu-1"),
            ]),
        );
        assert_eq!(named.map(|e| e.service_name).as_deref(), Some("w-eu-1"));
        assert_eq!(
            TraceExport::to_collector("http://127.0.0.1:4318/", "s").traces_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
    }
}
