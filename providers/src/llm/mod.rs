//! An OpenAI-compatible chat-completions client (`POST {base}/v1/chat/completions`): the coding
//! agent's model. Base URL, model and key are configuration, so any compatible provider works.
//! Token usage comes from the response's `usage`, which is what customers are billed for.

use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::http::Http;

/// Chat-completions client.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: Http,
    api_key: SecretString,
    model: String,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    total_tokens: u64,
}

fn parse_error(v: &Value) -> (Option<String>, Option<String>) {
    let e = &v["error"];
    (e["code"].as_str().map(str::to_owned), e["message"].as_str().map(str::to_owned))
}

impl LlmClient {
    /// A client for `base_url` (e.g. `https://api.openai.com`) and `model`.
    pub fn new(base_url: &str, api_key: SecretString, model: &str) -> Result<Self, ClientError> {
        Ok(Self {
            http: Http::new("llm", base_url, Duration::from_secs(300), parse_error)?,
            api_key,
            model: model.to_owned(),
        })
    }

    /// One completion: `(answer, total tokens)`.
    pub async fn complete(&self, system: &str, user: &str) -> Result<(String, u64), ClientError> {
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        });
        let req = self
            .http
            .request(Method::POST, "/v1/chat/completions")
            .bearer_auth(self.api_key.expose_secret())
            .json(&body);
        let c: Completion = self.http.json(req).await?;
        let content = c.choices.into_iter().next().and_then(|ch| ch.message.content).unwrap_or_default();
        Ok((content, c.usage.map_or(0, |u| u.total_tokens)))
    }
}
