//! `slipway-secret-scan PATH...`: fails (exit 1) when a secret the tests configure, or one the
//! sandbox issued, appears in the given files or directories: test logs as text, line by line;
//! recorded workflow histories (`*.json`) event by event with their payloads decoded.
//! `scripts/test` runs it after the suite over `.state/test/logs` and `tests/histories`.
//! Findings name the file and the line (or event); the secret itself is redacted.

use std::{path::PathBuf, process::ExitCode};

use slipway_tests::secret_scan::Scanner;

fn main() -> ExitCode {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        eprintln!("usage: slipway-secret-scan PATH... (log directories, history directories or files)");
        return ExitCode::from(2);
    }
    let scanner = Scanner::default();
    let mut failed = false;
    for path in &paths {
        // An empty or missing path is a broken set-up, not a clean scan.
        match scanner.scan_paths(std::slice::from_ref(path)) {
            Ok((_, 0)) => {
                eprintln!("secret scan: {} holds no files to scan", path.display());
                failed = true;
            }
            Ok((findings, files)) => {
                for f in &findings {
                    eprintln!("secret scan: {f}");
                }
                println!("secret scan: {}: {files} file(s), {} finding(s)", path.display(), findings.len());
                failed |= !findings.is_empty();
            }
            Err(e) => {
                eprintln!("secret scan: {}: {e:#}", path.display());
                failed = true;
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
