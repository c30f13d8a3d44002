// Identity isolation: what one user (asUser) may read never reaches another user or the
// service principal through the read cache or a shared poll, and the reverse. The emulator
// answers per identity: alice may run job 1001, carol may only view it, bob may not see it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { API, at, emulator, jobsFor, patEnv } from "./support/emulator.mjs";
import { routes } from "./support/http.mjs";
import { drain, until } from "./support/util.mjs";

const ALICE = "tok-alice-identity";
const BOB = "tok-bob-identity";
const CAROL = "tok-carol-identity";

async function setup(t) {
  const emu = await emulator(t, {
    users: [
      { token: ALICE, userName: "alice@example.com", defaultPermission: "CAN_MANAGE_RUN" },
      { token: BOB, userName: "bob@example.com", permissions: {} },
      { token: CAROL, userName: "carol@example.com", defaultPermission: "CAN_VIEW" },
    ],
  });
  const api = jobsFor(t, { pollIntervalMs: 20, jobs: { etl: { taskType: "notebook" } } }, patEnv(emu));
  const etl = api("etl");
  const as = (token) => etl.asUser({ headers: { "x-forwarded-access-token": token } });
  return { emu, api, sp: etl, alice: as(ALICE), bob: as(BOB), carol: as(CAROL) };
}

const FORBIDDEN = { ok: false, status: 403, message: "Forbidden" };

test("the read cache never serves one identity's data to another", async (t) => {
  const { emu, sp, alice, bob, carol } = await setup(t);
  const started = await alice.runNow({ d: "1" });
  assert.equal(started.ok, true);
  const runId = started.data.run_id;
  emu.setRunState(runId, "SUCCESS");

  const reads = {
    getJob: (h) => h.getJob(),
    listRuns: (h) => h.listRuns({ limit: 5 }),
    lastRun: (h) => h.lastRun(),
    getRun: (h) => h.getRun(runId),
    getRunOutput: (h) => h.getRunOutput(runId),
  };
  for (const [name, read] of Object.entries(reads)) {
    emu.clearRequests();
    // alice and the SP read (and cache) it; bob, who may not see the job, asks next, twice.
    assert.equal((await read(alice)).ok, true, `${name} alice`);
    assert.equal((await read(sp)).ok, true, `${name} sp`);
    assert.equal((await read(alice)).ok, true, `${name} alice cached`);
    assert.deepEqual(await read(bob), FORBIDDEN, `${name}: bob got someone's cached data`);
    assert.deepEqual(await read(bob), FORBIDDEN, `${name}: bob, again`);
    // carol may view: her own fetch, not alice's entry.
    assert.equal((await read(carol)).ok, true, `${name} carol`);
    const who = emu.requests().map((r) => r.identity);
    assert.ok(who.filter((w) => w === "user:bob@example.com").length >= 2, `${name}: bob's reads went upstream as bob (${who})`);
    assert.ok(who.includes("user:carol@example.com"), `${name}: carol's read went upstream as carol`);
    assert.ok(who.includes("service_principal"), `${name}: the SP's read went upstream as the SP`);
    // alice's second read was served from her own cache entry: at most one request per path.
    for (const path of new Set(emu.requests().map((r) => r.path))) {
      assert.ok(at(emu, path).filter((r) => r.identity === "user:alice@example.com").length <= 1, `${name}: alice's cache on ${path}`);
    }
  }
  // Writes are checked per identity too.
  assert.deepEqual(await carol.runNow(), FORBIDDEN);
  assert.deepEqual(await bob.cancelRun(runId), FORBIDDEN);
  assert.equal(emu.runCount(), 1);
});

test("a user's cached read does not survive for the SP, and the SP's not for a user", async (t) => {
  const { emu, sp, bob } = await setup(t);
  // SP first, then bob: bob must not get the SP's cached job.
  assert.equal((await sp.getJob()).ok, true);
  assert.deepEqual(await bob.getJob(), FORBIDDEN);
  assert.deepEqual(
    at(emu, API.getJob).map((r) => r.identity),
    ["service_principal", "user:bob@example.com"],
  );
});

test("shared polls are per identity: a user's watch never rides the SP's poll, nor another user's", async (t) => {
  const { emu, sp, alice, bob, carol } = await setup(t);
  const runId = (await sp.runNow()).data.run_id;
  emu.clearRequests();

  // bob may not see the run: his watch fails, however many others watch it.
  const spWatch = sp.watchRun(runId)[Symbol.asyncIterator]();
  const aliceWatch = alice.watchRun(runId)[Symbol.asyncIterator]();
  const carolWatch = carol.watchRun(runId)[Symbol.asyncIterator]();
  for (const it of [spWatch, aliceWatch, carolWatch]) assert.equal((await it.next()).value.status, "QUEUED");
  const bobResult = await drain(bob.watchRun(runId));
  assert.deepEqual(bobResult.updates, []);
  assert.equal(bobResult.error?.statusCode, 403);
  assert.equal(bobResult.error.message, "Forbidden");

  // Each identity reads the run for itself (bob's one refused read included).
  await until(() => new Set(at(emu, API.getRun).map((r) => r.identity)).size >= 4, 5_000, "a poll per identity");
  assert.deepEqual(
    [...new Set(at(emu, API.getRun).map((r) => r.identity))].sort(),
    ["service_principal", "user:alice@example.com", "user:bob@example.com", "user:carol@example.com"],
  );

  // carol loses her grant mid-wait: her watch ends with 403, the others go on to the end.
  emu.addUser({ token: CAROL, userName: "carol@example.com", permissions: {} });
  const carolEnd = await drain({ [Symbol.asyncIterator]: () => carolWatch });
  assert.equal(carolEnd.error?.statusCode, 403);
  assert.deepEqual(carolEnd.updates, []);
  emu.setRunState(runId, "SUCCESS");
  for (const it of [spWatch, aliceWatch]) {
    const { updates, error } = await drain({ [Symbol.asyncIterator]: () => it });
    assert.equal(error, null);
    assert.equal(updates.at(-1).status, "TERMINATED");
  }
  // No poll of carol's after her 403.
  const carolPolls = at(emu, API.getRun).filter((r) => r.identity === "user:carol@example.com");
  assert.equal(carolPolls.at(-1).status, 403);
});

test("the HTTP routes run as the service principal whatever token the request carries", async (t) => {
  const { emu } = await setup(t);
  const { base } = await routes(t, { pollIntervalMs: 20, jobs: { etl: { taskType: "notebook" } }, env: patEnv(emu) });
  const headers = { "x-forwarded-access-token": BOB, "content-type": "application/json" };
  const run = await fetch(`${base}/api/jobs/etl/run`, { method: "POST", headers, body: "{}" });
  assert.equal(run.status, 200);
  const { runId } = await run.json();
  for (const p of ["/etl/runs", "/etl/status", `/etl/runs/${runId}`]) {
    assert.equal((await fetch(`${base}/api/jobs${p}`, { headers })).status, 200, p);
  }
  assert.ok(emu.requests().length > 0);
  assert.ok(emu.requests().every((r) => r.identity === "service_principal"), JSON.stringify(emu.requests().map((r) => r.identity)));
});
