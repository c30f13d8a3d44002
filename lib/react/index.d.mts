// Types of appkit-jobs/react: the hooks (see hooks.d.mts) and the components.
import type { ButtonHTMLAttributes, ReactElement, ReactNode } from "react";
import type { IJobsConfig, Id } from "../../index.js";
import type { JobKeyOf, JobParamsOf, UseJobOptions, UseJobResult, UseJobRunsOptions, UseJobRunsResult } from "./hooks.mjs";

export * from "./hooks.mjs";

/** Either `job` (a useJob result shared with other components) or `jobKey` (the component calls useJob). */
export interface JobBinding<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>> {
  job?: UseJobResult<JobParamsOf<C, K>>;
  jobKey?: K;
  /** useJob's options when the component calls it. */
  jobOptions?: UseJobOptions;
}

export interface JobRunButtonProps<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>>
  extends JobBinding<C, K>,
    Omit<ButtonHTMLAttributes<HTMLButtonElement>, "onClick" | "children"> {
  /** The run's params, or a function giving them at click time. */
  params?: JobParamsOf<C, K> | (() => JobParamsOf<C, K>);
  /** The label (default "Run"); "Starting…", "Running…" while busy. */
  children?: ReactNode;
}

/** Starts a run; disabled while one goes on. */
export declare function JobRunButton<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>>(props: JobRunButtonProps<C, K>): ReactElement;

export interface JobParamsFormProps<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>> extends JobBinding<C, K> {
  /** The params JSON Schema (default: the job's client config). */
  schema?: Record<string, unknown> | null;
  submitLabel?: ReactNode;
  /** More buttons beside the submit button. */
  actions?: ReactNode;
  /** Replaces `job.start(params)` on submit. */
  onSubmit?: (params: Record<string, unknown> | undefined) => void;
}

/** A form from the params JSON Schema; the server's 400 shown at the fields it names, else at the form. */
export declare function JobParamsForm<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>>(props: JobParamsFormProps<C, K>): ReactElement;

export interface JobRunTimelineProps<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>> extends JobBinding<C, K> {
  /** Replaces `job.repair({ runId })` on the repair button. */
  onRepair?: (runId: Id) => void;
  /** How often bars grow between updates while the run goes on (default 250 ms). */
  tickMs?: number;
}

/**
 * The run's overall progress bar with its expected end, and one bar per task in graph order,
 * with a repair button once it failed (null without a run). Test ids: run-timeline,
 * run-progress (data-fraction), run-progress-fill, run-eta, task-bar (data-task, data-state,
 * data-result), timeline-repair.
 */
export declare function JobRunTimeline<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>>(props: JobRunTimelineProps<C, K>): ReactElement | null;

export interface JobRunsTableProps<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>> {
  /** A useJobRuns result to show; else the table calls useJobRuns(jobKey). */
  runs?: UseJobRunsResult;
  jobKey?: K;
  limit?: number;
  runsOptions?: UseJobRunsOptions;
  /** Replaces `runs.cancel(runId)`. */
  onCancel?: (runId: Id) => void;
  /** Replaces `runs.repair(runId)` (e.g. `(id) => job.repair({ runId: id })` to follow it live). */
  onRepair?: (runId: Id) => void;
  /** A row saying "No runs yet." when empty (default true). */
  showEmpty?: boolean;
}

/** Recent runs: state or result, start, who started it, duration; Cancel on active runs, Repair on failed ones. */
export declare function JobRunsTable<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>>(props: JobRunsTableProps<C, K>): ReactElement;

export interface JobPanelProps<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>> extends UseJobOptions {
  jobKey: K;
  title?: ReactNode;
  description?: ReactNode;
  /** Runs in the table (default 5). */
  limit?: number;
  className?: string;
}

/** The four together in a Card, sharing one useJob and one useJobRuns. */
export declare function JobPanel<C = IJobsConfig, K extends JobKeyOf<C> = JobKeyOf<C>>(props: JobPanelProps<C, K>): ReactElement;
