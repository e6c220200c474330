// Opens the Temporal Web UI's workflow list filtered by a visibility query in headless Chromium,
// waits until the expected workflows are listed, prints what the table shows as JSON on stdout,
// and writes a screenshot. Driven by tests/tests/web_ui.rs.
//
// Environment:
//   WEBUI_URL        base URL of the Web UI (http://127.0.0.1:<port>)
//   WEBUI_NAMESPACE  namespace (default "default")
//   WEBUI_QUERY      visibility query, e.g. SlipwayAgentId="agent-1"
//   WEBUI_EXPECT     comma-separated workflow ids that must be listed before reading the table
//   WEBUI_SCREENSHOT where to write the PNG
//   WEBUI_TIMEOUT_MS how long to wait for the expected rows (default 60000)
//   CHROMIUM         the browser executable (default /usr/bin/chromium)
//   WEBUI_DECODED_WORKFLOW, WEBUI_DECODED_TEXT
//                    optional: then open that workflow's page and wait until it shows the text,
//                    which only its decoded payloads hold (the UI asks the codec server); prints
//                    `decoded` (whether it did) and `codecRequests` (how many it sent)

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`webui.mjs: ${name} is required`);
    process.exit(2);
  }
  return value;
}

const base = required('WEBUI_URL').replace(/\/$/, '');
const namespace = process.env.WEBUI_NAMESPACE || 'default';
const query = required('WEBUI_QUERY');
const expected = required('WEBUI_EXPECT').split(',').filter(Boolean);
const screenshot = required('WEBUI_SCREENSHOT');
const timeoutMs = Number(process.env.WEBUI_TIMEOUT_MS || 60000);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

// A fresh profile per run: nothing cached from an earlier UI version or session.
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slipway-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  viewport: { width: 1440, height: 720 },
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

try {
  const page = context.pages()[0] ?? (await context.newPage());
  const url = `${base}/namespaces/${encodeURIComponent(namespace)}/workflows?query=${encodeURIComponent(query)}`;

  // Visibility is eventually consistent: reload until every expected workflow is listed.
  const deadline = Date.now() + timeoutMs;
  let result;
  for (;;) {
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    try {
      await page.locator('table thead th').first().waitFor({ timeout: 30000 });
    } catch (e) {
      // A slow first render on a loaded machine: load the page again until the deadline.
      if (Date.now() > deadline) throw e;
      continue;
    }
    // Let the list request settle (the table renders its rows after the query answers).
    await page.waitForLoadState('networkidle').catch(() => {});
    result = await readTable(page);
    const listed = new Set(result.rows.map((r) => r.workflowId));
    if (expected.every((id) => listed.has(id))) break;
    if (Date.now() > deadline) {
      await page.screenshot({ path: screenshot });
      console.error(`webui.mjs: expected ${expected.join(', ')} in the list, saw ${JSON.stringify(result.rows)}`);
      process.exit(1);
    }
    await page.waitForTimeout(1000);
  }

  // The UI parsed the query into its filter bar: the same attribute and value are shown there.
  const filter = await page
    .getByRole('button', { name: /SlipwayAgentId|SlipwayUserId|SlipwayCustomerId|SlipwayStatus/ })
    .first()
    .innerText()
    .catch(() => '');
  const heading = await page.locator('h1').first().innerText().catch(() => '');
  await page.screenshot({ path: screenshot });
  const clean = (s) => s.replace(/\s+/g, ' ').trim();
  const decoded = await decodedPage(page);
  console.log(JSON.stringify({ url, heading: clean(heading), filter: clean(filter), ...result, ...decoded }));
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}

// A workflow's page, read until it shows the text only its decoded payloads hold.
async function decodedPage(page) {
  const workflow = process.env.WEBUI_DECODED_WORKFLOW;
  const text = process.env.WEBUI_DECODED_TEXT;
  if (!workflow || !text) return {};
  let codecRequests = 0;
  page.on('request', (r) => {
    if (r.url().includes('/codec/decode')) codecRequests += 1;
  });
  const url = `${base}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflow)}`;
  const deadline = Date.now() + timeoutMs;
  let decoded = false;
  while (!decoded && Date.now() < deadline) {
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    await page.waitForLoadState('networkidle').catch(() => {});
    decoded = await page
      .waitForFunction((t) => document.body.innerText.includes(t), text, { timeout: 15000 })
      .then(() => true)
      .catch(() => false);
  }
  const shot = screenshot.replace(/\.png$/, '-decoded.png');
  await page.screenshot({ path: shot, fullPage: true });
  return { decoded, codecRequests, decodedScreenshot: shot };
}

// The list as the operator sees it: one object per row, keyed by the table's own headers.
async function readTable(page) {
  const headers = (await page.locator('table thead th').allInnerTexts()).map((h) => h.trim());
  const column = (name) => headers.findIndex((h) => h.toLowerCase() === name.toLowerCase());
  const [status, workflowId, type] = [column('Status'), column('Workflow ID'), column('Type')];
  if (status < 0 || workflowId < 0 || type < 0) {
    throw new Error(`unexpected workflow table headers: ${JSON.stringify(headers)}`);
  }
  const rows = [];
  for (const row of await page.locator('table tbody tr').all()) {
    const cells = (await row.locator('td').allInnerTexts()).map((c) => c.trim());
    if (cells.length < headers.length) continue; // "no results" placeholder rows
    rows.push({ status: cells[status], workflowId: cells[workflowId], type: cells[type] });
  }
  return { headers, rows };
}
