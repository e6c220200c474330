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
    /// How often every agent's billing target is asserted again, whether or not anything
    /// changed (heals a lost signal or an agent that gave up). Absent in inputs written before
    /// desired-state billing: one day.
    #[serde(default = "default_reassert_secs")]
    pub reassert_secs: u64,
}

fn default_reassert_secs() -> u64 {
    24 * 3600
}

impl Default for BillingPolicy {
    fn default() -> Self {
        Self {
            grace_period_secs: 7 * 24 * 3600,
            event_retention_secs: 35 * 24 * 3600,
            history_limit: 5_000,
            reassert_secs: default_reassert_secs(),
        }
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
    /// A paid checkout's agent, for the customer's workflow to hand the checkout to once it has
    /// applied the event (see [`CheckoutHandoff`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Box<CheckoutHandoff>>,
}

/// A paid checkout that the customer's workflow hands to its agent's workflow: the starter makes
/// one durable Temporal call per paid checkout (the customer's signal-with-start), and the
/// customer's workflow, once it has applied the event (the seat it reserves exists), signals the
/// agent's workflow `checkout` with `command`, or starts it with `agent` and that signal when it
/// is not running (a checkout made outside the API). Events recorded before carry none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutHandoff {
    /// The agent's workflow input, should it have to be started (a draft from the metadata).
    pub agent: crate::model::AgentWorkflowInput,
    /// The paying customer (`cus_…`), a search attribute of a started agent.
    pub customer_id: Option<String>,
    /// What the agent runs (its source names the event: the agent drops a redelivery by it).
    pub command: crate::model::ProvisionCommand,
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
        /// The agent its checkout bought (`metadata.agentId`, copied from the Checkout
        /// Session's `subscription_data`): that agent's seat is reserved.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
        /// Seats: the summed `quantity` of the subscription's licensed (per-seat) items; metered
        /// items carry none. `None` in events recorded before seats existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seats: Option<u32>,
    },
    /// `invoice.paid`.
    InvoicePaid {
        /// `in_…`.
        invoice_id: String,
        /// The subscription the invoice bills (`parent.subscription_details.subscription`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_id: Option<String>,
    },
    /// `invoice.payment_failed`.
    InvoicePaymentFailed {
        /// `in_…`.
        invoice_id: String,
        /// The subscription the invoice bills (`parent.subscription_details.subscription`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_id: Option<String>,
    },
    /// `invoice.overdue`: an invoice sent for payment (`collection_method: send_invoice`) is past
    /// its due date. Stripe sends this instead of `invoice.payment_failed` for such invoices.
    InvoiceOverdue {
        /// `in_…`.
        invoice_id: String,
        /// The subscription the invoice bills.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_id: Option<String>,
    },
    /// `invoice.voided`: the invoice was cancelled; nothing is owed on it any more (terminal).
    InvoiceVoided {
        /// `in_…`.
        invoice_id: String,
        /// The subscription the invoice bills.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_id: Option<String>,
    },
    /// `invoice.marked_uncollectible`: the merchant gave up collecting the invoice (it may
    /// still be paid later); it no longer holds the subscription's agents hostage.
    InvoiceUncollectible {
        /// `in_…`.
        invoice_id: String,
        /// The subscription the invoice bills.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_id: Option<String>,
    },
    /// `customer.deleted`: Stripe cancels every subscription of a deleted customer at once.
    CustomerDeleted,
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

/// Where a subscription stands, derived from its state: what its agents must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Active or trialing, nothing unpaid: its agents run and it has seats to give.
    Good,
    /// Not in good standing (a failed invoice within its grace period, or a status such as
    /// `past_due`, `unpaid`, `incomplete`, `paused`): its agents are powered off, data kept.
    Suspended,
    /// A failed invoice outlived the grace period: its agents were destroyed. Paying every
    /// failed invoice brings it back to `good` (with free seats, not with the old servers).
    Lapsed,
    /// Deleted or cancelled at Stripe: terminal for this subscription only.
    Ended,
}

impl Standing {
    /// Lower-case name, as shown in the Web UI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Suspended => "suspended",
            Self::Lapsed => "lapsed",
            Self::Ended => "ended",
        }
    }
}

/// One Stripe subscription of a customer, as far as billing decisions go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    /// Stripe's status from the latest event (`active`, `trialing`, `past_due`, `canceled`, …).
    pub status: String,
    /// `created` of the event the status comes from (0 = provisional, from a paid checkout).
    pub as_of: i64,
    /// Paid seats: one agent each.
    pub seats: u32,
    /// Deleted at Stripe (terminal).
    pub ended: bool,
    /// Invoices seen for this subscription: `paid` is terminal per invoice.
    pub invoices: BTreeMap<String, String>,
    /// Failed invoices not yet paid.
    pub failed_invoices: BTreeSet<String>,
    /// When the grace period of the current payment problem ends (Unix seconds).
    pub grace_deadline: Option<i64>,
    /// The grace period ran out while invoices were still unpaid.
    pub lapsed: bool,
    /// Agents holding a seat of this subscription, and whether each one waits for the
    /// subscription to be in good standing before it is provisioned (`parked`).
    pub agents: BTreeMap<String, SeatHolder>,
    /// The standing last enforced on the agents (effects are the differences).
    pub enforced: Standing,
}

/// An agent holding a seat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatHolder {
    /// The agent has no server yet: its seat is reserved by its checkout (`request` 0) or its
    /// claim waits for the subscription to be in good standing and a seat to be free.
    pub parked: bool,
    /// The agent's request number, echoed in the answer (0: reserved by a checkout, not yet
    /// claimed).
    pub request: u64,
    /// Order in which the customer's agents took their seats: when a subscription has fewer
    /// seats than holders (its quantity was lowered), the newest ones have none. 0 in states
    /// written before desired-state billing (then the agent id orders).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub since: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What billing wants of an agent that has a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentTarget {
    /// Provisioned and running (or stopped by its owner): the subscription is in good standing
    /// and the agent holds one of its seats.
    Run,
    /// Powered off, data kept: the subscription is not in good standing, or the agent holds no
    /// seat since the quantity was lowered.
    Off,
    /// Destroyed: the subscription ended or lapsed.
    Destroy,
}

impl AgentTarget {
    /// Lower-case name, as shown in the Web UI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Off => "off",
            Self::Destroy => "destroy",
        }
    }
}

impl SubscriptionState {
    /// A subscription first seen in an event with this status and time.
    pub fn new(status: &str, as_of: i64, seats: u32) -> Self {
        Self {
            status: status.to_owned(),
            as_of,
            seats,
            ended: false,
            invoices: BTreeMap::new(),
            failed_invoices: BTreeSet::new(),
            grace_deadline: None,
            lapsed: false,
            agents: BTreeMap::new(),
            enforced: Standing::Good,
        }
    }

    /// Where the subscription stands now.
    pub fn standing(&self) -> Standing {
        if self.ended || matches!(self.status.as_str(), "canceled" | "incomplete_expired") {
            Standing::Ended
        } else if self.lapsed {
            Standing::Lapsed
        } else if !self.failed_invoices.is_empty() || !matches!(self.status.as_str(), "active" | "trialing") {
            Standing::Suspended
        } else {
            Standing::Good
        }
    }

    /// Seats not held by an agent.
    pub fn free_seats(&self) -> u32 {
        self.seats.saturating_sub(u32::try_from(self.agents.len()).unwrap_or(u32::MAX))
    }
}

/// Everything a customer's workflow knows, per subscription; carried across continue-as-new.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerBilling {
    /// The customer's owner in Slipway (from the first checkout that names one).
    pub user_id: Option<String>,
    /// Applied event ids with their `created` (pruned after the retention period).
    pub applied: BTreeMap<String, i64>,
    /// The customer's subscriptions, by `sub_…` id.
    pub subscriptions: BTreeMap<String, SubscriptionState>,
    /// Invoices seen without a subscription (kept so a later event cannot undo a payment).
    pub loose_invoices: BTreeMap<String, String>,
    /// The target last sent to each agent with a server (desired-state billing: commands are
    /// the differences between these and what the state now asks for).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, AgentTarget>,
    /// Seats taken so far (orders [`SeatHolder::since`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seats_taken: u64,
    /// Stripe deleted the customer (every subscription ended with it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub customer_deleted: bool,
    /// Agents destroyed (or found gone), with when: a checkout delivered after its agent was
    /// destroyed reserves nothing for it. Pruned with the applied event ids.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub released: BTreeMap<String, i64>,
}

impl CustomerBilling {
    /// Whether any subscription is in good standing.
    pub fn entitled(&self) -> bool {
        self.subscriptions.values().any(|s| s.standing() == Standing::Good)
    }

    /// Free seats over all subscriptions in good standing.
    pub fn free_seats(&self) -> u32 {
        self.subscriptions
            .values()
            .filter(|s| s.standing() == Standing::Good)
            .map(SubscriptionState::free_seats)
            .sum()
    }

    /// The subscription an agent holds a seat of.
    pub fn seat_of(&self, agent_id: &str) -> Option<&str> {
        self.subscriptions.iter().find(|(_, s)| s.agents.contains_key(agent_id)).map(|(id, _)| id.as_str())
    }

    /// The per-subscription view of a state recorded before subscriptions were tracked one by
    /// one: its single snapshot becomes one subscription holding every agent.
    pub fn from_legacy(legacy: &BillingState) -> Self {
        let mut out =
            Self { user_id: legacy.user_id.clone(), applied: legacy.applied.clone(), ..Self::default() };
        let Some(snapshot) = &legacy.subscription else {
            out.loose_invoices = legacy.invoices.clone();
            return out;
        };
        let mut sub = SubscriptionState::new(&snapshot.status, snapshot.as_of, 0);
        sub.ended = legacy.ended;
        sub.invoices = legacy.invoices.clone();
        if let Some(d) = &legacy.delinquency {
            sub.failed_invoices = d.failed_invoices.clone();
            sub.grace_deadline = Some(d.deadline);
            sub.lapsed = d.expired;
        }
        if !sub.ended && !sub.lapsed {
            sub.agents = legacy
                .agents
                .iter()
                .map(|a| (a.clone(), SeatHolder { parked: false, request: 0, since: 0 }))
                .collect();
        }
        // Legacy customers paid one seat per agent they had.
        sub.seats = u32::try_from(legacy.agents.len()).unwrap_or(u32::MAX).max(1);
        sub.enforced = sub.standing();
        out.subscriptions.insert(snapshot.id.clone(), sub);
        out
    }
}

/// An agent asking its customer's workflow for a seat before it provisions (signal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatClaim {
    /// The agent.
    pub agent_id: String,
    /// Its owner: must be the customer's user.
    pub user_id: String,
    /// The subscription its checkout paid for; `None` for API provisioning (any free seat).
    pub subscription_id: Option<String>,
    /// The agent's request number, echoed in the answer.
    pub request: u64,
}

/// The customer's answer to a [`SeatClaim`] (signal back to the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatAnswer {
    /// The claim's request number (0: a seat reserved by a checkout, granted unasked).
    pub request: u64,
    /// The answering customer (`cus_…`).
    #[serde(default)]
    pub customer_id: String,
    /// The decision.
    pub decision: SeatDecision,
}

/// What the customer decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum SeatDecision {
    /// Provision: the agent holds a seat of this subscription.
    Granted {
        /// `sub_…`.
        subscription_id: String,
    },
    /// The seat is the agent's, but the subscription is not in good standing: the agent is
    /// provisioned once it is (a later `Granted` for the same request).
    Parked {
        /// `sub_…`.
        subscription_id: String,
        /// Why it waits.
        reason: String,
    },
    /// No seat: nothing is provisioned.
    Denied {
        /// Stable code (`NO_ACTIVE_SUBSCRIPTION`, `NO_FREE_SEAT`, `SUBSCRIPTION_ENDED`,
        /// `PAYER_NOT_OWNER`).
        code: String,
        /// For people.
        reason: String,
    },
}

/// Input of the subscription workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInput {
    /// `cus_…`.
    pub customer_id: String,
    /// State of runs recorded before per-subscription billing (empty for new customers).
    pub state: BillingState,
    /// Per-subscription state; `None` in inputs written before it existed (then derived from
    /// `state` by [`CustomerBilling::from_legacy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<CustomerBilling>,
    /// Knobs.
    pub policy: BillingPolicy,
    /// Events received but not yet applied (carried across continue-as-new).
    #[serde(default)]
    pub inbox: Vec<BillingEvent>,
    /// Seat claims received but not yet answered (carried across continue-as-new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<SeatClaim>,
    /// Destroyed agents whose seats are not yet freed (carried across continue-as-new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<String>,
    /// Agents of runs from before seats that announced themselves, not yet seated (carried
    /// across continue-as-new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attaches: Vec<String>,
    /// When the next re-assertion is due (Unix seconds), carried across continue-as-new so a
    /// busy customer is still re-asserted on time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_reassert: Option<i64>,
    /// A run on the legacy rules already continued as new to move to per-subscription billing
    /// and came back on the legacy rules (a worker that holds the change back): it answers
    /// seat claims itself instead of continuing as new again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upgrade_attempted: bool,
    /// The run's [`crate::model::PROTOCOL`] (0: started before protocols existed).
    #[serde(default, skip_serializing_if = "crate::model::is_protocol_zero")]
    pub protocol: u32,
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

/// A subscription as Stripe answers it now (the re-fetch of a tie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedSubscription {
    /// Stripe's status.
    pub status: String,
    /// Summed quantity of its licensed items.
    pub seats: u32,
}

/// One of a customer's subscriptions as Stripe lists it now (`GET /v1/subscriptions?customer=…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedSubscription {
    /// `sub_…`.
    pub id: String,
    /// Status and seats.
    #[serde(flatten)]
    pub now: FetchedSubscription,
}

/// What became of a Checkout Session Slipway asked Stripe to expire (a draft agent destroyed,
/// or provisioned through the API, while its session was open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutExpiry {
    /// `cs_…`.
    pub session_id: String,
    /// The session's status after the call: `expired` (now or before), or `complete` (it was
    /// paid before it could be expired).
    pub status: String,
    /// The paying customer, when Stripe knows one (`complete` sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The subscription the session created, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
}
