// The demo in a real browser: headless Chromium driven by playwright-core
// opens the page served by demo/server.mjs (emulator mode), runs a job to its terminal state,
// cancels another, shows a validation error as a message, and saves a screenshot that is
// checked not to be blank.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDemo } from "../demo/server.mjs";
import { launchChromium } from "./support/browser.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(here, "artifacts");

let demo;
let browser;
let context;

before(async () => {
  demo = await startDemo({ port: 0, host: "127.0.0.1", env: {}, timeScale: 2, pollIntervalMs: 150, log: () => {} });
  browser = await launchChromium();
  context = browser.context;
});

after(async () => {
  await browser?.close();
  await demo?.close();
});

test("demo: config endpoint in emulator mode lists the jobs with their schemas", async () => {
  assert.equal(demo.mode, "emulator");
  const res = await fetch(new URL("/config.json", demo.url));
  const config = await res.json();
  assert.equal(config.mode, "emulator");
  assert.deepEqual(Object.keys(config.jobs).sort(), ["chain", "etl", "graph", "mixed", "nightly", "pipeline", "report", "warehouse"]);
  assert.deepEqual(config.jobs.etl.params.required, ["date"]);
  assert.equal(config.jobs.warehouse.params, null);
  // `nightly` has no schema of its own: its form comes from the job's definition (jobs/get).
  assert.deepEqual(config.jobs.nightly.params.properties, {
    date: { type: "string", default: "today" },
    mode: { type: "string", default: "full" },
  });
  assert.doesNotMatch(JSON.stringify(config), new RegExp(demo.emulator.token));
});

test("demo page in Chromium: run to a terminal state, cancel another, errors as messages, screenshot", async () => {
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(demo.url);
  await page.waitForSelector('[data-job="etl"]');
  assert.match(await page.textContent("#mode"), /emulator/);
  for (const key of ["etl", "report", "warehouse", "pipeline"]) {
    assert.equal(await page.locator(`[data-job="${key}"]`).count(), 1, key);
  }
  const etl = page.locator('[data-job="etl"]');
  // The form comes from the JSON Schema: a date input, an enum select, a checkbox.
  assert.equal(await etl.locator('input[name="date"]').getAttribute("type"), "date");
  // `mode` is optional: an empty choice first, then the enum.
  assert.deepEqual(await etl.locator('select[name="mode"] option').evaluateAll((os) => os.map((o) => o.value)), ["", "full", "incremental"]);
  assert.equal(await etl.locator('select[name="mode"]').inputValue(), "incremental");
  assert.equal(await etl.locator('input[name="dryRun"]').getAttribute("type"), "checkbox");

  // A schema failure is shown as a message, not raw JSON.
  await etl.locator(".run-btn").click();
  const message = etl.locator(".message.error");
  await message.waitFor({ state: "visible" });
  const text = await message.textContent();
  assert.match(text, /Parameter validation failed for job "etl"/);
  assert.doesNotMatch(text, /^\s*\{/);

  // A run with valid params goes through its states to TERMINATED / SUCCESS.
  await etl.locator('input[name="date"]').fill("2025-03-01");
  await etl.locator('select[name="mode"]').selectOption("full");
  await etl.locator(".run-btn").click();
  await etl.locator('.result[data-result="SUCCESS"]').waitFor({ state: "visible", timeout: 30_000 });
  assert.equal(await etl.locator(".status").getAttribute("data-status"), "TERMINATED");
  const steps = await etl.locator(".steps li").allTextContents();
  assert.ok(steps.includes("RUNNING") && steps.at(-1) === "TERMINATED", steps.join(","));
  const href = await etl.locator(".result a.result-link").getAttribute("href");
  assert.match(href, /^http:\/\/127\.0\.0\.1:\d+\/.*run/);
  await etl.locator('.runs tbody tr[data-state="TERMINATED"]').first().waitFor({ timeout: 10_000 });

  // Cancel an active run of another job.
  const wh = page.locator('[data-job="warehouse"]');
  await wh.locator(".run-btn").click();
  await wh.locator(".cancel-btn").waitFor({ state: "visible", timeout: 15_000 });
  await wh.locator(".cancel-btn").click();
  await wh.locator('.result[data-result="CANCELED"]').waitFor({ state: "visible", timeout: 30_000 });
  await wh.locator(".runs tbody tr .result-cell", { hasText: "CANCELED" }).first().waitFor({ timeout: 10_000 });
  assert.match(await wh.locator(".message").textContent(), /Cancel requested/);

  // The form of a job whose parameters come from its definition, with the defaults filled in.
  const nightly = page.locator('[data-job="nightly"]');
  assert.equal(await nightly.locator('input[name="date"]').inputValue(), "today");
  assert.equal(await nightly.locator('input[name="mode"]').inputValue(), "full");

  // A run that ends with a failed task offers a repair, which is followed live to its new end.
  const mixed = page.locator('[data-job="mixed"]');
  await mixed.locator(".run-btn").click();
  await mixed.locator('.result[data-result="SUCCESS_WITH_FAILURES"]').waitFor({ state: "visible", timeout: 30_000 });
  await mixed.locator(".repair-btn").waitFor({ state: "visible" });
  await mixed.locator('.runs tbody tr .row-repair').first().waitFor({ timeout: 10_000 });
  await mixed.locator(".repair-btn").click();
  await liveState(page, '[data-job="mixed"] .steps li', ["RUNNING"], 15_000);
  await mixed.locator('.result[data-result="SUCCESS"]').waitFor({ state: "visible", timeout: 30_000 });
  assert.match(await mixed.locator(".message").textContent(), /Run #\d+ repaired\./);
  assert.equal(await mixed.locator(".repair-btn").isHidden(), true);
  const repairs = demo.emulator.requests().filter((r) => r.path.endsWith("/runs/repair"));
  assert.deepEqual(repairs.map((r) => [r.status, r.body.rerun_all_failed_tasks]), [[200, true]]);

  assert.deepEqual(pageErrors, []);

  mkdirSync(ARTIFACTS, { recursive: true });
  const png = await page.screenshot({ fullPage: true });
  writeFileSync(join(ARTIFACTS, "demo.png"), png);
  assert.ok(png.length > 20_000, `screenshot has content (${png.length} bytes)`);
  // Decode it in the browser and measure how much the pixels vary.
  const stats = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = img.width;
    canvas.height = img.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const { data } = ctx.getImageData(0, 0, img.width, img.height);
    let sum = 0;
    let sq = 0;
    const colors = new Set();
    const n = data.length / 4;
    for (let i = 0; i < data.length; i += 4) {
      const l = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      sum += l;
      sq += l * l;
      if (colors.size < 5000) colors.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    }
    const mean = sum / n;
    return { width: img.width, height: img.height, std: Math.sqrt(sq / n - mean * mean), colors: colors.size };
  }, png.toString("base64"));
  assert.ok(stats.width >= 1000 && stats.height >= 600, JSON.stringify(stats));
  assert.ok(stats.std > 10, `pixel variance: ${JSON.stringify(stats)}`);
  assert.ok(stats.colors > 50, `distinct colours: ${JSON.stringify(stats)}`);
  await page.close();
});

/**
 * Waits until an element matching `selector` has a `data-state` among `states`, checked on every
 * frame: a state that lasts a few hundred milliseconds can fall between a locator's retries.
 */
function liveState(page, selector, states, timeout) {
  return page.waitForFunction(
    ([sel, wanted]) => [...document.querySelectorAll(sel)].some((el) => wanted.includes(el.dataset.state)),
    [selector, states],
    { polling: "raf", timeout },
  );
}

/** The timeline's bars: `[{ task, state, result, width }]` in page order (width in % of the track). */
async function bars(card) {
  return card.locator('[data-testid="task-bar"]').evaluateAll((rows) =>
    rows.map((r) => ({
      task: r.dataset.task,
      state: r.dataset.state,
      result: r.dataset.result,
      width: parseFloat(r.querySelector(".tl-bar").style.width) || 0,
      left: parseFloat(r.querySelector(".tl-bar").style.left) || 0,
    })),
  );
}

test("demo timeline in Chromium: a task graph runs bar by bar with its expected end, fails, and is repaired from the timeline", async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(demo.url);
  const graph = page.locator('[data-job="graph"]');
  await graph.waitFor();
  await graph.locator(".run-btn").click();
  const timeline = graph.locator('[data-testid="run-timeline"]');
  await timeline.waitFor({ state: "visible", timeout: 15_000 });

  // Mid-run: one bar per task in graph order, a task running with a growing bar, the expected end
  // from the job's history.
  await graph.locator('[data-testid="task-bar"][data-state="RUNNING"]').first().waitFor({ timeout: 20_000 });
  await graph.locator('[data-testid="run-eta"]', { hasText: /about .+ left|taking longer/ }).waitFor({ timeout: 20_000 });
  const mid = await bars(graph);
  assert.deepEqual(
    mid.map((b) => b.task),
    ["extract", "clean_orders", "clean_customers", "score_regions", "join", "publish", "report", "notify"],
    "graph order: each task after those it depends on",
  );
  assert.ok(mid.some((b) => b.state === "RUNNING" && b.width > 0), JSON.stringify(mid));
  assert.ok(mid.some((b) => b.state === "BLOCKED" && b.width === 0), "tasks still blocked have no bar yet");
  const fractionMid = Number(await graph.locator('[data-testid="run-progress"]').getAttribute("data-fraction"));
  assert.ok(fractionMid > 0 && fractionMid < 1, `fraction mid-run ${fractionMid}`);
  assert.match(await graph.locator('[data-testid="run-eta"]').textContent(), /^\d\/8 tasks done · /);
  writeFileSync(join(ARTIFACTS, "timeline-running.png"), await graph.screenshot());

  // The end: publish failed, report marked upstream-failed, the rest succeeded; repair offered.
  await graph.locator('.result[data-result="FAILED"]').waitFor({ state: "visible", timeout: 40_000 });
  const end = await bars(graph);
  const byTask = Object.fromEntries(end.map((b) => [b.task, b]));
  assert.equal(byTask.publish.result, "FAILED");
  assert.equal(byTask.report.result, "UPSTREAM_FAILED");
  assert.equal(byTask.notify.result, "SUCCESS", "notify runs whatever happened (ALL_DONE)");
  for (const key of ["extract", "clean_orders", "clean_customers", "score_regions", "join"]) assert.equal(byTask[key].result, "SUCCESS", key);
  assert.ok(byTask.join.left > byTask.extract.left, "a later task starts further right");
  assert.equal(await graph.locator('[data-testid="run-progress"]').getAttribute("data-fraction"), "1");
  assert.match(await graph.locator('[data-testid="run-eta"]').textContent(), /^8\/8 tasks done · FAILED after \d+ s$/);
  writeFileSync(join(ARTIFACTS, "timeline-failed.png"), await graph.screenshot());

  // Repair from the timeline: only publish and report run again, and the run ends in SUCCESS.
  const repair = graph.locator('[data-testid="timeline-repair"]');
  await repair.waitFor({ state: "visible" });
  await repair.click();
  // publish runs again: its bar leaves FAILED for a live state.
  await liveState(page, '[data-job="graph"] [data-testid="task-bar"][data-task="publish"]', ["PENDING", "QUEUED", "RUNNING", "TERMINATING"], 20_000);
  const repairing = await bars(graph);
  assert.ok(repairing.filter((b) => b.task !== "publish" && b.task !== "report").every((b) => b.result === "SUCCESS"));
  await graph.locator('.result[data-result="SUCCESS"]').waitFor({ state: "visible", timeout: 40_000 });
  const repaired = await bars(graph);
  assert.ok(repaired.every((b) => b.result === "SUCCESS"), JSON.stringify(repaired));
  assert.ok(repaired.find((b) => b.task === "report").width > 0);
  assert.equal(await graph.locator('[data-testid="timeline-repair"]').isHidden(), true);
  writeFileSync(join(ARTIFACTS, "timeline-repaired.png"), await graph.screenshot());
  assert.deepEqual(pageErrors, []);
  await page.close();
});
