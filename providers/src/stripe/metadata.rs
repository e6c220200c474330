//! The keys of a Checkout Session's `metadata` (copied onto the subscription through
//! `subscription_data[metadata]`) that name what the payment is for. Pinned: the starter writes
//! them, Stripe echoes them in `checkout.session.completed` and `customer.subscription.*`.

/// The Slipway user who pays (`metadata.userId`).
pub const USER_ID: &str = "userId";
/// The agent the checkout buys a seat for (`metadata.agentId`).
pub const AGENT_ID: &str = "agentId";
/// The agent's Hetzner location (`metadata.region`).
pub const REGION: &str = "region";
