//! Slipway's Temporal activities: the only code that talks to the outside world.
//!
//! # Layout
//! - [`clients`]: one typed client per provider API (Hetzner, Tailscale, GitHub, Stripe,
//!   Supabase, Vercel, n8n). Base URLs
//!   are configuration: the real APIs in production, the local sandbox in dev and tests.
//! - [`error`]: the one mapping from a client failure to a Temporal activity failure, which is
//!   where "5xx/429/timeouts retry with backoff, other 4xx fail fast" is decided.
//! - [`provisioning`]: the activities of the agent provisioning saga, its compensations and the
//!   agent lifecycle (stop, start).
//! - [`billing`]: the Stripe reads of the subscription workflow.
//! - [`stack`]: the client-stack saga's activities (Supabase, schema, GitHub, Vercel, n8n).
//! - [`jobs`]: the coding jobs' activities (model calls, GitHub App calls, Stripe usage).
//! - [`seal`]: sealing of the one secret that must cross a workflow history.
//!
//! Activities are structs owning their clients (`self: Arc<Self>` methods); the worker builds
//! them from its configuration. The `workflows` crate depends on this crate only for the
//! generated activity *definitions*; no HTTP type appears in the workflows' API.

pub mod billing;
pub mod clients;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod provisioning;
pub mod seal;
pub mod stack;

pub use billing::BillingActivities;
pub use error::ClientError;
pub use jobs::JobActivities;
pub use provisioning::{ProvisioningActivities, ProvisioningConfig};
pub use seal::Sealer;
pub use stack::{StackActivities, StackConfig};
