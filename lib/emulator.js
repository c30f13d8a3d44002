"use strict";
// The local Databricks Jobs API 2.2 emulator, from JavaScript.
//
//   const { startEmulator } = require("appkit-jobs");
//   const emu = await startEmulator({ timeScale: 50 });   // 127.0.0.1, free port
//   process.env.DATABRICKS_HOST = emu.url; process.env.DATABRICKS_TOKEN = emu.token;
//   ...
//   await emu.stop();
//
// The server runs on the addon's tokio runtime: it does not keep Node alive, so a test that
// forgets stop() still exits. All behaviour is in Rust (crates/emulator); this file
// only converts arguments.

const { native } = require("./native.js");

/** A run id as the core reads it (`string | number | bigint`); anything else as its text, which the core rejects. */
function idArg(runId) {
  const type = typeof runId;
  return type === "string" || type === "number" || type === "bigint" ? runId : String(runId);
}

function object(value, what) {
  if (value === null || typeof value !== "object") throw new TypeError(`${what} must be an object`);
  return value;
}

/** `DATABRICKS_JOB_<NAME>` for a job name: upper case, non-alphanumerics as `_`. */
function jobEnvName(name) {
  return "DATABRICKS_JOB_" + String(name).toUpperCase().replace(/[^A-Z0-9]+/g, "_").replace(/^_+|_+$/g, "");
}

class Emulator {
  #native;
  constructor(native) {
    this.#native = native;
    /** `http://127.0.0.1:PORT` */
    this.url = native.url;
    this.port = native.port;
    this.clientId = native.clientId;
    this.orgId = native.orgId;
  }
  /** The service principal's personal access token (a getter, so it is not printed with the object). */
  get token() {
    return this.#native.token;
  }
  /** OAuth M2M client secret (for `clientId`). */
  get clientSecret() {
    return this.#native.clientSecret;
  }
  /** Stops the server and frees the port. Idempotent. */
  stop() {
    return this.#native.stop();
  }
  /**
   * Fault for the next `times` (default 1) requests matching `path` (exact, or prefix ending with `*`):
   * `{ path, method?, status?, errorCode?, message?, retryAfter?, delayMs?, reset?, body?, contentType?, html?, times? }`.
   */
  injectFault(fault) {
    this.#native.injectFault(object(fault, "fault"));
  }
  clearFaults() {
    this.#native.clearFaults();
  }
  /** `[{ method, path, query, body, identity, status, fault }]`, oldest first. */
  requests() {
    return this.#native.requests();
  }
  clearRequests() {
    this.#native.clearRequests();
  }
  /** Forgets runs, requests, faults, idempotency tokens and OAuth tokens (jobs and users stay). */
  reset() {
    this.#native.reset();
  }
  /** Moves a run to a state at once (RUNNING, TERMINATING, ..., SUCCESS, FAILED, CANCELED, SKIPPED, INTERNAL_ERROR); returns it. */
  setRunState(runId, state) {
    return this.#native.setRunState(idArg(runId), String(state));
  }
  /** The run as runs/get renders it, or null. */
  getRun(runId) {
    return this.#native.getRun(idArg(runId)) ?? null;
  }
  /** `{ token, userName, permissions?: { [jobId]: "CAN_VIEW" | "CAN_MANAGE_RUN" | "CAN_MANAGE" | "IS_OWNER" }, defaultPermission? }` */
  addUser(user) {
    this.#native.addUser(object(user, "user"));
  }
  /** Adds or replaces a job (same shape as the `jobs` option). */
  addJob(job) {
    this.#native.addJob(object(job, "job"));
  }
  /** `[{ id, name, taskType, taskCount, parameters }]` */
  jobs() {
    return this.#native.jobs();
  }
  /** Virtual milliseconds per real millisecond from now on (0 freezes time). */
  setTimeScale(scale) {
    this.#native.setTimeScale(Number(scale));
  }
  /** Moves the virtual clock forward by `ms`. */
  advanceTime(ms) {
    this.#native.advanceTime(Number(ms));
  }
  setOAuthTokenTtl(seconds) {
    this.#native.setOauthTokenTtl(Math.max(0, Math.floor(Number(seconds))));
  }
  /** Every OAuth token issued so far answers 401 from now on. */
  expireOAuthTokens() {
    this.#native.expireOauthTokens();
  }
  /**
   * What `POST /api/2.0/postgres/credentials` hands out from now on: `{ password, endpoint?,
   * ttlSecs? }` (a new password, as after a rotation), or `null` for 404.
   */
  setLakebase(spec) {
    this.#native.setLakebase(spec ?? null);
  }
  /** Runs started by run-now since start or the last reset (seeded history not counted). */
  runCount() {
    return this.#native.runCount();
  }
  /**
   * Seeds completed past runs of a job (for expected-duration estimates): a count of successful
   * runs, or `[{ outcome?, durationMs?, queueMs?, agoMs? }]`, oldest first. Returns their run ids.
   * Forgotten by reset(); a job's own `history` option is seeded again.
   */
  seedHistory(jobId, history) {
    if (typeof history !== "number" && !Array.isArray(history)) {
      throw new TypeError("history must be a number of runs or an array of past runs");
    }
    return this.#native.seedHistory(Number(jobId), history);
  }
  /** Environment for a client of this emulator: host, token and one `DATABRICKS_JOB_<NAME>` per job. */
  env() {
    const env = { DATABRICKS_HOST: this.url, DATABRICKS_TOKEN: this.token };
    for (const job of this.jobs()) env[jobEnvName(job.name)] = String(job.id);
    return env;
  }
}
if (typeof Symbol.asyncDispose === "symbol") {
  Emulator.prototype[Symbol.asyncDispose] = function () {
    return this.stop();
  };
}

/**
 * Starts the emulator on 127.0.0.1.
 * @param {object} [options] `{ port, jobs, jobsFile, timeScale, token, servicePrincipalName, users, clientId,
 *   clientSecret, oauthTokenTtlSecs, orgId, firstRunId, requestLogLimit }`
 * @returns {Promise<Emulator>}
 */
async function startEmulator(options) {
  const emu = await native().startEmulator(options == null ? undefined : object(options, "options"));
  return new Emulator(emu);
}

exports.startEmulator = startEmulator;
exports.Emulator = Emulator;
exports.jobEnvName = jobEnvName;
