#!/usr/bin/env node
// runNow and runAndWait against a workspace stand-in written in Node, ours and the stock plugin
// in the same real AppKit app (issue 27's independent harness, rebuilt):
//
//   node bench/runnow-standin.mjs [--rounds=3] [--only=runnow,wait] [--n=1000] [--warmup=30]
//        [--wait-n=1000] [--run-ms=2000] [--upstream=standin|emulator] [--job=notebook|plain|zod|jobParameters]
//        [--params] [--internal-telemetry=on|off] [--otel] [--sides=ours,stock] [--addon=FILE]
//        [--standin=keepAlive=false,chunked=true,date=false,headers=true,latencyMs=1,padBytes=2000]
//        [--sides=ours,oursB,stock --a-package=DIR --b-package=DIR --b-addon=FILE --b-env=NAME=VALUE]
//        [--cpu-prof] [--json=FILE]
//
// - The workspace: bench/lib/standin-proc.mjs (plain node:http, keep-alive) in its own process,
//   or with --upstream=emulator the Rust emulator (bench/lib/emulator-proc.mjs) at the same pace.
// - Each measurement is a fresh child (bench/lib/standin-app.mjs) hosting one side:
//   createApp({ plugins: [server(), jobs({ pollIntervalMs: 50, jobs: { bench } })] }), defaults
//   otherwise (AppKit's internal telemetry on, no OpenTelemetry SDK).
// - runnow: 30 warm-up calls, then 1,000 sequential `app.jobs("bench").runNow()`; the app's CPU
//   from process.cpuUsage() (every thread) over the 1,000, per call.
// - wait: 1,000 concurrent `runAndWait()`, each read to TERMINATED; CPU per run and RSS per
//   watcher ((peak - baseline) / n).
// - Rounds are interleaved (ours then stock, then stock then ours, ...); the ratio ours ÷ stock
//   is taken within each round, and medians are printed with every sample.
import fs from "node:fs";
import path from "node:path";
import { fork, spawn } from "node:child_process";
import http from "node:http";
import { BENCH_DIR, ROOT, KB, control, fmt, startEmulatorProcess, table } from "./lib/util.mjs";

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const option = (name, fallback) => {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? fallback : a.slice(name.length + 3);
};
if (flag("help")) {
  process.stdout.write(fs.readFileSync(new URL(import.meta.url), "utf8").split("\nimport ")[0].replace(/^#!.*\n/, "").replace(/^\/\/ ?/gm, ""));
  process.exit(0);
}

const ROUNDS = Number(option("rounds", "3"));
const ONLY = option("only", "runnow,wait").split(",");
/**
 * --sides: any of ours, stock, and oursB: ours again with --b-addon=FILE and/or
 * --b-env=NAME=VALUE (an A/B of two builds, or of a switch, in the same interleaved rounds).
 */
const SIDES = option("sides", "ours,stock").split(",");
const B_ADDON = option("b-addon") && path.resolve(option("b-addon"));
/** --a-package / --b-package=DIR: side ours / oursB loads appkit-jobs from that checkout (its own lib/ and addon). */
const A_PACKAGE = option("a-package") && path.resolve(option("a-package"));
const B_PACKAGE = option("b-package") && path.resolve(option("b-package"));
const B_ENV = option("b-env");
const N = Number(option("n", "1000"));
const WARMUP = Number(option("warmup", "30"));
const WAIT_N = Number(option("wait-n", "1000"));
const UPSTREAM = option("upstream", "standin");
const JOB = option("job", "notebook");
const PARAMS = flag("params");
const INTERNAL_TELEMETRY = option("internal-telemetry", "on") !== "off";
const OTEL = flag("otel");
const POLL_MS = Number(option("poll", "50"));
const CPU_PROF = flag("cpu-prof") ? path.join(BENCH_DIR, "results", "prof-standin") : undefined;
const ADDON = option("addon") && path.resolve(option("addon"));
/** --standin=name=value,...: the stand-in's switches (see bench/lib/standin-proc.mjs). */
const STANDIN = Object.fromEntries(
  (option("standin", "") || "")
    .split(",")
    .filter(Boolean)
    .map((kv) => {
      const [k, v] = kv.split("=");
      return [k, v === "true" ? true : v === "false" ? false : Number(v)];
    }),
);
const JOB_ID = 7001;
/**
 * --run-ms: how long a run takes from run-now to TERMINATED (default 2,000 ms, bench's default
 * pace): QUEUED 5 %, PENDING 10 %, RUNNING 75 %, TERMINATING 10 %. Long enough for 1,000
 * concurrent waits to be all alive at once on either side (with 300 ms runs the stock side's
 * first polls come after its runs have ended).
 */
const RUN_MS = Number(option("run-ms", "2000"));
const PHASES = { queued: RUN_MS * 0.05, pending: RUN_MS * 0.1, running: RUN_MS * 0.75, terminating: RUN_MS * 0.1 };

function log(line) {
  process.stderr.write(`[standin] ${line}\n`);
}

/** The stand-in in its own process: `{ url, token, stop(), counts(), reset() }`. */
function startStandin(options) {
  const child = spawn(process.execPath, [path.join(BENCH_DIR, "lib", "standin-proc.mjs"), JSON.stringify(options)], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    child.once("exit", (code) => reject(new Error(`stand-in exited (${code}) before listening`)));
    child.stdout.on("data", (c) => {
      out += c;
      const line = out.split("\n").find((l) => l.startsWith("STANDIN "));
      if (!line) return;
      child.removeAllListeners("exit");
      child.stdout.removeAllListeners("data");
      child.stdout.resume();
      const info = JSON.parse(line.slice("STANDIN ".length));
      const ctl = (method, route) =>
        new Promise((res, rej) => {
          const req = http.request(new URL(`/__standin/${route}`, info.url), { method }, (r) => {
            const chunks = [];
            r.on("data", (c) => chunks.push(c));
            r.on("end", () => res(JSON.parse(Buffer.concat(chunks).toString("utf8"))));
          });
          req.on("error", rej);
          req.end();
        });
      resolve({
        ...info,
        reset: () => ctl("POST", "reset"),
        counts: async () => (await ctl("GET", "requests")).counts,
        stop: () =>
          new Promise((r) => {
            child.once("exit", r);
            child.kill("SIGTERM");
          }),
      });
    });
  });
}

function childEnv(upstream) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(DATABRICKS_|OTEL_|DISABLE_APPKIT|APPKIT_)/.test(k) || k === "NODE_ENV" || k === "NODE_OPTIONS" || k === "DO_NOT_TRACK") continue;
    env[k] = v;
  }
  return {
    ...env,
    ...(ADDON ? { NAPI_RS_NATIVE_LIBRARY_PATH: ADDON } : {}),
    ...(A_PACKAGE ? { BENCH_JOBS_PACKAGE: A_PACKAGE } : {}),
    DATABRICKS_HOST: upstream.url,
    DATABRICKS_TOKEN: upstream.token,
    DATABRICKS_JOB_BENCH: String(JOB_ID),
    // The stock plugin's manifest requires DATABRICKS_JOB_ID in production mode.
    DATABRICKS_JOB_ID: String(JOB_ID),
    DATABRICKS_WORKSPACE_ID: "1234567890123456",
  };
}

/** The environment of side oursB: --b-addon and --b-env applied. */
function envB(env) {
  const out = { ...env };
  if (B_ADDON) out.NAPI_RS_NATIVE_LIBRARY_PATH = B_ADDON;
  if (B_PACKAGE) out.BENCH_JOBS_PACKAGE = B_PACKAGE;
  if (B_ENV) {
    const eq = B_ENV.indexOf("=");
    out[B_ENV.slice(0, eq)] = B_ENV.slice(eq + 1);
  }
  return out;
}

function runApp(task, env, timeoutMs = 300_000) {
  const child = fork(path.join(BENCH_DIR, "lib", "standin-app.mjs"), [JSON.stringify(task)], {
    cwd: ROOT,
    env,
    execArgv: ["--expose-gc", ...(CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${CPU_PROF}`] : [])],
    stdio: ["ignore", "ignore", "pipe", "ipc"],
  });
  let stderr = "";
  child.stderr.on("data", (c) => {
    stderr = (stderr + c).slice(-4000);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${task.side}/${task.scenario} timed out`));
    }, timeoutMs);
    child.on("message", (msg) => {
      clearTimeout(timer);
      if (msg.type === "result") resolve(msg.result);
      else reject(new Error(`${task.side}/${task.scenario}: ${msg.message}`));
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${task.side}/${task.scenario} exited (${code}): ${stderr.trim().slice(-1500)}`));
    });
  });
}

const median = (xs) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  const upstream =
    UPSTREAM === "emulator"
      ? await startEmulatorProcess({
          jobs: [{ id: JOB_ID, name: "bench", taskType: "notebook", queueMs: PHASES.queued * 10, pendingMs: PHASES.pending * 10, durationMs: PHASES.running * 10, terminatingMs: PHASES.terminating * 10, parameters: [{ name: "date", default: "2025-01-01" }, { name: "mode", default: "full" }], history: 3 }],
          timeScale: 10,
          requestLogLimit: 5_000_000,
        })
      : await startStandin({ phasesMs: PHASES, jobId: JOB_ID, ...STANDIN });
  const env = childEnv(upstream);
  const reset = () => (upstream.reset ? upstream.reset() : control(upstream, "POST", "reset"));
  const counts = async () => {
    if (upstream.counts) return upstream.counts();
    const { requests } = await control(upstream, "GET", "requests");
    const out = {};
    for (const r of requests) out[`${r.method} ${r.path}`] = (out[`${r.method} ${r.path}`] ?? 0) + 1;
    return out;
  };
  const setup = { ...(SIDES.includes("oursB") ? { aPackage: A_PACKAGE, bPackage: B_PACKAGE, bAddon: B_ADDON, bEnv: B_ENV } : {}), upstream: UPSTREAM, standin: STANDIN, runMs: RUN_MS, job: JOB, params: PARAMS, internalTelemetry: INTERNAL_TELEMETRY, otel: OTEL, pollIntervalMs: POLL_MS };
  log(`setup ${JSON.stringify(setup)}`);
  const samples = { runnow: [], wait: [] };
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? SIDES : [...SIDES].reverse();
      for (const scenario of ["runnow", "wait"].filter((s) => ONLY.includes(s))) {
        const row = {};
        for (const side of order) {
          await reset();
          const task = {
            side: side === "oursB" ? "ours" : side,
            scenario,
            n: scenario === "runnow" ? N : WAIT_N,
            warmup: WARMUP,
            pollIntervalMs: POLL_MS,
            job: JOB,
            params: PARAMS,
            internalTelemetry: INTERNAL_TELEMETRY,
            otel: OTEL,
          };
          const r = await runApp(task, side === "oursB" ? envB(env) : env);
          r.upstream = await counts();
          row[side] = r;
          const spaces = (r) => {
            if (!r.heapAtPeak) return "";
            const d = (name, field) => ((r.heapAtPeak[name]?.[field] ?? 0) - (r.heapBaseline[name]?.[field] ?? 0)) / KB / r.n;
            return `; at the RSS peak, per watcher: V8 new space ${fmt(d("new_space", "size"), 1)} KB committed, old space ${fmt(d("old_space", "size"), 1)} KB committed / ${fmt(d("old_space", "used"), 1)} KB used`;
          };
          const per = scenario === "runnow" ? `${fmt(r.cpuMs / r.n, 3)} ms CPU/call, p50 ${fmt(r.p50, 3)} ms` : `${fmt(r.cpuMs / r.n, 3)} ms CPU/run, ${fmt(rssPerWatcherKb(r), 1)} KB RSS/watcher, ${r.finished}/${r.n} done${r.firstError ? `, ${r.firstError}` : ""}${spaces(r)}`;
          const threads = Object.entries(r.threads ?? {})
            .filter(([, ms]) => ms >= 0.5)
            .sort((a, b) => b[1] - a[1])
            .map(([name, ms]) => `${name} ${fmt(ms / r.n, 3)}`)
            .join(", ");
          log(`round ${round + 1} ${scenario} ${side}: ${per} (per op by thread: ${threads})`);
        }
        samples[scenario].push(row);
      }
    }
  } finally {
    await upstream.stop();
  }
  report(samples, setup);
}

const rssPerWatcherKb = (r) => (Math.max(r.peakRss, r.maxRss ?? 0) - r.baselineRss) / KB / r.n;

function report(samples, setup) {
  const lines = [`Setup: ${JSON.stringify(setup)}, ${ROUNDS} interleaved rounds; medians, samples in brackets.`, ""];
  const rows = [];
  const hasB = SIDES.includes("oursB");
  const add = (metric, of) => {
    const rounds = samples[metric.scenario];
    const list = (xs, d) => xs.map((x) => fmt(x, d)).join(", ");
    const cell = (xs, d, bold) => (xs.every((x) => x === undefined) ? "-" : `${bold ? "**" : ""}${fmt(median(xs), d)}${bold ? "**" : ""} [${list(xs, d)}]`);
    const values = (side) => rounds.map((r) => (r[side] ? of(r[side]) : undefined));
    const ratios = (side) => rounds.map((r) => (r[side] && r.stock ? of(r[side]) / of(r.stock) : undefined));
    rows.push([
      metric.label,
      cell(values("ours"), metric.digits),
      ...(hasB ? [cell(values("oursB"), metric.digits)] : []),
      cell(values("stock"), metric.digits),
      cell(ratios("ours"), 2, true),
      ...(hasB ? [cell(ratios("oursB"), 2, true), cell(rounds.map((r) => (r.ours && r.oursB ? of(r.oursB) / of(r.ours) : undefined)), 2)] : []),
    ]);
  };
  if (samples.runnow.length) {
    add({ scenario: "runnow", label: `runNow: CPU ms per call (${N} sequential)`, digits: 3 }, (r) => r.cpuMs / r.n);
    add({ scenario: "runnow", label: "runNow: p50 latency ms", digits: 3 }, (r) => r.p50);
  }
  if (samples.wait.length) {
    add({ scenario: "wait", label: `runAndWait ×${WAIT_N}: CPU ms per run`, digits: 3 }, (r) => r.cpuMs / r.n);
    add({ scenario: "wait", label: `runAndWait ×${WAIT_N}: RSS per watcher KB`, digits: 1 }, rssPerWatcherKb);
    add({ scenario: "wait", label: `runAndWait ×${WAIT_N}: upstream requests per run`, digits: 2 }, (r) => (r.upstream ? Object.entries(r.upstream).filter(([k]) => k.includes("/jobs/")).reduce((a, [, v]) => a + v, 0) / r.n : NaN));
  }
  const header = hasB ? ["metric", "ours", "ours B", "stock", "ours ÷ stock", "B ÷ stock", "B ÷ ours"] : ["metric", "ours", "stock", "ours ÷ stock"];
  lines.push(table(header, rows));
  const text = lines.join("\n") + "\n";
  process.stdout.write(text);
  const out = option("json");
  if (out) fs.writeFileSync(out, JSON.stringify({ setup, samples }, null, 2));
}

await main();
