//! Property tests of the billing rules against a reference model.
//!
//! A customer has 1–3 subscriptions. Each has a story of Stripe events (its checkout naming
//! its agent, `customer.subscription.created`, two updates with random statuses, a deletion,
//! two invoices that fail and are paid); a case delivers a random selection of them, in random
//! order, each any number of times, interleaved with grace periods running out and API
//! provisionings and destructions of extra agents.
//!
//! **System under test**: [`slipway_workflows::billing`] (what the `Subscription` workflow
//! applies), plus the few lines of agent behaviour the `Agent` workflow adds (provision when a
//! seat is granted, power off on suspend, on on resume, destroy and free the seat), as in
//! production: a checkout delivery applies the event, then the agent claims its seat once (the
//! starter's update id dedupes redeliveries).
//!
//! **Reference model**: derived from the *set* of distinct events seen so far, not their order:
//! a subscription is in good standing iff it is not deleted, its newest status event says
//! `active` or `trialing` (a paid checkout counts as `active` until one arrives), every failed
//! invoice was paid, and no grace period ran out since the last one was. A checkout's agent has
//! a server while that holds, keeps it powered off while it does not, and loses it for good on
//! deletion or an expired grace period.
//!
//! **Checked after every step**: each checkout agent is exactly where the model says; every
//! agent with a running server holds a seat of a subscription in good standing; no subscription
//! has more agents with servers than seats.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use slipway_proto::billing::{BillingEvent, BillingEventKind, CustomerBilling, SeatClaim, SeatDecision};
use slipway_workflows::billing::{self, Effect};

const GRACE: u64 = 100;
const USER: &str = "u1";

fn sub_id(i: usize) -> String {
    format!("sub_{i}")
}
fn checkout_agent(i: usize) -> String {
    format!("ag-checkout-{i}")
}
fn api_agent(j: usize) -> String {
    format!("ag-api-{j}")
}

/// One subscription's story, as generated.
#[derive(Debug, Clone)]
struct Story {
    seats: u32,
    update_a: &'static str,
    update_b: &'static str,
}

/// Events of a story, by index: 0 checkout, 1 created, 2–3 updated, 4 deleted, 5–6 invoice
/// failed, 7–8 invoice paid.
const EVENTS_PER_SUB: usize = 9;

fn story_event(i: usize, story: &Story, k: usize) -> BillingEvent {
    let sub = sub_id(i);
    let changed = |status: &str, deleted: bool| BillingEventKind::SubscriptionChanged {
        subscription_id: sub.clone(),
        status: status.to_owned(),
        deleted,
        seats: Some(story.seats),
        agent_id: Some(checkout_agent(i)),
    };
    let (created, kind) = match k {
        0 => (
            100,
            BillingEventKind::CheckoutCompleted {
                session_id: format!("cs_{i}"),
                subscription_id: Some(sub.clone()),
                user_id: Some(USER.to_owned()),
                agent_id: Some(checkout_agent(i)),
                paid: true,
            },
        ),
        1 => (100, changed("active", false)),
        2 => (200, changed(story.update_a, false)),
        3 => (300, changed(story.update_b, false)),
        4 => (400, changed("canceled", true)),
        5 | 6 => (
            150 + k as i64,
            BillingEventKind::InvoicePaymentFailed {
                invoice_id: format!("in_{i}_{}", k - 5),
                subscription_id: Some(sub.clone()),
            },
        ),
        _ => (
            160 + k as i64,
            BillingEventKind::InvoicePaid {
                invoice_id: format!("in_{i}_{}", k - 7),
                subscription_id: Some(sub.clone()),
            },
        ),
    };
    BillingEvent { event_id: format!("evt_{i}_{k}"), created, kind }
}

#[derive(Debug, Clone)]
enum Step {
    /// Stripe delivers event `k` of subscription `i` (again, perhaps).
    Deliver(usize, usize),
    /// Every grace period running now ends.
    Expire,
    /// The user provisions API agent `j` (any free seat).
    ApiProvision(usize),
    /// The user destroys API agent `j`.
    ApiDestroy(usize),
}

fn step(subs: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..subs, 0..EVENTS_PER_SUB).prop_map(|(i, k)| Step::Deliver(i, k)),
        1 => Just(Step::Expire),
        1 => (0..3usize).prop_map(Step::ApiProvision),
        1 => (0..3usize).prop_map(Step::ApiDestroy),
    ]
}

fn status() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["active", "trialing", "past_due", "unpaid", "incomplete", "paused"])
}

fn scenario() -> impl Strategy<Value = (Vec<Story>, Vec<Step>)> {
    (1..=3usize).prop_flat_map(|subs| {
        let stories = prop::collection::vec(
            (1..=3u32, status(), status()).prop_map(|(seats, update_a, update_b)| Story {
                seats,
                update_a,
                update_b,
            }),
            subs,
        );
        (stories, prop::collection::vec(step(subs), 1..80))
    })
}

/// What an agent's server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    None,
    Running,
    Off,
    Destroyed,
}

/// The system: the billing rules plus the agents' reactions, as the two workflows run them.
struct System {
    billing: CustomerBilling,
    agents: BTreeMap<String, Server>,
    now: i64,
    next_request: u64,
    /// Checkout events whose agent already claimed (the starter's update id dedupes).
    claimed: BTreeSet<String>,
}

impl System {
    fn new() -> Self {
        Self {
            billing: CustomerBilling::default(),
            agents: BTreeMap::new(),
            now: 1_000,
            next_request: 0,
            claimed: BTreeSet::new(),
        }
    }

    fn enforce(&mut self, effects: Vec<Effect>) {
        let mut queue = effects;
        while !queue.is_empty() {
            let mut more = Vec::new();
            for effect in queue {
                match effect {
                    Effect::Answer(agent, answer) => {
                        if let (SeatDecision::Granted { .. }, Some(server)) =
                            (&answer.decision, self.agents.get_mut(&agent))
                            && *server == Server::None
                        {
                            *server = Server::Running;
                        }
                    }
                    Effect::Suspend(agents) => {
                        for a in agents {
                            if let Some(s @ Server::Running) = self.agents.get_mut(&a) {
                                *s = Server::Off;
                            }
                        }
                    }
                    Effect::Resume(agents) => {
                        for a in agents {
                            if let Some(s @ Server::Off) = self.agents.get_mut(&a) {
                                *s = Server::Running;
                            }
                        }
                    }
                    Effect::Destroy(agents, _) => {
                        for a in agents {
                            if let Some(s) = self.agents.get_mut(&a)
                                && *s != Server::Destroyed
                            {
                                *s = Server::Destroyed;
                                more.extend(billing::release(&mut self.billing, &a));
                            }
                        }
                    }
                    Effect::Refetch(_) => panic!("no ties are generated"),
                }
            }
            queue = more;
        }
    }

    fn claim(&mut self, agent: &str, subscription: Option<String>) {
        self.next_request += 1;
        let claim = SeatClaim {
            agent_id: agent.to_owned(),
            user_id: USER.to_owned(),
            subscription_id: subscription,
            request: self.next_request,
        };
        let effects = billing::claim(&mut self.billing, &claim);
        self.enforce(effects);
    }

    fn run(&mut self, step: &Step, stories: &[Story]) {
        match *step {
            Step::Deliver(i, k) => {
                let event = story_event(i, &stories[i], k);
                let effects = billing::apply(&mut self.billing, &event, self.now, GRACE);
                self.enforce(effects);
                // A paid checkout naming an agent: update-with-start of the agent, which claims
                // its seat once per event id.
                if k == 0 && self.claimed.insert(event.event_id.clone()) {
                    self.agents.entry(checkout_agent(i)).or_insert(Server::None);
                    if self.agents[&checkout_agent(i)] == Server::None {
                        self.claim(&checkout_agent(i), Some(sub_id(i)));
                    }
                }
            }
            Step::Expire => {
                self.now += GRACE as i64 + 1;
                let effects = billing::expire(&mut self.billing, self.now);
                self.enforce(effects);
            }
            Step::ApiProvision(j) => {
                let agent = api_agent(j);
                match self.agents.get(&agent) {
                    None | Some(Server::None) => {
                        self.agents.insert(agent.clone(), Server::None);
                        self.claim(&agent, None);
                    }
                    _ => {}
                }
            }
            Step::ApiDestroy(j) => {
                let agent = api_agent(j);
                if let Some(s) = self.agents.get_mut(&agent)
                    && *s != Server::Destroyed
                {
                    *s = Server::Destroyed;
                    let effects = billing::release(&mut self.billing, &agent);
                    self.enforce(effects);
                }
            }
        }
    }
}

/// The reference model: per subscription, from the set of distinct events seen.
#[derive(Default)]
struct Reference {
    seen: BTreeSet<(usize, usize)>,
    lapsed: BTreeSet<usize>,
    servers: BTreeMap<usize, Server>,
}

impl Reference {
    fn status(&self, i: usize, story: &Story) -> Option<&'static str> {
        if self.seen.contains(&(i, 4)) {
            return Some("canceled");
        }
        [(3, story.update_b), (2, story.update_a), (1, "active"), (0, "active")]
            .into_iter()
            .find(|(k, _)| self.seen.contains(&(i, *k)))
            .map(|(_, s)| s)
    }

    fn unpaid(&self, i: usize) -> bool {
        (0..2).any(|n| self.seen.contains(&(i, 5 + n)) && !self.seen.contains(&(i, 7 + n)))
    }

    fn good(&self, i: usize, story: &Story) -> bool {
        matches!(self.status(i, story), Some("active" | "trialing"))
            && !self.unpaid(i)
            && !self.lapsed.contains(&i)
    }

    fn run(&mut self, step: &Step, stories: &[Story]) {
        match *step {
            Step::Deliver(i, k) => {
                self.seen.insert((i, k));
            }
            Step::Expire => {
                for i in 0..stories.len() {
                    if self.unpaid(i) && !self.seen.contains(&(i, 4)) {
                        self.lapsed.insert(i);
                    }
                }
            }
            Step::ApiProvision(_) | Step::ApiDestroy(_) => {}
        }
        for (i, story) in stories.iter().enumerate() {
            if !self.unpaid(i) {
                self.lapsed.remove(&i);
            }
            let server = self.servers.get(&i).copied().unwrap_or(Server::None);
            let checkout = self.seen.contains(&(i, 0));
            let next = match server {
                _ if !checkout => Server::None,
                Server::Destroyed => Server::Destroyed,
                s if self.seen.contains(&(i, 4)) || self.lapsed.contains(&i) => {
                    if s == Server::None {
                        Server::None
                    } else {
                        Server::Destroyed
                    }
                }
                _ if self.good(i, story) => Server::Running,
                Server::Running | Server::Off => Server::Off,
                Server::None => Server::None,
            };
            self.servers.insert(i, next);
        }
    }
}

fn check(system: &System, reference: &Reference, stories: &[Story]) -> Result<(), TestCaseError> {
    for (i, story) in stories.iter().enumerate() {
        let expected = reference.servers.get(&i).copied().unwrap_or(Server::None);
        let actual = system.agents.get(&checkout_agent(i)).copied().unwrap_or(Server::None);
        prop_assert_eq!(
            actual,
            expected,
            "checkout agent of {} (good: {})",
            sub_id(i),
            reference.good(i, story)
        );
    }
    for (agent, server) in &system.agents {
        if *server == Server::Running {
            let sub = system.billing.seat_of(agent);
            let i = sub.and_then(|s| s.strip_prefix("sub_")).and_then(|n| n.parse::<usize>().ok());
            prop_assert!(
                i.is_some_and(|i| reference.good(i, &stories[i])),
                "{} runs without a seat in good standing (seat: {:?})",
                agent,
                sub
            );
        }
    }
    for (i, story) in stories.iter().enumerate() {
        let with_server = system
            .agents
            .iter()
            .filter(|(a, s)| {
                matches!(s, Server::Running | Server::Off)
                    && system.billing.seat_of(a) == Some(sub_id(i).as_str())
            })
            .count();
        prop_assert!(
            with_server <= story.seats as usize,
            "{} has {} servers for {} seats",
            sub_id(i),
            with_server,
            story.seats
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_interleaving_of_one_customers_events_matches_the_reference_model((stories, steps) in scenario()) {
        let mut system = System::new();
        let mut reference = Reference::default();
        for step in &steps {
            system.run(step, &stories);
            reference.run(step, &stories);
            check(&system, &reference, &stories)?;
        }
        // What Stripe said does not depend on the order it arrived in: the same events, each
        // once and in the order Stripe created them, leave every subscription the same.
        let mut in_order = System::new();
        let mut seen: Vec<(usize, usize)> = reference.seen.iter().copied().collect();
        seen.sort_by_key(|(i, k)| (story_event(*i, &stories[*i], *k).created, *i, *k));
        for (i, k) in &seen {
            in_order.run(&Step::Deliver(*i, *k), &stories);
        }
        let facts = |b: &CustomerBilling| -> Vec<_> {
            b.subscriptions
                .iter()
                .map(|(id, s)| (id.clone(), s.status.clone(), s.ended, s.seats, s.invoices.clone(), s.failed_invoices.clone()))
                .collect()
        };
        prop_assert_eq!(facts(&system.billing), facts(&in_order.billing));
        // Delivering everything again, in order, changes nothing (exactly one effect).
        let before = system.agents.clone();
        for i in 0..stories.len() {
            for k in 0..EVENTS_PER_SUB {
                if reference.seen.contains(&(i, k)) {
                    system.run(&Step::Deliver(i, k), &stories);
                }
            }
        }
        prop_assert_eq!(&system.agents, &before);
    }
}
