#!/usr/bin/env node
// npm run bench [-- --quick] [-- --build] [-- --only=runnow,wait,waitmulti,watchers,sse] [-- --cpu-prof]
//
// Our jobs() plugin and @databricks/appkit's stock jobs() plugin, side by side in one run, each
// inside a real createApp({ plugins: [server(), jobs()] }), against the Jobs API emulator in a
// separate process. Every measured section runs in its own child process (bench/lib/app-proc.mjs)
// so CPU (process.cpuUsage: every thread) and peak RSS belong to one side. Upstream request
// counts come from the emulator's request log. Prints one markdown table (ours, stock,
// ours÷stock, target, pass/fail), then writes bench/results/latest.json. See bench/README.md.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { sseLoad } from "./lib/sse-load.mjs";
import {
  BENCH_DIR,
  ROOT,
  KB,
  MB,
  control,
  fmt,
  runChild,
  startEmulatorProcess,
  table,
  upstreamCounts,
} from "./lib/util.mjs";

// ---------------------------------------------------------------------------------------------
// Settings

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const option = (name) => argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
if (flag("help") || flag("h")) {
  process.stdout.write(
    "Usage: npm run bench [-- --quick] [--build] [--addon=FILE] [--only=runnow,wait,waitmulti,watchers,sse] [--cpu-prof] [--otel]\n" +
      "  --quick     smaller counts and budgets (under a minute)\n" +
      "  --build     time `npm run build` (release addon) first and record it in bench/build-time.json\n" +
      "  --addon=F   load this .node file (default: the package's own, or the copy --build made)\n" +
      "  --emulator-addon=F  the emulator process loads this .node instead (A/B runs: one emulator for both)\n" +
      "  --only=...  run only these sections\n" +
      "  --sides=... measure only these sides (ours, stock) in the wait rows\n" +
      "  --pace=fast 50 ms polls and a 300 ms run (the default: 250 ms polls, a 2 s run)\n" +
      "  --cpu-prof  write V8 CPU profiles of every measured process to bench/results/prof/\n" +
      "  --otel      register an OpenTelemetry SDK (in-memory exporters) in both measured processes\n",
  );
  process.exit(0);
}
const QUICK = flag("quick");
/** --otel: both sides run with an OpenTelemetry SDK registered (in-memory exporters). */
const OTEL = flag("otel");
const ONLY = option("only")?.split(",").filter(Boolean);
/** --sides=ours: measure only these sides in the wait rows (A/B runs of our own builds). */
const SIDES = option("sides")?.split(",").filter(Boolean);
const section = (name) => !ONLY || ONLY.includes(name);
const CPU_PROF = flag("cpu-prof") ? path.join(BENCH_DIR, "results", "prof") : undefined;

const JOB_ID = 7001;
// The emulator's time scale: 10 virtual ms per real ms. A run spends (real time) 0.1 s QUEUED,
// 0.2 s PENDING, 1.5 s RUNNING and 0.2 s TERMINATING: about 2 s from run-now to TERMINATED.
const TIME_SCALE = 10;
/**
 * --pace=fast: the setup of issue 21's harness, polls every 50 ms and a 300 ms run (QUEUED 10,
 * PENDING 20, RUNNING 240, TERMINATING 30 ms of real time); the default pace is 250 ms polls and
 * a 2 s run.
 */
const FAST = option("pace") === "fast";
const JOB = FAST
  ? { id: JOB_ID, name: "bench", taskType: "notebook", queueMs: 100, pendingMs: 200, durationMs: 2_400, terminatingMs: 300 }
  : {
      id: JOB_ID,
      name: "bench",
      taskType: "notebook",
      queueMs: 1_000,
      pendingMs: 2_000,
      durationMs: 15_000,
      terminatingMs: 2_000,
    };
// The multi-task row: five tasks in a graph (a fan-out of three between two), RUNNING for the
// same 15 s of virtual time (a: 4 s; b, c, d: 5, 6 and 7 s side by side; e: 4 s). Its tasks move
// seven times while the run stays RUNNING.
const JOB_MULTI_ID = 7002;
const JOB_MULTI = {
  id: JOB_MULTI_ID,
  name: "multi",
  taskType: "notebook",
  queueMs: 1_000,
  pendingMs: 2_000,
  terminatingMs: 2_000,
  tasks: [
    { taskKey: "a", durationMs: 4_000 },
    { taskKey: "b", dependsOn: ["a"], durationMs: 5_000 },
    { taskKey: "c", dependsOn: ["a"], durationMs: 6_000 },
    { taskKey: "d", dependsOn: ["a"], durationMs: 7_000 },
    { taskKey: "e", dependsOn: ["b", "c", "d"], durationMs: 4_000 },
  ],
};
const POLL_MS = FAST ? 50 : 250; // pollIntervalMs of both plugins

const S = QUICK
  ? {
      runNow: { n: 200, warmup: 20 },
      wait: [
        { n: 1_000, sides: ["ours", "stock"], budgetMs: { ours: 30_000, stock: 30_000 } },
      ],
      waitMulti: [{ n: 1_000, sides: ["ours", "stock"], budgetMs: { ours: 30_000, stock: 30_000 } }],
      watchers: [1, 100],
      sse: [200],
    }
  : {
      runNow: { n: 500, warmup: 50 },
      wait: [
        { n: 1_000, sides: ["ours", "stock"], budgetMs: { ours: 60_000, stock: 60_000 } },
        { n: 10_000, sides: ["ours", "stock"], budgetMs: { ours: 120_000, stock: 90_000 } },
      ],
      waitMulti: [
        { n: 1_000, sides: ["ours", "stock"], budgetMs: { ours: 60_000, stock: 60_000 } },
        { n: 10_000, sides: ["ours"], budgetMs: { ours: 120_000 } },
      ],
      watchers: [1, 100],
      sse: [100, 200],
    };

const TARGETS = {
  // Issue 27: at most 0.2 of stock on both harnesses (this one and bench/runnow-standin.mjs).
  cpuPerRunNow: 0.2,
  cpuPerWatchedRun: 0.2,
  rssPerWatcher: 0.2,
  cpuPerSse: 0.3,
  sseShare: 0.2,
  p50VsBare: 1.1,
};

// ---------------------------------------------------------------------------------------------
// The addon: present, release or debug, size, cold require, build time

/**
 * The addon the measured processes load: `--addon=PATH`, else the copy `--build` just made, else
 * the package's own `appkit-jobs.<platform>.node`. Profile: the `target/` build of the same size.
 */
function findAddon(explicit) {
  let file = explicit && path.resolve(explicit);
  if (!file) {
    const found = fs.readdirSync(path.join(ROOT, "lib")).filter((f) => /^appkit-jobs\..+\.node$/.test(f));
    if (found.length === 0) return undefined;
    file = path.join(ROOT, "lib", found[0]);
  }
  if (!fs.existsSync(file) || !fs.existsSync(path.join(ROOT, "lib", "binding.js"))) return undefined;
  const { size, mtime } = fs.statSync(file);
  let profile = "unknown";
  const triple = `${os.arch() === "x64" ? "x86_64" : os.arch()}-unknown-linux-gnu`;
  for (const dir of [path.join(ROOT, "target", triple), path.join(ROOT, "target")]) {
    for (const p of ["release", "debug"]) {
      const so = path.join(dir, p, "libappkit_jobs.so");
      if (profile === "unknown" && fs.existsSync(so) && fs.statSync(so).size === size) profile = p;
    }
  }
  return { file, size, profile, mtime: mtime.toISOString() };
}

function timeBuild() {
  process.stdout.write("Timing `npm run build` (release addon)...\n");
  const t0 = performance.now();
  const r = spawnSync("npm", ["run", "build"], { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"] });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`npm run build failed (${r.status})`);
  const record = { seconds: Math.round(seconds * 10) / 10, measuredAt: new Date().toISOString(), cpus: os.cpus().length, note: "npm run build, incremental state of target/ as found" };
  fs.writeFileSync(path.join(BENCH_DIR, "build-time.json"), JSON.stringify(record, null, 2) + "\n");
  // A private copy, so that another debug build of the package during the run changes nothing here.
  const built = findAddon();
  if (built) {
    fs.mkdirSync(path.join(BENCH_DIR, "results"), { recursive: true });
    record.copy = path.join(BENCH_DIR, "results", `appkit-jobs.release.node`);
    fs.copyFileSync(built.file, record.copy);
  }
  return record;
}

function recordedBuild() {
  try {
    return JSON.parse(fs.readFileSync(path.join(BENCH_DIR, "build-time.json"), "utf8"));
  } catch {
    return undefined;
  }
}

/** Median wall time of `script` in `runs` fresh node processes (each prints its own ms). */
function coldRequire(args, env, runs = 5) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const r = spawnSync(process.execPath, args, { cwd: ROOT, env, encoding: "utf8", timeout: 60_000 });
    const ms = Number(r.stdout.trim());
    if (r.status !== 0 || !Number.isFinite(ms)) return { error: (r.stderr || "no output").trim().split("\n")[0] };
    times.push(ms);
  }
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)], runs };
}

// ---------------------------------------------------------------------------------------------
// Running the sections

let emu;
let childEnv;
let addonEnv;

function makeEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    // No inherited workspace, profile, job or telemetry settings: the emulator is the workspace.
    if (/^(DATABRICKS_|OTEL_)/.test(k) || k === "NODE_ENV" || k === "NODE_OPTIONS") continue;
    env[k] = v;
  }
  return {
    ...env,
    NAPI_RS_NATIVE_LIBRARY_PATH: addonEnv.NAPI_RS_NATIVE_LIBRARY_PATH,
    DATABRICKS_HOST: emu.url,
    DATABRICKS_TOKEN: emu.token,
    DATABRICKS_JOB_BENCH: String(JOB_ID),
    DATABRICKS_JOB_MULTI: String(JOB_MULTI_ID),
    // The stock plugin's static manifest requires DATABRICKS_JOB_ID in production mode even with
    // explicit jobs (which take precedence over it).
    DATABRICKS_JOB_ID: String(JOB_ID),
    DATABRICKS_WORKSPACE_ID: "1234567890123456",
    DISABLE_APPKIT_INTERNAL_TELEMETRY: "true",
    DO_NOT_TRACK: "1",
  };
}

function log(line) {
  process.stderr.write(`[bench] ${line}\n`);
}

/** Resets the emulator, runs one child, returns its result and the upstream requests it caused. */
async function measure(task, { timeoutMs, onMessage } = {}) {
  await control(emu, "POST", "reset");
  const t0 = performance.now();
  const result = await runChild({ pollIntervalMs: POLL_MS, cpuProf: CPU_PROF, otel: OTEL, ...task }, childEnv, {
    timeoutMs: timeoutMs ?? 300_000,
    onMessage,
  });
  const upstream = await upstreamCounts(emu);
  log(`${task.side}/${task.scenario}${task.n ? ` n=${task.n}` : ""} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return { result, upstream };
}

async function runNowSection() {
  const out = {};
  for (const side of ["bare", "ours", "stock"]) {
    out[side] = await measure({ side, scenario: "runnow", n: S.runNow.n, warmup: S.runNow.warmup });
  }
  return out;
}

async function waitSection(specs = S.wait, jobKey = "bench") {
  const out = [];
  for (const spec of specs) {
    const row = { n: spec.n, jobKey };
    for (const side of spec.sides.filter((x) => !SIDES || SIDES.includes(x))) {
      const budgetMs = spec.budgetMs[side];
      try {
        row[side] = await measure({ side, scenario: "wait", n: spec.n, budgetMs, jobKey }, { timeoutMs: budgetMs + 120_000 });
        row[side].budgetMs = budgetMs;
      } catch (err) {
        row[side] = { error: err.message.slice(0, 300), budgetMs };
        log(`${side}/wait n=${spec.n}: ${err.message.slice(0, 300)}`);
      }
    }
    out.push(row);
  }
  return out;
}

async function watchersSection() {
  const out = {};
  for (const side of ["ours", "stock"]) {
    out[side] = await measure({ side, scenario: "watchers", watchers: S.watchers }, { timeoutMs: 180_000 });
  }
  return out;
}

/**
 * SSE streams at each count: ours (its streams recorded by the client), the stock plugin, and
 * the floor (the same AppKit server replaying ours' recorded streams with no plugin work).
 */
async function sseSection() {
  const out = [];
  for (const count of S.sse) {
    const row = { count };
    let scripts;
    for (const side of ["ours", "stock", "floor"]) {
      let load;
      let port;
      const m = await measure(
        { side, scenario: "serve" },
        {
          timeoutMs: 180_000,
          onMessage: async (msg, child) => {
            if (msg.type === "ready") {
              port = msg.port;
              if (side === "floor") child.send({ type: "script", scripts });
              child.send({ type: "begin" });
            } else if (msg.type === "begun") {
              load = await sseLoad({ port, jobKey: "bench", count, timeoutMs: 90_000, record: side === "ours" });
              child.send({ type: "end" });
            }
          },
        },
      );
      if (side === "ours") scripts = load.scripts;
      row[side] = { ...m, load: { ...load, scripts: undefined } };
    }
    out.push(row);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Report

const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : NaN);
const pass = (ok) => (ok === undefined ? "n/a" : ok ? "PASS" : "FAIL");
const within = (value, limit) => (Number.isFinite(value) ? value <= limit : undefined);

function waitFigures(m) {
  if (!m || m.error) return undefined;
  const r = m.result;
  const done = r.finished;
  return {
    n: r.n,
    finished: done,
    started: r.started,
    failed: r.failed,
    stopped: r.stoppedByBudget,
    wallS: r.wallMs / 1000,
    cpuMsPerRun: done > 0 ? r.cpuMs / r.n : NaN,
    cpuS: r.cpuMs / 1000,
    upstream: m.upstream.total,
    upstreamPerRun: m.upstream.total / Math.max(1, r.started),
    peakRssMb: Math.max(r.peakRss, r.maxRss) / MB,
    split: r.mainThreadCpuMs === undefined ? "-" : `${fmt(r.mainThreadCpuMs / 1000, 2)} / ${fmt(r.otherThreadsCpuMs / 1000, 2)}`,
    heapPerWatcherKb: (r.peakHeap - r.baselineHeap) / KB / r.n,
    rssPerWatcherKb: (Math.max(r.peakRss, r.maxRss) - r.baselineRss) / KB / r.n,
    firstError: r.firstError,
  };
}

function report(results, meta) {
  const rows = [];
  const verdicts = [];
  const add = (metric, ours, stock, r, target, verdict) => {
    rows.push([metric, ours, stock, r, target ?? "", verdict ?? ""]);
    if (verdict) verdicts.push({ metric, verdict });
  };

  if (results.runNow) {
    const { bare, ours, stock } = results.runNow;
    const cpu = (m) => m.result.cpuMs / m.result.n;
    const c = ratio(cpu(ours), cpu(stock));
    add("runNow: CPU ms per call (sequential)", fmt(cpu(ours), 3), fmt(cpu(stock), 3), fmt(c, 2), `≤ ${TARGETS.cpuPerRunNow}`, pass(within(c, TARGETS.cpuPerRunNow)));
    add("runNow: p50 latency ms", fmt(ours.result.p50, 3), fmt(stock.result.p50, 3), fmt(ratio(ours.result.p50, stock.result.p50), 2));
    add("runNow: p99 latency ms", fmt(ours.result.p99, 3), fmt(stock.result.p99, 3), fmt(ratio(ours.result.p99, stock.result.p99), 2));
    add("bare HTTP round trip (floor): p50 ms / CPU ms", `${fmt(bare.result.p50, 3)} / ${fmt(cpu(bare), 3)}`, "", "");
    const po = ratio(ours.result.p50, bare.result.p50);
    const ps = ratio(stock.result.p50, bare.result.p50);
    add("runNow p50 ÷ bare round trip p50", fmt(po, 2), fmt(ps, 2), "", `ours ≤ ${TARGETS.p50VsBare}`, pass(within(po, TARGETS.p50VsBare)));
    add("runNow: upstream requests per call", fmt(ours.upstream.runNow / (ours.result.n + S.runNow.warmup), 2), fmt(stock.upstream.runNow / (stock.result.n + S.runNow.warmup), 2), "");
  }

  for (const row of [...(results.wait ?? []), ...(results.waitMulti ?? [])]) {
    {
      const o = waitFigures(row.ours);
      const s = waitFigures(row.stock);
      const label = `runAndWait ×${row.n.toLocaleString("en-US")}${row.jobKey === "multi" ? " (5-task graph)" : ""}`;
      const status = (f, m) =>
        !f ? `error: ${m?.error ?? "not run"}` : `${f.finished.toLocaleString("en-US")}/${f.n.toLocaleString("en-US")} done in ${fmt(f.wallS, 1)} s${f.stopped ? ` (budget ${m.budgetMs / 1000} s hit; ${f.started.toLocaleString("en-US")} started)` : ""}${f.failed ? `, ${f.failed} failed: ${f.firstError}` : ""}`;
      add(`${label}: completed`, status(o, row.ours), status(s, row.stock), "");
      const comparable = o && s && !s.stopped && !o.stopped && s.finished === s.n && o.finished === o.n;
      const c = comparable ? ratio(o.cpuMsPerRun, s.cpuMsPerRun) : NaN;
      add(`${label}: CPU ms per watched run`, fmt(o?.cpuMsPerRun, 3), s ? fmt(s.cpuMsPerRun, 3) + (s.stopped ? " (partial)" : "") : "-", fmt(c, 2), `≤ ${TARGETS.cpuPerWatchedRun}`, comparable ? pass(within(c, TARGETS.cpuPerWatchedRun)) : "n/a (stock did not finish)");
      add(`${label}: total CPU s`, fmt(o?.cpuS, 2), fmt(s?.cpuS, 2), fmt(ratio(o?.cpuS, s?.cpuS), 2));
      // Issue 21's figure: the app's CPU during the watched-run phase over the requests it sent.
      const perRequest = (f) => (f ? (f.cpuS * 1e6) / Math.max(1, f.upstream) : NaN);
      add(`${label}: CPU µs per upstream request`, fmt(perRequest(o), 1), fmt(perRequest(s), 1), fmt(ratio(perRequest(o), perRequest(s)), 2), "");
      add(`${label}: upstream requests (per started run)`, o ? `${o.upstream.toLocaleString("en-US")} (${fmt(o.upstreamPerRun, 2)})` : "-", s ? `${s.upstream.toLocaleString("en-US")} (${fmt(s.upstreamPerRun, 2)})` : "-", fmt(ratio(o?.upstreamPerRun, s?.upstreamPerRun), 2));
      add(`${label}: peak RSS MB`, fmt(o?.peakRssMb, 1), fmt(s?.peakRssMb, 1), fmt(ratio(o?.peakRssMb, s?.peakRssMb), 2));
      add(`${label}: CPU s, main thread / other threads`, o?.split ?? "-", s?.split ?? "-", "");
      const rr = comparable ? ratio(o.rssPerWatcherKb, s.rssPerWatcherKb) : NaN;
      add(`${label}: RSS per watcher KB`, fmt(o?.rssPerWatcherKb, 2), fmt(s?.rssPerWatcherKb, 2), fmt(rr, 2), `≤ ${TARGETS.rssPerWatcher}`, comparable ? pass(within(rr, TARGETS.rssPerWatcher)) : "n/a (stock did not finish)");
      add(`${label}: of which JS heap per watcher KB`, fmt(o?.heapPerWatcherKb, 2), fmt(s?.heapPerWatcherKb, 2), fmt(ratio(o?.heapPerWatcherKb, s?.heapPerWatcherKb), 2));
    }
  }

  if (results.watchers) {
    const phase = (side, k) => results.watchers[side].result.phases.find((p) => p.watchers === k);
    const gets = (side, k) => results.watchers[side].upstream.perRun.get(String(phase(side, k).runId)) ?? 0;
    const many = Math.max(...S.watchers);
    const o1 = gets("ours", 1);
    const oN = gets("ours", many);
    const s1 = gets("stock", 1);
    const sN = gets("stock", many);
    const perInterval = (side, k) => gets(side, k) / (phase(side, k).wallMs / POLL_MS);
    add(`1 watcher of one run: upstream runs/get`, o1, s1, fmt(ratio(o1, s1), 2));
    add(`${many} watchers of one run: upstream runs/get`, oN, sN, fmt(ratio(oN, sN), 2), `ours ≈ 1 watcher's`, pass(oN <= o1 + 2));
    add(`${many} watchers: runs/get per ${POLL_MS} ms interval`, fmt(perInterval("ours", many), 2), fmt(perInterval("stock", many), 2), "", "≤ 1", pass(perInterval("ours", many) <= 1));
    const same = (side) => {
      const p = phase(side, many);
      if (p.sequences.length === 1 && p.allTerminal) return `all ${many} saw ${p.sequences[0]}`;
      return `${p.sequences.length} different sequences${p.allTerminal ? ", all to TERMINATED" : ""}`;
    };
    add(`${many} watchers: updates seen`, same("ours"), same("stock"), "");
    const cpuW = (side) => phase(side, many).cpuMs / many;
    add(`${many} watchers: CPU ms per watcher`, fmt(cpuW("ours"), 3), fmt(cpuW("stock"), 3), fmt(ratio(cpuW("ours"), cpuW("stock")), 2));
  }

  for (const row of results.sse ?? []) {
    const { ours, stock, floor, count } = row;
    const per = (m) => m.result.cpuMs / count;
    const c = ratio(per(ours), per(stock));
    const done = (m) => `${m.load.ok}/${count} streams to TERMINATED, ${m.load.events} events, ${fmt(m.load.wallMs / 1000, 1)} s${m.load.failed ? `; ${m.load.failed} failed: ${m.load.firstError}` : ""}`;
    add(`SSE ×${count} streamed runs: completed (floor: ${done(floor)})`, done(ours), done(stock), "");
    const bothOk = ours.load.ok === count && stock.load.ok === count;
    add(`SSE ×${count}: CPU ms per stream`, fmt(per(ours), 3), fmt(per(stock), 3), fmt(c, 2), `≤ ${TARGETS.cpuPerSse}`, bothOk ? pass(within(c, TARGETS.cpuPerSse)) : "n/a (streams failed)");
    // The plugin's own share: what each side costs above a route that sends the same bytes.
    const share = ratio(per(ours) - per(floor), per(stock) - per(floor));
    add(`SSE ×${count}: floor CPU ms per stream (no plugin, same events and pace)`, fmt(per(floor), 3), fmt(per(floor), 3), fmt(ratio(per(floor), per(stock)), 2), "", "");
    add(`SSE ×${count}: plugin's share (ours − floor) ÷ (stock − floor)`, fmt(per(ours) - per(floor), 3), fmt(per(stock) - per(floor), 3), fmt(share, 2), `≤ ${TARGETS.sseShare}`, bothOk ? pass(within(share, TARGETS.sseShare)) : "n/a");
    const split = (m) => (m.result.mainThreadCpuMs === undefined ? "-" : `${fmt(m.result.mainThreadCpuMs / 1000, 2)} / ${fmt(m.result.otherThreadsCpuMs / 1000, 2)}`);
    add(`SSE ×${count}: CPU s, main thread / other threads`, split(ours), split(stock), "");
    add(`SSE ×${count}: upstream requests`, ours.upstream.total, stock.upstream.total, fmt(ratio(ours.upstream.total, stock.upstream.total), 2));
    add(`SSE ×${count}: peak RSS MB`, fmt(Math.max(ours.result.peakRss, ours.result.maxRss) / MB, 1), fmt(Math.max(stock.result.peakRss, stock.result.maxRss) / MB, 1), "");
  }

  add("addon size (.node)", `${fmt(meta.addon.size / MB, 2)} MB (${meta.addon.profile})`, "n/a (pure JS)", "");
  const cr = (x) => (x?.error ? `error: ${x.error}` : `${fmt(x?.median, 1)} ms`);
  // Like for like: as a plugin ours needs AppKit too, so both rows load AppKit; the standalone
  // row is ours alone (no AppKit at all), shown for what it is.
  add("cold load in an AppKit app: AppKit + jobs plugin (fresh process, median of 5)", cr(meta.coldOursInAppKit), cr(meta.coldStock), fmt(ratio(meta.coldOursInAppKit?.median, meta.coldStock?.median), 2));
  add("cold load standalone: appkit-jobs alone, no AppKit (ours only)", cr(meta.coldOurs), "-", "-");
  add(
    "release build time (npm run build)",
    meta.build ? `${fmt(meta.build.seconds, 1)} s (${meta.build.cpus} cores, ${meta.build.measuredAt.slice(0, 10)})` : "not recorded: run with --build",
    "n/a",
    "",
  );

  const lines = [];
  lines.push(table(["metric", "ours", "stock (appkit 0.38.1)", "ours÷stock", "target", "result"], rows));
  const failed = verdicts.filter((v) => v.verdict === "FAIL");
  lines.push("");
  lines.push(`targets: ${verdicts.filter((v) => v.verdict === "PASS").length} pass, ${failed.length} fail${failed.length ? ` (${failed.map((f) => f.metric).join("; ")})` : ""}`);
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const t0 = performance.now();
  let build = recordedBuild();
  let addonPath = option("addon");
  if (flag("build")) {
    build = timeBuild();
    addonPath ??= build.copy;
  }
  const addon = findAddon(addonPath);
  if (!addon) {
    process.stderr.write("The addon is not built: run `npm run build` (release) first.\n");
    process.exitCode = 1;
    return;
  }
  if (addon.profile !== "release") log(`WARNING: the addon does not look like the release build (${addon.profile}); run \`npm run build\``);
  if (CPU_PROF) fs.mkdirSync(CPU_PROF, { recursive: true });

  addonEnv = { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: addon.file };
  const meta = {
    machine: `${os.cpus().length} × ${os.cpus()[0]?.model?.trim()}, ${Math.round(os.totalmem() / MB / 1024)} GB, Node ${process.version}, ${os.platform()} ${os.release()}`,
    quick: QUICK,
    addon,
    build,
    coldOurs: coldRequire(["-e", "const t=performance.now();require('./lib/index.js');require('./lib/binding.js');process.stdout.write(String(performance.now()-t))"], addonEnv),
    coldOursInAppKit: coldRequire(
      ["--input-type=module", "-e", "const t=performance.now();await import('@databricks/appkit');const m=await import('./lib/index.js');m.createJobs({},{env:{}});process.stdout.write(String(performance.now()-t))"],
      addonEnv,
    ),
    coldStock: coldRequire(["--input-type=module", "-e", "const t=performance.now();const {jobs}=await import('@databricks/appkit');jobs({});process.stdout.write(String(performance.now()-t))"], process.env),
  };

  const emulatorAddon = option("emulator-addon");
  const emulatorEnv = emulatorAddon ? { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: path.resolve(emulatorAddon) } : addonEnv;
  emu = await startEmulatorProcess({ jobs: [JOB, JOB_MULTI], timeScale: TIME_SCALE, requestLogLimit: 5_000_000 }, { env: emulatorEnv });
  childEnv = makeEnv();
  log(`emulator ${emu.url} (pid ${emu.pid}), time scale ${TIME_SCALE}, poll interval ${POLL_MS} ms${QUICK ? ", quick mode" : ""}`);
  const results = {};
  try {
    if (section("runnow")) results.runNow = await runNowSection();
    if (section("wait")) results.wait = await waitSection();
    if (section("waitmulti")) results.waitMulti = await waitSection(S.waitMulti, "multi");
    if (section("watchers")) results.watchers = await watchersSection();
    if (section("sse")) results.sse = await sseSection();
  } finally {
    await emu.stop();
  }

  const text = report(results, meta);
  const header = `appkit-jobs benchmark — ${meta.machine}${QUICK ? " — quick mode" : ""}${FAST ? " — fast pace (50 ms polls, 300 ms runs)" : ""}${OTEL ? " — with an OpenTelemetry SDK (in-memory)" : ""}\n` +
    `addon ${path.relative(ROOT, addon.file)} (${addon.profile} build, ${addon.mtime})\n` +
    `emulator in its own process (time scale ${TIME_SCALE}, runs ≈2 s), pollIntervalMs ${POLL_MS}, each side in its own process, took ${fmt((performance.now() - t0) / 1000, 0)} s\n`;
  process.stdout.write(`\n${header}\n${text}\n`);
  fs.mkdirSync(path.join(BENCH_DIR, "results"), { recursive: true });
  const replacer = (_k, v) => (v instanceof Map ? Object.fromEntries(v) : v);
  fs.writeFileSync(path.join(BENCH_DIR, "results", "latest.json"), JSON.stringify({ meta, results }, replacer, 2));
  fs.writeFileSync(path.join(BENCH_DIR, "results", "latest.md"), `${header}\n${text}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err.stack ?? err}\n`);
  process.exitCode = 1;
  emu?.stop();
});
