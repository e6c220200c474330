//! The billing rules, as pure functions over [`CustomerBilling`]: billing as **desired state**.
//!
//! A Stripe customer may have several subscriptions over time (cancel, come back) or at once.
//! Each is tracked on its own, and each agent holds a **seat** of exactly one subscription: a
//! subscription's `quantity` (summed over its licensed items) is its number of seats.
//!
//! Stripe delivers events at least once and in any order. The rules make the outcome
//! independent of both:
//! - **Once**: an event id already applied is ignored (ids are remembered for the retention
//!   period, across continue-as-new).
//! - **Status and seats per subscription**: the event with the latest `created` wins; an older one
//!   is stale. Two events with the same `created` and different statuses are ambiguous, so the
//!   subscription is re-fetched from Stripe. Deletion (of the subscription, or of the customer,
//!   which cancels every subscription) is terminal for that subscription only.
//! - **Invoices per subscription**: `paid`, `void` and `uncollectible` settle an invoice for good,
//!   so a late `payment_failed` or `overdue` for it changes nothing; an unsettled failed or
//!   overdue invoice puts its subscription in trouble.
//!
//! From that state the rules derive what every agent **should be** ([`desired`]):
//! - a subscription in good standing (`active` or `trialing`, nothing unsettled) runs the agents
//!   holding its first `quantity` seats, oldest first; holders beyond the quantity (it was
//!   lowered) are powered off, newest first, and run again when a seat frees or the quantity
//!   rises; a claim waiting for a seat is granted when one is free;
//! - a subscription in trouble (an unsettled invoice, or a status such as `past_due`, `unpaid`,
//!   `incomplete`, `paused`) powers its agents off and starts a **grace period**, whatever put it
//!   in trouble; good standing again ends it (and resumes the agents), running out lapses it;
//! - a lapsed or ended subscription destroys its agents' servers; a claim waiting on an ended one
//!   is denied.
//!
//! Commands are the *differences* between what each agent should be and the target last sent
//! to it ([`CustomerBilling::targets`]), so a duplicate can never repeat one, and [`reassert`]
//! sends every target again (the workflow does that on a timer: a lost signal or an agent that
//! gave up is healed, and the `Agent` itself retries a failed command until it holds).
//!
//! Seats: a paid checkout reserves its subscription's seat for the agent it names (unless that
//! agent already runs on another seat); a claim naming a subscription takes that subscription's
//! seat (moving a seat that never got a server); an API claim takes any free seat of a
//! subscription in good standing. A seat frees when its agent is destroyed, or when a checkout
//! reserved it for an agent that no longer exists: before a claim is refused for want of a
//! seat, the agents holding unclaimed reservations are probed ([`Effect::Probe`]). A one-off
//! payment (Checkout in `payment` mode) is not a subscription and buys no seat.

pub mod legacy;
pub mod v2;

use std::collections::BTreeMap;

use slipway_proto::billing::{
    AgentTarget, BillingEvent, BillingEventKind, CustomerBilling, FetchedSubscription, ListedSubscription,
    SeatAnswer, SeatClaim, SeatDecision, SeatHolder, Standing, SubscriptionState,
};

/// Stable codes of refused seat claims (also the API's error codes).
pub mod codes {
    /// No subscription of the customer is in good standing.
    pub const NO_ACTIVE_SUBSCRIPTION: &str = "NO_ACTIVE_SUBSCRIPTION";
    /// Every seat of the customer's subscriptions in good standing is taken.
    pub const NO_FREE_SEAT: &str = "NO_FREE_SEAT";
    /// The subscription the checkout paid for was deleted.
    pub const SUBSCRIPTION_ENDED: &str = "SUBSCRIPTION_ENDED";
    /// The agent's owner is not the paying customer's user.
    pub const PAYER_NOT_OWNER: &str = "PAYER_NOT_OWNER";
    /// The checkout was a one-off payment (`payment` mode): seats come with subscriptions.
    pub const NOT_A_SUBSCRIPTION: &str = "NOT_A_SUBSCRIPTION";
}

/// Status of a subscription known only from invoices (its own events have not arrived yet).
const UNKNOWN: &str = "unknown";

/// What the workflow must do after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Tell an agent with a server what it must be (suspend, resume or destroy), and why.
    Command {
        /// The agent.
        agent: String,
        /// What it must be.
        target: AgentTarget,
        /// Why, for its audit trail.
        reason: String,
    },
    /// Answer an agent's seat claim (or grant a parked one); the workflow fills in its customer.
    Answer(String, SeatAnswer),
    /// Ask Stripe for this subscription's current status.
    Refetch(String),
    /// Before refusing this claim for want of a seat, check that these agents (holding seats
    /// reserved by their checkouts, never claimed) still exist; then call [`claim_after_probe`]
    /// with those that do not.
    Probe(Vec<String>, SeatClaim),
    /// Check that these agents (holding seats reserved by their checkouts, never claimed) still
    /// exist, and [`release`] those that do not (the periodic re-assertion's sweep).
    Verify(Vec<String>),
}

/// What billing wants of one seat holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    /// An agent with a server: this target.
    Server(AgentTarget, String),
    /// An agent waiting for its server: provision it now (its claim is granted).
    Grant,
    /// An agent waiting for its server: keep waiting, for this reason.
    Wait(String),
    /// An agent waiting for its server on a subscription that ended: refused.
    Deny,
}

fn placeholder() -> SubscriptionState {
    SubscriptionState::new(UNKNOWN, -1, 1)
}

fn status_is_good(status: &str) -> bool {
    matches!(status, "active" | "trialing")
}

/// In trouble: neither ended nor in good standing (this is what the grace period measures).
fn troubled(sub: &SubscriptionState) -> bool {
    !sub.ended
        && !matches!(sub.status.as_str(), "canceled" | "incomplete_expired")
        && (!sub.failed_invoices.is_empty() || !status_is_good(&sub.status))
}

/// An invoice event's subscription: the placeholder is created if it is not known yet.
fn invoice_sub<'a>(
    state: &'a mut CustomerBilling,
    sub: &Option<String>,
) -> Option<&'a mut SubscriptionState> {
    let id = sub.as_ref()?;
    Some(state.subscriptions.entry(id.clone()).or_insert_with(placeholder))
}

fn settled(status: Option<&String>) -> bool {
    status.is_some_and(|s| matches!(s.as_str(), "paid" | "void" | "uncollectible"))
}

/// Apply one Stripe event. `now` is workflow time (Unix seconds); `grace_secs` the grace period.
pub fn apply(state: &mut CustomerBilling, event: &BillingEvent, now: i64, grace_secs: u64) -> Vec<Effect> {
    if state.applied.contains_key(&event.event_id) {
        return Vec::new();
    }
    state.applied.insert(event.event_id.clone(), event.created);
    let mut out = Vec::new();
    match &event.kind {
        BillingEventKind::CheckoutCompleted { subscription_id, user_id, agent_id, paid, .. } => {
            if state.user_id.is_none() {
                state.user_id.clone_from(user_id);
            }
            // A one-off payment has no subscription and so no seat; an unpaid session none yet.
            if let (true, Some(id)) = (*paid, subscription_id) {
                let sub = state.subscriptions.entry(id.clone()).or_insert_with(placeholder);
                if sub.as_of < 0 {
                    // Provisional until a subscription event says more: `as_of: 0` loses to any.
                    sub.status = "active".to_owned();
                    sub.as_of = 0;
                }
                let payer_is_customer = match (&state.user_id, user_id) {
                    (Some(owner), Some(payer)) => owner == payer,
                    _ => true,
                };
                if let Some(agent) = agent_id.as_ref().filter(|_| payer_is_customer) {
                    reserve(state, id, agent);
                }
            }
        }
        BillingEventKind::SubscriptionChanged { subscription_id, status, deleted, seats, .. } => {
            // `metadata.agentId` reserves nothing here: only the checkout, which names its payer,
            // reserves (a refused or foreign checkout's subscription must not hold a seat).
            let sub = state.subscriptions.entry(subscription_id.clone()).or_insert_with(placeholder);
            if !sub.ended {
                if *deleted {
                    sub.ended = true;
                    sub.status = "canceled".to_owned();
                    if sub.as_of <= event.created {
                        sub.as_of = event.created;
                        sub.seats = seats.unwrap_or(sub.seats);
                    }
                } else if sub.as_of > event.created {
                    // Stale.
                } else if sub.as_of == event.created
                    && (sub.status != *status || seats.is_some_and(|n| n != sub.seats))
                {
                    // Same second, different facts: only Stripe knows which came last.
                    out.push(Effect::Refetch(subscription_id.clone()));
                } else {
                    sub.status.clone_from(status);
                    sub.as_of = event.created;
                    sub.seats = seats.unwrap_or(sub.seats);
                }
            }
        }
        BillingEventKind::InvoicePaid { invoice_id, subscription_id }
        | BillingEventKind::InvoiceVoided { invoice_id, subscription_id }
        | BillingEventKind::InvoiceUncollectible { invoice_id, subscription_id } => {
            let outcome = match &event.kind {
                BillingEventKind::InvoicePaid { .. } => "paid",
                BillingEventKind::InvoiceVoided { .. } => "void",
                _ => "uncollectible",
            };
            match invoice_sub(state, subscription_id) {
                Some(sub) => {
                    // Paid beats uncollectible (an uncollectible invoice can still be paid);
                    // a voided invoice can be neither.
                    let keep = matches!(
                        (sub.invoices.get(invoice_id).map(String::as_str), outcome),
                        (Some("paid" | "void"), _) | (Some("uncollectible"), "uncollectible")
                    );
                    if !keep {
                        sub.invoices.insert(invoice_id.clone(), outcome.to_owned());
                    }
                    sub.failed_invoices.remove(invoice_id);
                }
                None => {
                    state.loose_invoices.insert(invoice_id.clone(), outcome.to_owned());
                }
            }
        }
        BillingEventKind::InvoicePaymentFailed { invoice_id, subscription_id }
        | BillingEventKind::InvoiceOverdue { invoice_id, subscription_id } => {
            match invoice_sub(state, subscription_id) {
                Some(sub) => {
                    if !settled(sub.invoices.get(invoice_id)) {
                        sub.invoices.insert(invoice_id.clone(), "failed".to_owned());
                        sub.failed_invoices.insert(invoice_id.clone());
                    }
                }
                None => {
                    state.loose_invoices.entry(invoice_id.clone()).or_insert_with(|| "failed".to_owned());
                }
            }
        }
        BillingEventKind::CustomerDeleted => state.customer_deleted = true,
    }
    out.extend(settle(state, now, grace_secs));
    out
}

/// The checkout paid for this agent's seat: reserve it, so no API provisioning can take it. An
/// agent that already has a server on another seat keeps that one (the new seat stays free for
/// the customer's next agent); one still waiting on another subscription moves here.
fn reserve(state: &mut CustomerBilling, sub_id: &str, agent: &str) {
    if state.released.contains_key(agent) {
        // Destroyed before its checkout was delivered: the seat stays free for the next agent.
        return;
    }
    if let Some(held) = state.seat_of(agent).map(str::to_owned) {
        let waiting = state.subscriptions[&held].agents[agent].parked;
        if held == sub_id || !waiting {
            return;
        }
        let target = &state.subscriptions[sub_id];
        if target.standing() == Standing::Ended || target.free_seats() == 0 {
            return;
        }
        if let Some(old) = state.subscriptions.get_mut(&held) {
            old.agents.remove(agent);
        }
    }
    let since = next_since(state);
    let sub = state.subscriptions.get_mut(sub_id).expect("reserved on a known subscription");
    if sub.standing() != Standing::Ended && sub.free_seats() > 0 {
        sub.agents.insert(agent.to_owned(), SeatHolder { parked: true, request: 0, since });
    }
}

fn next_since(state: &mut CustomerBilling) -> u64 {
    state.seats_taken += 1;
    state.seats_taken
}

/// Stripe's answer to a re-fetch, made at `now`: authoritative for every event created until
/// then (an older event delivered later is stale).
pub fn apply_refetched(
    state: &mut CustomerBilling,
    subscription_id: &str,
    fetched: &FetchedSubscription,
    now: i64,
    grace_secs: u64,
) -> Vec<Effect> {
    let sub = state.subscriptions.entry(subscription_id.to_owned()).or_insert_with(placeholder);
    if !sub.ended {
        sub.status.clone_from(&fetched.status);
        sub.seats = fetched.seats;
        sub.as_of = sub.as_of.max(now);
        if fetched.status == "canceled" {
            sub.ended = true;
        }
    }
    settle(state, now, grace_secs)
}

/// The customer's subscriptions as Stripe lists them at `now` (a re-sync: what webhooks missed,
/// and the true quantities of a state carried over from earlier rules): authoritative for every
/// event created until then.
pub fn apply_listed(
    state: &mut CustomerBilling,
    listed: &[ListedSubscription],
    now: i64,
    grace_secs: u64,
) -> Vec<Effect> {
    for l in listed {
        let sub = state.subscriptions.entry(l.id.clone()).or_insert_with(placeholder);
        if !sub.ended {
            sub.status.clone_from(&l.now.status);
            sub.seats = l.now.seats;
            sub.as_of = sub.as_of.max(now);
            if matches!(l.now.status.as_str(), "canceled" | "incomplete_expired") {
                sub.ended = true;
            }
        }
    }
    settle(state, now, grace_secs)
}

/// Grace periods that ended by `now` lapse.
pub fn expire(state: &mut CustomerBilling, now: i64, grace_secs: u64) -> Vec<Effect> {
    for sub in state.subscriptions.values_mut() {
        if troubled(sub) && !sub.lapsed && sub.grace_deadline.is_some_and(|d| d <= now) {
            sub.lapsed = true;
        }
    }
    settle(state, now, grace_secs)
}

/// The earliest grace period still running (the workflow's timer).
pub fn next_deadline(state: &CustomerBilling) -> Option<i64> {
    state.subscriptions.values().filter(|s| troubled(s) && !s.lapsed).filter_map(|s| s.grace_deadline).min()
}

/// An agent asks for a seat before it provisions.
pub fn claim(state: &mut CustomerBilling, claim: &SeatClaim, now: i64, grace_secs: u64) -> Vec<Effect> {
    claim_with(state, claim, true, now, grace_secs)
}

/// The probe of [`Effect::Probe`] found `gone` no longer exist: free their seats, then decide
/// the claim (without probing again).
pub fn claim_after_probe(
    state: &mut CustomerBilling,
    claim: &SeatClaim,
    gone: &[String],
    now: i64,
    grace_secs: u64,
) -> Vec<Effect> {
    for agent in gone {
        remove_holder(state, agent);
        state.released.insert(agent.clone(), now);
    }
    claim_with(state, claim, false, now, grace_secs)
}

/// Reservations nobody claimed yet, in the subscriptions a claim could take a seat of.
fn unclaimed_reservations(state: &CustomerBilling, only: Option<&str>, claimant: &str) -> Vec<String> {
    state
        .subscriptions
        .iter()
        .filter(|(id, s)| only.is_none_or(|o| o == id.as_str()) && s.standing() != Standing::Ended)
        .flat_map(|(_, s)| s.agents.iter())
        .filter(|(a, h)| h.parked && h.request == 0 && a.as_str() != claimant)
        .map(|(a, _)| a.clone())
        .collect()
}

fn claim_with(
    state: &mut CustomerBilling,
    claim: &SeatClaim,
    may_probe: bool,
    now: i64,
    grace_secs: u64,
) -> Vec<Effect> {
    let answer = |decision| {
        vec![Effect::Answer(
            claim.agent_id.clone(),
            SeatAnswer { request: claim.request, customer_id: String::new(), decision },
        )]
    };
    let denied = |code: &str, reason: String| answer(SeatDecision::Denied { code: code.to_owned(), reason });
    let no_seat = |state: &CustomerBilling, only: Option<&str>, code: &str, reason: String| {
        let suspects = unclaimed_reservations(state, only, &claim.agent_id);
        if may_probe && !suspects.is_empty() {
            vec![Effect::Probe(suspects, claim.clone())]
        } else {
            denied(code, reason)
        }
    };
    if let Some(owner) = &state.user_id
        && *owner != claim.user_id
    {
        return denied(
            codes::PAYER_NOT_OWNER,
            "the agent's owner is not the paying customer's user".to_owned(),
        );
    }
    // An agent that claims exists, whatever a probe concluded before.
    state.released.remove(&claim.agent_id);
    let held = state.seat_of(&claim.agent_id).map(str::to_owned);
    let chosen = match (&claim.subscription_id, held) {
        (Some(id), _) if id.starts_with("cs_") => {
            return denied(
                codes::NOT_A_SUBSCRIPTION,
                "a one-off payment buys no seat; seats come with a subscription (POST /api/billing/checkout)"
                    .to_owned(),
            );
        }
        (Some(id), Some(held)) if *id == held => held,
        (Some(id), held) => {
            // A claim naming a subscription takes that subscription's seat, moving one that
            // never got a server; if it cannot, a seat the agent already holds decides.
            let usable = match state.subscriptions.get(id) {
                None => Err((
                    codes::NO_ACTIVE_SUBSCRIPTION,
                    format!("subscription {id} is not known for this customer"),
                )),
                Some(s) if s.standing() == Standing::Ended => {
                    Err((codes::SUBSCRIPTION_ENDED, format!("subscription {id} has ended")))
                }
                Some(s) if s.free_seats() == 0 => {
                    Err((codes::NO_FREE_SEAT, format!("every seat of subscription {id} is taken")))
                }
                Some(_) => Ok(()),
            };
            match (usable, held) {
                (Ok(()), Some(held)) => {
                    let movable = state.subscriptions[&held].agents[&claim.agent_id].parked;
                    if movable {
                        remove_holder(state, &claim.agent_id);
                        id.clone()
                    } else {
                        held
                    }
                }
                (Ok(()), None) => id.clone(),
                (Err(_), Some(held)) => held,
                (Err((code, reason)), None) if code == codes::NO_FREE_SEAT => {
                    return no_seat(state, Some(id), code, reason);
                }
                (Err((code, reason)), None) => return denied(code, reason),
            }
        }
        (None, Some(held)) => held,
        (None, None) => {
            let good = |s: &SubscriptionState| s.standing() == Standing::Good;
            match state.subscriptions.iter().find(|(_, s)| good(s) && s.free_seats() > 0) {
                Some((id, _)) => id.clone(),
                None if state.subscriptions.values().any(good) => {
                    return no_seat(
                        state,
                        None,
                        codes::NO_FREE_SEAT,
                        "every paid seat holds an agent; raise the subscription's quantity or destroy an agent"
                            .to_owned(),
                    );
                }
                None => {
                    return denied(
                        codes::NO_ACTIVE_SUBSCRIPTION,
                        "no subscription in good standing; start one with POST /api/billing/checkout"
                            .to_owned(),
                    );
                }
            }
        }
    };
    let since = next_since(state);
    let Some(sub) = state.subscriptions.get_mut(&chosen) else { return Vec::new() };
    let holder =
        sub.agents.entry(claim.agent_id.clone()).or_insert(SeatHolder { parked: true, request: 0, since });
    holder.request = claim.request;
    if !holder.parked {
        // Already has a server on this seat (a repeated claim): nothing to provision.
        return answer(SeatDecision::Granted { subscription_id: chosen });
    }
    // The holder waits; settle decides (granted now if the subscription is good and a seat is its).
    let mut out = settle(state, now, grace_secs);
    let granted = out.iter().any(|e| matches!(e, Effect::Answer(a, _) if *a == claim.agent_id));
    if !granted {
        let reason = match desired_of(state, &claim.agent_id) {
            Some(Desired::Wait(reason)) => reason,
            _ => format!("subscription {chosen} is not in good standing: waiting for payment"),
        };
        out.extend(answer(SeatDecision::Parked { subscription_id: chosen, reason }));
    }
    out
}

fn remove_holder(state: &mut CustomerBilling, agent: &str) {
    for sub in state.subscriptions.values_mut() {
        sub.agents.remove(agent);
    }
    state.targets.remove(agent);
}

/// An agent was destroyed (or no longer exists): its seat is free, which may give it to an agent
/// powered off for want of one, or to a claim waiting for one.
pub fn release(state: &mut CustomerBilling, agent_id: &str, now: i64, grace_secs: u64) -> Vec<Effect> {
    remove_holder(state, agent_id);
    state.released.insert(agent_id.to_owned(), now);
    settle(state, now, grace_secs)
}

/// An agent provisioned by an `Agent` run recorded before seats existed announced itself: it
/// takes a seat of the newest subscription not ended (or is destroyed if there is none).
pub fn attach_unclaimed(
    state: &mut CustomerBilling,
    agent_id: &str,
    now: i64,
    grace_secs: u64,
) -> Vec<Effect> {
    if state.seat_of(agent_id).is_some() {
        return Vec::new();
    }
    let since = next_since(state);
    let newest =
        state.subscriptions.values_mut().filter(|s| s.standing() != Standing::Ended).max_by_key(|s| s.as_of);
    match newest {
        Some(sub) => {
            sub.agents.insert(agent_id.to_owned(), SeatHolder { parked: false, request: 0, since });
            // It has a server that runs: settle sends what it must be if that is not running.
            state.targets.insert(agent_id.to_owned(), AgentTarget::Run);
            settle(state, now, grace_secs)
        }
        None => vec![Effect::Command {
            agent: agent_id.to_owned(),
            target: AgentTarget::Destroy,
            reason: "no paid seat".to_owned(),
        }],
    }
}

/// A subscription's seat holders in the order they took their seats (oldest first): those with
/// a server, then those waiting for one.
fn by_seat_order(sub: &SubscriptionState) -> (Vec<&String>, Vec<&String>) {
    let mut holders: Vec<(&String, &SeatHolder)> = sub.agents.iter().collect();
    holders.sort_by(|a, b| (a.1.since, a.0).cmp(&(b.1.since, b.0)));
    let (with_server, waiting): (Vec<_>, Vec<_>) = holders.into_iter().partition(|(_, h)| !h.parked);
    (with_server.into_iter().map(|(a, _)| a).collect(), waiting.into_iter().map(|(a, _)| a).collect())
}

/// What billing wants of each seat holder, by agent.
pub fn desired(state: &CustomerBilling) -> BTreeMap<String, Desired> {
    let mut out = BTreeMap::new();
    for (id, sub) in &state.subscriptions {
        let standing = sub.standing();
        // Agents with a server keep their seats before claims waiting for one.
        let (with_server, waiting) = by_seat_order(sub);
        let seats = sub.seats as usize;
        let free = seats.saturating_sub(with_server.len());
        for (n, agent) in with_server.into_iter().enumerate() {
            let beyond = n >= seats;
            let d = match standing {
                Standing::Good | Standing::Suspended if beyond => Desired::Server(
                    AgentTarget::Off,
                    format!(
                        "subscription {id} has {} seat(s) and this agent is beyond them: powered off until a seat frees",
                        sub.seats
                    ),
                ),
                Standing::Good => {
                    Desired::Server(AgentTarget::Run, format!("subscription {id} is in good standing"))
                }
                Standing::Suspended => Desired::Server(AgentTarget::Off, trouble_reason(id, sub)),
                Standing::Lapsed => Desired::Server(
                    AgentTarget::Destroy,
                    "payment not received within the grace period".to_owned(),
                ),
                Standing::Ended => {
                    Desired::Server(AgentTarget::Destroy, "the subscription was cancelled".to_owned())
                }
            };
            out.insert(agent.clone(), d);
        }
        for (n, agent) in waiting.into_iter().enumerate() {
            let d = match standing {
                Standing::Ended => Desired::Deny,
                Standing::Good if n < free => Desired::Grant,
                Standing::Good => {
                    Desired::Wait(format!("every seat of subscription {id} is taken: waiting for one"))
                }
                Standing::Suspended | Standing::Lapsed => {
                    Desired::Wait(format!("subscription {id} is {}: waiting for payment", standing.as_str()))
                }
            };
            out.insert(agent.clone(), d);
        }
    }
    out
}

fn desired_of(state: &CustomerBilling, agent: &str) -> Option<Desired> {
    desired(state).remove(agent)
}

fn trouble_reason(id: &str, sub: &SubscriptionState) -> String {
    if sub.failed_invoices.is_empty() {
        format!("subscription {id} is {}", sub.status)
    } else {
        let invoices: Vec<&str> = sub.failed_invoices.iter().map(String::as_str).collect();
        format!("subscription {id} has unpaid invoices ({})", invoices.join(", "))
    }
}

/// Every agent with a server is told its target again (the workflow's periodic re-assertion).
pub fn reassert(state: &mut CustomerBilling) -> Vec<Effect> {
    let mut out = Vec::new();
    let reserved = unclaimed_reservations(state, None, "");
    if !reserved.is_empty() {
        out.push(Effect::Verify(reserved));
    }
    for (agent, d) in desired(state) {
        if let Desired::Server(target, reason) = d {
            state.targets.insert(agent.clone(), target);
            out.push(Effect::Command { agent, target, reason });
        }
    }
    out
}

/// Brings everything up to date without an event: what [`settle`] does after each change (the
/// workflow calls it when a run starts, so a state carried over from earlier rules converges).
pub fn converge(state: &mut CustomerBilling, now: i64, grace_secs: u64) -> Vec<Effect> {
    settle(state, now, grace_secs)
}

/// Brings grace periods up to date, then turns every difference between what the agents should
/// be and what they were last told into commands and answers.
/// An agent with a server beyond its subscription's seats moves to another subscription of the
/// customer in good standing with a free seat (it keeps running), before any is powered off.
fn rebalance(state: &mut CustomerBilling) {
    loop {
        let excess = state.subscriptions.iter().find_map(|(id, sub)| {
            if sub.standing() != Standing::Good {
                return None;
            }
            by_seat_order(sub).0.get(sub.seats as usize).map(|a| ((*a).clone(), id.clone()))
        });
        let Some((agent, from)) = excess else { return };
        let to = state
            .subscriptions
            .iter()
            .find(|(id, s)| **id != from && s.standing() == Standing::Good && s.free_seats() > 0)
            .map(|(id, _)| id.clone());
        let Some(to) = to else { return };
        let holder = state.subscriptions.get_mut(&from).and_then(|s| s.agents.remove(&agent));
        if let (Some(holder), Some(sub)) = (holder, state.subscriptions.get_mut(&to)) {
            sub.agents.insert(agent, holder);
        }
    }
}

fn settle(state: &mut CustomerBilling, now: i64, grace_secs: u64) -> Vec<Effect> {
    let customer_deleted = state.customer_deleted;
    for sub in state.subscriptions.values_mut() {
        if customer_deleted {
            // Whenever Stripe's events about it arrive: a deleted customer has no live subscription.
            sub.ended = true;
            sub.status = "canceled".to_owned();
        }
        if troubled(sub) {
            sub.grace_deadline.get_or_insert(now + grace_secs as i64);
        } else if !sub.ended {
            sub.grace_deadline = None;
            sub.lapsed = false;
        }
        sub.enforced = sub.standing();
    }
    rebalance(state);
    let mut out = Vec::new();
    for (agent, d) in desired(state) {
        let Some(sub_id) = state.seat_of(&agent).map(str::to_owned) else { continue };
        match d {
            Desired::Server(target, reason) => {
                if state.targets.get(&agent) != Some(&target) {
                    state.targets.insert(agent.clone(), target);
                    out.push(Effect::Command { agent, target, reason });
                }
            }
            Desired::Grant => {
                let Some(holder) =
                    state.subscriptions.get_mut(&sub_id).and_then(|s| s.agents.get_mut(&agent))
                else {
                    continue;
                };
                // A reservation nobody claimed yet waits for its claim (the checkout's own
                // provisioning); a claim that waited is granted now.
                if holder.request == 0 {
                    continue;
                }
                holder.parked = false;
                let request = holder.request;
                state.targets.insert(agent.clone(), AgentTarget::Run);
                let decision = SeatDecision::Granted { subscription_id: sub_id };
                out.push(Effect::Answer(agent, SeatAnswer { request, customer_id: String::new(), decision }));
            }
            Desired::Deny => {
                let Some(sub) = state.subscriptions.get_mut(&sub_id) else { continue };
                let Some(holder) = sub.agents.remove(&agent) else { continue };
                let decision = SeatDecision::Denied {
                    code: codes::SUBSCRIPTION_ENDED.to_owned(),
                    reason: format!("subscription {sub_id} has ended"),
                };
                out.push(Effect::Answer(
                    agent,
                    SeatAnswer { request: holder.request, customer_id: String::new(), decision },
                ));
            }
            Desired::Wait(_) => {}
        }
    }
    out
}

/// Forget event ids older than the retention period (they can no longer be redelivered).
pub fn prune(state: &mut CustomerBilling, now: i64, retention_secs: u64) {
    let horizon = now - retention_secs as i64;
    state.applied.retain(|_, created| *created >= horizon);
    state.released.retain(|_, at| *at >= horizon);
}

/// A state carried over from the rules of [`v2`]: every agent with a server was last told what
/// its subscription's standing then asked for, and seats are ordered by agent id.
pub fn from_v2(mut state: CustomerBilling) -> CustomerBilling {
    let mut targets = BTreeMap::new();
    for sub in state.subscriptions.values() {
        let target = match sub.enforced {
            Standing::Good => AgentTarget::Run,
            Standing::Suspended => AgentTarget::Off,
            Standing::Lapsed | Standing::Ended => AgentTarget::Destroy,
        };
        for (agent, holder) in &sub.agents {
            if !holder.parked {
                targets.insert(agent.clone(), target);
            }
        }
    }
    state.targets = targets;
    let mut n = 0;
    for sub in state.subscriptions.values_mut() {
        for holder in sub.agents.values_mut() {
            n += 1;
            holder.since = n;
        }
    }
    state.seats_taken = n;
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: u64 = 50;

    fn ev(id: &str, created: i64, kind: BillingEventKind) -> BillingEvent {
        BillingEvent { event_id: id.into(), created, kind, handoff: None }
    }
    fn changed(id: &str, created: i64, s: &str, status: &str, seats: u32) -> BillingEvent {
        let kind = BillingEventKind::SubscriptionChanged {
            subscription_id: s.into(),
            status: status.into(),
            deleted: false,
            seats: Some(seats),
            agent_id: None,
        };
        ev(id, created, kind)
    }
    fn invoice(id: &str, s: &str, inv: &str, what: &str) -> BillingEvent {
        let (invoice_id, subscription_id) = (inv.to_owned(), Some(s.to_owned()));
        let kind = match what {
            "failed" => BillingEventKind::InvoicePaymentFailed { invoice_id, subscription_id },
            "overdue" => BillingEventKind::InvoiceOverdue { invoice_id, subscription_id },
            "paid" => BillingEventKind::InvoicePaid { invoice_id, subscription_id },
            "void" => BillingEventKind::InvoiceVoided { invoice_id, subscription_id },
            _ => BillingEventKind::InvoiceUncollectible { invoice_id, subscription_id },
        };
        ev(id, 10, kind)
    }
    fn checkout(id: &str, s: Option<&str>, agent: &str) -> BillingEvent {
        let kind = BillingEventKind::CheckoutCompleted {
            session_id: format!("cs_{id}"),
            subscription_id: s.map(Into::into),
            user_id: Some("u1".into()),
            agent_id: Some(agent.into()),
            paid: true,
        };
        ev(id, 5, kind)
    }
    fn claim_of(agent: &str, s: Option<&str>, request: u64) -> SeatClaim {
        SeatClaim {
            agent_id: agent.into(),
            user_id: "u1".into(),
            subscription_id: s.map(Into::into),
            request,
        }
    }
    fn commands(effects: &[Effect]) -> Vec<(String, AgentTarget)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Command { agent, target, .. } => Some((agent.clone(), *target)),
                _ => None,
            })
            .collect()
    }
    fn decision(effects: &[Effect], agent: &str) -> Option<SeatDecision> {
        effects.iter().find_map(|e| match e {
            Effect::Answer(a, answer) if a == agent => Some(answer.decision.clone()),
            _ => None,
        })
    }
    fn granted(effects: &[Effect], agent: &str) -> bool {
        matches!(decision(effects, agent), Some(SeatDecision::Granted { .. }))
    }
    fn denied_code(effects: &[Effect], agent: &str) -> Option<String> {
        match decision(effects, agent) {
            Some(SeatDecision::Denied { code, .. }) => Some(code),
            _ => None,
        }
    }
    fn run(agent: &str, target: AgentTarget) -> (String, AgentTarget) {
        (agent.to_owned(), target)
    }

    /// A customer with `sub_a` of `seats` seats, active, whose agents `a1..=an` run (oldest first).
    fn customer(seats: u32, agents: u32) -> CustomerBilling {
        let mut b = CustomerBilling::default();
        apply(&mut b, &checkout("e0", Some("sub_a"), "a1"), 0, GRACE);
        apply(&mut b, &changed("e1", 1, "sub_a", "active", seats), 0, GRACE);
        for n in 1..=agents {
            let agent = format!("a{n}");
            assert!(granted(&claim(&mut b, &claim_of(&agent, None, 1), 0, GRACE), &agent), "{b:#?}");
        }
        b
    }

    #[test]
    fn a_downgrade_powers_off_the_newest_agents_and_an_upgrade_brings_them_back() {
        let mut b = customer(3, 3);
        let down = apply(&mut b, &changed("e2", 2, "sub_a", "active", 1), 10, GRACE);
        assert_eq!(commands(&down), vec![run("a2", AgentTarget::Off), run("a3", AgentTarget::Off)]);
        assert_eq!(
            denied_code(&claim(&mut b, &claim_of("a4", None, 1), 10, GRACE), "a4").as_deref(),
            Some(codes::NO_FREE_SEAT)
        );
        // Destroying the running one gives its seat to the oldest powered-off one.
        assert_eq!(commands(&release(&mut b, "a1", 11, GRACE)), vec![run("a2", AgentTarget::Run)]);
        let up = apply(&mut b, &changed("e3", 3, "sub_a", "active", 2), 12, GRACE);
        assert_eq!(commands(&up), vec![run("a3", AgentTarget::Run)]);
        // A stale quantity changes nothing.
        assert!(commands(&apply(&mut b, &changed("e4", 2, "sub_a", "active", 1), 13, GRACE)).is_empty());
    }

    #[test]
    fn a_voided_or_uncollectible_invoice_ends_the_suspension_and_a_late_failure_cannot_undo_it() {
        let mut b = customer(1, 1);
        assert_eq!(
            commands(&apply(&mut b, &invoice("e2", "sub_a", "in_1", "failed"), 100, GRACE)),
            vec![run("a1", AgentTarget::Off)]
        );
        assert_eq!(next_deadline(&b), Some(150));
        assert_eq!(
            commands(&apply(&mut b, &invoice("e3", "sub_a", "in_1", "void"), 110, GRACE)),
            vec![run("a1", AgentTarget::Run)]
        );
        assert_eq!(next_deadline(&b), None);
        assert!(commands(&apply(&mut b, &invoice("e4", "sub_a", "in_1", "failed"), 120, GRACE)).is_empty());
        // Overdue (send_invoice billing) suspends like a failed payment; uncollectible ends it.
        assert_eq!(
            commands(&apply(&mut b, &invoice("e5", "sub_a", "in_2", "overdue"), 130, GRACE)),
            vec![run("a1", AgentTarget::Off)]
        );
        assert_eq!(
            commands(&apply(&mut b, &invoice("e6", "sub_a", "in_2", "uncollectible"), 140, GRACE)),
            vec![run("a1", AgentTarget::Run)]
        );
        // An uncollectible invoice may still be paid: that changes nothing more.
        assert!(commands(&apply(&mut b, &invoice("e7", "sub_a", "in_2", "paid"), 150, GRACE)).is_empty());
        assert_eq!(b.subscriptions["sub_a"].invoices["in_2"], "paid");
    }

    #[test]
    fn a_suspension_by_status_alone_has_a_grace_period_that_ends() {
        let mut b = customer(1, 1);
        assert_eq!(
            commands(&apply(&mut b, &changed("e2", 2, "sub_a", "paused", 1), 100, GRACE)),
            vec![run("a1", AgentTarget::Off)]
        );
        assert_eq!(next_deadline(&b), Some(150));
        assert_eq!(
            commands(&apply(&mut b, &changed("e3", 3, "sub_a", "active", 1), 120, GRACE)),
            vec![run("a1", AgentTarget::Run)]
        );
        assert_eq!(next_deadline(&b), None);
        apply(&mut b, &changed("e4", 4, "sub_a", "unpaid", 1), 200, GRACE);
        assert_eq!(next_deadline(&b), Some(250));
        assert!(commands(&expire(&mut b, 249, GRACE)).is_empty());
        assert_eq!(commands(&expire(&mut b, 250, GRACE)), vec![run("a1", AgentTarget::Destroy)]);
        assert_eq!(next_deadline(&b), None);
        // The destroyed agent frees its seat; paying again makes the seat usable.
        release(&mut b, "a1", 260, GRACE);
        apply(&mut b, &changed("e5", 5, "sub_a", "active", 1), 270, GRACE);
        assert!(granted(&claim(&mut b, &claim_of("a9", None, 1), 280, GRACE), "a9"));
    }

    #[test]
    fn a_deleted_customer_ends_every_subscription() {
        let mut b = customer(2, 2);
        let gone = apply(&mut b, &ev("e9", 50, BillingEventKind::CustomerDeleted), 100, GRACE);
        assert_eq!(commands(&gone), vec![run("a1", AgentTarget::Destroy), run("a2", AgentTarget::Destroy)]);
        assert!(!b.entitled());
    }

    #[test]
    fn a_seat_reserved_for_an_agent_that_no_longer_exists_is_freed_for_the_next_claim() {
        let mut b = customer(1, 0);
        // `a1`'s checkout reserved the only seat, but `a1` was destroyed as a draft meanwhile.
        let probe = claim(&mut b, &claim_of("a2", None, 1), 10, GRACE);
        assert_eq!(probe, vec![Effect::Probe(vec!["a1".into()], claim_of("a2", None, 1))]);
        let after = claim_after_probe(&mut b, &claim_of("a2", None, 1), &["a1".into()], 10, GRACE);
        assert!(granted(&after, "a2"), "{after:?}");
        // A reservation whose agent exists is kept: the claim is refused.
        let mut b = customer(1, 0);
        let after = claim_after_probe(&mut b, &claim_of("a2", None, 1), &[], 10, GRACE);
        assert_eq!(denied_code(&after, "a2").as_deref(), Some(codes::NO_FREE_SEAT));
    }

    #[test]
    fn a_second_checkout_moves_a_waiting_agent_and_never_gives_a_running_one_a_second_seat() {
        let mut b = customer(1, 1);
        apply(&mut b, &invoice("e2", "sub_a", "in_1", "failed"), 10, GRACE);
        // `a2` claims on the unpaid subscription: parked.
        apply(&mut b, &checkout("e3", Some("sub_a"), "a2"), 11, GRACE);
        // (no free seat on sub_a: the claim is refused; a new checkout buys sub_b)
        apply(&mut b, &checkout("e4", Some("sub_b"), "a2"), 12, GRACE);
        apply(&mut b, &changed("e5", 13, "sub_b", "active", 1), 13, GRACE);
        let moved = claim(&mut b, &claim_of("a2", Some("sub_b"), 2), 14, GRACE);
        assert!(
            matches!(decision(&moved, "a2"), Some(SeatDecision::Granted { subscription_id }) if subscription_id == "sub_b")
        );
        // `a1` runs on sub_a; a checkout naming it on sub_c leaves sub_c's seat free.
        apply(&mut b, &checkout("e6", Some("sub_c"), "a1"), 15, GRACE);
        assert_eq!(b.seat_of("a1"), Some("sub_a"));
        assert_eq!(b.subscriptions["sub_c"].free_seats(), 1);
    }

    #[test]
    fn a_one_off_payment_buys_no_seat() {
        let mut b = CustomerBilling::default();
        apply(&mut b, &checkout("e1", None, "a1"), 0, GRACE);
        assert!(b.subscriptions.is_empty());
        let refused = claim(&mut b, &claim_of("a1", Some("cs_e1"), 1), 0, GRACE);
        assert_eq!(denied_code(&refused, "a1").as_deref(), Some(codes::NOT_A_SUBSCRIPTION));
    }

    #[test]
    fn reassertion_tells_every_agent_with_a_server_its_target_again() {
        let mut b = customer(2, 2);
        apply(&mut b, &changed("e2", 2, "sub_a", "active", 1), 10, GRACE);
        assert_eq!(reassert(&mut b).len(), 2);
        assert_eq!(
            commands(&reassert(&mut b)),
            vec![run("a1", AgentTarget::Run), run("a2", AgentTarget::Off)]
        );
    }

    #[test]
    fn an_agent_beyond_a_lowered_quantity_moves_to_a_free_seat_of_another_subscription() {
        let mut b = customer(2, 2);
        apply(&mut b, &checkout("e5", Some("sub_b"), "ax"), 0, GRACE);
        apply(&mut b, &changed("e6", 3, "sub_b", "active", 2), 0, GRACE);
        release(&mut b, "ax", 1, GRACE);
        // sub_a drops to one seat while sub_b has two free: a2 keeps running, on sub_b.
        let down = apply(&mut b, &changed("e7", 4, "sub_a", "active", 1), 10, GRACE);
        assert!(commands(&down).is_empty(), "{down:?}");
        assert_eq!(b.seat_of("a2"), Some("sub_b"));
    }

    #[test]
    fn stripes_list_is_authoritative_for_seats_and_statuses() {
        use slipway_proto::billing::{FetchedSubscription, ListedSubscription};
        // A legacy customer got one seat per agent; Stripe says one seat, and a second
        // subscription the old rules never saw.
        let mut b = customer(2, 2);
        let listed = |id: &str, status: &str, seats| ListedSubscription {
            id: id.into(),
            now: FetchedSubscription { status: status.into(), seats },
        };
        let effects =
            apply_listed(&mut b, &[listed("sub_a", "active", 1), listed("sub_z", "active", 1)], 20, GRACE);
        assert!(commands(&effects).is_empty(), "a2 moved to sub_z's seat: {effects:?}");
        assert_eq!((b.seat_of("a1"), b.seat_of("a2")), (Some("sub_a"), Some("sub_z")));
        // An event created before the listing is stale.
        assert!(commands(&apply(&mut b, &changed("e9", 15, "sub_a", "past_due", 1), 21, GRACE)).is_empty());
    }

    #[test]
    fn a_state_from_the_previous_rules_keeps_what_it_enforced() {
        let mut b = customer(1, 1);
        b.targets.clear();
        b.seats_taken = 0;
        let mut b = from_v2(b);
        assert_eq!(b.targets.get("a1"), Some(&AgentTarget::Run));
        assert!(converge(&mut b, 0, GRACE).is_empty());
    }
}
