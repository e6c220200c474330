//! The reconcilers' activities: what recovers the events webhooks missed.
//!
//! - [`ReconcileActivities::stripe_catch_up`] lists Stripe's undelivered events of one window
//!   and hands each, oldest first, to Slipway's own Stripe webhook endpoint (see
//!   `slipway_providers::stripe::events` for why through the endpoint): the same verification,
//!   mapping, durable signal and dedupe by event id as a live delivery. An event the endpoint
//!   answers 409 (a conflict on its owner; a paid checkout whose user had a provisioning in
//!   flight was answered so until it became a signal the agent holds) is, when the window asks
//!   (`defer_conflicts`), deferred alone and the batch goes on; 429, 5xx or no answer (the
//!   starter or Temporal down, for everyone) still fail the batch, to be retried in order.
//! - [`ReconcileActivities::github_redeliver`] reads the App's webhook deliveries and asks
//!   GitHub to redeliver each delivery (GUID) that has no successful attempt; the starter
//!   dedupes by `X-GitHub-Delivery`, so a redelivery of something that did arrive is harmless.
//!
//! Both are idempotent: a retried attempt feeds or asks again, and the receiving side dedupes.
//! Neither puts an event's body into a history: the workflows see ids, counts and statuses.

use std::{collections::BTreeMap, sync::Arc};

use chrono::Utc;
use slipway_proto::reconcile::{
    CatchUpBatch, CatchUpWindow, DeferredEvent, FailedDelivery, RedeliveryPolicy, RedeliveryReport,
    RefusedEvent,
};
use slipway_providers::{
    error::ClientError,
    github::{GitHubApp, app::HookDelivery},
    stripe::{
        events::{Redelivered, StripeEvents, WebhookEndpoint},
        webhook::HANDLED_TYPES,
    },
};
use temporalio_macros::activities;
use temporalio_sdk::{
    ApplicationFailure,
    activities::{ActivityContext, ActivityError},
};

use crate::{error::IntoActivityError, metrics::record_reconciled};

/// The reconcilers' clients.
pub struct ReconcileActivities {
    events: StripeEvents,
    /// `None` when the worker has no `STRIPE_WEBHOOK_SECRET`: the catch-up then fails, saying so.
    endpoint: Option<WebhookEndpoint>,
    github: GitHubApp,
}

impl std::fmt::Debug for ReconcileActivities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconcileActivities").finish_non_exhaustive()
    }
}

/// Page size of the deliveries list (GitHub's maximum).
const DELIVERIES_PAGE: u8 = 100;

fn now() -> i64 {
    Utc::now().timestamp()
}

impl ReconcileActivities {
    /// Over the worker's clients.
    pub fn new(events: StripeEvents, endpoint: Option<WebhookEndpoint>, github: GitHubApp) -> Self {
        Self { events, endpoint, github }
    }
}

#[activities]
impl ReconcileActivities {
    /// Feeds the window's undelivered events, oldest first, through the webhook endpoint.
    #[activity]
    pub async fn stripe_catch_up(
        self: Arc<Self>,
        ctx: ActivityContext,
        window: CatchUpWindow,
    ) -> Result<CatchUpBatch, ActivityError> {
        let Some(endpoint) = &self.endpoint else {
            let message = "the Stripe catch-up needs STRIPE_WEBHOOK_SECRET (and SLIPWAY_STARTER_URL) in the worker's configuration";
            return Err(ActivityError::application(
                ApplicationFailure::builder(message)
                    .type_name("Configuration".to_owned())
                    .non_retryable(true)
                    .build(),
            ));
        };
        let listed = self
            .events
            .undelivered(&HANDLED_TYPES, window.from, window.until)
            .await
            .map_err(IntoActivityError::into_activity_error)?;
        let mut batch = CatchUpBatch {
            listed: u32::try_from(listed.len()).unwrap_or(u32::MAX),
            next_from: window.from,
            ..CatchUpBatch::default()
        };
        let todo: Vec<_> = listed.iter().filter(|e| !window.skip.contains(&e.id)).collect();
        batch.skipped_ids =
            listed.iter().filter(|e| window.skip.contains(&e.id)).map(|e| e.id.clone()).collect();
        for (fed, event) in todo.iter().enumerate() {
            if fed as u32 >= window.max_events {
                batch.more = true;
                break;
            }
            let _ = ctx.record_heartbeat(fed as u32).await;
            match endpoint.redeliver(&event.json, now()).await {
                Ok(Redelivered::Accepted) => {
                    tracing::info!(event_id = %event.id, event_type = %event.kind, "stripe catch-up: event recovered");
                    batch.delivered.push(event.id.clone());
                }
                Ok(Redelivered::Refused { status, code }) => {
                    tracing::warn!(event_id = %event.id, event_type = %event.kind, status, ?code, "stripe catch-up: event refused by the webhook endpoint");
                    batch.refused.push(RefusedEvent {
                        event_id: event.id.clone(),
                        kind: event.kind.clone(),
                        status,
                        code,
                    });
                }
                // 409: this event's owner is busy; the others are not.
                Err(ClientError::Api(f)) if f.status == 409 && window.defer_conflicts => {
                    tracing::warn!(event_id = %event.id, event_type = %event.kind, code = ?f.code, "stripe catch-up: event deferred, the webhook endpoint answered 409");
                    batch.deferred.push(DeferredEvent {
                        event_id: event.id.clone(),
                        kind: event.kind.clone(),
                        created: event.created,
                        status: f.status,
                        code: f.code.clone(),
                        attempts: 1,
                    });
                }
                // 409 for a run that does not defer, 429, 5xx, unreachable: later, in order.
                Err(e) => {
                    record_reconciled("stripe", "recovered", None, batch.delivered.len() as u64);
                    let message = format!("feeding {} ({}): {e}", event.id, event.kind);
                    return Err(ActivityError::application(
                        ApplicationFailure::builder(message)
                            .type_name("WebhookEndpointUnavailable".to_owned())
                            .build(),
                    ));
                }
            }
            batch.next_from = event.created;
        }
        record_reconciled("stripe", "recovered", None, batch.delivered.len() as u64);
        record_reconciled("stripe", "refused", None, batch.refused.len() as u64);
        record_reconciled("stripe", "deferred", None, batch.deferred.len() as u64);
        Ok(batch)
    }

    /// Asks GitHub to redeliver every delivery of the window with no successful attempt.
    #[activity]
    pub async fn github_redeliver(
        self: Arc<Self>,
        ctx: ActivityContext,
        policy: RedeliveryPolicy,
    ) -> Result<RedeliveryReport, ActivityError> {
        let oldest = Utc::now() - chrono::Duration::seconds(policy.window_secs as i64);
        let mut attempts: Vec<HookDelivery> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = self
                .github
                .hook_deliveries(cursor.as_deref(), DELIVERIES_PAGE)
                .await
                .map_err(IntoActivityError::into_activity_error)?;
            let _ = ctx.record_heartbeat(attempts.len() as u32).await;
            let past_window = page.iter().any(|d| d.delivered_at < oldest);
            attempts.extend(page.into_iter().filter(|d| d.delivered_at >= oldest));
            match next {
                Some(c) if !past_window => cursor = Some(c),
                _ => break,
            }
        }
        let mut report = failed_deliveries(&attempts, &policy);
        let mut asked = Vec::new();
        for failed in std::mem::take(&mut report.redelivered) {
            match self.github.redeliver(failed.delivery_id).await {
                Ok(()) => {
                    tracing::info!(guid = %failed.guid, event = %failed.event, "github: delivery asked for again");
                    asked.push(failed);
                }
                // Too old by now, or gone: nothing more can be done for this one.
                Err(e) if e.status().is_some_and(|s| matches!(s, 404 | 422)) => {
                    tracing::warn!(guid = %failed.guid, error = %e, "github: redelivery refused");
                    report.given_up.push(failed);
                }
                Err(e) => {
                    record_reconciled("github", "redelivered", None, asked.len() as u64);
                    return Err(e.into_activity_error());
                }
            }
        }
        report.redelivered = asked;
        record_reconciled("github", "redelivered", None, report.redelivered.len() as u64);
        record_reconciled("github", "given_up", None, report.given_up.len() as u64);
        Ok(report)
    }
}

/// Groups attempts by GUID and picks what to redeliver: deliveries with no 2xx attempt, under
/// `max_attempts` attempts, at most `max_per_run` (newest first); the rest of the failed ones
/// are given up. Pure.
pub fn failed_deliveries(attempts: &[HookDelivery], policy: &RedeliveryPolicy) -> RedeliveryReport {
    struct Guid<'a> {
        newest: &'a HookDelivery,
        count: u32,
        ok: bool,
    }
    let mut by_guid: BTreeMap<&str, Guid<'_>> = BTreeMap::new();
    for d in attempts {
        let ok = (200..300).contains(&d.status_code);
        let entry = by_guid.entry(d.guid.as_str()).or_insert(Guid { newest: d, count: 0, ok: false });
        entry.count += 1;
        entry.ok |= ok;
        if (d.delivered_at, *d.id) > (entry.newest.delivered_at, *entry.newest.id) {
            entry.newest = d;
        }
    }
    let mut failed: Vec<&Guid<'_>> = by_guid.values().filter(|g| !g.ok).collect();
    failed.sort_by_key(|g| std::cmp::Reverse((g.newest.delivered_at, *g.newest.id)));
    let mut report = RedeliveryReport {
        scanned: u32::try_from(attempts.len()).unwrap_or(u32::MAX),
        failed: u32::try_from(failed.len()).unwrap_or(u32::MAX),
        ..RedeliveryReport::default()
    };
    for g in failed {
        let d = g.newest;
        let item = FailedDelivery {
            guid: d.guid.clone(),
            delivery_id: *d.id,
            event: d.event.as_ref().map(event_name).unwrap_or_default(),
            action: d.action.clone(),
            attempts: g.count,
            status: d.status.clone(),
        };
        if g.count < policy.max_attempts && (report.redelivered.len() as u32) < policy.max_per_run {
            report.redelivered.push(item);
        } else {
            report.given_up.push(item);
        }
    }
    report
}

/// The event's name as GitHub writes it (`issues`, `issue_comment`, …).
fn event_name<T: serde::Serialize>(event: &T) -> String {
    serde_json::to_value(event).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attempt(id: u64, guid: &str, code: u16, minutes_ago: i64) -> HookDelivery {
        let at = Utc::now() - chrono::Duration::minutes(minutes_ago);
        serde_json::from_value(json!({
            "id": id, "guid": guid, "delivered_at": at.to_rfc3339(), "redelivery": false,
            "duration": 0.1, "status": if code == 200 { "OK".to_owned() } else { format!("Invalid HTTP Response: {code}") },
            "status_code": code, "event": "issues", "action": "opened",
            "installation_id": 7, "repository_id": 9
        }))
        .unwrap()
    }

    #[test]
    fn only_deliveries_without_a_successful_attempt_are_asked_for_again() {
        let attempts = [
            attempt(1, "g-ok-later", 503, 30),
            attempt(2, "g-ok-later", 200, 20),
            attempt(3, "g-failed", 503, 10),
            attempt(4, "g-fine", 202, 5),
        ];
        let report = failed_deliveries(&attempts, &RedeliveryPolicy::default());
        assert_eq!((report.scanned, report.failed), (4, 1));
        assert_eq!(report.redelivered.len(), 1);
        let d = &report.redelivered[0];
        assert_eq!(
            (d.guid.as_str(), d.delivery_id, d.event.as_str(), d.attempts),
            ("g-failed", 3, "issues", 1)
        );
        assert_eq!(d.status, "Invalid HTTP Response: 503");
    }

    #[test]
    fn the_newest_attempt_is_redelivered_and_exhausted_or_excess_ones_are_given_up() {
        let attempts = [
            attempt(1, "a", 500, 50),
            attempt(2, "a", 500, 40),
            attempt(3, "b", 500, 30),
            attempt(4, "c", 500, 20),
        ];
        let policy = RedeliveryPolicy { window_secs: 3600, max_per_run: 1, max_attempts: 2 };
        let report = failed_deliveries(&attempts, &policy);
        assert_eq!(report.redelivered.iter().map(|d| d.delivery_id).collect::<Vec<_>>(), [4]);
        let mut given_up: Vec<_> = report.given_up.iter().map(|d| (d.guid.as_str(), d.delivery_id)).collect();
        given_up.sort();
        assert_eq!(given_up, [("a", 2), ("b", 3)]);
    }
}
