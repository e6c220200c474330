//! The reconcilers' Temporal Schedules, created (or brought up to date) by the worker at start.
//!
//! Why Schedules rather than a long-running loop: an operator sees each one in the Web UI's
//! Schedules page (next runs, recent runs, a summary), can pause it or trigger it
//! (`slipway reconcile stripe|github|orphans` triggers one and prints what the run did), and
//! Temporal hands each run's result to the next one, which is where the Stripe catch-up keeps
//! its checkpoint. Overlapping runs are skipped: one run of each reconciler at a time.
//!
//! Written over the workflow service directly because the SDK's schedule action cannot carry a
//! workflow summary, which is what the Web UI lists for each run.

use std::time::Duration;

use slipway_proto::reconcile::{Reconciler, RedeliveryPolicy, StripeCatchUpInput, SweepInput};
use temporalio_client::{Client, NamespacedClient};
use temporalio_common::{
    data_converters::{PayloadConverter, RawValue},
    protos::temporal::api::{
        common::v1::{Payloads, WorkflowType},
        enums::v1::ScheduleOverlapPolicy,
        schedule::v1::{
            IntervalSpec, Schedule, ScheduleAction, SchedulePolicies, ScheduleSpec, ScheduleState,
            schedule_action::Action,
        },
        sdk::v1::UserMetadata,
        taskqueue::v1::TaskQueue,
        workflow::v1::NewWorkflowExecutionInfo,
        workflowservice::v1::{CreateScheduleRequest, UpdateScheduleRequest},
    },
};
use tonic::{Code, IntoRequest};

use crate::settings::ReconcileSettings;

/// One reconciler's schedule as configured.
struct Planned {
    reconciler: Reconciler,
    every: Duration,
    input: RawValue,
    summary: &'static str,
}

fn raw<T: serde::Serialize + 'static>(v: &T) -> RawValue {
    RawValue::from_value(v, &PayloadConverter::serde_json())
}

fn planned(settings: &ReconcileSettings) -> Vec<Planned> {
    vec![
        Planned {
            reconciler: Reconciler::Stripe,
            every: settings.stripe_every,
            input: raw(&StripeCatchUpInput {
                lookback_secs: settings.stripe_lookback.as_secs(),
                overlap_secs: settings.stripe_overlap.as_secs(),
                ..StripeCatchUpInput::default()
            }),
            summary: "Stripe catch-up: feed Stripe events whose delivery failed through the webhook path",
        },
        Planned {
            reconciler: Reconciler::Github,
            every: settings.github_every,
            input: raw(&RedeliveryPolicy::default()),
            summary: "GitHub redelivery: ask GitHub to redeliver the App's failed webhook deliveries",
        },
        Planned {
            reconciler: Reconciler::Orphans,
            every: settings.sweep_every,
            input: raw(&SweepInput {
                grace_secs: settings.sweep_grace.as_secs(),
                delete: settings.sweep_delete,
                previous: None,
            }),
            summary: "Orphan sweep: report (and, if enabled, delete) provider resources no live agent or client stack owns",
        },
    ]
}

fn schedule(p: &Planned, task_queue: &str) -> Schedule {
    let summary = raw(&p.summary.to_owned()).payloads.into_iter().next();
    Schedule {
        spec: Some(ScheduleSpec {
            interval: vec![IntervalSpec { interval: p.every.try_into().ok(), phase: None }],
            ..ScheduleSpec::default()
        }),
        action: Some(ScheduleAction {
            action: Some(Action::StartWorkflow(NewWorkflowExecutionInfo {
                workflow_id: p.reconciler.schedule_id(task_queue),
                workflow_type: Some(WorkflowType { name: p.reconciler.workflow_type().to_owned() }),
                task_queue: Some(TaskQueue { name: task_queue.to_owned(), ..TaskQueue::default() }),
                input: Some(Payloads { payloads: p.input.payloads.clone() }),
                user_metadata: Some(UserMetadata { summary, details: None }),
                ..NewWorkflowExecutionInfo::default()
            })),
        }),
        policies: Some(SchedulePolicies {
            overlap_policy: ScheduleOverlapPolicy::Skip as i32,
            // A worker down for a while runs once when it is back, not once per missed interval.
            catchup_window: p.every.max(Duration::from_secs(60)).try_into().ok(),
            ..SchedulePolicies::default()
        }),
        state: Some(ScheduleState { notes: p.summary.to_owned(), ..ScheduleState::default() }),
    }
}

/// Creates each reconciler's schedule on `task_queue`, or updates it to the configured interval
/// and input. Returns the schedule ids.
pub async fn ensure_schedules(
    client: &Client,
    task_queue: &str,
    settings: &ReconcileSettings,
) -> anyhow::Result<Vec<String>> {
    let namespace = client.namespace().to_owned();
    let mut service = client.connection().workflow_service();
    let mut ids = Vec::new();
    for p in planned(settings) {
        let schedule_id = p.reconciler.schedule_id(task_queue);
        let create = CreateScheduleRequest {
            namespace: namespace.clone(),
            schedule_id: schedule_id.clone(),
            schedule: Some(schedule(&p, task_queue)),
            identity: "slipway-worker".to_owned(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..CreateScheduleRequest::default()
        };
        match service.create_schedule(create.into_request()).await {
            Ok(_) => tracing::info!(%schedule_id, every = ?p.every, "schedule created"),
            Err(status) if status.code() == Code::AlreadyExists => {
                let update = UpdateScheduleRequest {
                    namespace: namespace.clone(),
                    schedule_id: schedule_id.clone(),
                    schedule: Some(schedule(&p, task_queue)),
                    identity: "slipway-worker".to_owned(),
                    request_id: uuid::Uuid::new_v4().to_string(),
                    ..UpdateScheduleRequest::default()
                };
                service.update_schedule(update.into_request()).await?;
                tracing::info!(%schedule_id, every = ?p.every, "schedule up to date");
            }
            Err(status) => return Err(status.into()),
        }
        ids.push(schedule_id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_skip_overlaps_and_carry_the_configured_policy() {
        let settings = ReconcileSettings::default();
        let plans = planned(&settings);
        let s = schedule(&plans[0], "q");
        let Some(Action::StartWorkflow(w)) = s.action.and_then(|a| a.action) else { panic!("a start") };
        assert_eq!(w.workflow_id, "reconcile-stripe@q");
        assert_eq!(w.workflow_type.unwrap().name, "StripeCatchUp");
        let input: StripeCatchUpInput = serde_json::from_slice(&w.input.unwrap().payloads[0].data).unwrap();
        assert_eq!(input.lookback_secs, settings.stripe_lookback.as_secs());
        assert_eq!(s.policies.unwrap().overlap_policy, ScheduleOverlapPolicy::Skip as i32);
        assert_eq!(s.spec.unwrap().interval[0].interval.unwrap().seconds, 600);
    }
}
