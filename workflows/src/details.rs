//! The "current details" every saga shows on its Web UI page, so an operator reads where a
//! provisioning stands, what it created and what went wrong without opening the event history
//! or any log. Rendered as Markdown (the Web UI renders it), rebuilt from workflow state at every
//! step change: it is a view, never an input, so it cannot drift from the state.

use slipway_proto::{
    billing::{BillingState, CustomerBilling},
    jobs::JobStatus,
    model::{AgentRecord, StepProgress, StepState},
};

fn marker(state: StepState) -> &'static str {
    match state {
        StepState::Pending => "·",
        StepState::Running => "▶",
        StepState::Done => "✔",
        StepState::Failed => "✘",
        StepState::Compensated => "↺",
    }
}

/// `title`, then one line per step (state, name, detail), then the last error if any.
pub(crate) fn saga(title: &str, steps: &[StepProgress]) -> String {
    let mut out = format!("**{title}**\n\n");
    for s in steps {
        out.push_str(&format!("- {} `{}` {}", marker(s.state), s.name, s.state.as_str()));
        if !s.detail.is_empty() {
            out.push_str(&format!(": {}", s.detail));
        }
        out.push('\n');
    }
    if let Some(failed) = steps.iter().rev().find(|s| s.state == StepState::Failed && !s.detail.is_empty()) {
        out.push_str(&format!("\n**Last error**: {}\n", failed.detail));
    }
    out
}

/// An agent's page: status, where it runs, the latest change and why it failed, if it did.
pub(crate) fn agent(a: &AgentRecord) -> String {
    let mut out =
        format!("**Agent {}** of {} in {}: **{}**\n\n", a.agent_id, a.user_id, a.region, a.status.as_str());
    if let Some(c) = &a.customer_id {
        out.push_str(&format!("- Stripe customer: {c}\n"));
    }
    match &a.server {
        Some(s) => out.push_str(&format!(
            "- Hetzner server: {} `{}` at {}\n",
            s.id,
            s.name,
            s.ipv4.as_deref().unwrap_or("no IPv4")
        )),
        None => out.push_str("- Hetzner server: none\n"),
    }
    if let Some(t) = &a.tailscale {
        out.push_str(&format!(
            "- Tailscale: key {}, device {}\n",
            t.key_id,
            t.device_id.as_deref().unwrap_or("not joined")
        ));
    }
    if let Some(r) = &a.billing_retry {
        let when = if r.next_at == i64::MAX {
            "now".to_owned()
        } else {
            crate::agent::format_rfc3339(r.next_at.max(0) as u64)
        };
        out.push_str(&format!(
            "- **Billing not converged**: `{}` failed {} time(s) ({}); next attempt {when}\n",
            r.request.command.as_str(),
            r.attempt,
            r.last_error
        ));
    }
    if let Some(p) = &a.provisioning_workflow_id {
        out.push_str(&format!("- Provisioning workflow: {p}\n"));
    }
    if let Some(last) = a.audit.last() {
        out.push_str(&format!(
            "- Last change: {} → {} at {} by {}{}\n",
            last.from.as_str(),
            last.to.as_str(),
            last.at,
            last.actor,
            if last.reason.is_empty() { String::new() } else { format!(" ({})", last.reason) }
        ));
    }
    if let Some(why) = &a.failure_reason {
        out.push_str(&format!("\n**Last error**: {why}\n"));
    }
    out
}

/// A coding job's page: its steps (plan, code, review, PR), the PR and what was billed.
pub(crate) fn job(j: &JobStatus) -> String {
    let title = format!("Job {}#{} (attempt {}): {}", j.repo, j.issue_number, j.attempt, j.state.as_str());
    let mut out = saga(&title, &j.steps);
    if let Some(url) = &j.pr_url {
        out.push_str(&format!(
            "\n- Pull request: {url}{}\n",
            j.pr_outcome.as_deref().map(|o| format!(" ({o})")).unwrap_or_default()
        ));
    }
    out.push_str(&format!("- Tokens: {}, meter events: {}\n", j.tokens, j.billed.len()));
    if let Some(why) = &j.failure {
        out.push_str(&format!("\n**Failure**: {why}\n"));
    }
    out
}

/// A Stripe customer's page: subscription status, agents it pays for, delinquency.
pub(crate) fn subscription(customer: &str, status: &str, b: &BillingState) -> String {
    let mut out = format!("**Stripe customer {customer}**: **{status}**\n\n");
    if let Some(u) = &b.user_id {
        out.push_str(&format!("- Slipway user: {u}\n"));
    }
    if let Some(sub) = &b.subscription {
        out.push_str(&format!("- Subscription {}: {} (as of {})\n", sub.id, sub.status, sub.as_of));
    }
    let agents: Vec<&str> = b.agents.iter().map(String::as_str).collect();
    out.push_str(&format!(
        "- Agents: {}\n",
        if agents.is_empty() { "none".to_owned() } else { agents.join(", ") }
    ));
    out.push_str(&format!("- Events applied: {}\n", b.applied.len()));
    if let Some(d) = &b.delinquency {
        let invoices: Vec<&str> = d.failed_invoices.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "\n**Payment failed** (invoices {}); {} at {}\n",
            invoices.join(", "),
            if d.expired { "grace period expired" } else { "agents suspended until paid, destroyed" },
            crate::agent::format_rfc3339(d.deadline.max(0) as u64)
        ));
    }
    if b.ended {
        out.push_str("\nSubscription ended: agents destroyed.\n");
    }
    out
}

/// A Stripe customer's page: each subscription's standing, seats and agents.
pub(crate) fn customer(customer: &str, status: &str, b: &CustomerBilling) -> String {
    let mut out = format!("**Stripe customer {customer}**: **{status}**\n\n");
    if let Some(u) = &b.user_id {
        out.push_str(&format!("- Slipway user: {u}\n"));
    }
    out.push_str(&format!("- Events applied: {}\n", b.applied.len()));
    if b.subscriptions.is_empty() {
        out.push_str("- No subscription yet\n");
        return out;
    }
    out.push_str("\n| Subscription | Stripe status | Standing | Seats | Agents | Unpaid invoices |\n|---|---|---|---|---|---|\n");
    for (id, s) in &b.subscriptions {
        let agents: Vec<String> = s
            .agents
            .iter()
            .map(|(a, h)| match (h.parked, b.targets.get(a)) {
                (true, _) => format!("{a} (waiting for a seat in good standing)"),
                (false, Some(target)) => format!("{a} ({})", target.as_str()),
                (false, None) => a.clone(),
            })
            .collect();
        let mut unpaid: Vec<String> = s.failed_invoices.iter().cloned().collect();
        if let Some(d) = s.grace_deadline.filter(|_| s.standing() != slipway_proto::billing::Standing::Good) {
            let when = crate::agent::format_rfc3339(d.max(0) as u64);
            unpaid.push(if s.lapsed {
                format!("grace period ended {when}")
            } else {
                format!("grace period ends {when}")
            });
        }
        out.push_str(&format!(
            "| {id} | {} | {} | {} | {} | {} |\n",
            s.status,
            s.standing().as_str(),
            s.seats,
            if agents.is_empty() { "none".to_owned() } else { agents.join(", ") },
            if unpaid.is_empty() { "none".to_owned() } else { unpaid.join(", ") },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, state: StepState, detail: &str) -> StepProgress {
        StepProgress { name: name.to_owned(), state, detail: detail.to_owned() }
    }

    #[test]
    fn agent_page_names_its_resources() {
        let mut a = AgentRecord::draft("a1", "u1", "fsn1");
        a.failure_reason = Some("hetzner_server: 422".to_owned());
        let text = agent(&a);
        assert!(text.starts_with("**Agent a1** of u1 in fsn1: **draft**"), "{text}");
        assert!(text.contains("- Hetzner server: none\n"));
        assert!(text.ends_with("**Last error**: hetzner_server: 422\n"));
    }

    #[test]
    fn lists_every_step_and_the_last_error() {
        let text = saga(
            "provisioning agent a1",
            &[
                step("tailscale_key", StepState::Compensated, "1 key(s) revoked"),
                step("hetzner_server", StepState::Failed, "hetzner_server: 422 invalid server type"),
                step("server_ready", StepState::Pending, ""),
            ],
        );
        assert!(text.starts_with("**provisioning agent a1**"));
        assert!(text.contains("- ↺ `tailscale_key` compensated: 1 key(s) revoked\n"));
        assert!(text.contains("- · `server_ready` pending\n"));
        assert!(text.ends_with("**Last error**: hetzner_server: 422 invalid server type\n"));
    }
}
