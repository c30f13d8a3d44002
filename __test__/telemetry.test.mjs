// OpenTelemetry: what a team swapping the stock plugin for ours keeps, and what it gains.
// - Side by side (each in its own process with an in-memory SDK registered globally, as AppKit's
//   NodeSDK is): for the same calls against the emulator, ours exports every span name, metric
//   name and attribute key the stock plugin does.
// - More: one span per wait with an event per state change and the terminal state, engine and
//   route metrics, log records; nothing of a credential or upstream text in any of it.
// - End to end: a real AppKit app with OTEL_EXPORTER_OTLP_ENDPOINT sends our spans and metrics to
//   an OTLP/HTTP receiver on loopback.
// - Off: without an SDK nothing is measured.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import http from "node:http";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { createJobsRuntime, startEmulator } from "appkit-jobs";
import { API } from "./support/emulator.mjs";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const APP = path.join(here, "support", "telemetry-app.mjs");
const UPSTREAM_TEXT = "UpstreamSaysSomethingPrivate-0b2c";

let emu;
before(async () => {
  emu = await startEmulator({ timeScale: 200 });
});
after(() => emu?.stop());

function capture(which) {
  const r = spawnSync(process.execPath, [APP, which], {
    cwd: path.dirname(here),
    env: { ...process.env, EMU_URL: emu.url, EMU_TOKEN: emu.token },
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `${which}: ${r.stderr.slice(-4000)}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1));
}

/** `name` -> the union of its attribute keys, for spans (by name) or metric data points. */
function keysByName(items, attributesOf) {
  const out = new Map();
  for (const item of items) {
    const keys = out.get(item.name) ?? new Set();
    for (const attributes of attributesOf(item)) for (const k of Object.keys(attributes ?? {})) keys.add(k);
    out.set(item.name, keys);
  }
  return out;
}

const fromJobs = (s) => !s.scope?.startsWith("@opentelemetry/");

test("side by side with the stock plugin: every span name, metric name and attribute key it exports, ours exports", { timeout: 240_000 }, () => {
  const stock = capture("stock");
  const ours = capture("ours");
  const spanKeys = (run) => keysByName(run.spans.filter(fromJobs), (s) => [s.attributes]);
  const metricKeys = (run) => keysByName(run.metrics.filter(fromJobs), (m) => m.points.map((p) => p.attributes));
  for (const [kind, of] of [
    ["span", spanKeys],
    ["metric", metricKeys],
  ]) {
    const theirs = of(stock);
    const mine = of(ours);
    assert.ok(theirs.size >= (kind === "span" ? 7 : 4), `${kind}s of the stock plugin: ${[...theirs.keys()]}`);
    for (const [name, keys] of theirs) {
      assert.ok(mine.has(name), `ours exports no ${kind} ${name} (ours: ${[...mine.keys()].join(", ")})`);
      for (const key of keys) assert.ok(mine.get(name).has(key), `${kind} ${name}: ours lacks the attribute ${key}`);
    }
  }
  // Same scopes, kinds and units where the stock plugin sets them.
  for (const s of stock.spans.filter(fromJobs)) {
    const same = ours.spans.find((o) => o.name === s.name);
    assert.equal(same.scope, s.scope, s.name);
    assert.equal(same.kind, s.kind, s.name);
  }
  for (const m of stock.metrics.filter(fromJobs)) assert.equal(ours.metrics.find((o) => o.name === m.name).unit, m.unit, m.name);
  // `success` is the string "true"/"false", as the stock plugin sends it.
  const count = ours.metrics.find((m) => m.name === "jobs.api_call.count");
  assert.ok(count.points.some((p) => p.attributes.success === "false" && p.attributes.operation === "getRun"));
  assert.ok(count.points.every((p) => p.attributes.success === "true" || p.attributes.success === "false"));
});

test("more than the stock plugin: wait spans, call details, engine and route metrics, log records", { timeout: 120_000 }, () => {
  const ours = capture("ours");
  // One span per wait, an event per state change, the terminal state at the end.
  const waits = ours.spans.filter((s) => s.name === "jobs.runAndWait");
  assert.equal(waits.length, 2, "runAndWait and the SSE stream");
  for (const w of waits) {
    assert.equal(w.scope, "jobs-jobs");
    assert.ok(w.events.length >= 2 && w.events.every((e) => e.name === "jobs.state_change" && typeof e.attributes["jobs.state"] === "string"), JSON.stringify(w.events));
    assert.equal(w.attributes["jobs.terminal_state"], "TERMINATED");
    assert.match(w.attributes["jobs.run_id"], /^\d+$/);
    // The run-now that started it is its child.
    assert.ok(ours.spans.some((s) => s.name === "jobs.runNow" && s.parent === w.id) || w.attributes["http.route"], "run-now under the wait");
  }
  // Each call span says how it went: status, attempts, job key, run id.
  const getRuns = ours.spans.filter((s) => s.name === "jobs.getRun");
  assert.ok(getRuns.some((s) => s.attributes["http.response.status_code"] === 200 && s.attributes["jobs.attempts"] === 1 && s.attributes["jobs.key"] === "etl"));
  assert.ok(getRuns.some((s) => s.attributes["error.type"] === "INVALID_PARAMETER_VALUE" && s.attributes["http.response.status_code"] === 400));
  // A cached read that fetched: the API call inside the cache's span, inside plugin.execute.
  const parentOf = (s) => ours.spans.find((p) => p.id === s.parent);
  assert.ok(getRuns.some((s) => parentOf(s)?.name === "cache.getOrExecute" && parentOf(parentOf(s))?.name === "plugin.execute"));
  // Engine and route metrics.
  const names = new Set(ours.metrics.map((m) => m.name));
  for (const name of [
    "jobs.engine.runs_watched",
    "jobs.engine.watchers",
    "jobs.engine.polls",
    "jobs.engine.updates_delivered",
    "jobs.engine.retries",
    "jobs.engine.rate_limit_pauses",
    "jobs.engine.waiting_for_turn",
    "jobs.routes.sse_streams",
    "jobs.routes.sse_resumes",
  ]) {
    assert.ok(names.has(name), name);
  }
  assert.ok(ours.metrics.find((m) => m.name === "jobs.engine.polls").points[0].value >= 2);
  // Log records with the stock context's fields.
  const log = ours.logs.find((l) => l.attributes["jobs.operation"] === "runNow");
  assert.deepEqual(Object.keys(log.attributes).sort(), ["jobs.duration_ms", "jobs.key", "jobs.operation", "jobs.success"]);
  assert.equal(log.scope, "jobs");
});

test("no credential or upstream text in anything exported, faults included", { timeout: 120_000 }, () => {
  const quote = `${UPSTREAM_TEXT} token ${emu.token} ${emu.clientSecret}`;
  emu.injectFault({ path: API.runNow, status: 503, retryAfter: 0, message: quote, times: 1 });
  emu.injectFault({ path: API.getRun, status: 403, errorCode: "PERMISSION_DENIED", message: quote, times: 1 });
  emu.injectFault({ path: API.getJob, status: 500, html: true, times: 1 });
  const served = emu.requests().filter((r) => r.fault).length;
  const ours = capture("ours");
  assert.ok(emu.requests().filter((r) => r.fault).length >= served + 3, "the faults fired");
  for (const secret of [emu.token, emu.clientSecret, UPSTREAM_TEXT]) assert.ok(!ours.raw.includes(secret), "exported telemetry carries a secret");
  // Nor the workspace's URL in ours (AppKit's own HTTP instrumentation may name its host).
  const mine = JSON.stringify([ours.spans.filter(fromJobs), ours.metrics.filter(fromJobs), ours.logs]);
  assert.ok(!mine.includes(emu.url) && !mine.includes(`:${emu.port}`), "our telemetry names the workspace URL");
  // The retried run-now says so.
  assert.ok(ours.spans.some((s) => s.name === "jobs.runNow" && s.attributes["jobs.attempts"] === 2));
});

test("without an SDK nothing is measured", async (t) => {
  const rt = createJobsRuntime({ jobs: { etl: {} } }, { env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "1001" } });
  t.after(() => rt.close());
  assert.equal(rt.telemetry.active(), false);
  assert.equal((await rt.exports("etl").getJob()).ok, true);
  for await (const _ of rt.exports("etl").runAndWait());
  assert.deepEqual(rt.native.takeCallMetrics(), { calls: [], cache: [] });
  assert.equal(rt.native.engineMetrics().retries, 0);
});

/** An OTLP/HTTP (protobuf) receiver on loopback: decoded requests per signal. */
async function otlpReceiver(t) {
  const root = require("@opentelemetry/otlp-transformer/build/src/generated/root");
  const collector = root.opentelemetry.proto.collector;
  const types = { "/v1/traces": collector.trace.v1.ExportTraceServiceRequest, "/v1/metrics": collector.metrics.v1.ExportMetricsServiceRequest, "/v1/logs": collector.logs.v1.ExportLogsServiceRequest };
  const received = { "/v1/traces": [], "/v1/metrics": [], "/v1/logs": [], raw: [] };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const type = types[req.url];
      if (type) {
        received[req.url].push(type.toObject(type.decode(body), { longs: String, enums: String, bytes: String }));
        received.raw.push(body.toString("latin1"));
      }
      res.writeHead(200, { "content-type": "application/x-protobuf" });
      res.end();
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => new Promise((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${server.address().port}`, received };
}

test("a real AppKit app with OTEL_EXPORTER_OTLP_ENDPOINT: our spans and metrics reach its OTLP receiver", { timeout: 120_000 }, async (t) => {
  const receiver = await otlpReceiver(t);
  const script = `
    const { createApp, server } = await import("@databricks/appkit");
    const { jobs } = await import("appkit-jobs");
    const app = await createApp({ telemetry: { exportIntervalMs: 300 }, plugins: [server({ port: 0, host: "127.0.0.1" }), jobs({ pollIntervalMs: 50, jobs: { etl: { taskType: "notebook" } } })] });
    const etl = app.jobs("etl");
    const started = await etl.runNow({ day: "2025-01-01" });
    await etl.getRun(started.data.run_id);
    await etl.listRuns({ limit: 3 });
    await etl.getJob();
    for await (const _ of etl.runAndWait());
    await new Promise((r) => setTimeout(r, 1200)); // a metric export, a span batch
    process.kill(process.pid, "SIGTERM"); // AppKit's handler shuts the SDK down, flushing
  `;
  const env = { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: "100", DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "1001" };
  delete env.NODE_ENV;
  delete env.DATABRICKS_JOB_ID;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { cwd: path.dirname(here), env, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  await new Promise((resolve) => child.on("exit", resolve));
  const spans = receiver.received["/v1/traces"].flatMap((r) => r.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans.map((s) => ({ ...s, scope: ss.scope?.name })))));
  const spanNames = new Set(spans.map((s) => s.name));
  for (const name of ["jobs.runNow", "jobs.getRun", "jobs.listRuns", "jobs.getJob", "plugin.execute", "jobs.runAndWait"]) {
    assert.ok(spanNames.has(name), `${name} did not reach the receiver: ${[...spanNames].join(", ")}\n${stderr.slice(-2000)}`);
  }
  const metricNames = new Set(
    receiver.received["/v1/metrics"].flatMap((r) => r.resourceMetrics.flatMap((rm) => rm.scopeMetrics.flatMap((sm) => sm.metrics.map((m) => m.name)))),
  );
  for (const name of ["jobs.api_call.count", "jobs.api_call.duration", "jobs.engine.polls", "jobs.engine.watchers"]) {
    assert.ok(metricNames.has(name), `${name} did not reach the receiver: ${[...metricNames].join(", ")}`);
  }
  assert.ok(!receiver.received.raw.some((text) => text.includes(emu.token)), "no token in what was exported");
});
