// Waits that nothing but the awaiting code holds: every kind of wait runs inside a function
// with its own instance (no global, no t.after(close) keeping it), while V8 collects garbage
// every few milliseconds. Each wait must settle; once it has, the instance must be let go.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { createRequire } from "node:module";
import { emulator, patEnv } from "./support/emulator.mjs";
import { sseEvents } from "./support/http.mjs";
import { sleep } from "./support/util.mjs";

const require = createRequire(import.meta.url);
const { createJobs } = require("appkit-jobs");
const { createJobsHandler } = require("appkit-jobs/http");

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc");

/** Ten virtual ms per real ms: a run takes a few hundred real ms, many collections long. */
const TIME_SCALE = 10;
/** Job 7 fails (so it can be repaired); job 1001 succeeds. */
const FAILING = { id: 7, outcome: "FAILED", queueMs: 100, pendingMs: 300, durationMs: 1500, terminatingMs: 100, tasks: [{ taskKey: "a" }, { taskKey: "b" }] };
const JOBS = [FAILING, { id: 1001, queueMs: 100, pendingMs: 300, durationMs: 1500, terminatingMs: 100 }];

/** Collects garbage every 5 ms (real collections: V8's own would come a few seconds later) until stopped. */
function collecting() {
  const timer = setInterval(() => gc(), 5);
  return () => clearInterval(timer);
}

/** `promise`, or a rejection naming `what` after `ms`: a wait that never settles fails instead of hanging. */
function settlesWithin(promise, ms, what) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} never settled: its instance was collected mid-wait`)), ms);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

/** Instances made by the waits below, watched for collection once their waits have settled. */
const collected = new Set();
const registry = new FinalizationRegistry((name) => collected.add(name));

function instance(emu, name) {
  const jobs = createJobs({ pollIntervalMs: 50 }, { env: patEnv(emu, { etl: 1001, train: 7 }) });
  registry.register(jobs, name);
  return jobs;
}

/** Each kind of wait, each in a function of its own that alone holds its instance. */
const WAITS = {
  async runAndWait(emu) {
    const states = [];
    for await (const u of instance(emu, "runAndWait")("etl").runAndWait()) states.push(u.status);
    return states;
  },
  async watchRun(emu) {
    const jobs = instance(emu, "watchRun");
    const started = await jobs("etl").runNow();
    const states = [];
    for await (const u of jobs("etl").watchRun(started.data.run_id)) states.push(u.status);
    return states;
  },
  async repairAndWait(emu) {
    const jobs = instance(emu, "repairAndWait");
    let runId;
    for await (const u of jobs("train").runAndWait()) runId = u.run.run_id;
    const states = [];
    for await (const u of jobs("train").repairAndWait(runId, { rerunAllFailedTasks: true })) states.push(u.status);
    return states;
  },
  async "a manual next() loop"(emu) {
    const it = instance(emu, "a manual next() loop")("etl").runAndWait()[Symbol.asyncIterator]();
    const states = [];
    for (let r = await it.next(); !r.done; r = await it.next()) states.push(r.value.status);
    return states;
  },
  async "the ExecutionResult methods"(emu) {
    const jobs = instance(emu, "the ExecutionResult methods");
    const etl = jobs("etl");
    const started = await etl.runNow();
    const runId = started.data.run_id;
    const results = [started, await etl.getRun(runId), await etl.lastRun(), await etl.listRuns({ limit: 5 }), await etl.getJob()];
    results.push(await etl.cancelRun(runId));
    let failed;
    for await (const u of jobs("train").runAndWait()) failed = u.run.run_id;
    results.push(await jobs("train").getRunOutput(failed), await jobs("train").repairRun(failed, { rerunAllFailedTasks: true }));
    return results.map((r) => (r.ok ? "ok" : `failed ${r.status}`));
  },
  async "an SSE stream of the standalone routes"(emu) {
    const handler = createJobsHandler({ pollIntervalMs: 50, env: patEnv(emu, { etl: 1001 }) });
    registry.register(handler, "an SSE stream of the standalone routes");
    const server = http.createServer(handler);
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const res = await fetch(`http://127.0.0.1:${server.address().port}/api/jobs/etl/run?stream=true`, { method: "POST" });
      return sseEvents(await res.text()).map((e) => e.data.status);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  },
};

const ENDS = {
  runAndWait: "TERMINATED",
  watchRun: "TERMINATED",
  repairAndWait: "TERMINATED",
  "a manual next() loop": "TERMINATED",
  "an SSE stream of the standalone routes": "TERMINATED",
};

test("every kind of wait settles under forced garbage collection, held by nothing but the awaiting code", { timeout: 120_000 }, async (t) => {
  const emu = await emulator(t, { jobs: JOBS, timeScale: TIME_SCALE });
  for (const [name, wait] of Object.entries(WAITS)) {
    await t.test(name, async () => {
      const stop = collecting();
      let outcome;
      try {
        outcome = await settlesWithin(wait(emu), 30_000, name);
      } finally {
        stop();
      }
      if (ENDS[name]) {
        assert.equal(outcome.at(-1), ENDS[name], `${name}: ${outcome}`);
        assert.ok(outcome.length >= 2, `${name} saw the run move: ${outcome}`);
      } else {
        assert.deepEqual(outcome, Array(outcome.length).fill("ok"), name);
      }
    });
  }
  // Settled waits hold nothing: every instance is let go.
  for (let i = 0; i < 100 && collected.size < Object.keys(WAITS).length; i++) {
    gc();
    await sleep(20);
  }
  assert.deepEqual([...collected].sort(), Object.keys(WAITS).sort(), "every instance was collected once its waits settled");
});

test("a wait abandoned mid-run by code that holds nothing lets its instance go", { timeout: 60_000 }, async (t) => {
  const emu = await emulator(t, { jobs: JOBS, timeScale: 0 }); // the run never moves on its own
  const name = "abandoned";
  await (async () => {
    const it = instance(emu, name)("etl").runAndWait()[Symbol.asyncIterator]();
    assert.equal((await it.next()).value.status, "QUEUED");
    // nobody calls next() again: no wait is pending, so nothing must be held
  })();
  for (let i = 0; i < 100 && !collected.has(name); i++) {
    gc();
    await sleep(20);
  }
  assert.ok(collected.has(name), "the instance of an abandoned wait was collected");
});
