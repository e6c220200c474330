//! `POST /api/provisioning`: a client's whole stack in one saga; any failure leaves nothing
//! behind (or says exactly what was left).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use slipway_tests::TestApp;

const WAIT: Duration = Duration::from_secs(60);

fn count(state: &Value, provider: &str, kind: &str) -> usize {
    state[provider][kind].as_array().map_or(0, Vec::len)
}

/// Client resources only (the sandbox also lists the template repository).
fn inventory(state: &Value) -> [usize; 4] {
    let client_repos = state["github"]["repos"].as_array().map_or(0, |r| {
        r.iter()
            .filter(|r| r["full_name"].as_str().is_some_and(|n| n.starts_with("slipway-clients/")))
            .count()
    });
    [
        count(state, "supabase", "projects"),
        client_repos,
        count(state, "vercel", "projects"),
        count(state, "n8n", "workflows"),
    ]
}

fn request(client_id: &str) -> Value {
    json!({"clientId": client_id, "clientName": "Acme Bakery", "orgEmail": "ops@acme.example", "tier": "professional"})
}

/// Start a stack as an admin and wait until it settles; returns the final status.
async fn provision(app: &TestApp, client_id: &str) -> anyhow::Result<Value> {
    let (accepted, status) = app.settled_stack(request(client_id)).await?;
    assert_eq!(accepted["workflowId"], json!(format!("client-stack-{client_id}")));
    Ok(status)
}

fn step_states(status: &Value) -> Vec<(String, String)> {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["state"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_client_stack_is_provisioned_end_to_end() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let client = app.id("acme");
    let status = provision(&app, &client).await?;

    assert_eq!(status["state"], "ready", "{status:#}");
    assert!(step_states(&status).iter().all(|(_, s)| s == "done"), "{status:#}");
    let r = &status["resources"];
    assert_eq!(r["migrations"], json!(["001_profiles", "002_events"]));
    assert_eq!(r["repository"], json!(format!("slipway-clients/{client}")));
    assert!(r["deployment_url"].as_str().unwrap().starts_with("https://"));
    assert!(r["webhook_url"].as_str().unwrap().ends_with(&format!("/webhook/clients/{client}")));
    assert!(r["supabase_url"].as_str().unwrap().ends_with(".supabase.co"));

    let state = app.sandbox_state().await?;
    assert_eq!(inventory(&state), [1, 1, 1, 1], "{state:#}");
    let project = &state["supabase"]["projects"][0];
    assert_eq!(project["name"], json!(format!("slipway-{client}")));
    assert_eq!(project["migrations"], json!(["001_profiles", "002_events"]));
    assert_eq!(state["n8n"]["workflows"][0]["active"], true);
    let vercel = state["vercel"]["projects"][0].to_string();
    assert!(
        vercel.contains("NEXT_PUBLIC_SUPABASE_URL") && vercel.contains("NEXT_PUBLIC_SUPABASE_ANON_KEY"),
        "{vercel}"
    );
    assert_eq!(count(&state, "vercel", "deployments"), 1);

    // The same client again returns the existing stack, and creates nothing.
    let admin = app.token("ops", Some("admin"));
    let (code, body) =
        app.api(Method::POST, "/api/provisioning", Some(&admin), Some(request(&client))).await?;
    assert_eq!((code, body["existing"].as_bool()), (202, Some(true)), "{body}");
    assert_eq!(inventory(&app.sandbox_state().await?), [1, 1, 1, 1]);
    Ok(())
}

/// Inject a permanent failure into one step; everything created before it must be removed.
async fn fails_at(fault: Value, failed_step: &str) -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.fault(fault).await?;
    let client = app.id("acme");
    let status = provision(&app, &client).await?;

    assert_eq!(status["state"], "rolled_back", "{status:#}");
    assert!(status["failure"].as_str().unwrap().starts_with(failed_step), "{status:#}");
    assert_eq!(status["leftovers"], json!([]));
    let states = step_states(&status);
    let failed = states.iter().position(|(n, _)| n == failed_step).unwrap();
    assert_eq!(states[failed].1, "failed");
    for (name, state) in &states[..failed] {
        assert_eq!(state, "compensated", "{name}: {status:#}");
    }
    assert_eq!(inventory(&app.sandbox_state().await?), [0, 0, 0, 0], "nothing left behind");
    Ok(())
}

#[tokio::test]
async fn supabase_failure_leaves_nothing() -> anyhow::Result<()> {
    fails_at(json!({"method": "POST", "path": "/supabase/v1/projects", "status": 403}), "supabase_project")
        .await
}

#[tokio::test]
async fn schema_failure_rolls_back() -> anyhow::Result<()> {
    fails_at(
        json!({"method": "POST", "path": "/supabase/v1/projects/*/database/query", "status": 400}),
        "schema",
    )
    .await
}

#[tokio::test]
async fn github_failure_rolls_back() -> anyhow::Result<()> {
    fails_at(
        json!({"method": "POST", "path": "/github/repos/*/*/generate", "status": 403}),
        "github_repository",
    )
    .await
}

#[tokio::test]
async fn vercel_failure_rolls_back() -> anyhow::Result<()> {
    fails_at(json!({"method": "POST", "path": "/vercel/v11/projects", "status": 400}), "vercel").await
}

#[tokio::test]
async fn n8n_failure_rolls_back() -> anyhow::Result<()> {
    fails_at(json!({"method": "POST", "path": "/n8n/api/v1/workflows", "status": 400}), "n8n_workflow").await
}

#[tokio::test]
async fn a_failing_compensation_is_reported_and_the_others_still_run() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.fault(json!({"method": "POST", "path": "/n8n/api/v1/workflows", "status": 400})).await?;
    app.fault(json!({"method": "DELETE", "path": "/github/repos/*/*", "status": 403})).await?;
    let client = app.id("acme");
    let status = provision(&app, &client).await?;

    assert_eq!(status["state"], "needs_attention", "{status:#}");
    let leftovers = status["leftovers"].as_array().unwrap();
    assert_eq!(leftovers.len(), 1, "{status:#}");
    assert!(leftovers[0].as_str().unwrap().starts_with("github repository"), "{status:#}");
    // Supabase and Vercel were still removed; only the repository is left.
    assert_eq!(inventory(&app.sandbox_state().await?), [0, 1, 0, 0]);
    // Operators find it by search attribute.
    let query = format!("WorkflowId = 'client-stack-{client}' AND SlipwayStatus = 'needs_attention'");
    let found = app.client.count_workflows(query, Default::default()).await?;
    assert_eq!(found.count(), 1);
    Ok(())
}

#[tokio::test]
async fn transient_provider_errors_are_retried() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.fault(json!({"method": "POST", "path": "/supabase/v1/projects", "status": 429, "retry_after": 1, "count": 1}))
        .await?;
    app.fault(json!({"method": "POST", "path": "/vercel/v11/projects", "status": 503, "count": 2})).await?;
    app.fault(
        json!({"method": "POST", "path": "/n8n/api/v1/workflows/*/activate", "status": 502, "count": 1}),
    )
    .await?;
    let status = provision(&app, &app.id("acme")).await?;
    assert_eq!(status["state"], "ready", "{status:#}");
    assert_eq!(inventory(&app.sandbox_state().await?), [1, 1, 1, 1]);
    Ok(())
}

#[tokio::test]
async fn only_admins_with_valid_input_can_provision() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = app.token("someone", None);
    let (code, body) = app.api(Method::POST, "/api/provisioning", Some(&user), Some(request("acme"))).await?;
    assert_eq!((code, body["code"].as_str()), (403, Some("FORBIDDEN")));
    let (code, _) = app.api(Method::POST, "/api/provisioning", None, Some(request("acme"))).await?;
    assert_eq!(code, 401);
    let (code, _) = app.api(Method::GET, "/api/provisioning/acme", Some(&user), None).await?;
    assert_eq!(code, 403);

    let admin = app.token("ops", Some("admin"));
    for (field, value) in [
        ("clientId", json!("Acme_Corp")),
        ("clientId", json!("x".repeat(51))),
        ("clientName", json!("")),
        ("clientName", json!("n".repeat(101))),
        ("orgEmail", json!("ops-at-acme")),
        ("tier", json!("platinum")),
    ] {
        let mut body = request(&app.id("acme"));
        body[field] = value;
        let (code, resp) = app.api(Method::POST, "/api/provisioning", Some(&admin), Some(body)).await?;
        assert_eq!((code, resp["code"].as_str()), (400, Some("INVALID_INPUT")), "{field}: {resp}");
        assert!(resp["details"][field].is_string(), "{field}: {resp}");
        assert_eq!(resp["details"].as_object().unwrap().len(), 1, "only {field} is wrong: {resp}");
    }
    let (code, _) =
        app.api(Method::GET, &format!("/api/provisioning/{}", app.id("nobody")), Some(&admin), None).await?;
    assert_eq!(code, 404);
    assert_eq!(inventory(&app.sandbox_state().await?), [0, 0, 0, 0], "nothing started");
    Ok(())
}

/// Removes a closed workflow the way Temporal's retention does (`DeleteWorkflowExecution`), and
/// waits until Temporal no longer knows it.
async fn as_if_retention_removed(app: &TestApp, workflow_id: &str) -> anyhow::Result<()> {
    use temporalio_client::{NamespacedClient, grpc::WorkflowService, tonic::IntoRequest};
    use temporalio_common::protos::temporal::api::{
        common::v1::WorkflowExecution, workflowservice::v1::DeleteWorkflowExecutionRequest,
    };
    let request = DeleteWorkflowExecutionRequest {
        namespace: app.client.namespace(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: workflow_id.to_owned(),
            run_id: String::new(),
        }),
    };
    WorkflowService::delete_workflow_execution(&mut app.client.clone(), request.into_request()).await?;
    let handle =
        app.client.get_workflow_handle::<slipway_workflows::ClientStackWorkflow>(workflow_id.to_owned());
    slipway_tests::wait_until("Temporal forgets the stack's workflow", WAIT, || async {
        Ok(handle.describe(Default::default()).await.is_err())
    })
    .await
}

/// A stack that succeeded closes its workflow, and retention removes it later: its
/// `StackRecord` still owns the client's project, repository and n8n workflow, so the orphan
/// sweep keeps them even with deleting on, and the API still answers for the stack. What no
/// record names is kept and reported, never deleted, whatever its name: an operator's own
/// project (`slipway-prod`), and another deployment's project named exactly like this client's.
#[tokio::test]
async fn a_stack_older_than_retention_and_an_operators_project_survive_deleting_sweeps() -> anyhow::Result<()>
{
    let app = TestApp::spawn().await?;
    app.reconciler_schedules(true).await?;
    let client = app.id("acme");
    let status = provision(&app, &client).await?;
    assert_eq!(status["state"], "ready", "{status:#}");
    as_if_retention_removed(&app, &format!("client-stack-{client}")).await?;
    let admin = app.token("ops", Some("admin"));
    let (code, recorded) =
        app.api(Method::GET, &format!("/api/provisioning/{client}"), Some(&admin), None).await?;
    assert_eq!((code, &recorded["resources"]), (200, &status["resources"]), "the record answers: {recorded}");
    let repo = format!("slipway-clients/{client}");
    let state = app.sandbox_state().await?;
    let description = state["github"]["repos"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["full_name"] == repo.as_str())
        .and_then(|r| r["description"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        description.ends_with(&format!("(provisioned by Slipway for {})", slipway_tests::DEPLOYMENT)),
        "the repository carries the deployment's mark: {description:?}"
    );
    // The operator's production project, and another deployment's client of the same id, in the
    // same organization.
    for name in ["slipway-prod".to_owned(), format!("slipway-{client}")] {
        app.http
            .post(format!("{}/supabase/v1/projects", app.sandbox.base_url))
            .bearer_auth(slipway_tests::SUPABASE_TOKEN)
            .json(&json!({"name": name, "organization_slug": "org-slipway-test", "region": "eu-central-1",
                          "db_pass": "an-operators-password"}))
            .send()
            .await?
            .error_for_status()?;
    }
    let before = app.sandbox_state().await?;
    assert_eq!(inventory(&before)[..2], [3, 1], "{before:#}");

    // Two sweeps, the second one deleting what it found twice.
    app.reconcile("orphans", true).await?;
    let (_, swept) = app.reconcile("orphans", true).await?;
    assert_eq!(swept["orphans"], json!([]), "{swept:#}");
    assert_eq!(swept["deleted"], json!([]), "{swept:#}");
    let ids = |field: &str| -> Vec<String> {
        swept[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_owned).or_else(|| r["id"].as_str().map(str::to_owned)))
            .collect()
    };
    let r = &status["resources"];
    for held in [&r["supabase_ref"], &r["n8n_workflow_id"], &r["repository"]] {
        let held = held.as_str().unwrap_or_default();
        assert!(
            !ids("unowned").iter().chain(&ids("suspects")).any(|k| k.ends_with(held)),
            "{held} is held by the stack's record: {swept:#}"
        );
    }
    let kept: Vec<&str> =
        swept["unowned"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(kept.len(), 2, "{swept:#}");
    for name in [format!("slipway-{client}"), "slipway-prod".to_owned()] {
        assert!(kept.contains(&name.as_str()), "{name} reported as kept: {swept:#}");
    }
    assert_eq!(inventory(&app.sandbox_state().await?), inventory(&before), "nothing deleted");

    // Asked again, the stack exists: nothing new is created.
    let (code, body) =
        app.api(Method::POST, "/api/provisioning", Some(&admin), Some(request(&client))).await?;
    assert_eq!((code, body["existing"].as_bool()), (202, Some(true)), "{body}");
    assert_eq!(inventory(&app.sandbox_state().await?), inventory(&before));
    Ok(())
}

/// The sandbox's resources of one kind named for `client` (`slipway-<client>`).
fn named(state: &Value, provider: &str, kind: &str, client: &str) -> Vec<Value> {
    let name = format!("slipway-{client}");
    state[provider][kind]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["name"].as_str() == Some(name.as_str()))
        .cloned()
        .collect()
}

/// Exactly one Supabase project and one n8n workflow carry the client's name, and they are the
/// ones the stack reports (the workflow active).
async fn assert_only_the_stacks_own(app: &TestApp, client: &str, status: &Value) -> anyhow::Result<()> {
    let state = app.sandbox_state().await?;
    let projects = named(&state, "supabase", "projects", client);
    let workflows = named(&state, "n8n", "workflows", client);
    assert_eq!((projects.len(), workflows.len()), (1, 1), "one of each: {state:#}");
    let r = &status["resources"];
    assert_eq!(projects[0]["ref"], r["supabase_ref"], "{status:#}");
    assert_eq!(workflows[0]["id"], r["n8n_workflow_id"], "{status:#}");
    assert_eq!(workflows[0]["active"], true, "{state:#}");
    Ok(())
}

/// One create is handled but its answer never arrives (the connection closes first): the
/// retry finds what it made and adopts it.
async fn a_lost_create_answer_is_adopted(path: &str) -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.fault(json!({"method": "POST", "path": path, "drop": "response", "count": 1})).await?;
    let client = app.id("acme");
    let status = provision(&app, &client).await?;

    assert_eq!(status["state"], "ready", "{status:#}");
    let faults: Value =
        app.http.get(format!("{}/_sandbox/faults", app.sandbox.base_url)).send().await?.json().await?;
    assert_eq!(faults["faults"][0]["hits"], 1, "the create's answer was lost once: {faults:#}");
    assert_only_the_stacks_own(&app, &client, &status).await
}

#[tokio::test]
async fn a_lost_supabase_create_answer_makes_one_project() -> anyhow::Result<()> {
    a_lost_create_answer_is_adopted("/supabase/v1/projects").await
}

#[tokio::test]
async fn a_lost_n8n_create_answer_makes_one_workflow() -> anyhow::Result<()> {
    a_lost_create_answer_is_adopted("/n8n/api/v1/workflows").await
}

/// Waits until a started stack settles; returns its final status.
async fn settled(app: &TestApp, client: &str) -> anyhow::Result<Value> {
    let admin = app.token("ops", Some("admin"));
    let path = format!("/api/provisioning/{client}");
    slipway_tests::wait_for("the stack settles", WAIT, || async {
        let (code, body) = app.api(Method::GET, &path, Some(&admin), None).await?;
        let busy = matches!(body["state"].as_str(), Some("provisioning" | "rolling_back"));
        Ok((code == 200 && !busy).then_some(body))
    })
    .await
}

/// A create an earlier attempt sent lands after the retry made its own: names are not unique
/// at Supabase or n8n, so the provider makes a second one. The sandbox cannot play this with a
/// slow fault (it stops handling a request whose client hung up, and the clients give up no later
/// than the attempt's start-to-close timeout), so the test sends that create itself while `hold`
/// keeps the saga in the step, then lets the step finish.
async fn a_create_landing_late_leaves_one(
    hold: Value,
    (provider, kind, path): (&str, &str, &str),
    late_create: fn(&str) -> Value,
) -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.fault(hold).await?;
    let client = app.id("acme");
    let admin = app.token("ops", Some("admin"));
    let (code, body) =
        app.api(Method::POST, "/api/provisioning", Some(&admin), Some(request(&client))).await?;
    assert_eq!(code, 202, "{body}");
    slipway_tests::wait_until("the step's own create", WAIT, || async {
        Ok(named(&app.sandbox_state().await?, provider, kind, &client).len() == 1)
    })
    .await?;

    let send = app.http.post(format!("{}{path}", app.sandbox.base_url));
    let send = if provider == "n8n" {
        send.header("X-N8N-API-KEY", slipway_tests::N8N_API_KEY)
    } else {
        send.bearer_auth(slipway_tests::SUPABASE_TOKEN)
    };
    send.json(&late_create(&format!("slipway-{client}"))).send().await?.error_for_status()?;
    assert_eq!(named(&app.sandbox_state().await?, provider, kind, &client).len(), 2, "a duplicate");
    app.http.delete(format!("{}/_sandbox/faults", app.sandbox.base_url)).send().await?.error_for_status()?;

    let status = settled(&app, &client).await?;
    assert_eq!(status["state"], "ready", "{status:#}");
    assert_only_the_stacks_own(&app, &client, &status).await
}

#[tokio::test]
async fn a_supabase_create_landing_after_the_retrys_leaves_one_project() -> anyhow::Result<()> {
    a_create_landing_late_leaves_one(
        json!({"method": "GET", "path": "/supabase/v1/projects/*/health", "status": 503}),
        ("supabase", "projects", "/supabase/v1/projects"),
        |name| {
            json!({"name": name, "organization_slug": "org-slipway-test", "region": "eu-central-1",
                   "db_pass": "an-earlier-attempts-password"})
        },
    )
    .await
}

#[tokio::test]
async fn an_n8n_create_landing_after_the_retrys_leaves_one_workflow() -> anyhow::Result<()> {
    a_create_landing_late_leaves_one(
        json!({"method": "POST", "path": "/n8n/api/v1/workflows/*/activate", "status": 503}),
        ("n8n", "workflows", "/n8n/api/v1/workflows"),
        |name| json!({"name": name, "nodes": [], "connections": {}, "settings": {}}),
    )
    .await
}
