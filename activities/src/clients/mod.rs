//! Typed HTTP clients, one module per provider API.
//!
//! Each client owns its base URL (configuration: the real API in production, the sandbox in dev
//! and tests), its token (a `SecretString`, never logged) and a `reqwest::Client` with timeouts.
//! Every failure comes back as a [`crate::ClientError`] already classified retryable or not.

pub mod github;
pub mod github_app;
pub mod hetzner;
pub mod llm;
pub mod n8n;
pub mod stripe;
pub mod supabase;
pub mod tailscale;
pub mod vercel;

mod http;

pub(crate) use http::Http;
