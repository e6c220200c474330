// What a SaaS app does with Slipway, with the typed client: create an agent, send its user to
// Stripe Checkout, show provisioning as it happens, then stop the agent. Against the local
// stack of `scripts/dev` (the sandbox plays Stripe: "paying" is one POST to its hosted page);
// against a real deployment, the user pays on Stripe's page and everything else is the same.
//
//   SLIPWAY_URL=http://127.0.0.1:8080 SLIPWAY_JWT_SECRET=… node dist/examples/agent-lifecycle.js

import { createHmac, randomUUID } from "node:crypto";

import { type AgentStatus, createSlipwayClient, followAgent } from "../src/index.js";

const baseUrl = process.env.SLIPWAY_URL ?? "http://127.0.0.1:8080";
const secret = process.env.SLIPWAY_JWT_SECRET;
if (!secret) throw new Error("SLIPWAY_JWT_SECRET is required (scripts/dev.env has the local one)");

// Your app's user; your backend signs their token with the secret Slipway shares with it.
const userId = `example-${randomUUID().slice(0, 8)}`;
const token = jwt({ sub: userId, exp: Math.floor(Date.now() / 1000) + 3600 }, secret);
const slipway = createSlipwayClient({ baseUrl, token });

// 1. A draft agent: nothing is paid or provisioned yet.
const created = await slipway.POST("/api/agents", { body: { name: "example agent", region: "fsn1" } });
if (!created.data) throw new Error(`create: ${created.error?.code} ${created.error?.message}`);
const agentId = created.data.agent_id;
log(`created ${agentId} (${created.data.status}); Temporal workflow ${created.data.workflow_id}`);

// 2. Checkout for its seat; the app redirects the user to `url`.
const checkout = await slipway.POST("/api/billing/checkout", {
  body: { agentId },
  params: { header: { "Idempotency-Key": `checkout-${agentId}` } },
});
if (!checkout.data) throw new Error(`checkout: ${checkout.error?.code} ${checkout.error?.message}`);
log(`checkout ${checkout.data.id}: send the user to ${checkout.data.url}`);
await pay(checkout.data.url);
log("paid: Stripe tells Slipway, which provisions the agent");

// 3. Progress as it happens, until the agent is active (or failed).
const watching = new AbortController();
let lastEventId: string | undefined;
let status: AgentStatus = "draft";
for await (const event of followAgent(agentId, { baseUrl, token, signal: watching.signal })) {
  lastEventId = event.id;
  if (event.event === "state") {
    status = event.data.to;
    log(`state ${event.data.from} -> ${event.data.to} (${event.data.actor}: ${event.data.reason})`);
  } else if (event.event === "step") {
    log(`  step ${event.data.step.padEnd(17)} ${event.data.state.padEnd(9)} ${event.data.detail}`);
  }
  if (status === "active" || status === "failed" || event.event === "end") break;
}
watching.abort();
if (status !== "active") throw new Error(`provisioning ended ${status}`);

// 4. Stop it; the same stream, resumed after the last event seen, shows the shutdown.
const stop = await slipway.POST("/api/agents/{id}/stop", { params: { path: { id: agentId } } });
if (!stop.data) throw new Error(`stop: ${stop.error?.code} ${stop.error?.message}`);
for await (const event of followAgent(agentId, { baseUrl, token, lastEventId })) {
  if (event.event === "state") {
    log(`state ${event.data.from} -> ${event.data.to} (${event.data.actor})`);
    if (event.data.to === "stopped") break;
  }
}

// A refusal carries a stable code: stopping a stopped agent.
const again = await slipway.POST("/api/agents/{id}/stop", { params: { path: { id: agentId } } });
log(`stop again: ${again.response.status} ${again.error?.code}`);
if (again.error?.code !== "AGENT_NOT_RUNNING") throw new Error("expected AGENT_NOT_RUNNING");
log("done");

/** The user pays on the hosted page (the sandbox's form posts here). */
async function pay(url: string): Promise<void> {
  const response = await fetch(`${url}/complete`, { method: "POST" });
  if (!response.ok) throw new Error(`payment: ${response.status}`);
}

/** An HS256 JWT, as the app's backend signs one. */
function jwt(claims: object, key: string): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${createHmac("sha256", key).update(body).digest("base64url")}`;
}

function log(line: string): void {
  console.log(`[${new Date().toISOString().slice(11, 23)}] ${line}`);
}
