// appkit-jobs/react in a real browser: the demo's React page (demo/react, bundled with esbuild
// and styled by Tailwind from appkit-ui's stylesheet when the demo serves it) in headless
// Chromium. The page goes through a TCP proxy that cuts its streams on demand, and the
// emulator's clock is frozen and moved by the test, so every step waits for a state shown on
// the page, never for a duration. Screenshots are kept in __test__/artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDemo } from "../demo/server.mjs";
import { launchChromium } from "./support/browser.mjs";
import { startRepeatingCutProxy } from "./support/http.mjs";
import { until } from "./support/util.mjs";
import { graphOrder, latestTasks, lifeCycleState } from "../lib/react/model.mjs";

const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), "artifacts");

let demo;
let browser;
let proxy;
let url;

before(async () => {
  demo = await startDemo({ port: 0, host: "127.0.0.1", env: {}, timeScale: 0, pollIntervalMs: 100, log: () => {} });
  // Forwards everything; a cut is armed by raising state.times (see cutNext).
  proxy = await startRepeatingCutProxy(demo.server.address().port, { after: 1, times: 0 });
  url = `http://127.0.0.1:${proxy.port}/react.html`;
  browser = await launchChromium();
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await demo?.close();
});

/** Cuts the page's stream right after its next event. */
function cutNext() {
  proxy.state.times = proxy.state.cuts + 1;
}

/** The page shows what the emulator has for the run (its state and every task's). */
async function synced(panel, runId) {
  const run = demo.emulator.getRun(runId);
  const want = JSON.stringify(graphOrder(latestTasks(run)).map((t) => [t.task_key, t.state?.life_cycle_state ?? "", t.state?.result_state ?? ""]));
  const shown = await bars(panel);
  const status = await panel.locator('[data-testid="run-status"]').getAttribute("data-status");
  return JSON.stringify(shown.map((b) => [b.task, b.state, b.result])) === want && status === lifeCycleState(run);
}

/**
 * Moves the emulator's clock by `step` ms until `check()` holds on the page, waiting before
 * each step until the page shows the emulator's state, so no state is skipped however slow
 * the page is.
 */
async function advanceUntil(panel, runId, check, step = 400, what = "the page") {
  for (let i = 0; i < 300; i++) {
    await until(() => synced(panel, runId), 30_000, `the page to show the emulator's state (${what})`);
    if (await check()) return;
    demo.emulator.advanceTime(step);
  }
  throw new Error(`${what} never got there`);
}

async function bars(panel) {
  return panel.locator('[data-testid="task-bar"]').evaluateAll((rows) =>
    rows.map((r) => {
      const fill = r.querySelector('[data-testid="task-bar-fill"]');
      return { task: r.dataset.task, state: r.dataset.state, result: r.dataset.result, width: parseFloat(fill.style.width) || 0, left: parseFloat(fill.style.left) || 0 };
    }),
  );
}

async function openPage(jobs) {
  const page = await browser.context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const requests = [];
  page.on("request", (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  await page.goto(`${url}?jobs=${jobs}`);
  return { page, errors, requests };
}

test("React page in Chromium: a graph run live, two cuts resumed, a reload re-attached, then failed and repaired", { timeout: 240_000 }, async () => {
  const { page, errors, requests } = await openPage("graph");
  const panel = page.locator('[data-job="graph"]');
  await panel.locator('[data-testid="run-button"]').waitFor();
  await page.locator('[data-testid="job-panel"][data-phase="idle"]').waitFor();
  const runsBefore = demo.emulator.runCount();

  await panel.locator('[data-testid="run-button"]').click();
  await panel.locator('[data-testid="run-timeline"]').waitFor({ timeout: 20_000 });
  const runId = await panel.locator('[data-testid="run-timeline"]').getAttribute("data-run-id");
  assert.match(runId, /^\d+$/);
  assert.equal(await panel.locator('[data-testid="run-button"]').isDisabled(), true, "busy while the run goes on");

  // Mid-run: bars in graph order, one growing, the expected end from the job's history.
  await advanceUntil(panel, runId, async () => (await panel.locator('[data-testid="task-bar"][data-state="RUNNING"]').count()) > 0 && (await panel.locator('[data-testid="task-bar"][data-result="SUCCESS"]').count()) > 0, 400, "a task running after one done");
  await panel.locator('[data-testid="run-eta"]', { hasText: /about .+ left|taking longer/ }).waitFor({ timeout: 20_000 });
  const mid = await bars(panel);
  assert.deepEqual(
    mid.map((b) => b.task),
    ["extract", "clean_orders", "clean_customers", "score_regions", "join", "publish", "report", "notify"],
  );
  assert.ok(mid.some((b) => b.state === "RUNNING" && b.width > 0), JSON.stringify(mid));
  assert.ok(mid.some((b) => b.state === "BLOCKED" && b.width === 0), "blocked tasks have no bar yet");
  const fraction = Number(await panel.locator('[data-testid="run-progress"]').getAttribute("data-fraction"));
  assert.ok(fraction > 0 && fraction < 1, `fraction mid-run ${fraction}`);
  assert.equal(await panel.locator('[data-testid="run-progress-fill"]').count(), 1);
  writeFileSync(join(ARTIFACTS, "react-running.png"), await panel.screenshot());

  // Two cuts: each resumes the same stream (the panel counts them), nothing else starts.
  for (const n of [1, 2]) {
    cutNext();
    await advanceUntil(panel, runId, async () => proxy.state.cuts === n, 300, `cut ${n}`);
    await page.locator(`[data-testid="job-panel"][data-reconnects="${n}"][data-phase="following"]`).waitFor({ timeout: 20_000 });
  }
  assert.equal(requests.filter((r) => r === "POST /api/jobs/graph/run").length, 3, "the start and its two resumes");

  // A reload mid-run: the page finds the run through /status and follows its stream.
  await advanceUntil(panel, runId, async () => (await panel.locator('[data-testid="task-bar"][data-task="join"][data-state="RUNNING"]').count()) > 0, 400, "join running");
  requests.length = 0;
  await page.reload();
  await page.locator('[data-testid="job-panel"][data-phase="following"]').waitFor({ timeout: 20_000 });
  assert.equal(await panel.locator('[data-testid="run-timeline"]').getAttribute("data-run-id"), runId);
  assert.ok(requests.includes("GET /api/jobs/graph/status"), requests.join("\n"));
  assert.ok(requests.includes(`GET /api/jobs/graph/runs/${runId}/stream`), requests.join("\n"));
  assert.ok(!requests.some((r) => r.startsWith("POST")), "a reload starts nothing");

  // The end: publish failed, report upstream-failed, notify ran anyway; repair offered.
  await advanceUntil(panel, runId, async () => (await panel.locator('[data-testid="run-result"]').count()) > 0, 500, "the end");
  assert.equal(await panel.locator('[data-testid="run-result"]').getAttribute("data-result"), "FAILED");
  const end = Object.fromEntries((await bars(panel)).map((b) => [b.task, b]));
  assert.equal(end.publish.result, "FAILED");
  assert.equal(end.report.result, "UPSTREAM_FAILED");
  assert.equal(end.notify.result, "SUCCESS");
  assert.ok(end.join.left > end.extract.left, "a later task starts further right");
  assert.equal(await panel.locator('[data-testid="run-progress"]').getAttribute("data-fraction"), "1");
  assert.match(await panel.locator('[data-testid="run-eta"]').textContent(), /^8\/8 tasks done · FAILED after \d+ s$/);
  await panel.locator(`[data-testid="run-row"][data-run-id="${runId}"] [data-testid="runs-repair"]`).waitFor({ timeout: 20_000 });
  writeFileSync(join(ARTIFACTS, "react-failed.png"), await panel.screenshot());

  // Repair from the timeline: publish and report run again and the run ends in SUCCESS.
  const repairsBefore = demo.emulator.requests().filter((r) => r.path.endsWith("/runs/repair")).length;
  await panel.locator('[data-testid="timeline-repair"]').click();
  await advanceUntil(panel, runId, async () => (await panel.locator('[data-testid="task-bar"][data-task="publish"][data-state="RUNNING"]').count()) > 0, 300, "publish running again");
  const repairing = await bars(panel);
  assert.ok(repairing.filter((b) => b.task !== "publish" && b.task !== "report").every((b) => b.result === "SUCCESS"));
  await advanceUntil(panel, runId, async () => (await panel.locator('[data-testid="run-result"][data-result="SUCCESS"]').count()) > 0, 500, "the repaired end");
  const repaired = await bars(panel);
  assert.ok(repaired.every((b) => b.result === "SUCCESS"), JSON.stringify(repaired));
  assert.equal(await panel.locator('[data-testid="timeline-repair"]').count(), 0);
  assert.equal(demo.emulator.requests().filter((r) => r.path.endsWith("/runs/repair")).length - repairsBefore, 1);
  assert.equal(demo.emulator.runCount() - runsBefore, 1, "one run for one click, through cuts and a reload");
  await until(async () => (await panel.locator(`[data-testid="run-row"][data-run-id="${runId}"] [data-testid="runs-repair"]`).count()) === 0, 20_000, "the table to show the repaired run");
  writeFileSync(join(ARTIFACTS, "react-repaired.png"), await panel.screenshot());
  assert.deepEqual(errors, []);
  await page.close();
});

test("React page in Chromium: the form from the JSON Schema, the server's 400 at its field, a run with typed params, cancel", { timeout: 120_000 }, async () => {
  const { page, errors } = await openPage("etl,warehouse");
  const etl = page.locator('[data-job="etl"]');
  await etl.locator('[data-testid="params-form"]').waitFor();
  assert.equal(await etl.locator('[data-field="date"] input').getAttribute("type"), "date");
  assert.equal(await etl.locator('[data-field="mode"] [data-slot="select-trigger"]').textContent(), "incremental");
  assert.equal(await etl.locator('[data-field="dryRun"] [data-slot="checkbox"]').getAttribute("role"), "checkbox");

  // No date: the server's message is shown at the date field.
  const runsBefore = demo.emulator.runCount();
  await etl.locator('[data-testid="run-button"]').click();
  const fieldError = etl.locator('[data-testid="field-error"][data-field="date"]');
  await fieldError.waitFor({ timeout: 20_000 });
  assert.equal(await etl.locator('[data-field="date"] input').getAttribute("aria-invalid"), "true");
  assert.equal(demo.emulator.runCount(), runsBefore);
  writeFileSync(join(ARTIFACTS, "react-form-error.png"), await etl.screenshot());

  // A date, another mode through appkit-ui's Select, the checkbox: typed params reach the job.
  await etl.locator('[data-field="date"] input').fill("2025-03-01");
  await etl.locator('[data-field="mode"] [data-slot="select-trigger"]').click();
  await page.getByRole("option", { name: "full" }).click();
  await etl.locator('[data-field="dryRun"] [data-slot="checkbox"]').click();
  await etl.locator('[data-testid="run-button"]').click();
  await etl.locator('[data-testid="run-timeline"]').waitFor({ timeout: 20_000 });
  const etlRun = await etl.locator('[data-testid="run-timeline"]').getAttribute("data-run-id");
  assert.equal(await fieldError.count(), 0, "the error went with the new run");
  const sent = demo.emulator.requests().filter((r) => r.path.endsWith("/run-now")).at(-1).body;
  assert.deepEqual(sent.notebook_params, { date: "2025-03-01", mode: "full", dryRun: "true" });
  await advanceUntil(etl, etlRun, async () => (await etl.locator('[data-testid="run-result"]').count()) > 0, 500, "etl's end");
  assert.equal(await etl.locator('[data-testid="run-result"]').getAttribute("data-result"), "SUCCESS");

  // Cancel an active run from the panel.
  const wh = page.locator('[data-job="warehouse"]');
  await wh.locator('[data-testid="run-button"]').click();
  await wh.locator('[data-testid="cancel-button"]').waitFor({ timeout: 20_000 });
  await wh.locator('[data-testid="run-timeline"]').waitFor({ timeout: 20_000 });
  const whRun = await wh.locator('[data-testid="run-timeline"]').getAttribute("data-run-id");
  await advanceUntil(wh, whRun, async () => (await wh.locator('[data-testid="task-bar"][data-state="RUNNING"]').count()) > 0, 300, "warehouse running");
  await wh.locator('[data-testid="cancel-button"]').click();
  await advanceUntil(wh, whRun, async () => (await wh.locator('[data-testid="run-result"]').count()) > 0, 500, "the cancelled end");
  assert.equal(await wh.locator('[data-testid="run-result"]').getAttribute("data-result"), "CANCELED");
  await wh.locator('[data-testid="run-row"] [data-testid="run-result-cell"]', { hasText: "CANCELED" }).first().waitFor({ timeout: 20_000 });
  writeFileSync(join(ARTIFACTS, "react-page.png"), await page.screenshot({ fullPage: true }));
  assert.deepEqual(errors, []);
  await page.close();
});

test("React page in Chromium: the runs table says who started each run (the visitor's name, sent as X-Forwarded-Email)", { timeout: 120_000 }, async () => {
  const { page, errors } = await openPage("chain");
  const panel = page.locator('[data-job="chain"]');
  await page.locator('[data-testid="job-panel"][data-phase="idle"]').waitFor();
  await page.locator('[data-testid="who"]').fill("frank@example.com");
  await page.locator('[data-testid="who"]').blur();
  await panel.locator('[data-testid="run-button"]').click();
  await panel.locator('[data-testid="run-timeline"]').waitFor({ timeout: 20_000 });
  const runId = await panel.locator('[data-testid="run-timeline"]').getAttribute("data-run-id");
  const cell = panel.locator(`[data-testid="run-row"][data-run-id="${runId}"] [data-testid="run-started-by"]`);
  await cell.waitFor({ timeout: 20_000 });
  assert.equal(await cell.textContent(), "frank");
  assert.equal(await cell.getAttribute("title"), "frank@example.com · frank");
  assert.deepEqual(errors, []);
  await page.close();
});
