// One measured process of the benchmark: `node --expose-gc bench/lib/app-proc.mjs '<task JSON>'`,
// forked by bench/run.mjs with an IPC channel. Each process hosts ONE side, so that
// process.cpuUsage() (all threads, the addon's Tokio workers included) and the peak RSS belong
// to that side alone:
//   side "ours"  : createApp({ plugins: [server(), jobs()] }) with this package's jobs()
//   side "stock" : the same with @databricks/appkit's own jobs()
//   side "bare"  : no AppKit, plain node:http keep-alive requests (the floor)
// The emulator runs in another process; the environment (DATABRICKS_HOST, DATABRICKS_TOKEN,
// DATABRICKS_JOB_BENCH, ...) comes from the parent. Results go back with process.send().
import fs from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";

const require = createRequire(import.meta.url);
const task = JSON.parse(process.argv[2]);
/** The job the section runs: "bench" (one task) or "multi" (a five-task graph). */
const JOB_KEY = task.jobKey ?? "bench";
const TERMINAL = new Set(["TERMINATED", "SKIPPED", "INTERNAL_ERROR"]);

function send(message) {
  return new Promise((resolve) => process.send(message, () => resolve()));
}

function fail(err) {
  const message = err?.stack ?? String(err);
  send({ type: "error", message }).finally(() => process.exit(1));
}
process.on("uncaughtException", fail);
process.on("unhandledRejection", fail);

// ---------------------------------------------------------------------------------------------
// Measurement helpers

/** Samples RSS every `everyMs` until stop(); also folds in the kernel's lifetime peak (maxRSS). */
function rssSampler(everyMs = 20) {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    const rss = process.memoryUsage.rss();
    if (rss > peak) peak = rss;
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      const now = process.memoryUsage.rss();
      if (now > peak) peak = now;
      return peak;
    },
  };
}

/**
 * CPU ms of this process's threads from /proc (Linux; 10 ms ticks): the main thread (JS, V8,
 * N-API calls) and all the others (the addon's Tokio workers, libuv's pool, V8's GC helpers).
 */
function threadCpu() {
  let main = 0;
  let other = 0;
  try {
    for (const tid of fs.readdirSync("/proc/self/task")) {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ms = ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS;
      if (Number(tid) === process.pid) main += ms;
      else other += ms;
    }
  } catch {
    return undefined;
  }
  return { main, other };
}
const TICKS = 100;

/** Starts a measured section: GC first so the RSS baseline is as clean as we can make it. */
function begin() {
  globalThis.gc?.();
  const baselineRss = process.memoryUsage.rss();
  const baselineHeap = process.memoryUsage().heapUsed;
  const sampler = rssSampler();
  let peakHeap = baselineHeap;
  const openFds = () => {
    try {
      return fs.readdirSync("/proc/self/fd").length;
    } catch {
      return NaN;
    }
  };
  const baselineFds = openFds();
  let peakFds = baselineFds;
  const baselineHeapTotal = process.memoryUsage().heapTotal;
  let peakHeapTotal = baselineHeapTotal;
  const heapTimer = setInterval(() => {
    const m = process.memoryUsage();
    if (m.heapUsed > peakHeap) peakHeap = m.heapUsed;
    if (m.heapTotal > peakHeapTotal) peakHeapTotal = m.heapTotal;
    const f = openFds();
    if (f > peakFds) peakFds = f;
  }, 100);
  const threads0 = threadCpu();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  return {
    end() {
      const cpu = process.cpuUsage(cpu0);
      const wallMs = performance.now() - t0;
      const threads1 = threadCpu();
      const peakRss = sampler.stop();
      clearInterval(heapTimer);
      return {
        cpuMs: (cpu.user + cpu.system) / 1000,
        mainThreadCpuMs: threads0 && threads1 ? threads1.main - threads0.main : undefined,
        otherThreadsCpuMs: threads0 && threads1 ? threads1.other - threads0.other : undefined,
        wallMs,
        baselineRss,
        peakRss,
        baselineHeap,
        peakHeap,
        baselineHeapTotal,
        peakHeapTotal,
        baselineFds,
        peakFds,
        maxRss: process.resourceUsage().maxRSS * 1024,
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The app

/**
 * `--otel`: an OpenTelemetry SDK registered globally before the app, as AppKit's NodeSDK would
 * be, exporting to memory (batched spans, metrics collected every 10 s as AppKit does).
 */
async function registerInMemorySdk() {
  const { context, metrics, trace } = await import("@opentelemetry/api");
  const { AsyncLocalStorageContextManager } = await import("@opentelemetry/context-async-hooks");
  const { BasicTracerProvider, BatchSpanProcessor, InMemorySpanExporter } = await import("@opentelemetry/sdk-trace-base");
  const { InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader, AggregationTemporality } = await import("@opentelemetry/sdk-metrics");
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const spans = new InMemorySpanExporter();
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(spans)] }));
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 10_000 })] }));
  // Keep only the latest export: the exporter itself would hold every one.
  setInterval(() => spans.reset(), 1000).unref();
}

async function boot() {
  if (task.otel) await registerInMemorySdk();
  const { createApp, server } = await import("@databricks/appkit");
  const config = {
    pollIntervalMs: task.pollIntervalMs,
    jobs: task.jobs ?? { bench: { taskType: "notebook" }, multi: { taskType: "notebook" } },
  };
  let data;
  if (task.side === "floor") {
    data = floorPlugin();
  } else if (task.side === "ours") {
    const { jobs } = require("appkit-jobs");
    data = jobs({ ...config, heartbeatMs: 10_000 });
  } else {
    const { jobs } = await import("@databricks/appkit");
    data = jobs(config);
  }
  // Keep a reference to the plugin instance (the stock side's watchers use it, below).
  let instance;
  const Captured = class extends data.plugin {
    constructor(c) {
      super(c);
      instance = this;
    }
  };
  const app = await createApp({
    plugins: [server({ port: 0, host: "127.0.0.1" }), { ...data, plugin: Captured }],
    disableInternalTelemetry: true,
  });
  const srv = app.server.getServer();
  if (!srv.listening) await new Promise((r) => srv.once("listening", r));
  return { app, plugin: instance, port: srv.address().port };
}

/**
 * The floor of the SSE section: a route inside the same AppKit server with no plugin work at
 * all. `POST /api/jobs/:jobKey/run?stream=true` answers with the SSE headers, then writes the
 * chunks one of our streams sent (recorded by the load client, sent here before the section
 * begins) at the same offsets, and ends: the same bytes at the same pace.
 */
let floorScripts = [];
function floorPlugin() {
  let next = 0;
  class FloorPlugin {
    static manifest = { name: "jobs", displayName: "floor", description: "SSE floor", resources: { required: [], optional: [] } };
    static phase = "normal";
    static getResourceRequirements() {
      return [];
    }
    constructor(config = {}) {
      this.name = "jobs";
      this.config = config;
    }
    attachContext() {}
    async setup() {}
    injectRoutes(router) {
      router.post("/:jobKey/run", (req, res) => {
        const script = floorScripts[next++ % floorScripts.length] ?? [];
        res.statusCode = 200;
        res.setHeader("Content-Type", "text/event-stream; charset=utf-8");
        res.setHeader("Cache-Control", "no-cache, no-transform");
        res.setHeader("X-Accel-Buffering", "no");
        res.flushHeaders();
        const t0 = performance.now();
        let i = 0;
        const step = () => {
          while (i < script.length && script[i][0] <= performance.now() - t0) res.write(script[i++][1]);
          if (i >= script.length) return res.end();
          setTimeout(step, Math.max(0, script[i][0] - (performance.now() - t0)));
        };
        step();
      });
    }
    getEndpoints() {
      return {};
    }
    exports() {
      return {};
    }
    clientConfig() {
      return {};
    }
    abortActiveOperations() {}
  }
  return { plugin: FloorPlugin, config: {}, name: "jobs" };
}

/**
 * A watcher of an existing run on the stock side. The stock plugin has no watchRun: the only way
 * it follows a run is runAndWait's loop, one loop per caller. This is that loop without the
 * run-now: the plugin's own execute() + connector.getRun with the stock read policy minus the
 * cache (as runAndWait does), growing the interval x1.5 up to 6x with +-20 % jitter.
 */
async function* stockWatch(plugin, runId, baseMs, signal) {
  const settings = {
    default: { cache: { enabled: false }, retry: { enabled: true, initialDelay: 1000, attempts: 3 }, timeout: 30_000 },
  };
  let interval = baseMs;
  for (let i = 0; i < 100_000 && !signal?.aborted; i++) {
    const result = await plugin.execute((s) => plugin.connector.getRun(plugin.client, { run_id: runId }, s), settings);
    if (!result.ok) throw new Error(`getRun failed with status ${result.status}`);
    const status = result.data.state?.life_cycle_state;
    yield { status, timestamp: Date.now(), run: result.data };
    if (TERMINAL.has(status)) return;
    const delay = Math.min(interval * (0.8 + Math.random() * 0.4), baseMs * 6);
    interval = Math.min(interval * 1.5, baseMs * 6);
    await sleep(delay, undefined, { signal }).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** N sequential runNow calls after a warm-up; CPU and latency per call. */
async function runNowScenario(call) {
  for (let i = 0; i < task.warmup; i++) await call();
  const lat = new Array(task.n);
  const m = begin();
  for (let i = 0; i < task.n; i++) {
    const t = performance.now();
    await call();
    lat[i] = performance.now() - t;
  }
  const r = m.end();
  lat.sort((a, b) => a - b);
  return { ...r, n: task.n, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), mean: lat.reduce((a, b) => a + b, 0) / lat.length };
}

function bareRunNow() {
  const url = new URL("/api/2.2/jobs/run-now", process.env.DATABRICKS_HOST);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const body = JSON.stringify({ job_id: Number(process.env.DATABRICKS_JOB_BENCH) });
  const headers = {
    authorization: `Bearer ${process.env.DATABRICKS_TOKEN}`,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
  };
  return () =>
    new Promise((resolve, reject) => {
      const req = http.request(url, { method: "POST", agent, headers }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          if (res.statusCode !== 200) return reject(new Error(`run-now answered ${res.statusCode}`));
          const run = JSON.parse(Buffer.concat(chunks).toString("utf8"));
          if (!run.run_id) return reject(new Error("run-now answered without run_id"));
          resolve(run);
        });
        res.on("error", reject);
      });
      req.on("error", reject);
      req.end(body);
    });
}

/** N concurrent runAndWait, each consumed to its end, within task.budgetMs. */
async function waitScenario(app) {
  const controller = new AbortController();
  let started = 0;
  let finished = 0;
  let failed = 0;
  let updates = 0;
  let firstError;
  const m = begin();
  const one = async () => {
    let last;
    let first = true;
    try {
      for await (const u of app.jobs(JOB_KEY).runAndWait(undefined, controller.signal)) {
        if (first) {
          first = false;
          started++;
        }
        updates++;
        last = u.status;
      }
      if (TERMINAL.has(last)) finished++;
    } catch (err) {
      if (!controller.signal.aborted) {
        failed++;
        firstError ??= String(err?.message ?? err).slice(0, 200);
      }
    }
  };
  const all = Promise.all(Array.from({ length: task.n }, one));
  let timer;
  const budget = new Promise((r) => {
    timer = setTimeout(() => r("budget"), task.budgetMs);
  });
  const outcome = await Promise.race([all.then(() => "done"), budget]);
  clearTimeout(timer);
  const r = m.end();
  if (outcome === "budget") controller.abort();
  return { ...r, n: task.n, started, finished, failed, updates, firstError, stoppedByBudget: outcome === "budget" };
}

/** One run, followed by `k` watchers at once; for each k in task.watchers (a fresh run each). */
async function watchersScenario(app, plugin) {
  const phases = [];
  for (const k of task.watchers) {
    const started = await app.jobs(JOB_KEY).runNow();
    if (!started.ok) throw new Error(`runNow failed: ${started.status}`);
    const runId = started.data.run_id;
    const m = begin();
    const sequences = await Promise.all(
      Array.from({ length: k }, async () => {
        const seen = [];
        const it =
          task.side === "ours" ? app.jobs(JOB_KEY).watchRun(runId) : stockWatch(plugin, runId, task.pollIntervalMs);
        for await (const u of it) if (seen[seen.length - 1] !== u.status) seen.push(u.status);
        return seen.join(">");
      }),
    );
    const r = m.end();
    const distinct = [...new Set(sequences)];
    phases.push({ ...r, watchers: k, runId, sequences: distinct, allTerminal: sequences.every((s) => /TERMINATED$/.test(s)) });
  }
  return { phases };
}

// ---------------------------------------------------------------------------------------------

if (task.side === "bare") {
  const call = bareRunNow();
  const result = await runNowScenario(call);
  await send({ type: "result", result });
  process.exit(0);
}

const { app, plugin, port } = await boot();

if (task.scenario === "runnow") {
  const call = async () => {
    const r = await app.jobs(JOB_KEY).runNow();
    if (!r.ok) throw new Error(`runNow failed: ${r.status}`);
  };
  const result = await runNowScenario(call);
  await send({ type: "result", result });
  process.exit(0);
} else if (task.scenario === "wait") {
  const result = await waitScenario(app);
  await send({ type: "result", result });
  process.exit(0);
} else if (task.scenario === "watchers") {
  const result = await watchersScenario(app, plugin);
  await send({ type: "result", result });
  process.exit(0);
} else if (task.scenario === "serve") {
  // The parent drives HTTP clients against `port`; this process only measures itself between
  // "begin" and "end".
  let section;
  process.on("message", async (msg) => {
    if (msg.type === "script") {
      floorScripts = msg.scripts;
    } else if (msg.type === "begin") {
      section = begin();
      await send({ type: "begun" });
    } else if (msg.type === "end") {
      await send({ type: "result", result: section.end() });
      process.exit(0);
    }
  });
  await send({ type: "ready", port });
} else {
  throw new Error(`unknown scenario ${task.scenario}`);
}
