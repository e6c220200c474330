//! The billing rules of `Subscription` runs recorded before desired-state billing (no
//! `billing-desired-state` marker): per-subscription state whose *changes of standing* become
//! commands. Kept verbatim so those histories replay, and so a run that started on them
//! finishes on them until it continues as new into [`super`]'s rules. Do not change: a change
//! here is a change of recorded commands.
//!
//! As pure functions over [`CustomerBilling`]: which Stripe event changes
//! which subscription, who holds which seat, and what must then happen to which agents.
//!
//! A Stripe customer may have several subscriptions over time (cancel, come back) or at once.
//! Each one is tracked on its own, and each agent holds a **seat** of exactly one subscription:
//! a subscription's `quantity` (summed over its licensed items) is its number of seats.
//!
//! Stripe delivers events at least once and in any order. These rules make the outcome
//! independent of both:
//! - **Once**: an event id already applied is ignored (ids are remembered for the retention
//!   period, across continue-as-new).
//! - **Status per subscription**: the event with the latest `created` wins; an older one is
//!   stale. Two events with the same `created` and different statuses are ambiguous, so the
//!   subscription is re-fetched from Stripe. Deletion is terminal *for that subscription*.
//! - **Invoices per subscription**: `paid` is terminal per invoice, so a late `payment_failed`
//!   for an invoice that was since paid changes nothing. The first unpaid failure starts a grace
//!   period; paying every failed invoice ends it, even after it ran out, and a later failure
//!   starts a new one.
//! - **Effects are differences of standing.** After every change each subscription's
//!   [`Standing`] is computed from its state and compared with the standing last enforced on its
//!   agents; only the difference becomes commands (suspend, resume, destroy, grant). Commands
//!   therefore follow the state, never the order in which events arrived, and a duplicate can
//!   never repeat one.
//! - **Seats**: a paid checkout reserves its subscription's seat for the agent it names; an API
//!   provisioning takes a free seat of a subscription in good standing. A seat is freed when its
//!   agent is destroyed. An agent is provisioned only once it holds a seat of a subscription in
//!   good standing; a claim on a subscription that is not (yet) in good standing is *parked* and
//!   granted when it is.

use super::codes;
use slipway_proto::billing::{
    BillingEvent, BillingEventKind, CustomerBilling, SeatAnswer, SeatClaim, SeatDecision, SeatHolder,
    Standing, SubscriptionState,
};

/// Status of a subscription known only from invoices (its own events have not arrived yet).
const UNKNOWN: &str = "unknown";

/// What the workflow must do after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Power these agents off, keep their data.
    Suspend(Vec<String>),
    /// Power these agents back on.
    Resume(Vec<String>),
    /// Destroy these agents, with the reason.
    Destroy(Vec<String>, String),
    /// Answer an agent's seat claim (or grant a parked one); the workflow fills in its customer.
    Answer(String, SeatAnswer),
    /// Ask Stripe for this subscription's current status.
    Refetch(String),
}

fn placeholder() -> SubscriptionState {
    SubscriptionState::new(UNKNOWN, -1, 1)
}

/// Apply one Stripe event. `now` is workflow time (Unix seconds); `grace_secs` the grace period.
pub fn apply(state: &mut CustomerBilling, event: &BillingEvent, now: i64, grace_secs: u64) -> Vec<Effect> {
    if state.applied.contains_key(&event.event_id) {
        return Vec::new();
    }
    state.applied.insert(event.event_id.clone(), event.created);
    let mut out = Vec::new();
    match &event.kind {
        BillingEventKind::CheckoutCompleted { session_id, subscription_id, user_id, agent_id, paid } => {
            if state.user_id.is_none() {
                state.user_id.clone_from(user_id);
            }
            if !*paid {
                return Vec::new();
            }
            // A one-off (payment mode) checkout has no subscription: its session is the seat.
            let id = subscription_id.clone().unwrap_or_else(|| session_id.clone());
            let sub = state.subscriptions.entry(id).or_insert_with(placeholder);
            if sub.as_of < 0 {
                // Provisional until a subscription event says more: `as_of: 0` loses to any of them.
                sub.status = "active".to_owned();
                sub.as_of = 0;
            }
            if let Some(agent) = agent_id {
                reserve(sub, agent);
            }
        }
        BillingEventKind::SubscriptionChanged { subscription_id, status, deleted, seats, agent_id } => {
            let sub = state.subscriptions.entry(subscription_id.clone()).or_insert_with(placeholder);
            if sub.ended {
                return Vec::new();
            }
            if *deleted {
                sub.ended = true;
                sub.status = "canceled".to_owned();
                if sub.as_of <= event.created {
                    sub.as_of = event.created;
                    sub.seats = seats.unwrap_or(sub.seats);
                }
            } else if sub.as_of > event.created {
                // Stale.
            } else if sub.as_of == event.created && sub.status != *status {
                out.push(Effect::Refetch(subscription_id.clone()));
            } else {
                sub.status.clone_from(status);
                sub.as_of = event.created;
                sub.seats = seats.unwrap_or(sub.seats);
            }
            if let Some(agent) = agent_id {
                reserve(sub, agent);
            }
        }
        BillingEventKind::InvoicePaid { invoice_id, subscription_id } => {
            let Some(sub) = subscription_id.as_ref() else {
                state.loose_invoices.insert(invoice_id.clone(), "paid".to_owned());
                return Vec::new();
            };
            let sub = state.subscriptions.entry(sub.clone()).or_insert_with(placeholder);
            sub.invoices.insert(invoice_id.clone(), "paid".to_owned());
            sub.failed_invoices.remove(invoice_id);
            if sub.failed_invoices.is_empty() {
                sub.grace_deadline = None;
                sub.lapsed = false;
            }
        }
        // Kinds the release of these rules never received: a run on them continues as new into
        // the current rules before it applies one (see `Subscription`), so this is unreachable
        // in practice and changes nothing.
        BillingEventKind::InvoiceOverdue { .. }
        | BillingEventKind::InvoiceVoided { .. }
        | BillingEventKind::InvoiceUncollectible { .. }
        | BillingEventKind::CustomerDeleted => return Vec::new(),
        BillingEventKind::InvoicePaymentFailed { invoice_id, subscription_id } => {
            let Some(sub) = subscription_id.as_ref() else {
                state.loose_invoices.entry(invoice_id.clone()).or_insert_with(|| "failed".to_owned());
                return Vec::new();
            };
            let sub = state.subscriptions.entry(sub.clone()).or_insert_with(placeholder);
            if sub.invoices.get(invoice_id).is_some_and(|s| s == "paid") {
                return Vec::new();
            }
            sub.invoices.insert(invoice_id.clone(), "failed".to_owned());
            // Recorded whatever the order (an ended subscription's debts are still debts); only
            // a subscription that can still be served gets a grace period.
            sub.failed_invoices.insert(invoice_id.clone());
            if !sub.ended {
                sub.grace_deadline.get_or_insert(now + grace_secs as i64);
            }
        }
    }
    out.extend(settle(state));
    out
}

/// The checkout paid for this agent's seat: reserve it, so no API provisioning can take it.
fn reserve(sub: &mut SubscriptionState, agent: &str) {
    if sub.standing() != Standing::Ended && !sub.agents.contains_key(agent) && sub.free_seats() > 0 {
        sub.agents.insert(agent.to_owned(), SeatHolder { parked: true, request: 0, since: 0 });
    }
}

/// Stripe's answer to a re-fetch: authoritative for the event time that caused it.
pub fn apply_refetched(
    state: &mut CustomerBilling,
    subscription_id: &str,
    status: &str,
    as_of: i64,
) -> Vec<Effect> {
    let sub = state.subscriptions.entry(subscription_id.to_owned()).or_insert_with(placeholder);
    if sub.ended {
        return Vec::new();
    }
    sub.status = status.to_owned();
    sub.as_of = sub.as_of.max(as_of);
    if status == "canceled" {
        sub.ended = true;
    }
    settle(state)
}

/// Grace periods that ended by `now` lapse.
pub fn expire(state: &mut CustomerBilling, now: i64) -> Vec<Effect> {
    for sub in state.subscriptions.values_mut() {
        if !sub.lapsed && !sub.failed_invoices.is_empty() && sub.grace_deadline.is_some_and(|d| d <= now) {
            sub.lapsed = true;
        }
    }
    settle(state)
}

/// The earliest grace period still running (the workflow's timer).
pub fn next_deadline(state: &CustomerBilling) -> Option<i64> {
    state
        .subscriptions
        .values()
        .filter(|s| !s.lapsed && !s.ended && !s.failed_invoices.is_empty())
        .filter_map(|s| s.grace_deadline)
        .min()
}

/// An agent asks for a seat before it provisions.
pub fn claim(state: &mut CustomerBilling, claim: &SeatClaim) -> Vec<Effect> {
    let answer = |decision| {
        vec![Effect::Answer(
            claim.agent_id.clone(),
            SeatAnswer { request: claim.request, customer_id: String::new(), decision },
        )]
    };
    let denied = |code: &str, reason: String| answer(SeatDecision::Denied { code: code.to_owned(), reason });
    if let Some(owner) = &state.user_id
        && *owner != claim.user_id
    {
        return denied(
            codes::PAYER_NOT_OWNER,
            "the agent's owner is not the paying customer's user".to_owned(),
        );
    }
    // Already holding a seat (reserved by its checkout, or claimed before): that seat decides.
    let held = state.seat_of(&claim.agent_id).map(str::to_owned);
    let chosen = match (held, &claim.subscription_id) {
        (Some(id), _) => id,
        (None, Some(id)) => {
            let Some(sub) = state.subscriptions.get(id) else {
                return denied(
                    codes::NO_ACTIVE_SUBSCRIPTION,
                    format!("subscription {id} is not known for this customer"),
                );
            };
            if sub.standing() == Standing::Ended {
                return denied(codes::SUBSCRIPTION_ENDED, format!("subscription {id} has ended"));
            }
            if sub.free_seats() == 0 {
                return denied(codes::NO_FREE_SEAT, format!("every seat of subscription {id} is taken"));
            }
            id.clone()
        }
        (None, None) => {
            let good = |s: &&SubscriptionState| s.standing() == Standing::Good;
            match state.subscriptions.iter().find(|(_, s)| good(s) && s.free_seats() > 0) {
                Some((id, _)) => id.clone(),
                None if state.subscriptions.values().any(|s| good(&s)) => {
                    return denied(
                        codes::NO_FREE_SEAT,
                        "every paid seat holds an agent; raise the subscription's quantity or destroy an agent".to_owned(),
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
    let Some(sub) = state.subscriptions.get_mut(&chosen) else { return Vec::new() };
    let standing = sub.standing();
    let parked = standing != Standing::Good;
    sub.agents.insert(claim.agent_id.clone(), SeatHolder { parked, request: claim.request, since: 0 });
    if parked {
        let reason = format!("subscription {chosen} is {}: waiting for payment", standing.as_str());
        answer(SeatDecision::Parked { subscription_id: chosen, reason })
    } else {
        answer(SeatDecision::Granted { subscription_id: chosen })
    }
}

/// An agent was destroyed: its seat is free.
pub fn release(state: &mut CustomerBilling, agent_id: &str) -> Vec<Effect> {
    for sub in state.subscriptions.values_mut() {
        sub.agents.remove(agent_id);
    }
    Vec::new()
}

/// An agent provisioned by an `Agent` run recorded before seats existed announced itself: it
/// takes a seat of the newest subscription not ended (or is destroyed if there is none).
pub fn attach_unclaimed(state: &mut CustomerBilling, agent_id: &str) -> Vec<Effect> {
    if state.seat_of(agent_id).is_some() {
        return Vec::new();
    }
    let newest = state
        .subscriptions
        .iter_mut()
        .filter(|(_, s)| s.standing() != Standing::Ended)
        .max_by_key(|(_, s)| s.as_of)
        .map(|(_, s)| s);
    match newest {
        Some(sub) => {
            sub.agents.insert(agent_id.to_owned(), SeatHolder { parked: false, request: 0, since: 0 });
            match sub.standing() {
                Standing::Good => Vec::new(),
                Standing::Suspended => vec![Effect::Suspend(vec![agent_id.to_owned()])],
                Standing::Lapsed | Standing::Ended => {
                    sub.agents.remove(agent_id);
                    vec![Effect::Destroy(vec![agent_id.to_owned()], "no paid seat".to_owned())]
                }
            }
        }
        None => vec![Effect::Destroy(vec![agent_id.to_owned()], "no paid seat".to_owned())],
    }
}

/// Turns every subscription's change of standing into commands to its own agents.
fn settle(state: &mut CustomerBilling) -> Vec<Effect> {
    let mut out = Vec::new();
    for (id, sub) in &mut state.subscriptions {
        let (from, to) = (sub.enforced, sub.standing());
        if from == to {
            continue;
        }
        sub.enforced = to;
        let running: Vec<String> =
            sub.agents.iter().filter(|(_, h)| !h.parked).map(|(a, _)| a.clone()).collect();
        match to {
            Standing::Good => {
                if from == Standing::Suspended && !running.is_empty() {
                    out.push(Effect::Resume(running));
                }
                for (agent, holder) in sub.agents.iter_mut().filter(|(_, h)| h.parked) {
                    holder.parked = false;
                    let decision = SeatDecision::Granted { subscription_id: id.clone() };
                    out.push(Effect::Answer(
                        agent.clone(),
                        SeatAnswer { request: holder.request, customer_id: String::new(), decision },
                    ));
                }
            }
            Standing::Suspended => {
                if from == Standing::Good && !running.is_empty() {
                    out.push(Effect::Suspend(running));
                }
            }
            Standing::Lapsed => {
                if !running.is_empty() {
                    out.push(Effect::Destroy(
                        running,
                        "payment not received within the grace period".to_owned(),
                    ));
                }
                // Each destroyed agent frees its seat itself (`release_seat`); a seat granted to
                // an agent that never got a server stays its own, waiting for payment again.
                for holder in sub.agents.values_mut() {
                    holder.parked = true;
                }
            }
            Standing::Ended => {
                if !running.is_empty() {
                    out.push(Effect::Destroy(running, "the subscription was cancelled".to_owned()));
                }
                for (agent, holder) in std::mem::take(&mut sub.agents).into_iter().filter(|(_, h)| h.parked) {
                    let decision = SeatDecision::Denied {
                        code: codes::SUBSCRIPTION_ENDED.to_owned(),
                        reason: format!("subscription {id} has ended"),
                    };
                    out.push(Effect::Answer(
                        agent,
                        SeatAnswer { request: holder.request, customer_id: String::new(), decision },
                    ));
                }
            }
        }
    }
    out
}

/// Forget event ids older than the retention period (they can no longer be redelivered).
pub fn prune(state: &mut CustomerBilling, now: i64, retention_secs: u64) {
    let horizon = now - retention_secs as i64;
    state.applied.retain(|_, created| *created >= horizon);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, created: i64, kind: BillingEventKind) -> BillingEvent {
        BillingEvent { event_id: id.into(), created, kind, handoff: None }
    }
    fn sub(id: &str, created: i64, s: &str, status: &str) -> BillingEvent {
        let kind = BillingEventKind::SubscriptionChanged {
            subscription_id: s.into(),
            status: status.into(),
            deleted: false,
            seats: Some(1),
            agent_id: None,
        };
        ev(id, created, kind)
    }
    fn deleted(id: &str, created: i64, s: &str) -> BillingEvent {
        let kind = BillingEventKind::SubscriptionChanged {
            subscription_id: s.into(),
            status: "canceled".into(),
            deleted: true,
            seats: Some(1),
            agent_id: None,
        };
        ev(id, created, kind)
    }
    fn failed(id: &str, s: &str, inv: &str) -> BillingEvent {
        ev(
            id,
            10,
            BillingEventKind::InvoicePaymentFailed {
                invoice_id: inv.into(),
                subscription_id: Some(s.into()),
            },
        )
    }
    fn paid(id: &str, s: &str, inv: &str) -> BillingEvent {
        ev(id, 11, BillingEventKind::InvoicePaid { invoice_id: inv.into(), subscription_id: Some(s.into()) })
    }
    fn checkout(id: &str, s: &str, agent: &str) -> BillingEvent {
        let kind = BillingEventKind::CheckoutCompleted {
            session_id: format!("cs_{id}"),
            subscription_id: Some(s.into()),
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
    fn granted(agent: &str, s: &str, request: u64) -> Effect {
        Effect::Answer(
            agent.into(),
            SeatAnswer {
                request,
                customer_id: String::new(),
                decision: SeatDecision::Granted { subscription_id: s.into() },
            },
        )
    }

    #[test]
    fn a_returning_customer_is_served_by_its_new_subscription() {
        let mut b = CustomerBilling::default();
        apply(&mut b, &checkout("e1", "sub_a", "a1"), 0, 0);
        assert_eq!(claim(&mut b, &claim_of("a1", Some("sub_a"), 1)), vec![granted("a1", "sub_a", 1)]);
        assert_eq!(
            apply(&mut b, &deleted("e2", 20, "sub_a"), 0, 0),
            vec![Effect::Destroy(vec!["a1".into()], "the subscription was cancelled".into())]
        );
        assert!(!b.entitled());
        apply(&mut b, &checkout("e3", "sub_b", "a2"), 0, 0);
        assert_eq!(claim(&mut b, &claim_of("a2", Some("sub_b"), 1)), vec![granted("a2", "sub_b", 1)]);
        assert!(b.entitled());
        assert_eq!(
            apply(&mut b, &failed("e4", "sub_b", "in_1"), 100, 50),
            vec![Effect::Suspend(vec!["a2".into()])]
        );
    }

    #[test]
    fn deleting_one_subscription_spares_the_other_ones_agents() {
        let mut b = CustomerBilling::default();
        apply(&mut b, &checkout("e1", "sub_a", "a1"), 0, 0);
        apply(&mut b, &checkout("e2", "sub_b", "a2"), 0, 0);
        claim(&mut b, &claim_of("a1", Some("sub_a"), 1));
        claim(&mut b, &claim_of("a2", Some("sub_b"), 1));
        let effects = apply(&mut b, &deleted("e3", 20, "sub_a"), 0, 0);
        assert_eq!(
            effects,
            vec![Effect::Destroy(vec!["a1".into()], "the subscription was cancelled".into())]
        );
        assert_eq!(b.seat_of("a2"), Some("sub_b"));
    }

    #[test]
    fn a_checkout_after_its_subscriptions_deletion_gets_no_seat() {
        let mut b = CustomerBilling::default();
        apply(&mut b, &deleted("e2", 20, "sub_a"), 0, 0);
        apply(&mut b, &checkout("e1", "sub_a", "a1"), 0, 0);
        assert!(matches!(
            claim(&mut b, &claim_of("a1", Some("sub_a"), 1)).as_slice(),
            [Effect::Answer(_, SeatAnswer { decision: SeatDecision::Denied { code, .. }, .. })] if code == codes::SUBSCRIPTION_ENDED
        ));
    }

    #[test]
    fn every_failure_after_a_cleared_one_starts_a_new_grace_period() {
        let mut b = CustomerBilling::default();
        apply(&mut b, &checkout("e1", "sub_a", "a1"), 0, 0);
        claim(&mut b, &claim_of("a1", Some("sub_a"), 1));
        apply(&mut b, &failed("e2", "sub_a", "in_1"), 100, 50);
        assert_eq!(next_deadline(&b), Some(150));
        assert!(
            matches!(expire(&mut b, 150).as_slice(), [Effect::Destroy(agents, _)] if agents == &["a1".to_owned()])
        );
        assert_eq!(expire(&mut b, 500), vec![]);
        // The destroyed agent frees its seat; paying after the grace period clears it.
        release(&mut b, "a1");
        apply(&mut b, &paid("e3", "sub_a", "in_1"), 200, 50);
        assert!(b.entitled());
        assert_eq!(b.free_seats(), 1);
        assert_eq!(claim(&mut b, &claim_of("a9", None, 4)), vec![granted("a9", "sub_a", 4)]);
        // A later failure suspends again, with a new deadline.
        assert_eq!(
            apply(&mut b, &failed("e4", "sub_a", "in_2"), 300, 50),
            vec![Effect::Suspend(vec!["a9".into()])]
        );
        assert_eq!(next_deadline(&b), Some(350));
    }

    #[test]
    fn delinquent_or_full_customers_get_no_new_seat() {
        let mut b = CustomerBilling::default();
        apply(&mut b, &checkout("e1", "sub_a", "a1"), 0, 0);
        claim(&mut b, &claim_of("a1", Some("sub_a"), 1));
        let code = |e: Vec<Effect>| match e.as_slice() {
            [Effect::Answer(_, SeatAnswer { decision: SeatDecision::Denied { code, .. }, .. })] => {
                code.clone()
            }
            other => format!("{other:?}"),
        };
        assert_eq!(code(claim(&mut b, &claim_of("a2", None, 1))), codes::NO_FREE_SEAT);
        apply(&mut b, &failed("e2", "sub_a", "in_1"), 100, 50);
        assert_eq!(code(claim(&mut b, &claim_of("a2", None, 2))), codes::NO_ACTIVE_SUBSCRIPTION);
        let stranger = SeatClaim { user_id: "u2".into(), ..claim_of("a3", None, 1) };
        assert_eq!(code(claim(&mut b, &stranger)), codes::PAYER_NOT_OWNER);
    }

    #[test]
    fn a_checkout_paid_while_past_due_is_parked_then_granted() {
        let mut b = CustomerBilling::default();
        apply(&mut b, &sub("e0", 1, "sub_a", "active"), 0, 0);
        apply(&mut b, &failed("e1", "sub_a", "in_1"), 100, 50);
        apply(&mut b, &checkout("e2", "sub_a", "a1"), 0, 0);
        assert!(matches!(
            claim(&mut b, &claim_of("a1", Some("sub_a"), 3)).as_slice(),
            [Effect::Answer(_, SeatAnswer { request: 3, decision: SeatDecision::Parked { .. }, .. })]
        ));
        assert_eq!(apply(&mut b, &paid("e3", "sub_a", "in_1"), 120, 50), vec![granted("a1", "sub_a", 3)]);
    }

    #[test]
    fn ties_are_resolved_by_asking_stripe_and_stale_events_are_ignored() {
        let mut b = CustomerBilling::default();
        apply(&mut b, &sub("e1", 10, "sub_a", "active"), 0, 0);
        assert_eq!(
            apply(&mut b, &sub("e2", 10, "sub_a", "past_due"), 0, 0),
            vec![Effect::Refetch("sub_a".into())]
        );
        apply_refetched(&mut b, "sub_a", "past_due", 10);
        assert_eq!(b.subscriptions["sub_a"].status, "past_due");
        apply(&mut b, &sub("e3", 5, "sub_a", "active"), 0, 0);
        assert_eq!(b.subscriptions["sub_a"].status, "past_due");
    }

    #[test]
    fn legacy_state_becomes_one_subscription_holding_every_agent() {
        use slipway_proto::billing::{BillingState, Delinquency, SubscriptionSnapshot};
        let legacy = BillingState {
            user_id: Some("u1".into()),
            subscription: Some(SubscriptionSnapshot {
                id: "sub_a".into(),
                status: "active".into(),
                as_of: 7,
            }),
            agents: ["a1".to_owned(), "a2".to_owned()].into(),
            delinquency: Some(Delinquency {
                failed_invoices: ["in_1".to_owned()].into(),
                deadline: 99,
                expired: false,
            }),
            ..BillingState::default()
        };
        let b = CustomerBilling::from_legacy(&legacy);
        let s = &b.subscriptions["sub_a"];
        assert_eq!(
            (s.seats, s.agents.len(), s.grace_deadline, s.enforced),
            (2, 2, Some(99), Standing::Suspended)
        );
    }
}
