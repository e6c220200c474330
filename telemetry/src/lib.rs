//! Process plumbing every Slipway binary needs in the same way, kept in one place so the worker,
//! the starter and the tools cannot drift apart.
//!
//! - [`init`]: `tracing` to stderr, human-readable on a terminal and one JSON object per line
//!   otherwise (systemd, containers, log shippers), with the fields of every enclosing span
//!   (workflow id, event id, delivery id, …) on each line, so one `grep`/query follows one webhook
//!   or one workflow through all processes; plus OTLP trace export when a collector is
//!   configured ([`trace`]).
//! - [`shutdown_signal`]: resolves on Ctrl-C or SIGTERM, what both servers drain on.

pub mod trace;

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, Layer, filter::Targets, fmt, prelude::*};

pub use trace::{TraceExport, client_options, follow_current_trace, in_current_trace, tracing_enabled};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Compact text with ANSI colours, for people.
    Text,
    /// One JSON object per line, for machines.
    Json,
}

impl LogFormat {
    /// `SLIPWAY_LOG_FORMAT` (`json` | `text`) when set, else text on a terminal and JSON otherwise.
    pub fn detect(var: Option<&str>, stderr_is_terminal: bool) -> Self {
        match var.map(str::to_ascii_lowercase).as_deref() {
            Some("json") => Self::Json,
            Some("text") => Self::Text,
            _ if stderr_is_terminal => Self::Text,
            _ => Self::Json,
        }
    }
}

/// Telemetry of a process; dropping it flushes the spans not yet exported. Keep it alive in
/// `main` (`let _telemetry = slipway_telemetry::init("slipway-worker");`).
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry(());

impl Drop for Telemetry {
    fn drop(&mut self) {
        trace::shutdown();
    }
}

/// Install the global subscriber (log filter from `RUST_LOG`, default `info`) and, when the
/// standard `OTEL_EXPORTER_OTLP_*` variables name a collector, OTLP trace export as
/// `service_name` (`OTEL_SERVICE_NAME` wins). Call once, first thing in `main`.
pub fn init(service_name: &str) -> Telemetry {
    let export_error =
        TraceExport::from_env(service_name).and_then(|export| start_trace_export(&export).err());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = LogFormat::detect(
        std::env::var("SLIPWAY_LOG_FORMAT").ok().as_deref(),
        std::io::stderr().is_terminal(),
    );
    let registry = tracing_subscriber::registry().with(otel_layer());
    match format {
        LogFormat::Text => {
            registry.with(fmt::layer().with_writer(std::io::stderr).with_filter(filter)).init()
        }
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .init(),
    }
    if let Some(e) = export_error {
        tracing::error!(error = %e, "trace export is off");
    } else if tracing_enabled() {
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry(())
}

/// Start OTLP trace export (what [`init`] does from the environment; tests call it with an
/// explicit collector before building their subscriber with [`otel_layer`]).
pub fn start_trace_export(export: &TraceExport) -> Result<(), String> {
    trace::install(export).map(|_| ())
}

/// The `tracing` layer exporting Slipway's own spans (`slipway_*` targets, info and up, whatever
/// `RUST_LOG` says for the log lines), or `None` when trace export is off.
pub fn otel_layer<S>() -> Option<impl Layer<S>>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let provider = trace::provider()?;
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(trace::tracer(provider))
            .with_filter(Targets::new().with_target("slipway", tracing::Level::INFO)),
    )
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    #[test]
    fn json_unless_a_terminal_or_told_otherwise() {
        assert_eq!(LogFormat::detect(None, true), LogFormat::Text);
        assert_eq!(LogFormat::detect(None, false), LogFormat::Json);
        assert_eq!(LogFormat::detect(Some("JSON"), true), LogFormat::Json);
        assert_eq!(LogFormat::detect(Some("text"), false), LogFormat::Text);
        assert_eq!(LogFormat::detect(Some("bogus"), false), LogFormat::Json);
    }
}
