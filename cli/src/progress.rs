//! What long waits look like: on a terminal, a spinner naming the current step, each finished
//! step left as a line above it; anywhere else (CI, pipes, files), one plain line per step.
//! Everything goes to stderr, so stdout stays the command's answer.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// `[slipway] message` on stderr (blue prefix on a terminal), like the scripts' `log`.
pub(crate) fn log(message: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("\x1b[1;34m[slipway]\x1b[0m {message}");
    } else {
        eprintln!("[slipway] {message}");
    }
}

/// Progress of a multi-step wait.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// A spinner on a terminal, plain lines otherwise.
    pub(crate) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                    .expect("valid template")
                    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self { bar, started: Instant::now() }
    }

    /// A step begins.
    pub(crate) fn step(&self, name: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(name.to_owned()),
            None => log(&format!("{name}…")),
        }
    }

    /// Update the spinner's text without starting a step (no line when not on a terminal).
    pub(crate) fn status(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_owned());
        }
    }

    /// A step is done (`message` says what came of it).
    pub(crate) fn done(&self, message: &str) {
        let elapsed = self.started.elapsed().as_secs_f32();
        match &self.bar {
            Some(bar) => bar.println(format!("\x1b[32m✓\x1b[0m {message} \x1b[2m({elapsed:.1}s)\x1b[0m")),
            None => log(&format!("{message} ({elapsed:.1}s)")),
        }
    }

    /// Remove the spinner (finished steps stay).
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
