#!/usr/bin/env node
// node bench/freshness.mjs [--runs=40] [--rounds=2] [--poll=100] [--sides=ours,stock]
//
// How soon a page learns that a run ended: `POST /api/jobs/<key>/run?stream=true` through each
// side's AppKit server, one stream at a time, and for each run the time from its `end_time` to
// the arrival of its terminal event at the client. The emulator runs in its own process at time
// scale 1 (its clock is this machine's, so `end_time` and the client's `Date.now()` are on one
// clock) with two jobs of 400 ms runs: `fresh`, with ten past runs of the same length (history:
// ours aims a poll at the expected end), and `plain`, with none. Requests per run come from the
// emulator's log: runs/get per run id (ours also reads one runs/list page per job per cache TTL
// for the history, during the warm-up here). Prints one markdown table; see bench/README.md
// ("Freshness").
import { performance } from "node:perf_hooks";
import { control, fmt, quantile, runChild, startEmulatorProcess, table } from "./lib/util.mjs";
import http from "node:http";

const argv = process.argv.slice(2);
const option = (name, fallback) => argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback;
const RUNS = Number(option("runs", 40));
const ROUNDS = Number(option("rounds", 2));
const POLL_MS = Number(option("poll", 100));
const SIDES = option("sides", "ours,stock").split(",");
const WARMUP = 3;

// 400 ms from run-now to TERMINATED: QUEUED 20, PENDING 30, RUNNING 320, TERMINATING 30.
const timing = { taskType: "notebook", queueMs: 20, pendingMs: 30, durationMs: 320, terminatingMs: 30 };
const JOBS = [
  { id: 7101, name: "fresh", ...timing, history: 10 },
  { id: 7102, name: "plain", ...timing },
];

function log(line) {
  process.stderr.write(`[freshness] ${line}\n`);
}

/** One streamed run: resolves `{ runId, lagMs, events }` (lag: terminal event's arrival - end_time). */
function streamOne(port, jobKey) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: `/api/jobs/${jobKey}/run?stream=true`,
        headers: { "content-type": "application/json", accept: "text/event-stream" },
      },
      (res) => {
        let buffer = "";
        let events = 0;
        let done;
        res.setEncoding("utf8");
        res.on("data", (chunk) => {
          const arrived = Date.now();
          buffer += chunk;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const frame = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = frame
              .split("\n")
              .filter((l) => l.startsWith("data:"))
              .map((l) => l.slice(5).trimStart())
              .join("\n");
            if (!data) continue;
            let event;
            try {
              event = JSON.parse(data);
            } catch {
              continue;
            }
            if (!event.run) continue;
            events++;
            if (["TERMINATED", "SKIPPED", "INTERNAL_ERROR"].includes(event.status) && !done) {
              done = { runId: event.run.run_id, lagMs: arrived - event.run.end_time, events };
            }
          }
        });
        res.on("end", () => (done ? resolve(done) : reject(new Error(`stream ended without a terminal event (status ${res.statusCode})`))));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end("{}");
  });
}

async function side(emu, env, name) {
  const out = {};
  await control(emu, "POST", "reset");
  let port;
  let finish;
  const done = new Promise((r) => (finish = r));
  const running = runChild({ side: name, scenario: "serve", pollIntervalMs: POLL_MS, jobs: { fresh: { taskType: "notebook" }, plain: { taskType: "notebook" } } }, env, {
    timeoutMs: 600_000,
    onMessage: async (msg, child) => {
      if (msg.type === "ready") {
        port = msg.port;
        child.send({ type: "begin" });
      } else if (msg.type === "begun") {
        try {
          for (const job of JOBS) {
            for (let i = 0; i < WARMUP; i++) await streamOne(port, job.name);
            const before = await control(emu, "GET", "requests");
            const lags = [];
            const ids = new Set();
            const t0 = performance.now();
            for (let i = 0; i < RUNS; i++) {
              const r = await streamOne(port, job.name);
              lags.push(r.lagMs);
              ids.add(String(r.runId));
            }
            const { requests } = await control(emu, "GET", "requests");
            const fresh = requests.slice(before.requests.length).filter((r) => r.path.includes("/jobs/"));
            const runsGet = fresh.filter((r) => r.path.endsWith("/runs/get") && ids.has(new URLSearchParams(r.query).get("run_id"))).length;
            lags.sort((a, b) => a - b);
            out[job.name] = { p50: quantile(lags, 0.5), p90: quantile(lags, 0.9), runsGetPerRun: runsGet / RUNS, wallS: (performance.now() - t0) / 1000 };
            log(`${name} ${job.name}: p50 ${fmt(out[job.name].p50, 1)} ms, p90 ${fmt(out[job.name].p90, 1)} ms, runs/get per run ${fmt(out[job.name].runsGetPerRun, 2)}`);
          }
        } finally {
          child.send({ type: "end" });
          finish();
        }
      }
    },
  });
  await done;
  await running;
  return out;
}

const emu = await startEmulatorProcess({ jobs: JOBS, timeScale: 1, requestLogLimit: 1_000_000 });
const env = {};
for (const [k, v] of Object.entries(process.env)) if (!/^(DATABRICKS_|OTEL_)/.test(k) && k !== "NODE_OPTIONS") env[k] = v;
Object.assign(env, {
  DATABRICKS_HOST: emu.url,
  DATABRICKS_TOKEN: emu.token,
  DATABRICKS_JOB_FRESH: "7101",
  DATABRICKS_JOB_PLAIN: "7102",
  DATABRICKS_JOB_ID: "7101",
  DATABRICKS_WORKSPACE_ID: "1234567890123456",
  DISABLE_APPKIT_INTERNAL_TELEMETRY: "true",
  DO_NOT_TRACK: "1",
});
const rounds = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    const r = {};
    for (const name of SIDES) r[name] = await side(emu, env, name);
    rounds.push(r);
  }
} finally {
  await emu.stop();
}

const rows = [];
const median = (xs) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};
for (const job of JOBS) {
  const label = job.history ? `${job.name} (with history)` : `${job.name} (no history)`;
  const fig = (sideName, key) => median(rounds.map((r) => r[sideName]?.[job.name]?.[key]));
  const each = (sideName, key) => rounds.map((r) => fmt(r[sideName]?.[job.name]?.[key], 1)).join(", ");
  for (const [key, what] of [
    ["p50", "end → event p50 ms"],
    ["p90", "end → event p90 ms"],
    ["runsGetPerRun", "runs/get per run"],
  ]) {
    const o = fig("ours", key);
    const s = fig("stock", key);
    rows.push([`${label}: ${what}`, `${fmt(o, 2)} (${each("ours", key)})`, `${fmt(s, 2)} (${each("stock", key)})`, fmt(o / s, 2)]);
  }
}
process.stdout.write(
  `\nfreshness: ${RUNS} streamed 400 ms runs per job and side, ${ROUNDS} round(s), pollIntervalMs ${POLL_MS}; medians of the rounds (each round's figure in brackets)\n\n` +
    table(["metric", "ours", "stock (appkit 0.38.1)", "ours÷stock"], rows) +
    "\n",
);
