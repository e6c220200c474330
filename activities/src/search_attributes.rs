//! Keyword search attributes (pinned contract). They must be registered on the server before a
//! workflow uses them: `scripts/` starts the dev server with `--search-attribute` for each.

use temporalio_common::search_attributes::SearchAttributeKey;

/// Owner of the agent.
pub const USER_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("SlipwayUserId");
/// Stripe customer.
pub const CUSTOMER_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("SlipwayCustomerId");
/// Agent.
pub const AGENT_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("SlipwayAgentId");
/// Lifecycle status (`draft`, `provisioning`, `active`, …).
pub const STATUS: SearchAttributeKey<String> = SearchAttributeKey::keyword("SlipwayStatus");

/// Whether an agent is where billing wants it: `converging` while a billing command that failed
/// waits to be tried again, `converged` otherwise (agents that ran a billing command since
/// desired-state billing). Counted for the worker's `slipway_agents_unconverged` gauge.
pub const BILLING: SearchAttributeKey<String> = SearchAttributeKey::keyword("SlipwayBilling");

/// Names of all Slipway search attributes, for server registration.
pub const ALL: [&str; 5] =
    ["SlipwayUserId", "SlipwayCustomerId", "SlipwayAgentId", "SlipwayStatus", "SlipwayBilling"];
