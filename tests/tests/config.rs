//! A process missing required configuration refuses to start with one message naming every
//! missing variable, and exit code 2.

use std::{path::PathBuf, process::Command};

/// Path of a workspace binary (package and binary share the name), building it if this test run
/// has not: `cargo test` builds only the binaries of the package under test.
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir =
        std::env::current_exe()?.parent().and_then(|d| d.parent()).map(PathBuf::from).expect("target dir");
    let path = dir.join(name);
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo).args(["build", "-p", name, "--bin", name]).status()?;
        anyhow::ensure!(status.success(), "building {name} failed");
    }
    Ok(path)
}

fn run_without_config(name: &str) -> anyhow::Result<(Option<i32>, String)> {
    let out = Command::new(binary(name)?)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEMPORAL_ADDRESS", "127.0.0.1:1")
        .output()?;
    Ok((out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn worker_names_every_missing_variable() -> anyhow::Result<()> {
    let (code, stderr) = run_without_config("slipway-worker")?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "missing required configuration: HETZNER_API_TOKEN, TAILSCALE_API_KEY, GITHUB_TOKEN, \
             GITHUB_ACTIONS_REPO, STRIPE_SECRET_KEY, SLIPWAY_CALLBACK_URL, SLIPWAY_SEAL_KEY, \
             SUPABASE_MANAGEMENT_TOKEN, SUPABASE_ORG_ID, GITHUB_ORG, GITHUB_TEMPLATE_REPO, VERCEL_TOKEN, N8N_HOST, \
             N8N_API_KEY, GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY, LLM_API_KEY (see .env.example)"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one message: {stderr}");
    Ok(())
}

#[test]
fn starter_names_every_missing_variable() -> anyhow::Result<()> {
    let (code, stderr) = run_without_config("slipway-starter")?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "missing required configuration: STRIPE_WEBHOOK_SECRET, STRIPE_SECRET_KEY, STRIPE_PRICE_ID, \
             GITHUB_CALLBACK_SECRET, GITHUB_WEBHOOK_SECRET, SLIPWAY_JWT_SECRET"
        ),
        "{stderr}"
    );
    Ok(())
}
