// Conformance: the official Databricks JS SDK (@databricks/sdk-experimental), unmodified, against
// the emulator. Every call goes through the SDK's own request, pagination, retry and error code.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { WorkspaceClient, ApiError } from "@databricks/sdk-experimental";
import { startEmulator } from "appkit-jobs/emulator";

const JOBS = [
  { id: 11, name: "single", taskType: "notebook", queueMs: 100, pendingMs: 100, durationMs: 1000, terminatingMs: 100,
    parameters: [{ name: "date", default: "today" }] },
  { id: 12, name: "wide", taskType: "notebook", taskCount: 150, durationMs: 1000 },
  { id: 13, name: "failing", taskType: "python_wheel", outcome: "FAILED", errorMessage: "boom in the wheel" },
  // extract -> {transform (fails; its repair succeeds), fan (for-each)} -> load; two past runs.
  {
    id: 14,
    name: "graph",
    queueMs: 0,
    pendingMs: 100,
    durationMs: 500,
    terminatingMs: 100,
    tasks: [
      { taskKey: "extract" },
      { taskKey: "transform", dependsOn: ["extract"], outcome: "FAILED", type: "python_wheel" },
      { taskKey: "fan", dependsOn: ["extract"], forEach: { inputs: [{ region: "eu" }, { region: "us" }, { region: "ap" }], concurrency: 2 } },
      { taskKey: "load", dependsOn: ["transform", "fan"], type: "sql" },
    ],
    history: [
      { outcome: "SUCCESS", durationMs: 2600, agoMs: 7_200_000 },
      { outcome: "SUCCESS", durationMs: 2400, agoMs: 3_600_000 },
    ],
  },
];

let emu;
let w;

before(async () => {
  emu = await startEmulator({
    jobs: JOBS,
    timeScale: 0,
    users: [{ token: "viewer-token", userName: "viewer@example.com", defaultPermission: "CAN_VIEW" }],
  });
  w = new WorkspaceClient({ host: emu.url, token: emu.token, authType: "pat" });
});

after(async () => {
  await emu?.stop();
});

test("runNow, getRun, and the SDK's own wait loop", async () => {
  const started = await w.jobs.runNow({ job_id: 11, job_parameters: { date: "2024-05-01" } });
  assert.equal(typeof started.run_id, "number");
  assert.equal(started.number_in_job, 1);
  let run = await w.jobs.getRun({ run_id: started.run_id });
  assert.equal(run.state.life_cycle_state, "QUEUED");
  assert.equal(run.status.state, "QUEUED");
  assert.equal(run.job_id, 11);
  assert.equal(run.tasks[0].run_id, started.run_id + 1);
  assert.deepEqual(run.job_parameters, [{ name: "date", default: "today", value: "2024-05-01" }]);
  emu.advanceTime(10_000);
  run = await started.wait();
  assert.equal(run.state.life_cycle_state, "TERMINATED");
  assert.equal(run.state.result_state, "SUCCESS");
  assert.ok(run.end_time > run.start_time);
  assert.ok(run.run_page_url.startsWith(emu.url));
});

test("getRunOutput: single-task parent works, multi-task parent is a typed 400, task runs work", async () => {
  const single = await w.jobs.runNow({ job_id: 11, notebook_params: { k: "v" } });
  const wide = await w.jobs.runNow({ job_id: 12 });
  emu.advanceTime(60_000);
  const out = await w.jobs.getRunOutput({ run_id: single.run_id });
  const echoed = JSON.parse(out.notebook_output.result);
  assert.deepEqual(echoed.overriding_parameters, { notebook_params: { k: "v" } });
  assert.equal(out.metadata.run_id, single.run_id);

  await assert.rejects(w.jobs.getRunOutput({ run_id: wide.run_id }), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.statusCode, 400);
    assert.equal(err.errorCode, "INVALID_PARAMETER_VALUE");
    return true;
  });
  const page1 = await w.jobs.getRun({ run_id: wide.run_id });
  assert.equal(page1.tasks.length, 100);
  assert.ok(page1.next_page_token);
  const page2 = await w.jobs.getRun({ run_id: wide.run_id, page_token: page1.next_page_token });
  assert.equal(page2.tasks.length, 50);
  assert.equal(page2.next_page_token, undefined);
  const lastTask = page2.tasks[49];
  const taskOut = await w.jobs.getRunOutput({ run_id: lastTask.run_id });
  assert.equal(taskOut.metadata.run_id, lastTask.run_id);
  assert.match(taskOut.notebook_output.result, /task_150/);

  const failing = await w.jobs.runNow({ job_id: 13 });
  emu.advanceTime(60_000);
  const failedOut = await w.jobs.getRunOutput({ run_id: failing.run_id });
  assert.equal(failedOut.error, "boom in the wheel");
  assert.equal(failedOut.metadata.state.result_state, "FAILED");
});

test("listRuns with the SDK's pagination: newest first across pages of 25", async () => {
  emu.reset();
  const ids = [];
  for (let i = 0; i < 30; i++) {
    ids.push((await w.jobs.runNow({ job_id: 11 })).run_id);
    emu.advanceTime(1);
  }
  emu.clearRequests();
  const seen = [];
  for await (const run of w.jobs.listRuns({ job_id: 11, limit: 25 })) seen.push(run.run_id);
  assert.deepEqual(seen, ids.slice().reverse());
  const listCalls = emu.requests().filter((e) => e.path === "/api/2.2/jobs/runs/list");
  assert.equal(listCalls.length, 2);
  assert.match(listCalls[1].query, /page_token=/);

  const active = [];
  emu.setRunState(ids[29], "SUCCESS");
  for await (const run of w.jobs.listRuns({ job_id: 11, active_only: true })) active.push(run.run_id);
  assert.equal(active.length, 29);
  assert.ok(!active.includes(ids[29]));

  await assert.rejects(
    (async () => {
      for await (const _ of w.jobs.listRuns({ job_id: 11, limit: 26 })) void _;
    })(),
    (err) => err instanceof ApiError && err.statusCode === 400 && err.errorCode === "INVALID_PARAMETER_VALUE",
  );
});

test("cancelRun moves a run through TERMINATING to CANCELED", async () => {
  const { run_id } = await w.jobs.runNow({ job_id: 11 });
  emu.advanceTime(500);
  await w.jobs.cancelRun({ run_id });
  assert.equal((await w.jobs.getRun({ run_id })).state.life_cycle_state, "TERMINATING");
  emu.advanceTime(1000);
  const run = await w.jobs.getRun({ run_id });
  assert.equal(run.state.life_cycle_state, "TERMINATED");
  assert.equal(run.state.result_state, "CANCELED");
  assert.equal(run.status.termination_details.code, "USER_CANCELED");
});

test("jobs.get with task pages", async () => {
  const job = await w.jobs.get({ job_id: 12 });
  assert.equal(job.settings.name, "wide");
  assert.equal(job.settings.tasks.length, 100);
  const next = await w.jobs.get({ job_id: 12, page_token: job.next_page_token });
  assert.equal(next.settings.tasks.length, 50);
  const single = await w.jobs.get({ job_id: 11 });
  assert.deepEqual(single.settings.parameters, [{ name: "date", default: "today" }]);
});

test("typed errors: missing run/job, permission denied, unauthenticated", async () => {
  const expectApiError = (status, code, message) => (err) => {
    assert.ok(err instanceof ApiError, String(err));
    assert.equal(err.statusCode, status);
    assert.equal(err.errorCode, code);
    if (message) assert.equal(err.message, message);
    return true;
  };
  await assert.rejects(w.jobs.getRun({ run_id: 4 }), expectApiError(400, "INVALID_PARAMETER_VALUE", "Run 4 does not exist."));
  await assert.rejects(w.jobs.get({ job_id: 99 }), expectApiError(400, "INVALID_PARAMETER_VALUE", "Job 99 does not exist."));
  await assert.rejects(
    w.jobs.runNow({ job_id: 11, notebook_params: { a: "1" }, jar_params: ["x"] }),
    expectApiError(400, "INVALID_PARAMETER_VALUE"),
  );
  const viewer = new WorkspaceClient({ host: emu.url, token: "viewer-token", authType: "pat" });
  assert.equal((await viewer.jobs.get({ job_id: 11 })).job_id, 11);
  await assert.rejects(viewer.jobs.runNow({ job_id: 11 }), expectApiError(403, "PERMISSION_DENIED"));
  const stranger = new WorkspaceClient({ host: emu.url, token: "not-a-token", authType: "pat" });
  await assert.rejects(stranger.jobs.get({ job_id: 11 }), expectApiError(401, "UNAUTHENTICATED"));
});

test("the SDK retries an injected 429 and succeeds; a 503 surfaces as its typed error", async () => {
  emu.clearRequests();
  emu.injectFault({ path: "/api/2.2/jobs/get", status: 429, retryAfter: 1 });
  const job = await w.jobs.get({ job_id: 11 });
  assert.equal(job.job_id, 11);
  assert.deepEqual(
    emu.requests().map((e) => e.status),
    [429, 200],
  );
  // This SDK does not retry 503 (only 429 and a few transient messages).
  emu.injectFault({ path: "/api/2.2/jobs/get", status: 503, retryAfter: 1 });
  await assert.rejects(w.jobs.get({ job_id: 11 }), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.statusCode, 503);
    assert.equal(err.errorCode, "TEMPORARILY_UNAVAILABLE");
    return true;
  });
});

test("OAuth M2M through the SDK: discovery, client credentials, current user", async () => {
  const m2m = new WorkspaceClient({
    host: emu.url,
    clientId: emu.clientId,
    clientSecret: emu.clientSecret,
    authType: "oauth-m2m",
  });
  const me = await m2m.currentUser.me();
  assert.equal(me.userName, "emulator-sp@example.com");
  assert.equal((await m2m.jobs.get({ job_id: 11 })).job_id, 11);
  const paths = emu.requests().map((e) => e.path);
  assert.ok(paths.includes("/oidc/v1/token"));
  assert.ok(emu.requests().some((e) => e.identity === `oauth:${emu.clientId}`));
});

test("repairRun: the SDK's waiter follows the repaired run; a later repair needs latest_repair_id", async () => {
  const started = await w.jobs.runNow({ job_id: 13 });
  emu.advanceTime(60_000);
  const failed = await started.wait();
  assert.equal(failed.state.result_state, "FAILED");
  const repair = await w.jobs.repairRun({ run_id: started.run_id, rerun_all_failed_tasks: true });
  assert.equal(typeof repair.repair_id, "number");
  // The run is active again at once, so the waiter cannot stop at the old end.
  const during = await w.jobs.getRun({ run_id: started.run_id, include_history: true });
  assert.notEqual(during.state.life_cycle_state, "TERMINATED");
  assert.deepEqual(during.repair_history.map((i) => [i.type, i.id]), [["ORIGINAL", undefined], ["REPAIR", repair.repair_id]]);
  emu.advanceTime(60_000);
  const done = await repair.wait();
  assert.equal(done.state.result_state, "SUCCESS");
  assert.equal(done.tasks.length, 2);
  await assert.rejects(w.jobs.repairRun({ run_id: started.run_id, rerun_all_failed_tasks: true }), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.statusCode, 400);
    assert.equal(err.message, "The latest repair ID needs to be provided in order to create a new repair");
    return true;
  });
});

test("a task graph through the SDK: BLOCKED and UPSTREAM_FAILED tasks, for-each iterations, repairRun with rerun_dependent_tasks, listRuns with expand_tasks", async () => {
  const started = await w.jobs.runNow({ job_id: 14 });
  let run = await w.jobs.getRun({ run_id: started.run_id });
  assert.deepEqual(
    run.tasks.map((t) => [t.task_key, t.state.life_cycle_state, t.status.state]),
    [
      ["extract", "PENDING", "PENDING"],
      ["transform", "BLOCKED", "BLOCKED"],
      ["fan", "BLOCKED", "BLOCKED"],
      ["load", "BLOCKED", "BLOCKED"],
    ],
  );
  assert.deepEqual(run.tasks[3].depends_on, [{ task_key: "transform" }, { task_key: "fan" }]);
  assert.equal(run.tasks[3].run_if, "ALL_SUCCESS");
  emu.advanceTime(60_000);
  run = await started.wait();
  assert.equal(run.state.result_state, "FAILED");
  const byKey = Object.fromEntries(run.tasks.map((t) => [t.task_key, t]));
  assert.equal(byKey.transform.state.result_state, "FAILED");
  assert.equal(byKey.load.state.result_state, "UPSTREAM_FAILED");
  assert.equal(byKey.load.status.termination_details.code, "SKIPPED");
  assert.equal(byKey.transform.start_time, byKey.extract.end_time);
  assert.deepEqual(byKey.fan.for_each_task.stats.task_run_stats, {
    total_iterations: 3,
    scheduled_iterations: 3,
    active_iterations: 0,
    completed_iterations: 3,
    succeeded_iterations: 3,
    failed_iterations: 0,
  });
  assert.deepEqual(JSON.parse(byKey.fan.for_each_task.inputs), [{ region: "eu" }, { region: "us" }, { region: "ap" }]);
  const fan = await w.jobs.getRun({ run_id: byKey.fan.run_id });
  assert.equal(fan.iterations.length, 3);
  assert.deepEqual(
    fan.iterations.map((i) => [i.task_key, i.state.result_state]),
    Array(3).fill(["fan_iteration", "SUCCESS"]),
  );
  const iteration = await w.jobs.getRunOutput({ run_id: fan.iterations[1].run_id });
  assert.deepEqual(JSON.parse(iteration.notebook_output.result).input, { region: "us" });

  const repair = await w.jobs.repairRun({ run_id: started.run_id, rerun_tasks: ["transform"], rerun_dependent_tasks: true });
  const during = await w.jobs.getRun({ run_id: started.run_id, include_history: true });
  const [, item] = during.repair_history;
  assert.equal(item.type, "REPAIR");
  assert.equal(item.id, repair.repair_id);
  assert.deepEqual(
    item.task_run_ids.map((id) => during.tasks.find((t) => t.run_id === id).task_key),
    ["transform", "load"],
    "rerun tasks and their dependents, in graph order",
  );
  emu.advanceTime(60_000);
  const repaired = await repair.wait();
  assert.equal(repaired.state.result_state, "SUCCESS");
  assert.equal(repaired.tasks.length, 6);

  const listed = [];
  for await (const r of w.jobs.listRuns({ job_id: 14, expand_tasks: true, completed_only: true })) listed.push(r);
  assert.deepEqual(
    listed.map((r) => [r.state.result_state, r.tasks.length]),
    [
      ["SUCCESS", 6],
      ["SUCCESS", 4],
      ["SUCCESS", 4],
    ],
  );
  const [, newest] = listed;
  assert.equal(newest.run_duration, 2400);
  assert.equal(newest.end_time - newest.start_time, newest.queue_duration + newest.run_duration);
  for (const t of newest.tasks) assert.ok(t.start_time >= newest.start_time && t.end_time <= newest.end_time, JSON.stringify(t));
});
