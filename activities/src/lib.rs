//! Slipway's Temporal activities: the only code that talks to the outside world.
//!
//! # Layout
//! - The provider clients live in `slipway-providers`, one home per provider (Stripe, GitHub,
//!   Hetzner, Tailscale, Supabase, Vercel, n8n, the LLM API); this crate calls them and does
//!   **not** re-export them, so `slipway-workflows`, which depends on this crate for the generated
//!   activity definitions, cannot name a client or an HTTP type (a compile error, not a rule).
//! - [`error`]: the one mapping from a client failure to a Temporal activity failure, which is
//!   where "5xx/429/timeouts retry with backoff, other 4xx fail fast" becomes Temporal's retry.
//! - [`provisioning`]: the activities of the agent provisioning saga (`ProvisionAgent`), its
//!   compensations and the agent lifecycle (`Agent`: stop, start, destroy).
//! - [`billing`]: the Stripe reads of the subscription workflow.
//! - [`stack`]: the client-stack saga's activities (Supabase, schema, GitHub, Vercel, n8n).
//! - [`jobs`]: the coding jobs' activities (model calls, GitHub App calls, Stripe usage).
//! - [`lookups`]: what a coding job asks of Temporal itself (its entitlement, a gate seat),
//!   through `temporal_ask`, which the orphan sweep asks through too.
//! - [`reconcile`]: the reconcilers' activities (Stripe catch-up, GitHub redelivery);
//!   [`sweep`]: the orphan sweep's (list Slipway's resources, ask their owners, delete orphans).
//! - [`search_attributes`]: the keyword search attributes (pinned contract), here because the
//!   workflows set them and the job lookups do too (the workflows re-export them).
//! - [`seal`]: sealing of the one secret that must cross a workflow history.
//!
//! Activities are structs owning their clients (`self: Arc<Self>` methods); the worker builds
//! them from its configuration. The `workflows` crate depends on this crate only for the
//! generated activity *definitions*; no HTTP type appears in the workflows' API.

pub mod billing;
pub mod error;
pub mod jobs;
pub mod lookups;
pub mod metrics;
pub mod provisioning;
pub mod reconcile;
pub mod seal;
pub mod search_attributes;
pub mod stack;
pub mod sweep;
mod temporal_ask;

pub use billing::BillingActivities;
pub use jobs::JobActivities;
pub use lookups::LookupActivities;
pub use provisioning::{ProvisioningActivities, ProvisioningConfig};
pub use reconcile::ReconcileActivities;
pub use seal::Sealer;
pub use stack::{StackActivities, StackConfig};
pub use sweep::SweepActivities;
