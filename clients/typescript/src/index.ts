// The typed client of Slipway's REST API. `schema.d.ts` is generated from the starter's OpenAPI
// document (`npm run generate`; `scripts/generate-client` regenerates both, and CI fails when
// the committed copies are stale), so paths, bodies, error codes and states are the server's.
// Calls go through openapi-fetch; `followAgent` reads the agent's event stream and resumes it
// with `Last-Event-ID` after a dropped connection.

import createFetchClient from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type { components, paths };
export type Schemas = components["schemas"];
export type Agent = Schemas["AgentView"];
export type AgentStatus = Schemas["AgentStatus"];
export type ErrorBody = Schemas["ErrorBody"];

/** One event of `GET /api/agents/{id}/events`, by its SSE `event:` name. */
export type AgentEvent =
  | { event: "state"; id: string; data: Schemas["StateEvent"] }
  | { event: "step"; id: string; data: Schemas["StepEvent"] }
  | { event: "end"; id: string; data: Schemas["EndEvent"] };

export interface ClientOptions {
  /** The starter, e.g. `https://slipway.example.com`. */
  baseUrl: string;
  /** A JWT (HS256) whose `sub` is the user. */
  token: string;
  /** A `fetch` of your own (tests, proxies); the global one by default. */
  fetch?: typeof fetch;
}

/** A typed client: `client.POST("/api/agents", { body })`, `client.GET("/api/agents/{id}", …)`. */
export function createSlipwayClient(options: ClientOptions) {
  return createFetchClient<paths>({
    baseUrl: options.baseUrl,
    headers: { authorization: `Bearer ${options.token}` },
    fetch: options.fetch,
  });
}

export interface FollowOptions extends ClientOptions {
  /** Resume after this event (the `id` of the last one received). */
  lastEventId?: string;
  /** Stops following. */
  signal?: AbortSignal;
  /** Wait before reconnecting after a dropped connection (ms, default 1000). */
  reconnectDelayMs?: number;
}

/** Consecutive busy answers (503, 429) `followAgent` waits out before it throws. */
const BUSY_RETRIES = 5;

/**
 * The agent's status and provisioning-step changes as they happen, from its whole past on (or
 * after `lastEventId`), until its workflow closes (`end`, the last event yielded). A dropped
 * connection is resumed with `Last-Event-ID`: no event is missed or repeated. A busy answer
 * (503, 429) is waited out (`Retry-After`) up to 5 times in a row; refusals (404, 401, …) throw a
 * `SlipwayError` with the API's stable code.
 */
export async function* followAgent(agentId: string, options: FollowOptions): AsyncGenerator<AgentEvent> {
  const doFetch = options.fetch ?? fetch;
  let lastEventId = options.lastEventId;
  let busy = 0;
  const url = `${options.baseUrl}/api/agents/${encodeURIComponent(agentId)}/events`;
  for (;;) {
    const headers: Record<string, string> = {
      authorization: `Bearer ${options.token}`,
      accept: "text/event-stream",
    };
    if (lastEventId) headers["last-event-id"] = lastEventId;
    let response: Response;
    try {
      response = await doFetch(url, { headers, signal: options.signal });
    } catch (e) {
      if (options.signal?.aborted) return;
      await delay(options.reconnectDelayMs ?? 1000);
      continue;
    }
    if (!response.ok || !response.body) {
      const body = (await response.json().catch(() => ({}))) as Partial<ErrorBody>;
      // Busy, not refused (503, 429: rate limited, or the user's streams at their cap while a
      // dropped one is not yet seen gone): wait as told and try again, a few times.
      if ((response.status === 503 || response.status === 429) && ++busy <= BUSY_RETRIES) {
        const told = Number(response.headers.get("retry-after"));
        await delay(told > 0 ? told * 1000 : (options.reconnectDelayMs ?? 1000) * busy);
        continue;
      }
      throw new SlipwayError(response.status, body.code ?? "UNKNOWN", body.message ?? response.statusText);
    }
    busy = 0;
    try {
      for await (const frame of frames(response.body)) {
        if (frame.event === "heartbeat" || !frame.data) continue;
        lastEventId = frame.id || lastEventId;
        const event = { event: frame.event, id: frame.id, data: JSON.parse(frame.data) } as AgentEvent;
        yield event;
        if (event.event === "end") return;
      }
    } catch (e) {
      if (options.signal?.aborted) return;
    }
    // The connection dropped (a starter restarted, a proxy timed out): resume where it stopped.
    await delay(options.reconnectDelayMs ?? 1000);
  }
}

/** A refused call: the HTTP status and the API's stable `code`. */
export class SlipwayError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`${status} ${code}: ${message}`);
  }
}

interface Frame {
  id: string;
  event: string;
  data: string;
}

/**
 * SSE frames, parsed as the HTML standard's event-stream format says. A consumer that stops
 * early (a `break` out of `followAgent`) closes the connection: nothing keeps the process alive.
 */
async function* frames(body: ReadableStream<Uint8Array>): AsyncGenerator<Frame> {
  const reader = body.getReader();
  try {
    yield* parse(reader);
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

async function* parse(reader: ReadableStreamDefaultReader<Uint8Array>): AsyncGenerator<Frame> {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const frame: Frame = { id: "", event: "message", data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") frame.id = value;
        else if (field === "event") frame.event = value;
        else if (field === "data") frame.data += frame.data ? `\n${value}` : value;
      }
      yield frame;
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
