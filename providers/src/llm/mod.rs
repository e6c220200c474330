//! An OpenAI-compatible chat-completions client (`POST {base}/v1/chat/completions`): the coding
//! agent's model. Base URL, model and key are configuration, so any compatible provider works.
//!
//! Answers are constrained with structured outputs (`response_format` of type `json_schema`,
//! strict) when the caller gives a schema. Token usage comes from the response's `usage`, which
//! is what customers are billed for; a provider that leaves `usage` out gets its tokens
//! estimated (see [`estimate_tokens`]) and the completion says so, so a bill is never silently
//! zero.

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

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The answer's text.
    pub content: String,
    /// Prompt plus completion tokens.
    pub tokens: u64,
    /// True when the provider sent no `usage` and `tokens` is [`estimate_tokens`]'s.
    pub estimated: bool,
    /// The model declined to answer (`message.refusal`): no content, but its tokens were spent.
    pub refusal: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
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
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    total_tokens: u64,
}

fn parse_error(v: &Value) -> (Option<String>, Option<String>) {
    let e = &v["error"];
    (e["code"].as_str().map(str::to_owned), e["message"].as_str().map(str::to_owned))
}

/// Tokens of a call whose provider did not report `usage`: a quarter of the characters sent
/// and received, rounded up, plus four per message for the chat framing (OpenAI's rule of thumb
/// for English text: about four characters per token).
pub fn estimate_tokens(messages: &[&str], answer: &str) -> u64 {
    let chars: usize = messages.iter().map(|m| m.chars().count()).sum::<usize>() + answer.chars().count();
    (chars.div_ceil(4) + 4 * messages.len()) as u64
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

    /// One completion of `system` + `user`, its answer constrained to `schema` (`(name,
    /// JSON schema)`) when given.
    pub async fn complete(
        &self,
        system: &str,
        user: &str,
        schema: Option<(&str, Value)>,
    ) -> Result<Completion, ClientError> {
        let mut body = json!({
            "model": self.model,
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        });
        if let Some((name, schema)) = schema {
            body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": name, "strict": true, "schema": schema}});
        }
        let req = self
            .http
            .request(Method::POST, "/v1/chat/completions")
            .bearer_auth(self.api_key.expose_secret())
            .json(&body);
        let a: Answer = self.http.json(req).await?;
        let message = a.choices.into_iter().next().map(|c| c.message);
        let refusal = message.as_ref().and_then(|m| m.refusal.clone());
        let content = message.and_then(|m| m.content).unwrap_or_default();
        let said = refusal.as_deref().unwrap_or(&content);
        let (tokens, estimated) = match a.usage {
            Some(u) => (u.total_tokens, false),
            None => (estimate_tokens(&[system, user], said), true),
        };
        Ok(Completion { content, tokens, estimated, refusal })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_usage_is_estimated_from_what_was_sent_and_received() {
        assert_eq!(estimate_tokens(&["abcd", "abcdefgh"], "ab"), 4 + 8);
        assert_eq!(estimate_tokens(&[], ""), 0);
    }
}
