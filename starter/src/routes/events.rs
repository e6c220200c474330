//! `GET /api/agents/{id}/events`: the agent's live progress as server-sent events (see
//! [`crate::service::events`] for where they come from and why resuming is exact).
//!
//! The owner's JWT (or an admin's); another user's agent is 404 like any other call. Without
//! `Last-Event-ID` the stream starts with the agent's whole past (every status change, the
//! current saga run's steps), then follows it live; with one, it continues right after that
//! event. An `end` event closes the stream once the agent's workflow has closed. A user holds at
//! most `SLIPWAY_EVENTS_MAX_STREAMS` streams at once on a starter (429 `TOO_MANY_STREAMS`).

use std::convert::Infallible;

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt};

use crate::{
    AppState,
    error::ApiError,
    routes::api::User,
    service::{AgentService, events::Cursor},
    views::{AgentEvent, ErrorBody},
};

/// The handler.
#[utoipa::path(
    get,
    path = "/api/agents/{id}/events",
    tag = "agents",
    operation_id = "streamAgentEvents",
    summary = "Follow an agent's progress live (server-sent events)",
    description = "Server-sent events, one per status change (`event: state`) and per step change of the \
        agent's provisioning saga (`event: step`), then `event: end` once the agent's workflow has closed; \
        `event: heartbeat` every 15 s while nothing else is sent. Each event but the heartbeat has an `id`: \
        reconnect with `Last-Event-ID` set to the last one received and the stream continues after it, \
        with no gap and no repeat, on any starter. Each `data:` line is the JSON of the event's body \
        (`AgentEvent`'s `data` for its `event` name).",
    params(
        ("id" = String, Path, description = "Agent id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = AgentEvent),
        (status = 400, description = "Not an event id of this stream", body = ErrorBody),
        (status = 404, description = "No such agent, or another user's", body = ErrorBody),
        (status = 429, description = "The user holds `SLIPWAY_EVENTS_MAX_STREAMS` (16) streams open on this \
            starter already (`TOO_MANY_STREAMS`: close one first), or is rate limited (`RATE_LIMITED`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn agent_events(
    State(app): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last = match headers.get("last-event-id") {
        None => None,
        // Not text: no id of ours either.
        Some(v) => Some(v.to_str().unwrap_or("-")),
    };
    let events = AgentService::new(app.clone()).watch(&user, &id, last).await?;
    let heartbeat = Event::default().event("heartbeat").data("{}");
    let keep_alive = KeepAlive::new().interval(app.settings.events_heartbeat).event(heartbeat);
    Ok(Sse::new(events.map(|(id, e)| Ok(sse(&id, &e)))).keep_alive(keep_alive))
}

/// One SSE event: `id`, `event` (the variant) and `data` (its body).
fn sse(id: &Cursor, event: &AgentEvent) -> Event {
    let data = match event {
        AgentEvent::State(e) => serde_json::to_string(e),
        AgentEvent::Step(e) => serde_json::to_string(e),
        AgentEvent::End(e) => serde_json::to_string(e),
        AgentEvent::Heartbeat(e) => serde_json::to_string(e),
    };
    Event::default().id(id.to_string()).event(event.name()).data(data.unwrap_or_default())
}
