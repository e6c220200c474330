// `followAgent` against scripted answers: the event stream the API's own document shows (its
// example is built by the starter from real values), a dropped connection, busy answers and
// refusals. The answers are HTTP as the document declares them; what is under test is the
// client's reading, resuming and waiting.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { type AgentEvent, SlipwayError, followAgent } from "../src/index.js";

const document = JSON.parse(readFileSync(new URL("../../openapi.json", import.meta.url), "utf8"));
const documented: string =
  document.paths["/api/agents/{id}/events"].get.responses["200"].content["text/event-stream"].example;

const stream = (text: string) =>
  new Response(
    new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(text));
        c.close();
      },
    }),
    { status: 200, headers: { "content-type": "text/event-stream" } },
  );
const refusal = (status: number, code: string, retryAfter?: string) =>
  new Response(JSON.stringify({ code, message: code }), {
    status,
    headers: { "content-type": "application/json", ...(retryAfter ? { "retry-after": retryAfter } : {}) },
  });
const end = 'id: 2.12.r\nevent: end\ndata: {"agent_id":"build-box","status":"destroyed"}\n\n';

/** A `fetch` answering `answers` in turn, recording each request's `Last-Event-ID`. */
function scripted(answers: Response[]) {
  const asked: (string | undefined)[] = [];
  const fetch = async (_url: string | URL | Request, init?: RequestInit) => {
    asked.push((init?.headers as Record<string, string>)["last-event-id"]);
    const next = answers.shift();
    assert.ok(next, "more requests than answers");
    return next;
  };
  return { fetch: fetch as typeof globalThis.fetch, asked };
}

async function follow(fetch: typeof globalThis.fetch): Promise<AgentEvent[]> {
  const events: AgentEvent[] = [];
  for await (const e of followAgent("build-box", { baseUrl: "http://s", token: "t", fetch, reconnectDelayMs: 1 })) {
    events.push(e);
  }
  return events;
}

test("reads the documented stream and resumes after its last event when the connection drops", async () => {
  const ids = [...documented.matchAll(/^id: (.+)$/gm)].map((m) => m[1]);
  assert.ok(ids.length >= 3, documented);
  const { fetch, asked } = scripted([stream(documented), stream(end)]);
  const events = await follow(fetch);
  assert.deepEqual(
    events.map((e) => e.id),
    [...ids, "2.12.r"],
  );
  assert.equal(events.filter((e) => e.event === "step").length, 12);
  assert.deepEqual(asked, [undefined, ids[ids.length - 1]]);
});

test("waits out busy answers (503, 429) and goes on", async () => {
  const { fetch, asked } = scripted([
    refusal(503, "TEMPORAL_UNAVAILABLE", "0"),
    refusal(429, "TOO_MANY_STREAMS"),
    stream(end),
  ]);
  assert.deepEqual(
    (await follow(fetch)).map((e) => e.event),
    ["end"],
  );
  assert.equal(asked.length, 3);
});

test("gives up after five busy answers in a row, with the API's code", async () => {
  const { fetch, asked } = scripted(Array.from({ length: 6 }, () => refusal(429, "TOO_MANY_STREAMS")));
  await assert.rejects(follow(fetch), (e) => e instanceof SlipwayError && e.status === 429 && e.code === "TOO_MANY_STREAMS");
  assert.equal(asked.length, 6);
});

test("a refusal throws at once", async () => {
  const { fetch, asked } = scripted([refusal(404, "AGENT_NOT_FOUND")]);
  await assert.rejects(follow(fetch), (e) => e instanceof SlipwayError && e.code === "AGENT_NOT_FOUND");
  assert.equal(asked.length, 1);
});
