// runNow finishes through the runtime's one queue of finished calls (no promise per call on the
// native side): concurrent calls each get their own answer, a call keeps the process alive
// until it settles, and its failures still reach the caller as before.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { API, JOB, at, emulator, jobsFor, patEnv } from "./support/emulator.mjs";

const require = createRequire(import.meta.url);
const PACKAGE = require.resolve("appkit-jobs");

test("concurrent runNow calls each resolve to their own run", async (t) => {
  const emu = await emulator(t);
  const jobs = jobsFor(t, { jobs: { etl: { taskType: "notebook" } } }, patEnv(emu));
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => jobs("etl").runNow({ n: String(i) })));
  assert.ok(results.every((r) => r.ok), "every call succeeded");
  const runIds = results.map((r) => r.data.run_id);
  assert.equal(new Set(runIds).size, 50, "50 distinct runs");
  // Each answer is the run its own request started: the request carrying n = i started run i.
  const requests = at(emu, API.runNow);
  assert.equal(requests.length, 50);
  const byN = new Map(requests.map((r) => [r.body.notebook_params.n, r]));
  for (const [i, r] of results.entries()) {
    const run = await jobs("etl").getRun(r.data.run_id);
    assert.deepEqual(run.data.overriding_parameters?.notebook_params ?? run.data.job_parameters, { n: String(i) }, `call ${i} got its own run`);
    assert.ok(byN.has(String(i)));
  }
});

test("runNow rejections and upstream failures keep their shapes", async (t) => {
  const emu = await emulator(t);
  const jobs = jobsFor(t, { jobs: { etl: { taskType: "notebook" } } }, patEnv(emu));
  // A caller's mistake rejects, never throws synchronously.
  const cyclic = {};
  cyclic.self = cyclic;
  let returned;
  assert.doesNotThrow(() => {
    returned = jobs("etl").runNow(cyclic);
  });
  await assert.rejects(returned, (e) => e.name === "ValidationError" && /refers back to itself/.test(e.message));
  await assert.rejects(jobs("etl").runNow({ when: () => 1 }), { name: "ValidationError" });
  assert.equal(at(emu, API.runNow).length, 0, "nothing was sent");
  // An upstream failure resolves to { ok: false } with the status text only.
  emu.injectFault({ path: API.runNow, status: 403, times: 1 });
  assert.deepEqual(await jobs("etl").runNow(), { ok: false, status: 403, message: "Forbidden" });
  // A job without a valid id rejects with JOB_ID_MISSING.
  const missing = jobsFor(t, { jobs: { nojob: {} } }, patEnv(emu));
  await assert.rejects(missing("nojob").runNow(), { code: "JOB_ID_MISSING" });
});

test("a runNow still out keeps the process alive until it settles", async (t) => {
  const emu = await emulator(t);
  // The answer comes 300 ms later; nothing else keeps the child's event loop busy meanwhile.
  emu.injectFault({ path: API.runNow, delayMs: 300, times: 1 });
  const script = `
    const { createJobs } = require(${JSON.stringify(PACKAGE)});
    createJobs({}, { env: JSON.parse(process.env.JOBS_ENV) })("etl").runNow().then(
      (r) => console.log("settled " + JSON.stringify(r.ok)),
      (e) => console.log("rejected " + e.code),
    );`;
  const child = spawn(process.execPath, ["-e", script], { env: { ...process.env, JOBS_ENV: JSON.stringify(patEnv(emu)) }, stdio: ["ignore", "pipe", "inherit"], timeout: 60_000 });
  let out = "";
  child.stdout.on("data", (c) => (out += c));
  const code = await new Promise((resolve) => child.once("exit", resolve));
  assert.equal(code, 0);
  assert.equal(out.trim(), "settled true", "the process waited for the answer");
  assert.equal(at(emu, API.runNow).length, 1);
  assert.equal(JOB.etl, at(emu, API.runNow)[0].body.job_id);
});
