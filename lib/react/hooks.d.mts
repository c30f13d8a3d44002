// Types of appkit-jobs/react/hooks (and of the hooks re-exported by appkit-jobs/react).
import type { ReactElement, ReactNode } from "react";
import type { BaseRun, IJobsConfig, Id, JobConfig, JobsIn, JobsPluginData, ParamsOf, Run, RunChanges, RunProgress, TaskType } from "../../index.js";

// ---------------------------------------------------------------------------------------------
// Params typed from the server's config
// ---------------------------------------------------------------------------------------------

/**
 * The jobs of a server config, by key: `C` is the config given to `jobs(config)` (declare it in a
 * module both sides import, and import its type only: `import type { jobsConfig } from ...`), or
 * what `jobs(config)` returned. A config typed as `IJobsConfig` takes any key.
 */
export type ClientJobsOf<C> = C extends JobsPluginData<infer J> ? J : JobsIn<C>;

/** The job keys of a server config (`string` for an untyped one). */
export type JobKeyOf<C> = keyof ClientJobsOf<C> & string;

/**
 * The params of job `K`: the input type of its Zod / Standard Schema; a JSON Schema or no schema:
 * `Record<string, unknown>` (checked at run time by the server, and the form follows the schema).
 */
export type JobParamsOf<C, K extends string> = K extends keyof ClientJobsOf<C> ? ParamsOf<ClientJobsOf<C>[K]> : Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/** One job's client config (`clientConfig().jobs[key]`): its params as JSON Schema, its task type. */
export interface JobClientConfig {
  params: Record<string, unknown> | null;
  taskType: TaskType | null;
}

/** The plugin's client config (what AppKit's `usePluginClientConfig("jobs")` returns). */
export interface JobsClientConfig {
  jobs: Record<string, JobClientConfig>;
}

export interface JobsRequestOptions {
  /** Where the routes are (default "/api/jobs"; an absolute URL works too). */
  basePath?: string;
  /** The fetch to use (default: the global one, looked up at call time). */
  fetch?: typeof fetch;
}

export interface JobsProviderProps extends JobsRequestOptions {
  /** The client config for pages AppKit does not serve; AppKit's own is read otherwise. */
  config?: JobsClientConfig;
  children?: ReactNode;
}

/** Settings for the hooks and components below it. */
export declare function JobsProvider(props: JobsProviderProps): ReactElement;

// ---------------------------------------------------------------------------------------------
// useJob
// ---------------------------------------------------------------------------------------------

/**
 * `{ code, message }` of a failure: the server's for an HTTP error (a 400's `message` is the
 * server's own, e.g. `Parameter validation failed for job "etl": ...`, code VALIDATION_ERROR),
 * an `event: error`'s, or NETWORK_ERROR when nothing answered.
 */
export interface JobError {
  code: string;
  message: string;
  /** The HTTP status of an error answered before a stream opened. */
  status?: number;
  /** VALIDATION_ERROR: what the message says of each field it names, by field. */
  fields?: Record<string, string>;
}

/**
 * - `loading`: the mount read of the job's latest run;
 * - `idle`: nothing followed (a run may be shown: the latest one, ended);
 * - `starting` / `accepted`: a run or repair requested / accepted by the server, no state yet;
 * - `attaching`: re-attaching to a run already going;
 * - `following`: updates arriving;
 * - `reconnecting`: the connection dropped; resuming with `Last-Event-ID`.
 */
export type JobPhase = "loading" | "idle" | "starting" | "accepted" | "attaching" | "following" | "reconnecting";

export interface UseJobOptions extends JobsRequestOptions {
  /** Re-attach on mount to the job's run still going (default true). */
  attach?: boolean;
  /** Failed reconnects in a row (no event between them) before giving up (default 5). */
  maxRetries?: number;
  /** First back-off before a reconnect, doubled each time up to 8 s (default 500 ms). */
  retryDelayMs?: number;
}

/** What to run again: every failed task (the default), or `rerunTasks`. */
export interface JobRepairRequest<P = Record<string, unknown>> {
  /** The run to repair (default: the hook's run). */
  runId?: Id | string;
  rerunAllFailedTasks?: boolean;
  rerunTasks?: string[];
  rerunDependentTasks?: boolean;
  params?: P;
}

export interface UseJobResult<P = Record<string, unknown>> {
  jobKey: string;
  /** The job's client config, or null when none is known. */
  config: JobClientConfig | null;
  /** The run followed, or else the job's latest run (whoever started it), or null. */
  run: Run | null;
  /** The run's life cycle state. */
  status: string | null;
  /** The progress summary of the latest update (null before one, and for a run only read). */
  progress: RunProgress | null;
  /** What moved in the latest update. */
  changes: RunChanges | null;
  error: JobError | null;
  phase: JobPhase;
  /** A run or repair is being started or followed. */
  busy: boolean;
  /** `Date.now()` when `run` last changed. */
  updatedAt: number | null;
  /** Reconnects of the stream followed now. */
  reconnects: number;
  /**
   * Starts a run and follows it (`POST /:jobKey/run?stream=true`). Resolves when following ends
   * (the run's end, an error, unmount); never rejects: failures land in `error`.
   */
  start(params?: P): Promise<void>;
  /** Cancels the run (default: the one followed); its stream then follows it to CANCELED. */
  cancel(runId?: Id | string): Promise<void>;
  /** Repairs a run (default: every failed task of the hook's run) and follows it to its new end. */
  repair(options?: JobRepairRequest<P>): Promise<void>;
  /** Reads the job's latest run again, and re-attaches to it if it is still going. */
  refresh(): Promise<void>;
}

/**
 * One job's current run, followed live. Typed params: `useJob<typeof jobsConfig, "etl">("etl")`,
 * or `typedJobHooks<typeof jobsConfig>().useJob("etl")`.
 */
export declare function useJob<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>>(jobKey: K, options?: UseJobOptions): UseJobResult<JobParamsOf<C, K>>;

/** One job's client config (from a JobsProvider, else AppKit's page config), or null. */
export declare function useJobConfig(jobKey: string, options?: JobsRequestOptions): JobClientConfig | null;

// ---------------------------------------------------------------------------------------------
// useJobRuns
// ---------------------------------------------------------------------------------------------

export interface UseJobRunsOptions extends JobsRequestOptions {
  /** How many recent runs (default 10; the server clamps to 1..100). */
  limit?: number;
  /** Also refresh on this period (ms); off by default. */
  refreshIntervalMs?: number;
  /**
   * Only the runs a person started through the plugin: `"me"` (the page's user, as Databricks
   * Apps forwards it to the server), or an email, user id or user name.
   */
  startedBy?: "me" | (string & {});
}

export interface UseJobRunsResult {
  /** Newest first. */
  runs: BaseRun[];
  error: JobError | null;
  loading: boolean;
  refresh(): Promise<void>;
  /** Cancels one run, then refreshes. */
  cancel(runId: Id | string): Promise<void>;
  /** Repairs one run (every failed task by default) without following it, then refreshes. */
  repair(runId: Id | string, options?: Omit<JobRepairRequest, "runId">): Promise<void>;
}

/** The job's recent runs, refreshed when a run started, cancelled or repaired from this page moves or ends. */
export declare function useJobRuns<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>>(jobKey: K, options?: UseJobRunsOptions): UseJobRunsResult;

/** The hooks typed by a server config: `const { useJob } = typedJobHooks<typeof jobsConfig>()` (no runtime effect). */
export declare function typedJobHooks<C>(): {
  useJob<K extends JobKeyOf<C>>(jobKey: K, options?: UseJobOptions): UseJobResult<JobParamsOf<C, K>>;
  useJobRuns<K extends JobKeyOf<C>>(jobKey: K, options?: UseJobRunsOptions): UseJobRunsResult;
  useJobConfig(jobKey: JobKeyOf<C>, options?: JobsRequestOptions): JobClientConfig | null;
};

// ---------------------------------------------------------------------------------------------
// Helpers (pure)
// ---------------------------------------------------------------------------------------------

/** `state.life_cycle_state`, else the V2 `status.state`. */
export declare function lifeCycleState(run: BaseRun | { state?: unknown; status?: unknown } | null | undefined): string | null;
/** Whether a run (or task run) has ended. */
export declare function isTerminal(run: BaseRun | { state?: unknown; status?: unknown } | null | undefined): boolean;
/** The result (`result_state`, else the V2 termination code) and the state message. */
export declare function resultOf(run: BaseRun | null | undefined): { result: string | null; message: string };
/** An ended run a repair could run again (any result but SUCCESS and SKIPPED). */
export declare function isRepairable(run: BaseRun | null | undefined): boolean;
/** Who started a run through the plugin (user name, else email, else user id), "—" when nobody the ledger knows. */
export declare function startedByLabel(run: BaseRun | null | undefined): string;
/** Every field of `started_by` joined for a tooltip, "" when there is none. */
export declare function startedByTitle(run: BaseRun | null | undefined): string;

export interface TimelineBar {
  key: string;
  state: string;
  result: string;
  /** A task this repair did not run again (drawn faded). */
  kept: boolean;
  running: boolean;
  /** Place and length on the run's axis, in % of the track. */
  left: number;
  width: number;
  label: string;
  upstream: boolean;
  failed: boolean;
}

export interface TimelineModel {
  /** What the overall bar shows: never down within a run, 1 at the end. */
  fraction: number;
  /** The latest update's own `progress.fraction`. */
  rawFraction: number;
  /**
   * "3/8 tasks done · about 40 s left" (or "no history yet", "taking longer than usual", "FAILED after 12 s");
   * without the count for a run whose tasks are not known (one read from the runs list): "SUCCESS after 13 s".
   */
  eta: string;
  expectedMs: number | null;
  terminal: boolean;
  result: string | null;
  repairable: boolean;
  /** In graph order. */
  bars: TimelineBar[];
}

/** The timeline of a run at the instant `now` (`receivedAt`: when `progress` came, same clock). */
export declare function timelineModel(input: { run: Run; progress: RunProgress | null; receivedAt?: number; now?: number; floor?: number }): TimelineModel;

export interface FormField {
  name: string;
  label: string;
  description?: string;
  kind: "text" | "date" | "integer" | "number" | "boolean" | "enum";
  required: boolean;
  options?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  placeholder?: string;
}

/** The form fields of a params JSON Schema's properties. */
export declare function formFields(schema: Record<string, unknown> | null | undefined): FormField[];
/** The params a form's values stand for, typed by the schema (empty inputs left out). */
export declare function paramsFromValues(fields: FormField[], values: Record<string, string | boolean>): Record<string, unknown>;
/** The fields a validation message names, with what it says of each. */
export declare function fieldErrors(message: string): Record<string, string>;

export type { JobConfig };
