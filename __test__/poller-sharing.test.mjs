// The shared polling engine, seen from the JS API (createJobs) against the emulator with frozen
// time (every state change is made by the test): N watchers of one run cost one upstream poll
// per interval, all N receive every state, watchers that leave stop costing, and the last one
// leaving stops the poll. Counts come from the emulator's request log. No timing assertions:
// request counts are bounded by the elapsed time measured around each phase, a bound that only
// grows if the machine is slow, and stays far below what one poll per watcher would make.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { createJobs, startEmulator } from "appkit-jobs";
import { until } from "./support/util.mjs";

const JOB_ID = 4401;
const POLL_MS = 100;
// The engine's shortest gap between two polls of one run: the base interval minus its 20 % jitter.
const MIN_GAP_MS = POLL_MS * 0.8;
/** How long a wait may take before the test gives up (a bound, not a timing assertion). */
const WAIT_MS = 15_000;

let emu;
let jobs;

before(async () => {
  emu = await startEmulator({ jobs: [{ id: JOB_ID, name: "shared", taskType: "notebook" }], timeScale: 0 });
  jobs = createJobs(
    { pollIntervalMs: POLL_MS, jobs: { shared: { taskType: "notebook" } } },
    { env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_SHARED: String(JOB_ID) } },
  );
});

after(async () => {
  jobs?.close();
  await emu?.stop();
});

/** runs/get requests the emulator saw for `runId`. */
function polls(runId) {
  return emu
    .requests()
    .filter((r) => r.path.endsWith("/runs/get") && new URLSearchParams(r.query).get("run_id") === String(runId)).length;
}

/** The most runs/get one shared poll can make in `ms` (first poll at once, then >= MIN_GAP_MS apart). */
function sharedPollBound(ms) {
  return 1 + Math.ceil(ms / MIN_GAP_MS);
}

/**
 * Joining is shared too: each `watchRun` checks that the run belongs to the job with a cached,
 * single-flight read, so watchers arriving together do not cost one read each. (Updates drop that
 * cache, so a watcher joining right after an update may cause one more read.)
 */
function assertJoinShared(count, watchers, ms) {
  assert.ok(count < watchers / 2, `${count} runs/get while ${watchers} watchers joined in ${Math.round(ms)} ms`);
}

/** Consumes an update iterator; `seen` holds the distinct consecutive statuses. */
function follow(iterator, controller) {
  const w = { seen: [], updates: 0, error: undefined, ended: false, controller };
  w.done = (async () => {
    try {
      for await (const u of iterator) {
        w.updates++;
        if (w.seen[w.seen.length - 1] !== u.status) w.seen.push(u.status);
      }
    } catch (err) {
      w.error = err;
    } finally {
      w.ended = true;
    }
  })();
  return w;
}

function watch(runId) {
  const controller = new AbortController();
  return follow(jobs("shared").watchRun(runId, controller.signal), controller);
}

async function startRun() {
  const started = await jobs("shared").runNow();
  assert.equal(started.ok, true);
  return started.data.run_id;
}

/** Steps the run through `states`, each time waiting until every watcher in `ws` has seen it. */
async function stepThrough(runId, ws, states) {
  for (const [state, expected] of states) {
    emu.setRunState(runId, state);
    await until(() => ws.every((w) => w.seen[w.seen.length - 1] === expected), WAIT_MS, `every watcher to see ${expected}`);
  }
}

const LIFE = [
  ["PENDING", "PENDING"],
  ["RUNNING", "RUNNING"],
  ["TERMINATING", "TERMINATING"],
  ["SUCCESS", "TERMINATED"],
];

test("50 watchers of one run: one shared poll, every watcher gets every state", async () => {
  const N = 50;
  const runId = await startRun();
  const t0 = performance.now();
  const ws = Array.from({ length: N }, () => watch(runId));
  await until(() => ws.every((w) => w.seen.length === 1), WAIT_MS, "every watcher's first update");
  const joined = polls(runId);
  const t1 = performance.now();
  assertJoinShared(joined, N, t1 - t0);

  // From here on every watcher has joined: only the shared poll may read the run.
  await stepThrough(runId, ws, LIFE);
  await Promise.all(ws.map((w) => w.done));
  const elapsed = performance.now() - t1;
  for (const w of ws) {
    assert.equal(w.error, undefined);
    assert.deepEqual(w.seen, ["QUEUED", "PENDING", "RUNNING", "TERMINATING", "TERMINATED"]);
  }
  const count = polls(runId) - joined;
  // One poll per watcher per state would be at least N * 4 = 200 requests.
  const bound = sharedPollBound(elapsed);
  assert.ok(count <= bound, `${count} runs/get for ${N} watchers in ${Math.round(elapsed)} ms (shared bound ${bound})`);
});

test("watchers that leave stop costing; the last one leaving stops the poll", async () => {
  const N = 20;
  const runId = await startRun();
  emu.setRunState(runId, "RUNNING");
  const ws = Array.from({ length: N }, () => watch(runId));
  await until(() => ws.every((w) => w.seen.at(-1) === "RUNNING"), WAIT_MS, "every watcher to see RUNNING");

  // All but one leave: their iterations end without an error, the poll goes on for the last one.
  const [stay, ...leave] = ws;
  for (const w of leave) w.controller.abort();
  await Promise.all(leave.map((w) => w.done));
  assert.ok(leave.every((w) => w.ended && w.error === undefined));
  const afterLeave = polls(runId);
  await until(() => polls(runId) >= afterLeave + 2, WAIT_MS, "the poll to go on for the remaining watcher");
  emu.setRunState(runId, "TERMINATING");
  await until(() => stay.seen.at(-1) === "TERMINATING", WAIT_MS, "the remaining watcher to see TERMINATING");
  assert.equal(leave.some((w) => w.seen.includes("TERMINATING")), false);

  // The last one leaves: no more requests for this run, even across several poll intervals.
  stay.controller.abort();
  await stay.done;
  const atLastLeave = polls(runId);
  // Longer than the longest gap the engine leaves between two polls (6x the base, +20 %).
  await new Promise((r) => setTimeout(r, POLL_MS * 10));
  const later = polls(runId);
  assert.ok(later <= atLastLeave + 1, `polling went on after the last watcher left: ${atLastLeave} -> ${later}`);

  // A watcher arriving afterwards starts a fresh poll and follows the run to its end.
  const again = watch(runId);
  await until(() => again.seen.at(-1) === "TERMINATING", WAIT_MS, "a new watcher's first update");
  assert.ok(polls(runId) > later);
  emu.setRunState(runId, "SUCCESS");
  await again.done;
  assert.equal(again.error, undefined);
  assert.deepEqual(again.seen, ["TERMINATING", "TERMINATED"]);
});

test("runAndWait and watchRun of the same run share its poll", async () => {
  const N = 20;
  const t0 = performance.now();
  const controller = new AbortController();
  let runId;
  const waiter = follow(
    (async function* () {
      for await (const u of jobs("shared").runAndWait(undefined, controller.signal)) {
        runId ??= u.run.run_id;
        yield u;
      }
    })(),
    controller,
  );
  await until(() => runId !== undefined, WAIT_MS, "runAndWait's first update");
  const ws = Array.from({ length: N }, () => watch(runId));
  const all = [waiter, ...ws];
  await until(() => all.every((w) => w.seen.length >= 1), WAIT_MS, "every watcher's first update");
  const joined = polls(runId);
  const t1 = performance.now();
  assertJoinShared(joined, N + 1, t1 - t0);
  await stepThrough(runId, all, LIFE);
  await Promise.all(all.map((w) => w.done));
  const elapsed = performance.now() - t1;

  assert.deepEqual(waiter.seen, ["QUEUED", "PENDING", "RUNNING", "TERMINATING", "TERMINATED"]);
  for (const w of ws) {
    assert.equal(w.error, undefined);
    assert.deepEqual(w.seen, ["QUEUED", "PENDING", "RUNNING", "TERMINATING", "TERMINATED"]);
  }
  const count = polls(runId) - joined;
  const bound = sharedPollBound(elapsed);
  assert.ok(count <= bound, `${count} runs/get for ${N + 1} followers in ${Math.round(elapsed)} ms (shared bound ${bound})`);
});

test("one upstream poll per interval whatever the watcher count", async () => {
  // The run stays RUNNING while 1, then 40 watchers follow it. We wait for a few more polls and
  // check they were never closer together than one shared poll allows. One poll per watcher
  // would put about 40 requests in the first instant and break the bound at once.
  for (const n of [1, 40]) {
    const runId = await startRun();
    emu.setRunState(runId, "RUNNING");
    const ws = Array.from({ length: n }, () => watch(runId));
    await until(() => ws.every((w) => w.seen.at(-1) === "RUNNING"), WAIT_MS, `${n} watcher(s) to see RUNNING`);
    const from = polls(runId);
    const t0 = performance.now();
    await until(() => polls(runId) >= from + 3, WAIT_MS, `three more polls with ${n} watcher(s)`);
    const elapsed = performance.now() - t0;
    const made = polls(runId) - from;
    for (const w of ws) w.controller.abort();
    await Promise.all(ws.map((w) => w.done));
    assert.ok(made <= sharedPollBound(elapsed), `${made} runs/get in ${Math.round(elapsed)} ms with ${n} watcher(s)`);
    assert.ok(ws.every((w) => w.error === undefined));
  }
});
