// Shared helpers of the jobs*.test.mjs suites: an emulator per test, and the env that points
// createJobs at it. Each helper cleans up what it starts.
import { startEmulator } from "../index.js";

/** Sample jobs of the emulator (crates/core/src/emulator/config.rs). */
export const JOB = {
  etl: 1001, // notebook, SUCCESS
  report: 1002, // python_wheel, FAILED
  sql: 1003, // sql, TIMEDOUT
  wide: 1004, // 150 tasks
  mixed: 1009, // several tasks
};

/**
 * Starts an emulator for the duration of `t` (a node:test context) and returns it.
 * `options` are EmulatorOptions (timeScale defaults to 200: a sample run lasts ~15 ms).
 */
export async function emulator(t, options = {}) {
  const emu = await startEmulator({ timeScale: 200, ...options });
  t.after(() => emu.stop());
  return emu;
}

/** Host + PAT of `emu`, plus `extra` (e.g. DATABRICKS_JOB_ETL). No job env unless given. */
export function envFor(emu, extra = {}) {
  return { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, ...extra };
}

/** The request log entries whose path ends with `suffix`. */
export function requestsTo(emu, suffix) {
  return emu.requests().filter((r) => r.path.endsWith(suffix));
}

/** The body of the last run-now request. */
export function lastRunNowBody(emu) {
  const posts = requestsTo(emu, "/jobs/run-now");
  return posts.at(-1)?.body;
}
