// Public types of appkit-jobs (hand-written; the generated native types live in binding.d.ts).
// Names and shapes follow AppKit's jobs plugin so that code written against it type-checks here.

// ---------------------------------------------------------------------------------------------
// Results and errors
// ---------------------------------------------------------------------------------------------

/** What every JobHandle method but the waits (runAndWait, watchRun, repairAndWait) resolves to. `message` is HTTP status text. */
export type ExecutionResult<T> = { ok: true; data: T } | { ok: false; status: number; message: string };

/** Error raised by this package: stable `code`, HTTP `statusCode` (also as `status`), optional `cause`. */
export declare class JobsError extends Error {
  constructor(message: string, options?: { code?: string; statusCode?: number; cause?: unknown });
  readonly code: string;
  readonly statusCode: number;
  readonly status: number;
}

/** Params failed the job's schema; nothing was sent. `statusCode` 400, `code` "VALIDATION_ERROR". */
export declare class ValidationError extends JobsError {
  constructor(message: string, options?: { cause?: unknown; issues?: ReadonlyArray<StandardSchemaIssue> });
  readonly code: "VALIDATION_ERROR";
  readonly issues?: ReadonlyArray<StandardSchemaIssue>;
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/** Task types whose parameters are mapped to the matching run-now field. */
export type TaskType = "notebook" | "python_wheel" | "python_script" | "spark_jar" | "sql" | "dbt";

export interface StandardSchemaIssue {
  readonly message: string;
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }>;
}

/** Any Standard Schema (Zod 3.24+/4, Valibot, ArkType, ...): validated in JS with its own semantics. */
export interface StandardSchemaLike<Output = Record<string, unknown>> {
  readonly "~standard": {
    readonly version: 1;
    readonly vendor: string;
    /** Type-level only: what the schema takes and gives (the params type of its job). */
    readonly types?: { readonly input: unknown; readonly output: unknown } | undefined;
    readonly validate: (
      value: unknown,
    ) =>
      | { readonly value: Output; readonly issues?: undefined }
      | { readonly issues: ReadonlyArray<StandardSchemaIssue> }
      | Promise<{ readonly value: Output; readonly issues?: undefined } | { readonly issues: ReadonlyArray<StandardSchemaIssue> }>;
  };
}

/** A plain JSON Schema object (drafts 4 to 2020-12): validated in Rust. */
export type JsonSchema = { readonly [keyword: string]: unknown };

/** Per-job options. */
export interface JobConfig {
  /** Longest time (ms) runAndWait/watchRun wait for a terminal state. Default 600000. */
  waitTimeout?: number;
  /** How params map to the run-now request (see README). Without it params pass through as-is. */
  taskType?: TaskType;
  /** Schema the params must satisfy before anything is sent: a Standard Schema (Zod) or a JSON Schema object. */
  params?: StandardSchemaLike<Record<string, unknown>> | JsonSchema;
  /** Send params as job-level `job_parameters` (map of strings) instead of the task-type field. */
  jobParameters?: boolean;
  /** The Databricks job id (number, or a decimal string beyond 2^53); wins over the env var. */
  jobId?: number | string;
  /**
   * Called for each run of this job the app started or repaired, once it (or the repair) has
   * ended, with the run's final state: on one instance of the fleet, exactly once (at least once
   * when an instance dies inside the handler: `runId`/`repairId` is the key to tell). A handler
   * that throws is retried with back-off, at most 5 times. See the README's "Many instances".
   */
  onRunEnd?: (run: EndedRun, context: RunEndContext) => void | Promise<void>;
  /** What the job does, in a few words: agents read it in the job's tool descriptions ("Start a new run of the Databricks job "etl" (the nightly ETL)"). */
  description?: string;
}

/** A run as it ended: a terminal life cycle state. */
export type EndedRun = Run & {
  state?: RunState & { life_cycle_state?: "TERMINATED" | "SKIPPED" | "INTERNAL_ERROR" };
};

/** What `onRunEnd` is told besides the run. */
export interface RunEndContext {
  jobKey: string;
  runId: number;
  /** The repair that ended (absent for the run's own end). */
  repairId?: number;
  /** Who started the run (or the repair) through the plugin. */
  startedBy: StartedBy | null;
}

/** Options of the jobs plugin (and of `createJobs`). */
export interface IJobsConfig {
  /** Per-call timeout (ms) for the Jobs API; overrides the tier defaults (read 30 s, write 120 s). */
  timeout?: number;
  /** First poll interval (ms) of runAndWait; later polls back off from here. Default 5000. */
  pollIntervalMs?: number;
  /** Named jobs, merged over the ones discovered from DATABRICKS_JOB_<NAME>; explicit wins. */
  jobs?: Record<string, JobConfig>;
  /** Client-side limit of poll requests per second for the workspace. */
  maxRequestsPerSecond?: number;
  /**
   * How long (ms) runAndWait/watchRun/SSE polls ride out a workspace that cannot be reached
   * before the wait ends with UPSTREAM_UNAVAILABLE. Default 30000.
   */
  outageTimeout?: number;
  /**
   * Where the ledger lives (who started each run; the read cache shared by every instance).
   * Absent: PostgreSQL when the environment has Lakebase's settings (`PGHOST` and `PGDATABASE`,
   * with `LAKEBASE_ENDPOINT` or `PGPASSWORD`), else memory. `false`: memory. An object: that
   * PostgreSQL (fields not given fall back to PGHOST, PGPORT, ...). See the README's "Many instances".
   */
  ledger?: false | LedgerConfig;
  /** AppKit passes its own fields (name, telemetry, ...); they are accepted and ignored. */
  [other: string]: unknown;
}

/** A PostgreSQL for the ledger: a connection string, or its parts. */
export interface LedgerConfig {
  /** `postgresql://user:password@host:port/database?sslmode=require` (or key=value pairs). */
  connectionString?: string;
  host?: string;
  port?: number;
  database?: string;
  user?: string;
  password?: string;
  /** `require` (default; the certificate is verified), `prefer` or `disable`. */
  sslMode?: "disable" | "prefer" | "require" | "verify-ca" | "verify-full";
  /** A Lakebase endpoint (`projects/<p>/branches/<b>/endpoints/<e>`): the password is a credential minted for it. */
  endpoint?: string;
  /** How long a poll lease lasts (ms): see the README's "Many instances". */
  leaseMs?: number;
}

/**
 * Who started (or repaired) a run through the plugin: from the request's `X-Forwarded-Email`,
 * `X-Forwarded-User` and `X-Forwarded-Preferred-Username` (Databricks Apps sets them), or the
 * app's service principal for a call with no request. Display data, never identity.
 */
export interface StartedBy {
  email: string | null;
  user_id: string | null;
  user_name: string | null;
}

/** Who a call records as starting a run: an email (or a user name), or the three fields. */
export type StartedByOption = string | { email?: string; userId?: string; userName?: string };

/** What the ledger is doing (`jobs.ledgerStatus()`); never a credential. */
export interface LedgerStatus {
  store: "memory" | "postgres";
  /** The database answers (memory always does). */
  up: boolean;
  /** This instance hears the others (LISTEN). */
  listening: boolean;
  /** `host:port/database`. */
  database?: string | null;
  schemaVersion: number;
  credentials: "lakebase" | "password" | "none";
  credentialsMinted: number;
  operations: number;
  errors: number;
  lastError?: string | null;
  /** Starts waiting for the database to come back. */
  backlog: number;
  dropped: number;
  /** Starts this process remembers. */
  remembered: number;
  instance: string;
}

// ---------------------------------------------------------------------------------------------
// Params typed per job
// ---------------------------------------------------------------------------------------------

/** The params a Standard Schema takes (`StandardSchemaV1.InferInput`), else `Record<string, unknown>`. */
export type InferParams<S> = S extends { readonly "~standard": { readonly types?: infer T } }
  ? NonNullable<T> extends { readonly input: infer I }
    ? I
    : Record<string, unknown>
  : Record<string, unknown>;

/** The params of one job's config: its Standard Schema's input; a JSON Schema or no schema: `Record<string, unknown>`. */
export type ParamsOf<J> = J extends { readonly params: infer S } ? InferParams<S> : Record<string, unknown>;

/**
 * The jobs of a config, by key. A config whose `jobs` names keys checks them (list a key known
 * only from the environment as `{}`); one without `jobs`, or typed as `IJobsConfig`, takes any key.
 */
export type JobsIn<C> = C extends { readonly jobs?: infer J }
  ? [keyof NonNullable<J>] extends [never]
    ? Record<string, JobConfig>
    : NonNullable<J>
  : Record<string, JobConfig>;

/** `(jobKey) => JobHandle` with each configured key's params typed. */
export type TypedJobsExport<J> = <K extends keyof J & string>(jobKey: K) => JobHandle<ParamsOf<J[K]>>;

/**
 * The typed exports for a config: `const app = await createApp(...)` already infers them from an
 * inline `jobs({...})`; for a config declared elsewhere, `app.jobs as JobsOf<typeof config>`.
 */
export type JobsOf<C> = TypedJobsExport<JobsIn<C>>;

/** `app.jobs` (or any JobsExport) seen with the params types of `config` (no runtime effect). */
export declare function typedJobs<C extends IJobsConfig>(exports: JobsExport, config: C): JobsOf<C>;

// ---------------------------------------------------------------------------------------------
// Jobs API 2.2 shapes (the fields this package and its users rely on; more may be present).
// Integer ids above Number.MAX_SAFE_INTEGER arrive as `bigint` so no precision is lost.
// ---------------------------------------------------------------------------------------------

export type RunLifeCycleState =
  | "QUEUED"
  | "PENDING"
  | "RUNNING"
  | "TERMINATING"
  | "TERMINATED"
  | "SKIPPED"
  | "INTERNAL_ERROR"
  | "BLOCKED"
  | "WAITING_FOR_RETRY"
  | (string & {});

export type RunResultState =
  | "SUCCESS"
  | "SUCCESS_WITH_FAILURES"
  | "FAILED"
  | "TIMEDOUT"
  | "CANCELED"
  | "MAXIMUM_CONCURRENT_RUNS_REACHED"
  | "EXCLUDED"
  | "UPSTREAM_CANCELED"
  | "UPSTREAM_FAILED"
  | "DISABLED"
  | (string & {});

export interface RunState {
  life_cycle_state?: RunLifeCycleState;
  result_state?: RunResultState;
  state_message?: string;
  user_cancelled_or_timedout?: boolean;
  queue_reason?: string;
}

export interface RunStatus {
  /** The V2 life cycle: QUEUED, PENDING, RUNNING, TERMINATING, TERMINATED, BLOCKED, WAITING. */
  state?: string;
  termination_details?: { code?: string; type?: string; message?: string };
  queue_details?: { code?: string; message?: string };
}

export interface RunTask {
  task_key: string;
  run_id?: number;
  attempt_number?: number;
  state?: RunState;
  status?: RunStatus;
  start_time?: number;
  end_time?: number;
  depends_on?: Array<{ task_key: string; outcome?: string }>;
  run_if?: string;
  for_each_task?: { inputs?: string; concurrency?: number; task?: unknown; stats?: { task_run_stats?: Record<string, number> } };
  run_page_url?: string;
  [field: string]: unknown;
}

export interface JobParameter {
  name?: string;
  value?: string;
  default?: string;
}

/** A run as listed by runs/list. */
export interface BaseRun {
  run_id?: number;
  job_id?: number;
  number_in_job?: number;
  attempt_number?: number;
  original_attempt_run_id?: number;
  run_name?: string;
  run_page_url?: string;
  run_type?: "JOB_RUN" | "WORKFLOW_RUN" | "SUBMIT_RUN" | (string & {});
  trigger?: string;
  creator_user_name?: string;
  start_time?: number;
  end_time?: number;
  setup_duration?: number;
  execution_duration?: number;
  cleanup_duration?: number;
  run_duration?: number;
  queue_duration?: number;
  state?: RunState;
  status?: RunStatus;
  tasks?: RunTask[];
  job_parameters?: JobParameter[];
  overriding_parameters?: Record<string, unknown>;
  has_more?: boolean;
  /** Who started it through the plugin (from the ledger); null for a run started elsewhere. */
  started_by?: StartedBy | null;
  [field: string]: unknown;
}

/** A run from runs/get (pages beyond 100 tasks already merged). */
export interface Run extends BaseRun {
  iterations?: RunTask[];
  next_page_token?: string;
}

/** Output of one task run. */
export interface TaskRunOutput {
  notebook_output?: { result?: string; truncated?: boolean };
  sql_output?: Record<string, unknown>;
  dbt_output?: Record<string, unknown>;
  run_job_output?: Record<string, unknown>;
  error?: string;
  error_trace?: string;
  info?: string;
  logs?: string;
  logs_truncated?: boolean;
  metadata?: Run;
  [field: string]: unknown;
}

/**
 * runs/get-output. For the parent run of a multi-task job (where the API itself answers 400),
 * `metadata` is the parent run and `tasks` holds each task's output, in the run's task order.
 */
export interface RunOutput extends TaskRunOutput {
  tasks?: Array<TaskRunOutput & { task_key: string; run_id: number }>;
}

export interface JobSettings {
  name?: string;
  tasks?: Array<{ task_key: string; [field: string]: unknown }>;
  job_clusters?: Array<Record<string, unknown>>;
  parameters?: Array<{ name: string; default: string }>;
  max_concurrent_runs?: number;
  timeout_seconds?: number;
  tags?: Record<string, string>;
  [field: string]: unknown;
}

export interface Job {
  job_id?: number;
  created_time?: number;
  creator_user_name?: string;
  run_as_user_name?: string;
  settings?: JobSettings;
  has_more?: boolean;
  next_page_token?: string;
  [field: string]: unknown;
}

export interface RunNowResponse {
  run_id?: number;
  number_in_job?: number;
}

// ---------------------------------------------------------------------------------------------
// The programmatic API
// ---------------------------------------------------------------------------------------------

/** A run or job id: a number, or a bigint for ids above Number.MAX_SAFE_INTEGER. */
export type Id = number | bigint;

/** One update of runAndWait/watchRun/repairAndWait. */
export interface JobRunStatus {
  /** `state.life_cycle_state`, else the V2 `status.state`. */
  status: string | undefined;
  /** Epoch ms of the poll that produced this update. */
  timestamp: number;
  run: Run;
  /** How far along the run is, and when it should end. */
  progress: RunProgress;
  /** What moved since the previous update of this run's poll. */
  changes: RunChanges;
}

/** A run's or task's state in `changes`: life cycle state and result (`attempt` for tasks). */
export interface RunChangeState {
  state: string | null;
  result: string | null;
  /** A task's `attempt_number` (retries count up). */
  attempt?: number;
}

/**
 * What moved since the previous update of the run's shared poll. An update comes whenever the
 * run's state changes, any task's state, result, attempt or for-each counts change, a repair
 * starts, or `progress.expectedMs` becomes known; never when nothing moved.
 */
export interface RunChanges {
  /** The run's own state or result moved (`from` is null on the poll's first update). */
  run?: { from: RunChangeState | null; to: RunChangeState };
  /** The tasks (their latest attempts) that moved, in task order; empty on the poll's first update. */
  tasks: Array<{ taskKey: string; from: RunChangeState | null; to: RunChangeState }>;
  /** A repair that started since the previous update. */
  repair?: { id: Id };
}

/** A for-each task's iterations (`for_each_task.stats.task_run_stats`). */
export interface ForEachProgress {
  taskKey: string;
  total: number | null;
  scheduled: number | null;
  active: number | null;
  completed: number | null;
  succeeded: number | null;
  failed: number | null;
}

/**
 * The progress summary of an update. Tasks are counted by their latest attempt (the task run
 * named by the latest `repair_history` entry, else the last one listed); a for-each task counts
 * as one task, its iterations are in `forEach`.
 */
export interface RunProgress {
  tasksTotal: number;
  /** In a terminal life cycle state, whatever the result (SKIPPED, EXCLUDED, UPSTREAM_* included). */
  tasksDone: number;
  /** Part of done: FAILED, TIMEDOUT, CANCELED, UPSTREAM_FAILED, UPSTREAM_CANCELED, or INTERNAL_ERROR. */
  tasksFailed: number;
  /** PENDING, RUNNING or TERMINATING. */
  tasksRunning: number;
  forEach: ForEachProgress[];
  /**
   * Ms since the run's `start_time` (queue time included), or since the latest repair's start
   * for a repaired run (`since: "repair"`), on the workspace's clock (the poll answer's `Date`).
   * null before the run has a start time.
   */
  elapsedMs: number | null;
  /**
   * The median duration (`end_time - start_time`, queue included) of the job's recent SUCCESS
   * runs; for a repair, the longest dependency chain of the re-run tasks' typical durations.
   * null without history. It may arrive on a later update than the first.
   */
  expectedMs: number | null;
  /** Per task key, the median duration of its successful task runs in that history. */
  taskExpectedMs: Record<string, number>;
  /**
   * An estimate in [0, 1]: never down within one iterator or stream, below 1 while the run is
   * active (at most 0.99), 1 at a terminal state. See the README ("Live progress").
   */
  fraction: number;
  /** What `elapsedMs` and `fraction` count from: the run, or its latest repair. */
  since: "run" | "repair";
}

/**
 * The data of an SSE event of the run and repair streams (`POST /:jobKey/run?stream=true`,
 * `POST /:jobKey/runs/:runId/repair?stream=true`, `GET /:jobKey/runs/:runId/stream`), as a page
 * parses it from `data:`. `connectSSE` passes every event to `onMessage`, `event: error` included.
 */
export type JobStreamEventData = JobStreamOpening | JobStreamUpdate | JobStreamFailure;

/**
 * The first event of a run or repair stream, sent before run-now or runs/repair: the request
 * passed every check, no state is known yet. Its SSE id resumes the stream on any instance:
 * `start:<idempotency token>` or `repair:<runId>:<latest repair before, 0 for none>`.
 */
export interface JobStreamOpening {
  status: null;
  timestamp: number;
  run: null;
  /** What the stream is about to start. Only the opening event has this field. */
  accepted: "run" | "repair";
}

/** A state of the run (SSE id `<runId>:<seq>`), with what moved and the progress summary. */
export interface JobStreamUpdate {
  /** `state.life_cycle_state`, else the V2 `status.state`. */
  status: string | null;
  /** Epoch ms of the poll that produced this update. */
  timestamp: number;
  run: Run;
  progress: RunProgress;
  changes: RunChanges;
}

/** An `event: error`: the stream's last event. `error` is our message or the HTTP status text. */
export interface JobStreamFailure {
  error: string;
  code: string;
}

/** A request seen by asUser: an express request, or any object with `headers` (case-insensitive). */
export type RequestLike =
  | { header(name: string): string | undefined }
  | { headers: Record<string, string | string[] | undefined> }
  | { headers: { get(name: string): string | null } };

/** What to run again in a repair: exactly one of `rerunAllFailedTasks: true` or `rerunTasks`. */
export interface RepairOptions<P = Record<string, unknown>> {
  /** Run every task whose latest run failed (failed, timed out, cancelled, upstream failed). */
  rerunAllFailedTasks?: boolean;
  /** Task keys to run again. */
  rerunTasks?: string[];
  /** Also run the tasks that depend on the chosen ones. */
  rerunDependentTasks?: boolean;
  /** Params for the repaired tasks, validated and mapped as for runNow; absent: the run's own. */
  params?: P;
  /** Who the ledger records as repairing; default: the request's person (`asUser`), else the service principal. */
  startedBy?: StartedByOption;
}

/** Options of runNow and runAndWait. */
export interface StartOptions {
  /** Who the ledger records as starting the run; default: the request's person (`asUser`), else the service principal. */
  startedBy?: StartedByOption;
}

export interface RepairRunResponse {
  /** The repair's id (`latest_repair_id` of the next repair; this package sends it for you). */
  repair_id: Id;
}

/** One update of repairAndWait: a run update, and the repair it follows. */
export interface JobRepairStatus extends JobRunStatus {
  repairId: Id;
}

/** The methods of one job. `P`: its params (typed from a Standard Schema in the config). */
export interface JobAPI<P = Record<string, unknown>> {
  /** Validate params, map them by task type and trigger the job (retried safely with an idempotency token). */
  runNow(params?: P, options?: StartOptions): Promise<ExecutionResult<RunNowResponse>>;
  /** Trigger, then yield updates until a terminal state; `break`, `return()` or `signal` stop at once. */
  runAndWait(params?: P, signal?: AbortSignal, options?: StartOptions): AsyncGenerator<JobRunStatus, void, unknown>;
  runAndWait(params: P | undefined, options: StartOptions & { signal?: AbortSignal }): AsyncGenerator<JobRunStatus, void, unknown>;
  /** Re-attach to a run of this job (e.g. after a restart) and yield its updates until it ends. */
  watchRun(runId: Id, signal?: AbortSignal): AsyncGenerator<JobRunStatus, void, unknown>;
  /**
   * Run the failed (or chosen) tasks of an ended run of this job again, inside the same run
   * (runs/repair with the run's latest repair id). Another job's run: 404, nothing sent.
   */
  repairRun(runId: Id, options: RepairOptions<P>): Promise<ExecutionResult<RepairRunResponse>>;
  /** repairRun, then yield the run's updates from the repair to its new end (stops as runAndWait does). */
  repairAndWait(runId: Id, options: RepairOptions<P>, signal?: AbortSignal): AsyncGenerator<JobRepairStatus, void, unknown>;
  /** The most recent run, or undefined when the job never ran. */
  lastRun(): Promise<ExecutionResult<BaseRun | undefined>>;
  /**
   * Newest first; `limit` is clamped to 1..100 (default 20). `startedBy`: only the runs that
   * person started through the plugin (matched on email, user id or user name; `"me"`: the
   * person of `asUser(req)`, else the service principal), read from the ledger.
   */
  listRuns(options?: { limit?: number; startedBy?: "me" | StartedByOption }): Promise<ExecutionResult<BaseRun[]>>;
  getRun(runId: Id): Promise<ExecutionResult<Run>>;
  getRunOutput(runId: Id): Promise<ExecutionResult<RunOutput>>;
  cancelRun(runId: Id): Promise<ExecutionResult<void>>;
  getJob(): Promise<ExecutionResult<Job>>;
}

/** `app.jobs("etl")`: a JobAPI plus `asUser(req)` (runs with the request's x-forwarded-access-token). */
export type JobHandle<P = Record<string, unknown>> = JobAPI<P> & {
  asUser: (req: RequestLike) => JobAPI<P>;
};

/** The plugin's exports: selects a job by key; throws `Unknown job "<key>". Available jobs: ...`. */
export type JobsExport = (jobKey: string) => JobHandle;

/** What `createJobs` returns: the same callable (params typed per key), plus the job keys and `close()`. */
export interface StandaloneJobs<J = Record<string, JobConfig>> extends TypedJobsExport<J> {
  /** Every job key, discovered from the environment and configured. */
  readonly keys: readonly string[];
  /** Ends every wait started through this instance with a JobsError of code SHUTTING_DOWN (runs go on). */
  close(): void;
  /** What the ledger is doing: its store, whether its database answers, its counters. */
  ledgerStatus(): LedgerStatus;
}

export interface CreateJobsOptions {
  /** Environment to read DATABRICKS_* from; defaults to process.env. */
  env?: Record<string, string | undefined>;
}

/** A resource the plugin needs (AppKit's resource requirement shape). */
export interface JobsResourceRequirement {
  type: "job";
  alias: string;
  resourceKey: string;
  description: string;
  permission: "CAN_MANAGE_RUN";
  fields: { id: { env: string; description: string } };
  required: boolean;
}

/**
 * The AppKit plugin class (duck-typed by `createApp`): routes under `/api/jobs`, `exports()` is
 * the `(jobKey) => JobHandle` callable, `clientConfig()` describes the jobs to the browser.
 */
export declare class JobsPlugin<J = Record<string, JobConfig>> {
  static manifest: {
    name: "jobs";
    displayName: string;
    description: string;
    resources: { required: Omit<JobsResourceRequirement, "required">[]; optional: Omit<JobsResourceRequirement, "required">[] };
    config?: { schema: { type: "object"; properties: Record<string, { type: "number" | "object"; default?: number; description?: string }> } };
  };
  static phase?: "core" | "normal" | "deferred";
  static getResourceRequirements(config: IJobsConfig): JobsResourceRequirement[];
  constructor(config: IJobsConfig);
  name: string;
  config: IJobsConfig;
  attachContext(deps?: { context?: unknown; telemetryConfig?: unknown }): void;
  setup(): Promise<void>;
  // express.Router (not imported: express is AppKit's dependency, not ours).
  injectRoutes(router: any): void;
  getEndpoints(): Record<string, string>;
  exports(): TypedJobsExport<J>;
  clientConfig(): { jobs: Record<string, { params: Record<string, unknown> | null; taskType: TaskType | null }> };
  /** clientConfig() after reading the parameters of jobs that take theirs from their own definition. */
  loadClientConfig(): Promise<{ jobs: Record<string, { params: Record<string, unknown> | null; taskType: TaskType | null }> }>;
  /** The plugin seen as the request's user: its exports run with the user's token. */
  asUser(req: RequestLike): JobsPlugin<J>;
  /**
   * A shutdown (AppKit calls it on SIGTERM): open streams of runs that have not ended are cut
   * (connection destroyed) so that their clients reconnect elsewhere and resume; waits end with
   * a JobsError of code SHUTTING_DOWN. Runs go on.
   */
  abortActiveOperations(): void;
  /** AppKit's ToolProvider: every job's agent tools, by local name (`etl.status`, `etl.run`, ...). */
  getAgentTools(): JobsAgentToolDefinition[];
  /**
   * Runs agent tool `name` (a local name). AppKit's agents call it through `asUser(req)`, so it
   * runs as the chat's user. Resolves to the tool's answer (see the README's "Agent tools"), or to
   * `Invalid arguments for <name>: ...`; rejects with a JobsError whose message says what went wrong.
   */
  executeAgentTool(name: string, args: unknown, signal?: AbortSignal): Promise<unknown>;
  /** The tools as AppKit's toolkit record: `plugins.jobs.toolkit({ only, except, prefix, rename })`. */
  toolkit(opts?: JobsToolkitOptions<JobToolName<J>>): Record<string, JobsToolkitEntry<JobToolName<J>>>;
}

// ---------------------------------------------------------------------------------------------
// Agent tools (AppKit's agents: `plugins.jobs.toolkit()`, `plugin:jobs` in a markdown agent)
// ---------------------------------------------------------------------------------------------

/** The tools of each job: `<jobKey>.<verb>`. */
export type JobToolVerb = "status" | "listRuns" | "getRun" | "getRunOutput" | "wait" | "run" | "repair" | "cancel";

/** The local names of the tools of the jobs `J` (`etl.status`, `etl.run`, ...). */
export type JobToolName<J = Record<string, JobConfig>> = `${keyof J & string}.${JobToolVerb}`;

/**
 * What a tool does to the world (AppKit's `ToolEffect`): reads are `read`; `run` and `repair`
 * are `write`; `cancel` is `destructive`. AppKit's approval gate asks a person before every
 * call that is not a read.
 */
export type JobsToolEffect = "read" | "write" | "update" | "destructive";

export interface JobsToolAnnotations {
  effect: JobsToolEffect;
  /** The tool acts as the chat's user (AppKit runs it through `asUser(req)`). */
  requiresUserContext: true;
  /** Set on the writes: `run` and `repair` are not idempotent, `cancel` is. */
  idempotent?: boolean;
}

/** One tool as a model sees it (AppKit's `AgentToolDefinition`). `parameters` is a JSON Schema object. */
export interface JobsAgentToolDefinition {
  name: string;
  description: string;
  parameters: { type: "object"; properties?: Record<string, unknown>; required?: string[]; [keyword: string]: unknown };
  annotations: JobsToolAnnotations;
}

/** AppKit's `ToolkitOptions`: `only` / `except` / `rename` name local names (`etl.status`). */
export interface JobsToolkitOptions<Name extends string = string> {
  /** Prepended to each local name; default `"<plugin name>."` (`jobs.etl.status`); `""` drops it. */
  prefix?: string;
  only?: Name[];
  except?: Name[];
  /** Exact keys for some tools (wins over `prefix`). */
  rename?: Partial<Record<Name, string>>;
}

/** AppKit's `ToolkitEntry`: what `toolkit()` returns per key, for an agent's `tools` record. */
export interface JobsToolkitEntry<Name extends string = string> {
  readonly __toolkitRef: true;
  pluginName: string;
  localName: Name;
  def: JobsAgentToolDefinition;
  annotations: JobsToolAnnotations;
  /** Only the read tools may spread into agents that opt into `autoInheritTools`. */
  autoInheritable: boolean;
}

/** A run as a tool answers it (`status`, `getRun`, `wait`): small enough for a model (< 4 KB for 150 tasks). */
export interface JobsToolRunAnswer {
  job: string;
  runId: number | string;
  state: string | null;
  result: string | null;
  /** In a terminal state. */
  done: boolean;
  /** The run's state message, clipped. */
  message?: string;
  startedAt?: string;
  endedAt?: string;
  durationMs?: number;
  /** Who started it through the plugin (the ledger): an email, user name or id. */
  startedBy?: string;
  /** The run page. */
  url?: string;
  progress?: Pick<RunProgress, "tasksTotal" | "tasksDone" | "tasksFailed" | "tasksRunning" | "elapsedMs" | "expectedMs"> & {
    fraction: number | null;
    since?: "repair";
    forEach?: Array<{ taskKey: string; total: number | null; completed: number | null; failed: number | null }>;
  };
  /** `getRun` on a run of at most 25 tasks: each task's state and result. */
  tasks?: Array<{ task: string; state: string | null; result: string | null; message?: string }>;
  /** The failed tasks (latest attempts) by name, at most 10; `moreFailedTasks` counts the rest. */
  failedTasks?: string[];
  moreFailedTasks?: number;
  runningTasks?: string[];
  moreRunningTasks?: number;
}

/**
 * The AppKit plugin data returned by `jobs()`. Its class's instances carry `J`, so AppKit's
 * `createApp` types `app.jobs` with each configured job's params.
 */
export interface JobsPluginData<J = Record<string, JobConfig>> {
  plugin: typeof JobsPlugin & (new (config: IJobsConfig) => JobsPlugin<J>);
  config: IJobsConfig;
  name: "jobs";
}

/** AppKit plugin factory: `createApp({ plugins: [server(), jobs()] })`. */
export declare function jobs<C extends IJobsConfig = IJobsConfig>(config?: C): JobsPluginData<JobsIn<C>>;

/** Standalone use without AppKit: `createJobs(config)("etl").runNow()`, params typed per key. */
export declare function createJobs<C extends IJobsConfig = IJobsConfig>(config?: C, options?: CreateJobsOptions): StandaloneJobs<JobsIn<C>>;

// ---------------------------------------------------------------------------------------------
// The local Jobs API 2.2 emulator (emulator.js)
// ---------------------------------------------------------------------------------------------

/** A job the emulator serves (camelCase; every field but `id` optional). */
export interface EmulatorJobSpec {
  id: number;
  name?: string;
  taskType?: string;
  tasks?: EmulatorTaskSpec[];
  taskCount?: number;
  /**
   * How every run ends (tasks without their own outcome too). Without it, tasks succeed unless
   * they say otherwise and the run's result follows them: SUCCESS, SUCCESS_WITH_FAILURES when
   * only non-leaf tasks failed, else FAILED (or TIMEDOUT / CANCELED).
   */
  outcome?: string;
  /** How tasks run again by `runs/repair` end (default `"SUCCESS"`; a task's own `repairOutcome` wins). */
  repairOutcome?: string;
  queueMs?: number;
  /** Virtual ms each task spends in PENDING. */
  pendingMs?: number;
  /** Virtual ms each task spends in RUNNING, unless it says. */
  durationMs?: number;
  terminatingMs?: number;
  /** Failed attempts of each task before its last. */
  retries?: number;
  retryWaitMs?: number;
  parameters?: Array<{ name: string; default: string }>;
  output?: string;
  errorMessage?: string;
  /** Past runs to seed (again after each reset): a count of successful runs, or each run. */
  history?: number | EmulatorPastRun[];
}

/** A task of an emulated job; `dependsOn` and `runIf` make the job a graph. */
export interface EmulatorTaskSpec {
  taskKey: string;
  taskType?: string;
  /** Task keys this task waits for (no cycles). */
  dependsOn?: string[];
  /** Default `"ALL_SUCCESS"`. Unmet: UPSTREAM_FAILED, or EXCLUDED for the failure conditions. */
  runIf?: "ALL_SUCCESS" | "ALL_DONE" | "NONE_FAILED" | "AT_LEAST_ONE_SUCCESS" | "ALL_FAILED" | "AT_LEAST_ONE_FAILED";
  /** Virtual ms in RUNNING (default: the job's `durationMs`). */
  durationMs?: number;
  outcome?: string;
  /** How it ends when a repair runs it again (default: the job's `repairOutcome`). */
  repairOutcome?: string;
  output?: string;
  /** Makes it a for-each task; its nested task has this task's type. */
  forEach?: EmulatorForEach;
}

/** A for-each task's iterations: `inputs` or `count`, run `concurrency` (default 1) at a time. */
export interface EmulatorForEach {
  inputs?: unknown[];
  count?: number;
  concurrency?: number;
  /** Virtual ms in RUNNING per iteration (default: the task's duration). */
  iterationDurationMs?: number;
  /** Indexes of the iterations that fail (the task then fails). */
  failIterations?: number[];
}

/**
 * A completed past run. `outcome` (default: as the job's runs end) SUCCESS makes every task
 * succeed; `durationMs` is its `run_duration`; `agoMs` how long before now it started
 * (default: an hour apart, the newest an hour ago).
 */
export interface EmulatorPastRun {
  outcome?: string;
  durationMs?: number;
  queueMs?: number;
  agoMs?: number;
}

export interface EmulatorUserSpec {
  token: string;
  userName: string;
  permissions?: Record<string, "CAN_VIEW" | "CAN_MANAGE_RUN" | "CAN_MANAGE" | "IS_OWNER">;
  defaultPermission?: "CAN_VIEW" | "CAN_MANAGE_RUN" | "CAN_MANAGE" | "IS_OWNER";
}

export interface EmulatorOptions {
  port?: number;
  jobs?: EmulatorJobSpec[];
  jobsFile?: string;
  /** Virtual ms per real ms (default 1; 0 freezes time). */
  timeScale?: number;
  token?: string;
  servicePrincipalName?: string;
  users?: EmulatorUserSpec[];
  clientId?: string;
  clientSecret?: string;
  oauthTokenTtlSecs?: number;
  orgId?: string;
  firstRunId?: number;
  requestLogLimit?: number;
  /**
   * Lakebase's database credentials: `POST /api/2.0/postgres/credentials` answers
   * `{ token: password, expire_time }` (only for `endpoint`, when set), so an app's ledger
   * reaches a real PostgreSQL (a test's own) through the whole Lakebase path, offline.
   * Without it that endpoint answers 404.
   */
  lakebase?: EmulatorLakebaseSpec;
}

export interface EmulatorLakebaseSpec {
  /** The database password handed out as the credential's `token`. */
  password: string;
  /** `projects/<p>/branches/<b>/endpoints/<e>`: the only endpoint known, when set. */
  endpoint?: string;
  /** Lifetime of a credential in seconds (default 3600). */
  ttlSecs?: number;
}

/** A fault for the next `times` (default 1) requests matching `path`. */
export interface EmulatorFault {
  path: string;
  method?: string;
  status?: number;
  errorCode?: string;
  message?: string;
  retryAfter?: number;
  delayMs?: number;
  reset?: boolean;
  /** Carry the request out, then reset the connection: a write whose answer is lost. */
  loseResponse?: boolean;
  body?: string;
  contentType?: string;
  html?: boolean;
  times?: number;
}

/** One request the emulator answered (no headers, no secrets). */
export interface EmulatorRequest {
  method: string;
  path: string;
  query: string;
  body: unknown;
  /** "service_principal", "oauth:<client id>", "user:<user name>", or null. */
  identity: string | null;
  status: number;
  fault: boolean;
}

export interface Emulator {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  readonly token: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly orgId: string;
  stop(): Promise<void>;
  injectFault(fault: EmulatorFault): void;
  clearFaults(): void;
  requests(): EmulatorRequest[];
  clearRequests(): void;
  reset(): void;
  setRunState(runId: Id | string, state: string): Run;
  getRun(runId: Id | string): Run | null;
  addUser(user: EmulatorUserSpec): void;
  addJob(job: EmulatorJobSpec): void;
  jobs(): Array<{ id: number; name: string; taskType: string; taskCount: number; parameters: unknown }>;
  setTimeScale(scale: number): void;
  advanceTime(ms: number): void;
  setOAuthTokenTtl(seconds: number): void;
  expireOAuthTokens(): void;
  /** What `POST /api/2.0/postgres/credentials` hands out from now on (`null`: 404). */
  setLakebase(spec: EmulatorLakebaseSpec | null): void;
  /** Runs started by run-now since start or the last reset (seeded history not counted). */
  runCount(): number;
  /** Seeds completed past runs of a job; their run ids, oldest first. Forgotten by reset(). */
  seedHistory(jobId: number, history: number | EmulatorPastRun[]): number[];
  /** DATABRICKS_HOST, DATABRICKS_TOKEN and one DATABRICKS_JOB_<NAME> per job. */
  env(): Record<string, string>;
}

/** Starts the emulator on 127.0.0.1 (port 0: a free one). */
export declare function startEmulator(options?: EmulatorOptions): Promise<Emulator>;

/** The /api/jobs routes for node:http or express, without AppKit (also at "appkit-jobs/http"). */
export { createJobsHandler, JobsHandler, JobsHandlerOptions, JobsHandlerConfig } from "./lib/http";
