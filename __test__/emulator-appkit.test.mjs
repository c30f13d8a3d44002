// A real @databricks/appkit app, with AppKit's own stock jobs() plugin (not ours), boots against
// the emulator exactly as it would against a workspace: its WorkspaceClient reads
// DATABRICKS_HOST/TOKEN, asks SCIM Me for the service principal and the workspace id header,
// posts its startup telemetry, then triggers runs and waits for them.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startEmulator } from "appkit-jobs/emulator";

const JOBS = [
  { id: 3001, name: "etl", taskType: "notebook", queueMs: 50, pendingMs: 50, durationMs: 400, terminatingMs: 50 },
  { id: 3002, name: "report", taskType: "sql", outcome: "FAILED", queueMs: 0, durationMs: 300 },
];

let emu;
let app;
let base;

async function waitFor(check) {
  for (;;) {
    const value = await check();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  emu = await startEmulator({ jobs: JOBS, timeScale: 20, orgId: "7474747474747474" });
  for (const key of Object.keys(process.env)) {
    if (key.startsWith("DATABRICKS_") || key === "DISABLE_APPKIT_INTERNAL_TELEMETRY" || key === "DO_NOT_TRACK") {
      delete process.env[key];
    }
  }
  delete process.env.NODE_ENV; // production mode: AppKit enforces the plugin's resources
  Object.assign(process.env, {
    DATABRICKS_HOST: emu.url,
    DATABRICKS_TOKEN: emu.token,
    DATABRICKS_JOB_ETL: "3001",
    DATABRICKS_JOB_REPORT: "3002",
    // The stock plugin's static manifest always requires DATABRICKS_JOB_ID in production mode,
    // even with explicit jobs (which then take precedence over it).
    DATABRICKS_JOB_ID: "3001",
  });
  // Imported after the environment is set: AppKit reads it at boot.
  const { createApp, server, jobs } = await import("@databricks/appkit");
  app = await createApp({
    plugins: [
      server({ port: 0, host: "127.0.0.1" }),
      jobs({ pollIntervalMs: 50, jobs: { etl: { taskType: "notebook" }, report: { taskType: "sql" } } }),
    ],
  });
  const srv = app.server.getServer();
  if (!srv.listening) await new Promise((r) => srv.once("listening", r));
  base = `http://127.0.0.1:${srv.address().port}/api/jobs`;
});

after(async () => {
  const srv = app?.server.getServer();
  if (srv) {
    srv.closeAllConnections?.();
    await new Promise((r) => srv.close(() => r()));
  }
  await emu?.stop();
});

test("AppKit boots against the emulator: SCIM Me with the workspace id, telemetry accepted", async () => {
  const log = emu.requests();
  const me = log.find((e) => e.path === "/api/2.0/preview/scim/v2/Me");
  assert.ok(me, "AppKit asked who the service principal is");
  assert.equal(me.status, 200);
  assert.equal(me.identity, "service_principal");
  const telemetry = await waitFor(() => emu.requests().find((e) => e.path === "/telemetry-ext"));
  assert.equal(telemetry.status, 200);
  assert.match(telemetry.query, /o=7474747474747474/, "AppKit read the workspace id from x-databricks-org-id");
});

test("the stock plugin's HTTP route triggers a run that the emulator runs to SUCCESS", async () => {
  const res = await fetch(`${base}/etl/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ params: { date: "2024-06-01" } }),
  });
  assert.equal(res.status, 200);
  const { runId } = await res.json();
  assert.equal(typeof runId, "number");
  const runNow = emu.requests().find((e) => e.path === "/api/2.2/jobs/run-now" && e.body.job_id === 3001);
  assert.deepEqual(runNow.body.notebook_params, { date: "2024-06-01" }, "taskType notebook maps to notebook_params");
  const run = await waitFor(async () => {
    const r = await fetch(`${base}/etl/runs/${runId}`);
    assert.equal(r.status, 200);
    const body = await r.json();
    return body.state?.life_cycle_state === "TERMINATED" ? body : null;
  });
  assert.equal(run.state.result_state, "SUCCESS");
  assert.equal(run.run_id, runId);
  const status = await (await fetch(`${base}/etl/status`)).json();
  assert.equal(status.status, "TERMINATED");
});

test("the stock plugin's runAndWait follows the emulator's life cycle to a FAILED end", async () => {
  const seen = [];
  let last;
  for await (const update of app.jobs("report").runAndWait({ statement: "select 1" })) {
    if (seen.at(-1) !== update.status) seen.push(update.status);
    last = update;
  }
  assert.equal(seen.at(-1), "TERMINATED");
  assert.ok(seen.length >= 2, `saw ${seen.join(" > ")}`);
  assert.equal(last.run.state.result_state, "FAILED");
  const output = await app.jobs("report").getRunOutput(last.run.run_id);
  assert.equal(output.ok, true);
  assert.ok(output.data.error);
});

test("a cancel through the stock plugin's route reaches the emulator", async () => {
  const { runId } = await (await fetch(`${base}/etl/run`, { method: "POST" })).json();
  emu.setRunState(runId, "RUNNING");
  const del = await fetch(`${base}/etl/runs/${runId}`, { method: "DELETE" });
  assert.equal(del.status, 204);
  const run = await waitFor(() => {
    const r = emu.getRun(runId);
    return r.state.life_cycle_state === "TERMINATED" ? r : null;
  });
  assert.equal(run.state.result_state, "CANCELED");
});
