//! Supabase Management API client (`https://api.supabase.com`, paths under `/v1`).
//!
//! Facts relied on (Supabase Management API reference):
//! - `POST /v1/projects` creates a project (`name`, `organization_slug`, `region`, `db_pass`); it
//!   starts `COMING_UP` and is usable once `GET /v1/projects/{ref}/health` reports every
//!   service healthy.
//! - `POST /v1/projects/{ref}/database/query` runs SQL and answers the rows as JSON.
//! - `GET /v1/projects/{ref}/api-keys` lists the `anon` and `service_role` keys.
//! - Rate limit: 120 requests per minute per user and scope; 429 for the rest of the minute.
//! - Error bodies are `{"message": "..."}`.
//! - Project names are not unique: the description declares no conflict for a create, so two
//!   creates with one name make two projects (told apart by `ref` and `created_at`).

use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::http::Http;

/// Supabase Management API client.
#[derive(Debug, Clone)]
pub struct SupabaseClient {
    http: Http,
    token: SecretString,
}

/// A project (fields Slipway uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Project {
    /// Project ref (also its id).
    pub id: String,
    /// Name (not unique, even within an organization).
    pub name: String,
    /// Owning organization (deprecated id; the same value as the slug).
    #[serde(default)]
    pub organization_id: String,
    /// Owning organization's slug.
    #[serde(default)]
    pub organization_slug: String,
    /// `COMING_UP`, `ACTIVE_HEALTHY`, …
    #[serde(default)]
    pub status: String,
    /// When it was created (ISO 8601).
    #[serde(default)]
    pub created_at: Option<String>,
}

#[derive(Deserialize)]
struct ServiceHealth {
    #[serde(default)]
    healthy: bool,
}

#[derive(Deserialize)]
struct ApiKey {
    name: String,
    api_key: String,
}

fn parse_error(v: &Value) -> (Option<String>, Option<String>) {
    (None, v["message"].as_str().map(str::to_owned))
}

impl SupabaseClient {
    /// A client for `base_url` (e.g. `https://api.supabase.com`).
    pub fn new(base_url: &str, token: SecretString) -> Result<Self, ClientError> {
        Ok(Self { http: Http::new("supabase", base_url, Duration::from_secs(60), parse_error)?, token })
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, &format!("/v1{path}")).bearer_auth(self.token.expose_secret())
    }

    /// The organization's oldest project with this name, if any.
    pub async fn find_project(
        &self,
        organization_id: &str,
        name: &str,
    ) -> Result<Option<Project>, ClientError> {
        Ok(self.projects_named(organization_id, name).await?.into_iter().next())
    }

    /// The organization's projects with exactly this name, oldest first (creation time, then
    /// ref), so that every caller picks the same one.
    pub async fn projects_named(
        &self,
        organization_id: &str,
        name: &str,
    ) -> Result<Vec<Project>, ClientError> {
        let mut named: Vec<Project> =
            self.list_projects(organization_id).await?.into_iter().filter(|p| p.name == name).collect();
        named.sort_by_cached_key(|p| (created_nanos(p.created_at.as_deref()), p.id.clone()));
        Ok(named)
    }

    /// The organization's projects.
    pub async fn list_projects(&self, organization_id: &str) -> Result<Vec<Project>, ClientError> {
        let projects: Vec<Project> = self.http.json(self.req(Method::GET, "/projects")).await?;
        Ok(projects
            .into_iter()
            .filter(|p| p.organization_slug == organization_id || p.organization_id == organization_id)
            .collect())
    }

    /// Create a project.
    pub async fn create_project(
        &self,
        organization_id: &str,
        name: &str,
        region: &str,
        db_pass: &SecretString,
    ) -> Result<Project, ClientError> {
        // `organization_slug` is what the Management API requires; `organization_id` is deprecated.
        let body = json!({"name": name, "organization_slug": organization_id, "region": region,
                          "db_pass": db_pass.expose_secret()});
        self.http.json(self.req(Method::POST, "/projects").json(&body)).await
    }

    /// True once db, rest and auth report healthy.
    pub async fn healthy(&self, project_ref: &str) -> Result<bool, ClientError> {
        let path = format!("/projects/{project_ref}/health");
        // `services` is an array sent as repeated parameters (style form, explode true: the
        // description's default), not one comma-separated value.
        let query = [("services", "db"), ("services", "rest"), ("services", "auth")];
        let services: Vec<ServiceHealth> = self.http.json(self.req(Method::GET, &path).query(&query)).await?;
        Ok(!services.is_empty() && services.iter().all(|s| s.healthy))
    }

    /// Run SQL; returns the rows.
    pub async fn query(&self, project_ref: &str, sql: &str) -> Result<Vec<Value>, ClientError> {
        let path = format!("/projects/{project_ref}/database/query");
        self.http.json(self.req(Method::POST, &path).json(&json!({"query": sql}))).await
    }

    /// The project's `anon` key (public by design: it ships to browsers).
    pub async fn anon_key(&self, project_ref: &str) -> Result<SecretString, ClientError> {
        let keys: Vec<ApiKey> =
            self.http.json(self.req(Method::GET, &format!("/projects/{project_ref}/api-keys"))).await?;
        keys.into_iter()
            .find(|k| k.name == "anon")
            .map(|k| SecretString::from(k.api_key))
            .ok_or_else(|| ClientError::Decode { provider: "supabase", message: "no anon key".into() })
    }

    /// Delete a project. `Ok(false)` if it was already gone.
    pub async fn delete_project(&self, project_ref: &str) -> Result<bool, ClientError> {
        match self.http.send(self.req(Method::DELETE, &format!("/projects/{project_ref}"))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Sort key of a creation time (RFC 3339, any precision): its instant, an unknown or unreadable
/// one last.
pub(crate) fn created_nanos(at: Option<&str>) -> i64 {
    at.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::created_nanos;

    #[test]
    fn creation_times_order_across_precisions() {
        let at = |t: &str| created_nanos(Some(t));
        assert!(at("2026-01-01T00:00:00.5Z") > at("2026-01-01T00:00:00Z"));
        assert!(at("2026-01-01T00:00:01Z") > at("2026-01-01T00:00:00.999999Z"));
        assert!(at("2026-01-01T01:00:00+02:00") < at("2026-01-01T00:00:00Z"));
        assert_eq!((created_nanos(None), at("yesterday")), (i64::MAX, i64::MAX));
    }
}
