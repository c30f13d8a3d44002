// Live progress: every task's movement is an update, each update says what moved (`changes`)
// and how far along the run is (`progress`), through runAndWait, watchRun, repairAndWait and the
// SSE routes, on the emulator's task graphs (JOB.chain: extract -> transform -> load; JOB.graph:
// fan-out, a for-each task, fan-in, a failing task to repair). Emulator time is frozen and moved
// by the test after each poll it answers, so every poll sees the run a fixed step further on,
// whatever the load on the machine.
import { test } from "node:test";
import assert from "node:assert/strict";
import { API, JOB, at, emulator, jobsFor, patEnv } from "./support/emulator.mjs";
import { openSse, routes, runEvents } from "./support/http.mjs";
import { drain, until } from "./support/util.mjs";

const CONFIG = { pollIntervalMs: 50 };
const ENV_JOBS = { chain: JOB.chain, graph: JOB.graph };

/**
 * Moves the emulator's clock `stepMs` after each runs/get it answers, until stopped: each poll
 * then sees the run one step on. Returns `stop()`.
 */
function stepAfterEachPoll(emu, stepMs) {
  let stopped = false;
  (async () => {
    let seen = at(emu, API.getRun).length;
    while (!stopped) {
      await until(() => stopped || at(emu, API.getRun).length > seen, 60_000, "a poll");
      seen = at(emu, API.getRun).length;
      if (!stopped) emu.advanceTime(stepMs);
    }
  })().catch(() => {});
  return () => {
    stopped = true;
  };
}

/** The typical duration the progress must report: the median of the job's completed SUCCESS runs (start to end). */
async function medianOfHistory(api, key) {
  const listed = await api(key).listRuns({ limit: 25 });
  const spans = listed.data
    .filter((r) => r.state?.result_state === "SUCCESS" && r.end_time > 0)
    .map((r) => r.end_time - r.start_time)
    .sort((a, b) => a - b);
  const n = spans.length;
  return n % 2 ? spans[(n - 1) / 2] : Math.trunc((spans[n / 2 - 1] + spans[n / 2]) / 2);
}

/** Checks that hold for every stream of updates: a fraction that never goes down and ends at 1, done counts that grow. */
function assertProgressions(updates) {
  let fraction = 0;
  let done = 0;
  for (const u of updates) {
    const p = u.progress;
    assert.ok(p.fraction >= fraction, `fraction went down: ${fraction} -> ${p.fraction}`);
    assert.ok(p.tasksDone >= done);
    assert.ok(p.tasksDone <= p.tasksTotal && p.tasksFailed <= p.tasksDone);
    if (u.status !== "TERMINATED") assert.ok(p.fraction < 1, `below 1 while active: ${p.fraction}`);
    fraction = p.fraction;
    done = p.tasksDone;
  }
  assert.equal(updates.at(-1).progress.fraction, 1);
}

/** Every task key whose movement was reported, with the states it moved to, in order. */
function movesByTask(updates) {
  const moves = {};
  for (const u of updates) for (const c of u.changes.tasks) (moves[c.taskKey] ??= []).push(c.to.state);
  return moves;
}

test("runAndWait on a three-task chain: an update per task movement, each naming it, and progress from seeded history", { timeout: 60_000 }, async (t) => {
  const emu = await emulator(t, { timeScale: 0 });
  const api = jobsFor(t, CONFIG, patEnv(emu, ENV_JOBS));
  const expected = await medianOfHistory(api, "chain");
  const stop = stepAfterEachPoll(emu, 100);
  t.after(stop);
  const { updates, error } = await drain(api("chain").runAndWait());
  stop();
  assert.equal(error, null);
  // The run stays RUNNING while its tasks move: those moves are updates of their own.
  const whileRunning = updates.filter((u) => u.status === "RUNNING");
  assert.ok(whileRunning.length >= 3, `updates while RUNNING: ${whileRunning.length}`);
  for (const u of whileRunning.slice(1)) {
    assert.equal(u.changes.run, undefined, "the run's own state did not move");
    assert.ok(u.changes.tasks.length >= 1, "a task moved");
  }
  assert.deepEqual(updates[0].changes, { run: { from: null, to: { state: "QUEUED", result: null } }, tasks: [] });
  // Each task is seen starting and ending, in graph order.
  const moves = movesByTask(updates);
  for (const key of ["extract", "transform", "load"]) {
    assert.ok(moves[key].includes("RUNNING"), `${key}: ${moves[key]}`);
    assert.equal(moves[key].at(-1), "TERMINATED", `${key}: ${moves[key]}`);
  }
  const firstDone = (key) => updates.findIndex((u) => u.changes.tasks.some((c) => c.taskKey === key && c.to.state === "TERMINATED"));
  assert.ok(firstDone("extract") < firstDone("transform") && firstDone("transform") < firstDone("load"));
  const change = updates.flatMap((u) => u.changes.tasks).find((c) => c.taskKey === "transform" && c.to.state === "RUNNING");
  assert.deepEqual(change.to, { state: "RUNNING", result: null, attempt: 0 });
  // Progress.
  assertProgressions(updates);
  const last = updates.at(-1).progress;
  assert.deepEqual([last.tasksTotal, last.tasksDone, last.tasksFailed, last.tasksRunning], [3, 3, 0, 0]);
  assert.equal(last.since, "run");
  assert.deepEqual(Object.keys(last.taskExpectedMs).sort(), ["extract", "load", "transform"]);
  // The history read never delays the first update; the expected duration comes on a later one.
  assert.equal(updates.find((u) => u.progress.expectedMs != null).progress.expectedMs, expected);
  assert.equal(last.expectedMs, expected);
  // Elapsed time counts on the workspace's clock from the run's start; at the end, what its own times say.
  const run = updates.at(-1).run;
  assert.equal(last.elapsedMs, run.end_time - run.start_time);
  // While running, elapsed is an estimate within the `Date` header's one second: this stepped
  // virtual clock stands still between steps, so the estimate starts over often and may fall
  // before `start_time` (reported as 0), but never beyond the run's own span by a second.
  const running = updates.filter((u) => u.status === "RUNNING").map((u) => u.progress.elapsedMs);
  assert.ok(running.every((ms) => ms >= 0 && ms <= last.elapsedMs + 1000), `${running}`);
  assert.equal(updates.filter((u) => u.progress.expectedMs == null).every((u, i) => updates[i] === u), true, "once known, it stays");
});

test("no update while nothing moves, and one poll per run for every watcher", { timeout: 60_000 }, async (t) => {
  const emu = await emulator(t, { timeScale: 0 });
  const api = jobsFor(t, CONFIG, patEnv(emu, ENV_JOBS));
  const it = api("chain").runAndWait()[Symbol.asyncIterator]();
  const first = (await it.next()).value;
  const runId = first.run.run_id;
  const watch = api("chain").watchRun(runId)[Symbol.asyncIterator]();
  assert.equal((await watch.next()).value.status, "QUEUED");
  // The expected duration may still come as an update of its own; after it, silence.
  const pending = [it.next(), watch.next()];
  let settled = false;
  Promise.race(pending).then(() => (settled = true));
  const polls = at(emu, API.getRun).length;
  await until(() => at(emu, API.getRun).length >= polls + 4, 30_000, "four more polls");
  if (settled) {
    const [a, b] = await Promise.all(pending);
    assert.equal(a.value.changes.tasks.length + b.value.changes.tasks.length, 0, "only the expected duration arrived");
    assert.ok(a.value.progress.expectedMs > 0);
    pending.splice(0, 2, it.next(), watch.next());
    settled = false;
    Promise.race(pending).then(() => (settled = true));
    const more = at(emu, API.getRun).length;
    await until(() => at(emu, API.getRun).length >= more + 4, 30_000, "four more polls");
  }
  assert.equal(settled, false, "no update while nothing moved");
  emu.advanceTime(150); // QUEUED -> PENDING, extract pending
  const [a, b] = await Promise.all(pending);
  assert.equal(a.value.status, "PENDING");
  assert.deepEqual(a.value.changes, b.value.changes, "both watchers get the same update");
  assert.deepEqual(a.value.changes.run.to.state, "PENDING");
  const getsOfRun = at(emu, API.getRun).filter((r) => r.query.includes(`run_id=${runId}`));
  assert.ok(getsOfRun.every((r) => r.query.includes("include_history=true")));
  await it.return();
  await watch.return();
});

test("watchRun and repairAndWait on the graph job: tasks fan out, fail upstream, and a repair counts from its own start", { timeout: 90_000 }, async (t) => {
  const emu = await emulator(t, { timeScale: 0 });
  const api = jobsFor(t, CONFIG, patEnv(emu, ENV_JOBS));
  const started = await api("graph").runNow();
  const stop = stepAfterEachPoll(emu, 250);
  t.after(stop);
  const { updates, error } = await drain(api("graph").watchRun(started.data.run_id));
  assert.equal(error, null);
  assertProgressions(updates);
  const moves = movesByTask(updates);
  assert.ok(["clean_orders", "clean_customers", "score_regions"].every((k) => moves[k]?.includes("RUNNING")), JSON.stringify(moves));
  assert.deepEqual(moves.report.at(-1), "SKIPPED");
  const end = updates.at(-1);
  assert.equal(end.run.state.result_state, "FAILED");
  const reportEnd = end.changes.tasks.concat(...updates.map((u) => u.changes.tasks)).find((c) => c.taskKey === "report" && c.to.state === "SKIPPED");
  assert.equal(reportEnd.to.result, "UPSTREAM_FAILED");
  assert.equal(end.progress.tasksFailed, 2, "publish failed, report upstream-failed");
  // The for-each task: one task in the counts, its iterations apart.
  const forEach = updates.map((u) => u.progress.forEach.find((f) => f.taskKey === "score_regions")).filter(Boolean);
  assert.ok(forEach.length >= 2);
  assert.equal(forEach.at(-1).total, forEach.at(-1).completed);
  assert.ok(forEach.some((f) => f.completed > 0 && f.completed < f.total), "iterations seen part way");

  const repaired = await drain(api("graph").repairAndWait(started.data.run_id, { rerunAllFailedTasks: true }));
  stop();
  assert.equal(repaired.error, null);
  const r = repaired.updates;
  assert.ok(r[0].changes.repair.id, "the first update names the repair");
  assert.ok(r.every((u) => u.progress.since === "repair"));
  assertProgressions(r);
  const rmoves = movesByTask(r);
  assert.deepEqual(Object.keys(rmoves).sort(), ["publish", "report"], "only the re-run tasks move");
  assert.equal(r.at(-1).run.state.result_state, "SUCCESS");
  assert.equal(r.at(-1).progress.tasksFailed, 0);
  // Expected: the re-run chain publish -> report, from per-task history.
  const { taskExpectedMs } = r.at(-1).progress;
  assert.equal(r.at(-1).progress.expectedMs, taskExpectedMs.publish + taskExpectedMs.report);
  assert.ok(r.at(-1).progress.elapsedMs < end.progress.elapsedMs, "counted from the repair's start");
});

test("the SSE route carries changes and progress on every update", { timeout: 60_000 }, async (t) => {
  const emu = await emulator(t, { timeScale: 0 });
  const { base } = await routes(t, { ...CONFIG, env: patEnv(emu, ENV_JOBS) });
  const stop = stepAfterEachPoll(emu, 100);
  t.after(stop);
  const sse = await openSse(`${base}/api/jobs/chain/run?stream=true`, { method: "POST" });
  await sse.done;
  stop();
  const [opening, ...rest] = sse.events();
  assert.equal(opening.data.accepted, "run");
  const updates = runEvents(rest).map((e) => e.data);
  assert.ok(updates.every((u) => u.progress && u.changes && Array.isArray(u.changes.tasks)));
  assertProgressions(updates);
  assert.deepEqual(Object.keys(movesByTask(updates)).sort(), ["extract", "load", "transform"]);
  assert.ok(updates.at(-1).progress.expectedMs > 0);
});
