//! The providers' official clients drive the sandbox through every operation Slipway uses and
//! must parse each answer (and see a wrong credential refused as the provider refuses it):
//! Stripe's and Hetzner's Python libraries, at the versions `tests/official-clients` pins
//! (`scripts/test` installs them into `.venv`).

use std::{net::SocketAddr, path::PathBuf, process::Command};

use slipway_sandbox::SandboxConfig;
use slipway_tests::{HETZNER_TOKEN, STRIPE_API_KEY};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs one client script against a fresh sandbox; fails with its output unless it succeeds.
async fn run(script: &str) -> anyhow::Result<String> {
    let python = root().join(".venv/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: run scripts/test, which installs the official clients into .venv",
        python.display()
    );
    let sandbox = slipway_sandbox::spawn(SandboxConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        hetzner_action_ms: 100,
        stripe_api_key: STRIPE_API_KEY.to_owned(),
        hetzner_token: HETZNER_TOKEN.to_owned(),
        ..SandboxConfig::default()
    })
    .await?;
    let credential = if script.starts_with("stripe") { STRIPE_API_KEY } else { HETZNER_TOKEN };
    let script = root().join("tests/official-clients").join(script);
    let base = sandbox.base_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(base).arg(credential).output()
    })
    .await??;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "official client failed:\n{text}");
    Ok(text)
}

#[tokio::test]
async fn stripes_official_python_client_parses_every_answer_slipway_relies_on() -> anyhow::Result<()> {
    let out = run("stripe_client.py").await?;
    for step in [
        "checkout.sessions.create",
        "subscriptions.retrieve",
        "billing.meter_events.create",
        "wrong key: AuthenticationError 401",
    ] {
        assert!(out.contains(step), "{step} missing from:\n{out}");
    }
    Ok(())
}

#[tokio::test]
async fn hetzners_official_python_client_parses_every_answer_slipway_relies_on() -> anyhow::Result<()> {
    let out = run("hetzner_client.py").await?;
    for step in [
        "servers.create + actions",
        "servers.shutdown",
        "servers.power_off",
        "servers.power_on",
        "not_found",
        "wrong token: unauthorized",
    ] {
        assert!(out.contains(step), "{step} missing from:\n{out}");
    }
    Ok(())
}
