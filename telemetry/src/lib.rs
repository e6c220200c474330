//! Process plumbing every Slipway binary needs in the same way, kept in one place so the worker,
//! the starter and the tools cannot drift apart.
//!
//! - [`init_logging`]: `tracing` to stderr, human-readable on a terminal and one JSON object per
//!   line otherwise (systemd, containers, log shippers), with the fields of every enclosing span
//!   (workflow id, event id, delivery id, …) on each line, so one `grep`/query follows one webhook
//!   or one workflow through all processes.
//! - [`shutdown_signal`]: resolves on Ctrl-C or SIGTERM, what both servers drain on.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

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

/// Install the global subscriber (filter from `RUST_LOG`, default `info`). Call once, first
/// thing in `main`.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = LogFormat::detect(
        std::env::var("SLIPWAY_LOG_FORMAT").ok().as_deref(),
        std::io::stderr().is_terminal(),
    );
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
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
