// Type test of the public surface (index.d.ts): checked with `tsc --noEmit -p __test__/types`.
// Nothing here runs; every line must type-check, and every `@ts-expect-error` must be an error.
import { z } from "zod";
import { createApp, server } from "@databricks/appkit";
import { createJobsHandler } from "../../lib/http.js";
import {
  createJobs,
  jobs,
  startEmulator,
  type Emulator,
  JobsError,
  ValidationError,
  type BaseRun,
  type ExecutionResult,
  type IJobsConfig,
  type Job,
  type JobAPI,
  type JobConfig,
  type JobHandle,
  type JobRunStatus,
  type JobsExport,
  JobsPlugin,
  type Run,
  type RunNowResponse,
  type RunOutput,
  type TaskType,
  type Id,
  type JobRepairStatus,
  type JobsOf,
  type RepairOptions,
  type RepairRunResponse,
  typedJobs,
  type JobsAgentToolDefinition,
  type JobsToolEffect,
  type JobsToolkitEntry,
  type JobsToolRunAnswer,
  type JobToolName,
  type JobToolVerb,
} from "appkit-jobs";

const taskType: TaskType = "notebook";
const zodJob: JobConfig = {
  taskType,
  waitTimeout: 60_000,
  params: z.object({ startDate: z.string(), dryRun: z.boolean().optional() }),
};
const jsonSchemaJob: JobConfig = {
  taskType: "sql",
  params: { type: "object", required: ["day"], properties: { day: { type: "string" } } },
};
const config: IJobsConfig = { timeout: 30_000, pollIntervalMs: 1000, jobs: { etl: zodJob, report: jsonSchemaJob } };

// @ts-expect-error: not a task type
const badTask: JobConfig = { taskType: "shell" };

const plugin = jobs(config);
const pluginName: "jobs" = plugin.name;
const fromPlugin: JobsExport = new plugin.plugin({ ...plugin.config, name: "jobs" }).exports();

const standalone = createJobs(config, { env: { DATABRICKS_HOST: "http://127.0.0.1:1" } });
const keys: readonly string[] = standalone.keys;
const handle: JobHandle = standalone("etl");
const api: JobAPI = handle.asUser({ headers: { "x-forwarded-access-token": "t" } });
const api2: JobAPI = handle.asUser({ header: (name: string) => (name ? "t" : undefined) });

async function usage(): Promise<void> {
  const started: ExecutionResult<RunNowResponse> = await handle.runNow({ startDate: "2025-01-01" });
  if (started.ok) {
    const runId: number | undefined = started.data.run_id;
    void runId;
  } else {
    const status: number = started.status;
    const message: string = started.message;
    void status, message;
  }

  const controller = new AbortController();
  for await (const update of handle.runAndWait({ startDate: "2025-01-01" }, controller.signal)) {
    const u: JobRunStatus = update;
    const state: string | undefined = u.status;
    const ts: number = u.timestamp;
    const run: Run = u.run;
    void state, ts, run;
    break;
  }
  for await (const update of api.watchRun(123n)) void update.run.run_id;

  const last = await handle.lastRun();
  if (last.ok && last.data) {
    const b: BaseRun = last.data;
    void b.state?.life_cycle_state;
  }
  const list = await handle.listRuns({ limit: 10 });
  if (list.ok) list.data.forEach((r: BaseRun) => void r.run_id);
  const run = await handle.getRun(42);
  if (run.ok) void run.data.tasks?.map((t) => t.task_key);
  const out = await handle.getRunOutput(9007199254740993n);
  if (out.ok) {
    const o: RunOutput = out.data;
    void o.notebook_output?.result;
    void o.tasks?.map((t) => [t.task_key, t.run_id, t.error]);
  }
  const job = await api2.getJob();
  if (job.ok) {
    const j: Job = job.data;
    void j.settings?.name;
  }
  const cancelled: ExecutionResult<void> = await handle.cancelRun(42);
  void cancelled;

  // @ts-expect-error: a run id is a number or a bigint
  await handle.getRun({ id: 1 });
  // @ts-expect-error: listRuns takes an options object
  await handle.listRuns(10);

  try {
    await handle.runNow({});
  } catch (e) {
    if (e instanceof ValidationError) {
      const code: "VALIDATION_ERROR" = e.code;
      const s: number = e.statusCode;
      void code, s;
    } else if (e instanceof JobsError) {
      void e.code, e.status;
    }
  }
  standalone.close();
}

// Drop-in: the plugin data is accepted by AppKit's createApp and `app.jobs` is our callable.
async function withAppKit(): Promise<void> {
  const app = await createApp({ plugins: [server(), jobs(config)] });
  const etl: JobHandle = app.jobs("etl");
  const r: ExecutionResult<RunNowResponse> = await etl.runNow({ startDate: "2025-01-01" });
  void r;
  const requirements = JobsPlugin.getResourceRequirements(config);
  const env: string = requirements[0].fields.id.env;
  void env;
}

async function withEmulator(): Promise<void> {
  const emu: Emulator = await startEmulator({ timeScale: 100, jobs: [{ id: 7, name: "etl", taskType: "notebook" }] });
  emu.injectFault({ path: "/api/2.2/jobs/runs/get", status: 503, retryAfter: 1 });
  const api = createJobs({}, { env: emu.env() });
  const started = await api("etl").runNow();
  if (started.ok && started.data.run_id !== undefined) emu.setRunState(started.data.run_id, "SUCCESS");
  const paths: string[] = emu.requests().map((r) => r.path);
  void paths;
  await emu.stop();
}

// The standalone handler reuses the real config and handle types.
async function withHandler(): Promise<void> {
  const handler = createJobsHandler({ jobs: { etl: { taskType: "notebook", jobId: 1001 } }, heartbeatMs: 5000, env: {} });
  const r: ExecutionResult<RunNowResponse> = await handler.jobs("etl").runNow({ day: "2025-01-01" });
  void r;
  const taskType: TaskType | null | undefined = handler.clientConfig().jobs.etl?.taskType;
  void taskType;
  // @ts-expect-error: not a task type
  createJobsHandler({ jobs: { etl: { taskType: "notebok" } } });
  // @ts-expect-error: waitTimeout is a number
  createJobsHandler({ jobs: { etl: { waitTimeout: "soon" } } });
  handler.close();
}

void pluginName, fromPlugin, keys, badTask, usage, withAppKit, withEmulator, withHandler;

// ---------------------------------------------------------------------------------------------
// Params typed per job (Standard Schema input), repairs, and the same through AppKit.
// ---------------------------------------------------------------------------------------------
const typedConfig = {
  jobs: {
    etl: { taskType: "notebook", params: z.object({ startDate: z.string(), dryRun: z.boolean().optional() }) },
    report: { taskType: "sql", params: { type: "object", properties: { day: { type: "string" } } } },
    nightly: {}, // known only from DATABRICKS_JOB_NIGHTLY: listed so that its key is checked too
  },
} satisfies IJobsConfig;

async function typedParams(): Promise<void> {
  const api = createJobs(typedConfig);
  await api("etl").runNow({ startDate: "2025-01-01", dryRun: true });
  // @ts-expect-error: startDate is a string
  await api("etl").runNow({ startDate: 5 });
  // @ts-expect-error: a misspelled field
  await api("etl").runNow({ startDat: "2025-01-01" });
  // @ts-expect-error: a misspelled job key
  api("etll");
  for await (const u of api("etl").runAndWait({ startDate: "2025-01-01" })) void u.status;
  // @ts-expect-error: runAndWait's params are typed too
  api("etl").runAndWait({ startDate: false });
  const user = api("etl").asUser({ headers: {} });
  await user.runNow({ startDate: "2025-01-01" });
  // @ts-expect-error: asUser keeps the params type
  await user.runNow({ startDate: 1 });
  // A JSON Schema job, a job without a schema: any record, as before.
  await api("report").runNow({ day: "2025-01-01", anything: 1 });
  await api("nightly").runNow({ date: "today" });

  // Repairs: typed options and params, the repair id on every update.
  const repaired: ExecutionResult<RepairRunResponse> = await api("etl").repairRun(42, { rerunAllFailedTasks: true });
  if (repaired.ok) void repaired.data.repair_id;
  await api("etl").repairRun(42n, { rerunTasks: ["train"], rerunDependentTasks: true, params: { startDate: "2025-01-02" } });
  // @ts-expect-error: repair params are the job's params
  await api("etl").repairRun(42, { rerunAllFailedTasks: true, params: { startDate: 2 } });
  // @ts-expect-error: rerunTasks are task keys
  await api("etl").repairRun(42, { rerunTasks: [1] });
  for await (const u of api("etl").repairAndWait(42, { rerunAllFailedTasks: true }, AbortSignal.timeout(1000))) {
    const s: JobRepairStatus = u;
    const id: Id = s.repairId;
    void id;
  }

  // Untyped configs take any key and any record, as before.
  const loose = createJobs(config);
  await loose("whatever").runNow({ x: 1 });
  const repairOptions: RepairOptions = { rerunTasks: ["a"] };
  await loose("whatever").repairRun(1, repairOptions);
}

// Through AppKit: createApp infers the params from an inline jobs({...}) config.
async function typedAppKit(): Promise<void> {
  const app = await createApp({ plugins: [server(), jobs(typedConfig)] });
  await app.jobs("etl").runNow({ startDate: "2025-01-01" });
  // @ts-expect-error: typed through createApp
  await app.jobs("etl").runNow({ startDate: 5 });
  // @ts-expect-error: a misspelled key through createApp
  app.jobs("etll");
  // A config typed as IJobsConfig elsewhere: the accessor or the type gives the params back.
  const loose = await createApp({ plugins: [server(), jobs(config as IJobsConfig)] });
  const typed = typedJobs(loose.jobs, typedConfig);
  await typed("etl").runNow({ startDate: "2025-01-01" });
  // @ts-expect-error: typed by typedJobs
  await typed("etl").runNow({ startDate: 5 });
  const alias = loose.jobs as JobsOf<typeof typedConfig>;
  // @ts-expect-error: typed by JobsOf
  await alias("etl").repairRun(1, { rerunAllFailedTasks: true, params: { dryRun: "yes" } });
}
void typedParams, typedAppKit;

// Agent tools: the plugin is an AppKit ToolProvider with a toolkit, typed by its jobs.
async function agentTools(): Promise<void> {
  const { agents, createAgent } = await import("@databricks/appkit/beta");
  const assistant = createAgent({
    instructions: "Did the ETL finish? If it failed, repair it.",
    tools: (plugins) => ({ ...plugins.jobs.toolkit({ only: ["etl.status", "etl.repair", "etl.wait"] }) }),
  });
  await createApp({ plugins: [server(), jobs(typedConfig), agents({ agents: { assistant } })] });

  const plugin = new JobsPlugin<typeof typedConfig.jobs>(typedConfig);
  const tools: JobsAgentToolDefinition[] = plugin.getAgentTools();
  const effect: JobsToolEffect = tools[0]!.annotations.effect;
  void effect;
  const kit = plugin.toolkit({ only: ["etl.status", "etl.run"], prefix: "", rename: { "etl.run": "start_etl" } });
  const entry: JobsToolkitEntry<JobToolName<typeof typedConfig.jobs>> | undefined = kit["etl.status"];
  if (entry) {
    const local: JobToolName<typeof typedConfig.jobs> = entry.localName;
    const inherit: boolean = entry.autoInheritable;
    void local, inherit;
  }
  // @ts-expect-error: no such tool
  plugin.toolkit({ only: ["etl.stats"] });
  // @ts-expect-error: no such job
  plugin.toolkit({ except: ["etll.run"] });
  const answer: unknown = await plugin.executeAgentTool("etl.status", {});
  const run = answer as JobsToolRunAnswer;
  const done: boolean = run.done;
  const verb: JobToolVerb = "wait";
  void done, verb;
}
void agentTools;
