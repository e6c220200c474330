//! The providers' official clients drive the sandbox through every operation Slipway uses and
//! must parse each answer (and see a wrong credential refused as the provider refuses it):
//! Stripe's, Hetzner's and OpenAI's Python libraries, GitHub's Octokit and Vercel's SDK (which validates
//! every answer against schemas generated from Vercel's own description), at the versions
//! `tests/official-clients` pins (`scripts/test` installs them into `.venv` and
//! `tests/official-clients/node_modules`).

use std::{net::SocketAddr, path::PathBuf, process::Command};

use slipway_sandbox::RunningSandbox;
use slipway_sandbox::SandboxConfig;
use slipway_tests::{GITHUB_TOKEN, HETZNER_TOKEN, LLM_API_KEY, STRIPE_API_KEY, VERCEL_TOKEN};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every step the client script reports is in its output.
fn expect_steps(out: &str, steps: &[&str]) {
    for step in steps {
        assert!(out.contains(step), "{step} missing from:\n{out}");
    }
}

async fn sandbox() -> anyhow::Result<RunningSandbox> {
    Ok(slipway_sandbox::spawn(SandboxConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        hetzner_action_ms: 100,
        vercel_ready_ms: 100,
        stripe_api_key: STRIPE_API_KEY.to_owned(),
        hetzner_token: HETZNER_TOKEN.to_owned(),
        github_token: GITHUB_TOKEN.to_owned(),
        vercel_token: VERCEL_TOKEN.to_owned(),
        llm_api_key: LLM_API_KEY.to_owned(),
        ..SandboxConfig::default()
    })
    .await?)
}

/// Runs `program script args...` (from `tests/official-clients`); fails with its output unless
/// it succeeds.
async fn run_client(program: PathBuf, script: &str, args: Vec<String>) -> anyhow::Result<String> {
    let dir = root().join("tests/official-clients");
    let script = dir.join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(program).current_dir(dir).arg(script).args(args).output()
    })
    .await??;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "official client failed:\n{text}");
    Ok(text)
}

/// Runs one Python client script against a fresh sandbox.
async fn run(script: &str) -> anyhow::Result<String> {
    let python = root().join(".venv/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: run scripts/test, which installs the official clients into .venv",
        python.display()
    );
    let sandbox = sandbox().await?;
    let credential = match script.split('_').next() {
        Some("stripe") => STRIPE_API_KEY,
        Some("openai") => LLM_API_KEY,
        _ => HETZNER_TOKEN,
    };
    run_client(python, script, vec![sandbox.base_url.clone(), credential.to_owned()]).await
}

/// Runs one JavaScript client script against `sandbox`, with `args` after its URL.
async fn run_node(sandbox: &RunningSandbox, script: &str, args: &[&str]) -> anyhow::Result<String> {
    let modules = root().join("tests/official-clients/node_modules");
    anyhow::ensure!(
        modules.exists(),
        "{} is missing: run scripts/test, which installs the official clients",
        modules.display()
    );
    let mut all = vec![sandbox.base_url.clone()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    run_client(PathBuf::from("node"), script, all).await
}

#[tokio::test]
async fn stripes_official_python_client_parses_every_answer_slipway_relies_on() -> anyhow::Result<()> {
    let out = run("stripe_client.py").await?;
    expect_steps(
        &out,
        &[
            "checkout.sessions.create",
            "subscriptions.retrieve",
            "subscriptions.list",
            "billing.meter_events.create",
            "checkout.sessions.expire",
            "wrong key: AuthenticationError 401",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn hetzners_official_python_client_parses_every_answer_slipway_relies_on() -> anyhow::Result<()> {
    let out = run("hetzner_client.py").await?;
    expect_steps(
        &out,
        &[
            "servers.create + actions",
            "servers.shutdown",
            "servers.power_off",
            "servers.power_on",
            "not_found",
            "wrong token: unauthorized",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn githubs_octokit_parses_every_answer_slipway_relies_on() -> anyhow::Result<()> {
    let key = root().join("tests/fixtures/github-app-test-key.pem");
    let sandbox = sandbox().await?;
    let out =
        run_node(&sandbox, "octokit_client.mjs", &[GITHUB_TOKEN, "424242", &key.to_string_lossy()]).await?;
    expect_steps(
        &out,
        &[
            "apps.createInstallationAccessToken",
            "repos.get:",
            "repos.getContent",
            "git.getRef + git.getCommit",
            "git.getTree (recursive)",
            "git.createTree + git.createCommit",
            "git.createRef, 422 when it exists, git.updateRef",
            "pulls.create + pulls.list",
            "issues.createComment + issues.updateComment",
            "repos.getCollaboratorPermissionLevel: write",
            "repos.createOrUpdateFileContents: 201, 200, 409 on a stale sha",
            "actions.createWorkflowDispatch",
            "repos.createUsingTemplate",
            "repos.delete, then get: 404",
            "wrong token: 401 Bad credentials",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn vercels_sdk_validates_every_answer_slipway_relies_on() -> anyhow::Result<()> {
    // Vercel links a project only to a repository it can see: make one first.
    let sandbox = sandbox().await?;
    let http = reqwest::Client::new();
    let made = http
        .post(format!("{}/github/orgs/slipway-clients/repos", sandbox.base_url))
        .bearer_auth(GITHUB_TOKEN)
        .json(&serde_json::json!({"name": "official-vercel"}))
        .send()
        .await?;
    anyhow::ensure!(made.status() == 201, "repository not created: {}", made.status());
    let out =
        run_node(&sandbox, "vercel_client.mjs", &[VERCEL_TOKEN, "slipway-clients/official-vercel"]).await?;
    expect_steps(
        &out,
        &[
            "projects.createProject",
            "projects.getProject:",
            "deployments.createDeployment",
            "deployments.getDeployment: READY",
            "projects.deleteProject",
            "projects.getProject after delete: 404",
            "wrong token: 403 forbidden invalidToken",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn openais_official_python_client_parses_every_answer_slipway_relies_on() -> anyhow::Result<()> {
    let out = run("openai_client.py").await?;
    expect_steps(&out, &["chat.completions.create", "wrong key: AuthenticationError 401 invalid_api_key"]);
    Ok(())
}
