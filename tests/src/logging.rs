//! Test logging: to the test output on request, and to a file per process that the secret scan
//! reads after the suite, so a secret reaching a log line fails the run.

/// Env var naming a directory where every test process writes its log (debug level for the
/// Slipway crates), for the secret scan after the suite.
pub const LOG_DIR_ENV: &str = "SLIPWAY_TEST_LOG_DIR";

/// Initialise test logging once: to the test output with `TEST_LOG=1` (filtered by
/// `RUST_LOG`), and to `$SLIPWAY_TEST_LOG_DIR/<test binary>-<pid>.log` when that is set (debug
/// for the Slipway crates, info for the rest), which is what the secret scan reads.
pub fn init_logging() {
    use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let console = std::env::var_os("TEST_LOG").is_some().then(|| {
            tracing_subscriber::fmt::layer().with_test_writer().with_filter(EnvFilter::from_default_env())
        });
        let file = log_file().map(|file| {
            let crates = ["proto", "activities", "workflows", "worker", "starter", "sandbox", "tests"];
            let directives: Vec<String> = crates.iter().map(|c| format!("slipway_{c}=debug")).collect();
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .with_filter(EnvFilter::new(format!("info,{}", directives.join(","))))
        });
        // Trace export, when a test started it first (`slipway_telemetry::start_trace_export`).
        let otel = slipway_telemetry::otel_layer();
        if console.is_some() || file.is_some() || otel.is_some() {
            let _ = tracing_subscriber::registry().with(otel).with(console).with(file).try_init();
        }
    });
}

/// This process's log file under `$SLIPWAY_TEST_LOG_DIR`, if set.
fn log_file() -> Option<std::fs::File> {
    let dir = std::path::PathBuf::from(std::env::var_os(LOG_DIR_ENV)?);
    let exe = std::env::current_exe().ok();
    let name = exe.as_deref().and_then(|e| e.file_stem()).map_or("test".into(), |s| s.to_string_lossy());
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{name}-{}.log", std::process::id()));
    match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("cannot write the test log {}: {e}", path.display());
            None
        }
    }
}
