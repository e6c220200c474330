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

/// A worker for the Temporal server at `address`, with `keys` as `SLIPWAY_PAYLOAD_KEYS` (or none).
fn worker_with_keys(address: &str, keys: Option<&str>) -> anyhow::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(binary("slipway-worker")?);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEMPORAL_ADDRESS", address)
        .envs(slipway_tests::worker_env("http://127.0.0.1:9", "slipway-keys-check", "http://127.0.0.1:9/cb"))
        .env_remove("SLIPWAY_PAYLOAD_KEYS")
        .env("SLIPWAY_RECONCILE_SCHEDULES", "off")
        .kill_on_drop(true);
    if let Some(k) = keys {
        cmd.env("SLIPWAY_PAYLOAD_KEYS", k);
    }
    Ok(cmd)
}

/// Payloads are never written in plaintext by accident: a worker without keys refuses to start,
/// and one whose keys do not open what the namespace holds stops at start-up, saying so, instead
/// of failing every task it would take.
#[tokio::test]
async fn a_worker_without_payload_keys_or_with_wrong_ones_does_not_start() -> anyhow::Result<()> {
    let app = slipway_tests::TestApp::spawn().await?;
    let out = worker_with_keys(app.temporal_address(), None)?.output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SLIPWAY_PAYLOAD_KEYS is required"), "{stderr}");

    // Something sealed under the suite's keys, then a worker with another key of the same id.
    let token = app.token(&app.id("user"), None);
    let (status, _) = app
        .api(
            reqwest::Method::POST,
            "/api/agents",
            Some(&token),
            Some(serde_json::json!({"name": "n", "region": "fsn1"})),
        )
        .await?;
    assert_eq!(status, 201);
    let wrong = "test-2:00000000000000000000000000000000000000000000000000000000000000aa";
    let run = worker_with_keys(app.temporal_address(), Some(wrong))?.output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SLIPWAY_PAYLOAD_KEYS cannot open"), "{stderr}");
    Ok(())
}
