// A child process for the telemetry tests (not a test file): an AppKit app with the stock jobs
// plugin (`stock`) or ours (`ours`), an in-memory OpenTelemetry SDK registered globally (as
// AppKit's NodeSDK would be), the same calls against the emulator given in the env, and one
// JSON line on stdout: the spans, metrics and log records exported, and their raw text.
//
//   node __test__/support/telemetry-app.mjs stock|ours
//   env: EMU_URL, EMU_TOKEN
import { context, metrics, trace } from "@opentelemetry/api";
import { logs } from "@opentelemetry/api-logs";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor } from "@opentelemetry/sdk-logs";

const which = process.argv[2];
const spans = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(tracerProvider);
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });
metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
const logExporter = new InMemoryLogRecordExporter();
logs.setGlobalLoggerProvider(new LoggerProvider({ processors: [new SimpleLogRecordProcessor(logExporter)] }));

process.env.DATABRICKS_HOST = process.env.EMU_URL;
process.env.DATABRICKS_TOKEN = process.env.EMU_TOKEN;
process.env.DATABRICKS_JOB_ETL = "1001";
process.env.DATABRICKS_JOB_ID = "1001"; // the stock manifest requires it
delete process.env.NODE_ENV;

const { createApp, server, jobs: stockJobs } = await import("@databricks/appkit");
const { jobs: ourJobs } = await import("appkit-jobs");
const jobs = which === "stock" ? stockJobs : ourJobs;
const app = await createApp({
  plugins: [server({ port: 0, host: "127.0.0.1" }), jobs({ pollIntervalMs: 50, jobs: { etl: { taskType: "notebook" } } })],
});
const etl = app.jobs("etl");
const settle = async (p) => {
  try {
    return await p;
  } catch (e) {
    return e;
  }
};

const started = await etl.runNow({ day: "2025-01-01" });
const runId = started.data.run_id;
await etl.getRun(runId);
await etl.listRuns({ limit: 5 });
await etl.lastRun();
await etl.getJob();
await etl.getJob(); // a cached read
await settle(etl.getRun(999999)); // a failing call
for await (const _ of etl.runAndWait({ day: "2025-01-02" }));
await settle(etl.getRunOutput(runId));
const other = await etl.runNow({ day: "2025-01-03" });
await etl.cancelRun(other.data.run_id);
const srv = app.server.getServer();
if (!srv.listening) await new Promise((r) => srv.once("listening", r));
const base = `http://127.0.0.1:${srv.address().port}/api/jobs/etl`;
await (await fetch(`${base}/status`)).text();
await (await fetch(`${base}/run?stream=true`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"params":{"day":"x"}}' })).text();

await reader.forceFlush();
const attributesOf = (a) => Object.keys(a ?? {}).sort();
const out = {
  spans: spans.getFinishedSpans().map((s) => ({
    name: s.name,
    scope: s.instrumentationScope?.name ?? s.instrumentationLibrary?.name,
    kind: s.kind,
    status: s.status.code,
    attributes: s.attributes,
    events: s.events.map((e) => ({ name: e.name, attributes: e.attributes })),
    parent: s.parentSpanContext?.spanId ?? s.parentSpanId ?? null,
    id: s.spanContext().spanId,
  })),
  metrics: metricExporter
    .getMetrics()
    .at(-1)
    .scopeMetrics.flatMap((sm) =>
      sm.metrics.map((m) => ({
        name: m.descriptor.name,
        scope: sm.scope.name,
        unit: m.descriptor.unit,
        points: m.dataPoints.map((p) => ({ attributes: p.attributes, value: typeof p.value === "object" ? p.value.count : p.value })),
      })),
    ),
  logs: logExporter.getFinishedLogRecords().map((r) => ({ body: r.body, attributes: r.attributes, scope: r.instrumentationScope?.name })),
};
out.raw = JSON.stringify({ spans: spans.getFinishedSpans().map((s) => ({ ...s, _spanProcessor: undefined })), metrics: metricExporter.getMetrics(), logs: logExporter.getFinishedLogRecords() }, (k, v) =>
  typeof v === "bigint" ? String(v) : k === "resource" || k === "_spanProcessor" || k === "_logRecordLimits" ? undefined : v,
);
void attributesOf;
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
