//! One home per provider: everything Slipway knows about each API it talks to.
//!
//! Each module holds that provider's whole contract: the outbound client (base URL from
//! configuration, token as a `SecretString`, timeouts, typed errors), and, where the provider
//! sends webhooks, their verification and the shared types both sides use (Stripe's Checkout
//! metadata keys). Product crates reach a provider only through here: `slipway-activities`
//! calls the clients (and does not re-export them, so `slipway-workflows`, which depends on
//! activities for activity definitions only, cannot name a client or an HTTP type); the starter
//! verifies webhooks and creates Checkout Sessions through here.
//!
//! # Layout
//! - [`stripe`]: client (`async-stripe`: subscriptions, Checkout Sessions, meter events),
//!   [`stripe::webhook`] verification, [`stripe::metadata`] keys.
//! - [`github`]: REST client (repositories, Actions dispatch), [`github::app`] (App JWT,
//!   installation tokens, the coding jobs' calls), [`github::webhook`] verification.
//! - [`hetzner`], [`tailscale`], [`supabase`], [`vercel`], [`n8n`]: REST clients.
//! - [`llm`]: the OpenAI-compatible chat completions client.
//! - [`error`]: the one client error type and its retry classification.
//! - [`signature`]: the `sha256=<hex HMAC>` scheme shared by GitHub and Slipway's callbacks.

pub mod error;
pub mod github;
pub mod hetzner;
pub mod llm;
pub mod n8n;
pub mod signature;
pub mod stripe;
pub mod supabase;
pub mod tailscale;
pub mod vercel;

mod http;

pub use error::ClientError;
