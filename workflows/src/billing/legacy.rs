//! The billing rules of `Subscription` runs recorded before billing was tracked per
//! subscription: one snapshot per customer, pure functions over [`BillingState`]. Kept verbatim
//! so those histories replay, and so a run that started on them finishes on them (it continues
//! as new into [`super`]'s rules at its next continue-as-new, or at once when an agent claims a
//! seat or an operator sends `upgrade`). Do not change: a change here is a change of recorded
//! commands.
//!
//! Stripe delivers events at least once and in any order. These rules make the end state
//! independent of both:
//! - **Once**: an event id already applied is ignored (ids are remembered for the retention
//!   period, across continue-as-new).
//! - **Subscription status**: the snapshot from the event with the latest `created` wins; an older
//!   event is stale and ignored. Two events with the same `created` and different statuses are
//!   ambiguous, so the subscription is re-fetched from Stripe. Deletion is terminal.
//! - **Invoices**: `paid` is terminal per invoice, so a late `payment_failed` for an invoice that
//!   was since paid changes nothing. The customer is delinquent while any failed invoice is unpaid.
//! - **Effects**: the first failed invoice suspends the agents and starts the grace period; the
//!   last one paid resumes them; the grace period running out, or the subscription being deleted,
//!   destroys them.

use slipway_proto::billing::{
    BillingEvent, BillingEventKind, BillingState, Delinquency, SubscriptionSnapshot,
};

/// What the workflow must do after applying an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Power off every agent, keep data.
    SuspendAgents,
    /// Undo the suspension.
    ResumeAgents,
    /// Destroy every agent, with the reason.
    DestroyAgents(String),
    /// Ask Stripe for the subscription's current status.
    RefetchSubscription(String),
}

/// Apply one event. `now` is workflow time (Unix seconds); `grace_secs` the grace period.
pub fn apply(state: &mut BillingState, event: &BillingEvent, now: i64, grace_secs: u64) -> Vec<Effect> {
    if state.applied.contains_key(&event.event_id) {
        return Vec::new();
    }
    state.applied.insert(event.event_id.clone(), event.created);
    match &event.kind {
        BillingEventKind::CheckoutCompleted { session_id, subscription_id, user_id, paid, .. } => {
            if state.user_id.is_none() {
                state.user_id.clone_from(user_id);
            }
            // Provisional until a subscription event says more: `as_of: 0` loses to any of them.
            if *paid && state.subscription.is_none() && !state.ended {
                let id = subscription_id.clone().unwrap_or_else(|| session_id.clone());
                state.subscription = Some(SubscriptionSnapshot { id, status: "active".to_owned(), as_of: 0 });
            }
            Vec::new()
        }
        BillingEventKind::SubscriptionChanged { subscription_id, status, deleted, .. } => {
            if state.ended {
                return Vec::new();
            }
            if *deleted {
                state.ended = true;
                state.delinquency = None;
                state.subscription = Some(SubscriptionSnapshot {
                    id: subscription_id.clone(),
                    status: "canceled".to_owned(),
                    as_of: event.created,
                });
                return vec![Effect::DestroyAgents("the subscription was cancelled".to_owned())];
            }
            match &state.subscription {
                Some(s) if s.as_of > event.created => Vec::new(),
                Some(s) if s.as_of == event.created && s.status != *status => {
                    vec![Effect::RefetchSubscription(subscription_id.clone())]
                }
                _ => {
                    state.subscription = Some(SubscriptionSnapshot {
                        id: subscription_id.clone(),
                        status: status.clone(),
                        as_of: event.created,
                    });
                    Vec::new()
                }
            }
        }
        BillingEventKind::InvoicePaid { invoice_id, .. } => {
            state.invoices.insert(invoice_id.clone(), "paid".to_owned());
            let Some(d) = state.delinquency.as_mut() else { return Vec::new() };
            d.failed_invoices.remove(invoice_id);
            if d.failed_invoices.is_empty() && !d.expired {
                state.delinquency = None;
                return vec![Effect::ResumeAgents];
            }
            Vec::new()
        }
        // Kinds the release of these rules never received: a run on them continues as new into
        // the current rules before it applies one (see `Subscription`), so this is unreachable
        // in practice and changes nothing.
        BillingEventKind::InvoiceOverdue { .. }
        | BillingEventKind::InvoiceVoided { .. }
        | BillingEventKind::InvoiceUncollectible { .. }
        | BillingEventKind::CustomerDeleted => Vec::new(),
        BillingEventKind::InvoicePaymentFailed { invoice_id, .. } => {
            if state.invoices.get(invoice_id).is_some_and(|s| s == "paid") {
                return Vec::new();
            }
            state.invoices.insert(invoice_id.clone(), "failed".to_owned());
            if state.ended {
                return Vec::new();
            }
            match state.delinquency.as_mut() {
                Some(d) => {
                    d.failed_invoices.insert(invoice_id.clone());
                    Vec::new()
                }
                None => {
                    state.delinquency = Some(Delinquency {
                        failed_invoices: [invoice_id.clone()].into(),
                        deadline: now + grace_secs as i64,
                        expired: false,
                    });
                    vec![Effect::SuspendAgents]
                }
            }
        }
    }
}

/// Stripe's answer to a re-fetch: authoritative for the event time that caused it.
pub fn apply_refetched(
    state: &mut BillingState,
    subscription_id: &str,
    status: &str,
    as_of: i64,
) -> Vec<Effect> {
    if state.ended {
        return Vec::new();
    }
    if status == "canceled" {
        state.ended = true;
        state.delinquency = None;
    }
    state.subscription =
        Some(SubscriptionSnapshot { id: subscription_id.to_owned(), status: status.to_owned(), as_of });
    if state.ended {
        vec![Effect::DestroyAgents("the subscription was cancelled".to_owned())]
    } else {
        Vec::new()
    }
}

/// The grace period ran out.
pub fn expire(state: &mut BillingState) -> Vec<Effect> {
    match state.delinquency.as_mut() {
        Some(d) if !d.expired => {
            d.expired = true;
            vec![Effect::DestroyAgents("payment not received within the grace period".to_owned())]
        }
        _ => Vec::new(),
    }
}

/// Forget event ids older than the retention period (they can no longer be redelivered).
pub fn prune(state: &mut BillingState, now: i64, retention_secs: u64) {
    let horizon = now - retention_secs as i64;
    state.applied.retain(|_, created| *created >= horizon);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, created: i64, kind: BillingEventKind) -> BillingEvent {
        BillingEvent { event_id: id.into(), created, kind, handoff: None }
    }
    fn sub(id: &str, created: i64, status: &str) -> BillingEvent {
        ev(
            id,
            created,
            BillingEventKind::SubscriptionChanged {
                subscription_id: "sub_1".into(),
                status: status.into(),
                deleted: false,
                seats: None,
                agent_id: None,
            },
        )
    }
    fn failed(id: &str, created: i64, inv: &str) -> BillingEvent {
        ev(
            id,
            created,
            BillingEventKind::InvoicePaymentFailed { invoice_id: inv.into(), subscription_id: None },
        )
    }
    fn paid(id: &str, created: i64, inv: &str) -> BillingEvent {
        ev(id, created, BillingEventKind::InvoicePaid { invoice_id: inv.into(), subscription_id: None })
    }

    #[test]
    fn an_event_applies_once() {
        let mut s = BillingState::default();
        assert_eq!(apply(&mut s, &failed("e1", 10, "in_1"), 100, 50), vec![Effect::SuspendAgents]);
        assert_eq!(apply(&mut s, &failed("e1", 10, "in_1"), 200, 50), vec![]);
    }

    #[test]
    fn stale_subscription_updates_never_overwrite_newer_ones() {
        let mut s = BillingState::default();
        apply(&mut s, &sub("e2", 20, "past_due"), 0, 0);
        apply(&mut s, &sub("e1", 10, "active"), 0, 0);
        assert_eq!(s.subscription.as_ref().unwrap().status, "past_due");
    }

    #[test]
    fn ties_are_resolved_by_asking_stripe() {
        let mut s = BillingState::default();
        apply(&mut s, &sub("e1", 10, "active"), 0, 0);
        assert_eq!(
            apply(&mut s, &sub("e2", 10, "past_due"), 0, 0),
            vec![Effect::RefetchSubscription("sub_1".into())]
        );
        apply_refetched(&mut s, "sub_1", "past_due", 10);
        assert_eq!(s.subscription.unwrap().status, "past_due");
    }

    #[test]
    fn a_late_failure_for_a_paid_invoice_changes_nothing() {
        let mut s = BillingState::default();
        apply(&mut s, &paid("e2", 20, "in_1"), 0, 0);
        assert_eq!(apply(&mut s, &failed("e1", 10, "in_1"), 0, 50), vec![]);
        assert!(s.delinquency.is_none());
    }

    #[test]
    fn failure_suspends_payment_resumes_expiry_destroys() {
        let mut s = BillingState::default();
        assert_eq!(apply(&mut s, &failed("e1", 10, "in_1"), 100, 50), vec![Effect::SuspendAgents]);
        assert_eq!(s.delinquency.as_ref().unwrap().deadline, 150);
        assert_eq!(apply(&mut s, &paid("e2", 11, "in_1"), 120, 50), vec![Effect::ResumeAgents]);
        apply(&mut s, &failed("e3", 30, "in_2"), 200, 50);
        assert!(matches!(expire(&mut s).as_slice(), [Effect::DestroyAgents(_)]));
        assert_eq!(expire(&mut s), vec![]);
    }

    #[test]
    fn deletion_is_terminal_and_destroys() {
        let mut s = BillingState::default();
        let deleted = ev(
            "e9",
            90,
            BillingEventKind::SubscriptionChanged {
                subscription_id: "sub_1".into(),
                status: "canceled".into(),
                deleted: true,
                seats: None,
                agent_id: None,
            },
        );
        assert!(matches!(apply(&mut s, &deleted, 0, 0).as_slice(), [Effect::DestroyAgents(_)]));
        apply(&mut s, &sub("e10", 100, "active"), 0, 0);
        assert!(!s.entitled());
        assert_eq!(apply(&mut s, &failed("e11", 110, "in_1"), 0, 5), vec![]);
    }

    #[test]
    fn checkout_makes_the_customer_provisionally_entitled() {
        let mut s = BillingState::default();
        apply(
            &mut s,
            &ev(
                "e1",
                10,
                BillingEventKind::CheckoutCompleted {
                    session_id: "cs_1".into(),
                    subscription_id: Some("sub_1".into()),
                    user_id: Some("u1".into()),
                    agent_id: None,
                    paid: true,
                },
            ),
            0,
            0,
        );
        assert!(s.entitled());
        assert_eq!(s.user_id.as_deref(), Some("u1"));
        // Any real subscription event, even an older one, overrides the provisional snapshot.
        apply(&mut s, &sub("e0", 5, "incomplete"), 0, 0);
        assert!(!s.entitled());
    }

    #[test]
    fn pruning_forgets_only_old_ids() {
        let mut s = BillingState::default();
        apply(&mut s, &sub("old", 10, "active"), 0, 0);
        apply(&mut s, &sub("new", 1_000, "active"), 0, 0);
        prune(&mut s, 1_100, 500);
        assert!(s.applied.contains_key("new") && !s.applied.contains_key("old"));
    }
}
