//! Slipway's wire contracts.
//!
//! Two kinds of contract live here, and nothing else:
//!
//! - [`control`]: the gRPC control API generated from `slipway/v1/control.proto` (tonic + prost).
//! - The serde types that travel as Temporal workflow and activity payloads, one module per
//!   area: [`model`] (agents: the `Agent` and `ProvisionAgent` workflows, callbacks, progress),
//!   [`billing`] (the `Subscription` workflow: billing events, per-subscription state, seats),
//!   [`stack`] (the `ClientStack` saga), [`jobs`] (`Job`, `JobGate`, `GitHubLinks`) and
//!   [`reconcile`] (the scheduled reconcilers). They are
//!   plain JSON on purpose, so an operator can read every input, output, signal and query result
//!   in the Temporal Web UI. None of them carries a secret: credentials stay in the worker's
//!   configuration, and the one secret that must cross a workflow (a Tailscale auth key on its way
//!   to the VM) crosses sealed, see [`model::SealedSecret`]. Fields added to a type that recorded
//!   histories carry are `#[serde(default)]`, so the previous release's payloads still decode.
//!
//! Keeping these types in their own crate lets `workflows` depend on them without pulling in any
//! HTTP client, which is one of the ways workflow code is kept deterministic.

pub mod billing;
pub mod jobs;
pub mod model;
pub mod reconcile;
pub mod stack;

/// Generated gRPC types and service stubs for `slipway.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod control {
    tonic::include_proto!("slipway.v1");
}
