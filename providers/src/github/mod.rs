//! GitHub: the REST client for repositories and Actions (personal or installation token), the
//! GitHub App's authentication, and webhook verification.

pub mod actions_oidc;
pub mod app;
pub mod rest;
pub mod webhook;

pub use app::GitHubApp;
pub use rest::GitHubClient;
