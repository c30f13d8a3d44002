// Types of `appkit-jobs/http`: the /api/jobs routes for node:http and express, without AppKit.
// A browser app that reaches these types through appkit-jobs/react has no @types/node: the
// request and response types are then `any` instead of failing its type check.
// @ts-ignore
import type { IncomingMessage, ServerResponse } from "node:http";
import type { IJobsConfig, JobsExport, JobsPlugin, TaskType } from "../index";

/** The plugin config, plus this handler's own options. */
export interface JobsHandlerConfig extends IJobsConfig {
  /** Silence (ms) after which an SSE stream sends a `: heartbeat` comment (default 10000). */
  heartbeatMs?: number;
  /** Environment to read instead of process.env. */
  env?: Record<string, string | undefined>;
  /** Where setup() logs (default console). */
  logger?: { info?: (msg: string) => void; warn?: (msg: string) => void };
}

export interface JobsHandlerOptions {
  /** Where the routes live when the handler is not mounted by express (default "/api/jobs"). */
  basePath?: string;
}

export interface JobsHandler {
  (req: IncomingMessage & { body?: unknown }, res: ServerResponse, next?: (err?: unknown) => void): Promise<void>;
  /** The `(jobKey) => JobHandle` callable, as `AppKit.jobs`. */
  readonly jobs: JobsExport;
  /** `{ jobs: { <key>: { params: JSON Schema | null, taskType: string | null } } }`. */
  clientConfig(): { jobs: Record<string, { params: Record<string, unknown> | null; taskType: TaskType | null }> };
  /** `clientConfig()` after reading the parameters of jobs that take theirs from their definition (`jobParameters: true`, no schema). */
  loadClientConfig(): Promise<{ jobs: Record<string, { params: Record<string, unknown> | null; taskType: TaskType | null }> }>;
  /** The JobsPlugin instance behind the handler. */
  readonly plugin: JobsPlugin;
  /**
   * A shutdown: cuts every open stream of a run that has not ended (its client reconnects and
   * resumes elsewhere) and ends waits with SHUTTING_DOWN. Runs go on.
   */
  close(): void;
}

export function createJobsHandler(configOrPlugin?: JobsHandlerConfig | JobsPlugin, options?: JobsHandlerOptions): JobsHandler;
