// The pure helpers of appkit-jobs/react (lib/react/model.mjs) on runs as the routes give them:
// what the timeline of a card (JobRunTimeline, and the demo's plain page) says about a run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { timelineModel } from "appkit-jobs/react/hooks";

const ended = { state: { life_cycle_state: "TERMINATED", result_state: "SUCCESS" }, start_time: 1_000, end_time: 14_000 };

const task = (key, life, result) => ({
  task_key: key,
  run_id: key.length,
  state: { life_cycle_state: life, ...(result ? { result_state: result } : {}) },
  start_time: 2_000,
  end_time: life === "TERMINATED" ? 5_000 : 0,
});

test("a run from the runs list (no tasks) shows no task count: its tasks are not known", () => {
  const model = timelineModel({ run: ended, progress: null });
  assert.equal(model.eta, "SUCCESS after 13 s");
  assert.deepEqual(model.bars, []);
  assert.equal(model.fraction, 1);

  const active = { state: { life_cycle_state: "RUNNING" }, start_time: 1_000 };
  assert.equal(timelineModel({ run: active, progress: null }).eta, "0 s elapsed · no history yet");
});

test("a run read with its tasks counts them, with or without an update's progress", () => {
  const run = { ...ended, state: { life_cycle_state: "RUNNING" }, end_time: 0, tasks: [task("a", "TERMINATED", "SUCCESS"), task("bb", "RUNNING")] };
  assert.match(timelineModel({ run, progress: null }).eta, /^1\/2 tasks done · /);
  const progress = { tasksTotal: 2, tasksDone: 1, tasksFailed: 0, tasksRunning: 1, forEach: [], elapsedMs: 3_000, expectedMs: 10_000, taskExpectedMs: {}, fraction: 0.4, since: "run" };
  assert.equal(timelineModel({ run, progress }).eta, "1/2 tasks done · about 7 s left");
  // A run whose task list is known to be empty says so.
  assert.equal(timelineModel({ run: { ...ended, tasks: [] }, progress: null }).eta, "0/0 tasks done · SUCCESS after 13 s");
});

test("who started a run: a label and a tooltip from started_by, a dash for a run started elsewhere", async () => {
  const { startedByLabel, startedByTitle } = await import("appkit-jobs/react/hooks");
  const alice = { ...ended, started_by: { email: "alice@example.com", user_id: "42", user_name: "alice" } };
  assert.equal(startedByLabel(alice), "alice");
  assert.equal(startedByTitle(alice), "alice@example.com · alice · 42");
  assert.equal(startedByLabel({ ...ended, started_by: { email: "bob@example.com", user_id: null, user_name: null } }), "bob@example.com");
  assert.equal(startedByLabel({ ...ended, started_by: null }), "—");
  assert.equal(startedByLabel(ended), "—", "a server without the ledger's field");
  assert.equal(startedByTitle(ended), "");
});
