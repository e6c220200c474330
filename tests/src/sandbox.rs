//! The sandbox's control endpoints: its inventory, request log, fault injection and the fake
//! Actions runner's outcome, which tests use to arrange a scenario and to check what Slipway did
//! to the providers.

use serde_json::{Value, json};

use crate::TestApp;

impl TestApp {
    /// POST to a sandbox control endpoint.
    pub async fn sandbox_post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self.http.post(format!("{}{path}", self.sandbox.base_url)).json(&body).send().await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path}: {status} {v}");
        Ok(v)
    }

    /// Every exchange the sandbox recorded (with [`crate::Options::record_exchanges`]).
    pub async fn sandbox_exchanges(&self) -> anyhow::Result<Vec<Value>> {
        let r = self.http.get(format!("{}/_sandbox/exchanges", self.sandbox.base_url)).send().await?;
        anyhow::ensure!(r.status().is_success(), "exchanges: {}", r.status());
        Ok(r.json().await?)
    }

    /// The sandbox inventory.
    pub async fn sandbox_state(&self) -> anyhow::Result<Value> {
        Ok(self.http.get(format!("{}/_sandbox/state", self.sandbox.base_url)).send().await?.json().await?)
    }

    /// Inject a fault into the sandbox.
    pub async fn fault(&self, fault: Value) -> anyhow::Result<()> {
        let r =
            self.http.post(format!("{}/_sandbox/faults", self.sandbox.base_url)).json(&fault).send().await?;
        anyhow::ensure!(r.status().is_success(), "fault not accepted: {}", r.text().await?);
        Ok(())
    }

    /// Set the fake Actions runner's outcome (`succeed`, `fail`, `silent`, `hold`: queued runs wait
    /// for the next outcome).
    pub async fn runner(&self, outcome: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/_sandbox/github/runner", self.sandbox.base_url))
            .json(&json!({"outcome": outcome, "reason": "bootstrap script exited with 1"}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "runner not set: {}", r.text().await?);
        Ok(())
    }

    /// The sandbox request log.
    pub async fn sandbox_requests(&self) -> anyhow::Result<Vec<Value>> {
        let v: Value = self
            .http
            .get(format!("{}/_sandbox/requests", self.sandbox.base_url))
            .send()
            .await?
            .json()
            .await?;
        Ok(match v {
            Value::Array(a) => a,
            Value::Object(mut o) => {
                o.remove("requests").and_then(|r| r.as_array().cloned()).unwrap_or_default()
            }
            _ => Vec::new(),
        })
    }
}

/// Status of an agent's Hetzner server in a sandbox inventory (`None`: no such server).
pub fn server_status(state: &Value, agent_id: &str) -> Option<String> {
    state["hetzner"]["servers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == format!("slipway-{agent_id}"))
        .and_then(|s| s["status"].as_str().map(str::to_owned))
}

impl TestApp {
    /// Create, as someone holding the project's credentials would by hand, a Hetzner server and
    /// a Tailscale auth key carrying agent `ghost`'s names (an agent that does not exist, or one destroyed),
    /// the server labelled with the test workers' deployment. Returns the server id and the key id.
    pub async fn ghost_resources(&self, ghost: &str) -> anyhow::Result<(u64, String)> {
        let server = self.labelled_server(ghost, Some(crate::DEPLOYMENT)).await?;
        let key: Value = self
            .http
            .post(format!("{}/tailscale/api/v2/tailnet/-/keys", self.sandbox.base_url))
            .bearer_auth(crate::TAILSCALE_API_KEY)
            .json(&json!({"description": format!("slipway agent {ghost}"), "expirySeconds": 3600,
                          "capabilities": {"devices": {"create": {"reusable": false, "preauthorized": true,
                                                                    "tags": ["tag:slipway-agent"]}}}}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let key = key["id"].as_str().ok_or_else(|| anyhow::anyhow!("key id: {key}"))?.to_owned();
        Ok((server, key))
    }

    /// A Hetzner server named and labelled for `agent`, of `deployment` (`None`: no deployment
    /// label, as servers had before deployments were marked). Returns its id.
    pub async fn labelled_server(&self, agent: &str, deployment: Option<&str>) -> anyhow::Result<u64> {
        let mut labels = json!({"slipway-agent": agent});
        if let Some(d) = deployment {
            labels["slipway-deployment"] = json!(d);
        }
        let server: Value = self
            .http
            .post(format!("{}/hetzner/v1/servers", self.sandbox.base_url))
            .bearer_auth(crate::HETZNER_TOKEN)
            .json(&json!({"name": format!("slipway-{agent}"), "server_type": "cx22", "image": "ubuntu-24.04",
                          "location": "fsn1", "labels": labels}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        server["server"]["id"].as_u64().ok_or_else(|| anyhow::anyhow!("server id: {server}"))
    }

    /// A device joining the tailnet under `hostname` (the sandbox's control route, as a node
    /// running `tailscale up` would). Returns its `nodeId`.
    pub async fn joined_device(&self, hostname: &str) -> anyhow::Result<String> {
        let device: Value = self
            .http
            .post(format!("{}/_sandbox/tailscale/devices", self.sandbox.base_url))
            .json(&json!({"hostname": hostname}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        device["nodeId"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("nodeId: {device}"))
    }
}
