//! The examples of the OpenAPI document's answers, built from real values: one agent's record
//! as its workflow keeps it at each point of its life, the stream's events derived from it by
//! the code that derives them ([`events_since`]), a coding job, a client stack. Each example
//! is what the serializer writes for such a value, not hand-typed JSON, so it cannot drift from
//! the types; the test suite also validates every example against its schema with every object
//! closed (`tests/src/api.rs`).

use serde::Serialize;
use serde_json::Value;

use slipway_proto::{
    jobs::{GitHubLink, JobState, JobStatus},
    model::{
        AgentRecord, AgentStatus, AgentSummary, AuditEntry, ProvisioningProgress, ServerRef, StepChange,
        StepProgress, StepState, TailscaleRef, provisioning_workflow_id, server_name,
    },
    stack::{ClientStackStatus, StackResources, StackState},
};

use crate::{
    service::events::{Cursor, Snapshot, events_since},
    views::{AgentList, AgentView, CheckoutCreated, LinkList, StackAccepted, StackView},
};

const USER: &str = "user-1";
const AGENT: &str = "build-box";
const RUN: &str = "0193a5c2-7f4e-7d3a-9b1c-2f5e8a6d4c01";
const CUSTOMER: &str = "cus_NffrFeUfNV2Hib";

/// The example of `operation`'s answer with `status`: its media type and value.
pub fn response(operation: &str, status: u16) -> Option<(&'static str, Value)> {
    use AgentStatus::*;
    fn json(v: &impl Serialize) -> Option<(&'static str, Value)> {
        Some(("application/json", serde_json::to_value(v).ok()?))
    }
    let view = |s: AgentStatus| AgentView::from(agent(s));
    match (operation, status) {
        ("createAgent", 201) => json(&view(Draft)),
        ("getAgent", 200) => json(&view(Active)),
        ("provisionAgent", 202) => json(&view(Provisioning)),
        ("stopAgent", 202) => json(&view(Stopping)),
        ("stopAgent", 200) => json(&view(Stopped)),
        ("startAgent", 202) => json(&view(Stopped)),
        ("startAgent", 200) => json(&view(Active)),
        ("destroyAgent", 202) => json(&view(Destroying)),
        ("destroyAgent", 200) => json(&view(Destroyed)),
        ("listAgents" | "adminListAgents", 200) => json(&AgentList {
            agents: vec![AgentSummary {
                agent_id: AGENT.into(),
                user_id: USER.into(),
                name: "Build box".into(),
                region: "fsn1".into(),
                status: Active.as_str().into(),
            }],
        }),
        ("createCheckoutSession", 201) => json(&CheckoutCreated {
            id: "cs_test_a1b2c3".into(),
            url: "https://checkout.stripe.com/c/pay/cs_test_a1b2c3".into(),
        }),
        ("linkGitHubAccount", 200) => json(&link()),
        ("listGitHubLinks", 200) => json(&LinkList { links: vec![link()] }),
        ("getJobStatus", 200) | ("billJobAgain", 202) => json(&job()),
        ("startClientStack", 202) => json(&StackAccepted {
            client_id: "acme".into(),
            workflow_id: slipway_proto::stack::stack_workflow_id("acme"),
            existing: false,
        }),
        ("getClientStack", 200) => json(&StackView::from(stack())),
        ("streamAgentEvents", 200) => Some(("text/event-stream", Value::String(event_stream()))),
        _ => None,
    }
}

/// The agent `build-box` of `user-1`, paid by checkout, as its workflow keeps it once it has
/// reached `status` (by the usual road: provisioned, then stopped, started or destroyed).
fn agent(status: AgentStatus) -> AgentRecord {
    use AgentStatus::*;
    let mut agent = AgentRecord::draft(AGENT, USER, "fsn1");
    agent.name = "Build box".into();
    let road: &[(AgentStatus, &str, &str)] = match status {
        Draft => &[],
        Provisioning => &[(Provisioning, "stripe:evt_1QxRhc2eZvKYlo2C", "provisioning started")],
        _ => &[
            (Provisioning, "stripe:evt_1QxRhc2eZvKYlo2C", "provisioning started"),
            (Active, "saga", "provisioned"),
        ],
    };
    let last: &[(AgentStatus, &str, &str)] = match status {
        Stopping => &[(Stopping, "user:user-1", "stop requested")],
        Stopped => &[(Stopping, "user:user-1", "stop requested"), (Stopped, "saga", "server powered off")],
        Destroying => &[(Destroying, "user:user-1", "destroy requested")],
        Destroyed => {
            &[(Destroying, "user:user-1", "destroy requested"), (Destroyed, "saga", "resources deleted")]
        }
        _ => &[],
    };
    for (i, (to, actor, reason)) in road.iter().chain(last).enumerate() {
        agent.audit.push(AuditEntry {
            at: format!("2026-12-07T10:0{i}:00Z"),
            actor: (*actor).into(),
            from: agent.status,
            to: *to,
            reason: (*reason).into(),
        });
        agent.status = *to;
    }
    if status != Draft {
        agent.customer_id = Some(CUSTOMER.into());
        agent.provisioning_workflow_id = Some(provisioning_workflow_id(USER));
        agent.provisioning_run_id = Some(RUN.into());
    }
    if !matches!(status, Draft | Provisioning | Destroyed) {
        agent.server = Some(ServerRef {
            id: 40_000_001,
            name: server_name(AGENT),
            ipv4: Some("198.51.100.7".into()),
            create_action_id: Some(41_000_001),
        });
        agent.tailscale = Some(TailscaleRef {
            key_id: "k74ahcqDC3aCNTRL".into(),
            device_id: Some("n74NEiK1DqCNTRL".into()),
        });
    }
    agent
}

/// The saga's step changes of an active agent's provisioning, in order.
fn step_changes() -> Vec<StepChange> {
    let steps: [(&str, &[(StepState, &str)]); 6] = [
        ("tailscale_key", &[(StepState::Running, ""), (StepState::Done, "key k74ahcqDC3aCNTRL")]),
        (
            "hetzner_server",
            &[(StepState::Running, ""), (StepState::Done, "server 40000001 (slipway-build-box)")],
        ),
        (
            "server_ready",
            &[
                (StepState::Running, "waiting for create action"),
                (StepState::Done, "running at 198.51.100.7"),
            ],
        ),
        ("actions_dispatch", &[(StepState::Running, ""), (StepState::Done, "dispatched (run 14000000037)")]),
        (
            "actions_callback",
            &[
                (StepState::Running, "waiting up to 120s"),
                (StepState::Done, "job succeeded (run 14000000037)"),
            ],
        ),
        ("tailscale_device", &[(StepState::Running, ""), (StepState::Done, "device n74NEiK1DqCNTRL")]),
    ];
    let changes = steps.iter().flat_map(|(step, states)| states.iter().map(move |s| (*step, *s)));
    changes
        .enumerate()
        .map(|(i, (step, (state, detail)))| StepChange {
            seq: i as u32 + 1,
            step: step.into(),
            state,
            detail: detail.into(),
            at: format!("2026-12-07T10:00:{:02}.{:03}Z", 1 + i / 2, (i % 2) * 250),
        })
        .collect()
}

/// An active agent's stream from its start: its status changes and saga steps, then a
/// heartbeat, as `GET /api/agents/{id}/events` sends them.
fn event_stream() -> String {
    let changes = step_changes();
    let steps = changes
        .iter()
        .filter(|c| c.state == StepState::Done)
        .map(|c| StepProgress { name: c.step.clone(), state: c.state, detail: c.detail.clone() })
        .collect();
    let progress = ProvisioningProgress { agent_id: AGENT.into(), steps, failure: None, changes };
    let snap = Snapshot { agent: agent(AgentStatus::Active), progress: Some(progress), closed: false };
    let mut text = String::new();
    for (id, event) in events_since(&Cursor::default(), &snap) {
        let data = serde_json::to_value(&event).map(|v| v["data"].to_string()).unwrap_or_default();
        text.push_str(&format!("id: {id}\nevent: {}\ndata: {data}\n\n", event.name()));
    }
    text.push_str("event: heartbeat\ndata: {}\n\n");
    text
}

fn link() -> GitHubLink {
    GitHubLink { account: "acme".into(), user_id: USER.into(), customer_id: CUSTOMER.into() }
}

/// A coding job whose pull request is open and billed.
fn job() -> JobStatus {
    use JobState::*;
    let done = |name: &str, detail: &str| StepProgress {
        name: name.into(),
        state: StepState::Done,
        detail: detail.into(),
    };
    JobStatus {
        repo: "acme/shop".into(),
        issue_number: 42,
        state: PrOpened,
        history: vec![Queued, Planning, Coding, Reviewing, PrCreating, PrOpened],
        steps: vec![
            done("planning", "3 files"),
            done("coding", "3 files changed"),
            done("reviewing", "approved"),
            done("pr_creating", "#43"),
        ],
        pr_number: Some(43),
        pr_url: Some("https://github.com/acme/shop/pull/43".into()),
        pr_outcome: None,
        tokens: 18_240,
        tokens_estimated: false,
        billed: vec!["slw-5c2f0e9a1b7d3c84-pr-43".into(), "slw-5c2f0e9a1b7d3c84-tokens-1".into()],
        unbilled: Vec::new(),
        failure: None,
        attempt: 1,
    }
}

/// The client `acme`'s stack, ready.
fn stack() -> ClientStackStatus {
    let done = |name: &str| StepProgress { name: name.into(), state: StepState::Done, detail: String::new() };
    ClientStackStatus {
        client_id: "acme".into(),
        state: StackState::Succeeded,
        steps: ["supabase_project", "schema", "github_repository", "vercel", "n8n_workflow"]
            .map(done)
            .to_vec(),
        resources: StackResources {
            supabase_ref: Some("abcdefghijklmnopqrst".into()),
            supabase_url: Some("https://abcdefghijklmnopqrst.supabase.co".into()),
            migrations: vec!["0001_init".into()],
            repository: Some("acme-org/acme-app".into()),
            repository_url: Some("https://github.com/acme-org/acme-app".into()),
            vercel_project_id: Some("prj_12HKQaOmR5t5Uy6vdcQsNIiZgHGB".into()),
            deployment_url: Some("https://acme-app.vercel.app".into()),
            n8n_workflow_id: Some("1".into()),
            webhook_url: Some("https://n8n.example.com/webhook/acme".into()),
        },
        failure: None,
        leftovers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_stream_example_is_the_stream_of_an_agent_provisioned_from_its_start() {
        let text = event_stream();
        let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(events.first(), Some(&"state"));
        assert_eq!(events.iter().filter(|e| **e == "step").count(), 12);
        assert_eq!(&events[events.len() - 2..], ["state", "heartbeat"]);
        assert!(text.contains("id: 2.12."), "the last id covers both audit entries and every step:\n{text}");
    }

    #[test]
    fn each_status_example_is_reached_by_its_audit_trail() {
        for status in [AgentStatus::Draft, AgentStatus::Active, AgentStatus::Stopped, AgentStatus::Destroyed]
        {
            let a = agent(status);
            assert_eq!(a.status, status);
            assert_eq!(a.audit.last().map_or(AgentStatus::Draft, |e| e.to), status);
        }
    }
}
