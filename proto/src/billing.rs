//! Payloads of the per-customer `Subscription` workflow.
//!
//! The starter maps each verified Stripe event to a compact [`BillingEvent`]: only what billing
//! decisions need (ids, statuses, the event's `created`), not Stripe's whole object, so histories
//! stay small and free of customer personal data.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Workflow id of a customer's subscription workflow.
pub fn customer_workflow_id(customer_id: &str) -> String {
    format!("customer-{customer_id}")
}

/// Knobs of the subscription workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingPolicy {
    /// Time between a failed payment and the destruction of the suspended agents.
    pub grace_period_secs: u64,
    /// How long applied event ids are remembered (well beyond Stripe's 3-day retry window).
    pub event_retention_secs: u64,
    /// Continue-as-new once the history has this many events.
    pub history_limit: u32,
}

impl Default for BillingPolicy {
    fn default() -> Self {
        Self { grace_period_secs: 7 * 24 * 3600, event_retention_secs: 35 * 24 * 3600, history_limit: 5_000 }
    }
}

/// One verified Stripe event, reduced to what billing needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingEvent {
    /// `evt_…`: applied once.
    pub event_id: String,
    /// The event's `created` (Unix seconds): orders events about the same object.
    pub created: i64,
    /// What happened.
    pub kind: BillingEventKind,
}

/// The billing-relevant Stripe event types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BillingEventKind {
    /// `checkout.session.completed` / `checkout.session.async_payment_succeeded`.
    CheckoutCompleted {
        /// `cs_…`.
        session_id: String,
        /// `sub_…`, for subscription-mode sessions.
        subscription_id: Option<String>,
        /// Owner (`metadata.userId` or `client_reference_id`).
        user_id: Option<String>,
        /// Agent bought with this checkout, if any.
        agent_id: Option<String>,
        /// `payment_status` is `paid` or `no_payment_required`.
        paid: bool,
    },
    /// `customer.subscription.created|updated|deleted`.
    SubscriptionChanged {
        /// `sub_…`.
        subscription_id: String,
        /// Stripe's status (`active`, `trialing`, `past_due`, `unpaid`, `canceled`, …).
        status: String,
        /// `true` for `customer.subscription.deleted`.
        deleted: bool,
    },
    /// `invoice.paid`.
    InvoicePaid {
        /// `in_…`.
        invoice_id: String,
    },
    /// `invoice.payment_failed`.
    InvoicePaymentFailed {
        /// `in_…`.
        invoice_id: String,
    },
}

/// The subscription as last known, and from which event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSnapshot {
    /// `sub_…`.
    pub id: String,
    /// Stripe's status.
    pub status: String,
    /// `created` of the event this snapshot comes from (0 = provisional, from a checkout).
    pub as_of: i64,
}

/// A payment problem in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delinquency {
    /// Unpaid invoices whose payment failed.
    pub failed_invoices: BTreeSet<String>,
    /// Workflow time the grace period ends (Unix seconds).
    pub deadline: i64,
    /// True once the grace period ran out and the agents were destroyed.
    pub expired: bool,
}

/// Everything the subscription workflow knows; carried across continue-as-new.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingState {
    /// The customer's owner in Slipway.
    pub user_id: Option<String>,
    /// Latest subscription snapshot.
    pub subscription: Option<SubscriptionSnapshot>,
    /// True once the subscription was deleted (terminal).
    pub ended: bool,
    /// Applied event ids with their `created` (pruned after the retention period).
    pub applied: BTreeMap<String, i64>,
    /// Invoices seen: `paid` is terminal per invoice, so a late `payment_failed` cannot undo it.
    pub invoices: BTreeMap<String, String>,
    /// Agents paid for by this customer.
    pub agents: BTreeSet<String>,
    /// Current payment problem.
    pub delinquency: Option<Delinquency>,
}

impl BillingState {
    /// Whether the customer may provision: an active or trialing subscription, not ended.
    pub fn entitled(&self) -> bool {
        !self.ended
            && self.subscription.as_ref().is_some_and(|s| matches!(s.status.as_str(), "active" | "trialing"))
    }
}

/// Input of the subscription workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInput {
    /// `cus_…`.
    pub customer_id: String,
    /// State (empty on first start).
    pub state: BillingState,
    /// Knobs.
    pub policy: BillingPolicy,
    /// Events received but not yet applied (carried across continue-as-new).
    #[serde(default)]
    pub inbox: Vec<BillingEvent>,
}

/// Result of the `entitlement` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// `cus_…`.
    pub customer_id: String,
    /// May provision.
    pub entitled: bool,
    /// Subscription status, if known.
    pub status: Option<String>,
    /// In a grace period after a failed payment.
    pub delinquent: bool,
}
