//! One error type for every provider client, classified once: retryable or not.
//!
//! Why here: retry behaviour is a property of the *failure*, not of the call site, and follows
//! the providers' documented semantics: transport errors, timeouts, 5xx and 429 are transient
//! (retried with backoff, honouring `Retry-After`); any other 4xx will fail the same way again,
//! so it fails fast. `slipway-activities` turns the classification into Temporal activity
//! failures (non-retryable or not) in one place.

use std::time::Duration;

/// Failure type names used in `ApplicationFailure::type_name`, visible in the Web UI.
pub mod failure_types {
    /// A transient provider failure (5xx, 429, timeout, connection error).
    pub const PROVIDER_UNAVAILABLE: &str = "ProviderUnavailable";
    /// The provider rejected the request (4xx other than 408/429).
    pub const PROVIDER_REJECTED: &str = "ProviderRejected";
    /// The provider refused Slipway's credential (401) or what it may do (403).
    pub const PROVIDER_CREDENTIALS: &str = "ProviderCredentialsRefused";
    /// A resource exists that belongs to something else (e.g. a foreign server with our name).
    pub const RESOURCE_CONFLICT: &str = "ResourceConflict";
    /// A Hetzner action finished with `status: error`.
    pub const ACTION_FAILED: &str = "ProviderActionFailed";
    /// Worker-side misconfiguration (e.g. a sealed secret that cannot be opened).
    pub const CONFIGURATION: &str = "Configuration";
    /// A request Slipway would not send (an input that would change the URL's structure).
    pub const INVALID_REQUEST: &str = "InvalidRequest";
}

/// Whether a failed call is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient: retry, after the given delay if the provider named one.
    Transient(Option<Duration>),
    /// Permanent: the same request will fail the same way.
    Permanent,
}

/// Classify an HTTP status the way the providers document it.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> Retry {
    match status {
        408 | 425 | 429 | 500..=599 => Retry::Transient(retry_after),
        _ => Retry::Permanent,
    }
}

/// Parse a `Retry-After` header value: delta-seconds (the only form these providers send).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A failed call to a provider API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The provider answered with an error status.
    #[error("{0}")]
    Api(Box<ApiFailure>),
    /// The request never got an answer (connect error, timeout, reset).
    #[error("{provider} API unreachable: {source}")]
    Transport {
        /// Provider name.
        provider: &'static str,
        /// Underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// No answer (transport failure in a client that does not expose `reqwest` errors).
    #[error("{provider} API unreachable: {message}")]
    Unreachable {
        /// Provider name.
        provider: &'static str,
        /// What happened.
        message: String,
    },
    /// The answer could not be decoded.
    #[error("{provider} API returned an unexpected body: {message}")]
    Decode {
        /// Provider name.
        provider: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A resource exists that Slipway must not adopt.
    #[error("{0}")]
    Conflict(String),
    /// A long-running provider action failed.
    #[error("{0}")]
    ActionFailed(String),
    /// The worker cannot do this with its configuration.
    #[error("{0}")]
    Configuration(String),
    /// A request that was not sent: one of its inputs would change the URL's structure (a path
    /// segment `..`, say). The same input fails the same way.
    #[error("{0}")]
    InvalidRequest(String),
}

/// The worker variable holding each provider's credential: what to fix when a provider
/// refuses it (401) or refuses what it allows (403).
pub fn credential_variable(provider: &str) -> Option<&'static str> {
    Some(match provider {
        "stripe" => "STRIPE_SECRET_KEY",
        "hetzner" => "HETZNER_API_TOKEN",
        "tailscale" => "TAILSCALE_API_KEY",
        "github" => "GITHUB_TOKEN",
        "github-app" => "GITHUB_APP_ID / GITHUB_APP_PRIVATE_KEY",
        "supabase" => "SUPABASE_MANAGEMENT_TOKEN",
        "vercel" => "VERCEL_TOKEN",
        "n8n" => "N8N_API_KEY",
        "llm" => "LLM_API_KEY",
        _ => return None,
    })
}

/// A provider's error answer (boxed in [`ClientError::Api`] to keep results small).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider} API {method} {path} answered {status}: {message}{}", credential_hint(provider, *status))]
pub struct ApiFailure {
    /// Provider name.
    pub provider: &'static str,
    /// HTTP method.
    pub method: String,
    /// Request path (no query string, no secrets).
    pub path: String,
    /// HTTP status.
    pub status: u16,
    /// The provider's error code, if its body has one.
    pub code: Option<String>,
    /// The provider's error message.
    pub message: String,
    /// `Retry-After` (or equivalent) if sent.
    pub retry_after: Option<Duration>,
}

/// For 401 and 403, which variable to fix (never retried: the same credential fails again).
fn credential_hint(provider: &str, status: u16) -> String {
    match (status, credential_variable(provider)) {
        (401, Some(var)) => format!(" (the credential was refused: check {var})"),
        (403, Some(var)) => format!(" (the credential lacks a permission this needs: check {var})"),
        _ => String::new(),
    }
}

impl ClientError {
    /// Retry classification of this failure.
    pub fn retry(&self) -> Retry {
        match self {
            Self::Api(f) => classify_status(f.status, f.retry_after),
            Self::Transport { .. } | Self::Unreachable { .. } => Retry::Transient(None),
            // A body we cannot read is most often a proxy error page: worth another try.
            Self::Decode { .. } => Retry::Transient(None),
            Self::Conflict(_) | Self::ActionFailed(_) | Self::Configuration(_) | Self::InvalidRequest(_) => {
                Retry::Permanent
            }
        }
    }

    /// HTTP status, if the provider answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(f) => Some(f.status),
            _ => None,
        }
    }

    /// True for a 404 answer (used by idempotent deletes: gone is done).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Failure type name of this error (`ApplicationFailure::type_name`, visible in the Web UI).
    pub fn failure_type(&self) -> &'static str {
        match self {
            Self::Conflict(_) => failure_types::RESOURCE_CONFLICT,
            Self::ActionFailed(_) => failure_types::ACTION_FAILED,
            Self::Configuration(_) => failure_types::CONFIGURATION,
            Self::InvalidRequest(_) => failure_types::INVALID_REQUEST,
            Self::Api(f) if matches!(f.status, 401 | 403) => failure_types::PROVIDER_CREDENTIALS,
            _ => match self.retry() {
                Retry::Transient(_) => failure_types::PROVIDER_UNAVAILABLE,
                Retry::Permanent => failure_types::PROVIDER_REJECTED,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_are_permanent_and_name_the_variable() {
        let refused = |provider: &'static str, status| {
            ClientError::Api(Box::new(ApiFailure {
                provider,
                method: "GET".into(),
                path: "/servers".into(),
                status,
                code: Some("unauthorized".into()),
                message: "unable to authenticate".into(),
                retry_after: None,
            }))
        };
        let e = refused("hetzner", 401);
        assert_eq!(e.retry(), Retry::Permanent);
        assert_eq!(e.failure_type(), failure_types::PROVIDER_CREDENTIALS);
        assert!(e.to_string().ends_with("(the credential was refused: check HETZNER_API_TOKEN)"), "{e}");
        assert!(refused("stripe", 403).to_string().contains("check STRIPE_SECRET_KEY"));
        assert!(!refused("stripe", 404).to_string().contains("check"));
    }

    #[test]
    fn server_errors_and_rate_limits_are_transient() {
        for s in [500, 502, 503, 504, 429, 408] {
            assert!(matches!(classify_status(s, None), Retry::Transient(_)), "{s}");
        }
        assert_eq!(
            classify_status(429, Some(Duration::from_secs(7))),
            Retry::Transient(Some(Duration::from_secs(7)))
        );
    }

    #[test]
    fn client_errors_are_permanent() {
        for s in [400, 401, 403, 404, 409, 422] {
            assert_eq!(classify_status(s, None), Retry::Permanent, "{s}");
        }
    }

    #[test]
    fn retry_after_accepts_delta_seconds_only() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn api_errors_name_the_request_without_secrets() {
        let err = ClientError::Api(Box::new(ApiFailure {
            provider: "hetzner",
            method: "POST".into(),
            path: "/servers".into(),
            status: 422,
            code: Some("invalid_input".into()),
            message: "invalid name".into(),
            retry_after: None,
        }));
        assert_eq!(err.to_string(), "hetzner API POST /servers answered 422: invalid name");
        assert_eq!(err.failure_type(), failure_types::PROVIDER_REJECTED);
    }
}
