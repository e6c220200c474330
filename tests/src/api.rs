//! The REST API as a client calls it: JSON in and out, with bearer JWTs minted with the secret the
//! starter verifies them with.

use serde_json::Value;

use crate::{JWT_SECRET, TestApp, now};

impl TestApp {
    /// Call the REST API; returns the status and the JSON body (`null` if none).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.starter_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A JWT for `sub` (and optionally `role`).
    pub fn token(&self, sub: &str, role: Option<&str>) -> String {
        mint_token(sub, role, JWT_SECRET)
    }
}

/// A signed HS256 JWT valid for an hour.
pub fn mint_token(sub: &str, role: Option<&str>, secret: &str) -> String {
    let claims = slipway_starter::auth::Claims {
        sub: sub.to_owned(),
        role: role.map(str::to_owned),
        exp: now() as u64 + 3600,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}
