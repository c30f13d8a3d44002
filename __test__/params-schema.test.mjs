// Params schemas are honoured exactly as their library defines them: a Zod schema's
// transforms, coercions and defaults shape what is sent (the value `schema.parse` returns,
// then the task-type mapping), a JSON Schema's `default` is not applied (JSON Schema
// validators do not insert defaults), and invalid params never reach run-now on any path:
// runNow, runAndWait, POST /run and POST /run?stream=true.
import { test } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import { API, at, emulator, jobsFor, patEnv } from "./support/emulator.mjs";
import { routes } from "./support/http.mjs";
import { drain, until } from "./support/util.mjs";

const schema = z
  .object({
    startDate: z
      .string()
      .trim()
      .transform((s) => s.replaceAll("/", "-")),
    days: z.coerce.number().int().min(1).default(7),
    mode: z.enum(["full", "incremental"]).default("incremental"),
    tags: z.array(z.string()).default([]),
    dryRun: z.boolean().default(false),
    owner: z.string().toUpperCase().optional(),
    checked: z.string().refine(async (s) => s !== "forbidden", "not allowed").optional(),
  })
  .transform((o) => ({ ...o, window: `${o.startDate}+${o.days}` }));

/** The notebook mapping of a parsed value: strings as is, numbers/booleans via String(), objects as JSON. */
function notebookParams(parsed) {
  const out = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (v === undefined || v === null) continue;
    out[k] = typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : String(v);
  }
  return out;
}

const INPUTS = [
  { startDate: " 2025/01/02 " },
  { startDate: "2025-03-04", days: "3", mode: "full", tags: ["a", "b"], dryRun: true, owner: "ann" },
  { startDate: "\t2025/12/31\n", days: 10, checked: "fine" },
];

const INVALID = [
  {},
  { startDate: 5 },
  { startDate: "x", days: "zero" },
  { startDate: "x", days: 0 },
  { startDate: "x", mode: "partial" },
  { startDate: "x", tags: "a" },
  { startDate: "x", checked: "forbidden" },
];

test("Zod transforms, coercions and defaults: what is sent is schema.parse(input), mapped", async (t) => {
  const emu = await emulator(t);
  const api = jobsFor(t, { jobs: { etl: { taskType: "notebook", params: schema } } }, patEnv(emu));
  const { base } = await routes(t, { jobs: { etl: { taskType: "notebook", params: schema } }, env: patEnv(emu) });
  for (const input of INPUTS) {
    const expected = notebookParams(await schema.parseAsync(input));
    // runNow
    emu.clearRequests();
    assert.equal((await api("etl").runNow(input)).ok, true);
    assert.deepEqual(at(emu, API.runNow)[0].body.notebook_params, expected, "runNow");
    // runAndWait (one update is enough)
    emu.clearRequests();
    for await (const _ of api("etl").runAndWait(input)) break;
    assert.deepEqual(at(emu, API.runNow)[0].body.notebook_params, expected, "runAndWait");
    // HTTP, plain and streaming
    // `%72un` is `run` once decoded, as the core's dispatch reads it: validated all the same.
    for (const url of [`${base}/api/jobs/etl/run`, `${base}/api/jobs/etl/run?stream=true`, `${base}/api/jobs/etl/%72un`, `${base}/api/jobs/%65tl/run`]) {
      emu.clearRequests();
      const ac = new AbortController();
      const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ params: input }), signal: ac.signal });
      assert.equal(res.status, 200, url);
      // A stream opens before its run-now: wait for it with the stream still open.
      await until(() => at(emu, API.runNow).length > 0, 10_000, "the run-now");
      assert.deepEqual(at(emu, API.runNow)[0].body.notebook_params, expected, url);
      ac.abort();
    }
  }
});

test("a Zod transform may reshape params into run-now fields (no task type: pass-through)", async (t) => {
  const emu = await emulator(t);
  const reshaping = z.object({ date: z.string().default("today") }).transform((p) => ({ job_parameters: { run_date: p.date, source: "app" } }));
  const api = jobsFor(t, { jobs: { etl: { params: reshaping } } }, patEnv(emu));
  assert.equal((await api("etl").runNow({})).ok, true);
  const body = at(emu, API.runNow)[0].body;
  assert.deepEqual(body.job_parameters, { run_date: "today", source: "app" });
  assert.equal(body.job_id, 1001);
});

test("invalid params never reach run-now, on any path", async (t) => {
  const emu = await emulator(t);
  const config = { jobs: { etl: { taskType: "notebook", params: schema } } };
  const api = jobsFor(t, config, patEnv(emu));
  const { base } = await routes(t, { ...config, env: patEnv(emu) });
  for (const input of INVALID) {
    await assert.rejects(api("etl").runNow(input), (e) => e.name === "ValidationError" && e.statusCode === 400 && /^Parameter validation failed for job "etl": /.test(e.message));
    const { updates, error } = await drain(api("etl").runAndWait(input));
    assert.deepEqual(updates, []);
    assert.equal(error?.name, "ValidationError");
    // `%72un` is `run` once decoded, as the core's dispatch reads it: validated all the same.
    for (const url of [`${base}/api/jobs/etl/run`, `${base}/api/jobs/etl/run?stream=true`, `${base}/api/jobs/etl/%72un`, `${base}/api/jobs/%65tl/run`]) {
      const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ params: input }) });
      assert.equal(res.status, 400, `${url} ${JSON.stringify(input)}`);
      assert.match((await res.json()).error, /^Parameter validation failed for job "etl": /);
    }
  }
  assert.deepEqual(at(emu, API.runNow), []);
  assert.equal(emu.runCount(), 0);
});

test("JSON Schema: validated in Rust, `default` is not inserted, invalid never sent", async (t) => {
  const emu = await emulator(t);
  const jsonSchema = {
    type: "object",
    properties: { limit: { type: "integer", minimum: 1, default: 10 }, table: { type: "string", default: "t" } },
    required: ["table"],
    additionalProperties: false,
  };
  const api = jobsFor(t, { jobs: { sql: { taskType: "sql", params: jsonSchema } } }, patEnv(emu, { sql: 1003 }));
  assert.equal((await api("sql").runNow({ table: "events" })).ok, true);
  assert.deepEqual(at(emu, API.runNow)[0].body.sql_params, { table: "events" });
  for (const bad of [{}, { table: "x", limit: 0 }, { table: "x", limit: "5" }, { table: "x", other: 1 }, { table: 1 }]) {
    await assert.rejects(api("sql").runNow(bad), { name: "ValidationError" });
  }
  assert.equal(at(emu, API.runNow).length, 1);
});

test("a params schema holds beside an onRunEnd handler (JSON Schema and Zod)", async (t) => {
  const emu = await emulator(t);
  const jsonSchema = { type: "object", properties: { table: { type: "string" } }, required: ["table"], additionalProperties: false };
  const onRunEnd = async () => {};
  const api = jobsFor(
    t,
    {
      jobs: {
        sql: { taskType: "sql", params: jsonSchema, onRunEnd },
        nb: { taskType: "notebook", params: z.object({ day: z.string() }), onRunEnd },
      },
    },
    patEnv(emu, { sql: 1003, nb: 1001 }),
  );
  await assert.rejects(api("sql").runNow({}), { name: "ValidationError" });
  await assert.rejects(api("nb").runNow({ day: 1 }), { name: "ValidationError" });
  assert.equal(at(emu, API.runNow).length, 0);
  assert.equal((await api("sql").runNow({ table: "events" })).ok, true);
  assert.equal((await api("nb").runNow({ day: "mon" })).ok, true);
  assert.deepEqual(at(emu, API.runNow).map((r) => r.body.sql_params ?? r.body.notebook_params), [{ table: "events" }, { day: "mon" }]);
});
