//! Tailscale API v2 client (`https://api.tailscale.com`, paths under `/api/v2`).
//!
//! Facts this client relies on (Tailscale API reference):
//! - `POST /api/v2/tailnet/{tailnet}/keys` creates an auth key; the secret `key` is returned
//!   once, in that answer only. Keys minted by an OAuth client must carry tags.
//! - `DELETE /api/v2/tailnet/{tailnet}/keys/{id}` revokes a key; `DELETE /api/v2/device/{id}`
//!   removes a device. Both answer 404 for unknown ids, which Slipway treats as done.
//! - Error bodies are `{"message": "..."}`. No rate limit is published; 429/5xx are still
//!   handled as transient by the shared classification.

use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ClientError;
use crate::http::Http;

/// Tailscale API client bound to one tailnet.
#[derive(Debug, Clone)]
pub struct TailscaleClient {
    http: Http,
    api_key: SecretString,
    tailnet: String,
}

/// A freshly created auth key. `key` is the secret and is only ever held in memory.
#[derive(Debug)]
pub struct AuthKey {
    /// Key id (not secret).
    pub id: String,
    /// The key itself.
    pub key: SecretString,
}

/// An auth key as listed (no secret).
#[derive(Debug, Clone, Deserialize)]
pub struct KeySummary {
    /// Key id.
    pub id: String,
    /// Description given at creation.
    #[serde(default)]
    pub description: String,
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
}

/// A device in the tailnet.
#[derive(Debug, Clone, Deserialize)]
pub struct Device {
    /// Legacy id.
    pub id: String,
    /// Preferred id.
    #[serde(default, rename = "nodeId")]
    pub node_id: Option<String>,
    /// Machine hostname.
    #[serde(default)]
    pub hostname: String,
    /// When it was added to the tailnet (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
}

impl Device {
    /// The id to use in API calls (`nodeId` preferred).
    pub fn api_id(&self) -> &str {
        self.node_id.as_deref().unwrap_or(&self.id)
    }
}

/// Options of a new auth key.
#[derive(Debug, Clone, Serialize)]
pub struct NewAuthKey {
    /// Shown in the admin console; Slipway puts the agent id here to find its keys again.
    pub description: String,
    /// ACL tags the device gets (each `tag:…`).
    pub tags: Vec<String>,
    /// Lifetime.
    pub expiry_seconds: u64,
    /// Reusable key (Slipway: false, one-off).
    pub reusable: bool,
    /// Pre-authorized (Slipway: true, no admin approval).
    pub preauthorized: bool,
}

impl NewAuthKey {
    fn body(&self) -> serde_json::Value {
        json!({
            "capabilities": {"devices": {"create": {
                "reusable": self.reusable, "ephemeral": false,
                "preauthorized": self.preauthorized, "tags": self.tags,
            }}},
            "expirySeconds": self.expiry_seconds,
            "description": self.description,
        })
    }
}

#[derive(Deserialize)]
struct CreatedKey {
    id: String,
    key: String,
}

#[derive(Deserialize)]
struct KeyList {
    #[serde(default)]
    keys: Vec<KeySummary>,
}

#[derive(Deserialize)]
struct DeviceList {
    #[serde(default)]
    devices: Vec<Device>,
}

fn parse_error(v: &serde_json::Value) -> (Option<String>, Option<String>) {
    (None, v["message"].as_str().map(str::to_owned))
}

impl TailscaleClient {
    /// A client for `base_url` (e.g. `https://api.tailscale.com`) and one tailnet (`-` = default).
    pub fn new(base_url: &str, api_key: SecretString, tailnet: &str) -> Result<Self, ClientError> {
        Ok(Self {
            http: Http::new("tailscale", base_url, Duration::from_secs(20), parse_error)?,
            api_key,
            tailnet: tailnet.to_owned(),
        })
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, &format!("/api/v2{path}")).bearer_auth(self.api_key.expose_secret())
    }

    /// Create an auth key.
    pub async fn create_auth_key(&self, opts: &NewAuthKey) -> Result<AuthKey, ClientError> {
        let path = format!("/tailnet/{}/keys", self.tailnet);
        let k: CreatedKey = self.http.json(self.req(Method::POST, &path).json(&opts.body())).await?;
        Ok(AuthKey { id: k.id, key: SecretString::from(k.key) })
    }

    /// List auth keys (without secrets).
    pub async fn list_keys(&self) -> Result<Vec<KeySummary>, ClientError> {
        let path = format!("/tailnet/{}/keys", self.tailnet);
        // `all` is required: `true` lists every key of the tailnet, not only the caller's.
        Ok(self.http.json::<KeyList>(self.req(Method::GET, &path).query(&[("all", "true")])).await?.keys)
    }

    /// Revoke a key. `Ok(false)` if it was already gone.
    pub async fn delete_key(&self, id: &str) -> Result<bool, ClientError> {
        let path = format!("/tailnet/{}/keys/{id}", self.tailnet);
        match self.http.send(self.req(Method::DELETE, &path)).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Devices of the tailnet.
    pub async fn list_devices(&self) -> Result<Vec<Device>, ClientError> {
        let path = format!("/tailnet/{}/devices", self.tailnet);
        Ok(self.http.json::<DeviceList>(self.req(Method::GET, &path)).await?.devices)
    }

    /// Remove a device. `Ok(false)` if it was already gone.
    pub async fn delete_device(&self, id: &str) -> Result<bool, ClientError> {
        match self.http.send(self.req(Method::DELETE, &format!("/device/{id}"))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_request_is_one_off_preauthorized_and_tagged() {
        let body = NewAuthKey {
            description: "slipway agent a1".into(),
            tags: vec!["tag:slipway-agent".into()],
            expiry_seconds: 3600,
            reusable: false,
            preauthorized: true,
        }
        .body();
        assert_eq!(
            body,
            json!({"capabilities":{"devices":{"create":{"reusable":false,"ephemeral":false,
                   "preauthorized":true,"tags":["tag:slipway-agent"]}}},
                   "expirySeconds":3600,"description":"slipway agent a1"})
        );
    }
}
