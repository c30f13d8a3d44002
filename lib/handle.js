"use strict";
// The JobHandle: what `app.jobs("etl")` returns. Every method but the waits (runAndWait,
// watchRun, repairAndWait) resolves
// to ExecutionResult (`{ ok: true, data }` or `{ ok: false, status, message }`, message = HTTP
// status text); caller and configuration mistakes reject (the core marks them `reject`).
const { ValidationError, statusText, errorFromOutcome } = require("./errors.js");
const { asksForNothing } = require("./schema.js");

/** JSON text with bigints as their decimal text (exact; job parameters are strings anyway). */
function toJson(value) {
  return JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
}

/**
 * The params of `key` as JSON text, or a ValidationError naming the first value JSON cannot
 * carry: JSON.stringify would throw on a cycle and silently drop functions and symbols or turn
 * NaN into null, sending something else than what the caller gave.
 */
function paramsJson(key, params) {
  if (params === undefined) return null;
  checkSendable(key, params);
  return toJson(params);
}

/** Throws the ValidationError of `paramsJson` when JSON cannot carry `params` as given. */
function checkSendable(key, params) {
  const problem = unsendable(params, "params", new Set());
  if (problem) throw new ValidationError(`Parameter validation failed for job "${key}": ${problem}`);
}

function unsendable(value, path, ancestors) {
  switch (typeof value) {
    case "function":
    case "symbol":
      return `${path} is a ${typeof value}, which cannot be sent`;
    case "number":
      return Number.isFinite(value) ? null : `${path} is ${value}, which cannot be sent as JSON`;
    case "object": {
      if (value === null || typeof value.toJSON === "function") return null;
      if (ancestors.has(value)) return `${path} refers back to itself (a circular structure cannot be sent)`;
      ancestors.add(value);
      try {
        for (const [k, v] of Object.entries(value)) {
          const inner = unsendable(v, Array.isArray(value) ? `${path}[${k}]` : `${path}.${k.replace(/[^A-Za-z0-9_-]/g, "").slice(0, 50)}`, ancestors);
          if (inner) return inner;
        }
        return null;
      } finally {
        ancestors.delete(value);
      }
    }
    default:
      return null;
  }
}

/**
 * Repair options as JSON text for the core: `{ rerunAllFailedTasks?, rerunTasks?,
 * rerunDependentTasks?, params? }`, params prepared (Standard Schema) and checked as for runNow.
 * The core checks the selection (exactly one of the two) before anything is sent.
 */
async function repairOptionsJson(rt, key, options, fromRequest) {
  if ((options === undefined || options === null) && fromRequest === undefined) return null;
  if (options !== undefined && options !== null && (typeof options !== "object" || Array.isArray(options))) {
    throw new ValidationError(`Parameter validation failed for job "${key}": repair options must be an object`);
  }
  const { rerunAllFailedTasks, rerunTasks, rerunDependentTasks } = options ?? {};
  // Params that ask for nothing (absent, null, {}) leave the run's own: no schema is asked.
  const params = asksForNothing(options?.params) ? undefined : await rt.prepareParams(key, options.params);
  if (params !== undefined) checkSendable(key, params);
  const by = startedByJson(options?.startedBy, fromRequest);
  return toJson({ rerunAllFailedTasks, rerunTasks, rerunDependentTasks, params, startedBy: by === null ? undefined : JSON.parse(by) });
}

/**
 * Who a write is recorded as starting (the ledger's `started_by`), as JSON text for the core:
 * the caller's `startedBy` option (`"alice@example.com"`, or `{ email, userId, userName }`), else
 * the person of `asUser(req)`'s request, else null (the core records the service principal).
 */
function startedByJson(option, fromRequest) {
  const who = option ?? fromRequest;
  if (who === undefined || who === null) return null;
  if (typeof who === "string") return JSON.stringify(who);
  if (typeof who !== "object" || Array.isArray(who)) {
    throw new ValidationError("startedBy must be a string or { email?, userId?, userName? }");
  }
  const text = (v) => (typeof v === "string" ? v : undefined);
  return JSON.stringify({ email: text(who.email), userId: text(who.userId ?? who.user_id), userName: text(who.userName ?? who.user_name) });
}

/** `(signal, options)` of a wait: `runAndWait(params, signal, options)` or `runAndWait(params, { signal, ...options })`. */
function waitArgs(signalOrOptions, options) {
  if (signalOrOptions != null && typeof signalOrOptions === "object" && !(typeof signalOrOptions.aborted === "boolean" && typeof signalOrOptions.addEventListener === "function")) {
    const { signal, ...rest } = signalOrOptions;
    return [signal, rest];
  }
  return [signalOrOptions, options ?? {}];
}

/** A run id as the core reads it (`string | number | bigint`); anything else as its text, which the core rejects. */
function idArg(runId) {
  const type = typeof runId;
  return type === "string" || type === "number" || type === "bigint" ? runId : String(runId);
}

/** `{ ok: true, data }` / `{ ok: false, status, message }`, or a rejection for caller mistakes. */
function toResult(outcome) {
  if (outcome.ok) return { ok: true, data: outcome.data ?? undefined };
  if (outcome.reject) throw errorFromOutcome(outcome);
  const status = outcome.status ?? 500;
  return { ok: false, status, message: statusText(status) };
}

/**
 * The JobHandle of `key`, run as the service principal, or as a user when `token` is given
 * (`callerId`: the user's opaque id for telemetry, never the token; `person`: who the request
 * names, `{ email, userId, userName }`, recorded as starting the runs it starts).
 */
function createHandle(rt, key, token, callerId, person) {
  const native = rt.native;
  const tok = token ?? null;
  const attributes = {
    "jobs.key": key,
    "execution.context": tok === null ? "service" : "user",
    "caller.id": tok === null ? "service_principal" : (callerId ?? "user"),
  };
  /** One native call, traced when an OpenTelemetry SDK is registered. */
  const traced = async (operation, call) => toResult(await rt.telemetry.traced(operation, attributes, call));
  /** runNow's send: one native call that finishes through the runtime's queue (`rt._call`). */
  const sendRunNow = (value, options) => {
    const by = startedByJson(options?.startedBy, person);
    return rt.telemetry
      .traced("runNow", attributes, () => {
        const json = paramsJson(key, value);
        return rt._call((id) => native.startRunNow(id, key, tok, json, by));
      })
      .then(toResult);
  };
  const api = {
    runNow(params, options) {
      // Params of a job with a JS schema are validated first (asynchronously); the others go
      // as given, with no await in between. Every failure is a rejection, never a throw.
      if (rt.hasJsSchema(key)) return rt.prepareParams(key, params).then((value) => sendRunNow(value, options));
      try {
        return sendRunNow(params, options);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    runAndWait(params, signalOrOptions, options) {
      const [signal, rest] = waitArgs(signalOrOptions, options);
      return rt._updates(async () => {
        const json = paramsJson(key, await rt.prepareParams(key, params));
        const by = startedByJson(rest.startedBy, person);
        // One native watch that triggers the run, then follows it: an abort while run-now is
        // in flight (or waiting to retry) drops it, nothing more is sent. Our own errors
        // (validation, missing id, configuration) keep their message; an upstream failure
        // reads "Failed to trigger job run: <status text>".
        return (id) => native.startAndWatch(id, key, tok, json, by);
      }, signal, { operation: "runAndWait", attributes });
    },
    watchRun(runId, signal) {
      const id = idArg(runId);
      return rt._updates(async () => (watchId) => native.watch(watchId, key, tok, id), signal, { operation: "watchRun", attributes });
    },
    async repairRun(runId, options) {
      const json = await repairOptionsJson(rt, key, options, person);
      return traced("repairRun", () => native.repairRun(key, tok, idArg(runId), json));
    },
    repairAndWait(runId, options, signal) {
      const id = idArg(runId);
      return rt._updates(async () => {
        const json = await repairOptionsJson(rt, key, options, person);
        // As runAndWait: an abort while the repair is in flight drops it, nothing more is sent.
        return (watchId) => native.startRepairAndWatch(watchId, key, tok, id, json);
      }, signal, { operation: "repairAndWait", attributes });
    },
    async lastRun() {
      return traced("lastRun", () => native.lastRun(key, tok));
    },
    async listRuns(options) {
      const limit = options?.limit;
      const n = limit == null ? null : Number(limit);
      const who = startedByFilter(options?.startedBy, person);
      return traced("listRuns", () => native.listRuns(key, tok, n == null || Number.isNaN(n) ? null : Math.trunc(n), who));
    },
    async getRun(runId) {
      return traced("getRun", () => native.getRun(key, tok, idArg(runId)));
    },
    async getRunOutput(runId) {
      return traced("getRunOutput", () => native.getRunOutput(key, tok, idArg(runId)));
    },
    async getJob() {
      return traced("getJob", () => native.getJob(key, tok));
    },
    async cancelRun(runId) {
      const outcome = await traced("cancelRun", () => native.cancelRun(key, tok, idArg(runId)));
      return outcome.ok ? { ok: true, data: undefined } : outcome;
    },
    asUser(req) {
      return createHandle(rt, key, rt.tokenFromRequest(req), rt.callerIdFromRequest(req), rt.personFromRequest(req));
    },
  };
  return api;
}

/**
 * `listRuns({ startedBy })` as the core matches it: a person (email, user id or user name), or
 * `"me"`: the person of `asUser(req)`'s request, else whoever the handle acts as (the core
 * resolves it: the service principal).
 */
function startedByFilter(option, person) {
  if (option === undefined || option === null) return null;
  if (option === "me") return person ? (person.email ?? person.userId ?? person.userName ?? "me") : "me";
  if (typeof option === "string") return option;
  if (typeof option === "object" && !Array.isArray(option)) {
    const key = option.email ?? option.userId ?? option.user_id ?? option.userName ?? option.user_name;
    if (typeof key === "string") return key;
  }
  throw new ValidationError('startedBy must be "me", a string, or { email?, userId?, userName? }');
}

module.exports = { createHandle, toJson };
