// Pure helpers of appkit-jobs/react: reading runs, the timeline's geometry, params forms from a
// JSON Schema, and the server's validation messages. No React and no DOM here, so the hooks, the
// components and Node tests share one implementation.

const TERMINAL = new Set(["TERMINATED", "SKIPPED", "INTERNAL_ERROR"]);

/** `state.life_cycle_state`, else the V2 `status.state`, else null. */
export function lifeCycleState(run) {
  return run?.state?.life_cycle_state ?? run?.status?.state ?? null;
}

/** Whether a run (or task run) is in a terminal state, by either state block. */
export function isTerminal(run) {
  const legacy = run?.state?.life_cycle_state;
  return Boolean((legacy && TERMINAL.has(legacy)) || run?.status?.state === "TERMINATED");
}

/** The run's result (`result_state`, else the V2 termination code) and its message. */
export function resultOf(run) {
  const result = run?.state?.result_state ?? run?.status?.termination_details?.code ?? null;
  const message = run?.state?.state_message || run?.status?.termination_details?.message || "";
  return { result, message };
}

/** Whether an ended run has tasks a repair could run again. */
export function isRepairable(run) {
  if (!run || !isTerminal(run)) return false;
  const { result } = resultOf(run);
  return result != null && result !== "SUCCESS" && result !== "SKIPPED";
}

/** The latest attempt of each task: the one the latest repair names, else the last listed. */
export function latestTasks(run) {
  const history = run?.repair_history ?? [];
  const named = new Set((history.at(-1)?.task_run_ids ?? []).map(String));
  const byKey = new Map();
  for (const task of run?.tasks ?? []) {
    const prev = byKey.get(task.task_key);
    const isNamed = named.has(String(task.run_id));
    if (!prev || isNamed || !prev.named) byKey.set(task.task_key, { task, named: isNamed });
  }
  return [...byKey.values()].map((v) => v.task);
}

/** Tasks in graph order: each after the tasks it depends on, otherwise as listed. */
export function graphOrder(tasks) {
  const byKey = new Map(tasks.map((t) => [t.task_key, t]));
  const placed = new Set();
  const out = [];
  const place = (task, path) => {
    if (placed.has(task.task_key) || path.has(task.task_key)) return;
    path.add(task.task_key);
    for (const dep of task.depends_on ?? []) if (byKey.has(dep.task_key)) place(byKey.get(dep.task_key), path);
    placed.add(task.task_key);
    out.push(task);
  };
  for (const task of tasks) place(task, new Set());
  return out;
}

/** "12 s", "3 min 5 s". */
export function formatSeconds(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** A run's duration as the runs table shows it ("" before it started). */
/**
 * Who started a run through the plugin, for a table cell: the user name, else the email, else
 * the user id; "—" for a run started elsewhere (`started_by: null`) or by an older server.
 */
export function startedByLabel(run) {
  const who = run?.started_by;
  if (!who) return "—";
  return who.user_name ?? who.email ?? who.user_id ?? "—";
}

/** Every field of `started_by`, for a tooltip ("" when there is none). */
export function startedByTitle(run) {
  const who = run?.started_by;
  if (!who) return "";
  return [who.email, who.user_name, who.user_id].filter(Boolean).join(" · ");
}

export function runDuration(run, now = Date.now()) {
  const start = run?.start_time;
  if (!start) return "";
  const end = run.end_time || (isTerminal(run) ? start : now);
  return formatSeconds(end - start);
}

const FAILED_RESULTS = new Set(["FAILED", "TIMEDOUT", "CANCELED", "UPSTREAM_FAILED", "UPSTREAM_CANCELED", "INTERNAL_ERROR"]);

/**
 * A progress summary for a run known without one (the latest run read from /status): counts
 * from its tasks, elapsed from its own times, no expected duration. A run read from the runs
 * list carries no `tasks` at all: its counts are null (unknown), not 0.
 */
function progressFromRun(run) {
  const known = Array.isArray(run?.tasks);
  const tasks = latestTasks(run);
  const done = tasks.filter((t) => isTerminal(t));
  const terminal = isTerminal(run);
  const elapsed = run?.start_time ? (run.end_time || run.start_time) - run.start_time : null;
  const count = (n) => (known ? n : null);
  return {
    tasksTotal: count(tasks.length),
    tasksDone: count(done.length),
    tasksFailed: count(done.filter((t) => FAILED_RESULTS.has(t.state?.result_state ?? "")).length),
    tasksRunning: count(tasks.filter((t) => ["PENDING", "RUNNING", "TERMINATING"].includes(lifeCycleState(t))).length),
    forEach: [],
    elapsedMs: terminal ? elapsed : null,
    expectedMs: null,
    taskExpectedMs: {},
    fraction: terminal ? 1 : tasks.length ? done.length / tasks.length : 0,
    since: "run",
  };
}

/**
 * Everything the timeline draws, at the instant `now` (ms, same clock as `receivedAt`):
 * `{ fraction, rawFraction, eta, expectedMs, terminal, result, repairable, bars }`. `eta` counts
 * tasks only when they are known (a run from the runs list has none to count). `floor` is
 * the fraction shown before for this run (the bar never goes back). Bars are in graph order,
 * placed by their own start and end on the run's axis (`left`, `width` in % of the track);
 * a task a repair did not run again is `kept` (drawn faded, before the axis).
 */
export function timelineModel({ run, progress, receivedAt = 0, now = receivedAt, floor = 0 }) {
  const p = progress ?? progressFromRun(run);
  const terminal = isTerminal(run);
  const repairStart = (run.repair_history ?? []).filter((h) => h.type === "REPAIR").at(-1)?.start_time;
  const origin = p.since === "repair" && repairStart ? repairStart : run.start_time || 0;
  const elapsed = p.elapsedMs == null ? null : terminal ? p.elapsedMs : p.elapsedMs + Math.max(0, now - receivedAt);
  const tasks = graphOrder(latestTasks(run));
  const ends = tasks.map((t) => (t.end_time > 0 ? t.end_time - origin : 0));
  const span = Math.max(p.expectedMs ?? 0, elapsed ?? 0, ...ends, 1000);

  // The poll's fraction, moved on by the time since it came (never past 0.99 while active).
  let fraction = p.fraction;
  if (!terminal && p.expectedMs && elapsed != null) {
    fraction = Math.min(0.99, Math.max(fraction, fraction + (0.5 * (elapsed - p.elapsedMs)) / p.expectedMs));
  }
  fraction = terminal ? 1 : Math.max(floor, fraction);

  const { result } = resultOf(run);
  let when;
  if (terminal) when = `${result ?? lifeCycleState(run)} after ${formatSeconds(elapsed ?? 0)}`;
  else if (p.expectedMs == null) when = `${formatSeconds(elapsed ?? 0)} elapsed · no history yet`;
  else if (elapsed <= p.expectedMs) when = `about ${formatSeconds(p.expectedMs - elapsed)} left`;
  else when = `taking longer than usual (${formatSeconds(elapsed - p.expectedMs)} over)`;

  const iterations = new Map((p.forEach ?? []).map((f) => [f.taskKey, f]));
  const bars = tasks.map((task) => {
    const state = lifeCycleState(task) ?? "";
    const taskResult = task.state?.result_state ?? "";
    const kept = task.start_time > 0 && task.start_time < origin;
    const start = task.start_time > 0 && !kept ? task.start_time - origin : null;
    const running = !isTerminal(task) && start != null;
    const end = task.end_time > 0 ? task.end_time - origin : running ? elapsed : null;
    const placed = start != null && end != null;
    const each = iterations.get(task.task_key);
    const label = taskResult || state;
    return {
      key: task.task_key,
      state,
      result: taskResult,
      kept,
      running,
      left: placed ? (start / span) * 100 : 0,
      width: placed ? Math.max(0.8, ((end - start) / span) * 100) : 0,
      label: each?.total ? `${label} ${each.completed ?? 0}/${each.total}` : label,
      upstream: taskResult.startsWith("UPSTREAM"),
      failed: FAILED_RESULTS.has(taskResult) && !taskResult.startsWith("UPSTREAM"),
    };
  });
  return {
    fraction,
    rawFraction: p.fraction,
    // No count for a run whose tasks are not known (read from the runs list): "0/0" would be false.
    eta: p.tasksTotal == null ? when : `${p.tasksDone}/${p.tasksTotal} tasks done · ${when}`,
    expectedMs: p.expectedMs,
    terminal,
    result,
    repairable: isRepairable(run),
    bars,
  };
}

// ---------------------------------------------------------------- params forms

/** The form fields of a params JSON Schema: `[{ name, label, kind, required, ... }]`. */
export function formFields(schema) {
  const props = schema && typeof schema === "object" && schema.properties && typeof schema.properties === "object" ? schema.properties : {};
  const required = new Set(Array.isArray(schema?.required) ? schema.required : []);
  return Object.entries(props).map(([name, raw]) => {
    const prop = raw && typeof raw === "object" ? raw : {};
    const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
    let kind = "text";
    if (Array.isArray(prop.enum)) kind = "enum";
    else if (type === "boolean") kind = "boolean";
    else if (type === "integer" || type === "number") kind = type;
    else if (prop.format === "date") kind = "date";
    return {
      name,
      label: typeof prop.title === "string" ? prop.title : name,
      description: typeof prop.description === "string" ? prop.description : undefined,
      kind,
      required: required.has(name),
      options: kind === "enum" ? prop.enum : undefined,
      default: prop.default,
      minimum: typeof prop.minimum === "number" ? prop.minimum : undefined,
      maximum: typeof prop.maximum === "number" && Math.abs(prop.maximum) < 1e15 ? prop.maximum : undefined,
      placeholder: Array.isArray(prop.examples) && prop.examples.length ? String(prop.examples[0]) : undefined,
    };
  });
}

/** The initial values of a form: each field's default as the input holds it. */
export function initialValues(fields) {
  const values = {};
  for (const f of fields) {
    if (f.kind === "boolean") values[f.name] = f.default === true;
    else values[f.name] = f.default === undefined ? "" : String(f.default);
  }
  return values;
}

/**
 * The params a form's values stand for, typed by the schema: numbers for number and integer
 * fields (text that is not a number is sent as it is, for the server to name), enum values as
 * declared, booleans, and empty inputs left out.
 */
export function paramsFromValues(fields, values) {
  const params = {};
  for (const f of fields) {
    const raw = values[f.name];
    if (f.kind === "boolean") {
      params[f.name] = raw === true;
      continue;
    }
    if (raw === undefined || raw === "") continue;
    if (f.kind === "integer" || f.kind === "number") {
      const n = Number(raw);
      params[f.name] = Number.isNaN(n) ? raw : n;
    } else if (f.kind === "enum") {
      const match = f.options.find((o) => String(o) === raw);
      params[f.name] = match === undefined ? raw : match;
    } else {
      params[f.name] = raw;
    }
  }
  return params;
}

/**
 * The fields a validation message names, with what it says of each. Messages look like
 * `Parameter validation failed for job "etl": /n: value is less than ...; (root): "date" is a
 * required property` (JSON Schema) or `...: date: Invalid input ...` (Zod). Issues that name
 * no field are left to the form.
 */
export function fieldErrors(message) {
  const fields = {};
  if (typeof message !== "string") return fields;
  const colon = message.indexOf('": ');
  const body = message.startsWith("Parameter validation failed") && colon >= 0 ? message.slice(colon + 3) : message;
  for (const issue of body.split("; ")) {
    const sep = issue.indexOf(": ");
    if (sep <= 0) continue;
    const path = issue.slice(0, sep);
    const text = issue.slice(sep + 2);
    let name;
    if (path === "(root)") name = /^"([^"]+)" is a required property$/.exec(text)?.[1];
    else if (path.startsWith("/")) name = path.slice(1).split("/")[0];
    else if (/^[A-Za-z_$][\w$-]*(\.|\[|$)/.test(path)) name = path.split(/[.[]/)[0];
    if (name && !(name in fields)) fields[name] = path === "(root)" ? "required" : text;
  }
  return fields;
}
