// One measured app of bench/runnow-standin.mjs: `node --expose-gc bench/lib/standin-app.mjs '<task>'`,
// forked with an IPC channel. The app a user writes, with one side's plugin:
//   createApp({ plugins: [server(), jobs({ pollIntervalMs: 50, jobs: { bench: ... } })] })
// ours = this package's jobs(), stock = @databricks/appkit's. Nothing else is set: AppKit's
// internal telemetry is on unless the task says otherwise (`internalTelemetry: false`), as in a
// default app. The workspace (the Node stand-in, or the emulator) runs in another process; its
// URL and token come from the environment.
//
// Task fields: side, scenario ("runnow" | "wait"), n, warmup, pollIntervalMs, job (a JOB_CONFIGS
// key), params (pass params to runNow), internalTelemetry, otel (an in-memory OpenTelemetry SDK
// registered first, as AppKit's NodeSDK would be).
import fs from "node:fs";
import v8 from "node:v8";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

const require = createRequire(import.meta.url);
const task = JSON.parse(process.argv[2]);
const TERMINAL = new Set(["TERMINATED", "SKIPPED", "INTERNAL_ERROR"]);

function send(message) {
  return new Promise((resolve) => process.send(message, () => resolve()));
}
function fail(err) {
  send({ type: "error", message: err?.stack ?? String(err) }).finally(() => process.exit(1));
}
process.on("uncaughtException", fail);
process.on("unhandledRejection", fail);

/** The job's config, by variant (the same for both sides; `jobParameters` is ours only). */
async function jobConfig(variant) {
  switch (variant) {
    case "plain":
      return {};
    case "notebook":
      return { taskType: "notebook" };
    case "zod": {
      const { z } = await import("zod");
      return { taskType: "notebook", params: z.object({ date: z.string(), mode: z.string().optional() }) };
    }
    case "jobParameters":
      return { jobParameters: true };
    default:
      throw new Error(`unknown job variant ${variant}`);
  }
}
const PARAMS = { date: "2025-01-01", mode: "full" };

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
  setInterval(() => spans.reset(), 1000).unref();
}

async function boot() {
  if (task.otel) await registerInMemorySdk();
  const { createApp, server } = await import("@databricks/appkit");
  // BENCH_JOBS_PACKAGE: another checkout's package (A/B of two versions, bench/runnow-standin.mjs --b-package).
  const { jobs } = task.side === "ours" ? require(process.env.BENCH_JOBS_PACKAGE ?? "appkit-jobs") : await import("@databricks/appkit");
  const config = { pollIntervalMs: task.pollIntervalMs, jobs: { bench: await jobConfig(task.job) } };
  const app = await createApp({
    plugins: [server({ port: 0, host: "127.0.0.1" }), jobs(config)],
    ...(task.internalTelemetry === false ? { disableInternalTelemetry: true } : {}),
  });
  return app;
}

/**
 * RSS sampled every 20 ms (and the kernel's peak) until stop(), and the V8 heap at the RSS
 * peak: its spaces' committed sizes (new space: the young generation; old space) and the
 * bytes live in them, so that the RSS per watcher can be split into V8's share and the rest.
 */
function rssSampler(everyMs = 20) {
  const heapNow = () => {
    const out = {};
    for (const s of v8.getHeapSpaceStatistics()) out[s.space_name] = { size: s.space_size, used: s.space_used_size };
    return out;
  };
  let peak = process.memoryUsage.rss();
  let atPeak = heapNow();
  const baseline = atPeak;
  const timer = setInterval(() => {
    const rss = process.memoryUsage.rss();
    if (rss > peak) {
      peak = rss;
      atPeak = heapNow();
    }
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return { peak: Math.max(peak, process.memoryUsage.rss()), heapBaseline: baseline, heapAtPeak: atPeak };
    },
  };
}

/**
 * CPU ms of this process's threads by name (Linux /proc/self/task/<tid>/schedstat: ns on a CPU):
 * the main thread (JS, V8, N-API), the addon's Tokio workers, libuv's pool, V8's helpers.
 */
function threadCpu() {
  const out = {};
  try {
    for (const tid of fs.readdirSync("/proc/self/task")) {
      const ns = Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      let name = Number(tid) === process.pid ? "main" : fs.readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim();
      name = name.replace(/[-_ ]?\d+$/, "");
      out[name] = (out[name] ?? 0) + ns / 1e6;
    }
  } catch {
    return undefined;
  }
  return out;
}

function begin() {
  globalThis.gc?.();
  const baselineRss = process.memoryUsage.rss();
  const baselineHeap = process.memoryUsage().heapUsed;
  const sampler = rssSampler();
  const threads0 = threadCpu();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  return {
    end() {
      const cpu = process.cpuUsage(cpu0);
      const wallMs = performance.now() - t0;
      const threads1 = threadCpu();
      const { peak: peakRss, heapBaseline, heapAtPeak } = sampler.stop();
      const threads = {};
      if (threads0 && threads1) for (const [k, v] of Object.entries(threads1)) threads[k] = v - (threads0[k] ?? 0);
      return {
        threads,
        cpuMs: (cpu.user + cpu.system) / 1000,
        userMs: cpu.user / 1000,
        systemMs: cpu.system / 1000,
        wallMs,
        baselineRss,
        peakRss,
        maxRss: process.resourceUsage().maxRSS * 1024,
        baselineHeap,
        heapBaseline,
        heapAtPeak,
      };
    },
  };
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

async function runNowScenario(app) {
  const handle = app.jobs("bench");
  const call = async () => {
    const r = await handle.runNow(task.params ? PARAMS : undefined);
    if (!r.ok) throw new Error(`runNow failed: ${r.status}`);
  };
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
  return { ...r, n: task.n, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99) };
}

/** N concurrent runAndWait, each consumed to its end: CPU per run, RSS per watcher. */
async function waitScenario(app) {
  let finished = 0;
  let updates = 0;
  let firstError;
  const m = begin();
  const one = async () => {
    let last;
    try {
      for await (const u of app.jobs("bench").runAndWait(task.params ? PARAMS : undefined)) {
        updates++;
        last = u.status;
      }
      if (TERMINAL.has(last)) finished++;
    } catch (err) {
      firstError ??= String(err?.message ?? err).slice(0, 200);
    }
  };
  await Promise.all(Array.from({ length: task.n }, one));
  const r = m.end();
  return { ...r, n: task.n, finished, updates, firstError };
}

const app = await boot();
const result = task.scenario === "wait" ? await waitScenario(app) : await runNowScenario(app);
await send({ type: "result", result });
process.exit(0);
