// Execution tiers through the JS API: retries of reads and of run-now, Retry-After, OAuth M2M,
// and the per-identity read cache.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createJobs } from "appkit-jobs";
import { emulator, JOB, patEnv, requestsTo } from "./support/emulator.mjs";

test("a 503 on a read is retried and then succeeds", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({}, { env: patEnv(emu, { etl: JOB.etl }) });
  emu.injectFault({ path: "/api/2.2/jobs/runs/list", status: 503, errorCode: "TEMPORARILY_UNAVAILABLE", retryAfter: 0 });
  const r = await api("etl").listRuns();
  assert.deepEqual(r, { ok: true, data: [] });
  assert.deepEqual(
    requestsTo(emu, "/jobs/runs/list").map((x) => x.status),
    [503, 200],
  );
});

test("a read failing on every attempt reports the status with generic text", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({}, { env: patEnv(emu, { etl: JOB.etl }) });
  emu.injectFault({ path: "/api/2.2/jobs/get", status: 503, message: "upstream secret text", retryAfter: 0, times: 3 });
  const r = await api("etl").getJob();
  assert.deepEqual(r, { ok: false, status: 503, message: "Service Unavailable" });
  assert.equal(requestsTo(emu, "/jobs/get").length, 3);
  // A 500 is not transient: one attempt.
  emu.clearRequests();
  emu.injectFault({ path: "/api/2.2/jobs/get", status: 500 });
  assert.deepEqual(await api("etl").getJob(), { ok: false, status: 500, message: "Internal Server Error" });
  assert.equal(requestsTo(emu, "/jobs/get").length, 1);
});

test("a 503 on run-now is retried with the same idempotency token and starts one run", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({ jobs: { etl: { taskType: "notebook" } } }, { env: patEnv(emu, { etl: JOB.etl }) });
  emu.injectFault({ path: "/api/2.2/jobs/run-now", status: 503, retryAfter: 0 });
  const r = await api("etl").runNow({ a: 1 });
  assert.equal(r.ok, true);
  assert.equal(emu.runCount(), 1);
  const posts = requestsTo(emu, "/jobs/run-now");
  assert.deepEqual(
    posts.map((p) => p.status),
    [503, 200],
  );
  assert.equal(posts[0].body.idempotency_token, posts[1].body.idempotency_token);
  // Each logical call has its own token.
  await api("etl").runNow({ a: 2 });
  const tokens = new Set(requestsTo(emu, "/jobs/run-now").map((p) => p.body.idempotency_token));
  assert.equal(tokens.size, 2);
  assert.equal(emu.runCount(), 2);
});

test("a 429 with Retry-After is honoured before the retry", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({}, { env: patEnv(emu, { etl: JOB.etl }) });
  // Retry-After 2 s is longer than the default first backoff (1 s to 1.25 s): waiting at least
  // 2 s shows the header was used.
  emu.injectFault({ path: "/api/2.2/jobs/get", status: 429, errorCode: "REQUEST_LIMIT_EXCEEDED", retryAfter: 2 });
  const started = Date.now();
  const r = await api("etl").getJob();
  const waited = Date.now() - started;
  assert.equal(r.ok, true);
  assert.deepEqual(
    requestsTo(emu, "/jobs/get").map((x) => x.status),
    [429, 200],
  );
  assert.ok(waited >= 1900, `retried after ${waited} ms, before Retry-After`);
});

test("OAuth M2M: discovery, token fetch, reuse, and refresh after expiry", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const env = {
    DATABRICKS_HOST: emu.url.replace(/^http:\/\//, "http://"),
    DATABRICKS_CLIENT_ID: emu.clientId,
    DATABRICKS_CLIENT_SECRET: emu.clientSecret,
    DATABRICKS_JOB_ETL: String(JOB.etl),
  };
  const api = createJobs({}, { env });
  const etl = api("etl");
  // Concurrent first calls share one token fetch.
  const results = await Promise.all([etl.getJob(), etl.listRuns(), etl.lastRun()]);
  assert.ok(results.every((r) => r.ok));
  const tokenPosts = () => emu.requests().filter((r) => r.path === "/oidc/v1/token");
  assert.equal(tokenPosts().length, 1);
  assert.equal(tokenPosts()[0].body, "[redacted]");
  assert.ok(emu.requests().some((r) => r.path === "/oidc/.well-known/oauth-authorization-server"));
  const apiCalls = emu.requests().filter((r) => r.path.startsWith("/api/"));
  assert.ok(apiCalls.every((r) => r.identity === `oauth:${emu.clientId}`));

  // A token the server no longer accepts is replaced.
  emu.expireOAuthTokens();
  const r = await etl.runNow();
  assert.equal(r.ok, true);
  assert.equal(tokenPosts().length, 2);

  // A token in its refresh margin (half the lifetime of a short token) is replaced before it
  // is sent, while the server would still accept it: no 401 in between.
  emu.setOAuthTokenTtl(1);
  emu.expireOAuthTokens();
  assert.equal((await etl.runNow()).ok, true);
  const after = tokenPosts().length;
  await new Promise((resolve) => setTimeout(resolve, 700));
  emu.clearRequests();
  assert.equal((await etl.runNow()).ok, true);
  assert.equal(tokenPosts().length, 1, "refreshed before the call");
  assert.ok(after >= 3);
  assert.ok(emu.requests().every((r) => r.status !== 401));
});

test("bad credentials give a clear error and no secret", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  const api = createJobs({}, {
    env: { DATABRICKS_HOST: emu.url, DATABRICKS_CLIENT_ID: emu.clientId, DATABRICKS_CLIENT_SECRET: "wrong-secret-xyz", DATABRICKS_JOB_ETL: String(JOB.etl) },
  });
  const r = await api("etl").getJob().catch((e) => e);
  const text = r instanceof Error ? `${r.message} ${JSON.stringify(r.cause ?? null)}` : JSON.stringify(r);
  assert.ok(!text.includes("wrong-secret-xyz"), text);
  if (r instanceof Error) assert.ok(r.statusCode >= 400);
  else assert.equal(r.ok, false);
});

test("the read cache is kept per identity and dropped by run-now", async (t) => {
  const emu = await emulator(t, { timeScale: 200 });
  emu.addUser({ token: "tok-alice", userName: "alice@example.com", defaultPermission: "CAN_MANAGE_RUN" });
  emu.addUser({ token: "tok-bob", userName: "bob@example.com", defaultPermission: "CAN_VIEW" });
  const api = createJobs({}, { env: patEnv(emu, { etl: JOB.etl }) });
  const etl = api("etl");
  const alice = etl.asUser({ headers: { "x-forwarded-access-token": "tok-alice" } });
  const bob = etl.asUser({ headers: { "x-forwarded-access-token": "tok-bob" } });

  await alice.getJob();
  await alice.getJob(); // cached
  await bob.getJob(); // not alice's cache
  await etl.getJob(); // not a user's cache
  await bob.getJob(); // cached
  const gets = requestsTo(emu, "/jobs/get").map((r) => r.identity);
  assert.deepEqual(gets, ["user:alice@example.com", "user:bob@example.com", "service_principal"]);

  // A list cached for alice is refreshed after her run-now.
  emu.clearRequests();
  assert.equal((await alice.listRuns()).data.length, 0);
  assert.equal((await alice.listRuns()).data.length, 0);
  assert.equal(requestsTo(emu, "/jobs/runs/list").length, 1);
  assert.equal((await alice.runNow()).ok, true);
  assert.equal((await alice.listRuns()).data.length, 1);
  assert.equal(requestsTo(emu, "/jobs/runs/list").length, 2);
  // bob may view, not run: the upstream 403 keeps its status, generic text.
  assert.deepEqual(await bob.runNow(), { ok: false, status: 403, message: "Forbidden" });
});
