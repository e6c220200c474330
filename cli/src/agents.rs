//! `slipway agents list|show`: through the starter's REST API, like any client of it.

use serde_json::Value;

use crate::api::{ApiArgs, cell, print_list, table};

/// `slipway agents …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AgentsCommand {
    /// List agents: a user's (--user), or every agent (admin, the default).
    List(ListArgs),
    /// Show one agent: status, server, tailnet device, failure, audit trail.
    Show(ShowArgs),
}

/// Options of `agents list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    api: ApiArgs,
}

/// Options of `agents show`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// Agent id.
    id: String,
    #[command(flatten)]
    api: ApiArgs,
}

/// Run an `agents` command.
pub(crate) async fn run(cmd: AgentsCommand) -> anyhow::Result<i32> {
    match cmd {
        AgentsCommand::List(args) => list(args).await,
        AgentsCommand::Show(args) => show(args).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<i32> {
    let api = args.api.api()?;
    // A user's own agents even with --admin: the admin listing is for "every agent".
    let path = if args.api.who.user.is_some() { "/api/agents" } else { "/api/admin/agents" };
    let body = api.get(path).await?;
    let agents = body["agents"].as_array().cloned().unwrap_or_default();
    let columns = ["agent_id", "status", "region", "name", "user_id"];
    print_list(&agents, args.api.json, "no agents", &["AGENT", "STATUS", "REGION", "NAME", "USER"], |a| {
        columns.iter().map(|k| cell(&a[*k])).collect()
    })
}

async fn show(args: ShowArgs) -> anyhow::Result<i32> {
    args.api.show(&format!("/api/agents/{}", args.id), describe).await
}

/// An agent for people.
fn describe(a: &Value) -> String {
    let mut lines = vec![
        format!("Agent      {}", cell(&a["agent_id"])),
        format!("Status     {}", cell(&a["status"])),
        format!("Name       {}", cell(&a["name"])),
        format!("User       {}", cell(&a["user_id"])),
        format!("Customer   {}", cell(&a["customer_id"])),
        format!("Region     {}", cell(&a["region"])),
    ];
    if a["server"].is_object() {
        let s = &a["server"];
        lines.push(format!("Server     {} {}", cell(&s["id"]), cell(&s["ipv4"])));
    }
    if a["tailscale"].is_object() {
        let t = &a["tailscale"];
        lines.push(format!("Tailnet    device {} (key {})", cell(&t["device_id"]), cell(&t["key_id"])));
    }
    if !a["failure_reason"].is_null() {
        lines.push(format!("Failure    {}", cell(&a["failure_reason"])));
    }
    lines.push(format!("Workflow   {}", cell(&a["workflow_id"])));
    if !a["provisioning_workflow_id"].is_null() {
        lines.push(format!(
            "Saga       {} (run {})",
            cell(&a["provisioning_workflow_id"]),
            cell(&a["provisioning_run_id"])
        ));
    }
    let audit = a["audit"].as_array().cloned().unwrap_or_default();
    if !audit.is_empty() {
        lines.push(String::new());
        let rows: Vec<Vec<String>> = audit.iter().map(audit_row).collect();
        lines.push(table(&["WHEN", "CHANGE", "BY", "WHY"], &rows));
    }
    lines.join("\n")
}

/// One audit entry (`at`, `actor`, `from`, `to`, `reason`) as a row.
fn audit_row(e: &Value) -> Vec<String> {
    vec![
        cell(&e["at"]),
        format!("{} → {}", cell(&e["from"]), cell(&e["to"])),
        cell(&e["actor"]),
        cell(&e["reason"]),
    ]
}
