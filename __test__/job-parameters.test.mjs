// Parameters from the job's own definition (jobParameters without a params schema): checked
// before sending (ValidationError naming the unknown key and the defined ones, 400 on the route
// with the same message), values sent as strings, the definition read once through the read
// cache, and exposed as a JSON Schema through the client config; an explicit schema still wins.
import test from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { emulator, jobsFor, patEnv, requestsTo, API, JOB } from "./support/emulator.mjs";
import { routes } from "./support/http.mjs";

const require = createRequire(import.meta.url);
const { ValidationError } = require("appkit-jobs");

// Sample job 1001 defines `date` (default "today") and `mode` (default "full").
const MESSAGE = 'Parameter validation failed for job "nightly": unknown parameter "dat" for this job (it defines: date, mode)';

test("runNow checks params against the job's definition before sending, values as strings", async (t) => {
  const emu = await emulator(t);
  const api = jobsFor(t, { jobs: { nightly: { jobParameters: true } } }, patEnv(emu, { nightly: JOB.etl }));
  await assert.rejects(api("nightly").runNow({ date: "2026-12-01", dat: "x" }), (e) => {
    assert.ok(e instanceof ValidationError);
    assert.equal(e.message, MESSAGE);
    return true;
  });
  assert.deepEqual(requestsTo(emu, API.runNow), []);
  const started = await api("nightly").runNow({ date: 20261201, mode: true });
  assert.equal(started.ok, true);
  assert.deepEqual(requestsTo(emu, API.runNow)[0].body.job_parameters, { date: "20261201", mode: "true" });
  await api("nightly").runNow({ mode: "incremental" });
  // One definition read for the three calls (the read cache, per job and identity).
  assert.equal(requestsTo(emu, API.getJob).length, 1);
});

test("an explicit params schema wins over the definition; other jobs never read it", async (t) => {
  const emu = await emulator(t);
  const schema = { type: "object", properties: { anything: { type: "string" } } };
  const api = jobsFor(
    t,
    { jobs: { nightly: { jobParameters: true, params: schema }, notebook: { taskType: "notebook" } } },
    patEnv(emu, { nightly: JOB.etl, notebook: JOB.etl }),
  );
  assert.equal((await api("nightly").runNow({ anything: "x" })).ok, true);
  assert.equal((await api("notebook").runNow({ whatever: "x" })).ok, true);
  assert.deepEqual(requestsTo(emu, API.getJob), []);
});

test("the run route answers 400 with the same message; the client config carries the definition as a schema", async (t) => {
  const emu = await emulator(t);
  const schema = { type: "object", properties: { day: { type: "string" } } };
  const { base, handler } = await routes(t, {
    env: patEnv(emu, { nightly: JOB.etl }),
    jobs: { nightly: { jobParameters: true }, explicit: { jobId: JOB.etl, jobParameters: true, params: schema } },
  });
  const res = await fetch(`${base}/api/jobs/nightly/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ params: { dat: "x" } }),
  });
  assert.equal(res.status, 400);
  assert.deepEqual(await res.json(), { error: MESSAGE, code: "VALIDATION_ERROR", plugin: "jobs" });
  assert.deepEqual(requestsTo(emu, API.runNow), []);

  const config = await handler.loadClientConfig();
  assert.deepEqual(config.jobs.nightly, {
    taskType: null,
    params: {
      type: "object",
      additionalProperties: false,
      properties: { date: { type: "string", default: "today" }, mode: { type: "string", default: "full" } },
    },
  });
  assert.deepEqual(config.jobs.explicit.params, schema);
  assert.deepEqual(handler.clientConfig(), config);
});

test("a definition that cannot be read leaves the form empty and fails nothing else", async (t) => {
  const emu = await emulator(t);
  emu.injectFault({ path: API.getJob, status: 403, errorCode: "PERMISSION_DENIED", times: 10 });
  const { handler } = await routes(t, { env: patEnv(emu, { nightly: JOB.etl }), jobs: { nightly: { jobParameters: true } } });
  const config = await handler.loadClientConfig();
  assert.equal(config.jobs.nightly.params, null);
  // runNow cannot check the params, so it reports the read's failure rather than guess.
  assert.deepEqual(await handler.jobs("nightly").runNow({ date: "x" }), { ok: false, status: 403, message: "Forbidden" });
  assert.deepEqual(requestsTo(emu, API.runNow), []);
});
