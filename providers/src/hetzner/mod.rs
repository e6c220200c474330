//! Hetzner Cloud API client (`https://api.hetzner.cloud/v1`).
//!
//! Facts this client relies on (Hetzner Cloud API reference):
//! - `POST /servers` answers 201 with the server *and* a `create_server` Action; the server is
//!   usable only once that action reaches `status: success`. Poll `GET /actions/{id}`.
//! - Server names are unique per project: a second create with the same name answers
//!   409 `uniqueness_error`. Slipway names servers deterministically, so a retried create finds
//!   its own server by name and adopts it instead of creating a duplicate.
//! - Budget: 3600 requests/hour per project, refilled at 1/s; 429 `rate_limit_exceeded` with
//!   `RateLimit-Reset` when exhausted. Callers poll actions every few seconds, not continuously.
//! - Error bodies are `{"error": {"code": "...", "message": "..."}}`.

use std::{collections::BTreeMap, time::Duration};

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::http::Http;

/// Hetzner Cloud client.
#[derive(Debug, Clone)]
pub struct HetznerClient {
    http: Http,
    token: SecretString,
}

/// A server as returned by the API (the fields Slipway uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Server {
    /// Numeric id.
    pub id: u64,
    /// Unique name.
    pub name: String,
    /// `initializing`, `starting`, `running`, `stopping`, `off`, `deleting`, …
    pub status: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Public network.
    #[serde(default)]
    pub public_net: Option<PublicNet>,
    /// When it was created (ISO 8601).
    #[serde(default)]
    pub created: Option<String>,
}

impl Server {
    /// Public IPv4 address, if any.
    pub fn ipv4(&self) -> Option<String> {
        self.public_net.as_ref()?.ipv4.as_ref().map(|v| v.ip.clone())
    }
}

/// `public_net` of a server.
#[derive(Debug, Clone, Deserialize)]
pub struct PublicNet {
    /// IPv4 block, absent if the server has none.
    pub ipv4: Option<Ipv4>,
}

/// An IPv4 address.
#[derive(Debug, Clone, Deserialize)]
pub struct Ipv4 {
    /// Dotted quad.
    pub ip: String,
}

/// A Hetzner Action: progress of an asynchronous operation.
#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    /// Numeric id.
    pub id: u64,
    /// e.g. `create_server`.
    pub command: String,
    /// `running`, `success` or `error`.
    pub status: String,
    /// Percent done.
    #[serde(default)]
    pub progress: u32,
    /// Set when `status` is `error`.
    #[serde(default)]
    pub error: Option<ActionError>,
}

/// Error detail of a failed action.
#[derive(Debug, Clone, Deserialize)]
pub struct ActionError {
    /// Machine code.
    pub code: String,
    /// Message.
    pub message: String,
}

/// Body of `POST /servers`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateServer {
    /// Unique name (RFC 1123 hostname).
    pub name: String,
    /// e.g. `cx22`.
    pub server_type: String,
    /// e.g. `ubuntu-24.04`.
    pub image: String,
    /// e.g. `fsn1`.
    pub location: String,
    /// Labels for lookup and ownership.
    pub labels: BTreeMap<String, String>,
    /// cloud-init user data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Power on once created.
    pub start_after_create: bool,
}

#[derive(Deserialize)]
struct CreateServerResponse {
    server: Server,
    action: Action,
}

#[derive(Deserialize)]
struct ServerList {
    servers: Vec<Server>,
    #[serde(default)]
    meta: Option<ListMeta>,
}

#[derive(Deserialize)]
struct ListMeta {
    pagination: Pagination,
}

#[derive(Deserialize)]
struct Pagination {
    next_page: Option<u32>,
}

#[derive(Deserialize)]
struct ServerEnvelope {
    server: Server,
}

#[derive(Deserialize)]
struct ActionEnvelope {
    action: Action,
}

fn parse_error(v: &serde_json::Value) -> (Option<String>, Option<String>) {
    let e = &v["error"];
    (e["code"].as_str().map(str::to_owned), e["message"].as_str().map(str::to_owned))
}

/// Power operations on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Cut power (immediate).
    Poweroff,
    /// ACPI shutdown request (the action only reports that it was *sent*).
    Shutdown,
    /// Power on.
    Poweron,
}

impl PowerAction {
    fn path(self) -> &'static str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Shutdown => "shutdown",
            Self::Poweron => "poweron",
        }
    }
}

impl HetznerClient {
    /// A client for the API at `base_url` (e.g. `https://api.hetzner.cloud/v1`).
    pub fn new(base_url: &str, token: SecretString) -> Result<Self, ClientError> {
        Ok(Self { http: Http::new("hetzner", base_url, Duration::from_secs(20), parse_error)?, token })
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, path).bearer_auth(self.token.expose_secret())
    }

    /// The server with exactly this name, if any.
    pub async fn find_server_by_name(&self, name: &str) -> Result<Option<Server>, ClientError> {
        let list: ServerList =
            self.http.json(self.req(Method::GET, "/servers").query(&[("name", name)])).await?;
        Ok(list.servers.into_iter().find(|s| s.name == name))
    }

    /// Every server carrying the label `label_selector` selects (Hetzner's label selector
    /// syntax, e.g. `slipway-agent`), all pages.
    pub async fn list_servers(&self, label_selector: &str) -> Result<Vec<Server>, ClientError> {
        let mut servers = Vec::new();
        let mut page = 1u32;
        loop {
            let query = [
                ("label_selector", label_selector.to_owned()),
                ("page", page.to_string()),
                ("per_page", "50".to_owned()),
            ];
            let list: ServerList = self.http.json(self.req(Method::GET, "/servers").query(&query)).await?;
            servers.extend(list.servers);
            match list.meta.and_then(|m| m.pagination.next_page) {
                Some(next) if next > page => page = next,
                _ => return Ok(servers),
            }
        }
    }

    /// Create a server; returns it with its `create_server` action.
    pub async fn create_server(&self, body: &CreateServer) -> Result<(Server, Action), ClientError> {
        let r: CreateServerResponse = self.http.json(self.req(Method::POST, "/servers").json(body)).await?;
        Ok((r.server, r.action))
    }

    /// A server by id; `None` if it does not exist.
    pub async fn get_server(&self, id: u64) -> Result<Option<Server>, ClientError> {
        match self.http.json::<ServerEnvelope>(self.req(Method::GET, &format!("/servers/{id}"))).await {
            Ok(r) => Ok(Some(r.server)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An action by id.
    pub async fn get_action(&self, id: u64) -> Result<Action, ClientError> {
        let r: ActionEnvelope = self.http.json(self.req(Method::GET, &format!("/actions/{id}"))).await?;
        Ok(r.action)
    }

    /// Delete a server. `Ok(false)` if it was already gone (deleting is idempotent).
    pub async fn delete_server(&self, id: u64) -> Result<bool, ClientError> {
        match self.http.send(self.req(Method::DELETE, &format!("/servers/{id}"))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Run a power action; returns the action to wait for.
    pub async fn power(&self, id: u64, action: PowerAction) -> Result<Action, ClientError> {
        let path = format!("/servers/{id}/actions/{}", action.path());
        let r: ActionEnvelope = self.http.json(self.req(Method::POST, &path)).await?;
        Ok(r.action)
    }

    /// Provider name for logs.
    pub fn provider(&self) -> &'static str {
        self.http.provider()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_body_matches_the_api_reference() {
        let body = CreateServer {
            name: "slipway-a1".into(),
            server_type: "cx22".into(),
            image: "ubuntu-24.04".into(),
            location: "fsn1".into(),
            labels: BTreeMap::from([("slipway-agent".into(), "a1".into())]),
            user_data: None,
            start_after_create: true,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"name":"slipway-a1","server_type":"cx22","image":"ubuntu-24.04","location":"fsn1",
                   "labels":{"slipway-agent":"a1"},"start_after_create":true})
        );
    }

    #[test]
    fn error_bodies_yield_code_and_message() {
        let v = json!({"error":{"code":"uniqueness_error","message":"server name is already used"}});
        assert_eq!(
            parse_error(&v),
            (Some("uniqueness_error".into()), Some("server name is already used".into()))
        );
    }
}
