//! n8n public API client (`https://<host>/api/v1`, header `X-N8N-API-KEY`).
//!
//! Facts relied on (n8n's `public-api/v1/openapi.yml`): `GET /workflows?name=` lists,
//! `POST /workflows` creates (`name`, `nodes`, `connections`, `settings` required),
//! `POST /workflows/{id}/activate` activates (n8n v1; newer versions call it publishing — pin the
//! n8n version), `DELETE /workflows/{id}` deletes. Error bodies are `{"message": "..."}`.
//! Workflow names are not unique: two creates with one name make two workflows (told apart by
//! `id` and `createdAt`).

use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::http::Http;
use crate::supabase::created_nanos;

/// n8n client.
#[derive(Debug, Clone)]
pub struct N8nClient {
    http: Http,
    api_key: SecretString,
}

/// A workflow (fields Slipway uses).
#[derive(Debug, Clone, Deserialize)]
pub struct N8nWorkflow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Active (listening).
    #[serde(default)]
    pub active: bool,
    /// When it was created (ISO 8601).
    #[serde(default, rename = "createdAt")]
    pub created_at: Option<String>,
}

#[derive(Deserialize)]
struct WorkflowList {
    #[serde(default)]
    data: Vec<N8nWorkflow>,
    #[serde(default, rename = "nextCursor")]
    next_cursor: Option<String>,
}

fn parse_error(v: &Value) -> (Option<String>, Option<String>) {
    (None, v["message"].as_str().map(str::to_owned))
}

impl N8nClient {
    /// A client for the n8n instance at `base_url` (e.g. `https://n8n.example.com`).
    pub fn new(base_url: &str, api_key: SecretString) -> Result<Self, ClientError> {
        Ok(Self { http: Http::new("n8n", base_url, Duration::from_secs(30), parse_error)?, api_key })
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, &format!("/api/v1{path}"))
            .header("X-N8N-API-KEY", self.api_key.expose_secret())
    }

    /// The oldest workflow with exactly this name, if any.
    pub async fn find_workflow(&self, name: &str) -> Result<Option<N8nWorkflow>, ClientError> {
        Ok(self.workflows_named(name).await?.into_iter().next())
    }

    /// Every workflow with exactly this name, oldest first (creation time, then id), so that
    /// every caller picks the same one.
    pub async fn workflows_named(&self, name: &str) -> Result<Vec<N8nWorkflow>, ClientError> {
        let mut named = self.pages(Some(name)).await?;
        named.retain(|w| w.name == name);
        named.sort_by_cached_key(|w| (created_nanos(w.created_at.as_deref()), w.id.clone()));
        Ok(named)
    }

    /// Every workflow of the instance, all pages (`cursor`, `nextCursor`).
    pub async fn list_workflows(&self) -> Result<Vec<N8nWorkflow>, ClientError> {
        self.pages(None).await
    }

    /// Every workflow (with this name, if given), all pages.
    async fn pages(&self, name: Option<&str>) -> Result<Vec<N8nWorkflow>, ClientError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "250".to_owned())];
            if let Some(n) = name {
                query.push(("name", n.to_owned()));
            }
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let list: WorkflowList =
                self.http.json(self.req(Method::GET, "/workflows").query(&query)).await?;
            all.extend(list.data);
            match list.next_cursor.filter(|c| !c.is_empty()) {
                Some(c) => cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    /// Create a workflow whose trigger is a webhook at `webhook_path`.
    pub async fn create_webhook_workflow(
        &self,
        name: &str,
        webhook_path: &str,
    ) -> Result<N8nWorkflow, ClientError> {
        let body = json!({
            "name": name,
            "nodes": [
                {"id": "webhook", "name": "Webhook", "type": "n8n-nodes-base.webhook", "typeVersion": 2,
                 "position": [0, 0], "webhookId": webhook_path,
                 "parameters": {"path": webhook_path, "httpMethod": "POST", "responseMode": "onReceived"}},
                {"id": "noop", "name": "Received", "type": "n8n-nodes-base.noOp", "typeVersion": 1,
                 "position": [220, 0], "parameters": {}}
            ],
            "connections": {"Webhook": {"main": [[{"node": "Received", "type": "main", "index": 0}]]}},
            "settings": {"executionOrder": "v1"}
        });
        self.http.json(self.req(Method::POST, "/workflows").json(&body)).await
    }

    /// Activate a workflow.
    pub async fn activate(&self, id: &str) -> Result<N8nWorkflow, ClientError> {
        self.http.json(self.req(Method::POST, &format!("/workflows/{id}/activate"))).await
    }

    /// Delete a workflow. `Ok(false)` if it was already gone.
    pub async fn delete_workflow(&self, id: &str) -> Result<bool, ClientError> {
        match self.http.send(self.req(Method::DELETE, &format!("/workflows/{id}"))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
