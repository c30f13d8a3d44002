// The emulator side of the tests: sample job ids, API paths, an emulator per test, the env
// that points a plugin at it, and its request log. Not a test file.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { startEmulator, createJobs } = require("appkit-jobs");

/** Sample jobs of the emulator (crates/emulator/src/config.rs). */
export const JOB = {
  etl: 1001, // notebook, SUCCESS
  report: 1002, // python_wheel, FAILED
  sql: 1003, // sql, TIMEDOUT
  wide: 1004, // 150 tasks
  mixed: 1009, // several tasks
  graph: 1010, // a task graph with a for-each task; fails at publish, its repair succeeds; 5 past runs
  chain: 1011, // extract -> transform -> load, SUCCESS; 5 past runs
};

export const API = {
  runNow: "/api/2.2/jobs/run-now",
  getRun: "/api/2.2/jobs/runs/get",
  listRuns: "/api/2.2/jobs/runs/list",
  getOutput: "/api/2.2/jobs/runs/get-output",
  cancel: "/api/2.2/jobs/runs/cancel",
  getJob: "/api/2.2/jobs/get",
  token: "/oidc/v1/token",
};

/** An emulator on 127.0.0.1:0 for the duration of `t`. Time is frozen unless `timeScale` is given. */
export async function emulator(t, options = {}) {
  const emu = await startEmulator({ timeScale: 0, ...options });
  t.after(() => emu.stop());
  return emu;
}

/** Host + PAT of `emu`, plus `DATABRICKS_JOB_<KEY>` for each `{ key: id }` of `jobs`. */
export function patEnv(emu, jobs = { etl: JOB.etl }) {
  return withJobs({ DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token }, jobs);
}

/** Host + OAuth M2M client of `emu` (no PAT), plus the jobs as in `patEnv`. */
export function oauthEnv(emu, jobs = { etl: JOB.etl }) {
  return withJobs({ DATABRICKS_HOST: emu.url, DATABRICKS_CLIENT_ID: emu.clientId, DATABRICKS_CLIENT_SECRET: emu.clientSecret }, jobs);
}

function withJobs(env, jobs) {
  for (const [key, id] of Object.entries(jobs)) env[`DATABRICKS_JOB_${key.toUpperCase()}`] = String(id);
  return env;
}

/** A standalone jobs callable; closed when `t` ends. */
export function jobsFor(t, config, env) {
  const api = createJobs(config, { env });
  t.after(() => api.close());
  return api;
}

/** Log entries whose path is exactly `path`. */
export function at(emu, path) {
  return emu.requests().filter((r) => r.path === path);
}

/** Log entries whose path ends with `suffix`. */
export function requestsTo(emu, suffix) {
  return emu.requests().filter((r) => r.path.endsWith(suffix));
}
