"use strict";
// The jobs plugin as an AppKit agent tool provider: the tools an app's agents get from
// `plugins.jobs.toolkit()` (or `plugin:jobs` in a markdown agent). Duck-typed, like the plugin
// itself: nothing here loads @databricks/appkit.
//
// Per job key `etl`, local names as AppKit's plugins spell theirs (`<alias>.<verb>`):
//   etl.status, etl.listRuns, etl.getRun, etl.getRunOutput, etl.wait   effect "read"
//   etl.run, etl.repair                                              effect "write"
//   etl.cancel                                                       effect "destructive"
// AppKit's approval gate asks a person before every write or destructive call, and runs the
// call through `plugin.asUser(req)`: the tools act through the handles of the plugin they are
// called on (`scope.exports()`), so a chat's tool call runs with the user's token and the run
// it starts is recorded in the ledger as started by the request's person.
//
// Answers are small (a model reads them): state, result, the progress summary, task names
// where something failed, the run page URL, clipped output. Failures say what to fix and never
// carry a token, a URL or an upstream message (ExecutionResult only has the status).
const { JobsError, statusText } = require("./errors.js");
const { paramsJsonSchema } = require("./schema.js");
const { native } = require("./native.js");
const { toJson } = require("./handle.js");

const READ = "read";
const WRITE = "write";
const DESTRUCTIVE = "destructive";

/** How long `wait` follows a run by default, and at most (AppKit's tool calls time out after 5 min). */
const WAIT_DEFAULT_S = 60;
const WAIT_MAX_S = 240;
/** `listRuns`: default and largest page. */
const LIST_DEFAULT = 5;
const LIST_MAX = 20;
/** Past this many tasks, a run's answer names only the failed and running ones. */
const TASKS_LISTED = 25;
/** Task names listed per kind (failed, running) on a large run. */
const NAMES_LISTED = 10;
/** Budget of an answer's JSON, in characters: lists stop growing past it (the whole stays under 4 KB). */
const BUDGET = 3000;

const TERMINAL = new Set(["TERMINATED", "SKIPPED", "INTERNAL_ERROR"]);
const FAILED_RESULTS = new Set(["FAILED", "TIMEDOUT", "CANCELED", "UPSTREAM_FAILED", "UPSTREAM_CANCELED", "MAXIMUM_CONCURRENT_RUNS_REACHED"]);
const RUNNING = new Set(["PENDING", "RUNNING", "TERMINATING", "QUEUED", "BLOCKED", "WAITING_FOR_RETRY"]);

const RUN_ID = { type: "integer", minimum: 1, description: "The run id (run ids come from this job's status, listRuns or run tools)." };

/** A tool's own (not the job's params) arguments could not be read: the message a model gets back. */
class InvalidArguments extends Error {}

// ---------------------------------------------------------------------------------------------
// The tools of one job
// ---------------------------------------------------------------------------------------------

/**
 * The tool specs of job `key`: `[verb, { effect, description, parameters, run(ctx, args) }]`.
 * `params` is the job's params as a tool schema (`paramsSchema` below).
 */
function jobTools(key, job, params) {
  const about = typeof job.description === "string" && job.description.trim() ? ` (${clip(job.description.trim(), 200)})` : "";
  const name = `the Databricks job "${key}"${about}`;
  const runIdOnly = (extra = {}, required = []) => object({ runId: RUN_ID, ...extra }, ["runId", ...required]);
  const tools = [
    [
      "status",
      {
        effect: READ,
        description: `The latest run of ${name}: its state and result, progress (tasks done, failed, running), the failed tasks by name and the run page URL. Use it to tell whether the job ran, is running, finished or failed.`,
        parameters: object({}),
        run: status,
      },
    ],
    [
      "listRuns",
      {
        effect: READ,
        description: `Recent runs of ${name}, newest first: run id, state, result, start time, duration, and who started each run through this app.`,
        parameters: object({
          limit: { type: "integer", minimum: 1, maximum: LIST_MAX, description: `How many runs (default ${LIST_DEFAULT}, at most ${LIST_MAX}).` },
          startedBy: { type: "string", description: 'Only the runs this person started through this app: "me" (the current user) or an email address.' },
        }),
        run: listRuns,
      },
    ],
    [
      "getRun",
      {
        effect: READ,
        description: `One run of ${name} with its tasks: the state and result of each task (on a large run, the failed and running ones by name), the progress summary and the run page URL.`,
        parameters: runIdOnly(),
        run: getRun,
      },
    ],
    [
      "getRunOutput",
      {
        effect: READ,
        description: `What a run of ${name} produced: the notebook's exit value, the error message and the end of the error trace, per task for a run of several tasks (taskKey picks one task).`,
        parameters: runIdOnly({ taskKey: { type: "string", description: "Only this task's output." } }),
        run: getRunOutput,
      },
    ],
    [
      "wait",
      {
        effect: READ,
        description: `Follow a run of ${name} until it ends, for at most timeoutSeconds (default ${WAIT_DEFAULT_S}, at most ${WAIT_MAX_S}), then return its state, result and progress. A run still going after that is returned with done: false; call this tool again to keep following it.`,
        parameters: runIdOnly({
          timeoutSeconds: { type: "integer", minimum: 1, maximum: WAIT_MAX_S, description: `How long to follow the run, in seconds (default ${WAIT_DEFAULT_S}).` },
        }),
        run: wait,
      },
    ],
    [
      "run",
      {
        effect: WRITE,
        idempotent: false,
        description: `Start a new run of ${name}. The arguments are the job's parameters. A person approves the call before anything starts. Returns the new run id; follow the run with this job's wait tool.`,
        parameters: params.schema,
        run: runJob,
      },
    ],
    [
      "repair",
      {
        effect: WRITE,
        idempotent: false,
        description: `Repair an ended run of ${name}: run its failed tasks again (or the tasks in rerunTasks), inside the same run. A person approves the call first. Follow the run with this job's wait tool.`,
        parameters: runIdOnly({
          rerunTasks: { type: "array", items: { type: "string" }, minItems: 1, description: "Task keys to run again (default: every failed task)." },
          rerunDependentTasks: { type: "boolean", description: "Also run the tasks that depend on rerunTasks." },
          ...(params.takesParams ? { params: { ...params.schema, description: "New parameters for the repaired tasks (default: the run's own)." } } : {}),
        }),
        run: repair,
      },
    ],
    [
      "cancel",
      {
        effect: DESTRUCTIVE,
        idempotent: true,
        description: `Cancel a queued or running run of ${name}: the work in progress stops and is lost. A person approves the call first.`,
        parameters: runIdOnly(),
        run: cancel,
      },
    ],
  ];
  return tools;
}

function object(properties, required = []) {
  const schema = { type: "object", properties, additionalProperties: false };
  if (required.length > 0) schema.required = required;
  return schema;
}

/**
 * The job's params as a tool's arguments (JSON Schema, `$schema` left out as AppKit leaves it
 * out for model endpoints that refuse it): its own schema (Zod / Standard Schema, JSON Schema,
 * or its definition's parameters once read), else what the routes accept: string values for a
 * job with a task type or job parameters, nothing for a job that takes none.
 * `{ schema, takesParams, pending }`; `pending`: the definition is not read yet.
 */
function paramsSchema(job, fromConfig) {
  const given = fromConfig ?? paramsJsonSchema(job.params);
  if (given && typeof given === "object" && !Array.isArray(given)) {
    const { $schema: _s, ...rest } = JSON.parse(JSON.stringify(given));
    if (rest.type === undefined && rest.properties !== undefined) rest.type = "object";
    return { schema: rest, takesParams: true, pending: false };
  }
  if (job.params != null) {
    // A schema its library cannot write as JSON Schema: runNow still validates with it.
    return { schema: { type: "object", description: "The job's parameters (validated by the job's schema)." }, takesParams: true, pending: false };
  }
  if (job.jobParameters || job.taskType) {
    if (job.taskType === "dbt" && !job.jobParameters) return { schema: object({}), takesParams: false, pending: false };
    const list = job.taskType === "python_script" || job.taskType === "spark_jar";
    const schema = list && !job.jobParameters
      ? object({ args: { type: "array", items: { type: "string" }, description: "Command-line arguments." } })
      : { type: "object", additionalProperties: { type: "string" }, maxProperties: native().maxUnvalidatedParamKeys(), description: "The job's parameters by name (values are sent as text)." };
    return { schema, takesParams: true, pending: Boolean(job.jobParameters) };
  }
  return { schema: object({}), takesParams: false, pending: false };
}

// ---------------------------------------------------------------------------------------------
// Tool bodies: `ctx` is { key, local, handle, native, signal }
// ---------------------------------------------------------------------------------------------

async function status(ctx) {
  const last = expect(ctx, await ctx.handle.lastRun());
  if (!last) return { job: ctx.key, run: null, message: `Job "${ctx.key}" has no runs yet.` };
  const runId = last.run_id;
  try {
    const update = await firstUpdate(ctx, runId);
    return runSummary(ctx.key, update.run, update.progress, { tasks: false });
  } catch (error) {
    if (error instanceof ToolFailure) return runSummary(ctx.key, last, null, { tasks: false });
    throw error;
  }
}

async function listRuns(ctx, args) {
  const limit = integerArg(args, "limit", 1, LIST_MAX) ?? LIST_DEFAULT;
  const startedBy = stringArg(args, "startedBy", 256);
  const runs = expect(ctx, await ctx.handle.listRuns(startedBy === undefined ? { limit } : { limit, startedBy }));
  const out = { job: ctx.key, runs: [] };
  for (const run of runs ?? []) {
    const entry = runLine(run);
    if (!fits(out, entry)) {
      out.more = runs.length - out.runs.length;
      break;
    }
    out.runs.push(entry);
  }
  if (out.runs.length === 0) out.message = startedBy === undefined ? `Job "${ctx.key}" has no runs yet.` : `No runs of job "${ctx.key}" started by that person through this app.`;
  return out;
}

async function getRun(ctx, args) {
  const runId = runIdArg(args);
  const update = await firstUpdate(ctx, runId);
  return runSummary(ctx.key, update.run, update.progress, { tasks: true });
}

async function getRunOutput(ctx, args) {
  const runId = runIdArg(args);
  const taskKey = stringArg(args, "taskKey", 256);
  const output = expect(ctx, await ctx.handle.getRunOutput(runId), runId);
  const run = output?.metadata ?? {};
  const out = { job: ctx.key, runId: idOut(run.run_id ?? runId), state: lifeCycle(run), result: run.state?.result_state ?? null };
  if (typeof run.run_page_url === "string") out.url = run.run_page_url;
  if (!Array.isArray(output?.tasks)) {
    out.output = outputOf(output, 1000);
    return out;
  }
  let tasks = output.tasks;
  if (taskKey !== undefined) {
    tasks = tasks.filter((t) => t.task_key === taskKey);
    if (tasks.length === 0) throw new InvalidArguments(`taskKey: run ${runId} has no task with that key`);
  }
  // The tasks with something to say first: errors, then output.
  const rank = (t) => (t.error || t.error_status ? 0 : t.notebook_output?.result != null || t.sql_output || t.dbt_output || t.logs ? 1 : 2);
  const ordered = tasks.map((t, i) => [rank(t), i, t]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  out.tasks = [];
  const each = taskKey !== undefined ? 1000 : 300;
  for (const [r, , task] of ordered) {
    if (r === 2 && taskKey === undefined) continue;
    const entry = { task: clip(String(task.task_key ?? ""), 100), ...outputOf(task, each) };
    if (!fits(out, entry)) break;
    out.tasks.push(entry);
  }
  const silent = tasks.length - ordered.filter(([r]) => r < 2).length;
  const omitted = ordered.filter(([r]) => r < 2).length - out.tasks.length;
  if (omitted > 0) out.omitted = omitted;
  if (silent > 0 && taskKey === undefined) out.tasksWithoutOutput = silent;
  return out;
}

async function wait(ctx, args) {
  const runId = runIdArg(args);
  const seconds = integerArg(args, "timeoutSeconds", 1, WAIT_MAX_S) ?? WAIT_DEFAULT_S;
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), seconds * 1000);
  const onAbort = () => stop.abort();
  ctx.signal?.addEventListener("abort", onAbort, { once: true });
  // A listener added to a signal already aborted never runs.
  if (ctx.signal?.aborted) stop.abort();
  const started = Date.now();
  let last;
  try {
    for await (const update of ctx.handle.watchRun(runId, stop.signal)) last = update;
  } catch (error) {
    throw failure(ctx, error, runId);
  } finally {
    clearTimeout(timer);
    ctx.signal?.removeEventListener("abort", onAbort);
  }
  const waited = Math.round((Date.now() - started) / 1000);
  if (last === undefined) return { job: ctx.key, runId: idOut(runId), done: false, message: `No state of run ${runId} yet after ${waited} s: call wait again.` };
  const out = runSummary(ctx.key, last.run, last.progress, { tasks: false });
  if (!out.done) out.message = `Still ${out.state ?? "going"} after ${waited} s: call wait again to keep following it.`;
  return out;
}

async function runJob(ctx, args) {
  const params = requestParams(ctx, args, "");
  ctx.signal?.throwIfAborted?.();
  const started = expect(ctx, await ctx.handle.runNow(params));
  const runId = started?.run_id;
  const out = { job: ctx.key, runId: idOut(runId), started: true };
  // Best effort: the run page URL (a read; the run is started whatever it answers).
  try {
    const read = await ctx.handle.getRun(runId);
    if (read.ok) {
      out.state = lifeCycle(read.data);
      if (typeof read.data?.run_page_url === "string") out.url = read.data.run_page_url;
    }
  } catch {
    // the answer stays without it
  }
  out.message = `Run ${runId} of job "${ctx.key}" started. Follow it with this job's wait tool.`;
  return out;
}

async function repair(ctx, args) {
  const runId = runIdArg(args);
  const rerunTasks = args.rerunTasks;
  if (rerunTasks !== undefined && (!Array.isArray(rerunTasks) || rerunTasks.length === 0 || rerunTasks.some((t) => typeof t !== "string" || t === ""))) {
    throw new InvalidArguments("rerunTasks: expected a non-empty list of task keys");
  }
  const rerunDependentTasks = args.rerunDependentTasks;
  if (rerunDependentTasks !== undefined && typeof rerunDependentTasks !== "boolean") throw new InvalidArguments("rerunDependentTasks: expected true or false");
  const params = args.params === undefined ? undefined : requestParams(ctx, args.params, "params.");
  const options = rerunTasks ? { rerunTasks, rerunDependentTasks } : { rerunAllFailedTasks: true, rerunDependentTasks };
  if (params !== undefined) options.params = params;
  ctx.signal?.throwIfAborted?.();
  const repaired = expect(ctx, await ctx.handle.repairRun(runId, options), runId);
  const what = rerunTasks ? `the tasks ${rerunTasks.map((t) => clip(t, 100)).join(", ")}` : "its failed tasks";
  return {
    job: ctx.key,
    runId: idOut(runId),
    repairId: idOut(repaired?.repair_id),
    repaired: true,
    message: `Run ${runId} is being repaired: ${what} run again. Follow it with this job's wait tool.`,
  };
}

async function cancel(ctx, args) {
  const runId = runIdArg(args);
  ctx.signal?.throwIfAborted?.();
  expect(ctx, await ctx.handle.cancelRun(runId), runId);
  return { job: ctx.key, runId: idOut(runId), cancelled: true, message: `Run ${runId} is being cancelled; it ends as CANCELED.` };
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

function runIdArg(args) {
  const v = args.runId;
  if (typeof v === "number" && Number.isSafeInteger(v) && v > 0) return v;
  if (typeof v === "bigint" && v > 0n) return v;
  if (typeof v === "string" && /^[1-9][0-9]{0,18}$/.test(v.trim())) return v.trim();
  throw new InvalidArguments(v === undefined ? "runId: required" : "runId: expected a positive integer run id");
}

function integerArg(args, name, min, max) {
  const v = args[name];
  if (v === undefined || v === null) return undefined;
  const n = typeof v === "string" && /^[0-9]+$/.test(v) ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) throw new InvalidArguments(`${name}: expected an integer from ${min} to ${max}`);
  return n;
}

function stringArg(args, name, max) {
  const v = args[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string" || v.trim() === "") throw new InvalidArguments(`${name}: expected text`);
  if (v.length > max) throw new InvalidArguments(`${name}: at most ${max} characters`);
  return v.trim();
}

function isPlainObject(v) {
  if (v === null || typeof v !== "object") return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Params a model sends, checked as the routes check a browser's (the core's
 * `params::from_request`, through the binding): a plain object; `{}` is none; a job without a
 * schema takes them only with a task type or job parameters (else they would pass through as raw
 * run-now fields), and a bounded number of them. The job's own validation (schema, definition,
 * task-type mapping) is then runNow's / repairRun's.
 */
function requestParams(ctx, params, path) {
  if (!isPlainObject(params)) throw new InvalidArguments(`${path || "arguments"}: expected an object of the job's parameters`);
  if (Object.keys(params).length === 0) return undefined;
  // A JS schema (Zod) validates in runNow itself: the core sees it as `externalSchema`.
  const outcome = ctx.native.checkRequestParams(ctx.key, toJson(params));
  if (outcome.ok) return params;
  const detail = String(outcome.message ?? "").replace(/^Parameter validation failed for job "[^"]*": /, "");
  if (detail === "This job does not accept parameters") throw new InvalidArguments(`job "${ctx.key}" takes no parameters: call it with {}`);
  throw new InvalidArguments(detail || "the parameters were refused");
}

// ---------------------------------------------------------------------------------------------
// Results and failures
// ---------------------------------------------------------------------------------------------

/** A failure a tool call ends with: the message is the model's to read (no token, URL or upstream text). */
class ToolFailure extends JobsError {}

/** The data of an ExecutionResult, or the ToolFailure its status means. */
function expect(ctx, result, runId) {
  if (result?.ok) return result.data;
  throw statusFailure(ctx, result?.status ?? 500, runId);
}

function statusFailure(ctx, status, runId) {
  const { key, local } = ctx;
  const text = `${status} ${statusText(status)}`;
  const make = (message, code) => new ToolFailure(message, { code, statusCode: status });
  if (status === 404) {
    return runId === undefined
      ? make(`Job "${key}" was not found in the workspace: check its job id.`, "NOT_FOUND")
      : make(`Run ${runId} was not found for job "${key}": use a run id from this job's status or listRuns tools.`, "NOT_FOUND");
  }
  if (status === 401) return make(`The workspace did not accept the credentials of this call (${text}): sign in again.`, "UNAUTHENTICATED");
  if (status === 403) {
    const needs = /\.(run|repair|cancel)$/.test(local) ? "CAN_MANAGE_RUN" : "CAN_VIEW";
    return make(`Permission denied (${text}): this needs ${needs} on job "${key}".`, "PERMISSION_DENIED");
  }
  if (status === 429) return make(`The workspace is limiting requests (${text}): try again in a minute.`, "RATE_LIMITED");
  if (status === 400 && local.endsWith(".repair")) {
    return make(`The Jobs API refused the repair (${text}): only a run that has ended can be repaired, and only with its own task keys.`, "INVALID_REQUEST");
  }
  if (status === 400 && local.endsWith(".cancel")) return make(`The Jobs API refused the cancel (${text}).`, "INVALID_REQUEST");
  if (status >= 500) return make(`The Jobs API is not available (${text}): try again later.`, "UPSTREAM_UNAVAILABLE");
  return make(`The Jobs API refused the request (${text}).`, "UPSTREAM_ERROR");
}

/** Codes whose messages this package writes itself (public by construction, see errors.js). */
const OWN_CODES = new Set(["JOB_ID_MISSING", "CONFIG_ERROR", "POLL_TIMEOUT", "SHUTTING_DOWN", "UNAUTHENTICATED", "UNKNOWN_JOB", "UPSTREAM_UNAVAILABLE"]);

/** What a rejection (or a wait's error) becomes: invalid arguments, or a ToolFailure. */
function failure(ctx, error, runId) {
  if (error instanceof InvalidArguments || error instanceof ToolFailure) return error;
  // Our own checks (params, repair options, run ids); an upstream error code that happens to
  // read INVALID_REQUEST carries only its status text, and is a status failure below.
  const ours = error?.code === "VALIDATION_ERROR" || (error?.code === "INVALID_REQUEST" && error.message !== statusText(error.statusCode));
  if (ours) {
    return new InvalidArguments(String(error.message).replace(/^Parameter validation failed for job "[^"]*": /, ""));
  }
  if (error?.name === "AbortError") return new ToolFailure("The call was cancelled before it finished.", { code: "CANCELLED", statusCode: 499 });
  if (typeof error?.code === "string" && OWN_CODES.has(error.code)) return new ToolFailure(error.message, { code: error.code, statusCode: error.statusCode ?? 500 });
  const status = error?.statusCode ?? error?.status;
  if (typeof status === "number") return statusFailure(ctx, status, runId);
  // Not an answer of the Jobs API: a fault of this package, logged by `execute`.
  return new ToolFailure(`The ${ctx.local} tool failed inside the jobs plugin.`, { code: "INTERNAL_ERROR", statusCode: 500, cause: error });
}

/** The first update of a run (its state, tasks and progress), read through the shared poll. */
async function firstUpdate(ctx, runId) {
  const updates = ctx.handle.watchRun(runId, ctx.signal);
  try {
    const { value, done } = await updates.next();
    if (done || value === undefined) throw new ToolFailure("The call was cancelled before it finished.", { code: "CANCELLED", statusCode: 499 });
    return value;
  } catch (error) {
    throw failure(ctx, error, runId);
  } finally {
    // Leaves the shared poll (the last watcher's leaving stops it).
    await updates.return?.();
  }
}

function lifeCycle(run) {
  return run?.state?.life_cycle_state ?? run?.status?.state ?? null;
}

function isDone(run) {
  return TERMINAL.has(run?.state?.life_cycle_state) || run?.status?.state === "TERMINATED";
}

/** An id as a model reads it: a number, or its decimal text beyond 2^53. */
function idOut(id) {
  if (typeof id === "bigint") return id.toString();
  return id ?? null;
}

function iso(ms) {
  return typeof ms === "number" && ms > 0 ? new Date(ms).toISOString() : undefined;
}

function clip(text, max) {
  const s = String(text);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** The end of a text (an error trace or a log says the most at its end). */
function tail(text, max) {
  const s = String(text);
  return s.length > max ? `…${s.slice(s.length - max + 1)}` : s;
}

function who(startedBy) {
  if (!startedBy || typeof startedBy !== "object") return undefined;
  return startedBy.email ?? startedBy.user_name ?? startedBy.user_id ?? undefined;
}

/** Whether `entry` still fits the answer's budget once added. */
function fits(answer, entry) {
  return JSON.stringify(answer, bigints).length + JSON.stringify(entry, bigints).length < BUDGET;
}

function bigints(_k, v) {
  return typeof v === "bigint" ? v.toString() : v;
}

/** One run in a list: id, state, result, when, how long, by whom. */
function runLine(run) {
  const out = { runId: idOut(run.run_id), state: lifeCycle(run), result: run.state?.result_state ?? null };
  const startedAt = iso(run.start_time);
  if (startedAt) out.startedAt = startedAt;
  const duration = durationOf(run);
  if (duration !== undefined) out.durationMs = duration;
  const by = who(run.started_by);
  if (by) out.startedBy = clip(by, 100);
  return out;
}

function durationOf(run) {
  if (typeof run.run_duration === "number" && run.run_duration > 0) return run.run_duration;
  if (run.end_time > 0 && run.start_time > 0) return run.end_time - run.start_time;
  return undefined;
}

/** A task run's latest attempt per task key (the one the latest repair names, else the last listed). */
function latestTasks(run) {
  const tasks = Array.isArray(run?.tasks) ? run.tasks : [];
  const history = Array.isArray(run?.repair_history) ? run.repair_history : [];
  const named = new Set((history.at(-1)?.task_run_ids ?? []).map(String));
  const byKey = new Map();
  for (const task of tasks) {
    const key = String(task?.task_key ?? "");
    const current = byKey.get(key);
    if (current !== undefined && named.has(String(current.run_id)) && !named.has(String(task.run_id))) continue;
    byKey.set(key, task);
  }
  return [...byKey.values()];
}

function taskFailed(task) {
  return FAILED_RESULTS.has(task?.state?.result_state) || task?.state?.life_cycle_state === "INTERNAL_ERROR";
}

function taskRunning(task) {
  return !taskFailed(task) && RUNNING.has(task?.state?.life_cycle_state ?? task?.status?.state);
}

function compactProgress(p) {
  if (!p || typeof p !== "object") return undefined;
  const out = {
    tasksTotal: p.tasksTotal,
    tasksDone: p.tasksDone,
    tasksFailed: p.tasksFailed,
    tasksRunning: p.tasksRunning,
    fraction: typeof p.fraction === "number" ? Math.round(p.fraction * 100) / 100 : null,
    elapsedMs: p.elapsedMs ?? null,
    expectedMs: p.expectedMs ?? null,
  };
  if (p.since === "repair") out.since = "repair";
  if (Array.isArray(p.forEach) && p.forEach.length > 0) {
    out.forEach = p.forEach.slice(0, 3).map((f) => ({ taskKey: clip(f.taskKey, 100), total: f.total, completed: f.completed, failed: f.failed }));
  }
  return out;
}

/**
 * A run as a model reads it: `{ job, runId, state, result, done, message?, startedAt?, endedAt?,
 * durationMs?, startedBy?, url?, progress?, failedTasks?, runningTasks?, tasks? }` (`tasks`,
 * each task's state and result, for a run of at most 25 tasks when `opts.tasks`).
 */
function runSummary(key, run, progress, opts) {
  const out = { job: key, runId: idOut(run?.run_id), state: lifeCycle(run), result: run?.state?.result_state ?? null, done: isDone(run) };
  const message = run?.state?.state_message || run?.status?.termination_details?.message;
  if (typeof message === "string" && message.trim()) out.message = clip(message.trim(), 300);
  const startedAt = iso(run?.start_time);
  if (startedAt) out.startedAt = startedAt;
  const endedAt = iso(run?.end_time);
  if (endedAt) out.endedAt = endedAt;
  const duration = run ? durationOf(run) : undefined;
  if (duration !== undefined && out.done) out.durationMs = duration;
  const by = who(run?.started_by);
  if (by) out.startedBy = clip(by, 100);
  if (typeof run?.run_page_url === "string") out.url = run.run_page_url;
  const compact = compactProgress(progress);
  if (compact) out.progress = compact;
  const tasks = latestTasks(run);
  if (opts.tasks && tasks.length > 0 && tasks.length <= TASKS_LISTED) {
    out.tasks = tasks.map((t) => {
      const entry = { task: clip(String(t.task_key ?? ""), 100), state: t.state?.life_cycle_state ?? t.status?.state ?? null, result: t.state?.result_state ?? null };
      const m = t.state?.state_message;
      if (taskFailed(t) && typeof m === "string" && m.trim()) entry.message = clip(m.trim(), 150);
      return entry;
    });
    if (fits(out, {})) return out;
    delete out.tasks; // names only, below
  }
  const names = (list) => list.map((t) => clip(String(t.task_key ?? ""), 100));
  const failed = tasks.filter(taskFailed);
  const running = tasks.filter(taskRunning);
  if (failed.length > 0) {
    out.failedTasks = names(failed.slice(0, NAMES_LISTED));
    if (failed.length > NAMES_LISTED) out.moreFailedTasks = failed.length - NAMES_LISTED;
  }
  if (running.length > 0) {
    out.runningTasks = names(running.slice(0, NAMES_LISTED));
    if (running.length > NAMES_LISTED) out.moreRunningTasks = running.length - NAMES_LISTED;
  }
  return out;
}

/** One output (a run's, or one task's): result, error, the end of the trace and logs, clipped to `max`. */
function outputOf(o, max) {
  const out = {};
  if (!o || typeof o !== "object") return out;
  if (o.error_status !== undefined) {
    out.error = `its output could not be read (${o.error_status} ${statusText(o.error_status)})`;
    return out;
  }
  const result = o.notebook_output?.result;
  if (result !== undefined && result !== null) {
    out.result = clip(typeof result === "string" ? result : JSON.stringify(result, bigints), max);
    if (o.notebook_output.truncated) out.resultTruncated = true;
  }
  for (const [field, name] of [["sql_output", "sql"], ["dbt_output", "dbt"], ["run_job_output", "runJob"]]) {
    if (o[field] && typeof o[field] === "object") out[name] = clip(JSON.stringify(o[field], bigints), Math.min(max, 300));
  }
  if (typeof o.error === "string" && o.error) out.error = clip(o.error, Math.min(max, 500));
  if (typeof o.error_trace === "string" && o.error_trace) out.errorTrace = tail(o.error_trace, Math.min(max, 500));
  if (typeof o.info === "string" && o.info) out.info = clip(o.info, Math.min(max, 300));
  if (typeof o.logs === "string" && o.logs) out.logs = tail(o.logs, Math.min(max, 500));
  return out;
}

// ---------------------------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------------------------

/**
 * The agent tools of one JobsPlugin. The plugin delegates `getAgentTools`, `executeAgentTool`
 * and `toolkit` here; `scope` is the plugin a call came through (itself, or its `asUser(req)`
 * view, whose handles run as the request's user and record its person).
 */
class JobsAgentTools {
  /**
   * @param {{ jobKeys(): string[], clientConfig(): { jobs: Record<string, { params: object | null }> }, config: object }} plugin
   * @param {{ warn?: (message: string) => void }} [logger]
   */
  constructor(plugin, logger) {
    this._plugin = plugin;
    this._logger = logger ?? console;
    /** local name -> { key, verb, effect, def, run }, built on first use. */
    this._tools = null;
    /** job key -> the params schema object its run and repair tools share (updated in place). */
    this._params = new Map();
  }

  /** Every tool, by local name (`etl.run`). */
  tools() {
    if (this._tools !== null) return this._tools;
    const tools = new Map();
    const client = this._plugin.clientConfig().jobs ?? {};
    for (const key of this._plugin.jobKeys()) {
      const job = this._plugin.config.jobs?.[key] ?? {};
      const params = paramsSchema(job, client[key]?.params);
      this._params.set(key, params);
      for (const [verb, spec] of jobTools(key, job, params)) {
        const local = `${key}.${verb}`;
        const annotations = { effect: spec.effect, requiresUserContext: true };
        if (spec.idempotent !== undefined) annotations.idempotent = spec.idempotent;
        tools.set(local, {
          key,
          verb,
          autoInheritable: spec.effect === READ,
          def: { name: local, description: spec.description, parameters: spec.parameters, annotations },
          run: spec.run,
        });
      }
    }
    this._tools = tools;
    return tools;
  }

  /** AgentToolDefinition[] (local names). */
  definitions() {
    return [...this.tools().values()].map((t) => ({ ...t.def }));
  }

  /**
   * AppKit's toolkit record: `${prefix ?? pluginName + "."}${localName}` (or `rename[localName]`)
   * -> `{ __toolkitRef: true, pluginName, localName, def, annotations, autoInheritable }`;
   * `only` / `except` name local names.
   */
  toolkit(pluginName, opts = {}) {
    const options = opts ?? {};
    const tools = this.tools();
    for (const list of [options.only, options.except]) {
      for (const name of Array.isArray(list) ? list : []) {
        if (!tools.has(name)) {
          this._logger.warn?.(`[jobs] toolkit: no tool "${clip(String(name), 100)}" (the tools: ${[...tools.keys()].join(", ") || "none, no job configured"})`);
        }
      }
    }
    const out = {};
    for (const [local, tool] of tools) {
      if (Array.isArray(options.only) && !options.only.includes(local)) continue;
      if (Array.isArray(options.except) && options.except.includes(local)) continue;
      const renamed = options.rename?.[local];
      const name = typeof renamed === "string" && renamed !== "" ? renamed : `${options.prefix ?? `${pluginName}.`}${local}`;
      out[name] = {
        __toolkitRef: true,
        pluginName,
        localName: local,
        def: { ...tool.def, name },
        annotations: tool.def.annotations,
        autoInheritable: tool.autoInheritable,
      };
    }
    return out;
  }

  /**
   * Runs tool `local` with `args` through the handles of `exportsOf` (the plugin's `exports()`
   * callable: the service principal's, or the request user's under `asUser(req)`). Resolves to
   * the answer, or to `Invalid arguments for <local>: ...` (as AppKit's own tools answer
   * arguments a model got wrong); rejects with a JobsError whose message says what went wrong.
   */
  async execute(exportsOf, local, args, signal) {
    const tool = this.tools().get(local);
    if (tool === undefined) throw new JobsError(`Unknown tool: ${clip(String(local), 100)}`, { code: "UNKNOWN_TOOL", statusCode: 404 });
    const ctx = {
      key: tool.key,
      local,
      handle: exportsOf(tool.key),
      native: this._plugin._runtime.native,
      signal,
    };
    const input = args === undefined || args === null ? {} : args;
    try {
      if (!isPlainObject(input)) throw new InvalidArguments("expected an object of arguments");
      return await tool.run(ctx, input);
    } catch (error) {
      const out = failure(ctx, error);
      if (out instanceof InvalidArguments) return `Invalid arguments for ${local}: ${out.message}`;
      if (out.code === "INTERNAL_ERROR") {
        this._logger.error?.(`[jobs] agent tool ${local} failed: ${out.cause?.stack ?? out.cause}`);
        out.cause = undefined;
      }
      throw out;
    }
  }

  /** The jobs' definitions were read (loadClientConfig): their run and repair tools take their parameters. */
  schemasChanged() {
    if (this._tools === null) return;
    const client = this._plugin.clientConfig().jobs ?? {};
    for (const [key, params] of this._params) {
      if (!params.pending || !client[key]?.params) continue;
      const job = this._plugin.config.jobs?.[key] ?? {};
      const fresh = paramsSchema(job, client[key].params);
      // In place: an agent that took the toolkit before the definitions came holds these objects.
      for (const k of Object.keys(params.schema)) delete params.schema[k];
      Object.assign(params.schema, fresh.schema);
      const repairParams = this._tools.get(`${key}.repair`)?.def.parameters.properties.params;
      if (repairParams) {
        for (const k of Object.keys(repairParams)) delete repairParams[k];
        Object.assign(repairParams, fresh.schema, { description: "New parameters for the repaired tasks (default: the run's own)." });
      }
      params.pending = false;
    }
  }
}

module.exports = { JobsAgentTools };
