//! An agent's live progress for apps: what `GET /api/agents/{id}/events` streams.
//!
//! **Where the events come from.** The `Agent` workflow keeps an audit trail (every status
//! change, in order) and its `ProvisionAgent` saga a log of step changes; both are query state,
//! read without touching the histories. Nothing is pushed out of a workflow (a workflow that
//! called out at every change would add history events and an activity per change), so the
//! starter reads: one [`Feed`] per watched agent polls both queries every `events_poll`
//! (100 ms) while at least one stream listens, and every stream of that agent, on any
//! connection, takes its events from the same reads. A hundred dashboards on one agent cost one
//! query per interval; an agent nobody watches costs nothing.
//!
//! **Why resuming has no gaps and no repeats.** An event's id is a [`Cursor`]: how much of the
//! audit trail and of the saga run's log the client has, and which run. It is derived from the
//! workflow's own state, not from a starter's memory, so a reconnect with `Last-Event-ID` to
//! any starter continues exactly after the last event received ([`events_since`], pure and
//! unit-tested below).
//!
//! **Why streams are counted per user.** A stream is cheap for the starter (a task, a
//! receiver) but holds a connection until the client goes; a script opening streams in a loop
//! would hold them all. Each user may hold `events_max_streams` at once on a starter
//! ([`Feeds::admit`]); one more is refused with 429 `TOO_MANY_STREAMS` before anything is read,
//! and a stream's place is given back when its connection is dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use slipway_proto::model::{AgentRecord, AgentStatus, ProvisioningProgress, StepChange};
use tokio::sync::watch;

use crate::{
    temporal::{Gateway, GatewayError},
    views::{AgentEvent, EndEvent, StateEvent, StepEvent},
};

/// What a stream has received: `<audit entries>.<step changes>.<saga run id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Audit entries received.
    pub audit: u32,
    /// Step changes of `run` received.
    pub steps: u32,
    /// The saga run those step changes belong to (empty before any).
    pub run: String,
}

impl Cursor {
    /// Parses a `Last-Event-ID`; `None` if it is not one of ours.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, '.');
        let audit = parts.next()?.parse().ok()?;
        let steps = parts.next()?.parse().ok()?;
        let run = parts.next()?.to_owned();
        let run_ok = run.len() <= 64 && run.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        run_ok.then_some(Self { audit, steps, run })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.audit, self.steps, self.run)
    }
}

/// One read of an agent: its record, the progress of its latest saga run, whether it closed.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The agent.
    pub agent: AgentRecord,
    /// Its latest provisioning run's progress, once read.
    pub progress: Option<ProvisioningProgress>,
    /// The agent's workflow has closed: nothing more will happen.
    pub closed: bool,
}

/// The events a stream at `cursor` has not received yet, each with the cursor after it, in
/// order: status changes up to the one that started the current saga run, its steps, then the
/// changes they led to (`active`, `failed`, …); each list in its own order.
pub fn events_since(cursor: &Cursor, snap: &Snapshot) -> Vec<(Cursor, AgentEvent)> {
    let agent = &snap.agent;
    let run = agent.provisioning_run_id.clone().unwrap_or_default();
    // A stream that knew another run has none of this one's changes.
    let steps_had = if cursor.run == run { cursor.steps } else { 0 };
    let audit: Vec<_> = agent.audit.iter().enumerate().skip(cursor.audit as usize).collect();
    let changes: Vec<&StepChange> =
        snap.progress.iter().flat_map(|p| p.changes.iter()).filter(|c| c.seq > steps_had).collect();
    let mut at = Cursor { audit: cursor.audit, steps: steps_had, run: run.clone() };
    let mut out = Vec::new();
    // The current run's steps follow the change that started it (the latest to
    // `provisioning`) and precede every later one.
    let started = agent.audit.iter().rposition(|e| e.to == AgentStatus::Provisioning);
    let (before, after): (Vec<_>, Vec<_>) = audit.into_iter().partition(|(i, _)| Some(*i) <= started);
    let state = |at: &mut Cursor, i: usize| {
        let e = &agent.audit[i];
        at.audit = i as u32 + 1;
        (
            at.clone(),
            AgentEvent::State(StateEvent {
                agent_id: agent.agent_id.clone(),
                seq: i as u32 + 1,
                from: e.from,
                to: e.to,
                actor: e.actor.clone(),
                reason: e.reason.clone(),
                at: e.at.clone(),
            }),
        )
    };
    for (i, _) in before {
        out.push(state(&mut at, i));
    }
    for c in changes {
        at.steps = c.seq;
        out.push((
            at.clone(),
            AgentEvent::Step(StepEvent {
                agent_id: agent.agent_id.clone(),
                provisioning_workflow_id: agent.provisioning_workflow_id.clone().unwrap_or_default(),
                provisioning_run_id: run.clone(),
                seq: c.seq,
                step: c.step.clone(),
                state: c.state,
                detail: c.detail.clone(),
                at: c.at.clone(),
            }),
        ));
    }
    for (i, _) in after {
        out.push(state(&mut at, i));
    }
    if snap.closed {
        out.push((
            at.clone(),
            AgentEvent::End(EndEvent { agent_id: agent.agent_id.clone(), status: agent.status }),
        ));
    }
    out
}

/// A stream's events: every new read of the feed, diffed against what the stream has sent,
/// each with its id; it ends after `end` or when the feed stops (the agent is gone).
pub fn follow(
    feed: FeedReceiver,
    cursor: Cursor,
) -> impl futures::Stream<Item = (Cursor, AgentEvent)> + Send {
    use futures::StreamExt;
    futures::stream::unfold((feed, cursor, false), |(mut feed, mut cursor, ended)| async move {
        if ended {
            return None;
        }
        loop {
            let snap = feed.borrow_and_update().clone();
            if let Some(snap) = snap {
                let batch = events_since(&cursor, &snap);
                if let Some((last, _)) = batch.last() {
                    cursor = last.clone();
                    let ended = batch.iter().any(|(_, e)| matches!(e, AgentEvent::End(_)));
                    return Some((futures::stream::iter(batch), (feed, cursor, ended)));
                }
            }
            if feed.changed().await.is_err() {
                return None;
            }
        }
    })
    .flatten()
}

impl super::AgentService {
    /// The caller's agent's events, after `last_event_id` if given: 400 `INVALID_EVENT_ID` for
    /// an id this stream never sent, 404 for another user's agent, as every other call, 429
    /// `TOO_MANY_STREAMS` when the caller already holds `events_max_streams` streams here.
    pub async fn watch(
        &self,
        user: &crate::auth::Claims,
        agent_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<impl futures::Stream<Item = (Cursor, AgentEvent)> + Send + use<>, super::ServiceError> {
        let cursor = match last_event_id.filter(|id| !id.is_empty()) {
            None => Cursor::default(),
            Some(id) => Cursor::parse(id).ok_or_else(|| {
                super::ServiceError::new(
                    super::Kind::Invalid,
                    "INVALID_EVENT_ID",
                    "the last event id is not an event id of this stream",
                )
            })?,
        };
        self.get(user, agent_id).await?;
        let app = self.app();
        let place = app.feeds.admit(&user.sub, app.settings.events_max_streams).ok_or_else(|| {
            super::ServiceError::new(
                super::Kind::Exhausted,
                "TOO_MANY_STREAMS",
                format!(
                    "at most {} event streams per user at once; close one first",
                    app.settings.events_max_streams
                ),
            )
        })?;
        let feed = app.feeds.subscribe(&app.gateway, agent_id, app.settings.events_poll);
        // The place is held as long as the stream is, and given back when it is dropped.
        use futures::StreamExt;
        Ok(follow(feed, cursor).map(move |e| {
            let _held = &place;
            e
        }))
    }
}

/// The latest read of one agent, shared by every stream watching it.
pub type FeedReceiver = watch::Receiver<Option<Arc<Snapshot>>>;

/// One poller per watched agent, and the streams each user holds open.
#[derive(Default)]
pub struct Feeds {
    feeds: Mutex<HashMap<String, watch::Sender<Option<Arc<Snapshot>>>>>,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream of a user; dropping it gives the place back.
pub struct StreamPlace {
    open: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl Feeds {
    /// A place for one more stream of `user`, if they hold fewer than `max`.
    pub fn admit(&self, user: &str, max: usize) -> Option<StreamPlace> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(user.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(StreamPlace { open: self.open.clone(), user: user.to_owned() })
    }

    /// The agent's feed: the running poller's, or a new one (which stops once nobody listens).
    pub fn subscribe(self: &Arc<Self>, gateway: &Gateway, agent_id: &str, every: Duration) -> FeedReceiver {
        let mut feeds = self.feeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = feeds.get(agent_id)
            && !tx.is_closed()
        {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        feeds.insert(agent_id.to_owned(), tx.clone());
        tokio::spawn(
            Feed { gateway: gateway.clone(), agent_id: agent_id.to_owned(), every }.run(tx, self.clone()),
        );
        rx
    }

    /// Forgets `tx` if it is still the agent's feed.
    fn remove(&self, agent_id: &str, tx: &watch::Sender<Option<Arc<Snapshot>>>) {
        let mut feeds = self.feeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if feeds.get(agent_id).is_some_and(|t| t.same_channel(tx)) {
            feeds.remove(agent_id);
        }
    }
}

/// The poller of one agent.
struct Feed {
    gateway: Gateway,
    agent_id: String,
    every: Duration,
}

impl Feed {
    async fn run(self, tx: watch::Sender<Option<Arc<Snapshot>>>, feeds: Arc<Feeds>) {
        let mut last: Option<Arc<Snapshot>> = None;
        let mut ticker = tokio::time::interval(self.every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if tx.is_closed() {
                break;
            }
            let snap = match self.read(last.as_deref()).await {
                Ok(Some(snap)) => snap,
                Ok(None) => continue,
                // Gone before its first read: dropping the feed ends its streams.
                Err(Gone) => break,
            };
            let closed = snap.closed;
            let snap = Arc::new(snap);
            last = Some(snap.clone());
            tx.send_replace(Some(snap));
            if closed {
                break;
            }
        }
        feeds.remove(&self.agent_id, &tx);
    }

    /// One read; `None` when Temporal did not answer (the next tick tries again, the streams
    /// keep what they had).
    async fn read(&self, last: Option<&Snapshot>) -> Result<Option<Snapshot>, Gone> {
        let (agent, closed) = match self.gateway.agent(&self.agent_id).await {
            // Destroyed is terminal (its workflow closes right after).
            Ok(agent) => {
                let closed = agent.status == AgentStatus::Destroyed;
                (agent, closed)
            }
            // Destroyed: the workflow closed; the last read is the final state.
            Err(GatewayError::NotFound | GatewayError::Closed) => {
                let mut snap = last.ok_or(Gone)?.clone();
                snap.closed = true;
                return Ok(Some(snap));
            }
            Err(GatewayError::Unavailable(detail)) => {
                tracing::debug!(agent_id = %self.agent_id, %detail, "event feed: Temporal did not answer");
                return Ok(None);
            }
        };
        let run = agent.provisioning_run_id.clone();
        // The saga is read while it can change: during provisioning, and once more after the
        // agent leaves it (the run's last steps), or when a new run appears.
        let needed = agent.status == AgentStatus::Provisioning
            || last.is_none_or(|l| {
                l.progress.is_none() || l.agent.status != agent.status || l.agent.provisioning_run_id != run
            });
        let progress = match (&agent.provisioning_workflow_id, &run) {
            (Some(wf), Some(r)) if needed => match self.gateway.provisioning_progress(wf, r).await {
                Ok(p) => Some(p),
                Err(GatewayError::Unavailable(_)) => return Ok(None),
                Err(_) => None,
            },
            (Some(_), Some(_)) => last.and_then(|l| l.progress.clone()),
            _ => None,
        };
        Ok(Some(Snapshot { agent, progress, closed }))
    }
}

/// The agent's workflow is gone and was never read.
struct Gone;

#[cfg(test)]
mod tests {
    use slipway_proto::model::{AuditEntry, StepState};

    use super::*;

    #[test]
    fn each_user_holds_at_most_the_cap_and_a_dropped_stream_gives_its_place_back() {
        let feeds = Feeds::default();
        let mut held: Vec<_> = (0..3).map(|_| feeds.admit("u1", 3).expect("under the cap")).collect();
        assert!(feeds.admit("u1", 3).is_none(), "a fourth stream of u1");
        let other = feeds.admit("u2", 3);
        assert!(other.is_some(), "another user's streams are counted apart");
        drop(held.pop());
        let again = feeds.admit("u1", 3);
        assert!(again.is_some(), "the dropped stream's place");
        assert!(feeds.admit("u1", 3).is_none());
        drop((again, other));
        assert_eq!(feeds.open.lock().unwrap().get("u2"), None, "a user with no streams is forgotten");
    }

    fn entry(from: AgentStatus, to: AgentStatus) -> AuditEntry {
        AuditEntry { at: "2026-12-07T10:00:00Z".into(), actor: "saga".into(), from, to, reason: "r".into() }
    }

    fn change(seq: u32, step: &str, state: StepState) -> StepChange {
        StepChange {
            seq,
            step: step.into(),
            state,
            detail: String::new(),
            at: "2026-12-07T10:00:00.100Z".into(),
        }
    }

    fn snapshot(audit: Vec<AuditEntry>, changes: Vec<StepChange>, run: &str) -> Snapshot {
        let mut agent = AgentRecord::draft("ag-1", "u1", "fsn1");
        agent.status = audit.last().map_or(AgentStatus::Draft, |e| e.to);
        agent.audit = audit;
        agent.provisioning_workflow_id = Some("provision-u1".into());
        agent.provisioning_run_id = Some(run.into());
        let progress =
            ProvisioningProgress { agent_id: "ag-1".into(), steps: vec![], failure: None, changes };
        Snapshot { agent, progress: Some(progress), closed: false }
    }

    fn names(events: &[(Cursor, AgentEvent)]) -> Vec<String> {
        events
            .iter()
            .map(|(_, e)| match e {
                AgentEvent::State(s) => format!("state:{}", s.to.as_str()),
                AgentEvent::Step(s) => format!("step:{}:{}", s.step, s.state.as_str()),
                AgentEvent::End(_) => "end".into(),
                AgentEvent::Heartbeat(_) => "heartbeat".into(),
            })
            .collect()
    }

    use AgentStatus::{Active, Draft, Provisioning};

    #[test]
    fn a_start_comes_before_its_steps_and_the_outcome_after() {
        let snap = snapshot(
            vec![entry(Draft, Provisioning), entry(Provisioning, Active)],
            vec![change(1, "tailscale_key", StepState::Running), change(2, "tailscale_key", StepState::Done)],
            "run-a",
        );
        let events = events_since(&Cursor::default(), &snap);
        assert_eq!(
            names(&events),
            ["state:provisioning", "step:tailscale_key:running", "step:tailscale_key:done", "state:active"]
        );
        let ids: Vec<String> = events.iter().map(|(c, _)| c.to_string()).collect();
        assert_eq!(ids, ["1.0.run-a", "1.1.run-a", "1.2.run-a", "2.2.run-a"]);
    }

    #[test]
    fn resuming_from_any_event_sends_exactly_the_rest() {
        let snap = snapshot(
            vec![entry(Draft, Provisioning), entry(Provisioning, Active)],
            vec![
                change(1, "a", StepState::Running),
                change(2, "a", StepState::Done),
                change(3, "b", StepState::Done),
            ],
            "run-a",
        );
        let all = events_since(&Cursor::default(), &snap);
        for k in 0..all.len() {
            let id = all[k].0.to_string();
            let rest = events_since(&Cursor::parse(&id).unwrap(), &snap);
            assert_eq!(names(&rest), names(&all[k + 1..]), "resumed after {id}");
        }
    }

    #[test]
    fn the_steps_of_a_second_run_follow_the_change_that_started_it() {
        use AgentStatus::Failed;
        let audit = vec![
            entry(Draft, Provisioning),
            entry(Provisioning, Failed),
            entry(Failed, Provisioning),
            entry(Provisioning, Active),
        ];
        let snap = snapshot(audit, vec![change(1, "a", StepState::Done)], "run-b");
        assert_eq!(
            names(&events_since(&Cursor::default(), &snap)),
            ["state:provisioning", "state:failed", "state:provisioning", "step:a:done", "state:active"]
        );
    }

    #[test]
    fn a_new_run_starts_its_steps_from_the_first() {
        let snap =
            snapshot(vec![entry(Draft, Provisioning)], vec![change(1, "a", StepState::Running)], "run-b");
        let events = events_since(&Cursor { audit: 1, steps: 5, run: "run-a".into() }, &snap);
        assert_eq!(names(&events), ["step:a:running"]);
    }

    #[test]
    fn a_closed_agent_ends_the_stream() {
        let mut snap = snapshot(vec![entry(Draft, Provisioning)], vec![], "r");
        snap.closed = true;
        let events = events_since(&Cursor { audit: 1, steps: 0, run: "r".into() }, &snap);
        assert_eq!(names(&events), ["end"]);
    }

    #[test]
    fn foreign_ids_are_refused() {
        for bad in ["", "1", "1.2", "a.1.r", "1.2.r/x", "-1.0."] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
        assert_eq!(Cursor::parse("3.0."), Some(Cursor { audit: 3, steps: 0, run: String::new() }));
    }
}
