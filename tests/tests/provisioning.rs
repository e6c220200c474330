//! Paid checkout → provisioning saga → sandbox inventory, on a real Temporal dev server.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_proto::model::AgentStatus;
use slipway_tests::TestApp;

const WAIT: Duration = Duration::from_secs(60);

fn count(state: &Value, provider: &str, kind: &str) -> usize {
    state[provider][kind].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn paid_checkout_provisions_an_agent_end_to_end() -> anyhow::Result<()> {
    // Arrange
    let app = TestApp::spawn().await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "fsn1");

    // Act
    let resp = app.post_stripe(&event).await?;

    // Assert: 2xx only once Temporal accepted; then the saga completes.
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    let record = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");
    let server = record.server.clone().expect("server recorded");
    assert_eq!(server.name, format!("slipway-{agent}"));
    assert!(server.ipv4.is_some());
    let ts = record.tailscale.clone().expect("tailscale recorded");
    assert!(ts.device_id.is_some(), "device recorded: {ts:?}");
    let transitions: Vec<_> = record.audit.iter().map(|a| (a.from, a.to)).collect();
    assert_eq!(
        transitions,
        vec![
            (AgentStatus::Draft, AgentStatus::Provisioning),
            (AgentStatus::Provisioning, AgentStatus::Active)
        ]
    );
    assert!(record.audit[0].actor.starts_with("stripe:evt_"));

    let state = app.sandbox_state().await?;
    assert_eq!(count(&state, "hetzner", "servers"), 1);
    assert_eq!(state["hetzner"]["servers"][0]["labels"]["slipway-agent"], json!(agent));
    assert_eq!(state["hetzner"]["servers"][0]["status"], "running");
    assert_eq!(count(&state, "tailscale", "devices"), 1);
    assert_eq!(count(&state, "github", "dispatches"), 1);
    let inputs = &state["github"]["dispatches"][0]["inputs"];
    assert_eq!(inputs["agent_id"], json!(agent));
    assert_eq!(inputs["region"], "fsn1");
    assert!(inputs["job_id"].as_str().unwrap().starts_with(&format!("provisioning-{user}/")));
    assert!(inputs["callback_url"].as_str().unwrap().ends_with("/callbacks/github-actions"));
    // The auth key itself never left the worker unsealed: the sandbox inventory never shows it,
    // and neither does the history (checked in the no-secrets test).
    assert!(!state.to_string().contains("tskey-auth-"), "no key material in inventory");
    Ok(())
}

#[tokio::test]
async fn the_same_event_delivered_many_times_provisions_once() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "hel1");

    // Five concurrent deliveries, as Stripe may do after timeouts: one update (keyed by the
    // event id), so every delivery gets the same answer.
    let sends = (0..5).map(|_| app.post_stripe(&event));
    let mut answers = Vec::new();
    for resp in futures::future::join_all(sends).await {
        let resp = resp?;
        assert_eq!(resp.status(), 200);
        answers.push(resp.json::<Value>().await?["result"].clone());
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:#?}");
    assert_eq!(answers[0]["outcome"], "started");
    let record = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");

    // And again, after completion (Stripe redelivers for days): the same answer, no new effect.
    let late = app.post_stripe(&event).await?;
    assert_eq!(late.status(), 200);
    assert_eq!(late.json::<Value>().await?["result"], answers[0]);

    // Another event for the same, already provisioned agent is answered from its state.
    let (other_event, _) = app.checkout_event(&user, &agent, "hel1");
    let body: Value = app.post_stripe(&other_event).await?.json().await?;
    assert_eq!(body["result"]["outcome"], "already_active", "{body}");

    let state = app.sandbox_state().await?;
    assert_eq!(count(&state, "hetzner", "servers"), 1, "{state:#}");
    assert_eq!(count(&state, "github", "dispatches"), 1);
    let record = app.agent(&agent).await?.expect("agent exists");
    assert_eq!(record.audit.len(), 2, "one provisioning only: {:#?}", record.audit);
    Ok(())
}

#[tokio::test]
async fn transient_provider_errors_are_retried_honouring_retry_after() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    app.fault(
        json!({"method": "POST", "path": "/hetzner/v1/servers", "status": 503, "retry_after": 1, "count": 2}),
    )
    .await?;
    app.fault(json!({"method": "POST", "path": "/tailscale/api/v2/tailnet/*/keys", "status": 429, "retry_after": 1, "count": 1}))
        .await?;
    let (event, _) = app.checkout_event(&user, &agent, "nbg1");

    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    let record = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");

    let creates = app
        .sandbox_requests()
        .await?
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/hetzner/v1/servers")
        .count();
    assert_eq!(creates, 3, "two 503s, then success");
    assert_eq!(count(&app.sandbox_state().await?, "hetzner", "servers"), 1);
    Ok(())
}

#[tokio::test]
async fn a_second_provisioning_for_the_same_user_is_refused_while_one_runs() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = app.id("user");
    let (first, second) = (app.id("first"), app.id("second"));
    app.runner("silent").await?; // keeps the first provisioning waiting for its callback

    let (event1, _) = app.checkout_event(&user, &first, "fsn1");
    assert_eq!(app.post_stripe(&event1).await?.status(), 200);
    app.wait_for_status(&first, &[AgentStatus::Provisioning], WAIT).await?;

    let (event2, _) = app.checkout_event(&user, &second, "fsn1");
    let resp = app.post_stripe(&event2).await?;
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await?;
    assert_eq!(body["code"], "PROVISIONING_IN_PROGRESS", "{body}");
    assert!(body["message"].as_str().unwrap().contains(&user));

    // Nothing was created for the refused agent.
    let record = app.agent(&second).await?.expect("agent known");
    assert_eq!(record.status, AgentStatus::Draft);
    let state = app.sandbox_state().await?;
    assert_eq!(count(&state, "hetzner", "servers"), 1, "only the first agent's server");
    Ok(())
}

const DISPATCHES: &str = "/github/repos/*/*/actions/workflows/*/dispatches";

/// The saga's result (`ProvisionResult`) as JSON, once it completed.
async fn saga_result(app: &TestApp, user: &str) -> anyhow::Result<Value> {
    let handle =
        app.client.get_workflow_handle::<temporalio_client::UntypedWorkflow>(format!("provisioning-{user}"));
    let raw = handle.get_result(Default::default()).await?;
    let data = raw.payloads.first().map(|p| p.data.clone()).unwrap_or_default();
    Ok(serde_json::from_slice(&data)?)
}

/// The sandbox's one Actions run, after checking that the saga dispatched once and that the run's
/// title carries the dispatch's correlation id.
fn the_one_run(state: &Value) -> anyhow::Result<&Value> {
    assert_eq!(count(state, "github", "dispatches"), 1, "{:#}", state["github"]["dispatches"]);
    assert_eq!(count(state, "github", "runs"), 1, "{:#}", state["github"]["runs"]);
    let correlation =
        state["github"]["dispatches"][0]["inputs"]["correlation_id"].as_str().unwrap_or_default();
    anyhow::ensure!(correlation.starts_with("slipway-"), "correlation id {correlation:?}");
    let run = &state["github"]["runs"][0];
    let title = run["display_title"].as_str().unwrap_or_default();
    anyhow::ensure!(title.contains(correlation), "run title {title:?} lacks {correlation}");
    Ok(run)
}

/// How often the worker listed Actions runs.
async fn runs_listed(app: &TestApp) -> anyhow::Result<usize> {
    let requests = app.sandbox_requests().await?;
    let listing =
        |r: &&Value| r["method"] == "GET" && r["path"].as_str().is_some_and(|p| p.ends_with("/runs"));
    Ok(requests.iter().filter(listing).count())
}

/// `workflow_dispatch` is not idempotent: when its answer is lost after GitHub started the run,
/// the retried activity finds that run in the runs list (by the correlation id in its title) and
/// adopts it instead of starting a second bootstrap of the same server.
#[tokio::test]
async fn a_lost_dispatch_answer_adopts_the_run_instead_of_dispatching_again() -> anyhow::Result<()> {
    // Arrange: GitHub handles the first dispatch, and the worker never hears back.
    let app = TestApp::spawn().await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    app.fault(json!({"method": "POST", "path": DISPATCHES, "drop": "response", "count": 1})).await?;
    let (event, _) = app.checkout_event(&user, &agent, "fsn1");

    // Act
    assert_eq!(app.post_stripe(&event).await?.status(), 200);

    // Assert: one Actions run, adopted by the retry, whose callbacks completed the saga.
    let record = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");
    let state = app.sandbox_state().await?;
    let run = the_one_run(&state)?;
    assert!(runs_listed(&app).await? >= 1, "the retry looked for the run first");
    assert_eq!(saga_result(&app, &user).await?["actions_run_id"], json!(run["id"].to_string()));
    assert_eq!(count(&state, "hetzner", "servers"), 1);
    assert_eq!(count(&state, "tailscale", "devices"), 1);
    Ok(())
}

/// When the dispatch's answer names no run (GitHub Enterprise Server refuses
/// `return_run_details`, and the client dispatches without it), the saga looks its run up in the
/// runs list before it takes callbacks, rather than binding whichever proven run calls first.
#[tokio::test]
async fn a_dispatch_answered_without_its_run_is_found_through_the_runs_list() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let refusal = json!({"message": "Invalid request.\n\n\"return_run_details\" is not a permitted key.",
        "documentation_url": "https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event"});
    app.fault(json!({"method": "POST", "path": DISPATCHES, "status": 400, "body": refusal, "count": 1}))
        .await?;
    let (event, _) = app.checkout_event(&user, &agent, "hel1");

    assert_eq!(app.post_stripe(&event).await?.status(), 200);

    let record = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");
    let state = app.sandbox_state().await?;
    let run = the_one_run(&state)?;
    assert!(runs_listed(&app).await? >= 1, "the saga looked the run up");
    assert_eq!(saga_result(&app, &user).await?["actions_run_id"], json!(run["id"].to_string()));
    Ok(())
}

/// A checkout refused 409 while the user's other provisioning ran is provisioned when Stripe
/// sends it again after that provisioning ended (Temporal would otherwise answer the same
/// refusal from the agent's history for as long as its workflow runs), and only once.
#[tokio::test]
async fn a_checkout_refused_while_another_provisioning_ran_provisions_when_sent_again() -> anyhow::Result<()>
{
    let app = slipway_tests::TestApp::spawn_with(slipway_tests::Options {
        policy: slipway_proto::model::ProvisioningPolicy {
            callback_deadline_secs: 3,
            dispatch_deadline_secs: 60,
        },
        ..slipway_tests::Options::default()
    })
    .await?;
    app.runner("silent").await?;
    let (user, first, second) = (app.id("user"), app.id("first"), app.id("second"));
    let (paid_first, _) = app.checkout_event(&user, &first, "fsn1");
    assert_eq!(app.post_stripe(&paid_first).await?.status(), 200);
    app.wait_for_status(&first, &[AgentStatus::Provisioning], WAIT).await?;
    let (paid_second, _) = app.checkout_event(&user, &second, "fsn1");
    let refused = app.post_stripe(&paid_second).await?;
    assert_eq!(refused.status(), 409);
    assert_eq!(refused.json::<Value>().await?["code"], "PROVISIONING_IN_PROGRESS");

    // The first provisioning ends (its job never calls back); Stripe retries the second.
    app.wait_for_status(&first, &[AgentStatus::Failed], WAIT).await?;
    app.runner("succeed").await?;
    let retried = app.post_stripe(&paid_second).await?;
    assert_eq!(retried.status(), 200, "{}", retried.text().await?);
    app.wait_for_status(&second, &[AgentStatus::Active], WAIT).await?;
    // Sent once more: answered, and nothing is provisioned twice.
    assert_eq!(app.post_stripe(&paid_second).await?.status(), 200);
    let state = app.sandbox_state().await?;
    let servers = state["hetzner"]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == json!(format!("slipway-{second}")))
        .count();
    assert_eq!(servers, 1, "{state:#}");
    Ok(())
}
