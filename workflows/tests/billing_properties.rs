//! Property test of the billing rules against a simulation of **Stripe**, not of the rules.
//!
//! # System under test
//! The pure functions of [`slipway_workflows::billing`], called as the `Subscription` workflow
//! calls them (`workflows/src/subscription.rs`): `apply` for each delivered event, `claim` for a
//! seat claim, `release` for a freed seat (a destroyed agent, or a signal that could not reach
//! its agent), `apply_refetched` for `Effect::Refetch` (answered with the simulator's *current*
//! status), `claim_after_probe` for `Effect::Probe` (an agent is gone if it was destroyed or never
//! existed), `expire` when workflow time passes `next_deadline`, `reassert` on its timer and
//! `converge` at a continue-as-new (the state crosses it through JSON). `attach_unclaimed` (agents
//! from before seats) is not exercised.
//!
//! Beside it, a model of the `Agent` workflow (`workflows/src/agent.rs`): a `billing` signal
//! replaces any retry and runs `Run` = resume (start the server of a suspended agent), `Off` =
//! suspend (stop the server of an active agent), `Destroy` = tear down (then `release_seat`);
//! a command that does not hold (`billing_holds`) is retried later until it does or a newer one
//! arrives; a `seat` answer `Granted` provisions the agent (a running server), `Parked` makes it
//! wait, `Denied` refuses; an unasked `Granted` provisions a waiting draft. **Failures are
//! injected**: a server operation may fail (the server stays as it was; a failed teardown leaves
//! the agent `failed`), for a number of attempts, and heals.
//!
//! # Simulator of Stripe (one customer, its subscriptions)
//! Each action mutates the simulated objects and emits the events Stripe documents for it, with
//! the object's state at that moment and a `created` from a coarse clock (one-second resolution,
//! so several events share a second), mapped to the `BillingEvent` the starter would produce
//! (`starter/src/ingress/stripe.rs`):
//! - checkout (`checkout.session.completed`, `customer.subscription.created`, `invoice.paid`;
//!   the subscription may be created `incomplete` and turn `active` in the same second once its
//!   first invoice is paid, or start `trialing`); after its event reaches the customer's
//!   workflow, the checkout's agent claims a seat of that subscription, once. A draft may be
//!   destroyed as its checkout completes: its `release_seat` races the checkout event.
//! - a subscription created without checkout whose first payment fails (`incomplete`), then paid
//!   (`active`) or expired after 23 hours (`incomplete_expired`, its invoice voided);
//! - renewals: an invoice paid, failed (`invoice.payment_failed`, charge_automatically) or
//!   overdue (`invoice.overdue`, send_invoice), the subscription `past_due` until paid; retries
//!   exhausted: `unpaid` or cancelled; invoices voided (terminal) or marked uncollectible (still
//!   payable);
//! - trials ending: paid (`active`) or, without a payment method, `paused`, cancelled, or an
//!   invoice that fails (`past_due`); a paused subscription resumes (`active`);
//! - `pause_collection`: the status stays `active`; invoices created meanwhile are voided,
//!   marked uncollectible or kept as draft;
//! - quantity changes; cancellation (`customer.subscription.deleted`, terminal); disputes (no
//!   event billing acts on, nothing changes); customer deletion (every subscription cancelled:
//!   `customer.subscription.deleted` each, then `customer.deleted`; nothing more happens).
//!
//! Stripe pages followed:
//! <https://docs.stripe.com/billing/subscriptions/overview> (statuses and their transitions,
//! incomplete → incomplete_expired after 23 hours, past_due → unpaid/canceled),
//! <https://docs.stripe.com/billing/subscriptions/webhooks> (events per change),
//! <https://docs.stripe.com/billing/subscriptions/trials> (`missing_payment_method`: pause,
//! cancel, create_invoice), <https://docs.stripe.com/billing/subscriptions/pause-payment> (the
//! subscription remains `active`; invoices kept as draft, marked uncollectible or voided),
//! <https://docs.stripe.com/invoicing/overview> (invoice statuses),
//! <https://docs.stripe.com/api/invoices/void>, <https://docs.stripe.com/api/invoices/mark_uncollectible>,
//! <https://docs.stripe.com/api/customers/delete> ("also immediately cancels any active
//! subscriptions"), <https://docs.stripe.com/billing/subscriptions/quantities>,
//! <https://docs.stripe.com/disputes> (a dispute does not change the subscription),
//! <https://docs.stripe.com/webhooks> (at-least-once, unordered delivery).
//!
//! # Delivery
//! Events (each delivered once or twice), seat claims and seat releases wait in a pool; each step
//! is either an action or the delivery of a random pending item, so they arrive shuffled,
//! duplicated and late. The same action script is run twice with different delivery orders and
//! duplicates.
//!
//! # Invariants
//! Policy taken as given: status-only trouble gets the same grace period as an unpaid invoice;
//! on a quantity decrease the newest agents are powered off; disputes and refunds are ignored;
//! `paused` powers agents off, `pause_collection` does not.
//! - After every step, for every agent with no failed command pending: a running server means a
//!   seat of a subscription in good standing *as delivered so far* (the newest status delivered
//!   or re-fetched is `active`/`trialing`, not deleted, no failed or overdue invoice delivered
//!   without its settlement); per subscription, running servers ≤ its quantity as delivered; no
//!   agent holds seats of two subscriptions.
//! - At the end (every pending item delivered in a random order, failures healed, re-assertion
//!   run, time past every grace period), against Stripe's true final state: each
//!   subscription's standing is `good` iff Stripe's is, `ended` iff cancelled or expired, `lapsed`
//!   otherwise; every server belongs to a seat of a subscription in good standing; in each such
//!   subscription, running servers = min(quantity, holders with a server + holders waiting for
//!   one), so nothing within the quantity is left off or waiting; no destroyed agent (a draft
//!   destroyed during its checkout included) holds a seat; and the two delivery orders agree on
//!   every subscription's standing and seats, and (when no API provisioning competes for seats)
//!   on every agent's server.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use slipway_proto::billing::{
    AgentTarget, BillingEvent, BillingEventKind, CustomerBilling, FetchedSubscription, SeatAnswer, SeatClaim,
    SeatDecision, Standing,
};
use slipway_workflows::billing::{self, Effect};

/// Wall time (Unix seconds) when a case starts: Stripe and the workflow share one clock.
const START: i64 = 1_700_000_000;
const GRACE: u64 = 100;
const TICK: i64 = 30;
const REASSERT: i64 = 90;
const USER: &str = "u1";
const MAX_SUBS: usize = 3;

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    Paid,
    Failed,
    Overdue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrialEnd {
    Paid,
    Pause,
    Cancel,
    FailedInvoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collection {
    KeepAsDraft,
    Uncollectible,
    Void,
}

/// What a customer, an operator, Stripe's clock or the agents do.
#[derive(Debug, Clone)]
enum Action {
    Checkout { qty: u32, trial: bool, incomplete_first: bool, destroy_draft: bool },
    SubscribeUnpaid { qty: u32 },
    PayFirstLate { sub: usize },
    ExpireIncomplete { sub: usize },
    Renew { sub: usize, outcome: Renewal },
    Pay { sub: usize, inv: usize },
    Void { sub: usize, inv: usize },
    Uncollectible { sub: usize, inv: usize },
    RetriesExhausted { sub: usize, cancel: bool },
    TrialEnds { sub: usize, end: TrialEnd },
    ResumePaused { sub: usize },
    PauseCollection { sub: usize, behavior: Collection },
    ResumeCollection { sub: usize },
    Quantity { sub: usize, qty: u32 },
    Dispute { sub: usize },
    Cancel { sub: usize },
    DeleteCustomer,
    ApiProvision(usize),
    DestroyAgent(usize),
    FailNext(usize, u8),
    AgentRetry,
    Tick,
    ContinueAsNew,
}

/// One step of the script: an action (with whether Stripe's clock moves to the next second), or
/// a delivery (which pending item, in run A and in run B).
#[derive(Debug, Clone)]
enum Step {
    Act(Action, bool),
    Deliver(usize, usize),
}

fn action() -> impl Strategy<Value = Action> {
    let sub = || 0..MAX_SUBS;
    prop_oneof![
        4 => (1..=3u32, any::<bool>(), any::<bool>(), prop::bool::weighted(0.2)).prop_map(
            |(qty, trial, incomplete_first, destroy_draft)| Action::Checkout { qty, trial, incomplete_first, destroy_draft }
        ),
        1 => (1..=2u32).prop_map(|qty| Action::SubscribeUnpaid { qty }),
        1 => sub().prop_map(|sub| Action::PayFirstLate { sub }),
        1 => sub().prop_map(|sub| Action::ExpireIncomplete { sub }),
        4 => (sub(), prop::sample::select(vec![Renewal::Paid, Renewal::Failed, Renewal::Overdue]))
            .prop_map(|(sub, outcome)| Action::Renew { sub, outcome }),
        3 => (sub(), 0..4usize).prop_map(|(sub, inv)| Action::Pay { sub, inv }),
        1 => (sub(), 0..4usize).prop_map(|(sub, inv)| Action::Void { sub, inv }),
        1 => (sub(), 0..4usize).prop_map(|(sub, inv)| Action::Uncollectible { sub, inv }),
        1 => (sub(), any::<bool>()).prop_map(|(sub, cancel)| Action::RetriesExhausted { sub, cancel }),
        2 => (sub(), prop::sample::select(vec![TrialEnd::Paid, TrialEnd::Pause, TrialEnd::Cancel, TrialEnd::FailedInvoice]))
            .prop_map(|(sub, end)| Action::TrialEnds { sub, end }),
        1 => sub().prop_map(|sub| Action::ResumePaused { sub }),
        1 => (sub(), prop::sample::select(vec![Collection::KeepAsDraft, Collection::Uncollectible, Collection::Void]))
            .prop_map(|(sub, behavior)| Action::PauseCollection { sub, behavior }),
        1 => sub().prop_map(|sub| Action::ResumeCollection { sub }),
        2 => (sub(), 1..=3u32).prop_map(|(sub, qty)| Action::Quantity { sub, qty }),
        1 => sub().prop_map(|sub| Action::Dispute { sub }),
        1 => sub().prop_map(|sub| Action::Cancel { sub }),
        1 => Just(Action::DeleteCustomer),
        2 => (0..3usize).prop_map(Action::ApiProvision),
        1 => (0..8usize).prop_map(Action::DestroyAgent),
        2 => (0..8usize, 1..=3u8).prop_map(|(a, n)| Action::FailNext(a, n)),
        2 => Just(Action::AgentRetry),
        3 => Just(Action::Tick),
        1 => Just(Action::ContinueAsNew),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (action(), any::<bool>()).prop_map(|(a, tick)| Step::Act(a, tick)),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Step::Deliver(a, b)),
    ]
}

// ---------------------------------------------------------------------------------------------
// The Stripe simulator
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Invoice {
    Draft,
    /// Payment attempted and failed (charge_automatically) or past due (send_invoice).
    Failed,
    Paid,
    Void,
    Uncollectible,
}

#[derive(Debug, Clone)]
struct StripeSub {
    id: String,
    status: &'static str,
    quantity: u32,
    invoices: Vec<(String, Invoice)>,
    pause_collection: Option<Collection>,
    deleted: bool,
    agent: Option<String>,
}

impl StripeSub {
    fn ended(&self) -> bool {
        self.deleted || matches!(self.status, "canceled" | "incomplete_expired")
    }

    /// In good standing as Stripe has it: active or trialing, nothing failed left unsettled.
    fn good(&self) -> bool {
        !self.ended()
            && matches!(self.status, "active" | "trialing")
            && !self.invoices.iter().any(|(_, i)| *i == Invoice::Failed)
    }
}

/// What an action asks of the agents (beyond Stripe's events).
#[derive(Debug, Default)]
struct AgentSide {
    /// A draft created for a checkout (and whether it is destroyed as the checkout completes).
    draft: Option<(String, bool)>,
}

#[derive(Debug, Clone, Default)]
struct Stripe {
    clock: i64,
    seq: u64,
    subs: Vec<StripeSub>,
    customer_deleted: bool,
    checkouts: usize,
    /// Disputes opened (Stripe does not touch the subscription; billing ignores them).
    disputes: usize,
}

impl Stripe {
    fn new() -> Self {
        Self { clock: START, ..Self::default() }
    }

    fn event(&mut self, kind: BillingEventKind) -> BillingEvent {
        self.seq += 1;
        BillingEvent { event_id: format!("evt_{}", self.seq), created: self.clock, kind, handoff: None }
    }

    /// `customer.subscription.created|updated|deleted` with the subscription as it is now.
    fn sub_event(&mut self, i: usize, deleted: bool) -> BillingEvent {
        let s = &self.subs[i];
        let kind = BillingEventKind::SubscriptionChanged {
            subscription_id: s.id.clone(),
            status: s.status.to_owned(),
            deleted,
            agent_id: s.agent.clone(),
            seats: Some(s.quantity),
        };
        self.event(kind)
    }

    fn invoice_event(&mut self, i: usize, n: usize, outcome: Invoice, overdue: bool) -> BillingEvent {
        let invoice_id = self.subs[i].invoices[n].0.clone();
        let subscription_id = Some(self.subs[i].id.clone());
        let kind = match outcome {
            Invoice::Paid => BillingEventKind::InvoicePaid { invoice_id, subscription_id },
            Invoice::Failed if overdue => BillingEventKind::InvoiceOverdue { invoice_id, subscription_id },
            Invoice::Failed => BillingEventKind::InvoicePaymentFailed { invoice_id, subscription_id },
            Invoice::Void => BillingEventKind::InvoiceVoided { invoice_id, subscription_id },
            Invoice::Uncollectible => BillingEventKind::InvoiceUncollectible { invoice_id, subscription_id },
            Invoice::Draft => unreachable!("drafts emit nothing"),
        };
        self.event(kind)
    }

    fn new_invoice(&mut self, i: usize, state: Invoice) -> usize {
        let s = &mut self.subs[i];
        let id = format!("in_{}_{}", s.id, s.invoices.len());
        s.invoices.push((id, state));
        s.invoices.len() - 1
    }

    fn pick(&self, sub: usize) -> Option<usize> {
        (!self.subs.is_empty()).then(|| sub % self.subs.len()).filter(|i| !self.subs[*i].ended())
    }

    /// The status Stripe returns when asked now.
    fn current_status(&self, id: &str) -> String {
        self.subs.iter().find(|s| s.id == id).map_or("canceled", |s| s.status).to_owned()
    }

    fn current_seats(&self, id: &str) -> u32 {
        self.subs.iter().find(|s| s.id == id).map_or(0, |s| s.quantity)
    }

    /// Performs a customer or operator action: the events Stripe emits, in order.
    fn act(&mut self, action: &Action, next_second: bool, side: &mut AgentSide) -> Vec<BillingEvent> {
        if next_second {
            self.clock += 1;
        }
        let mut out = Vec::new();
        if self.customer_deleted {
            // A deleted customer can have nothing more done to it.
            return out;
        }
        match *action {
            Action::Checkout { qty, trial, incomplete_first, destroy_draft } => {
                if self.subs.len() >= MAX_SUBS {
                    return out;
                }
                self.checkouts += 1;
                let agent = format!("ag-ck{}", self.checkouts);
                let id = format!("sub_{}", self.subs.len() + 1);
                let first = if trial {
                    "trialing"
                } else if incomplete_first {
                    "incomplete"
                } else {
                    "active"
                };
                self.subs.push(StripeSub {
                    id: id.clone(),
                    status: first,
                    quantity: qty,
                    invoices: Vec::new(),
                    pause_collection: None,
                    deleted: false,
                    agent: Some(agent.clone()),
                });
                let i = self.subs.len() - 1;
                out.push(self.sub_event(i, false));
                // The first invoice is paid (a trial's is a zero-amount invoice, paid at once).
                let n = self.new_invoice(i, Invoice::Paid);
                out.push(self.invoice_event(i, n, Invoice::Paid, false));
                if first == "incomplete" {
                    self.subs[i].status = "active";
                    out.push(self.sub_event(i, false));
                }
                out.push(self.event(BillingEventKind::CheckoutCompleted {
                    session_id: format!("cs_{}", self.checkouts),
                    subscription_id: Some(id),
                    user_id: Some(USER.to_owned()),
                    agent_id: Some(agent.clone()),
                    paid: true,
                }));
                side.draft = Some((agent, destroy_draft));
            }
            Action::SubscribeUnpaid { qty } => {
                if self.subs.len() >= MAX_SUBS {
                    return out;
                }
                self.subs.push(StripeSub {
                    id: format!("sub_{}", self.subs.len() + 1),
                    status: "incomplete",
                    quantity: qty,
                    invoices: Vec::new(),
                    pause_collection: None,
                    deleted: false,
                    agent: None,
                });
                let i = self.subs.len() - 1;
                out.push(self.sub_event(i, false));
                let n = self.new_invoice(i, Invoice::Failed);
                out.push(self.invoice_event(i, n, Invoice::Failed, false));
            }
            Action::PayFirstLate { sub } => {
                if let Some(i) = self.pick(sub).filter(|i| self.subs[*i].status == "incomplete") {
                    self.subs[i].invoices[0].1 = Invoice::Paid;
                    out.push(self.invoice_event(i, 0, Invoice::Paid, false));
                    self.subs[i].status = "active";
                    out.push(self.sub_event(i, false));
                }
            }
            Action::ExpireIncomplete { sub } => {
                if let Some(i) = self.pick(sub).filter(|i| self.subs[*i].status == "incomplete") {
                    self.subs[i].invoices[0].1 = Invoice::Void;
                    out.push(self.invoice_event(i, 0, Invoice::Void, false));
                    self.subs[i].status = "incomplete_expired";
                    out.push(self.sub_event(i, false));
                }
            }
            Action::Renew { sub, outcome } => {
                let Some(i) =
                    self.pick(sub).filter(|i| matches!(self.subs[*i].status, "active" | "past_due"))
                else {
                    return out;
                };
                if let Some(behavior) = self.subs[i].pause_collection {
                    // Collection paused: the invoice is not collected; the status stays.
                    let state = match behavior {
                        Collection::KeepAsDraft => Invoice::Draft,
                        Collection::Uncollectible => Invoice::Uncollectible,
                        Collection::Void => Invoice::Void,
                    };
                    let n = self.new_invoice(i, state);
                    if state != Invoice::Draft {
                        out.push(self.invoice_event(i, n, state, false));
                    }
                    return out;
                }
                match outcome {
                    Renewal::Paid => {
                        let n = self.new_invoice(i, Invoice::Paid);
                        out.push(self.invoice_event(i, n, Invoice::Paid, false));
                        self.recover(i, &mut out);
                    }
                    Renewal::Failed | Renewal::Overdue => {
                        let n = self.new_invoice(i, Invoice::Failed);
                        out.push(self.invoice_event(i, n, Invoice::Failed, outcome == Renewal::Overdue));
                        if self.subs[i].status == "active" {
                            self.subs[i].status = "past_due";
                            out.push(self.sub_event(i, false));
                        }
                    }
                }
            }
            Action::Pay { sub, inv } => {
                let Some(i) = self.pick(sub) else { return out };
                let payable = |s: &StripeSub| {
                    s.invoices
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, st))| matches!(st, Invoice::Failed | Invoice::Uncollectible))
                        .map(|(n, _)| n)
                        .collect::<Vec<_>>()
                };
                let open = payable(&self.subs[i]);
                if open.is_empty() || self.subs[i].status == "incomplete" {
                    return out;
                }
                let n = open[inv % open.len()];
                self.subs[i].invoices[n].1 = Invoice::Paid;
                out.push(self.invoice_event(i, n, Invoice::Paid, false));
                self.recover(i, &mut out);
            }
            Action::Void { sub, inv } | Action::Uncollectible { sub, inv } => {
                let void = matches!(action, Action::Void { .. });
                let Some(i) = self.pick(sub).filter(|i| self.subs[*i].status != "incomplete") else {
                    return out;
                };
                let open: Vec<usize> = self.subs[i]
                    .invoices
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, st))| *st == Invoice::Failed || (void && *st == Invoice::Uncollectible))
                    .map(|(n, _)| n)
                    .collect();
                if open.is_empty() {
                    return out;
                }
                let n = open[inv % open.len()];
                let state = if void { Invoice::Void } else { Invoice::Uncollectible };
                self.subs[i].invoices[n].1 = state;
                out.push(self.invoice_event(i, n, state, false));
            }
            Action::RetriesExhausted { sub, cancel } => {
                if let Some(i) = self.pick(sub).filter(|i| self.subs[*i].status == "past_due") {
                    if cancel {
                        self.cancel(i, &mut out);
                    } else {
                        self.subs[i].status = "unpaid";
                        out.push(self.sub_event(i, false));
                    }
                }
            }
            Action::TrialEnds { sub, end } => {
                let Some(i) = self.pick(sub).filter(|i| self.subs[*i].status == "trialing") else {
                    return out;
                };
                match end {
                    TrialEnd::Paid => {
                        let n = self.new_invoice(i, Invoice::Paid);
                        out.push(self.invoice_event(i, n, Invoice::Paid, false));
                        self.subs[i].status = "active";
                        out.push(self.sub_event(i, false));
                    }
                    TrialEnd::Pause => {
                        self.subs[i].status = "paused";
                        out.push(self.sub_event(i, false));
                    }
                    TrialEnd::Cancel => self.cancel(i, &mut out),
                    TrialEnd::FailedInvoice => {
                        let n = self.new_invoice(i, Invoice::Failed);
                        out.push(self.invoice_event(i, n, Invoice::Failed, false));
                        self.subs[i].status = "past_due";
                        out.push(self.sub_event(i, false));
                    }
                }
            }
            Action::ResumePaused { sub } => {
                if let Some(i) = self.pick(sub).filter(|i| self.subs[*i].status == "paused") {
                    let n = self.new_invoice(i, Invoice::Paid);
                    out.push(self.invoice_event(i, n, Invoice::Paid, false));
                    self.subs[i].status = "active";
                    out.push(self.sub_event(i, false));
                }
            }
            Action::PauseCollection { sub, behavior } => {
                if let Some(i) =
                    self.pick(sub).filter(|i| matches!(self.subs[*i].status, "active" | "past_due"))
                {
                    self.subs[i].pause_collection = Some(behavior);
                    out.push(self.sub_event(i, false));
                }
            }
            Action::ResumeCollection { sub } => {
                if let Some(i) = self.pick(sub).filter(|i| self.subs[*i].pause_collection.is_some()) {
                    self.subs[i].pause_collection = None;
                    out.push(self.sub_event(i, false));
                }
            }
            Action::Quantity { sub, qty } => {
                if let Some(i) = self.pick(sub).filter(|i| !matches!(self.subs[*i].status, "incomplete")) {
                    self.subs[i].quantity = qty;
                    out.push(self.sub_event(i, false));
                }
            }
            // `charge.dispute.created`: the subscription is untouched and billing tracks no dispute
            // event, so nothing reaches the customer's workflow.
            Action::Dispute { sub } if self.pick(sub).is_some() => self.disputes += 1,
            Action::Cancel { sub } => {
                if let Some(i) = self.pick(sub) {
                    self.cancel(i, &mut out);
                }
            }
            Action::DeleteCustomer => {
                for i in 0..self.subs.len() {
                    if !self.subs[i].deleted {
                        self.cancel(i, &mut out);
                    }
                }
                self.customer_deleted = true;
                out.push(self.event(BillingEventKind::CustomerDeleted));
            }
            _ => {}
        }
        out
    }

    /// Paying brings a `past_due`/`unpaid` subscription back to `active` once nothing failed is
    /// left unpaid.
    fn recover(&mut self, i: usize, out: &mut Vec<BillingEvent>) {
        let s = &self.subs[i];
        if matches!(s.status, "past_due" | "unpaid")
            && !s.invoices.iter().any(|(_, st)| *st == Invoice::Failed)
        {
            self.subs[i].status = "active";
            out.push(self.sub_event(i, false));
        }
    }

    fn cancel(&mut self, i: usize, out: &mut Vec<BillingEvent>) {
        self.subs[i].status = "canceled";
        self.subs[i].deleted = true;
        out.push(self.sub_event(i, true));
    }
}

// ---------------------------------------------------------------------------------------------
// The agents (a model of `workflows/src/agent.rs`)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Draft,
    Active,
    Suspended,
    Failed,
    Destroyed,
}

/// What an agent's server is, for comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Server {
    None,
    Running,
    Off,
    Destroyed,
}

#[derive(Debug, Clone)]
struct Agent {
    status: Status,
    /// `Some(true)`: a running server; `Some(false)`: powered off.
    server: Option<bool>,
    /// Knows its paying customer (it sends `release_seat` when destroyed).
    customer: bool,
    /// The seat claim waiting for its answer.
    claim: Option<u64>,
    /// A billing command that did not hold, to run again.
    retry: Option<AgentTarget>,
    /// Server operations that will fail before they heal.
    fails: u8,
    /// Destroyed while still a draft.
    draft_destroyed: bool,
}

impl Agent {
    fn draft() -> Self {
        Self {
            status: Status::Draft,
            server: None,
            customer: false,
            claim: None,
            retry: None,
            fails: 0,
            draft_destroyed: false,
        }
    }

    fn server(&self) -> Server {
        match (self.status, self.server) {
            (Status::Destroyed, _) => Server::Destroyed,
            (_, Some(true)) => Server::Running,
            (_, Some(false)) => Server::Off,
            (_, None) => Server::None,
        }
    }

    fn fail(&mut self) -> bool {
        let failing = self.fails > 0;
        self.fails = self.fails.saturating_sub(1);
        failing
    }
}

/// `agent.rs`'s `billing_holds`.
fn holds(status: Status, target: AgentTarget) -> bool {
    match target {
        AgentTarget::Off => {
            matches!(status, Status::Suspended | Status::Draft | Status::Failed | Status::Destroyed)
        }
        AgentTarget::Run => status != Status::Suspended,
        AgentTarget::Destroy => status == Status::Destroyed,
    }
}

// ---------------------------------------------------------------------------------------------
// What has been delivered (the per-step reference)
// ---------------------------------------------------------------------------------------------

/// One subscription as the events delivered (and re-fetches answered) so far tell.
#[derive(Debug, Clone, Default)]
struct Known {
    status_seq: u64,
    status: String,
    quantity_seq: u64,
    quantity: Option<u32>,
    deleted: bool,
    failed: BTreeSet<String>,
    settled: BTreeSet<String>,
}

impl Known {
    fn good(&self, customer_deleted: bool) -> bool {
        !self.deleted
            && !customer_deleted
            && matches!(self.status.as_str(), "active" | "trialing")
            && self.failed.is_subset(&self.settled)
    }
}

// ---------------------------------------------------------------------------------------------
// One run: Stripe, delivery, the rules and the agents
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Delivery {
    Event(BillingEvent),
    Claim(SeatClaim),
    Release(String),
}

struct World {
    stripe: Stripe,
    billing: CustomerBilling,
    agents: BTreeMap<String, Agent>,
    pool: Vec<Delivery>,
    /// Every event twice (run B) or only those an action's flag duplicates (run A).
    duplicate_all: bool,
    now: i64,
    reassert_at: i64,
    requests: u64,
    /// Checkout sessions whose agent was already asked to provision (the starter's update id).
    provisioned: BTreeSet<String>,
    known: BTreeMap<String, Known>,
    customer_deleted_known: bool,
    /// API provisioning happened (agents then compete for seats in delivery order).
    api_agents: bool,
}

impl World {
    fn new(duplicate_all: bool) -> Self {
        Self {
            stripe: Stripe::new(),
            billing: CustomerBilling::default(),
            agents: BTreeMap::new(),
            pool: Vec::new(),
            duplicate_all,
            now: START,
            reassert_at: START + REASSERT,
            requests: 0,
            provisioned: BTreeSet::new(),
            known: BTreeMap::new(),
            customer_deleted_known: false,
            api_agents: false,
        }
    }

    fn step(&mut self, step: &Step, run_b: bool) {
        match step {
            Step::Act(action, next_second) => self.act(action, *next_second),
            Step::Deliver(a, b) => {
                if !self.pool.is_empty() {
                    let i = if run_b { *b } else { *a } % self.pool.len();
                    let item = self.pool.remove(i);
                    self.deliver(item);
                }
            }
        }
    }

    fn act(&mut self, action: &Action, next_second: bool) {
        let mut side = AgentSide::default();
        // One wall clock: Stripe stamps an action with the time it happens, and the workflow
        // applies what it delivers no earlier.
        self.stripe.clock = self.stripe.clock.max(self.now);
        let events = self.stripe.act(action, next_second, &mut side);
        self.now = self.now.max(self.stripe.clock);
        if let Some((agent, destroy)) = side.draft {
            let mut draft = Agent::draft();
            if destroy {
                // Destroyed as its checkout completes: expiring the session finds it paid, so
                // the agent frees the seat at the payer's workflow.
                draft.status = Status::Destroyed;
                draft.draft_destroyed = true;
                self.pool.push(Delivery::Release(agent.clone()));
            }
            self.agents.insert(agent, draft);
        }
        for (n, event) in events.into_iter().enumerate() {
            if self.duplicate_all || (next_second && n == 0) {
                self.pool.push(Delivery::Event(event.clone()));
            }
            self.pool.push(Delivery::Event(event));
        }
        match *action {
            Action::ApiProvision(j) => {
                self.api_agents = true;
                let id = format!("ag-api{j}");
                let agent = self.agents.entry(id.clone()).or_insert_with(Agent::draft);
                if matches!(agent.status, Status::Draft | Status::Failed) && agent.claim.is_none() {
                    self.send_claim(&id, None);
                }
            }
            Action::DestroyAgent(k) => {
                let ids: Vec<String> = self.agents.keys().cloned().collect();
                if !ids.is_empty() {
                    let id = ids[k % ids.len()].clone();
                    let agent = self.agents.get_mut(&id).expect("listed");
                    if agent.status != Status::Destroyed {
                        agent.draft_destroyed = agent.status == Status::Draft;
                        agent.status = Status::Destroyed;
                        agent.server = None;
                        // A draft bought through Checkout expires its session first and finds it
                        // paid: it frees the seat at the payer's workflow (as a claimed agent does).
                        let paid_draft = id.starts_with("ag-ck") && agent.draft_destroyed;
                        if agent.customer || paid_draft {
                            self.pool.push(Delivery::Release(id));
                        }
                    }
                }
            }
            Action::FailNext(k, n) => {
                let ids: Vec<String> = self.agents.keys().cloned().collect();
                if !ids.is_empty() {
                    self.agents.get_mut(&ids[k % ids.len()]).expect("listed").fails = n;
                }
            }
            Action::AgentRetry => self.retry_all(),
            Action::Tick => self.tick(TICK),
            Action::ContinueAsNew => {
                let json = serde_json::to_string(&self.billing).expect("serializes");
                self.billing = serde_json::from_str(&json).expect("deserializes");
                billing::prune(&mut self.billing, self.now, 1_000_000);
                let effects = billing::converge(&mut self.billing, self.now, GRACE);
                self.enforce(effects, None);
            }
            _ => {}
        }
    }

    fn send_claim(&mut self, agent: &str, subscription_id: Option<String>) {
        self.requests += 1;
        self.agents.get_mut(agent).expect("exists").claim = Some(self.requests);
        self.pool.push(Delivery::Claim(SeatClaim {
            agent_id: agent.to_owned(),
            user_id: USER.to_owned(),
            subscription_id,
            request: self.requests,
        }));
    }

    fn tick(&mut self, secs: i64) {
        self.now += secs;
        if billing::next_deadline(&self.billing).is_some_and(|d| d <= self.now) {
            let effects = billing::expire(&mut self.billing, self.now, GRACE);
            self.enforce(effects, None);
        }
        if self.now >= self.reassert_at {
            let effects = billing::reassert(&mut self.billing);
            self.enforce(effects, None);
            self.reassert_at = self.now + REASSERT;
        }
    }

    fn retry_all(&mut self) {
        let waiting: Vec<(String, AgentTarget)> =
            self.agents.iter().filter_map(|(id, a)| a.retry.map(|t| (id.clone(), t))).collect();
        for (id, target) in waiting {
            self.run_command(&id, target);
        }
    }

    /// The `Subscription` workflow takes one item from its signals.
    fn deliver(&mut self, item: Delivery) {
        match item {
            Delivery::Event(event) => {
                self.learn(&event);
                let effects = billing::apply(&mut self.billing, &event, self.now, GRACE);
                self.enforce(effects, Some(event.created));
                // The starter provisions a paid checkout's agent once the event reached the
                // customer's workflow: the agent claims the seat of that subscription.
                if let BillingEventKind::CheckoutCompleted {
                    session_id,
                    subscription_id,
                    agent_id: Some(agent),
                    ..
                } = &event.kind
                    && self.provisioned.insert(session_id.clone())
                    && self.agents.get(agent).is_some_and(|a| a.status == Status::Draft && a.claim.is_none())
                {
                    self.send_claim(agent, subscription_id.clone());
                }
            }
            Delivery::Claim(claim) => {
                let effects = billing::claim(&mut self.billing, &claim, self.now, GRACE);
                self.enforce(effects, None);
            }
            Delivery::Release(agent) => {
                let effects = billing::release(&mut self.billing, &agent, self.now, GRACE);
                self.enforce(effects, None);
            }
        }
    }

    /// The per-step reference: what the delivered events say.
    fn learn(&mut self, event: &BillingEvent) {
        let seq: u64 = event.event_id.trim_start_matches("evt_").parse().expect("simulator ids");
        let mut status = |sub: &str, status: &str, quantity: Option<u32>, deleted: bool| {
            let k = self.known.entry(sub.to_owned()).or_default();
            if seq > k.status_seq {
                k.status_seq = seq;
                status.clone_into(&mut k.status);
            }
            if let Some(q) = quantity
                && seq > k.quantity_seq
            {
                k.quantity_seq = seq;
                k.quantity = Some(q);
            }
            k.deleted |= deleted;
        };
        match &event.kind {
            BillingEventKind::CheckoutCompleted { subscription_id: Some(sub), paid: true, .. } => {
                status(sub, "active", None, false);
            }
            BillingEventKind::SubscriptionChanged { subscription_id, status: s, deleted, seats, .. } => {
                status(subscription_id, s, *seats, *deleted);
            }
            BillingEventKind::InvoicePaymentFailed { invoice_id, subscription_id: Some(sub) }
            | BillingEventKind::InvoiceOverdue { invoice_id, subscription_id: Some(sub) } => {
                self.known.entry(sub.clone()).or_default().failed.insert(invoice_id.clone());
            }
            BillingEventKind::InvoicePaid { invoice_id, subscription_id: Some(sub) }
            | BillingEventKind::InvoiceVoided { invoice_id, subscription_id: Some(sub) }
            | BillingEventKind::InvoiceUncollectible { invoice_id, subscription_id: Some(sub) } => {
                self.known.entry(sub.clone()).or_default().settled.insert(invoice_id.clone());
            }
            BillingEventKind::CustomerDeleted => self.customer_deleted_known = true,
            _ => {}
        }
    }

    /// `Subscription::enforce`: carries out effects and what they lead to.
    fn enforce(&mut self, effects: Vec<Effect>, _created: Option<i64>) {
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Command { agent, target, .. } => {
                    if !self.billing_signal(&agent, target) {
                        queue.extend(billing::release(&mut self.billing, &agent, self.now, GRACE));
                    }
                }
                Effect::Answer(agent, answer) => {
                    if !self.seat_signal(&agent, &answer) {
                        queue.extend(billing::release(&mut self.billing, &agent, self.now, GRACE));
                    }
                }
                Effect::Refetch(id) => {
                    let status = self.stripe.current_status(&id);
                    let seats = self.stripe.current_seats(&id);
                    let k = self.known.entry(id.clone()).or_default();
                    k.status_seq = self.stripe.seq;
                    k.status.clone_from(&status);
                    k.deleted |= status == "canceled";
                    k.quantity_seq = self.stripe.seq;
                    k.quantity = Some(seats);
                    let fetched = FetchedSubscription { status, seats };
                    queue.extend(billing::apply_refetched(&mut self.billing, &id, &fetched, self.now, GRACE));
                }
                Effect::Verify(agents) => {
                    let gone: Vec<String> = agents.into_iter().filter(|a| !self.reachable(a)).collect();
                    for agent in gone {
                        queue.extend(billing::release(&mut self.billing, &agent, self.now, GRACE));
                    }
                }
                Effect::Probe(agents, claim) => {
                    let gone: Vec<String> = agents.into_iter().filter(|a| !self.reachable(a)).collect();
                    queue.extend(billing::claim_after_probe(
                        &mut self.billing,
                        &claim,
                        &gone,
                        self.now,
                        GRACE,
                    ));
                }
            }
        }
    }

    /// A destroyed agent's workflow has closed; one never created does not exist.
    fn reachable(&self, agent: &str) -> bool {
        self.agents.get(agent).is_some_and(|a| a.status != Status::Destroyed)
    }

    /// The agent's `billing` signal; `false` if it cannot be delivered.
    fn billing_signal(&mut self, agent: &str, target: AgentTarget) -> bool {
        if !self.reachable(agent) {
            return false;
        }
        self.agents.get_mut(agent).expect("reachable").retry = None;
        self.run_command(agent, target);
        true
    }

    /// `AgentWorkflow::run_command` for a billing command, then `after_billing_command`.
    fn run_command(&mut self, id: &str, target: AgentTarget) {
        let Some(agent) = self.agents.get_mut(id) else { return };
        match (target, agent.status) {
            // A failing stop or start leaves the server as it was (and the command to retry).
            (AgentTarget::Off, Status::Active) if !agent.fail() => {
                agent.status = Status::Suspended;
                agent.server = Some(false);
            }
            (AgentTarget::Run, Status::Suspended) if !agent.fail() => {
                agent.status = Status::Active;
                agent.server = Some(true);
            }
            (AgentTarget::Destroy, status) if status != Status::Destroyed => {
                if agent.server.is_some() && agent.fail() {
                    // "destroy incomplete, retry": the agent shows as failed.
                    agent.status = Status::Failed;
                } else {
                    agent.status = Status::Destroyed;
                    agent.server = None;
                    if agent.customer {
                        self.pool.push(Delivery::Release(id.to_owned()));
                    }
                }
            }
            // Refused (`NOT_APPLICABLE`, `AGENT_DESTROYED`): nothing changes.
            _ => {}
        }
        let agent = self.agents.get_mut(id).expect("exists");
        agent.retry = (!holds(agent.status, target)).then_some(target);
    }

    /// The agent's `seat` signal; `false` if it cannot be delivered.
    fn seat_signal(&mut self, id: &str, answer: &SeatAnswer) -> bool {
        if !self.reachable(id) {
            return false;
        }
        let agent = self.agents.get_mut(id).expect("reachable");
        if agent.claim == Some(answer.request) {
            agent.claim = None;
            match answer.decision {
                SeatDecision::Granted { .. } => Self::provision(agent),
                SeatDecision::Parked { .. } => agent.customer = true,
                SeatDecision::Denied { .. } => {}
            }
        } else if matches!(answer.decision, SeatDecision::Granted { .. })
            && matches!(agent.status, Status::Draft | Status::Failed)
            && agent.claim.is_none()
        {
            Self::provision(agent);
        }
        true
    }

    /// The saga (never failing here): a running server.
    fn provision(agent: &mut Agent) {
        agent.status = Status::Active;
        agent.server = Some(true);
        agent.customer = true;
    }

    /// Everything left happens: deliveries in a random order, failures heal, agents retry,
    /// re-assertion, time past every grace period.
    fn finish(&mut self, mut seed: u64) {
        for agent in self.agents.values_mut() {
            agent.fails = 0;
        }
        for _ in 0..4 {
            while !self.pool.is_empty() {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let i = (seed >> 33) as usize % self.pool.len();
                let item = self.pool.remove(i);
                self.deliver(item);
            }
            self.retry_all();
            self.tick(GRACE as i64 + 1);
            let effects = billing::reassert(&mut self.billing);
            self.enforce(effects, None);
        }
    }

    fn servers(&self) -> BTreeMap<String, Server> {
        self.agents.iter().map(|(id, a)| (id.clone(), a.server())).collect()
    }

    fn holders(&self, sub: &str) -> Vec<&String> {
        self.billing.subscriptions.get(sub).map(|s| s.agents.keys().collect()).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Invariants
// ---------------------------------------------------------------------------------------------

fn check_step(w: &World) -> Result<(), TestCaseError> {
    let mut seat_count: BTreeMap<&String, usize> = BTreeMap::new();
    for sub in w.billing.subscriptions.values() {
        for agent in sub.agents.keys() {
            *seat_count.entry(agent).or_default() += 1;
        }
    }
    for (agent, n) in &seat_count {
        prop_assert!(*n <= 1, "{} holds seats of {} subscriptions", agent, n);
    }
    let mut running: BTreeMap<String, usize> = BTreeMap::new();
    for (id, agent) in &w.agents {
        if agent.retry.is_some() || agent.server() != Server::Running {
            continue;
        }
        let seat = w.billing.seat_of(id).map(str::to_owned);
        let good =
            seat.as_ref().and_then(|s| w.known.get(s)).is_some_and(|k| k.good(w.customer_deleted_known));
        prop_assert!(
            good,
            "{} runs on seat {:?}, which as delivered is {:?} (customer deleted: {})",
            id,
            seat,
            seat.as_ref().and_then(|s| w.known.get(s)),
            w.customer_deleted_known
        );
        *running.entry(seat.expect("good implies a seat")).or_default() += 1;
    }
    for (sub, n) in &running {
        let quantity = w.known.get(sub).and_then(|k| k.quantity).unwrap_or(1) as usize;
        prop_assert!(*n <= quantity, "{} has {} running servers for {} seats as delivered", sub, n, quantity);
    }
    Ok(())
}

fn check_end(w: &World) -> Result<(), TestCaseError> {
    for s in &w.stripe.subs {
        let state = w.billing.subscriptions.get(&s.id);
        let standing = state.map(|st| st.standing());
        let expected = if s.ended() {
            Standing::Ended
        } else if s.good() {
            Standing::Good
        } else {
            Standing::Lapsed
        };
        prop_assert_eq!(standing, Some(expected), "standing of {} (Stripe: {:?})", &s.id, s);
        if s.good() {
            prop_assert_eq!(state.map(|st| st.seats), Some(s.quantity), "seats of {}", &s.id);
        }
    }
    for (id, agent) in &w.agents {
        let seat = w.billing.seat_of(id);
        if matches!(agent.server(), Server::Running | Server::Off) {
            let sub = seat.and_then(|s| w.stripe.subs.iter().find(|x| x.id == s));
            prop_assert!(
                sub.is_some_and(StripeSub::good),
                "{} keeps a {:?} server on seat {:?} (Stripe: {:?})",
                id,
                agent.server(),
                seat,
                sub
            );
        }
        if agent.status == Status::Destroyed {
            prop_assert!(
                seat.is_none(),
                "destroyed agent {} (a draft: {}) still holds a seat of {:?}",
                id,
                agent.draft_destroyed,
                seat
            );
        }
    }
    for s in w.stripe.subs.iter().filter(|s| s.good()) {
        let holders = w.holders(&s.id);
        let with_server = holders
            .iter()
            .filter(|a| matches!(w.agents[**a].server(), Server::Running | Server::Off))
            .count();
        let running = holders.iter().filter(|a| w.agents[**a].server() == Server::Running).count();
        // Holders waiting for a server that asked for one (not a reservation nobody claimed).
        let waiting = holders
            .iter()
            .filter(|a| {
                w.agents[**a].server() == Server::None
                    && w.billing.subscriptions[&s.id].agents[**a].request != 0
            })
            .count();
        let owed = (s.quantity as usize).min(with_server + waiting);
        prop_assert_eq!(
            running,
            owed,
            "{} (quantity {}) runs {} servers; {} holders have one, {} wait",
            &s.id,
            s.quantity,
            running,
            with_server,
            waiting
        );
    }
    Ok(())
}

/// What must not depend on the delivery order: every subscription's standing and (unless it ended) seats, and
/// which agents have a server and whether it runs (never provisioned and destroyed are alike:
/// no server).
type Outcome = (Vec<(String, Standing, u32)>, BTreeMap<String, Server>);

fn outcome(w: &World) -> Outcome {
    // An ended subscription's seats no longer matter (a `customer.deleted` first leaves them unknown).
    let subs = w
        .billing
        .subscriptions
        .iter()
        .map(|(id, s)| (id.clone(), s.standing(), if s.standing() == Standing::Ended { 0 } else { s.seats }))
        .collect();
    let servers = w
        .servers()
        .into_iter()
        .map(|(id, s)| (id, if s == Server::Destroyed { Server::None } else { s }))
        .collect();
    (subs, servers)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn billing_follows_stripe_whatever_the_delivery(
        steps in prop::collection::vec(step(), 1..70),
        seeds in (any::<u64>(), any::<u64>()),
    ) {
        let mut a = World::new(false);
        let mut b = World::new(true);
        for step in &steps {
            a.step(step, false);
            check_step(&a)?;
            b.step(step, true);
            check_step(&b)?;
        }
        a.finish(seeds.0);
        check_end(&a)?;
        b.finish(seeds.1);
        check_end(&b)?;
        let (subs_a, servers_a) = outcome(&a);
        let (subs_b, servers_b) = outcome(&b);
        prop_assert_eq!(subs_a, subs_b, "subscriptions differ between delivery orders");
        if !a.api_agents {
            prop_assert_eq!(servers_a, servers_b, "servers differ between delivery orders");
        }
    }
}
