// The React hooks of appkit-jobs/react (useJob, useJobRuns), rendered with Testing Library in
// a happy-dom DOM, against the emulator through a real AppKit app (createApp with server() and
// our jobs plugin) on loopback. The emulator's clock is frozen (timeScale 0) and moved with
// advanceTime, and every wait is for a state, never for a duration.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startEmulator } from "appkit-jobs";
import { startAppKit } from "./support/appkit.mjs";
import { countingFetch, installDom, trackTimers } from "./support/dom.mjs";
import { requestsTo } from "./support/emulator.mjs";
import { startRepeatingCutProxy } from "./support/http.mjs";
import { isTerminalRun, sleep, until } from "./support/util.mjs";

const timers = trackTimers("/lib/react/");
const dom = installDom();
const { renderHook, act } = await import("@testing-library/react");
const { useJob, useJobRuns } = await import("appkit-jobs/react/hooks");

const JOB_IDS = { graph: 1010, chain: 1011, etl: 1001, slow: 1003 };
const ETL_SCHEMA = {
  type: "object",
  properties: { date: { type: "string", format: "date" }, limit: { type: "integer", minimum: 1 } },
  required: ["date"],
  additionalProperties: false,
};

let emu;
let appkit;
let plugin;
let port;
let base;

before(async () => {
  emu = await startEmulator({ timeScale: 0 });
  appkit = await startAppKit(emu, JOB_IDS, { pollIntervalMs: 20, jobs: { graph: {}, chain: {}, etl: { taskType: "notebook", params: ETL_SCHEMA }, slow: { taskType: "sql" } } });
  ({ plugin, port, base } = appkit);
});

after(async () => {
  await appkit?.close();
  await emu?.stop();
  await dom.close();
  timers.restore();
});

/** Silences React's act() notices: updates arrive from the network, outside act. */
const consoleError = console.error;
console.error = (...args) => {
  if (/not wrapped in act|not configured to support act/.test(String(args[0]))) return;
  consoleError(...args);
};

/** A hook rendered with a counting fetch; unmounted when the test ends. */
function render(t, hook, options = {}) {
  const counted = countingFetch();
  const opts = { basePath: options.basePath ?? base, fetch: counted.fetch, retryDelayMs: 10, ...options };
  const rendered = renderHook(() => hook(opts));
  t.after(() => rendered.unmount());
  return { ...rendered, calls: counted.calls, opts };
}

const runNows = () => requestsTo(emu, "/jobs/run-now").length;
const signature = (run) => JSON.stringify([run?.state?.life_cycle_state, run?.state?.result_state, (run?.tasks ?? []).map((t) => [t.task_key, t.state?.life_cycle_state, t.state?.result_state])]);

/**
 * Moves the emulator's clock by `stepMs` until `done(result)` holds, waiting after each step
 * until the hook shows what the emulator shows for the run. Returns each distinct update seen.
 */
async function advanceUntil(result, runId, done, stepMs = 250) {
  const updates = [];
  for (let i = 0; i < 400; i++) {
    await until(() => signature(result.current.run) === signature(emu.getRun(runId)), 15_000, "the hook to show the emulator's state");
    if (updates.at(-1)?.progress !== result.current.progress) updates.push({ run: result.current.run, progress: result.current.progress, changes: result.current.changes });
    if (done(result.current)) return updates;
    emu.advanceTime(stepMs);
  }
  throw new Error("the run did not get there");
}

test("mount shows the job's latest run; start follows a task graph live to its end with progress", { timeout: 120_000 }, async (t) => {
  const { result, calls } = render(t, (o) => useJob("graph", o));
  await until(() => result.current.phase === "idle", 10_000, "the mount read");
  // The latest of the job's seeded past runs: shown, ended, not followed.
  assert.ok(isTerminalRun(result.current.run));
  assert.equal(result.current.progress, null);
  assert.deepEqual(calls.map((c) => c.path), ["/api/jobs/graph/status"]);
  const before = runNows();

  let finished;
  act(() => {
    finished = result.current.start();
  });
  await until(() => result.current.run?.run_id != null, 10_000, "the first state");
  const runId = result.current.run.run_id;
  assert.equal(result.current.busy, true);
  const updates = await advanceUntil(result, runId, (r) => isTerminalRun(r.run));
  await finished;

  assert.equal(runNows() - before, 1, "one run for one start");
  assert.equal(result.current.status, "TERMINATED");
  assert.equal(result.current.run.state.result_state, "FAILED");
  assert.equal(result.current.phase, "idle");
  assert.equal(result.current.busy, false);
  assert.equal(result.current.error, null);
  const fractions = updates.map((u) => u.progress.fraction);
  for (let i = 1; i < fractions.length; i++) assert.ok(fractions[i] >= fractions[i - 1], `fraction never goes down: ${fractions}`);
  assert.ok(fractions.slice(0, -1).every((f) => f < 1), `below 1 while active: ${fractions}`);
  assert.equal(fractions.at(-1), 1);
  const last = result.current.progress;
  assert.equal(last.tasksTotal, 8);
  assert.equal(last.tasksDone, 8);
  assert.ok(updates.some((u) => u.progress.expectedMs > 0), "the expected duration from the job's history");
  assert.ok(updates.some((u) => u.progress.tasksRunning > 0 && u.progress.tasksDone > 0), "an update mid-run");
  assert.ok(updates.some((u) => u.changes?.tasks?.length > 0), "updates name the tasks that moved");
  const post = calls.filter((c) => c.method === "POST");
  assert.deepEqual(post.map((c) => c.path), ["/api/jobs/graph/run?stream=true"]);
});

test("repair: follows the repair of the failed run to its new end, one repair sent", { timeout: 120_000 }, async (t) => {
  const { result } = render(t, (o) => useJob("graph", o));
  // The failed run of the previous test is the job's latest: shown on mount, not followed.
  await until(() => result.current.phase === "idle" && result.current.run != null, 10_000, "the mount read");
  assert.equal(result.current.run.state.result_state, "FAILED");
  assert.equal(result.current.progress, null, "no live update for an ended run");
  const runId = result.current.run.run_id;
  const repairs = () => requestsTo(emu, "/runs/repair").length;
  const before = repairs();
  let finished;
  act(() => {
    finished = result.current.repair();
  });
  await until(() => result.current.progress?.since === "repair", 10_000, "the repair's first update");
  await advanceUntil(result, runId, (r) => isTerminalRun(r.run) && r.progress?.since === "repair");
  await finished;
  assert.equal(repairs() - before, 1);
  assert.equal(result.current.run.run_id, runId);
  assert.equal(result.current.run.state.result_state, "SUCCESS");
  assert.equal(result.current.progress.fraction, 1);
  assert.equal(result.current.error, null);
});

test("a 400 carries the server's message, code and field; nothing starts and the latest run stays", { timeout: 30_000 }, async (t) => {
  const { result } = render(t, (o) => useJob("etl", o));
  await until(() => result.current.phase === "idle", 10_000, "the mount read");
  const before = runNows();
  await act(() => result.current.start({ limit: 0 }));
  const { error } = result.current;
  assert.equal(error.code, "VALIDATION_ERROR");
  assert.equal(error.status, 400);
  assert.match(error.message, /^Parameter validation failed for job "etl": /);
  assert.ok(error.fields.date && error.fields.limit, JSON.stringify(error));
  assert.equal(runNows(), before);
  assert.equal(result.current.run, null);
  assert.equal(result.current.phase, "idle");

  // A valid start clears the error.
  let finished;
  act(() => {
    finished = result.current.start({ date: "2025-03-01", limit: 5 });
  });
  await until(() => result.current.run?.run_id != null, 10_000, "the first state");
  assert.equal(result.current.error, null);
  const runId = result.current.run.run_id;
  await advanceUntil(result, runId, (r) => isTerminalRun(r.run), 1000);
  await finished;
  const sent = requestsTo(emu, "/jobs/run-now").at(-1).body;
  assert.deepEqual(sent.notebook_params, { date: "2025-03-01", limit: "5" });
});

test("start({}) on a job without params starts a run as start() does; a non-empty object keeps its 400", { timeout: 60_000 }, async (t) => {
  const { result } = render(t, (o) => useJob("chain", o));
  await until(() => result.current.phase === "idle", 10_000, "the mount read");
  const before = runNows();
  await act(() => result.current.start({ a: 1 }));
  assert.equal(result.current.error?.code, "VALIDATION_ERROR");
  assert.equal(result.current.error.status, 400);
  assert.equal(result.current.error.message, "This job does not accept parameters");
  assert.equal(runNows(), before, "nothing reached run-now");

  let finished;
  act(() => {
    finished = result.current.start({});
  });
  await until(() => result.current.run?.run_id != null, 10_000, "the first state");
  assert.equal(result.current.error, null);
  assert.equal(runNows(), before + 1);
  const sent = requestsTo(emu, "/jobs/run-now").at(-1).body;
  assert.deepEqual(Object.keys(sent).sort(), ["idempotency_token", "job_id"]);
  await advanceUntil(result, result.current.run.run_id, (r) => isTerminalRun(r.run), 2000);
  await finished;
});

test("cancel: the run ends CANCELED and the stream follows it there", { timeout: 60_000 }, async (t) => {
  const { result, calls } = render(t, (o) => useJob("slow", o));
  await until(() => result.current.phase === "idle", 10_000, "the mount read");
  let finished;
  act(() => {
    finished = result.current.start();
  });
  await until(() => result.current.run?.run_id != null, 10_000, "the first state");
  const runId = result.current.run.run_id;
  await advanceUntil(result, runId, (r) => r.status === "RUNNING", 500);
  const cancels = () => requestsTo(emu, "/runs/cancel").length;
  const before = cancels();
  await act(() => result.current.cancel());
  assert.equal(cancels() - before, 1);
  assert.ok(calls.some((c) => c.method === "DELETE" && c.path === `/api/jobs/slow/runs/${runId}`));
  await advanceUntil(result, runId, (r) => isTerminalRun(r.run), 500);
  await finished;
  assert.equal(result.current.run.state.result_state, "CANCELED");
  assert.equal(result.current.error, null);
});

test("a stream cut six times with a retry budget of two resumes each time: one run, followed to the end", { timeout: 120_000 }, async (t) => {
  const proxy = await startRepeatingCutProxy(port, { after: 1, times: 6 });
  t.after(() => proxy.close());
  const { result, calls } = render(t, (o) => useJob("chain", o), { basePath: `http://127.0.0.1:${proxy.port}/api/jobs`, maxRetries: 2 });
  await until(() => result.current.phase === "idle", 10_000, "the mount read");
  const before = runNows();
  let finished;
  act(() => {
    finished = result.current.start();
  });
  // Each connection is cut after its first event (the opening one, then a state), six times.
  await until(() => proxy.state.cuts === 6 && result.current.run?.run_id != null && result.current.phase === "following", 30_000, "six cuts, resumed");
  const runId = result.current.run.run_id;
  await advanceUntil(result, runId, (r) => isTerminalRun(r.run));
  await finished;
  assert.equal(result.current.reconnects, 6);
  assert.equal(result.current.error, null);
  assert.equal(result.current.run.state.result_state, "SUCCESS");
  const started = new Set(requestsTo(emu, "/jobs/run-now").slice(before).map((r) => r.body.idempotency_token));
  assert.equal(started.size, 1, "one start, however often it was resumed");
  const streams = calls.filter((c) => c.path === "/api/jobs/chain/run?stream=true");
  assert.equal(streams.length, 7, "the first request and six resumes");
  assert.equal(streams[0].lastEventId, null);
  assert.match(streams[1].lastEventId, /^start:1011-/, "the first resume names the start token");
  assert.match(streams.at(-1).lastEventId, new RegExp(`^${runId}:\\d+$`), "later ones the run and sequence");
});

test("mount re-attaches to a run already going: status, then its stream; nothing started", { timeout: 60_000 }, async (t) => {
  const res = await fetch(`${base}/chain/run`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  const { runId } = await res.json();
  const before = runNows();
  const { result, calls } = render(t, (o) => useJob("chain", o));
  await until(() => result.current.run?.run_id === runId && result.current.phase === "following", 10_000, "re-attached");
  assert.deepEqual(calls.map((c) => `${c.method} ${c.path}`), ["GET /api/jobs/chain/status", `GET /api/jobs/chain/runs/${runId}/stream`]);
  await advanceUntil(result, runId, (r) => isTerminalRun(r.run));
  assert.equal(result.current.run.state.result_state, "SUCCESS");
  assert.equal(runNows(), before, "nothing started");
  assert.ok(result.current.progress.tasksTotal === 3);
});

test("useJobRuns lists recent runs and refreshes when a run started from this page moves and ends", { timeout: 60_000 }, async (t) => {
  const { result } = render(t, (o) => ({ job: useJob("chain", o), runs: useJobRuns("chain", { ...o, limit: 3 }) }));
  await until(() => !result.current.runs.loading && result.current.job.phase === "idle", 10_000, "the first reads");
  assert.equal(result.current.runs.runs.length, 3);
  assert.equal(result.current.runs.error, null);
  let finished;
  act(() => {
    finished = result.current.job.start();
  });
  await until(() => result.current.job.run?.run_id != null, 10_000, "the first state");
  const runId = result.current.job.run.run_id;
  await until(() => result.current.runs.runs[0]?.run_id === runId, 10_000, "the new run listed");
  await advanceUntil({ get current() { return result.current.job; } }, runId, (r) => isTerminalRun(r.run));
  await finished;
  await until(() => isTerminalRun(result.current.runs.runs[0]), 10_000, "the list to show the end");
  assert.equal(result.current.runs.runs[0].state.result_state, "SUCCESS");
});

test("unmount mid-stream: the server sees the client leave, no fetch and no timer after", { timeout: 60_000 }, async (t) => {
  const { result, unmount, calls } = render(t, (o) => useJob("slow", o));
  await until(() => result.current.phase === "idle", 10_000, "the mount read");
  act(() => {
    result.current.start();
  });
  await until(() => result.current.phase === "following", 10_000, "following");
  assert.ok(plugin.activeStreamCount() >= 1);
  const runId = result.current.run.run_id;
  unmount();
  const count = calls.length;
  assert.ok(calls.find((c) => c.method === "POST").signal.aborted, "the stream's request was aborted");
  await until(() => plugin.activeStreamCount() === 0, 10_000, "the server to drop the stream");
  assert.deepEqual(timers.pending(), []);
  // The run goes on to its end; nothing on this page hears of it.
  emu.advanceTime(60_000);
  await until(() => isTerminalRun(emu.getRun(runId)), 10_000, "the run to end");
  await sleep(200);
  assert.equal(calls.length, count);
  assert.deepEqual(timers.pending(), []);
});

test("unmount during the back-off: the pending reconnect never fetches, its timer is cleared", { timeout: 60_000 }, async (t) => {
  const proxy = await startRepeatingCutProxy(port, { times: 0 });
  t.after(() => proxy.close());
  const { result, unmount, calls } = render(t, (o) => useJob("slow", o), { basePath: `http://127.0.0.1:${proxy.port}/api/jobs`, retryDelayMs: 300, maxRetries: 50 });
  await until(() => result.current.phase === "idle", 10_000, "the mount read");
  act(() => {
    result.current.start();
  });
  await until(() => result.current.phase === "following", 10_000, "following");
  // The proxy goes away: every reconnect is refused, and the hook backs off between them.
  await proxy.refuse();
  await until(() => result.current.phase === "reconnecting" && timers.pending().length >= 1, 10_000, "a back-off timer pending");
  unmount();
  const count = calls.length;
  assert.deepEqual(timers.pending(), [], "the back-off timer was cleared");
  await sleep(1000);
  assert.equal(calls.length, count, "no fetch after unmount");
});

test("useJobRuns({ startedBy: 'me' }) lists the runs the page's user started", { timeout: 60_000 }, async (t) => {
  // The page's user, as Databricks Apps forwards it on every request.
  const as = (email) => (input, init = {}) => fetch(input, { ...init, headers: { ...(init.headers ?? {}), "X-Forwarded-Email": email } });
  const start = (email) =>
    as(email)(`${base}/etl/run`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ params: { date: "2026-12-06" } }) }).then((r) => r.json());
  const { runId: mine } = await start("dana@example.com");
  const { runId: theirs } = await start("erin@example.com");
  const { result } = render(t, (o) => useJobRuns("etl", { ...o, startedBy: "me", limit: 10 }), { fetch: as("dana@example.com") });
  await until(() => !result.current.loading, 10_000, "the list");
  assert.equal(result.current.error, null);
  const ids = result.current.runs.map((r) => r.run_id);
  assert.ok(ids.includes(mine), `dana's run listed (${ids})`);
  assert.ok(!ids.includes(theirs), "erin's run not listed");
  assert.ok(result.current.runs.every((r) => r.started_by?.email === "dana@example.com"));
  // Without the option, everyone's runs, each with who started it.
  const { result: all } = render(t, (o) => useJobRuns("etl", { ...o, limit: 10 }));
  await until(() => !all.current.loading, 10_000, "the full list");
  const byId = new Map(all.current.runs.map((r) => [r.run_id, r.started_by?.email]));
  assert.equal(byId.get(mine), "dana@example.com");
  assert.equal(byId.get(theirs), "erin@example.com");
});
