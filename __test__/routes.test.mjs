// The routes without AppKit: createJobsHandler on node:http and on express, plus the plugin
// class's static contract (manifest, resource requirements) and setup logging.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createRequire } from "node:module";
import { z } from "zod";
import { patEnv, requestsTo } from "./support/emulator.mjs";
import { sseEvents } from "./support/http.mjs";
import { isTerminalRun, until } from "./support/util.mjs";

const require = createRequire(import.meta.url);
const { createJobsHandler } = require("appkit-jobs/http");
const { JobsPlugin, startEmulator } = require("appkit-jobs");
const express = require("express");

let emu;
before(async () => {
  emu = await startEmulator({ timeScale: 20 });
});
after(async () => {
  await emu?.stop();
});

function listen(server) {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}

function close(server) {
  server.closeAllConnections?.();
  return new Promise((resolve) => server.close(() => resolve()));
}

function makeHandler(extra = {}) {
  return createJobsHandler({
    env: patEnv(emu, { etl: 1001, other: 1002, slow: 1003 }),
    pollIntervalMs: 40,
    jobs: {
      etl: { taskType: "notebook", params: z.object({ date: z.string() }) },
      slow: { taskType: "sql" },
    },
    ...extra,
  });
}

test("manifest and resource requirements: one per job, none static", () => {
  const m = JobsPlugin.manifest;
  assert.equal(m.name, "jobs");
  assert.equal(typeof m.displayName, "string");
  assert.equal(typeof m.description, "string");
  assert.deepEqual(m.resources.required, []);
  assert.ok(m.config.schema.properties.pollIntervalMs);

  const saved = { ...process.env };
  try {
    for (const k of Object.keys(process.env)) if (k.startsWith("DATABRICKS_JOB_")) delete process.env[k];
    process.env.DATABRICKS_JOB_ETL = "12";
    process.env.DATABRICKS_JOB_ = "13"; // bare prefix: skipped
    process.env.DATABRICKS_JOB_EMPTY = "";
    process.env.DATABRICKS_JOB_ID = "14"; // not `default`: other jobs exist
    const reqs = JobsPlugin.getResourceRequirements({ jobs: { ml: {} } });
    assert.deepEqual(
      reqs.map((r) => r.resourceKey),
      ["job-etl", "job-ml"],
    );
    assert.deepEqual(reqs[0], {
      type: "job",
      alias: "job-etl",
      resourceKey: "job-etl",
      description: 'Databricks Job "etl"',
      permission: "CAN_MANAGE_RUN",
      fields: { id: { env: "DATABRICKS_JOB_ETL", description: 'Job ID for "etl"' } },
      required: true,
    });
    for (const k of ["DATABRICKS_JOB_ETL", "DATABRICKS_JOB_", "DATABRICKS_JOB_EMPTY"]) delete process.env[k];
    const single = JobsPlugin.getResourceRequirements({});
    assert.equal(single.length, 1);
    assert.equal(single[0].resourceKey, "job-default");
    assert.equal(single[0].fields.id.env, "DATABRICKS_JOB_ID");
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
});

test("setup logs the jobs and warns about keys without an id", async () => {
  const lines = [];
  const logger = { info: (m) => lines.push(["info", m]), warn: (m) => lines.push(["warn", m]) };
  const p = new JobsPlugin({
    name: "jobs",
    logger,
    env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "1001" },
    jobs: { ml: {} },
  });
  await p.setup();
  assert.ok(lines.some(([lvl, m]) => lvl === "info" && /2 job\(s\)/.test(m) && /etl/.test(m) && /ml/.test(m)), JSON.stringify(lines));
  const warns = lines.filter(([lvl]) => lvl === "warn").map(([, m]) => m);
  assert.equal(warns.length, 1);
  assert.match(warns[0], /"ml".*DATABRICKS_JOB_ML/);
});

test("node:http: routes under /api/jobs, fallback for the rest, SSE, close()", async () => {
  const handler = makeHandler();
  const server = http.createServer((req, res) =>
    handler(req, res, () => {
      res.statusCode = 418;
      res.end("mine");
    }),
  );
  const port = await listen(server);
  const base = `http://127.0.0.1:${port}`;
  try {
    const other = await fetch(`${base}/elsewhere`);
    assert.equal(other.status, 418);
    assert.equal(await other.text(), "mine");

    const runNowsBefore = requestsTo(emu, "/jobs/run-now").length;
    const bad = await fetch(`${base}/api/jobs/etl/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ params: { date: 5 } }),
    });
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error, /^Parameter validation failed for job "etl"/);
    assert.equal(requestsTo(emu, "/jobs/run-now").length, runNowsBefore, "nothing was sent");

    const ok = await fetch(`${base}/api/jobs/etl/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ params: { date: "2025-02-03" } }),
    });
    assert.equal(ok.status, 200);
    const { runId } = await ok.json();
    assert.deepEqual(requestsTo(emu, "/jobs/run-now").at(-1).body.notebook_params, { date: "2025-02-03" });

    // Another job's run, asked before anything read it: the route's own check reads the run
    // (the ownership cache knows nothing yet) and answers 404 without touching it.
    const readsBefore = requestsTo(emu, "/runs/get").length;
    const foreign = await fetch(`${base}/api/jobs/other/runs/${runId}`);
    assert.equal(foreign.status, 404);
    assert.deepEqual(await foreign.json(), { error: `Run ${runId} not found for job "other"`, code: "NOT_FOUND", plugin: "jobs" });
    assert.equal(requestsTo(emu, "/runs/get").length, readsBefore + 1, "the route read the run to check it");
    const got = await fetch(`${base}/api/jobs/etl/runs/${runId}`);
    assert.equal((await got.json()).run_id, runId);
    assert.equal((await fetch(`${base}/api/jobs/etl/runs/0x10`)).status, 400);
    const unknown = await fetch(`${base}/api/jobs/n%20o!pe/status`);
    assert.deepEqual(await unknown.json(), { error: 'Unknown job "nope"', code: "UNKNOWN_JOB", plugin: "jobs" });

    const stream = await fetch(`${base}/api/jobs/etl/runs/${runId}/stream`);
    assert.equal(stream.headers.get("content-type"), "text/event-stream; charset=utf-8");
    const events = sseEvents(await stream.text());
    assert.ok(isTerminalRun(events.at(-1).data.run));

    // close() cuts open streams, so that their clients reconnect (the run goes on).
    const slow = await fetch(`${base}/api/jobs/slow/run`, { method: "POST" });
    const slowId = (await slow.json()).runId;
    emu.setRunState(slowId, "RUNNING");
    const open = await fetch(`${base}/api/jobs/slow/runs/${slowId}/stream`);
    const reader = open.body.getReader();
    assert.equal((await reader.read()).done, false);
    handler.close();
    await assert.rejects(async () => {
      while (!(await reader.read()).done);
    });
    await until(() => handler.plugin.activeStreamCount() === 0);
    assert.equal(emu.getRun(slowId).state.life_cycle_state, "RUNNING");
    emu.setRunState(slowId, "SUCCESS");
  } finally {
    handler.close();
    await close(server);
  }
});

test("express: mounted at /api/jobs, or at the root after express.json()", async () => {
  const handler = makeHandler();
  const app = express();
  app.use("/api/jobs", handler);
  const app2 = express();
  app2.use(express.json(), handler);
  app2.use((_req, res) => res.status(404).send("app2 404"));
  const s1 = http.createServer(app);
  const s2 = http.createServer(app2);
  const [p1, p2] = [await listen(s1), await listen(s2)];
  try {
    for (const port of [p1, p2]) {
      const res = await fetch(`http://127.0.0.1:${port}/api/jobs/etl/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ params: { date: "2025-01-01" } }),
      });
      assert.equal(res.status, 200, `port ${port}`);
      const { runId } = await res.json();
      const del = await fetch(`http://127.0.0.1:${port}/api/jobs/etl/runs/${runId}`, { method: "DELETE" });
      assert.equal(del.status, 204);
      // etl has earlier runs too: exactly two come back, the newest first.
      const list = await fetch(`http://127.0.0.1:${port}/api/jobs/etl/runs?limit=2`);
      const { runs } = await list.json();
      assert.equal(runs.length, 2);
      assert.equal(runs[0].run_id, runId);
    }
    const miss = await fetch(`http://127.0.0.1:${p2}/not-jobs`);
    assert.equal(await miss.text(), "app2 404");
  } finally {
    handler.close();
    await close(s1);
    await close(s2);
  }
});

test("handler extras: jobs callable and clientConfig", async () => {
  const handler = makeHandler();
  assert.equal(typeof handler.jobs, "function");
  const result = await handler.jobs("etl").getJob();
  assert.equal(result.ok, true);
  assert.equal(result.data.job_id, 1001);
  const cc = handler.clientConfig();
  assert.deepEqual(Object.keys(cc.jobs).sort(), ["etl", "other", "slow"]);
  assert.equal(cc.jobs.etl.taskType, "notebook");
  assert.deepEqual(cc.jobs.etl.params.required, ["date"]);
  assert.deepEqual(cc.jobs.other, { params: null, taskType: null });
  handler.close();
});

test("plugin.asUser(req): exports run with the user's token; routes stay the service principal's", async () => {
  emu.addUser({ token: "user-token-1", userName: "ada@example.com", defaultPermission: "CAN_VIEW" });
  const handler = makeHandler();
  const p = handler.plugin;
  const asUser = p.asUser({ headers: { "x-forwarded-access-token": "user-token-1" } });
  emu.clearRequests();
  const res = await asUser.exports()("etl").getJob();
  assert.equal(res.ok, true);
  assert.deepEqual(
    emu.requests().map((r) => r.identity),
    ["user:ada@example.com"],
  );
  // Cancel needs CAN_MANAGE_RUN, which this user lacks: a 403 with generic text.
  const started = await p.exports()("etl").runNow({ date: "2025-01-01" });
  assert.equal(started.ok, true);
  const runId = started.data.run_id;
  const denied = await asUser.exports()("etl").cancelRun(runId);
  assert.deepEqual(denied, { ok: false, status: 403, message: "Forbidden" });
  // The plugin itself is untouched: its routes and exports still run as the service principal.
  emu.clearRequests();
  assert.equal((await p.exports()("etl").getRun(runId)).ok, true);
  assert.ok(emu.requests().every((r) => r.identity === "service_principal"));
  // Routes mounted from the user's view still run as the service principal.
  const app = express();
  const router = express.Router();
  asUser.injectRoutes(router);
  app.use("/api/jobs", router);
  const server = http.createServer(app);
  const port = await listen(server);
  try {
    emu.clearRequests();
    const status = await fetch(`http://127.0.0.1:${port}/api/jobs/etl/status`, { headers: { "x-forwarded-access-token": "user-token-1" } });
    assert.equal(status.status, 200);
    assert.equal((await status.json()).run.run_id, runId);
    assert.deepEqual(
      emu.requests().map((r) => r.identity),
      ["service_principal"],
    );
  } finally {
    await close(server);
  }
  handler.close();
});

test("plugin.asUser(req) without a token: 401 outside development", () => {
  const handler = makeHandler();
  const saved = process.env.NODE_ENV;
  try {
    delete process.env.NODE_ENV;
    assert.throws(() => handler.plugin.asUser({ headers: {} }), (e) => e.statusCode === 401 && !/token-/.test(e.message));
  } finally {
    if (saved !== undefined) process.env.NODE_ENV = saved;
    handler.close();
  }
});

test("run ids beyond 2^53 reach every JSON route exactly, and no route answers 5xx after a run started", async (t) => {
  const big = await startEmulator({ timeScale: 0, firstRunId: 9007199254741002 });
  t.after(() => big.stop());
  const handler = createJobsHandler({ env: patEnv(big, { etl: 1001 }), jobs: { etl: { taskType: "notebook" } } });
  const server = http.createServer((req, res) => handler(req, res));
  const base = `http://127.0.0.1:${await listen(server)}/api/jobs/etl`;
  t.after(async () => {
    handler.close();
    await close(server);
  });
  const run = await fetch(`${base}/run`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"params":{"a":"b"}}' });
  assert.equal(run.status, 200);
  const runText = await run.text();
  assert.equal(runText, '{"runId":9007199254741002}');
  for (const [path, field] of [
    ["/status", '"run_id":9007199254741002'],
    ["/runs", '"run_id":9007199254741002'],
    ["/runs/9007199254741002", '"run_id":9007199254741002'],
  ]) {
    const res = await fetch(`${base}${path}`);
    const text = await res.text();
    assert.equal(res.status, 200, `${path}: ${text}`);
    assert.ok(text.includes(field), `${path}: ${text}`);
    // Every digit: a JSON.parse would round the id, the text must not.
    assert.ok(text.includes("9007199254741003") || path !== "/runs/9007199254741002", `${path}: task run ids exact`);
  }
  assert.equal(big.runCount(), 1);
});

test("HEAD answers as GET does, without a body, under node:http and express", async () => {
  const handler = makeHandler();
  const plain = http.createServer((req, res) => handler(req, res));
  const app = express();
  app.use("/api/jobs", handler);
  const viaExpress = http.createServer(app);
  const ports = [await listen(plain), await listen(viaExpress)];
  try {
    const started = await handler.jobs("slow").runNow();
    const runId = started.data.run_id;
    for (const port of ports) {
      for (const path of ["/slow/status", "/slow/runs?limit=3", `/slow/runs/${runId}`]) {
        const url = `http://127.0.0.1:${port}/api/jobs${path}`;
        const get = await fetch(url);
        const head = await fetch(url, { method: "HEAD" });
        assert.equal(head.status, get.status, `${port} ${path}`);
        assert.equal(head.status, 200, `${port} ${path}`);
        assert.equal(head.headers.get("content-type"), get.headers.get("content-type"));
        assert.equal(await head.text(), "");
        assert.ok(Number(head.headers.get("content-length")) > 0);
      }
      const missing = await fetch(`http://127.0.0.1:${port}/api/jobs/slow/runs/0x10`, { method: "HEAD" });
      assert.equal(missing.status, 400);
    }
  } finally {
    handler.close();
    await close(plain);
    await close(viaExpress);
  }
});

test("GET /runs clamps limit to 100 when more than 100 runs exist", async (t) => {
  const many = await startEmulator({ timeScale: 0 });
  t.after(() => many.stop());
  const handler = createJobsHandler({ env: patEnv(many, { etl: 1001 }) });
  t.after(() => handler.close());
  for (let i = 0; i < 105; i++) assert.equal((await handler.jobs("etl").runNow()).ok, true);
  const server = http.createServer((req, res) => handler(req, res));
  const base = `http://127.0.0.1:${await listen(server)}/api/jobs/etl`;
  t.after(() => close(server));
  for (const [limit, expected] of [["1000", 100], ["101", 100], ["100", 100], ["7", 7]]) {
    const { runs } = await (await fetch(`${base}/runs?limit=${limit}`)).json();
    assert.equal(runs.length, expected, `limit=${limit}`);
  }
  // Newest first, no run twice.
  const { runs } = await (await fetch(`${base}/runs?limit=100`)).json();
  assert.equal(new Set(runs.map((r) => r.run_id)).size, 100);
  assert.ok(runs.every((r, i) => i === 0 || r.run_id < runs[i - 1].run_id));
});

