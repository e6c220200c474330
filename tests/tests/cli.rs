//! The `slipway` binary, run as a person runs it, against a running Slipway (the harness's
//! sandbox, worker and starter on a real Temporal dev server): `send` signs events the starter
//! accepts and that take effect (an agent provisioned in the sandbox, a coding job opening its
//! PR), a wrong secret is refused with a non-zero exit, `agents` and `jobs` read back what
//! happened, and `replay` passes committed histories and fails a corrupted one.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use slipway_tests::{GitHubAccount, TestApp, cli::slipway};

#[tokio::test]
async fn send_stripe_provisions_an_agent_that_agents_commands_show() -> anyhow::Result<()> {
    // Arrange
    let app = TestApp::spawn().await?;
    let (user, agent) = (app.id("cliuser"), app.id("cliagent"));

    // Act: a paid checkout, signed like Stripe's, followed until the agent is active.
    let sent = slipway(
        Some(&app),
        &[
            "send",
            "stripe",
            "checkout.session.completed",
            "--user",
            &user,
            "--agent",
            &agent,
            "--wait",
            "active",
            "--timeout",
            "90",
        ],
    )
    .await?;

    // Assert: accepted, provisioned for real in the sandbox.
    assert_eq!(sent.code, Some(0), "{sent}");
    assert!(sent.stderr.contains("200 OK"), "{sent}");
    let answer = sent.json();
    assert_eq!(
        (answer["handled"].as_bool(), answer["agent_id"].as_str()),
        (Some(true), Some(agent.as_str()))
    );
    let state = app.sandbox_state().await?;
    assert_eq!(slipway_tests::server_status(&state, &agent).as_deref(), Some("running"), "{state}");

    // The owner's listing and the agent itself, as JSON.
    let listed = slipway(Some(&app), &["agents", "list", "--user", &user, "--json"]).await?;
    assert_eq!(listed.code, Some(0), "{listed}");
    let agents = listed.json();
    let mine: Vec<&Value> =
        agents.as_array().unwrap().iter().filter(|a| a["agent_id"] == agent.as_str()).collect();
    assert_eq!(mine.len(), 1, "{listed}");
    assert_eq!(mine[0]["status"], "active");
    let shown = slipway(Some(&app), &["agents", "show", &agent, "--user", &user, "--json"]).await?;
    assert_eq!(shown.code, Some(0), "{shown}");
    let record = shown.json();
    assert_eq!(record["status"], "active");
    assert!(record["server"]["id"].as_u64().is_some(), "{shown}");
    assert!(record["tailscale"]["device_id"].as_str().is_some(), "{shown}");
    // The table form names it too; another user gets the API's 404.
    let table = slipway(Some(&app), &["agents", "show", &agent, "--user", &user]).await?;
    assert!(table.stdout.contains(&agent) && table.stdout.contains("active"), "{table}");
    let other = slipway(Some(&app), &["agents", "show", &agent, "--user", "someone-else"]).await?;
    assert_eq!(other.code, Some(1), "{other}");
    assert!(other.stderr.contains("AGENT_NOT_FOUND"), "{other}");

    // The agent's live history, fetched from Temporal, replays against this build.
    let replayed = slipway(Some(&app), &["replay", "--workflow-id", &format!("agent-{agent}")]).await?;
    assert_eq!(replayed.code, Some(0), "{replayed}");
    assert!(replayed.stdout.contains("1 passed, 0 failed"), "{replayed}");

    // A wrong signing secret: the starter answers 400 INVALID_SIGNATURE, the CLI exits 1.
    let forged =
        slipway(Some(&app), &["send", "stripe", "invoice.paid", "--secret", "whsec_not_the_secret"]).await?;
    assert_eq!(forged.code, Some(1), "{forged}");
    assert!(forged.stderr.contains("400"), "{forged}");
    assert_eq!(forged.json()["code"], "INVALID_SIGNATURE", "{forged}");

    // A billing event with the right secret is handled by the customer's workflow.
    let paid = slipway(Some(&app), &["send", "stripe", "customer.subscription.created"]).await?;
    assert_eq!(paid.code, Some(0), "{paid}");
    assert_eq!(paid.json()["handled"], true, "{paid}");
    Ok(())
}

#[tokio::test]
async fn send_github_starts_a_job_that_jobs_commands_show() -> anyhow::Result<()> {
    // Arrange: a subscribed user whose GitHub account has the App installed and is linked.
    let app = TestApp::spawn().await?;
    let GitHubAccount { repo, installation, customer, .. } = app.github_account(true).await?;
    let installation = installation.to_string();

    // Act: the labelled issue, as GitHub delivers it, followed until the PR is open.
    let sent = slipway(
        Some(&app),
        &[
            "send",
            "github",
            "issues",
            "--repo",
            &repo,
            "--issue",
            "1",
            "--installation",
            &installation,
            // Jobs run for people with write access to the repository.
            "--sender",
            "maintainer",
            "--wait",
            "pr_opened",
            "--timeout",
            "120",
        ],
    )
    .await?;

    // Assert
    assert_eq!(sent.code, Some(0), "{sent}");
    assert!(sent.stderr.contains("202"), "{sent}");
    let job_id = format!("job-{repo}#1");
    assert_eq!(sent.json()["job"], job_id.as_str(), "{sent}");

    let listed = slipway(Some(&app), &["jobs", "list", "--json"]).await?;
    assert_eq!(listed.code, Some(0), "{listed}");
    let jobs = listed.json();
    let ours: Vec<&Value> =
        jobs.as_array().unwrap().iter().filter(|j| j["workflow_id"] == job_id.as_str()).collect();
    assert_eq!(ours.len(), 1, "{listed}");
    assert_eq!(
        (ours[0]["job"].as_str(), ours[0]["state"].as_str()),
        (Some(format!("{repo}#1").as_str()), Some("pr_opened"))
    );
    assert_eq!(ours[0]["customer_id"], customer.as_str());
    // Only this deployment's task queue: every listed job is ours.
    assert!(jobs.as_array().unwrap().iter().all(|j| j["workflow_id"] == job_id.as_str()), "{listed}");

    let shown = slipway(Some(&app), &["jobs", "show", &format!("{repo}#1"), "--json"]).await?;
    assert_eq!(shown.code, Some(0), "{shown}");
    let status = shown.json();
    assert_eq!(status["state"], "pr_opened");
    let pr = status["pr_number"].as_u64().expect("a PR number");
    // The pull request exists in the sandbox's GitHub, open.
    let state = app.sandbox_state().await?;
    let pulls = state["github"]["pulls"].as_array().cloned().unwrap_or_default();
    assert!(
        pulls.iter().any(|p| p["repo"] == repo.as_str() && p["number"] == pr && p["state"] == "open"),
        "no open PR #{pr} in {repo}: {pulls:?}"
    );

    // A delivery signed with the wrong secret: 401, exit 1.
    let forged = slipway(Some(&app), &["send", "github", "ping", "--secret", "wrong"]).await?;
    assert_eq!(forged.code, Some(1), "{forged}");
    assert_eq!(forged.json()["code"], "INVALID_SIGNATURE", "{forged}");
    Ok(())
}

fn histories() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories")
}

/// `provisioning-success.json` with its first scheduled activity renamed: the workflow code
/// schedules something else at that point, which is nondeterminism.
fn corrupted_history(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut history: Value =
        serde_json::from_slice(&std::fs::read(histories().join("provisioning-success.json"))?)?;
    let scheduled = history["events"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find_map(|e| e["attributes"].get_mut("ActivityTaskScheduledEventAttributes"))
        .expect("a scheduled activity");
    assert_ne!(scheduled["activity_type"]["name"], "ProvisioningActivities::delete_server");
    scheduled["activity_type"]["name"] = json!("ProvisioningActivities::delete_server");
    let path = dir.join("provisioning-corrupted.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&history)?)?;
    Ok(path)
}

#[tokio::test]
async fn replay_passes_committed_histories_and_fails_a_corrupted_one() -> anyhow::Result<()> {
    let committed = ["agent-active.json", "provisioning-success.json", "job-merged.json"]
        .map(|f| histories().join(f).display().to_string());
    let args: Vec<&str> = std::iter::once("replay").chain(committed.iter().map(String::as_str)).collect();
    let ok = slipway(None, &args).await?;
    assert_eq!(ok.code, Some(0), "{ok}");
    assert_eq!(ok.stdout.lines().filter(|l| l.starts_with("PASS")).count(), 3, "{ok}");
    assert!(ok.stdout.contains("3 passed, 0 failed"), "{ok}");

    let dir = std::env::temp_dir().join(format!("slipway-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let bad = corrupted_history(&dir)?;
    let bad = bad.display().to_string();
    let failed = slipway(None, &["replay", &committed[0], &bad, "--json"]).await?;
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(failed.code, Some(1), "{failed}");
    let outcomes = failed.json();
    assert_eq!(outcomes[0]["passed"], true, "{failed}");
    assert_eq!(outcomes[1]["passed"], false, "{failed}");
    assert_eq!(outcomes[1]["failure"], "nondeterminism", "{failed}");

    // Not a history at all, and bad usage.
    let missing = slipway(None, &["replay", "/nonexistent/history.json"]).await?;
    assert_eq!(missing.code, Some(1), "{missing}");
    assert!(missing.stdout.contains("unreadable"), "{missing}");
    let usage = slipway(None, &["send", "stripe", "charge.refunded"]).await?;
    assert_eq!(usage.code, Some(2), "{usage}");
    assert!(usage.stderr.contains("checkout.session.completed"), "possible values listed: {usage}");
    Ok(())
}
