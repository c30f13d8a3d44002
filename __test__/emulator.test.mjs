// The bundled Jobs API emulator from JavaScript: start/stop, lifecycle control, faults, the
// request log, auth, the HTTP control API, the CLI, and that a forgotten stop() never hangs Node.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import { startEmulator } from "appkit-jobs/emulator";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const fixture = path.join(root, "__test__", "fixtures", "emulator-jobs.json");

const JOB = { id: 7, name: "etl", queueMs: 100, pendingMs: 100, durationMs: 1000, terminatingMs: 100 };

async function call(emu, method, p, { body, token = emu.token, query } = {}) {
  const url = new URL(p, emu.url);
  for (const [k, v] of Object.entries(query ?? {})) url.searchParams.set(k, String(v));
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: res.status, headers: res.headers, body: json };
}

test("starts on a free loopback port with sample jobs, and stop frees it", async () => {
  const emu = await startEmulator();
  try {
    assert.match(emu.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(emu.url, `http://127.0.0.1:${emu.port}`);
    assert.match(emu.token, /^dapi/);
    assert.ok(!JSON.stringify(emu).includes(emu.token), "the token is not an own enumerable property");
    const jobs = emu.jobs();
    assert.ok(jobs.length >= 5);
    assert.ok(jobs.some((j) => j.taskCount > 100), "a job with more than 100 tasks");
    const env = emu.env();
    assert.equal(env.DATABRICKS_HOST, emu.url);
    assert.equal(env.DATABRICKS_JOB_NIGHTLY_ETL, "1001");
    const health = await call(emu, "GET", "/__emulator/health", { token: null });
    assert.deepEqual(health.body, { ok: true });
  } finally {
    await emu.stop();
  }
  await emu.stop();
  await assert.rejects(fetch(`${emu.url}/__emulator/health`));
});

test("life cycle under a frozen clock: advanceTime and setRunState", async () => {
  const emu = await startEmulator({ jobs: [JOB], timeScale: 0 });
  try {
    const { status, body } = await call(emu, "POST", "/api/2.2/jobs/run-now", {
      body: { job_id: 7, job_parameters: { day: "mon" } },
    });
    assert.equal(status, 200);
    assert.equal(body.number_in_job, 1);
    const runId = body.run_id;
    const states = [];
    for (const ms of [0, 150, 100, 1000, 100]) {
      emu.advanceTime(ms);
      states.push(emu.getRun(runId).state.life_cycle_state);
    }
    assert.deepEqual(states, ["QUEUED", "PENDING", "RUNNING", "TERMINATING", "TERMINATED"]);
    const run = (await call(emu, "GET", "/api/2.2/jobs/runs/get", { query: { run_id: runId } })).body;
    assert.equal(run.state.result_state, "SUCCESS");
    assert.equal(run.status.state, "TERMINATED");
    assert.deepEqual(run.job_parameters, [{ name: "day", value: "mon" }]);
    assert.equal(run.tasks[0].run_id, runId + 1);

    const second = (await call(emu, "POST", "/api/2.2/jobs/run-now", { body: { job_id: 7 } })).body.run_id;
    assert.equal(emu.setRunState(second, "RUNNING").state.life_cycle_state, "RUNNING");
    emu.advanceTime(1e6);
    assert.equal(emu.getRun(BigInt(second)).state.life_cycle_state, "RUNNING", "a pinned state holds");
    await call(emu, "POST", "/api/2.2/jobs/runs/cancel", { body: { run_id: second } });
    assert.equal(emu.getRun(String(second)).state.life_cycle_state, "TERMINATING");
    emu.advanceTime(100);
    assert.equal(emu.getRun(second).state.result_state, "CANCELED");
    assert.equal(emu.setRunState(second, "SKIPPED").state.life_cycle_state, "SKIPPED");
    assert.throws(() => emu.setRunState(second, "BOGUS"), /unknown state/);
    assert.throws(() => emu.setRunState(1.5, "RUNNING"), /Invalid run id "1.5": expected a positive integer/);
    assert.equal(emu.getRun(123), null);
    assert.equal(emu.runCount(), 2);
  } finally {
    await emu.stop();
  }
});

test("time scale drives runs to the end on their own", async () => {
  const emu = await startEmulator({ jobs: [{ ...JOB, outcome: "FAILED" }], timeScale: 0 });
  try {
    const runId = (await call(emu, "POST", "/api/2.2/jobs/run-now", { body: { job_id: 7 } })).body.run_id;
    emu.setTimeScale(1000);
    let run;
    do {
      await new Promise((r) => setTimeout(r, 5));
      run = (await call(emu, "GET", "/api/2.2/jobs/runs/get", { query: { run_id: runId } })).body;
    } while (run.status.state !== "TERMINATED");
    assert.equal(run.state.result_state, "FAILED");
    assert.throws(() => emu.setTimeScale(-1), /timeScale/);
  } finally {
    await emu.stop();
  }
});

test("task graphs from JS: dependsOn, runIf, per-task durations, forEach, seeded history", async () => {
  const graph = {
    id: 20,
    name: "graph",
    queueMs: 0,
    pendingMs: 100,
    durationMs: 1000,
    terminatingMs: 100,
    tasks: [
      { taskKey: "a", outcome: "FAILED" },
      { taskKey: "b", dependsOn: ["a"], durationMs: 500, runIf: "ALL_DONE" },
      { taskKey: "c", dependsOn: ["a"], repairOutcome: "SUCCESS" },
      { taskKey: "fan", dependsOn: ["b"], forEach: { inputs: ["x", "y", "z"], concurrency: 2, iterationDurationMs: 300, failIterations: [1] } },
    ],
    history: [{ outcome: "SUCCESS", durationMs: 4000, agoMs: 60_000 }],
  };
  const emu = await startEmulator({ jobs: [graph, { id: 21, name: "counted", history: 2 }], timeScale: 0 });
  try {
    const list = async (query) => (await call(emu, "GET", "/api/2.2/jobs/runs/list", { query })).body.runs ?? [];
    const [past] = await list({ job_id: 20, completed_only: true, expand_tasks: true });
    assert.equal(past.run_duration, 4000);
    assert.equal(past.tasks.length, 4);
    assert.equal((await list({ job_id: 21 })).length, 2);
    assert.equal(emu.runCount(), 0, "seeded history is not counted");

    const runId = (await call(emu, "POST", "/api/2.2/jobs/run-now", { body: { job_id: 20 } })).body.run_id;
    let run = emu.getRun(runId);
    assert.deepEqual(
      run.tasks.map((t) => [t.task_key, t.state.life_cycle_state, t.start_time]),
      [
        ["a", "PENDING", run.start_time],
        ["b", "BLOCKED", 0],
        ["c", "BLOCKED", 0],
        ["fan", "BLOCKED", 0],
      ],
    );
    assert.deepEqual(run.tasks[3].depends_on, [{ task_key: "b" }]);
    emu.advanceTime(1200 + 700 + 1000);
    run = emu.getRun(runId);
    const byKey = Object.fromEntries(run.tasks.map((t) => [t.task_key, t]));
    assert.equal(byKey.a.state.result_state, "FAILED");
    assert.equal(byKey.b.state.result_state, "SUCCESS", "ALL_DONE runs after a failure");
    assert.equal(byKey.b.start_time, byKey.a.end_time);
    assert.equal(byKey.c.state.result_state, "UPSTREAM_FAILED");
    assert.equal(byKey.c.state.life_cycle_state, "SKIPPED");
    assert.deepEqual(byKey.fan.for_each_task.stats.task_run_stats, {
      total_iterations: 3,
      scheduled_iterations: 3,
      active_iterations: 0,
      completed_iterations: 3,
      succeeded_iterations: 2,
      failed_iterations: 1,
    });
    assert.equal(byKey.fan.for_each_task.inputs, '["x","y","z"]');
    assert.equal(run.state.result_state, "FAILED");

    const ids = emu.seedHistory(20, 3);
    assert.equal(ids.length, 3);
    assert.ok(ids.every((id) => typeof id === "number" && id < runId));
    assert.equal(emu.getRun(ids[0]).state.result_state, "SUCCESS");
    assert.equal(emu.seedHistory(21, [{ durationMs: 1234, agoMs: 10_000 }]).length, 1);
    assert.throws(() => emu.seedHistory(20, [{ agoMs: 10 }]), /job 20 \("graph"\): history run 0: agoMs 10 is shorter than the run itself/);
    assert.throws(() => emu.seedHistory(20, "many"), TypeError);
    assert.throws(() => emu.seedHistory(99, 1), /Job 99 does not exist/);
    assert.throws(() => emu.seedHistory(20, [{ durationMs: 1.5 }]), /history.durationMs must be a whole number/);
    const seeded = await call(emu, "POST", "/__emulator/jobs/21/history", { token: null, body: { count: 1 } });
    assert.equal(seeded.body.runIds.length, 1);
    assert.equal(emu.runCount(), 1);

    // The workspace clock is virtual, in every answer's Date.
    emu.advanceTime(86_400_000);
    const answer = await call(emu, "GET", "/api/2.2/jobs/runs/get", { query: { run_id: runId } });
    assert.ok(Date.parse(answer.headers.get("date")) - Date.now() > 86_000_000, answer.headers.get("date"));
    emu.reset();
    assert.equal((await list({ job_id: 20 })).length, 1, "a reset keeps the job's own history");
  } finally {
    await emu.stop();
  }
  const refused = [
    [[{ taskKey: "a", dependsOn: ["b"] }, { taskKey: "b", dependsOn: ["a"] }], /job 30 \("bad"\): tasks depend on each other in a cycle: a -> b -> a/],
    [[{ taskKey: "a", dependsOn: ["nope"] }], /job 30 \("bad"\): task "a" depends on "nope", which is not a task of this job/],
    [[{ taskKey: "a", durationMs: 1.5 }], /durationMs must be a whole number/],
    [[{ taskKey: "a", forEach: { count: -1 } }], /forEach.count must be a whole number/],
  ];
  for (const [tasks, message] of refused) {
    await assert.rejects(startEmulator({ jobs: [{ id: 30, name: "bad", tasks }] }), message);
  }
});

test("faults: status with Retry-After, HTML body, connection reset, delay", async () => {
  const emu = await startEmulator({ jobs: [JOB], timeScale: 0 });
  try {
    const runId = (await call(emu, "POST", "/api/2.2/jobs/run-now", { body: { job_id: 7 } })).body.run_id;
    emu.clearRequests();
    emu.injectFault({ path: "/api/2.2/jobs/runs/get", status: 429, retryAfter: 3, times: 2 });
    for (let i = 0; i < 2; i++) {
      const r = await call(emu, "GET", "/api/2.2/jobs/runs/get", { query: { run_id: runId } });
      assert.equal(r.status, 429);
      assert.equal(r.headers.get("retry-after"), "3");
      assert.equal(r.body.error_code, "REQUEST_LIMIT_EXCEEDED");
    }
    assert.equal((await call(emu, "GET", "/api/2.2/jobs/runs/get", { query: { run_id: runId } })).status, 200);

    emu.injectFault({ path: "/api/2.2/jobs/*", status: 503, html: true });
    const html = await call(emu, "GET", "/api/2.2/jobs/get", { query: { job_id: 7 } });
    assert.equal(html.status, 503);
    assert.match(html.headers.get("content-type"), /text\/html/);
    assert.match(html.body, /^<html>/);

    emu.injectFault({ path: "/api/2.2/jobs/runs/get", reset: true });
    await assert.rejects(call(emu, "GET", "/api/2.2/jobs/runs/get", { query: { run_id: runId } }));

    emu.injectFault({ path: "/api/2.2/jobs/runs/get", method: "GET", delayMs: 10 });
    assert.equal((await call(emu, "GET", "/api/2.2/jobs/runs/get", { query: { run_id: runId } })).status, 200);

    emu.injectFault({ path: "/api/2.2/jobs/run-now", status: 500, errorCode: "INTERNAL_ERROR", message: "boom" });
    const boom = await call(emu, "POST", "/api/2.2/jobs/run-now", { body: { job_id: 7 } });
    assert.deepEqual([boom.status, boom.body], [500, { error_code: "INTERNAL_ERROR", message: "boom" }]);

    const log = emu.requests();
    assert.deepEqual(
      log.map((e) => [e.method, e.status, e.fault]),
      [
        ["GET", 429, true],
        ["GET", 429, true],
        ["GET", 200, false],
        ["GET", 503, true],
        ["GET", 0, true],
        ["GET", 200, true],
        ["POST", 500, true],
      ],
    );
    assert.equal(log[0].query, `run_id=${runId}`);
    assert.equal(log[0].identity, "service_principal");
    assert.deepEqual(log[6].body, { job_id: 7 });
    assert.throws(() => emu.injectFault({ path: "/x" }), /needs status/);
    assert.throws(() => emu.injectFault("nope"), TypeError);
  } finally {
    await emu.stop();
  }
});

test("auth: PAT, user tokens with per-job permissions, OAuth M2M", async () => {
  const emu = await startEmulator({
    jobs: [JOB, { ...JOB, id: 8, name: "ml" }],
    timeScale: 0,
    users: [{ token: "tok-alice", userName: "alice@example.com", permissions: { 7: "CAN_MANAGE_RUN" } }],
    clientSecret: "very-secret",
    oauthTokenTtlSecs: 120,
  });
  try {
    const anon = await call(emu, "GET", "/api/2.2/jobs/get", { token: null, query: { job_id: 7 } });
    assert.equal(anon.status, 401);
    assert.equal(anon.body.error_code, "UNAUTHENTICATED");
    assert.equal((await call(emu, "GET", "/api/2.2/jobs/get", { token: "bad", query: { job_id: 7 } })).status, 401);
    assert.equal((await call(emu, "POST", "/api/2.2/jobs/run-now", { token: "tok-alice", body: { job_id: 7 } })).status, 200);
    const denied = await call(emu, "POST", "/api/2.2/jobs/run-now", { token: "tok-alice", body: { job_id: 8 } });
    assert.equal(denied.status, 403);
    assert.equal(denied.body.error_code, "PERMISSION_DENIED");
    emu.addUser({ token: "tok-bob", userName: "bob@example.com", defaultPermission: "CAN_VIEW" });
    assert.equal((await call(emu, "GET", "/api/2.2/jobs/get", { token: "tok-bob", query: { job_id: 8 } })).status, 200);
    assert.equal((await call(emu, "POST", "/api/2.2/jobs/run-now", { token: "tok-bob", body: { job_id: 8 } })).status, 403);
    assert.throws(() => emu.addUser({ token: "x", userName: "y", defaultPermission: "ROOT" }), /unknown permission/);

    const disc = await call(emu, "GET", "/oidc/.well-known/oauth-authorization-server", { token: null });
    assert.equal(disc.body.token_endpoint, `${emu.url}/oidc/v1/token`);
    const basic = Buffer.from(`${emu.clientId}:${emu.clientSecret}`).toString("base64");
    const tokenRes = await fetch(disc.body.token_endpoint, {
      method: "POST",
      headers: { authorization: `Basic ${basic}`, "content-type": "application/x-www-form-urlencoded" },
      body: "grant_type=client_credentials&scope=all-apis",
    });
    const granted = await tokenRes.json();
    assert.equal(granted.expires_in, 120);
    assert.equal((await call(emu, "GET", "/api/2.2/jobs/get", { token: granted.access_token, query: { job_id: 8 } })).status, 200);
    emu.expireOAuthTokens();
    assert.equal((await call(emu, "GET", "/api/2.2/jobs/get", { token: granted.access_token, query: { job_id: 8 } })).status, 401);
    const wrong = await fetch(disc.body.token_endpoint, {
      method: "POST",
      headers: { authorization: `Basic ${Buffer.from(`${emu.clientId}:nope`).toString("base64")}` },
      body: "grant_type=client_credentials&scope=all-apis",
    });
    assert.equal(wrong.status, 401);

    const identities = new Set(emu.requests().map((e) => e.identity));
    assert.ok(identities.has("user:alice@example.com"));
    assert.ok(identities.has(`oauth:${emu.clientId}`));
    assert.ok(identities.has(null));
    const logText = JSON.stringify(emu.requests());
    assert.ok(!logText.includes("very-secret") && !logText.includes(emu.token), "no secret in the request log");
  } finally {
    await emu.stop();
  }
});

test("HTTP control API under /__emulator", async () => {
  const emu = await startEmulator({ jobs: [JOB], timeScale: 0 });
  try {
    const ctl = (method, p, body) => call(emu, method, `/__emulator/${p}`, { token: null, body });
    assert.equal((await ctl("POST", "jobs", { id: 9, name: "added", taskCount: 3 })).status, 200);
    const jobs = (await ctl("GET", "jobs")).body.jobs;
    assert.deepEqual(
      jobs.map((j) => [j.id, j.taskCount]),
      [
        [7, 1],
        [9, 3],
      ],
    );
    const runId = (await call(emu, "POST", "/api/2.2/jobs/run-now", { body: { job_id: 9 } })).body.run_id;
    const pinned = await ctl("POST", `runs/${runId}/state`, { state: "RUNNING" });
    assert.equal(pinned.body.state.life_cycle_state, "RUNNING");
    assert.equal((await ctl("GET", `runs/${runId}`)).body.tasks.length, 3);
    assert.equal((await ctl("POST", "faults", { path: "/api/2.2/jobs/get", status: 504 })).status, 200);
    assert.equal((await call(emu, "GET", "/api/2.2/jobs/get", { query: { job_id: 9 } })).status, 504);
    assert.equal((await ctl("POST", "faults", { path: "/api/2.2/jobs/get", status: 504 })).status, 200);
    await ctl("DELETE", "faults");
    assert.equal((await call(emu, "GET", "/api/2.2/jobs/get", { query: { job_id: 9 } })).status, 200);
    assert.equal((await ctl("POST", "time", { advanceMs: 10 })).status, 200);
    assert.equal((await ctl("POST", "users", { token: "t-u", userName: "u@example.com" })).status, 200);
    const logged = (await ctl("GET", "requests")).body.requests;
    assert.equal(logged.length, 3, "control calls are not logged");
    await ctl("DELETE", "requests");
    assert.deepEqual((await ctl("GET", "requests")).body.requests, []);
    await ctl("POST", "reset");
    assert.equal((await call(emu, "GET", "/api/2.2/jobs/runs/get", { query: { run_id: runId } })).status, 400);
    const bad = await ctl("POST", "runs/12/state", { state: "RUNNING" });
    assert.equal(bad.status, 404);
    assert.equal((await ctl("GET", "nothing")).status, 404);
  } finally {
    await emu.stop();
  }
});

test("an emulator whose handle is garbage-collected keeps serving until the process ends", async () => {
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc");
  const { url, token } = await (async () => {
    const emu = await startEmulator({ jobs: [JOB] });
    return { url: emu.url, token: emu.token };
  })();
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  const res = await fetch(`${url}/api/2.2/jobs/get?job_id=7`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
});

test("a process that forgets stop() still exits", () => {
  const script = `
    const { startEmulator } = require(${JSON.stringify(path.join(root, "lib", "emulator.js"))});
    startEmulator().then(async (emu) => {
      const r = await fetch(emu.url + "/api/2.2/jobs/get?job_id=1001", { headers: { authorization: "Bearer " + emu.token } });
      console.log("status", r.status);
    });
  `;
  const res = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: 60_000 });
  assert.equal(res.signal, null, "exited by itself, not killed by the safety timeout");
  assert.equal(res.status, 0, res.stderr);
  assert.match(res.stdout, /status 200/);
});

test("CLI: npx appkit-jobs emulator --jobs FILE prints the env and serves until SIGINT", async () => {
  const child = spawn(process.execPath, [path.join(root, "bin", "cli.js"), "emulator", "--port", "0", "--jobs", fixture], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  try {
    let out = "";
    await new Promise((resolve, reject) => {
      child.stdout.on("data", (d) => {
        out += d;
        if (out.includes("Press Ctrl-C")) resolve();
      });
      child.on("exit", () => reject(new Error(`cli exited early: ${out}`)));
    });
    const url = out.match(/export DATABRICKS_HOST=(\S+)/)[1];
    const token = out.match(/export DATABRICKS_TOKEN=(\S+)/)[1];
    // The control API URL it prints answers with an index of its endpoints.
    const control = out.match(/Control API: (\S+)/)[1];
    const index = await fetch(control);
    assert.equal(index.status, 200);
    const { endpoints } = await index.json();
    assert.ok(endpoints.some((e) => e.method === "POST" && e.path === "/__emulator/faults"), JSON.stringify(endpoints));
    assert.match(out, /export DATABRICKS_JOB_DAILY_REPORT=501/);
    assert.match(out, /export DATABRICKS_JOB_MODEL_TRAIN=502/);
    const job = await (await fetch(`${url}/api/2.2/jobs/get?job_id=502`, { headers: { authorization: `Bearer ${token}` } })).json();
    assert.deepEqual(
      job.settings.tasks.map((t) => t.task_key),
      ["prepare", "train"],
    );
    assert.ok(job.settings.tasks[1].python_wheel_task);
  } finally {
    child.kill("SIGINT");
  }
  assert.deepEqual(await exited, { code: 0, signal: null });
  const bad = spawnSync(process.execPath, [path.join(root, "bin", "cli.js"), "serve"], { encoding: "utf8" });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /Usage: appkit-jobs emulator/);
});

test("CLI: --jobs with an unknown taskType or a duplicate job id fails, naming the job", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "appkit-jobs-cli-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cases = [
    [[{ id: 7, name: "nightly", taskType: "bogus" }], /job 7 \("nightly"\): task "main" has an unknown taskType "bogus"/],
    [[{ id: 8, name: "wide", tasks: [{ taskKey: "a", type: "notebook" }, { taskKey: "b", type: "shell" }] }], /job 8 \("wide"\): task "b" has an unknown taskType "shell"/],
    [[{ id: 9, name: "first" }, { id: 9, name: "second" }], /job 9 is defined twice \(as "first" and as "second"\)/],
  ];
  for (const [jobs, message] of cases) {
    const file = path.join(dir, "jobs.json");
    fs.writeFileSync(file, JSON.stringify(jobs));
    const r = spawnSync(process.execPath, [path.join(root, "bin", "cli.js"), "emulator", "--jobs", file], { encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, message);
  }
});

