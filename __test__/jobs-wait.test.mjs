// runAndWait / watchRun: terminal states, re-attach, one shared poll, and every way of stopping
// (break, return(), AbortSignal, waitTimeout) leaving nothing pending: child processes must
// exit on their own.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";
import { createJobs, JobsError } from "appkit-jobs";
import { emulator, JOB, patEnv, requestsTo } from "./support/emulator.mjs";

const indexUrl = pathToFileURL(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "lib", "index.js")).href;
const bindingUrl = pathToFileURL(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "lib", "binding.js")).href;

/**
 * Runs `body` (ES module source, with `startEmulator`, `createJobs` imported and `done(value)`
 * printing a JSON result) in a child node process that must exit by itself. The guard kills it
 * after `guardMs` (a hang, not a speed measure) and the test then fails.
 */
function runChild(body, guardMs = 30_000, nodeFlags = [], env = {}) {
  const source = `import { startEmulator, createJobs } from ${JSON.stringify(indexUrl)};
const done = (value) => process.stdout.write("RESULT " + JSON.stringify(value) + "\\n");
${body}
`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeFlags, "--input-type=module", "-e", source], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const guard = setTimeout(() => child.kill("SIGKILL"), guardMs);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(guard);
      const line = out.split("\n").find((l) => l.startsWith("RESULT "));
      resolve({ code, signal, result: line ? JSON.parse(line.slice(7)) : undefined, stderr: err });
    });
  });
}

// A frozen emulator (timeScale 0): the run stays QUEUED, so only the stop under test ends the wait.
const FROZEN_SETUP = `
const emu = await startEmulator({ timeScale: 0 });
const jobs = createJobs({ pollIntervalMs: 60000, jobs: { etl: { waitTimeout: 600000 } } },
  { env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "${JOB.etl}" } });
`;

test("runAndWait: break after the first update stops at once and the process exits", async () => {
  const r = await runChild(`${FROZEN_SETUP}
const seen = [];
for await (const u of jobs("etl").runAndWait()) { seen.push(u.status); break; }
await emu.stop();
done(seen);
`);
  assert.equal(r.signal, null, `child hung: ${r.stderr}`);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.result, ["QUEUED"]);
});

test("runAndWait: an AbortSignal ends a pending wait without error and the process exits", async () => {
  const r = await runChild(`${FROZEN_SETUP}
const ac = new AbortController();
const seen = [];
setTimeout(() => ac.abort(), 200);
for await (const u of jobs("etl").runAndWait(undefined, ac.signal)) seen.push(u.status);
await emu.stop();
done({ seen, aborted: ac.signal.aborted });
`);
  assert.equal(r.signal, null, `child hung: ${r.stderr}`);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.result, { seen: ["QUEUED"], aborted: true });
});

test("runAndWait: return() during a pending next() resolves both at once", async () => {
  const r = await runChild(`${FROZEN_SETUP}
const it = jobs("etl").runAndWait();
const first = await it.next();
const pending = it.next();
const ret = await it.return("bye");
const after = await pending;
await emu.stop();
done({ first: first.value.status, ret, after, again: await it.next() });
`);
  assert.equal(r.signal, null, `child hung: ${r.stderr}`);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.result, { first: "QUEUED", ret: { done: true, value: "bye" }, after: { done: true }, again: { done: true } });
});

test("runAndWait: the job's waitTimeout ends the wait with the contract's error and the process exits", async () => {
  const r = await runChild(`
const emu = await startEmulator({ timeScale: 0 });
const jobs = createJobs({ pollIntervalMs: 50, jobs: { etl: { waitTimeout: 300 } } },
  { env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "${JOB.etl}" } });
let runId;
try {
  for await (const u of jobs("etl").runAndWait()) runId = u.run.run_id;
  done({ error: null });
} catch (e) {
  done({ message: e.message, code: e.code, statusCode: e.statusCode, runId });
}
await emu.stop();
`);
  assert.equal(r.signal, null, `child hung: ${r.stderr}`);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.result.code, "POLL_TIMEOUT");
  assert.equal(r.result.statusCode, 504);
  assert.equal(r.result.message, `Job run ${r.result.runId} polling timeout after 300ms`);
});

test("runAndWait ends on every terminal state", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const env = patEnv(emu, {
    ok: JOB.etl,
    fail: JOB.report,
    skip: 1005,
    broken: 1006,
    retry: 1007,
  });
  const api = createJobs({ pollIntervalMs: 10 }, { env });
  const expected = { ok: "TERMINATED", fail: "TERMINATED", skip: "SKIPPED", broken: "INTERNAL_ERROR", retry: "TERMINATED" };
  for (const [key, last] of Object.entries(expected)) {
    const statuses = [];
    for await (const u of api(key).runAndWait()) statuses.push(u.status);
    assert.equal(statuses.at(-1), last, `${key}: ${statuses.join(" > ")}`);
    // Nothing terminal before the end (WAITING_FOR_RETRY keeps the retrying job alive).
    assert.ok(statuses.slice(0, -1).every((s) => !["TERMINATED", "SKIPPED", "INTERNAL_ERROR"].includes(s)), statuses.join(" > "));
  }
});

test("a failed trigger throws a JobsError with status text only", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({}, { env: patEnv(emu, { etl: JOB.etl }) });
  emu.injectFault({ path: "/api/2.2/jobs/run-now", status: 403, message: "very secret upstream text" });
  await assert.rejects(
    async () => {
      for await (const _ of api("etl").runAndWait()) assert.fail("no update expected");
    },
    (e) => e instanceof JobsError && e.statusCode === 403 && e.message === "Failed to trigger job run: Forbidden",
  );
});

test("watchRun re-attaches to a running run; watchers of one run share one poll", async (t) => {
  const emu = await emulator(t, { timeScale: 0 });
  const api = createJobs({ pollIntervalMs: 20 }, { env: patEnv(emu, { etl: JOB.etl }) });
  const etl = api("etl");
  const runId = (await etl.runNow()).data.run_id;
  emu.setRunState(runId, "RUNNING");
  emu.clearRequests();

  const a = etl.watchRun(runId);
  const b = etl.watchRun(BigInt(runId));
  const [fa, fb] = await Promise.all([a.next(), b.next()]);
  assert.equal(fa.value.status, "RUNNING");
  assert.equal(fb.value.status, "RUNNING");
  const nextA = a.next();
  const nextB = b.next();
  emu.setRunState(runId, "SUCCESS");
  const [la, lb] = await Promise.all([nextA, nextB]);
  assert.equal(la.value.status, "TERMINATED");
  assert.equal(lb.value.status, "TERMINATED");
  assert.equal(la.value.run.state.result_state, "SUCCESS");
  assert.deepEqual(await a.next(), { done: true, value: undefined });
  assert.deepEqual(await b.next(), { done: true, value: undefined });

  assert.ok(requestsTo(emu, "/jobs/runs/get").every((g) => g.identity === "service_principal"));

  // A finished run: watchRun yields its final state once.
  const again = [];
  for await (const u of etl.watchRun(runId)) again.push(u.status);
  assert.deepEqual(again, ["TERMINATED"]);
});

test("two watchers of one run share one poll", async (t) => {
  const emu = await emulator(t, { timeScale: 0 });
  // A long interval: each poll makes only its immediate first request during this test.
  const api = createJobs({ pollIntervalMs: 60_000 }, { env: patEnv(emu, { etl: JOB.etl }) });
  const etl = api("etl");
  const runId = (await etl.runNow()).data.run_id;
  emu.clearRequests();
  const a = etl.watchRun(runId);
  const b = etl.watchRun(runId);
  const [fa, fb] = await Promise.all([a.next(), b.next()]);
  assert.equal(fa.value.status, "QUEUED");
  assert.equal(fb.value.status, "QUEUED");
  // No ownership read (the ledger knows the run started here) and one poll for both watchers.
  assert.equal(requestsTo(emu, "/jobs/runs/get").length, 1);
  const pending = [a.next(), b.next()];
  await a.return();
  await b.return();
  assert.deepEqual(await Promise.all(pending), [
    { done: true, value: undefined },
    { done: true, value: undefined },
  ]);
});

test("reads cached before a watched run changed are not served after it", async (t) => {
  const emu = await emulator(t, { timeScale: 0 });
  const api = createJobs({ pollIntervalMs: 10 }, { env: patEnv(emu, { etl: JOB.etl }) });
  const etl = api("etl");
  const runId = (await etl.runNow()).data.run_id;
  assert.equal((await etl.getRun(runId)).data.state.life_cycle_state, "QUEUED"); // now cached
  assert.equal((await etl.lastRun()).data.state.life_cycle_state, "QUEUED");
  const it = etl.watchRun(runId);
  assert.equal((await it.next()).value.status, "QUEUED");
  const next = it.next();
  emu.setRunState(runId, "SUCCESS");
  assert.equal((await next).value.status, "TERMINATED");
  await it.return();
  assert.equal((await etl.getRun(runId)).data.state.life_cycle_state, "TERMINATED");
  assert.equal((await etl.lastRun()).data.state.life_cycle_state, "TERMINATED");
});

test("an already aborted signal starts nothing", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({}, { env: patEnv(emu, { etl: JOB.etl }) });
  const ac = new AbortController();
  ac.abort();
  const seen = [];
  for await (const u of api("etl").runAndWait({}, ac.signal)) seen.push(u);
  assert.deepEqual(seen, []);
  assert.deepEqual(emu.requests(), []);
});

test("return() while params are still being validated sends no run-now, and nothing is left registered", async (t) => {
  const { createJobsRuntime } = await import("appkit-jobs");
  const emu = await emulator(t, { timeScale: 0 });
  let release;
  const validated = new Promise((r) => (release = r));
  // A Standard Schema whose validation finishes only when the test says.
  const slow = { "~standard": { version: 1, vendor: "test", validate: async (value) => (await validated, { value }) } };
  const rt = createJobsRuntime({ pollIntervalMs: 20, jobs: { etl: { params: slow } } }, { env: patEnv(emu, { etl: JOB.etl }) });
  t.after(() => rt.close());
  const updates = rt.exports("etl").runAndWait({});
  const pending = updates.next();
  await new Promise((r) => setImmediate(r));
  assert.equal(rt._watches.size, 1); // registered while validating, so that close() reaches it
  await updates.return();
  assert.deepEqual(await pending, { done: true, value: undefined });
  assert.equal(rt._watches.size, 0);
  release();
  await validated;
  // Validation has finished: nothing is sent, now or later.
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(requestsTo(emu, "/run-now"), [], "no run-now after return()");
  assert.equal(emu.runCount(), 0);
  assert.equal(rt._watches.size, 0);
  assert.deepEqual(await updates.next(), { done: true, value: undefined });

  // The same for an abort and for repairAndWait.
  const ac = new AbortController();
  let releaseAgain;
  const again = new Promise((r) => (releaseAgain = r));
  slow["~standard"].validate = async (value) => (await again, { value });
  const aborted = rt.exports("etl").runAndWait({}, ac.signal).next();
  // (Params with a field: `{}` would ask for nothing, and no schema would be asked.)
  const repair = rt.exports("etl").repairAndWait(12345, { rerunAllFailedTasks: true, params: { day: "x" } });
  const repairPending = repair.next();
  await new Promise((r) => setImmediate(r));
  ac.abort();
  await repair.return();
  releaseAgain();
  assert.deepEqual(await aborted, { done: true, value: undefined });
  assert.deepEqual(await repairPending, { done: true, value: undefined });
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(emu.requests().filter((r) => r.path.startsWith("/api/")), [], "nothing reached the workspace");
});

test("waits sharing one AbortSignal: one listener on it, abort ends them all, none left after", async (t) => {
  const { getEventListeners } = await import("node:events");
  const emu = await emulator(t, { timeScale: 0 });
  const api = createJobs({ pollIntervalMs: 60_000 }, { env: patEnv(emu, { etl: JOB.etl }) });
  t.after(() => api.close());

  // Five waits follow one signal; each sees its run QUEUED, then the abort ends every one.
  const ac = new AbortController();
  const iterators = Array.from({ length: 5 }, () => api("etl").runAndWait(undefined, ac.signal));
  const firsts = await Promise.all(iterators.map((it) => it.next()));
  assert.deepEqual(
    firsts.map((r) => r.value.status),
    Array(5).fill("QUEUED"),
  );
  assert.equal(getEventListeners(ac.signal, "abort").length, 1);
  const pending = iterators.map((it) => it.next());
  ac.abort();
  assert.deepEqual(await Promise.all(pending), Array(5).fill({ done: true, value: undefined }));
  assert.equal(getEventListeners(ac.signal, "abort").length, 0);

  // Waits that end by themselves (return()) take their listener with them: a long-lived signal
  // keeps none of ours.
  const keep = new AbortController();
  const more = [api("etl").runAndWait(undefined, keep.signal), api("etl").runAndWait(undefined, keep.signal)];
  await Promise.all(more.map((it) => it.next()));
  assert.equal(getEventListeners(keep.signal, "abort").length, 1);
  await more[0].return();
  assert.equal(getEventListeners(keep.signal, "abort").length, 1);
  await more[1].return();
  assert.equal(getEventListeners(keep.signal, "abort").length, 0);
  assert.deepEqual(await more[1].next(), { done: true, value: undefined });
});

test("an iterator not read to its end is let go once its run ends (the runtime keeps no reference)", async (t) => {
  const { createJobsRuntime } = await import("appkit-jobs");
  const emu = await emulator(t, { timeScale: 0 }); // the run moves only when the test says
  const rt = createJobsRuntime({ pollIntervalMs: 20 }, { env: patEnv(emu, { etl: JOB.etl }) });
  t.after(() => rt.close());
  const updates = rt.exports("etl").runAndWait();
  const first = (await updates.next()).value;
  assert.equal(first.status, "QUEUED");
  assert.equal(rt._watches.size, 1); // followed while its run goes on
  emu.setRunState(first.run.run_id, "SUCCESS");
  for (;;) {
    const { value } = await updates.next();
    if (value.status === "TERMINATED") break; // the terminal update; its end is never asked for
  }
  // The end of the watch still arrives and unregisters it (a wait, not a speed check).
  for (let i = 0; i < 500 && rt._watches.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(rt._watches.size, 0);
  assert.deepEqual(await updates.next(), { done: true, value: undefined });
});

test("a runtime nobody references any more is collected (the native side holds it weakly)", async () => {
  const source = `import { startEmulator, createJobs } from ${JSON.stringify(indexUrl)};
const emu = await startEmulator({ timeScale: 0 });
let collected = 0;
const registry = new FinalizationRegistry(() => collected++);
for (let i = 0; i < 10; i++) {
  const jobs = createJobs({}, { env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "1001" } });
  const updates = jobs("etl").runAndWait();
  await updates.next();
  await updates.return();
  registry.register(jobs, i);
}
for (let i = 0; i < 20 && collected === 0; i++) {
  globalThis.gc();
  await new Promise((r) => setTimeout(r, 20));
}
await emu.stop();
process.stdout.write("RESULT " + JSON.stringify({ collected }) + "\\n");
`;
  const child = spawn(process.execPath, ["--expose-gc", "--input-type=module", "-e", source], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  const guard = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const code = await new Promise((resolve) => child.on("exit", resolve));
  clearTimeout(guard);
  assert.equal(code, 0, err);
  const line = out.split("\n").find((l) => l.startsWith("RESULT "));
  const { collected } = JSON.parse(line.slice(7));
  assert.ok(collected > 0, `no runtime was collected: ${out}${err}`);
});

test("run texts lent to V8 stay intact after their watch and poll are gone, and collected ones are given back", async () => {
  // The run's JSON text reaches JS as an external string over the poll's own copy where Node
  // has them (while many watches are live; APPKIT_JOBS_LEND_TEXTS_ABOVE=0 lends from the
  // first): the strings must survive the native side forgetting the run, and every one V8
  // collects must release its text (the count goes back to what it was).
  const r = await runChild(
    `import binding from ${JSON.stringify(bindingUrl)};
const emu = await startEmulator({ timeScale: 0 });
const jobs = createJobs({ pollIntervalMs: 20 }, { env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "${JOB.etl}" } });
const settle = async (until) => {
  for (let i = 0; i < 200 && !until(); i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); }
};
const before = binding.liveExternalTexts();
let kept = [];
await Promise.all(Array.from({ length: 20 }, async (_, i) => {
  const updates = jobs("etl").runAndWait();
  const first = (await updates.next()).value;
  kept.push(first);
  emu.setRunState(first.run.run_id, i % 2 ? "SUCCESS" : "FAILED");
  for await (const u of updates) kept.push(u);
}));
const lent = binding.liveExternalTexts() - before;
jobs.close();
// Garbage between the polls' strings and their reads, so that a freed text would show.
for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); }
const junk = Array.from({ length: 2000 }, (_, i) => "x".repeat(300 + (i % 7)) + i);
let intact = 0;
for (const u of kept) {
  const { run, progress } = u; // the first reads parse the texts
  if (run.run_id > 0 && run.state.life_cycle_state === u.status && JSON.stringify(run).length > 256 && progress.tasksTotal === 1) intact++;
}
const stillHeld = kept.length;
kept = null;
await settle(() => binding.liveExternalTexts() === before);
const after = binding.liveExternalTexts() - before;
await emu.stop();
done({ lent, stillHeld, intact, after, junk: junk.length });
`,
    30_000,
    ["--expose-gc"],
    { APPKIT_JOBS_LEND_TEXTS_ABOVE: "0" },
  );
  assert.equal(r.signal, null, `child hung: ${r.stderr}`);
  assert.equal(r.code, 0, r.stderr);
  const { lent, stillHeld, intact, after } = r.result;
  assert.ok(stillHeld >= 40, `expected at least two updates per run, got ${stillHeld}`);
  assert.equal(intact, stillHeld, "every update's run parses to its own state");
  // Each update lends at most two texts: its run and its changes/progress.
  assert.ok(lent > 0 && lent <= 2 * stillHeld, `external texts lent: ${lent}`);
  assert.equal(after, 0, "collected strings gave their texts back");
});

test("with few watches live, run texts are copied into V8, not lent (its collections then free them)", async () => {
  const r = await runChild(
    `import binding from ${JSON.stringify(bindingUrl)};
const emu = await startEmulator({ timeScale: 0 });
const jobs = createJobs({ pollIntervalMs: 20 }, { env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "${JOB.etl}" } });
const before = binding.liveExternalTexts();
let updates = 0;
let intact = 0;
await Promise.all(Array.from({ length: 20 }, async () => {
  const it = jobs("etl").runAndWait();
  const first = (await it.next()).value;
  emu.setRunState(first.run.run_id, "SUCCESS");
  for (let u = first; u; u = (await it.next()).value) {
    updates++;
    if (u.run.state.life_cycle_state === u.status && u.progress.tasksTotal === 1) intact++;
  }
}));
const lent = binding.liveExternalTexts() - before;
await emu.stop();
done({ updates, intact, lent });
`,
  );
  assert.equal(r.code, 0, r.stderr);
  const { updates, intact, lent } = r.result;
  assert.ok(updates >= 40, `two updates per run at least, got ${updates}`);
  assert.equal(intact, updates, "every update's run and progress read back");
  assert.equal(lent, 0, "nothing lent with 20 watches live");
});
