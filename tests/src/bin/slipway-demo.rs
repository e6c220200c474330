//! `slipway-demo`: the second half of `scripts/dev`. Completes a Stripe Checkout in the sandbox
//! (which then delivers the signed `checkout.session.completed` webhook to the starter, exactly
//! as Stripe would) and follows the agent's provisioning over the gRPC control API, step by step,
//! until it is active (exit 0) or failed (exit 1).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_proto::control::{Agent, GetAgentRequest, agent_control_client::AgentControlClient};

fn env(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sandbox = format!("http://{}", env("SLIPWAY_SANDBOX_ADDR", "127.0.0.1:8099"));
    let grpc = format!("http://{}", env("SLIPWAY_GRPC_ADDR", "127.0.0.1:50051"));
    let ui = env("SLIPWAY_UI_URL", "http://localhost:8233");
    let secret = env("SLIPWAY_JWT_SECRET", "dev-jwt-secret-for-local-use-only-0123456789");
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let user = env("DEMO_USER_ID", &format!("user-{suffix}"));
    let agent = env("DEMO_AGENT_ID", &format!("demo-{suffix}"));
    let region = env("DEMO_REGION", "fsn1");

    println!("\n== Slipway demo: a paid checkout provisions agent {agent} for {user} in {region}");
    let resp: Value = reqwest::Client::new()
        .post(format!("{sandbox}/_sandbox/stripe/checkout/complete"))
        .json(&json!({"userId": user, "agentId": agent, "region": region}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!(
        "   Stripe (sandbox) completed checkout {} and sends event {} to /webhooks/stripe, signed",
        resp["checkout_session_id"].as_str().unwrap_or("?"),
        resp["event_id"].as_str().unwrap_or("?")
    );

    let token = slipway_tests::mint_token(&user, None, &secret);
    let mut client = AgentControlClient::connect(grpc).await?;
    let started = Instant::now();
    let mut seen: Vec<(String, String, String)> = Vec::new();
    let mut last_status = String::new();
    let agent_record = loop {
        let mut req = tonic::Request::new(GetAgentRequest { agent_id: agent.clone() });
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
        match client.get_agent(req).await {
            Ok(resp) => {
                let a = resp.into_inner();
                if a.status != last_status {
                    println!("[{:>5.1}s] agent status: {}", started.elapsed().as_secs_f32(), a.status);
                    last_status = a.status.clone();
                }
                for step in &a.steps {
                    let key = (step.name.clone(), step.state.clone(), step.detail.clone());
                    if step.state != "pending" && !seen.contains(&key) {
                        println!(
                            "[{:>5.1}s]   {:<17} {:<11} {}",
                            started.elapsed().as_secs_f32(),
                            step.name,
                            step.state,
                            step.detail
                        );
                        seen.push(key);
                    }
                }
                if a.status == "active" || a.status == "failed" {
                    break a;
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => anyhow::bail!("GetAgent failed: {s}"),
        }
        if started.elapsed() > Duration::from_secs(180) {
            anyhow::bail!("agent {agent} did not finish provisioning within 3 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    report(&agent_record, &ui);
    if agent_record.status != "active" {
        std::process::exit(1);
    }
    Ok(())
}

fn report(a: &Agent, ui: &str) {
    println!();
    if a.status == "active" {
        println!(
            "== Agent {} is ACTIVE: server {} at {}, tailnet device {}",
            a.agent_id, a.server_id, a.server_ipv4, a.tailscale_device_id
        );
    } else {
        println!("== Agent {} FAILED: {}", a.agent_id, a.failure_reason);
    }
    println!("   Agent workflow:        {ui}/namespaces/default/workflows/{}", a.workflow_id);
    println!("   Provisioning workflow: {ui}/namespaces/default/workflows/{}", a.provisioning_workflow_id);
    println!("   All Slipway agents:    {ui}/namespaces/default/workflows?query=WorkflowType%3D%22Agent%22");
}
