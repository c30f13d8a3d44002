// Repairs from JS and HTTP against the emulator: repairRun's ExecutionResult and the repair id
// sent next, what rejects before anything is sent, another job's run, a run still going,
// repairAndWait to the new end (repairId on each update, break and abort stop it), the repair
// route in JSON and SSE (resume without a second repair), and params checked as for runNow.
import test from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { z } from "zod";
import { emulator, jobsFor, patEnv, requestsTo } from "./support/emulator.mjs";
import { routes, sseEvents } from "./support/http.mjs";
import { drain, lastState, until } from "./support/util.mjs";

const require = createRequire(import.meta.url);
const { ValidationError } = require("appkit-jobs");

/** Three tasks, `train` fails; each attempt takes 300 virtual ms. */
const FAILING = {
  id: 7,
  name: "training",
  outcome: "FAILED",
  queueMs: 0,
  pendingMs: 50,
  durationMs: 200,
  terminatingMs: 50,
  parameters: [{ name: "date", default: "today" }],
  tasks: [
    { taskKey: "ingest", outcome: "SUCCESS" },
    { taskKey: "train", outcome: "FAILED" },
    { taskKey: "report", outcome: "SUCCESS" },
  ],
};

async function failedRun(emu, api, key = "train", params = undefined) {
  const started = await api(key).runNow(params);
  assert.equal(started.ok, true);
  emu.advanceTime(1000);
  return started.data.run_id;
}

async function setup(t, config = {}, options = {}) {
  const emu = await emulator(t, { jobs: [FAILING, { ...FAILING, id: 8 }], ...options });
  const api = jobsFor(t, { pollIntervalMs: 50, ...config }, patEnv(emu, { train: 7, other: 8 }));
  return { emu, api };
}

test("repairRun: the repair id, then the next repair names it as latest_repair_id", async (t) => {
  const { emu, api } = await setup(t);
  const runId = await failedRun(emu, api);
  const first = await api("train").repairRun(runId, { rerunAllFailedTasks: true });
  assert.equal(first.ok, true);
  assert.equal(typeof first.data.repair_id, "number");
  emu.advanceTime(1000);
  const second = await api("train").repairRun(runId, { rerunTasks: ["report"], rerunDependentTasks: true });
  assert.equal(second.ok, true);
  assert.notEqual(second.data.repair_id, first.data.repair_id);
  assert.deepEqual(
    requestsTo(emu, "/runs/repair").map((r) => r.body),
    [
      { run_id: runId, rerun_all_failed_tasks: true },
      { run_id: runId, rerun_tasks: ["report"], rerun_dependent_tasks: true, latest_repair_id: first.data.repair_id },
    ],
  );
  emu.advanceTime(1000);
  const run = emu.getRun(runId);
  assert.equal(run.state.result_state, "SUCCESS");
  assert.deepEqual(run.tasks.map((task) => task.task_key), ["ingest", "train", "report", "train", "report"]);
});

test("repairRun rejects a bad selection before sending; another job's run is 404; a run still going keeps 400", async (t) => {
  const { emu, api } = await setup(t);
  const runId = await failedRun(emu, api);
  const otherRun = await failedRun(emu, api, "other");
  emu.clearRequests();
  for (const options of [undefined, {}, { rerunAllFailedTasks: true, rerunTasks: ["train"] }, { rerunTasks: [] }, "all"]) {
    await assert.rejects(api("train").repairRun(runId, options), (e) => {
      assert.ok(e instanceof ValidationError, String(e));
      assert.equal(e.statusCode, 400);
      return true;
    });
  }
  await assert.rejects(api("train").repairRun(runId, { rerunTasks: [1] }), { code: "INVALID_REQUEST", statusCode: 400 });
  assert.deepEqual(await api("train").repairRun(otherRun, { rerunAllFailedTasks: true }), { ok: false, status: 404, message: "Not Found" });
  assert.deepEqual(requestsTo(emu, "/runs/repair"), []);

  const going = await api("train").runNow();
  const refused = await api("train").repairRun(going.data.run_id, { rerunAllFailedTasks: true });
  assert.deepEqual(refused, { ok: false, status: 400, message: "Bad Request" });
});

test("repairAndWait follows the run from the repair to its new end, repairId on each update", async (t) => {
  const { emu, api } = await setup(t, {}, { timeScale: 1 });
  const first = await drain(api("train").runAndWait());
  assert.equal(first.updates.at(-1).run.state.result_state, "FAILED");
  const runId = first.updates.at(-1).run.run_id;

  const { updates, error } = await drain(api("train").repairAndWait(runId, { rerunAllFailedTasks: true }));
  assert.equal(error, null);
  assert.ok(updates.length >= 2, JSON.stringify(updates.map((u) => u.status)));
  assert.notEqual(updates[0].status, "TERMINATED");
  assert.equal(lastState(updates), "TERMINATED");
  assert.equal(updates.at(-1).run.state.result_state, "SUCCESS");
  const repairId = updates[0].repairId;
  assert.equal(typeof repairId, "number");
  assert.ok(updates.every((u) => u.repairId === repairId && u.run.run_id === runId));
  assert.equal(requestsTo(emu, "/runs/repair").length, 1);

  // A failed repair request ends the iterator with its error; nothing is left running.
  const again = await drain(api("train").repairAndWait(runId, { rerunTasks: ["nope"] }));
  assert.deepEqual(again.updates, []);
  assert.equal(again.error.statusCode, 400);
});

test("repairAndWait: break and abort stop at once, an abort before the start repairs nothing", async (t) => {
  const { emu, api } = await setup(t, {}, { timeScale: 0.2 });
  emu.setTimeScale(50);
  const runId = (await drain(api("train").runAndWait())).updates.at(-1).run.run_id;
  emu.setTimeScale(0.2);
  for await (const update of api("train").repairAndWait(runId, { rerunAllFailedTasks: true })) {
    assert.notEqual(update.status, "TERMINATED");
    break;
  }
  // The repair goes on without a watcher; end it so that the run can be repaired again.
  emu.setRunState(runId, "FAILED");

  const ac = new AbortController();
  const iterator = api("train").repairAndWait(runId, { rerunAllFailedTasks: true }, ac.signal);
  const first = await iterator.next();
  assert.equal(first.done, false);
  ac.abort();
  assert.deepEqual(await iterator.next(), { done: true, value: undefined });

  const before = requestsTo(emu, "/runs/repair").length;
  const aborted = new AbortController();
  aborted.abort();
  assert.deepEqual(await drain(api("train").repairAndWait(runId, { rerunAllFailedTasks: true }, aborted.signal)), { updates: [], error: null });
  assert.equal(requestsTo(emu, "/runs/repair").length, before);
});

test("repair route: JSON { repairId }, SSE to the new end, resume without a second repair, 404 and 400", async (t) => {
  const emu = await emulator(t, { jobs: [FAILING, { ...FAILING, id: 8 }], timeScale: 20 });
  const { base } = await routes(t, { env: patEnv(emu, { train: 7, other: 8 }), pollIntervalMs: 50 });
  const post = (path, body, headers = {}) =>
    fetch(`${base}/api/jobs${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

  const ran = sseEvents(await (await post("/train/run?stream=true", {})).text());
  const runId = ran.at(-1).data.run.run_id;
  assert.equal(ran.at(-1).data.run.state.result_state, "FAILED");

  let res = await post(`/other/runs/${runId}/repair`, { rerunAllFailedTasks: true });
  assert.equal(res.status, 404);
  res = await post(`/train/runs/${runId}/repair`, {});
  assert.equal(res.status, 400);
  assert.match((await res.json()).error, /exactly one of rerunAllFailedTasks/);
  assert.equal(requestsTo(emu, "/runs/repair").length, 0);

  res = await post(`/train/runs/${runId}/repair`, { rerunAllFailedTasks: true });
  assert.equal(res.status, 200);
  const { repairId } = await res.json();
  assert.equal(typeof repairId, "number");
  await until(() => emu.getRun(runId).state.life_cycle_state === "TERMINATED", 10_000, "the repair to end");

  res = await post(`/train/runs/${runId}/repair?stream=true`, { rerunTasks: ["report"] });
  assert.equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const [opening, ...events] = sseEvents(await res.text());
  // Opened before the repair is sent; its id names the repair it comes after.
  assert.equal(opening.id, `repair:${runId}:${repairId}`);
  assert.deepEqual({ ...opening.data, timestamp: 0 }, { status: null, timestamp: 0, run: null, accepted: "repair" });
  assert.ok(events.length >= 2);
  assert.deepEqual(events.map((e) => e.id), events.map((_, i) => `${runId}:${i + 1}`));
  assert.notEqual(events[0].data.status, "TERMINATED");
  assert.equal(events.at(-1).data.run.state.result_state, "SUCCESS");
  const sent = requestsTo(emu, "/runs/repair").length;
  const resumed = sseEvents(await (await post(`/train/runs/${runId}/repair?stream=true`, { rerunTasks: ["report"] }, { "last-event-id": `${runId}:1` })).text());
  assert.equal(resumed[0].id, `${runId}:2`);
  assert.equal(requestsTo(emu, "/runs/repair").length, sent);
});

test("repair params: a Zod schema and a job's own parameters check them before sending", async (t) => {
  const emu = await emulator(t, { jobs: [FAILING, { ...FAILING, id: 8 }] });
  const api = jobsFor(
    t,
    { jobs: { train: { jobParameters: true }, typed: { jobId: 8, jobParameters: true, params: z.object({ date: z.string() }) } } },
    patEnv(emu, { train: 7 }),
  );
  const runId = await failedRun(emu, api);
  const typedRun = await failedRun(emu, api, "typed", { date: "today" });
  await assert.rejects(
    api("train").repairRun(runId, { rerunAllFailedTasks: true, params: { day: "x" } }),
    (e) => e instanceof ValidationError && /unknown parameter "day" for this job \(it defines: date\)/.test(e.message),
  );
  await assert.rejects(api("typed").repairRun(typedRun, { rerunAllFailedTasks: true, params: { date: 5 } }), ValidationError);
  assert.deepEqual(requestsTo(emu, "/runs/repair"), []);
  const ok = await api("train").repairRun(runId, { rerunAllFailedTasks: true, params: { date: 20261201 } });
  assert.equal(ok.ok, true);
  assert.deepEqual(requestsTo(emu, "/runs/repair")[0].body.job_parameters, { date: "20261201" });
  // Without params the repair keeps the run's own (the schema is not asked for them); `{}` is
  // the same as none.
  assert.equal((await api("typed").repairRun(typedRun, { rerunAllFailedTasks: true })).ok, true);
  const another = await failedRun(emu, api, "typed", { date: "today" });
  assert.equal((await api("typed").repairRun(another, { rerunAllFailedTasks: true, params: {} })).ok, true);
  assert.equal(requestsTo(emu, "/runs/repair").at(-1).body.job_parameters, undefined);
});
