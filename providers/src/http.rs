//! The request plumbing the provider clients share: base URL joining, timeouts, and turning a
//! non-2xx answer into a [`ClientError::Api`] with the provider's own error code and message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, RequestBuilder, Response, header::HeaderMap};
use serde::de::DeserializeOwned;

use crate::error::{ApiFailure, ClientError, parse_retry_after};

/// Extracts `(code, message)` from a provider's JSON error body.
pub(crate) type ErrorBodyParser = fn(&serde_json::Value) -> (Option<String>, Option<String>);

#[derive(Debug, Clone)]
pub(crate) struct Http {
    provider: &'static str,
    base: String,
    client: reqwest::Client,
    parse_error: ErrorBodyParser,
}

impl Http {
    pub(crate) fn new(
        provider: &'static str,
        base_url: &str,
        timeout: Duration,
        parse_error: ErrorBodyParser,
    ) -> Result<Self, ClientError> {
        // reqwest is built without a bundled TLS backend; use ring, as the Temporal client does.
        // Installing twice is harmless (the first provider wins).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Configuration(format!("{provider} HTTP client: {e}")))?;
        Ok(Self { provider, base: base_url.trim_end_matches('/').to_owned(), client, parse_error })
    }

    pub(crate) fn provider(&self) -> &'static str {
        self.provider
    }

    /// A request to `path` (which starts with `/`) under the base URL.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{}", self.base, path))
    }

    /// Send, and map any non-2xx answer to a classified [`ClientError`].
    pub(crate) async fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let req = req.build().map_err(|e| self.transport(e))?;
        let (method, path) = (req.method().to_string(), req.url().path().to_owned());
        let resp = self.client.execute(req).await.map_err(|e| self.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let body = resp.text().await.unwrap_or_default();
        let (code, message) = serde_json::from_str::<serde_json::Value>(&body)
            .map(|v| (self.parse_error)(&v))
            .unwrap_or((None, None));
        let message = message.unwrap_or_else(|| truncate(&body, 200));
        tracing::debug!(provider = self.provider, %method, %path, status, ?code, "provider error");
        Err(ClientError::Api(Box::new(ApiFailure {
            provider: self.provider,
            method,
            path,
            status,
            code,
            message,
            retry_after,
        })))
    }

    /// Send and decode a JSON body.
    pub(crate) async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode { provider: self.provider, message: e.to_string() })
    }

    fn transport(&self, source: reqwest::Error) -> ClientError {
        ClientError::Transport { provider: self.provider, source: source.without_url() }
    }
}

/// `Retry-After` (delta seconds), else Hetzner-style `RateLimit-Reset` (a Unix time).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(d) = header("retry-after").and_then(parse_retry_after) {
        return Some(d);
    }
    // GitHub: `x-ratelimit-reset` applies only once `x-ratelimit-remaining` hits 0.
    let reset = if header("x-ratelimit-remaining").map(str::trim) == Some("0") {
        header("x-ratelimit-reset")
    } else {
        header("ratelimit-reset")
    };
    let reset: u64 = reset?.trim().parse().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_prefers_the_standard_header() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        h.insert("ratelimit-reset", HeaderValue::from_static("1"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn ratelimit_reset_in_the_past_still_waits_a_second() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", HeaderValue::from_static("1"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
    }
}
