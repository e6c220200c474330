//! What tests ask Temporal directly, past the API: a workflow's runs, an agent's record by query,
//! and polling until an agent reaches a status (workflows move asynchronously, so assertions wait
//! against a deadline rather than sleep).

use std::time::Duration;

use anyhow::{Context, bail};
use slipway_proto::model::{AgentRecord, AgentStatus};
use slipway_starter::Gateway;

use crate::TestApp;

/// What [`TestApp::runs`] reports.
#[derive(Debug, Clone)]
pub struct Runs {
    /// Id of the workflow's first run.
    pub first: String,
    /// Id of its current run.
    pub current: String,
    /// Events in the current run's history.
    pub history_length: usize,
    /// A workflow task completed after the run's last signal and none is pending: it has
    /// processed everything it was sent (a run whose first task Temporal holds back, as after a
    /// quick continue-as-new, is not settled however quiet it is).
    pub settled: bool,
}

impl TestApp {
    /// An agent created (as a draft, for a subscribed user `name`) and destroyed through the
    /// API: its workflow has closed, so Temporal knows it is gone, unlike a name it never saw
    /// (the orphan sweep deletes only what a known-gone owner left behind).
    pub async fn destroyed_agent(&self, name: &str) -> anyhow::Result<String> {
        let user = self.id(name);
        self.subscribe(&user, None).await?;
        let token = self.token(&user, None);
        let body = serde_json::json!({"name": name, "region": "fsn1"});
        let (code, body) = self.api(reqwest::Method::POST, "/api/agents", Some(&token), Some(body)).await?;
        anyhow::ensure!(code == 201, "create agent: {code} {body}");
        let agent = body["agent_id"].as_str().context("agent_id")?.to_owned();
        let path = format!("/api/agents/{agent}/destroy");
        let (code, body) = self.api(reqwest::Method::POST, &path, Some(&token), None).await?;
        anyhow::ensure!(code == 202, "destroy agent: {code} {body}");
        self.wait_for_status(&agent, &[AgentStatus::Destroyed], Duration::from_secs(90)).await?;
        Ok(agent)
    }

    /// Asks an admin's `POST /api/provisioning` for a client stack (`request`, which must be
    /// accepted: 202) and waits until the stack settles (ready, rolled back or needing
    /// attention). Returns the accepted answer and the settled status.
    pub async fn settled_stack(
        &self,
        request: serde_json::Value,
    ) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
        let admin = self.token("ops", Some("admin"));
        let client = request["clientId"].as_str().unwrap_or_default().to_owned();
        let (code, accepted) =
            self.api(reqwest::Method::POST, "/api/provisioning", Some(&admin), Some(request)).await?;
        anyhow::ensure!(code == 202, "{client}: {code} {accepted}");
        let path = format!("/api/provisioning/{client}");
        let settled =
            crate::wait_for(&format!("stack {client} settles"), Duration::from_secs(60), || async {
                let (code, status) = self.api(reqwest::Method::GET, &path, Some(&admin), None).await?;
                let settled = code == 200
                    && matches!(status["state"].as_str(), Some("ready" | "rolled_back" | "needs_attention"));
                Ok(settled.then_some(status))
            })
            .await?;
        Ok((accepted, settled))
    }

    /// Waits until the agent's record says its latest paid checkout was refused with `code`
    /// (Stripe was answered when the checkout was durable: the refusal is read from the agent).
    pub async fn wait_for_checkout_refusal(
        &self,
        agent_id: &str,
        code: &str,
    ) -> anyhow::Result<slipway_proto::model::CheckoutRefusal> {
        crate::wait_for(
            &format!("agent {agent_id}'s checkout refused {code}"),
            Duration::from_secs(60),
            || async {
                Ok(self.agent(agent_id).await?.and_then(|a| a.checkout_refusal).filter(|r| r.code == code))
            },
        )
        .await
    }

    /// A workflow's runs as Temporal describes it: first run id, current run id (they differ once
    /// it has continued as new) and the current run's history length.
    pub async fn runs(&self, workflow_id: &str) -> anyhow::Result<Runs> {
        use temporalio_common::protos::temporal::api::{
            common::v1::WorkflowExecution, workflowservice::v1::DescribeWorkflowExecutionRequest,
        };
        use tonic::IntoRequest;
        let handle =
            self.client.get_workflow_handle::<slipway_workflows::AgentWorkflow>(workflow_id.to_owned());
        // The service's own answer: the SDK's `describe` reads user metadata without the codec,
        // and a workflow's children and timers carry theirs sealed (README, Payload encryption).
        let request = DescribeWorkflowExecutionRequest {
            namespace: "default".to_owned(),
            execution: Some(WorkflowExecution { workflow_id: workflow_id.to_owned(), run_id: String::new() }),
        };
        let desc = self
            .client
            .connection()
            .workflow_service()
            .describe_workflow_execution(request.into_request())
            .await?
            .into_inner();
        let info = desc.workflow_execution_info.clone().unwrap_or_default();
        Ok(Runs {
            first: info.first_run_id.clone(),
            current: info.execution.map(|e| e.run_id).unwrap_or_default(),
            history_length: usize::try_from(info.history_length).unwrap_or_default(),
            settled: desc.pending_workflow_task.is_none() && {
                let history = handle.fetch_history(Default::default()).to_json().await?;
                let history: serde_json::Value = serde_json::from_slice(&history)?;
                // A completed workflow task (7) after the last signal (26).
                let events = history["events"].as_array().cloned().unwrap_or_default();
                let last = |kind: i64| events.iter().rposition(|e| e["event_type"] == kind);
                last(7).is_some_and(|done| last(26).is_none_or(|signal| done > signal))
            },
        })
    }

    /// The events of a workflow's current run, as `temporal workflow show --output json` lists
    /// them, each as `(attributes kind without "EventAttributes", attributes)`.
    pub async fn events(&self, workflow_id: &str) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
        let handle =
            self.client.get_workflow_handle::<temporalio_client::UntypedWorkflow>(workflow_id.to_owned());
        let history = handle.fetch_history(Default::default()).to_json().await?;
        let mut history: serde_json::Value = serde_json::from_slice(&history)?;
        decrypt_payloads(&mut history)?;
        Ok(history["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["attributes"].as_object()?.iter().next().map(|(k, v)| (k.clone(), v.clone())))
            .map(|(k, v)| (k.trim_end_matches("EventAttributes").to_owned(), v))
            .collect())
    }

    /// The agent's record via the workflow query, or `None` if no agent workflow exists.
    pub async fn agent(&self, agent_id: &str) -> anyhow::Result<Option<AgentRecord>> {
        let gateway =
            Gateway::with_client(self.client.clone(), self.task_queue.clone(), Duration::from_secs(5));
        match gateway.agent(agent_id).await {
            Ok(r) => Ok(Some(r)),
            Err(slipway_starter::temporal::GatewayError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Poll until the agent reaches one of `statuses` (or fail after `timeout`).
    pub async fn wait_for_status(
        &self,
        agent_id: &str,
        statuses: &[AgentStatus],
        timeout: Duration,
    ) -> anyhow::Result<AgentRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(rec) = self.agent(agent_id).await? {
                if statuses.contains(&rec.status) {
                    return Ok(rec);
                }
                last = Some(rec);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("agent {agent_id} did not reach {statuses:?} in {timeout:?}; last: {last:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A gateway over the test client (for queries the API does not expose).
    pub fn gateway(&self) -> Gateway {
        Gateway::with_client(self.client.clone(), self.task_queue.clone(), Duration::from_secs(5))
    }
}

/// Every encrypted payload in a history's JSON, opened with the test keys (what an operator's
/// codec server does), so tests read histories as before encryption. Returns how many it opened.
pub fn decrypt_payloads(value: &mut serde_json::Value) -> anyhow::Result<usize> {
    let keys = crate::encryption();
    let keys = keys.keys().expect("tests encrypt");
    let mut opened = 0;
    visit_payloads(value, &mut |payload| {
        use slipway_codec::wire::WirePayload;
        use temporalio_common::protos::temporal::api::common::v1::Payload;
        let wire: WirePayload = serde_json::from_value(payload.clone())?;
        let sealed = Payload::try_from(&wire).map_err(anyhow::Error::msg)?;
        *payload = serde_json::to_value(WirePayload::from(&keys.open(sealed)?))?;
        opened += 1;
        Ok(())
    })?;
    Ok(opened)
}

/// Calls `f` on every encrypted payload object (`{"metadata": {"encoding": <base64 of
/// binary/encrypted>, ...}, "data": ...}`) in `value`.
pub fn visit_payloads(
    value: &mut serde_json::Value,
    f: &mut dyn FnMut(&mut serde_json::Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use base64::Engine;
    let encrypted = base64::engine::general_purpose::STANDARD.encode(slipway_codec::ENCODING);
    match value {
        serde_json::Value::Object(map) => {
            if map.get("metadata").and_then(|m| m.get("encoding")).and_then(|e| e.as_str())
                == Some(encrypted.as_str())
            {
                return f(value);
            }
            for v in map.values_mut() {
                visit_payloads(v, f)?;
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                visit_payloads(v, f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A replayer of this build's workflows with the test keys: encrypted histories replay with the
/// keys that wrote them, plaintext ones (the committed corpus) as they are.
pub fn replayer() -> anyhow::Result<temporalio_sdk::workflow_replayer::WorkflowReplayer> {
    use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};
    let options = slipway_workflows::register_all(WorkflowReplayerOptions::new())?;
    Ok(WorkflowReplayer::new(options.data_converter(crate::encryption().data_converter()).build())?)
}
