//! Scenario 5, live progress: how long after a workflow's change an app following the agent
//! (`GET /api/agents/{id}/events`) has it on the wire. Agents are provisioned by signed
//! checkout webhooks, a few at a time, each followed by its own stream from before the payment;
//! every `step` event's delay is the moment it is read minus the workflow time of the change it
//! reports (milliseconds; the workflow's clock, which is the start of the workflow task that
//! made the change, so the figure includes the task's own run). Target: p95 ≤ 250 ms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, stream};

use super::Bench;
use crate::{load::percentile, report::EventsRow, stack, stripe::checkout_completed};

/// Streams followed at once.
const CONCURRENT: usize = 5;

impl Bench {
    pub(crate) async fn events(&self) -> anyhow::Result<EventsRow> {
        let n = self.plan.event_agents;
        say!(
            "events: {n} agents provisioned, each followed by an app's event stream ({CONCURRENT} at a time)"
        );
        let outcomes: Vec<Result<Vec<f64>, String>> = stream::iter(0..n)
            .map(|i| self.follow_provisioning(i))
            .buffer_unordered(CONCURRENT)
            .collect()
            .await;
        let mut delays = Vec::new();
        let (mut errors, mut first_error) = (0, None);
        for outcome in outcomes {
            match outcome {
                Ok(d) => delays.extend(d),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        delays.sort_by(f64::total_cmp);
        let p95_ms = percentile(&delays, 0.95);
        Ok(EventsRow {
            agents: n,
            events: delays.len(),
            p50_ms: percentile(&delays, 0.50),
            p95_ms,
            p99_ms: percentile(&delays, 0.99),
            max_ms: delays.last().copied().unwrap_or_default(),
            target_p95_ms: 250.0,
            poll_ms: stack::EVENTS_POLL_MS,
            errors,
            first_error,
        })
    }

    /// One agent: draft, stream opened, checkout paid; the delays of its step events until it
    /// is active.
    async fn follow_provisioning(&self, i: usize) -> Result<Vec<f64>, String> {
        let key = format!("ev-{}-{i}", self.tag);
        let (agent, user) = (format!("ag-{key}"), format!("u-{key}"));
        self.create_draft(&agent, &user).await?;
        let mut resp = self
            .http
            .get(format!("{}/api/agents/{agent}/events", self.starter_url))
            .bearer_auth(stack::token(&user))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("events of {agent}: {}", resp.status()));
        }
        self.post_stripe(checkout_completed(&format!("evt_{key}"), &agent, &user, &format!("cus_{key}")))
            .await?;
        let mut delays = Vec::new();
        let mut buf = String::new();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(120), resp.chunk())
                .await
                .map_err(|_| format!("{agent}: no event for 120 s"))?
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{agent}: the stream ended"))?;
            let read_at =
                SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let field = |name: &str| {
                    frame.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_owned()))
                };
                let data: serde_json::Value =
                    serde_json::from_str(&field("data:").unwrap_or_default()).unwrap_or_default();
                match field("event:").as_deref() {
                    Some("step") => {
                        let at = data["at"].as_str().unwrap_or_default();
                        let at =
                            chrono::DateTime::parse_from_rfc3339(at).map_err(|e| format!("{at}: {e}"))?;
                        delays.push(read_at - at.timestamp_millis() as f64);
                    }
                    Some("state") if data["to"] == "active" => return Ok(delays),
                    Some("state") if data["to"] == "failed" => return Err(format!("{agent} failed")),
                    _ => {}
                }
            }
        }
    }
}
