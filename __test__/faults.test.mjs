// Fault matrix: every Jobs API call the plugin makes, under every fault the emulator can
// inject, with the outcome each one must have.
//
// Reads and cancel (idempotent) and run-now (one idempotency token per logical call):
//   transient (429 with/without Retry-After, 503, 504, reset, HTML 503, non-JSON 200 body,
//   expired OAuth token)  -> retried, succeeds; run-now starts exactly one run.
//   permanent (500, HTML 500, 503 on every attempt, delay past the tier timeout)
//   -> `{ ok: false, status, message: <HTTP status text> }`, no upstream text; run-now starts
//   no second run and reports the failure.
import { test } from "node:test";
import assert from "node:assert/strict";
import { API, at, emulator, jobsFor, oauthEnv, patEnv } from "./support/emulator.mjs";
import { routes } from "./support/http.mjs";
import { STATUS_CODES, until } from "./support/util.mjs";

const UPSTREAM_TEXT = "upstream-detail-7f3a";

/** The calls of a JobHandle, each with the Jobs API path it ends in. */
const CALLS = {
  runNow: { path: API.runNow, call: (h) => h.runNow({ date: "2025-01-01" }) },
  getRun: { path: API.getRun, needsRun: true, call: (h, id) => h.getRun(id) },
  listRuns: { path: API.listRuns, call: (h) => h.listRuns() },
  getRunOutput: { path: API.getOutput, needsRun: true, call: (h, id) => h.getRunOutput(id) },
  cancelRun: { path: API.cancel, needsRun: true, call: (h, id) => h.cancelRun(id) },
  getJob: { path: API.getJob, call: (h) => h.getJob() },
};

/**
 * `statuses`: what the emulator logs for the call's path (0 = connection reset).
 * `fail`: the status of a permanent failure (its text is the HTTP status text).
 */
const FAULTS = {
  "429 + Retry-After": { fault: { status: 429, retryAfter: 1, message: UPSTREAM_TEXT }, statuses: [429, 200] },
  "429 without Retry-After": { fault: { status: 429, message: UPSTREAM_TEXT }, statuses: [429, 200] },
  "500": { fault: { status: 500, message: UPSTREAM_TEXT }, statuses: [500], fail: 500 },
  "503": { fault: { status: 503, message: UPSTREAM_TEXT }, statuses: [503, 200] },
  "503 on every attempt": {
    fault: { status: 503, retryAfter: 0, times: 3, message: UPSTREAM_TEXT },
    statuses: [503, 503, 503],
    fail: 503,
  },
  "504": { fault: { status: 504, message: UPSTREAM_TEXT }, statuses: [504, 200] },
  "delay past the timeout": { fault: { delayMs: 1500 }, config: { timeout: 400 }, statuses: [499], fail: 504 },
  "connection reset": { fault: { reset: true }, statuses: [0, 200] },
  "HTML 503": { fault: { status: 503, html: true }, statuses: [503, 200] },
  "HTML 500": { fault: { status: 500, html: true }, statuses: [500], fail: 500 },
  "non-JSON 200 body": {
    fault: { status: 200, body: `<<${UPSTREAM_TEXT}>>`, contentType: "text/plain" },
    statuses: [200, 200],
  },
  "expired OAuth token": { oauth: true, statuses: [401, 200] },
};

async function runCase(t, callName, faultName) {
  const { path, needsRun, call } = CALLS[callName];
  const spec = FAULTS[faultName];
  const emu = await emulator(t);
  const env = spec.oauth ? oauthEnv(emu) : patEnv(emu);
  const api = jobsFor(t, { jobs: { etl: { taskType: "notebook" } }, ...spec.config }, env);
  const etl = api("etl");

  let runId;
  if (needsRun) {
    const started = await etl.runNow();
    assert.equal(started.ok, true);
    runId = started.data.run_id;
    if (callName === "getRunOutput") emu.setRunState(runId, "SUCCESS");
  }
  // OAuth: get a token with a call that shares no cache entry with the one under test.
  if (spec.oauth && !needsRun) assert.equal((await etl.lastRun()).ok, true);
  const runsBefore = emu.runCount();
  emu.clearRequests();
  if (spec.oauth) emu.expireOAuthTokens();
  else emu.injectFault({ path, ...spec.fault });

  const result = await call(etl, runId);
  // A request we gave up on is logged (status 499) once the emulator sees the client leave.
  if (spec.fault?.delayMs) await until(() => at(emu, path).length === spec.statuses.length, 10_000, "the slow request");

  const text = JSON.stringify(result);
  assert.ok(!text.includes(UPSTREAM_TEXT), `upstream text leaked: ${text}`);
  assert.ok(!text.includes("<html"), `upstream body leaked: ${text}`);
  // OAuth: the 401 lands on the first request after the expiry. The run was started here, so
  // its job is known from the ledger (no ownership read); getRunOutput reads the run first.
  const statuses = spec.oauth && callName === "getRunOutput" ? [200] : spec.statuses;
  assert.deepEqual(
    at(emu, path).map((r) => r.status),
    statuses,
    `${callName} under ${faultName}: attempts`,
  );
  if (spec.fail) {
    assert.deepEqual(result, { ok: false, status: spec.fail, message: STATUS_CODES[spec.fail] });
  } else {
    assert.equal(result.ok, true, `${callName} under ${faultName}: ${text}`);
  }

  if (callName === "runNow") {
    const posts = at(emu, API.runNow);
    assert.equal(new Set(posts.map((p) => p.body.idempotency_token)).size, 1, "one idempotency token per call");
    const started = emu.runCount() - runsBefore;
    if (!spec.fail) {
      assert.equal(started, 1, "exactly one run");
      assert.equal(typeof result.data.run_id === "number" || typeof result.data.run_id === "bigint", true);
    } else if (faultName === "delay past the timeout") {
      // The emulator still handles the slow request after we gave up: a run may exist, and
      // the caller was told 504 (not that nothing started). Never a second one.
      assert.ok(started <= 1, `${started} runs`);
    } else {
      assert.equal(started, 0, "a refused run-now starts nothing");
    }
  }
  if (spec.oauth) {
    assert.equal(at(emu, API.token).length, 1, "one token refresh");
    assert.equal(emu.requests().filter((r) => r.status === 401).length, 1, "one 401, then the new token");
  }
}

for (const callName of Object.keys(CALLS)) {
  test(`fault matrix: ${callName}`, { concurrency: true, timeout: 60_000 }, async (t) => {
    await Promise.all(Object.keys(FAULTS).map((faultName) => t.test(faultName, (tt) => runCase(tt, callName, faultName))));
  });
}

test("run-now through two different transient failures: one token, one run", async (t) => {
  const emu = await emulator(t);
  const api = jobsFor(t, { timeout: 5_000, jobs: { etl: { taskType: "notebook" } } }, patEnv(emu));
  emu.injectFault({ path: API.runNow, status: 503, retryAfter: 0 });
  emu.injectFault({ path: API.runNow, status: 504, retryAfter: 0 });
  const r = await api("etl").runNow({ a: "1" });
  assert.equal(r.ok, true);
  assert.equal(emu.runCount(), 1);
  const posts = at(emu, API.runNow);
  assert.deepEqual(
    posts.map((p) => p.status),
    [503, 504, 200],
  );
  assert.equal(new Set(posts.map((p) => p.body.idempotency_token)).size, 1);
  // A second logical call is a second run, with a new token.
  assert.equal((await api("etl").runNow({ a: "2" })).ok, true);
  assert.equal(emu.runCount(), 2);
  assert.equal(new Set(at(emu, API.runNow).map((p) => p.body.idempotency_token)).size, 2);
});

// ---------------------------------------------------------------------------------------------
// The same faults through the HTTP routes: a transient one is invisible to the client, a
// permanent one answers its status with `{ error: <status text>, code, plugin: "jobs" }`.
// ---------------------------------------------------------------------------------------------

const ROUTES = {
  "POST /run": { path: API.runNow, method: "POST", url: () => "/etl/run", ok: 200 },
  "GET /runs": { path: API.listRuns, method: "GET", url: () => "/etl/runs?limit=5", ok: 200 },
  "GET /status": { path: API.listRuns, method: "GET", url: () => "/etl/status", ok: 200 },
  "GET /runs/:id": { path: API.getRun, method: "GET", url: (id) => `/etl/runs/${id}`, ok: 200, needsRun: true },
  "DELETE /runs/:id": { path: API.cancel, method: "DELETE", url: (id) => `/etl/runs/${id}`, ok: 204, needsRun: true },
};

const ROUTE_FAULTS = {
  "503 once": { fault: { status: 503, retryAfter: 0 } },
  "reset once": { fault: { reset: true } },
  "429 + Retry-After": { fault: { status: 429, retryAfter: 1 } },
  "500": { fault: { status: 500, message: UPSTREAM_TEXT }, fail: 500, code: "INTERNAL_ERROR" },
  "HTML 500": { fault: { status: 500, html: true }, fail: 500, code: "UPSTREAM_ERROR" },
  "503 on every attempt": { fault: { status: 503, retryAfter: 0, times: 3, message: UPSTREAM_TEXT }, fail: 503, code: "TEMPORARILY_UNAVAILABLE" },
  "delay past the timeout": { fault: { delayMs: 1500 }, config: { timeout: 400 }, fail: 504, code: "TIMEOUT", error: "Request timed out after 400ms" },
};

for (const [routeName, route] of Object.entries(ROUTES)) {
  test(`route faults: ${routeName}`, { concurrency: true, timeout: 60_000 }, async (t) => {
    await Promise.all(
      Object.entries(ROUTE_FAULTS).map(([faultName, spec]) =>
        t.test(faultName, async (tt) => {
          const emu = await emulator(tt);
          const { base } = await routes(tt, { jobs: { etl: { taskType: "notebook" } }, ...spec.config, env: patEnv(emu) });
          let runId;
          if (route.needsRun) runId = (await (await fetch(`${base}/api/jobs/etl/run`, { method: "POST" })).json()).runId;
          const runsBefore = emu.runCount();
          emu.injectFault({ path: route.path, ...spec.fault });
          const res = await fetch(`${base}/api/jobs${route.url(runId)}`, { method: route.method });
          const text = await res.text();
          assert.ok(!text.includes(UPSTREAM_TEXT) && !text.includes("<html"), text);
          if (spec.fail) {
            assert.equal(res.status, spec.fail, text);
            assert.deepEqual(JSON.parse(text), { error: spec.error ?? STATUS_CODES[spec.fail], code: spec.code, plugin: "jobs" });
          } else {
            assert.equal(res.status, route.ok, text);
          }
          if (route.path === API.runNow) {
            assert.ok(emu.runCount() - runsBefore <= 1, "never two runs");
            assert.equal(emu.runCount() - runsBefore, spec.fail ? 0 : 1);
          }
        }),
      ),
    );
  });
}
