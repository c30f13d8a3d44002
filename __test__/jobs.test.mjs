// The programmatic API (createJobs / JobHandle) against the emulator: every method, the
// task-type mapping, validation before anything is sent, Zod and JSON Schema params, scope
// checks, ids, env discovery and asUser.
import { test } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import { createJobs, jobs, JobsError, ValidationError } from "appkit-jobs";
import { emulator, JOB, patEnv, requestsTo } from "./support/emulator.mjs";

test("every JobHandle method answers ExecutionResult from the emulator", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({ pollIntervalMs: 20, jobs: { etl: { taskType: "notebook" } } }, { env: patEnv(emu, { etl: JOB.etl }) });
  t.after(() => api.close());
  const etl = api("etl");

  const none = await etl.lastRun();
  assert.deepEqual(none, { ok: true, data: undefined });

  const started = await etl.runNow({ date: "2025-01-01" });
  assert.equal(started.ok, true);
  const runId = started.data.run_id;
  assert.equal(typeof runId, "number");
  assert.equal(started.data.number_in_job, 1);

  const updates = [];
  for await (const u of etl.runAndWait({ date: "2025-01-02" })) updates.push(u);
  assert.ok(updates.length >= 1);
  const final = updates.at(-1);
  assert.equal(final.status, "TERMINATED");
  assert.equal(typeof final.timestamp, "number");
  assert.equal(final.run.job_id, JOB.etl);
  assert.equal(final.run.state.result_state, "SUCCESS");
  for (const u of updates) assert.deepEqual(Object.keys(u).sort(), ["changes", "progress", "run", "status", "timestamp"]);

  const list = await etl.listRuns({ limit: 10 });
  assert.equal(list.ok, true);
  assert.equal(list.data.length, 2);
  assert.ok(list.data.every((r) => r.job_id === JOB.etl));

  const last = await etl.lastRun();
  assert.equal(last.ok, true);
  assert.equal(last.data.run_id, final.run.run_id); // newest first

  const run = await etl.getRun(runId);
  assert.equal(run.ok, true);
  assert.equal(run.data.run_id, runId);
  assert.ok(Array.isArray(run.data.tasks));

  emu.setRunState(runId, "SUCCESS");
  const output = await etl.getRunOutput(runId);
  assert.equal(output.ok, true);
  assert.equal(typeof output.data.notebook_output.result, "string");

  const job = await etl.getJob();
  assert.equal(job.ok, true);
  assert.equal(job.data.job_id, JOB.etl);
  assert.equal(job.data.settings.name, "nightly-etl");

  const third = await etl.runNow({ date: "2025-01-03" });
  const cancelled = await etl.cancelRun(third.data.run_id);
  assert.deepEqual(cancelled, { ok: true, data: undefined });
  assert.equal(requestsTo(emu, "/jobs/runs/cancel").length, 1);
  assert.deepEqual(requestsTo(emu, "/jobs/runs/cancel")[0].body, { run_id: third.data.run_id });

  // Re-attach to the cancelled run: it ends in a terminal state.
  const seen = [];
  for await (const u of etl.watchRun(third.data.run_id)) seen.push(u.status);
  assert.equal(seen.at(-1), "TERMINATED");
});

test("task-type mapping reaches run-now as the spec's fields", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const env = patEnv(emu, {
    nb: JOB.etl,
    wheel: JOB.etl,
    script: JOB.etl,
    jar: JOB.etl,
    sql: JOB.etl,
    dbt: JOB.etl,
    raw: JOB.etl,
    jp: JOB.etl,
  });
  const api = createJobs(
    {
      pollIntervalMs: 20,
      jobs: {
        nb: { taskType: "notebook" },
        wheel: { taskType: "python_wheel" },
        script: { taskType: "python_script" },
        jar: { taskType: "spark_jar" },
        sql: { taskType: "sql" },
        dbt: { taskType: "dbt" },
        jp: { taskType: "notebook", jobParameters: true },
      },
    },
    { env },
  );
  t.after(() => api.close());
  const cases = [
    ["nb", { a: 1, b: true, c: "x" }, { notebook_params: { a: "1", b: "true", c: "x" } }],
    ["wheel", { a: 2 }, { python_named_params: { a: "2" } }],
    ["script", { args: ["--x", 3] }, { python_params: ["--x", "3"] }],
    ["jar", { args: [1, "two"] }, { jar_params: ["1", "two"] }],
    ["sql", { day: "mon", big: 5000000000 }, { sql_params: { day: "mon", big: "5000000000" } }],
    ["raw", { notebook_params: { k: "v" }, queue: { enabled: true } }, { notebook_params: { k: "v" }, queue: { enabled: true } }],
    ["jp", { date: "2026-12-01", mode: 4 }, { job_parameters: { date: "2026-12-01", mode: "4" } }],
  ];
  for (const [key, params, expected] of cases) {
    const r = await api(key).runNow(params);
    assert.equal(r.ok, true, key);
    const { idempotency_token, ...body } = requestsTo(emu, "/jobs/run-now").at(-1)?.body;
    assert.equal(typeof idempotency_token, "string", key);
    assert.ok(idempotency_token.length > 0 && idempotency_token.length <= 64, key);
    assert.deepEqual(body, { job_id: JOB.etl, ...expected }, key);
  }
  // dbt takes no params: rejected before anything is sent; without params it runs.
  const before = emu.requests().length;
  await assert.rejects(api("dbt").runNow({ x: 1 }), (e) => e instanceof ValidationError && /dbt/.test(e.message));
  assert.equal(emu.requests().length, before);
  assert.equal((await api("dbt").runNow()).ok, true);
  assert.deepEqual(Object.keys(requestsTo(emu, "/jobs/run-now").at(-1)?.body).sort(), ["idempotency_token", "job_id"]);
  // An empty object asks for nothing: runNow and runAndWait start the run as without params,
  // on jobs that take none (dbt) and on jobs without a task type or schema (raw).
  for (const key of ["dbt", "raw"]) {
    assert.equal((await api(key).runNow({})).ok, true, key);
    assert.deepEqual(Object.keys(requestsTo(emu, "/jobs/run-now").at(-1)?.body).sort(), ["idempotency_token", "job_id"], key);
    let last;
    for await (const u of api(key).runAndWait({})) last = u;
    assert.equal(last.status, "TERMINATED", key);
    assert.deepEqual(Object.keys(requestsTo(emu, "/jobs/run-now").at(-1)?.body).sort(), ["idempotency_token", "job_id"], key);
  }
});

test("a Zod schema is honoured in JS (transforms, defaults) and failures are rejected before any request", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const schema = z.object({
    day: z.string().transform((s) => s.toUpperCase()),
    n: z.number().default(7),
  });
  const api = createJobs({ jobs: { etl: { taskType: "notebook", params: schema } } }, { env: patEnv(emu, { etl: JOB.etl }) });
  const etl = api("etl");

  const ok = await etl.runNow({ day: "mon" });
  assert.equal(ok.ok, true);
  assert.deepEqual(requestsTo(emu, "/jobs/run-now").at(-1)?.body.notebook_params, { day: "MON", n: "7" });

  emu.clearRequests();
  const err = await etl.runNow({ day: 42 }).then(
    () => assert.fail("expected a rejection"),
    (e) => e,
  );
  assert.ok(err instanceof ValidationError);
  assert.ok(err instanceof JobsError);
  assert.ok(err.message.startsWith('Parameter validation failed for job "etl":'), err.message);
  assert.match(err.message, /day/);
  assert.equal(err.statusCode, 400);
  assert.equal(err.status, 400);
  assert.equal(err.code, "VALIDATION_ERROR");
  // runAndWait validates before triggering too.
  await assert.rejects(async () => {
    for await (const _ of etl.runAndWait({})) assert.fail("no update expected");
  }, ValidationError);
  assert.deepEqual(emu.requests(), []);

  // An async Standard Schema is awaited.
  const asyncSchema = {
    "~standard": {
      version: 1,
      vendor: "test",
      validate: async (v) => (v.ok === true ? { value: { ok: "yes" } } : { issues: [{ message: "ok must be true", path: ["ok"] }] }),
    },
  };
  const api2 = createJobs({ jobs: { etl: { taskType: "sql", params: asyncSchema } } }, { env: patEnv(emu, { etl: JOB.etl }) });
  await assert.rejects(api2("etl").runNow({ ok: false }), /Parameter validation failed for job "etl": ok: ok must be true/);
  assert.deepEqual(emu.requests(), []);
  assert.equal((await api2("etl").runNow({ ok: true })).ok, true);
  assert.deepEqual(requestsTo(emu, "/jobs/run-now").at(-1)?.body.sql_params, { ok: "yes" });
});

test("a plain JSON Schema is validated in Rust before anything is sent", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const schema = {
    type: "object",
    required: ["day"],
    properties: { day: { type: "string", pattern: "^[0-9]{4}-[0-9]{2}-[0-9]{2}$" }, dry: { type: "boolean" } },
    additionalProperties: false,
  };
  const api = createJobs({ jobs: { report: { taskType: "sql", params: schema } } }, { env: patEnv(emu, { report: JOB.sql }) });
  const report = api("report");
  for (const bad of [{}, { day: "yesterday" }, { day: "2025-01-01", extra: 1 }]) {
    const e = await report.runNow(bad).then(
      () => assert.fail("expected a rejection"),
      (err) => err,
    );
    assert.ok(e instanceof ValidationError, String(e));
    assert.ok(e.message.startsWith('Parameter validation failed for job "report":'), e.message);
    assert.equal(e.statusCode, 400);
  }
  await assert.rejects(
    async () => {
      for await (const _ of report.runAndWait({ day: 1 })) assert.fail("no update expected");
    },
    (e) => e instanceof ValidationError && e.message.startsWith('Parameter validation failed for job "report":'),
  );
  assert.deepEqual(emu.requests(), []);
  const ok = await report.runNow({ day: "2025-01-01", dry: true });
  assert.equal(ok.ok, true);
  assert.deepEqual(requestsTo(emu, "/jobs/run-now").at(-1)?.body.sql_params, { day: "2025-01-01", dry: "true" });
});

test("listRuns pages past 25 runs and clamps the limit to 1..100", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({}, { env: patEnv(emu, { etl: JOB.etl }) });
  const etl = api("etl");
  const ids = [];
  for (let i = 0; i < 105; i++) ids.push((await etl.runNow()).data.run_id);
  emu.clearRequests();

  const thirty = await etl.listRuns({ limit: 30 });
  assert.equal(thirty.ok, true);
  assert.deepEqual(
    thirty.data.map((r) => r.run_id),
    ids.slice(-30).reverse(),
  );
  const limits = requestsTo(emu, "/jobs/runs/list").map((r) => new URLSearchParams(r.query).get("limit"));
  assert.deepEqual(limits, ["25", "5"]);

  emu.clearRequests();
  const all = await etl.listRuns({ limit: 1000 }); // clamped to 100 of the 105 runs
  assert.deepEqual(
    all.data.map((r) => r.run_id),
    ids.slice(-100).reverse(),
  );
  assert.ok(requestsTo(emu, "/jobs/runs/list").every((r) => Number(new URLSearchParams(r.query).get("limit")) <= 25));

  const dflt = await etl.listRuns();
  assert.equal(dflt.data.length, 20);
  const one = await etl.listRuns({ limit: 0 });
  assert.equal(one.data.length, 1);
  assert.equal(one.data[0].run_id, ids.at(-1));
});

test("getRun, getRunOutput and cancelRun of another job's run answer 404 and never touch it", async (t) => {
  const emu = await emulator(t, { timeScale: 200, timeScale: 0 });
  const api = createJobs({}, { env: patEnv(emu, { a: JOB.etl, b: JOB.report }) });
  const other = (await api("b").runNow()).data.run_id;
  emu.clearRequests();

  for (const r of [await api("a").getRun(other), await api("a").getRunOutput(other), await api("a").cancelRun(other)]) {
    assert.deepEqual(r, { ok: false, status: 404, message: "Not Found" });
  }
  await assert.rejects(
    async () => {
      for await (const _ of api("a").watchRun(other)) assert.fail("no update expected");
    },
    (e) => e instanceof JobsError && e.statusCode === 404 && e.code === "NOT_FOUND",
  );
  assert.ok(emu.requests().length >= 1);
  assert.ok(emu.requests().every((r) => r.path.endsWith("/jobs/runs/get")), JSON.stringify(emu.requests().map((r) => r.path)));
  assert.equal(emu.getRun(other).state.life_cycle_state, "QUEUED"); // not cancelled

  // The run's own job still sees it.
  assert.equal((await api("b").getRun(other)).ok, true);
});

test("upstream failures keep their status with generic text only", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({}, { env: patEnv(emu, { etl: JOB.etl, gone: 777 }) });
  // A missing run: the API answers 400 INVALID_PARAMETER_VALUE with a message we must not leak.
  const missing = await api("etl").getRun(123456);
  assert.equal(missing.ok, false);
  assert.equal(missing.status, 400);
  assert.equal(missing.message, "Bad Request");
  // A missing job: 400 INVALID_PARAMETER_VALUE upstream (not 404), kept as such.
  const gone = await api("gone").getJob();
  assert.deepEqual(gone, { ok: false, status: 400, message: "Bad Request" });
  emu.injectFault({ path: "/api/2.2/jobs/get", status: 403, errorCode: "PERMISSION_DENIED", message: "secret detail dapi-leak" });
  const denied = await api("etl").getJob();
  assert.deepEqual(denied, { ok: false, status: 403, message: "Forbidden" });
});

test("multi-task getRunOutput aggregates each task's output", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({}, { env: patEnv(emu, { mixed: JOB.mixed }) });
  const mixed = api("mixed");
  const runId = (await mixed.runNow()).data.run_id;
  emu.setRunState(runId, "SUCCESS");
  const out = await mixed.getRunOutput(runId);
  assert.equal(out.ok, true);
  const run = emu.getRun(runId);
  assert.equal(out.data.metadata.run_id, runId);
  assert.deepEqual(
    out.data.tasks.map((x) => [x.task_key, x.run_id]),
    run.tasks.map((x) => [x.task_key, x.run_id]),
  );
  assert.ok(out.data.tasks.length > 1);
  // One runs/get-output per task, none on the parent (the API would answer 400).
  const outputs = requestsTo(emu, "/jobs/runs/get-output").map((r) => Number(new URLSearchParams(r.query).get("run_id")));
  assert.deepEqual(outputs.sort(), run.tasks.map((x) => x.run_id).sort());
});

test("run and job ids accept number and bigint; ids above 2^53 keep their precision", async (t) => {
  // Run ids start at 2^53 - 1 (the largest safe integer); each run of this one-task job also
  // takes an id for its task run, so the second run is 2^53 + 1: not a JS number, a bigint.
  const emu = await emulator(t, { timeScale: 200, firstRunId: Number.MAX_SAFE_INTEGER });
  const api = createJobs({ jobs: { etl: { jobId: String(JOB.etl) } } }, { env: patEnv(emu, {}) });
  const etl = api("etl");
  const first = (await etl.runNow()).data.run_id;
  const second = (await etl.runNow()).data.run_id;
  assert.equal(first, 9007199254740991);
  assert.equal(second, 9007199254740993n);
  assert.equal(emu.getRun(second).tasks[0].run_id, 9007199254740994n);
  const run = await etl.getRun(second);
  assert.equal(run.ok, true);
  assert.equal(run.data.run_id, 9007199254740993n);
  assert.equal(run.data.job_id, JOB.etl);
  assert.equal(requestsTo(emu, "/jobs/runs/get").at(-1).query, "run_id=9007199254740993");
  assert.equal((await etl.getRun("9007199254740993")).data.run_id, 9007199254740993n);
  const list = await etl.listRuns();
  assert.deepEqual(
    list.data.map((r) => r.run_id),
    [9007199254740993n, 9007199254740991],
  );
  // Watched, a run holding an integer beyond 2^53 crosses as a value: its ids stay exact.
  for (const [id, expected] of [
    [second, 9007199254740993n],
    [first, 9007199254740991],
  ]) {
    const updates = etl.watchRun(id);
    const { value } = await updates.next();
    assert.equal(value.run.run_id, expected);
    assert.equal(typeof value.run.tasks[0].run_id, "bigint");
    await updates.return();
  }
  for (const bad of [-1, 0, 1.5, "12abc", 2n ** 63n, null]) {
    await assert.rejects(etl.getRun(bad), (e) => e instanceof JobsError && e.code === "INVALID_REQUEST" && e.statusCode === 400, String(bad));
  }
});

test("small ids are plain numbers and accepted as number or bigint", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({}, { env: patEnv(emu, { etl: JOB.etl }) });
  const id = (await api("etl").runNow()).data.run_id;
  assert.equal(typeof id, "number");
  assert.equal((await api("etl").getRun(BigInt(id))).data.run_id, id);
  assert.equal((await api("etl").getRun(id)).data.run_id, id);
  // A watched update's run (JSON text parsed on first read) is an own enumerable property:
  // spread, JSON and deep equality see it, and it can be replaced.
  const updates = api("etl").watchRun(id);
  const { value } = await updates.next();
  await updates.return();
  assert.deepEqual(Object.keys(value), ["status", "timestamp", "run", "progress", "changes"]);
  const copy = { ...value };
  assert.equal(copy.run.run_id, id);
  assert.equal(JSON.parse(JSON.stringify(value)).run.run_id, id);
  assert.deepEqual(value, copy);
  value.run = "replaced";
  assert.equal(value.run, "replaced");
});

test("unknown keys, env discovery and the DATABRICKS_JOB_ID default rule", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const base = patEnv(emu, {});

  const single = createJobs({}, { env: { ...base, DATABRICKS_JOB_ID: String(JOB.etl) } });
  assert.deepEqual(single.keys, ["default"]);
  assert.equal((await single("default").getJob()).data.job_id, JOB.etl);

  // DATABRICKS_JOB_ID is ignored once another job is discovered or configured.
  const multi = createJobs({}, { env: { ...base, DATABRICKS_JOB_ID: "1", DATABRICKS_JOB_ETL: String(JOB.etl), DATABRICKS_JOB_: "5", DATABRICKS_JOB_EMPTY: "" } });
  assert.deepEqual(multi.keys, ["etl"]);
  const configured = createJobs({ jobs: { mine: {} } }, { env: { ...base, DATABRICKS_JOB_ID: "1" } });
  assert.deepEqual(configured.keys, ["mine"]);

  assert.throws(() => multi("nope"), (e) => e instanceof JobsError && e.message === 'Unknown job "nope". Available jobs: etl' && e.code === "UNKNOWN_JOB");

  // A configured key without an id: calls reject naming the env var to set; nothing is sent.
  emu.clearRequests();
  await assert.rejects(configured("mine").getJob(), (e) => e.code === "JOB_ID_MISSING" && /DATABRICKS_JOB_MINE/.test(e.message));
  await assert.rejects(configured("mine").runNow(), (e) => e.code === "JOB_ID_MISSING");
  assert.deepEqual(emu.requests(), []);

  // No host: a clear configuration error naming what to set.
  const nohost = createJobs({}, { env: { DATABRICKS_JOB_ETL: "1" } });
  await assert.rejects(nohost("etl").getJob(), (e) => e.code === "CONFIG_ERROR" && /DATABRICKS_HOST/.test(e.message));
});

test("jobs() returns AppKit plugin data whose exports() is the same callable", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const data = jobs({ jobs: { etl: { taskType: "notebook" } } });
  assert.equal(data.name, "jobs");
  assert.deepEqual(data.config, { jobs: { etl: { taskType: "notebook" } } });
  assert.deepEqual(jobs().config, {});
  assert.equal(typeof data.plugin, "function");
  const saved = { ...process.env };
  t.after(() => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  });
  Object.assign(process.env, patEnv(emu, { etl: JOB.etl }));
  const plugin = new data.plugin({ ...data.config, name: "jobs" });
  const exported = plugin.exports();
  assert.equal(typeof exported, "function");
  const r = await exported("etl").getJob();
  assert.equal(r.ok, true);
  assert.throws(() => exported("nope"), /^Error: Unknown job "nope"|Unknown job "nope"\. Available jobs: /);
});

test("asUser reads x-forwarded-access-token (express or plain headers, any case) and runs as the user", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  emu.addUser({ token: "user-token-alice", userName: "alice@example.com", defaultPermission: "CAN_MANAGE_RUN" });
  const api = createJobs({}, { env: patEnv(emu, { etl: JOB.etl }) });
  const etl = api("etl");

  await etl.asUser({ headers: { "X-Forwarded-Access-Token": "user-token-alice" } }).getJob();
  const expressLike = { headers: {}, header: (name) => (name.toLowerCase() === "x-forwarded-access-token" ? "user-token-alice" : undefined) };
  await etl.asUser(expressLike).runNow();
  await etl.getJob();
  const idents = emu.requests().map((r) => r.identity);
  assert.deepEqual(idents, ["user:alice@example.com", "user:alice@example.com", "service_principal"]);

  const prev = process.env.NODE_ENV;
  t.after(() => {
    if (prev === undefined) delete process.env.NODE_ENV;
    else process.env.NODE_ENV = prev;
  });
  process.env.NODE_ENV = "production";
  assert.throws(
    () => etl.asUser({ headers: {} }),
    (e) => e instanceof JobsError && e.statusCode === 401 && e.code === "UNAUTHENTICATED" && /x-forwarded-access-token/.test(e.message),
  );
  process.env.NODE_ENV = "development";
  const warnings = [];
  const warn = console.warn;
  console.warn = (...a) => warnings.push(a.join(" "));
  try {
    const dev = etl.asUser({ headers: {} });
    emu.clearRequests();
    await dev.listRuns();
    assert.equal(emu.requests()[0].identity, "service_principal");
    assert.equal(warnings.length, 1);
  } finally {
    console.warn = warn;
  }
});

test("config mistakes throw CONFIG_ERROR naming the option; a fast poll interval is raised to the floor", async (t) => {
  for (const [config, message] of [
    [{ pollIntervalMs: -5 }, "pollIntervalMs must be a non-negative number of milliseconds, got -5"],
    [{ timeout: -1 }, "timeout must be a non-negative number of milliseconds, got -1"],
    [{ jobs: { etl: { waitTimeout: -1 } } }, "jobs.etl.waitTimeout must be a non-negative number of milliseconds, got -1"],
    [{ jobs: { etl: { jobId: "abc" } } }, 'jobs.etl.jobId must be a positive integer (a number, or its decimal text), got "abc"'],
    [{ pollIntervalMs: Number.NaN }, "pollIntervalMs must be a finite number, got NaN"],
    [{ jobs: { etl: { waitTimeout: Number.POSITIVE_INFINITY } } }, "jobs.etl.waitTimeout must be a finite number, got Infinity"],
    [{ jobs: { etl: { taskType: "notebok" } } }, 'jobs.etl.taskType must be one of notebook, python_wheel, python_script, spark_jar, sql, dbt, got "notebok"'],
  ]) {
    assert.throws(
      () => createJobs(config, { env: {} }),
      (e) => e instanceof JobsError && e.code === "CONFIG_ERROR" && e.message === `Invalid jobs config: ${message}`,
      JSON.stringify(config),
    );
    assert.throws(() => jobs(config).plugin.getResourceRequirements(config), (e) => e.code === "CONFIG_ERROR");
  }

  // pollIntervalMs 1 boots (the stock plugin accepts it), warns once, and polls at the 50 ms floor.
  const warnings = [];
  const onWarning = (w) => warnings.push(w);
  process.on("warning", onWarning);
  t.after(() => process.off("warning", onWarning));
  const emu = await emulator(t, { timeScale: 0 });
  const api = createJobs({ pollIntervalMs: 1 }, { env: patEnv(emu, { etl: JOB.etl }) });
  createJobs({ pollIntervalMs: 1 }, { env: patEnv(emu, { etl: JOB.etl }) });
  t.after(() => api.close());
  const run = api("etl").runAndWait();
  const first = await run.next();
  emu.clearRequests();
  await new Promise((r) => setTimeout(r, 1000));
  const polls = requestsTo(emu, "/runs/get").length;
  // At most one poll per 50 ms (the interval backs off from there); 1 ms would be ~265 in 2 s.
  assert.ok(polls <= 20, `${polls} polls in 1 s`);
  emu.setRunState(first.value.run.run_id, "SUCCESS");
  for await (const _ of run);
  await new Promise((r) => setImmediate(r));
  const floor = warnings.filter((w) => w.code === "APPKIT_JOBS_CONFIG");
  assert.equal(floor.length, 1, "one warning for the same config");
  assert.match(floor[0].message, /pollIntervalMs 1 is below the floor of 50 ms/);
});

test("params JSON cannot carry are rejected with ValidationError before anything is sent", async (t) => {
  const emu = await emulator(t, { timeScale: 0 });
  const api = createJobs({ jobs: { etl: { taskType: "notebook" } } }, { env: patEnv(emu, { etl: JOB.etl }) });
  t.after(() => api.close());
  const circular = { a: { b: 1 } };
  circular.a.self = circular;
  for (const [params, detail] of [
    [circular, "params.a.self refers back to itself (a circular structure cannot be sent)"],
    [{ f: () => 1 }, "params.f is a function, which cannot be sent"],
    [{ s: Symbol("x") }, "params.s is a symbol, which cannot be sent"],
    [{ n: Number.NaN }, "params.n is NaN, which cannot be sent as JSON"],
    [{ list: [1, () => 2] }, "params.list[1] is a function, which cannot be sent"],
  ]) {
    const expected = `Parameter validation failed for job "etl": ${detail}`;
    await assert.rejects(api("etl").runNow(params), (e) => e instanceof ValidationError && e.statusCode === 400 && e.message === expected);
    await assert.rejects(
      (async () => {
        for await (const _ of api("etl").runAndWait(params));
      })(),
      (e) => e instanceof ValidationError && e.message === expected,
    );
  }
  assert.deepEqual(requestsTo(emu, "/run-now"), [], "nothing was sent");
  // A bigint is sent exactly, as its decimal text (job parameters are strings).
  const shared = { same: "x" };
  assert.equal((await api("etl").runNow({ big: 12345678901234567890n, a: shared, b: shared })).ok, true);
  assert.deepEqual(requestsTo(emu, "/run-now").at(-1).body.notebook_params, {
    big: "12345678901234567890",
    a: '{"same":"x"}',
    b: '{"same":"x"}',
  });
});

