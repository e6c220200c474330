//! Paid checkout → provisioning saga → sandbox inventory, on a real Temporal dev server.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_proto::{billing::customer_workflow_id, model::AgentStatus};
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
    // No agent was created through the API: the customer's workflow started it with the checkout.
    let customer = record.customer_id.clone().expect("paying customer");
    let events = app.events(&customer_workflow_id(&customer)).await?;
    assert!(
        events.iter().any(|(kind, a)| kind == "ActivityTaskScheduled"
            && a["activity_type"]["name"] == "LookupActivities::start_agent_for_checkout"),
        "{events:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_same_event_delivered_many_times_provisions_once() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (user, agent) = (app.id("user"), app.id("agent"));
    let (event, _) = app.checkout_event(&user, &agent, "hel1");

    // Five concurrent deliveries, as Stripe may do after timeouts: each is acknowledged once
    // the checkout is durable, and the agent hears the event once.
    let sends = (0..5).map(|_| app.post_stripe(&event));
    for resp in futures::future::join_all(sends).await {
        let resp = resp?;
        assert_eq!(resp.status(), 200);
        let body = resp.json::<Value>().await?;
        assert_eq!(
            (body["handled"].as_bool(), body["agent_id"].as_str()),
            (Some(true), Some(agent.as_str()))
        );
    }
    let record = app.wait_for_status(&agent, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!(record.status, AgentStatus::Active, "{record:#?}");

    // And again, after completion (Stripe redelivers for days): acknowledged, no new effect.
    assert_eq!(app.post_stripe(&event).await?.status(), 200);
    // Another event for the same, already provisioned agent changes nothing either.
    let (other_event, _) = app.checkout_event(&user, &agent, "hel1");
    assert_eq!(app.post_stripe(&other_event).await?.status(), 200);
    let workflow = slipway_proto::model::agent_workflow_id(&agent);
    slipway_tests::wait_until("the agent ran both deliveries", WAIT, || async {
        Ok(app.runs(&workflow).await?.settled)
    })
    .await?;

    let state = app.sandbox_state().await?;
    assert_eq!(count(&state, "hetzner", "servers"), 1, "{state:#}");
    assert_eq!(count(&state, "github", "dispatches"), 1);
    let record = app.agent(&agent).await?.expect("agent exists");
    assert_eq!(record.audit.len(), 2, "one provisioning only: {:#?}", record.audit);
    assert_eq!(record.checkout_refusal, None, "{record:#?}");
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

/// One saga per user at a time: a second paid checkout is acknowledged at once (Stripe is never
/// answered 409 and left to retry for hours) and waits in its agent, which says why; nothing is
/// created for it meanwhile.
#[tokio::test]
async fn a_second_paid_checkout_of_the_same_user_waits_while_the_first_provisions() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = app.id("user");
    let (first, second) = (app.id("first"), app.id("second"));
    app.runner("silent").await?; // keeps the first provisioning waiting for its callback

    let (event1, _) = app.checkout_event(&user, &first, "fsn1");
    assert_eq!(app.post_stripe(&event1).await?.status(), 200);
    app.wait_for_status(&first, &[AgentStatus::Provisioning], WAIT).await?;

    let (event2, _) = app.checkout_event(&user, &second, "fsn1");
    let resp = app.post_stripe(&event2).await?;
    assert_eq!(resp.status(), 200, "acknowledged once durable");
    let waiting = app.wait_for_checkout_refusal(&second, "PROVISIONING_IN_PROGRESS").await?;
    assert!(waiting.reason.contains(&user) && waiting.retry_at.is_some(), "{waiting:?}");
    assert!(waiting.event_id.starts_with("evt_"), "{waiting:?}");

    // Nothing was created for the waiting agent.
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

/// A checkout that waited while the user's other provisioning ran is provisioned by itself once
/// that provisioning ended (Stripe need not send it again), and only once however often it is
/// sent again.
#[tokio::test]
async fn a_checkout_that_waited_for_another_provisioning_provisions_once_it_ended() -> anyhow::Result<()> {
    // Slow callbacks keep the first provisioning in flight for a few seconds.
    let app = slipway_tests::TestApp::spawn_with(slipway_tests::Options {
        runner_step_ms: 1_500,
        ..slipway_tests::Options::default()
    })
    .await?;
    let (user, first, second) = (app.id("user"), app.id("first"), app.id("second"));
    let (paid_first, _) = app.checkout_event(&user, &first, "fsn1");
    assert_eq!(app.post_stripe(&paid_first).await?.status(), 200);
    app.wait_for_status(&first, &[AgentStatus::Provisioning], WAIT).await?;
    let (paid_second, _) = app.checkout_event(&user, &second, "fsn1");
    assert_eq!(app.post_stripe(&paid_second).await?.status(), 200);
    app.wait_for_checkout_refusal(&second, "PROVISIONING_IN_PROGRESS").await?;

    // The first provisioning ends; the second goes on by itself.
    app.wait_for_status(&first, &[AgentStatus::Active], WAIT).await?;
    let record = app.wait_for_status(&second, &[AgentStatus::Active, AgentStatus::Failed], WAIT).await?;
    assert_eq!((record.status, &record.checkout_refusal), (AgentStatus::Active, &None), "{record:#?}");
    // Sent once more: answered, and nothing is provisioned twice.
    assert_eq!(app.post_stripe(&paid_second).await?.status(), 200);
    slipway_tests::wait_until("the agent heard the redelivery", WAIT, || async {
        Ok(app.runs(&slipway_proto::model::agent_workflow_id(&second)).await?.settled)
    })
    .await?;
    let state = app.sandbox_state().await?;
    let servers = state["hetzner"]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == json!(format!("slipway-{second}")))
        .count();
    assert_eq!(servers, 1, "{state:#}");
    assert_eq!(count(&state, "github", "dispatches"), 2, "one saga each: {state:#}");
    Ok(())
}
