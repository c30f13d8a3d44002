// The plugin inside a real AppKit app: createApp({ plugins: [server(), jobs()] }) against the
// bundled emulator. Every /api/jobs route and status of the contract, SSE end to end, resume
// with the real connectSSE of @databricks/appkit-ui after a dropped connection, disconnects.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connectSSE } from "@databricks/appkit-ui/js";
import { z } from "zod";
import { startEmulator } from "appkit-jobs";
import { startAppKit } from "./support/appkit.mjs";
import { patEnv, requestsTo } from "./support/emulator.mjs";
import { sseEvents, startRepeatingCutProxy } from "./support/http.mjs";
import { isTerminalRun, until } from "./support/util.mjs";

const JOB_IDS = { etl: 1001, other: 1002, slow: 1003, schema: 1004, zod: 1005 };
const SCHEMA = {
  type: "object",
  properties: { date: { type: "string" }, count: { type: "integer", minimum: 1 } },
  required: ["date"],
  additionalProperties: false,
};

let emu;
let appkit;
let app;
let base;
let plugin;

before(async () => {
  emu = await startEmulator({ timeScale: 10 });
  appkit = await startAppKit(emu, JOB_IDS, {
    pollIntervalMs: 50,
    heartbeatMs: 150,
    jobs: {
      etl: { taskType: "notebook" },
      slow: { taskType: "sql" },
      schema: { params: SCHEMA },
      zod: { taskType: "notebook", params: z.object({ date: z.string().min(1), n: z.coerce.number().optional() }) },
    },
  });
  ({ app, base, plugin } = appkit);
});

after(async () => {
  await appkit?.close();
  await emu?.stop();
});

async function call(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const res = await fetch(`${base}${path}`, init);
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text, headers: res.headers };
}

const runNows = () => requestsTo(emu, "/jobs/run-now").length;
const cancels = () => requestsTo(emu, "/runs/cancel").length;

test("AppKit mounts the plugin: exports callable, endpoints, job keys", async () => {
  assert.equal(typeof app.jobs, "function");
  const handle = app.jobs("etl");
  assert.equal(typeof handle.runNow, "function");
  assert.throws(() => app.jobs("nope"), /Unknown job "nope"/);
  const endpoints = plugin.getEndpoints();
  assert.equal(endpoints.run, "/api/jobs/:jobKey/run");
  assert.equal(endpoints["run-stream"], "/api/jobs/:jobKey/runs/:runId/stream");
  assert.deepEqual(plugin.jobKeys().sort(), ["etl", "other", "schema", "slow", "zod"]);
  const cc = plugin.clientConfig();
  assert.deepEqual(cc.jobs.schema, { params: SCHEMA, taskType: null });
  assert.equal(cc.jobs.zod.taskType, "notebook");
  assert.equal(cc.jobs.zod.params.type, "object");
  assert.deepEqual(cc.jobs.zod.params.required, ["date"]);
  assert.deepEqual(cc.jobs.other, { params: null, taskType: null });
});

test("POST run, GET run, runs, status and DELETE with the contract's statuses and bodies", async () => {
  const started = await call("POST", "/etl/run", { params: { date: "2025-01-01" } });
  assert.equal(started.status, 200);
  assert.deepEqual(Object.keys(started.json), ["runId"]);
  const runId = started.json.runId;
  assert.ok(Number.isInteger(runId) && runId > 0);

  const run = await call("GET", `/etl/runs/${runId}`);
  assert.equal(run.status, 200);
  assert.equal(run.json.run_id, runId);
  assert.equal(run.json.job_id, JOB_IDS.etl);

  const list = await call("GET", "/etl/runs?limit=500");
  assert.equal(list.status, 200);
  assert.ok(Array.isArray(list.json.runs));
  assert.ok(list.json.runs.some((r) => r.run_id === runId));
  assert.equal((await call("GET", "/etl/runs?limit=abc")).status, 200);

  const status = await call("GET", "/etl/status");
  assert.equal(status.status, 200);
  assert.equal(status.json.run.run_id, runId);
  assert.equal(typeof status.json.status, "string");

  const none = await call("GET", "/schema/status");
  assert.deepEqual(none.json, { status: null, run: null });

  const del = await call("DELETE", `/etl/runs/${runId}`);
  assert.equal(del.status, 204);
  assert.equal(del.text, "");
  assert.ok(cancels() >= 1);
});

test("bad run ids are 400 Invalid runId on GET, DELETE and the stream route", async () => {
  for (const bad of ["0", "-1", "1e3", "0x10", "1.5", "abc", "99999999999999999999"]) {
    for (const [method, path] of [
      ["GET", `/etl/runs/${bad}`],
      ["DELETE", `/etl/runs/${bad}`],
      ["GET", `/etl/runs/${bad}/stream`],
    ]) {
      const res = await call(method, path);
      assert.equal(res.status, 400, `${method} ${path}`);
      assert.equal(res.json.error, "Invalid runId");
    }
  }
});

test("unknown job: 404 with the sanitised key on every route", async () => {
  const expected = { error: 'Unknown job "scriptx"', code: "UNKNOWN_JOB", plugin: "jobs" };
  for (const [method, path] of [
    ["POST", "/%3Cscript%3Ex/run"],
    ["GET", "/%3Cscript%3Ex/runs"],
    ["GET", "/%3Cscript%3Ex/runs/1"],
    ["DELETE", "/%3Cscript%3Ex/runs/1"],
    ["GET", "/%3Cscript%3Ex/status"],
    ["GET", "/%3Cscript%3Ex/runs/1/stream"],
  ]) {
    const res = await call(method, path);
    assert.equal(res.status, 404, `${method} ${path}`);
    assert.deepEqual(res.json, expected);
  }
});

test("another job's run is 404 and never cancelled", async () => {
  const { json } = await call("POST", "/etl/run");
  const before = cancels();
  assert.equal((await call("GET", `/other/runs/${json.runId}`)).status, 404);
  assert.equal((await call("DELETE", `/other/runs/${json.runId}`)).status, 404);
  assert.equal((await call("GET", `/other/runs/${json.runId}/stream`)).status, 404);
  assert.equal(cancels(), before);
});

test("run params: 400s before anything is sent, streams included", async () => {
  const before = runNows();
  const many = Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, "v"]));
  const cases = [
    ["/etl/run", { params: [1] }, /params must be a plain object/],
    ["/etl/run", { params: "x" }, /params must be a plain object/],
    ["/etl/run", { params: null }, /params must be a plain object/],
    ["/other/run", { params: { a: 1 } }, /^This job does not accept parameters$/],
    ["/etl/run", { params: many }, /Too many parameters \(51\)/],
    ["/schema/run", { params: { date: 1 } }, /^Parameter validation failed for job "schema"/],
    ["/schema/run", {}, /^Parameter validation failed for job "schema"/],
    ["/zod/run", { params: { date: "" } }, /^Parameter validation failed for job "zod"/],
  ];
  for (const stream of [false, true]) {
    for (const [path, body, message] of cases) {
      const res = await call("POST", `${path}${stream ? "?stream=true" : ""}`, body);
      assert.equal(res.status, 400, `${path} ${JSON.stringify(body)} stream=${stream}`);
      assert.match(res.headers.get("content-type"), /application\/json/);
      assert.match(res.json.error, message);
      assert.equal(res.json.plugin, "jobs");
    }
  }
  assert.equal(runNows(), before, "nothing reached run-now");

  const ok = await call("POST", "/zod/run", { params: { date: "2025-01-01", n: "3" } });
  assert.equal(ok.status, 200);
  const sent = requestsTo(emu, "/jobs/run-now").at(-1).body;
  assert.deepEqual(sent.notebook_params, { date: "2025-01-01", n: "3" });
  const schemaOk = await call("POST", "/schema/run", { params: { date: "2025-01-01", count: 2 } });
  assert.equal(schemaOk.status, 200);
  const other = await call("POST", "/other/run", {});
  assert.equal(other.status, 200);
  // An empty params object asks for nothing: it starts a run as no params would, also on a
  // job that takes none (the streamed route: crates/core/tests/routes.rs).
  const started = runNows();
  const empty = await call("POST", "/other/run", { params: {} });
  assert.equal(empty.status, 200, empty.text);
  assert.equal(runNows(), started + 1);
  assert.deepEqual(Object.keys(requestsTo(emu, "/jobs/run-now").at(-1).body).sort(), ["idempotency_token", "job_id"]);
});

test("upstream failures keep their status with generic text only", async () => {
  emu.injectFault({ path: "/api/2.2/jobs/run-now", status: 403, errorCode: "PERMISSION_DENIED", message: "secret upstream detail" });
  const res = await call("POST", "/etl/run");
  assert.equal(res.status, 403);
  assert.deepEqual(res.json, { error: "Forbidden", code: "PERMISSION_DENIED", plugin: "jobs" });
  assert.doesNotMatch(res.text, /secret upstream detail|127\.0\.0\.1/);
  emu.injectFault({ path: "/api/2.2/jobs/runs/list", status: 400, errorCode: "INVALID_PARAMETER_VALUE", message: "no" });
  const list = await call("GET", "/etl/runs");
  assert.equal(list.status, 400);
  assert.deepEqual(list.json, { error: "Bad Request", code: "INVALID_PARAMETER_VALUE", plugin: "jobs" });
  emu.clearFaults();
});

test("SSE end to end: headers, framing, ids, terminal state", async () => {
  const res = await fetch(`${base}/etl/run?stream=true`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({ params: { date: "2025-01-01" } }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
  assert.equal(res.headers.get("cache-control"), "no-cache, no-transform");
  assert.equal(res.headers.get("x-accel-buffering"), "no");
  const text = await res.text();
  const [opening, ...events] = sseEvents(text);
  // The stream opens before run-now is sent: no state yet, and an id to resume by.
  assert.match(opening.id, /^start:1001-[0-9a-f-]{36}$/);
  assert.equal(opening.event, "message");
  assert.deepEqual({ ...opening.data, timestamp: 0 }, { status: null, timestamp: 0, run: null, accepted: "run" });
  assert.equal(typeof opening.data.timestamp, "number");
  assert.equal(requestsTo(emu, "/jobs/run-now").at(-1).body.idempotency_token, opening.id.slice("start:".length));
  assert.ok(events.length >= 2, text);
  const runId = events[0].data.run.run_id;
  events.forEach((ev, i) => {
    assert.equal(ev.event, "message");
    assert.equal(ev.id, `${runId}:${i + 1}`);
    assert.deepEqual(Object.keys(ev.data).sort(), ["changes", "progress", "run", "status", "timestamp"]);
    assert.equal(typeof ev.data.timestamp, "number");
  });
  const last = events.at(-1).data;
  assert.equal(last.status, "TERMINATED");
  assert.ok(isTerminalRun(last.run));
  assert.ok(last.run.run_page_url);
  assert.match(text, /^id: start:\S+\nevent: message\ndata: \{"accepted":"run","run":null,"status":null,"timestamp":\d+\}\n\nid: \d+:1\nevent: message\ndata: \{/);
});

test("an error during the stream is an `event: error` with { error, code }", async () => {
  const { json } = await call("POST", "/slow/run");
  emu.setRunState(json.runId, "RUNNING");
  const res = await fetch(`${base}/slow/runs/${json.runId}/stream`);
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("event: message")) text += decoder.decode((await reader.read()).value, { stream: true });
  // The run's next poll fails upstream with a permanent error.
  emu.injectFault({ path: "/api/2.2/jobs/runs/get", status: 403, errorCode: "PERMISSION_DENIED", message: "hidden detail", times: 100 });
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  emu.clearFaults();
  const events = sseEvents(text);
  const err = events.at(-1);
  assert.equal(err.event, "error");
  assert.equal(err.id, `${json.runId}:${events.length}`);
  // The same code the programmatic API gives for the same failure.
  assert.deepEqual(err.data, { error: "Forbidden", code: "PERMISSION_DENIED" });
  assert.doesNotMatch(text, /hidden detail/);
  emu.injectFault({ path: "/api/2.2/jobs/runs/get", status: 403, errorCode: "PERMISSION_DENIED", message: "hidden detail", times: 100 });
  const updates = app.jobs("slow").watchRun(json.runId);
  await assert.rejects(
    (async () => {
      for await (const _ of updates);
    })(),
    (e) => e.code === "PERMISSION_DENIED" && e.statusCode === 403 && !e.message.includes("hidden detail"),
  );
  emu.clearFaults();
  emu.setRunState(json.runId, "SUCCESS");
});

test("resume with connectSSE after a dropped connection: one run, same stream", async () => {
  const proxy = await startRepeatingCutProxy(new URL(base).port, { after: 2, times: 1 });
  const before = emu.runCount();
  const runNowsBefore = runNows();
  const messages = [];
  const errors = [];
  try {
    await connectSSE({
      url: `http://127.0.0.1:${proxy.port}/api/jobs/slow/run?stream=true`,
      payload: { params: { warehouse: "small" } },
      retryDelay: 50,
      maxRetries: 3,
      onMessage: (m) => messages.push(m),
      onError: (e) => errors.push(e),
    });
  } finally {
    await proxy.close();
  }
  assert.equal(proxy.state.cuts, 1, "the first connection was cut");
  assert.ok(errors.length >= 1, "connectSSE saw the drop");
  assert.equal(emu.runCount() - before, 1, "exactly one run was created");
  assert.equal(JSON.parse(messages[0].data).accepted, "run");
  const ids = messages.slice(1).map((m) => m.id);
  const runId = JSON.parse(messages[1].data).run.run_id;
  const seqs = ids.map((id) => {
    const [run, seq] = id.split(":");
    assert.equal(Number(run), runId);
    return Number(seq);
  });
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `ids increase: ${ids}`);
  const last = JSON.parse(messages.at(-1).data);
  assert.ok(isTerminalRun(last.run), "the resumed stream reached the terminal state");
  assert.equal(last.run.run_id, runId);
  assert.equal(requestsTo(emu, "/jobs/run-now").length - runNowsBefore, 1, "a reconnect after the first state sends no run-now");
});

test("heartbeats while a run waits; a client that leaves stops the watcher, not the run", async () => {
  const { json } = await call("POST", "/slow/run");
  emu.setRunState(json.runId, "RUNNING"); // held until told otherwise
  const controller = new AbortController();
  const res = await fetch(`${base}/slow/runs/${json.runId}/stream`, { signal: controller.signal });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!/: heartbeat\n\n/.test(text) || !/event: message/.test(text)) {
    const { value, done } = await reader.read();
    assert.equal(done, false, "the stream stays open while the run is active");
    text += decoder.decode(value, { stream: true });
  }
  assert.ok(plugin.activeStreamCount() >= 1);
  const cancelsBefore = cancels();
  controller.abort();
  await reader.cancel().catch(() => {});
  await until(() => plugin.activeStreamCount() === 0, 10_000, "the watcher was dropped");
  const polls = requestsTo(emu, "/runs/get").filter((r) => r.query.includes(String(json.runId))).length;
  await new Promise((r) => setTimeout(r, 400));
  const pollsLater = requestsTo(emu, "/runs/get").filter((r) => r.query.includes(String(json.runId))).length;
  assert.equal(pollsLater, polls, "no more polls for a run nobody watches");
  assert.equal(cancels(), cancelsBefore, "the run was not cancelled");
  assert.equal(emu.getRun(json.runId).state.life_cycle_state, "RUNNING");
  emu.setRunState(json.runId, "SUCCESS");
});

test("abortActiveOperations cuts open streams (a clean end would read as done), and ends ended ones cleanly", async () => {
  const { json } = await call("POST", "/slow/run");
  emu.setRunState(json.runId, "RUNNING");
  const res = await fetch(`${base}/slow/runs/${json.runId}/stream`);
  const reader = res.body.getReader();
  const first = await reader.read();
  assert.equal(first.done, false);
  plugin.abortActiveOperations();
  await assert.rejects(async () => {
    for (;;) {
      const { done } = await reader.read();
      if (done) break;
    }
  }, "the connection is cut, not ended");
  await until(() => plugin.activeStreamCount() === 0);
  emu.setRunState(json.runId, "SUCCESS");
  // A run that has ended: its stream ends cleanly after the terminal state.
  const ended = await fetch(`${base}/slow/runs/${json.runId}/stream`);
  const events = sseEvents(await ended.text());
  assert.equal(events.at(-1).data.status, "TERMINATED");
});

test("production with only jobId in config (no DATABRICKS_JOB_<NAME>): createApp boots and the job runs", async () => {
  const script = `
    import { createApp, server } from "@databricks/appkit";
    import { jobs } from "appkit-jobs";
    const app = await createApp({ plugins: [server({ port: 0, host: "127.0.0.1" }), jobs({ jobs: { etl: { jobId: 1001 } } })] });
    const job = await app.jobs("etl").getJob();
    console.log(JSON.stringify({ ok: job.ok, id: job.data?.job_id }));
    process.exit(0);
  `;
  const env = { ...process.env, ...patEnv(emu, {}) };
  delete env.NODE_ENV;
  for (const k of Object.keys(env)) if (k.startsWith("DATABRICKS_JOB_")) delete env[k];
  const { spawnSync } = await import("node:child_process");
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { cwd: process.cwd(), env, encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").at(-1)), { ok: true, id: 1001 });
});
