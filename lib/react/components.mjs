// The components of appkit-jobs/react, built from appkit-ui's own primitives so they look like
// the rest of an AppKit app. Layout of our own is inline styles over appkit-ui's theme
// variables (--primary, --success, --destructive, ...): an app's Tailwind build does not scan
// this package, so utility classes written here would not exist in its CSS.
import { createElement as h, useEffect, useId, useMemo, useRef, useState } from "react";
import {
  Alert,
  AlertDescription,
  Badge,
  Button,
  Card,
  CardAction,
  CardContent,
  CardDescription,
  CardHeader,
  CardTitle,
  Checkbox,
  Input,
  Label,
  Progress,
  Select,
  SelectContent,
  SelectItem,
  SelectTrigger,
  SelectValue,
  Table,
  TableBody,
  TableCell,
  TableHead,
  TableHeader,
  TableRow,
} from "@databricks/appkit-ui/react";
import { useJob, useJobRuns } from "./hooks.mjs";
import { formFields, initialValues, isRepairable, isTerminal, lifeCycleState, paramsFromValues, resultOf, runDuration, startedByLabel, startedByTitle, timelineModel } from "./model.mjs";

const muted = { color: "var(--muted-foreground)", fontSize: "0.75rem" };
const column = (gap) => ({ display: "grid", gap });
const row = (gap) => ({ display: "flex", flexWrap: "wrap", alignItems: "center", gap });

/** A component given `job` (a useJob result) uses it; given `jobKey` it calls useJob itself. */
function withJob(View, name) {
  function OwnJob({ jobOptions, ...props }) {
    const job = useJob(props.jobKey, jobOptions ?? {});
    return h(View, { ...props, job });
  }
  function WithJob(props) {
    return props.job ? h(View, props) : h(OwnJob, props);
  }
  WithJob.displayName = name;
  return WithJob;
}

function isActive(job) {
  return job.busy || (job.run != null && !isTerminal(job.run));
}

function busyLabel(job) {
  if (job.phase === "reconnecting") return "Reconnecting…";
  if (job.phase === "starting" || job.phase === "accepted") return "Starting…";
  return "Running…";
}

// ---------------------------------------------------------------- JobRunButton

function RunButtonView({ job, jobKey: _key, jobOptions: _options, params, children, ...rest }) {
  const active = isActive(job);
  return h(
    Button,
    {
      type: "button",
      "data-testid": "run-button",
      disabled: active,
      onClick: () => job.start(typeof params === "function" ? params() : params),
      ...rest,
    },
    active ? busyLabel(job) : (children ?? "Run"),
  );
}

/** Starts a run of the job (with `params`, or `params()` at click time); busy while one goes on. */
export const JobRunButton = withJob(RunButtonView, "JobRunButton");

// ---------------------------------------------------------------- JobParamsForm

const NONE = "__none__";

function Field({ field, id, value, error, onChange }) {
  const invalid = error ? true : undefined;
  const label = h(Label, { htmlFor: id }, field.label, field.required ? " *" : null);
  let input;
  if (field.kind === "boolean") {
    input = h(
      "div",
      { style: row(8) },
      h(Checkbox, { id, name: field.name, checked: value === true, "aria-invalid": invalid, onCheckedChange: (v) => onChange(v === true) }),
      label,
    );
  } else if (field.kind === "enum") {
    const items = field.options.map((o) => h(SelectItem, { key: String(o), value: String(o) }, String(o)));
    if (!field.required) items.unshift(h(SelectItem, { key: NONE, value: NONE }, "—"));
    input = h(
      Select,
      { name: field.name, value: value === "" ? NONE : value, onValueChange: (v) => onChange(v === NONE ? "" : v) },
      h(SelectTrigger, { id, "aria-invalid": invalid, style: { minWidth: "12rem" } }, h(SelectValue, { placeholder: "—" })),
      h(SelectContent, null, ...items),
    );
  } else {
    const type = field.kind === "integer" || field.kind === "number" ? "number" : field.kind === "date" ? "date" : "text";
    input = h(Input, {
      id,
      name: field.name,
      type,
      value,
      step: field.kind === "integer" ? "1" : field.kind === "number" ? "any" : undefined,
      min: field.minimum,
      max: field.maximum,
      placeholder: field.placeholder,
      "aria-invalid": invalid,
      onChange: (e) => onChange(e.target.value),
    });
  }
  return h(
    "div",
    { "data-field": field.name, style: column(6) },
    field.kind === "boolean" ? null : label,
    input,
    field.description ? h("span", { style: muted }, field.description) : null,
    error ? h("p", { "data-testid": "field-error", "data-field": field.name, role: "alert", style: { color: "var(--destructive)", fontSize: "0.8125rem", margin: 0 } }, error) : null,
  );
}

function ParamsFormView({ job, schema, submitLabel, actions, onSubmit }) {
  const idBase = useId();
  const fields = useMemo(() => formFields(schema ?? job.config?.params ?? null), [schema, job.config]);
  const [values, setValues] = useState(() => initialValues(fields));
  // A new schema (another job, a config read later) starts from its own defaults.
  const shape = fields.map((f) => `${f.name}:${f.kind}`).join(",");
  const last = useRef(shape);
  useEffect(() => {
    if (last.current !== shape) {
      last.current = shape;
      setValues(initialValues(fields));
    }
  }, [shape, fields]);

  // 400s are the form's: shown at the fields they name, else above the button.
  const error = job.error?.status === 400 ? job.error : null;
  const named = error?.fields ?? {};
  const atFields = fields.some((f) => named[f.name]);
  const active = isActive(job);
  const submit = (e) => {
    e.preventDefault();
    const params = fields.length > 0 ? paramsFromValues(fields, values) : undefined;
    if (onSubmit) onSubmit(params);
    else job.start(params);
  };
  const taskType = job.config?.taskType;
  return h(
    "form",
    { "data-testid": "params-form", noValidate: true, onSubmit: submit, style: column(12) },
    ...fields.map((field) =>
      h(Field, {
        key: field.name,
        field,
        id: `${idBase}-${field.name}`,
        value: values[field.name] ?? "",
        error: named[field.name],
        onChange: (v) => setValues((s) => ({ ...s, [field.name]: v })),
      }),
    ),
    fields.length === 0
      ? h("p", { style: { ...muted, margin: 0 } }, taskType ? "No params schema: the run starts with the job's defaults." : "This job takes no parameters.")
      : null,
    error && !atFields ? h(Alert, { variant: "destructive", "data-testid": "form-error" }, h(AlertDescription, null, error.message)) : null,
    h(
      "div",
      { style: row(8) },
      h(Button, { type: "submit", "data-testid": "run-button", disabled: active }, active ? busyLabel(job) : (submitLabel ?? "Run")),
      actions ?? null,
    ),
  );
}

/**
 * A form built from the job's params JSON Schema (the client config's, or `schema`); submitting
 * starts a run with the values typed by the schema. The server's 400 is shown at the fields it
 * names, or else above the button.
 */
export const JobParamsForm = withJob(ParamsFormView, "JobParamsForm");

// ---------------------------------------------------------------- JobRunTimeline

function barColor(bar) {
  if (bar.result === "SUCCESS") return "var(--success)";
  if (bar.failed) return "var(--destructive)";
  if (bar.result === "SKIPPED" || bar.result === "EXCLUDED" || bar.result === "DISABLED") return "var(--muted-foreground)";
  if (bar.state === "RUNNING" || bar.state === "TERMINATING") return "var(--primary)";
  if (bar.state === "PENDING" || bar.state === "QUEUED" || bar.state === "WAITING_FOR_RETRY") return "color-mix(in oklch, var(--primary) 40%, transparent)";
  return "var(--border)";
}

function badgeVariant(bar) {
  if (bar.failed) return "destructive";
  if (bar.result === "SUCCESS") return "secondary";
  if (bar.running) return "default";
  return "outline";
}

const UPSTREAM_TRACK = "repeating-linear-gradient(45deg, color-mix(in oklch, var(--destructive) 20%, transparent) 0 4px, transparent 4px 8px)";

function TimelineView({ job, onRepair, tickMs = 250 }) {
  const { run, progress } = job;
  const active = run != null && !isTerminal(run);
  const [now, setNow] = useState(() => Date.now());
  // Bars grow between updates: a tick while the run is active, none once it ended.
  useEffect(() => {
    if (!active) return undefined;
    const timer = setInterval(() => setNow(Date.now()), tickMs);
    return () => clearInterval(timer);
  }, [active, tickMs]);
  const floor = useRef({ key: null, value: 0 });
  const progressRef = useRef(null);
  const hasRun = run != null;
  useEffect(() => {
    progressRef.current?.querySelector('[data-slot="progress-indicator"]')?.setAttribute("data-testid", "run-progress-fill");
  }, [hasRun]);
  if (!run) return null;

  // The overall bar never goes back within one run (or one repair of it).
  const key = `${run.run_id}:${progress?.since ?? "run"}:${(run.repair_history ?? []).length}`;
  if (floor.current.key !== key) floor.current = { key, value: 0 };
  const model = timelineModel({ run, progress, receivedAt: job.updatedAt ?? now, now: Math.max(now, job.updatedAt ?? 0), floor: floor.current.value });
  floor.current.value = model.fraction;
  const percent = Math.round(model.fraction * 1000) / 10;

  return h(
    "div",
    { "data-testid": "run-timeline", "data-run-id": String(run.run_id ?? ""), style: column(10) },
    h(
      "div",
      { ref: progressRef, style: column(4) },
      h(Progress, { value: percent, "data-testid": "run-progress", "data-fraction": String(model.rawFraction), "aria-valuenow": Math.round(percent), "aria-label": "Run progress" }),
      h("span", { "data-testid": "run-eta", "data-expected": model.expectedMs == null ? "" : String(model.expectedMs), style: muted }, model.eta),
    ),
    h(
      "ol",
      { style: { listStyle: "none", margin: 0, padding: 0, display: "grid", gap: 4 } },
      ...model.bars.map((bar) =>
        h(
          "li",
          {
            key: bar.key,
            "data-testid": "task-bar",
            "data-task": bar.key,
            "data-state": bar.state,
            "data-result": bar.result,
            "data-kept": bar.kept ? "true" : undefined,
            style: { display: "grid", gridTemplateColumns: "minmax(6rem, 9rem) 1fr minmax(7rem, auto)", alignItems: "center", gap: 8, fontSize: "0.75rem", opacity: bar.kept ? 0.45 : 1 },
          },
          h("span", { title: bar.key, style: { overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap" } }, bar.key),
          h(
            "div",
            { style: { position: "relative", height: 12, borderRadius: 3, background: bar.upstream ? UPSTREAM_TRACK : "var(--muted)" } },
            h("div", {
              "data-testid": "task-bar-fill",
              style: { position: "absolute", top: 0, bottom: 0, left: `${bar.left.toFixed(2)}%`, width: `${bar.width.toFixed(2)}%`, borderRadius: 3, background: barColor(bar), transition: "width .25s linear" },
            }),
          ),
          h(Badge, { variant: badgeVariant(bar), style: bar.upstream ? { color: "var(--destructive)" } : undefined }, bar.label || "—"),
        ),
      ),
    ),
    model.terminal && model.repairable && !job.busy
      ? h(
          Button,
          { type: "button", variant: "outline", size: "sm", "data-testid": "timeline-repair", style: { justifySelf: "start" }, onClick: () => (onRepair ? onRepair(run.run_id) : job.repair({ runId: run.run_id })) },
          "Repair failed tasks",
        )
      : null,
  );
}

/**
 * The run as a live timeline: an overall progress bar with the expected end, then one bar per
 * task in graph order placed by its own start and end, growing while it runs, coloured by state
 * (failed and upstream-failed marked); a repair button once it failed.
 */
export const JobRunTimeline = withJob(TimelineView, "JobRunTimeline");

// ---------------------------------------------------------------- JobRunsTable

function RunsTableView({ runs: list, onCancel, onRepair, showEmpty = true }) {
  const rows = list.runs.map((run) => {
    const state = lifeCycleState(run) ?? "";
    const { result } = resultOf(run);
    const id = run.run_id;
    let action = null;
    if (!isTerminal(run)) {
      action = h(Button, { type: "button", size: "sm", variant: "outline", "data-testid": "runs-cancel", "data-run-id": String(id), onClick: () => (onCancel ? onCancel(id) : list.cancel(id)) }, "Cancel");
    } else if (isRepairable(run)) {
      action = h(Button, { type: "button", size: "sm", variant: "outline", "data-testid": "runs-repair", "data-run-id": String(id), onClick: () => (onRepair ? onRepair(id) : list.repair(id)) }, "Repair");
    }
    return h(
      TableRow,
      { key: String(id), "data-testid": "run-row", "data-run-id": String(id), "data-state": state },
      h(TableCell, null, run.run_page_url ? h("a", { href: run.run_page_url, target: "_blank", rel: "noopener noreferrer", style: { textDecoration: "underline" } }, `#${id}`) : `#${id}`),
      // An ended run shows its result, an active one its state.
      h(
        TableCell,
        { "data-testid": "run-result-cell" },
        h(Badge, { variant: runVariant(run) }, (isTerminal(run) ? result : state) || "—"),
      ),
      h(TableCell, null, run.start_time ? new Date(run.start_time).toLocaleTimeString() : ""),
      h(TableCell, { "data-testid": "run-started-by", title: startedByTitle(run) }, startedByLabel(run)),
      h(TableCell, null, runDuration(run)),
      h(TableCell, null, action),
    );
  });
  if (rows.length === 0 && showEmpty) {
    const text = list.error ? list.error.message : list.loading ? "Loading…" : "No runs yet.";
    rows.push(h(TableRow, { key: "empty" }, h(TableCell, { colSpan: 6, style: list.error ? { color: "var(--destructive)" } : muted }, text)));
  }
  return h(
    Table,
    { "data-testid": "runs-table" },
    h(TableHeader, null, h(TableRow, null, ...["Run", "State", "Started", "By", "Duration", ""].map((t, i) => h(TableHead, { key: i }, t)))),
    h(TableBody, null, ...rows),
  );
}

function OwnRuns({ runsOptions, limit, ...props }) {
  const runs = useJobRuns(props.jobKey, { ...(runsOptions ?? {}), ...(limit !== undefined ? { limit } : {}) });
  return h(RunsTableView, { ...props, runs });
}

/**
 * The job's recent runs with their state or result, start, who started it (`started_by`) and
 * duration; Cancel on active runs and Repair on failed ones (`onCancel` / `onRepair` take over,
 * e.g. to follow a repair live).
 */
export function JobRunsTable(props) {
  return props.runs ? h(RunsTableView, props) : h(OwnRuns, props);
}

// ---------------------------------------------------------------- JobPanel

/** The Badge variant of a run: active, succeeded, canceled or skipped, failed (none: outline). */
function runVariant(run) {
  if (!run) return "outline";
  if (!isTerminal(run)) return "default";
  const { result } = resultOf(run);
  if (result === "SUCCESS") return "secondary";
  return result === "CANCELED" || result === "SKIPPED" ? "outline" : "destructive";
}

function Message({ job }) {
  let text = null;
  let destructive = false;
  if (job.phase === "reconnecting") text = "Connection lost, resuming the same run…";
  else if (job.error && job.error.status !== 400) {
    text = job.error.message;
    destructive = true;
  }
  if (!text) return null;
  return h(Alert, { variant: destructive ? "destructive" : "default", "data-testid": "job-message", "data-code": job.error?.code ?? "" }, h(AlertDescription, null, text));
}

function Result({ run }) {
  if (!run || !isTerminal(run)) return null;
  const { result, message } = resultOf(run);
  return h(
    "p",
    { "data-testid": "run-result", "data-result": result ?? "", style: { margin: 0, fontSize: "0.875rem", fontWeight: 600, color: result === "SUCCESS" ? "var(--success)" : result === "CANCELED" ? "var(--muted-foreground)" : "var(--destructive)" } },
    `Result: ${result ?? lifeCycleState(run)}`,
    message ? ` — ${message}` : "",
    run.run_page_url ? " · " : "",
    run.run_page_url ? h("a", { href: run.run_page_url, target: "_blank", rel: "noopener noreferrer", "data-testid": "run-link", style: { textDecoration: "underline" } }, "open run page") : null,
  );
}

/**
 * Everything for one job in a Card: its params form and Run button, Cancel while a run goes
 * on, the live timeline with repair, and the recent runs. One useJob and one useJobRuns are
 * shared by all four.
 */
export function JobPanel({ jobKey, title, description, limit = 5, className, ...options }) {
  const job = useJob(jobKey, options);
  const runs = useJobRuns(jobKey, { ...options, limit });
  const active = isActive(job);
  const run = job.run;
  const cancel =
    run && !isTerminal(run)
      ? h(Button, { type: "button", variant: "outline", "data-testid": "cancel-button", onClick: () => job.cancel(run.run_id) }, "Cancel run")
      : null;
  return h(
    Card,
    { "data-testid": "job-panel", "data-job": jobKey, "data-phase": job.phase, "data-reconnects": String(job.reconnects), className },
    h(
      CardHeader,
      null,
      h(CardTitle, null, title ?? jobKey),
      h(CardDescription, null, description ?? (job.config?.taskType ? `task: ${job.config.taskType}` : "Databricks job")),
      h(
        CardAction,
        null,
        h(Badge, { variant: runVariant(job.run), "data-testid": "run-status", "data-status": job.status ?? "" }, run ? `${run.run_id != null ? `#${run.run_id} ` : ""}${job.status ?? "…"}` : active ? "STARTING" : "no runs"),
      ),
    ),
    h(
      CardContent,
      { style: column(16) },
      h(JobParamsForm, { job, actions: cancel }),
      h(Message, { job }),
      h(JobRunTimeline, { job }),
      h(Result, { run }),
      h(JobRunsTable, { runs, onCancel: (id) => job.cancel(id), onRepair: (id) => job.repair({ runId: id }) }),
    ),
  );
}
