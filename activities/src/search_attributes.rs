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

/// Names of all Slipway search attributes, for server registration.
pub const ALL: [&str; 4] = ["SlipwayUserId", "SlipwayCustomerId", "SlipwayAgentId", "SlipwayStatus"];
