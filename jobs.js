"use strict";
/*
 * The JS layer over the native core: JobHandle and the standalone entry.
 *
 * Factory used by plugin.js (the AppKit plugin class) and by createJobs():
 *
 *   const { createJobsService } = require("./jobs.js");   // (alias: createJobsRuntime)
 *   const rt = createJobsService(config, { env });   // env defaults to process.env
 *
 *   rt.native            BindingJobs: the one native service of this plugin instance
 *                        (give it to `new BindingRouter(rt.native)`)
 *   rt.keys              string[]: every job key (discovered from env + configured)
 *   rt.config            the config as given (timeout, pollIntervalMs, jobs)
 *   rt.jobConfig(key)    the JobConfig as given for a key ({} for a discovered one)
 *   rt.exports           the callable `(jobKey) => JobHandle` (throws Unknown job "<key>"...),
 *                        built once; it also carries `.keys` and `.close()`
 *   rt.handle(key, token?)      a JobHandle (token: a user's access token, or undefined = service principal)
 *   rt.tokenFromRequest(req)    the user's x-forwarded-access-token, or undefined in development
 *                               (with a warning), else throws JobsError 401 UNAUTHENTICATED
 *   rt.prepareParams(key, params)  async: validates with the job's Standard Schema (Zod) if it has one
 *                               and returns the value to send (JSON Schema jobs are validated in Rust);
 *                               rejects with ValidationError
 *   rt.close()           cancels every watch started through this runtime
 *
 * Every JobHandle method except runAndWait/watchRun resolves to ExecutionResult:
 * `{ ok: true, data }` or `{ ok: false, status, message }` (message = HTTP status text).
 * Caller mistakes and configuration errors reject instead: ValidationError (400), JobsError with
 * code UNKNOWN_JOB / JOB_ID_MISSING / CONFIG_ERROR / INVALID_REQUEST.
 */
const { JobsError, ValidationError, statusText, errorFromOutcome } = require("./errors.js");

/** Codes that reject the call instead of resolving to `{ ok: false }`: the caller must fix something. */
const REJECT_CODES = new Set(["VALIDATION_ERROR", "UNKNOWN_JOB", "JOB_ID_MISSING", "CONFIG_ERROR", "INVALID_REQUEST"]);

let bindingCache;
function binding() {
  if (!bindingCache) bindingCache = require("./binding.js");
  return bindingCache;
}

function isStandardSchema(schema) {
  return schema != null && typeof schema === "object" && typeof schema["~standard"]?.validate === "function";
}

function isSafeParseSchema(schema) {
  return schema != null && typeof schema === "object" && typeof schema.safeParse === "function";
}

/** A string-only copy of an env object (process.env may hold undefined values). */
function stringEnv(env) {
  const out = {};
  for (const [k, v] of Object.entries(env ?? {})) if (typeof v === "string") out[k] = v;
  return out;
}

/** JSON-safe: bigint becomes a decimal string, functions/undefined are dropped. */
function toJson(value) {
  return JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
}

/** The config the Rust core reads: plain JSON, JS schemas replaced by `externalSchema: true`. */
function nativeConfig(config) {
  const out = {};
  for (const [k, v] of Object.entries(config)) {
    if (k === "jobs" || typeof v === "function" || v === undefined) continue;
    if (v !== null && typeof v === "object" && !Array.isArray(v) && Object.getPrototypeOf(v) !== Object.prototype) continue;
    out[k] = v;
  }
  if (config.jobs != null) {
    out.jobs = {};
    for (const [key, job] of Object.entries(config.jobs)) {
      const entry = {};
      for (const [k, v] of Object.entries(job ?? {})) {
        if (k === "params") continue;
        if (typeof v !== "function" && v !== undefined) entry[k] = v;
      }
      const schema = job?.params;
      if (isStandardSchema(schema) || isSafeParseSchema(schema)) entry.externalSchema = true;
      else if (schema != null) entry.params = schema;
      out.jobs[key] = entry;
    }
  }
  // A JSON round trip drops anything that is not JSON (class instances' methods, symbols, ...).
  return JSON.parse(toJson(out));
}

/** Accepts a run id as number, bigint or decimal string; returns its decimal string (i64 in Rust). */
function runIdArg(runId) {
  if (typeof runId === "bigint") {
    if (runId > 0n && runId <= 9223372036854775807n) return runId.toString();
  } else if (typeof runId === "number") {
    if (Number.isSafeInteger(runId) && runId > 0) return String(runId);
  } else if (typeof runId === "string" && /^[1-9][0-9]{0,18}$/.test(runId) && BigInt(runId) <= 9223372036854775807n) {
    return runId;
  }
  throw new JobsError(`Invalid run id ${typeof runId === "bigint" ? runId.toString() : JSON.stringify(runId) ?? String(runId)}: expected a positive integer (number or bigint)`, {
    code: "INVALID_REQUEST",
    statusCode: 400,
  });
}

/**
 * Schema issues as text that does not echo the caller's input (it reaches HTTP responses):
 * path segments keep only `[A-Za-z0-9_-]`, unknown keys are counted rather than listed,
 * control/bidi characters are dropped, and the whole is capped at 1,000 characters.
 */
function formatIssues(issues) {
  const printable = (s) => String(s).replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/g, "");
  const text = (issues ?? [])
    .map((issue) => {
      const path = (issue.path ?? [])
        .map((p) => (typeof p === "object" && p !== null ? p.key : p))
        .map((p) => String(p).replace(/[^A-Za-z0-9_-]/g, "").slice(0, 50))
        .join(".");
      const message =
        issue.code === "unrecognized_keys"
          ? `Unrecognized keys are not allowed (${Array.isArray(issue.keys) ? issue.keys.length : 1})`
          : printable(issue.message ?? "Invalid value").slice(0, 200);
      return path ? `${path}: ${message}` : message;
    })
    .join("; ");
  return text.length > 1000 ? `${text.slice(0, 997)}...` : text;
}

/** Header lookup on an express request, a `{ headers }` object (any case) or a fetch `Headers`. */
function headerOf(req, name) {
  if (req == null) return undefined;
  let value;
  if (typeof req.header === "function") value = req.header(name);
  if (value === undefined && req.headers != null) {
    const headers = req.headers;
    if (typeof headers.get === "function") value = headers.get(name) ?? undefined;
    else {
      const wanted = name.toLowerCase();
      for (const [k, v] of Object.entries(headers)) {
        if (k.toLowerCase() === wanted) {
          value = v;
          break;
        }
      }
    }
  }
  if (Array.isArray(value)) value = value[0];
  if (typeof value !== "string") return undefined;
  const trimmed = value.trim();
  return trimmed === "" ? undefined : trimmed;
}

class JobsRuntime {
  constructor(config = {}, options = {}) {
    if (config === null || typeof config !== "object") throw new TypeError("jobs config must be an object");
    this.config = config;
    const env = stringEnv(options.env ?? process.env);
    this.native = new (binding().BindingJobs)(nativeConfig(config), env);
    this.keys = this.native.keys();
    this._keySet = new Set(this.keys);
    // The service principal's handle of each key, made once: handles hold no state of their own.
    this._handles = new Map();
    // Watches being delivered to, by id: the native side pushes their events in batches and
    // wakes `_dispatch` once per batch (no promise, no threadsafe function per update).
    this._watches = new Map();
    this._lastWatchId = 0;
    // next() calls waiting across all watches, and a ref'd timer while there are any: a
    // pending next() keeps Node alive, as a pending native promise would.
    this._waiting = 0;
    this._keepAlive = null;
    this.native.deliverTo(wakeFor(new WeakRef(this)));
    this._warnedDevFallback = false;
    const select = (jobKey) => {
      this.assertKey(jobKey);
      return this.handle(jobKey, undefined);
    };
    Object.defineProperty(select, "keys", { value: this.keys.slice(), enumerable: true });
    Object.defineProperty(select, "close", { value: () => this.close(), enumerable: true });
    /** The callable `(jobKey) => JobHandle` (AppKit's `exports()` value). */
    this.exports = select;
  }

  jobConfig(key) {
    return this.config.jobs?.[key] ?? {};
  }

  /** Throws `Unknown job "<key>". Available jobs: ...` (message from the core's registry). */
  assertKey(key) {
    if (this._keySet.has(key)) return;
    const outcome = this.native.check(String(key));
    if (!outcome.ok) throw errorFromOutcome(outcome);
  }

  async prepareParams(key, params) {
    const schema = this.jobConfig(key).params;
    if (isStandardSchema(schema)) {
      const result = await schema["~standard"].validate(params ?? {});
      if (result.issues) {
        throw new ValidationError(`Parameter validation failed for job "${key}": ${formatIssues(result.issues)}`, {
          issues: result.issues,
        });
      }
      return result.value;
    }
    if (isSafeParseSchema(schema)) {
      const result = await schema.safeParse(params ?? {});
      if (!result.success) {
        throw new ValidationError(`Parameter validation failed for job "${key}": ${formatIssues(result.error?.issues) || "invalid parameters"}`, {
          issues: result.error?.issues,
        });
      }
      return result.data;
    }
    return params;
  }

  tokenFromRequest(req) {
    const token = headerOf(req, "x-forwarded-access-token");
    if (token !== undefined) return token;
    if (process.env.NODE_ENV === "development") {
      if (!this._warnedDevFallback) {
        this._warnedDevFallback = true;
        console.warn("[appkit-jobs] asUser(req) called without an x-forwarded-access-token header in development: running as the service principal");
      }
      return undefined;
    }
    throw new JobsError("asUser(req): the request carries no x-forwarded-access-token header, so it cannot run as the user", {
      code: "UNAUTHENTICATED",
      statusCode: 401,
    });
  }

  handle(key, token) {
    if (token !== undefined) return createHandle(this, key, token);
    let handle = this._handles.get(key);
    if (handle === undefined) {
      handle = createHandle(this, key, undefined);
      this._handles.set(key, handle);
    }
    return handle;
  }

  /** Updates of a run of `key`: `start(id)` starts native watch `id` and resolves to true, or to false when it started nothing. */
  _updates(start, signal) {
    return new RunUpdates(this, start, signal);
  }

  _dispatch() {
    for (const event of this.native.takeEvents()) this._watches.get(event.watch)?._receive(event);
  }

  _register(updates) {
    this._lastWatchId = (this._lastWatchId % 0xffff_ffff) + 1;
    this._watches.set(this._lastWatchId, updates);
    return this._lastWatchId;
  }

  _unregister(id) {
    this._watches.delete(id);
  }

  _hold() {
    if (this._waiting++ === 0) this._keepAlive = setInterval(noop, 1 << 30);
  }

  _release() {
    if (--this._waiting === 0) {
      clearInterval(this._keepAlive);
      this._keepAlive = null;
    }
  }

  close() {
    for (const updates of [...this._watches.values()]) updates.return();
  }
}

function noop() {}

/**
 * The native side's wake-up callback for `runtime`. It holds the runtime weakly, and is made
 * outside the constructor (whose closures share a context holding `this`): the native service
 * keeps this callback alive, so a strong reference would keep the runtime, and the service,
 * alive forever.
 */
function wakeFor(runtime) {
  return () => runtime.deref()?._dispatch();
}

const DONE = Object.freeze({ done: true, value: undefined });

/**
 * `{ status, timestamp, run }` for one update. The run comes as JSON text shared by every
 * watcher of the update (V8's parser beats building it key by key through N-API), or as a value
 * when it holds integers beyond 2^53 (those arrive as bigint). The text is parsed on first read of `run`:
 * a consumer that only looks at `status` never pays for it. `run` stays an own enumerable
 * property (spread, `JSON.stringify` and deep equality see it) and is writable.
 */
function runUpdate(update) {
  const value = { status: update.status ?? undefined, timestamp: update.timestamp, run: update.run };
  const text = update.runJson;
  if (typeof text === "string") {
    Object.defineProperty(value, RUN_TEXT, { value: text, writable: true });
    Object.defineProperty(value, "run", LAZY_RUN);
  }
  return value;
}

/** The run's JSON text of an update whose `run` is not parsed yet (not enumerable: spread and deep equality do not see it). */
const RUN_TEXT = Symbol("runText");

/**
 * One accessor pair shared by every update (per-update closures would cost each update its own
 * functions, context and hidden class): it reads the text from the update it is called on.
 */
const LAZY_RUN = {
  enumerable: true,
  configurable: true,
  get() {
    const run = JSON.parse(this[RUN_TEXT]);
    settleRun(this, run);
    return run;
  },
  set(run) {
    settleRun(this, run);
  },
};

function settleRun(update, run) {
  Object.defineProperty(update, "run", { value: run, writable: true, enumerable: true, configurable: true });
  update[RUN_TEXT] = undefined; // the text is no longer needed
}

/**
 * The iterators following each AbortSignal, under one "abort" listener per signal: an
 * EventTarget scans its listeners on every add and remove, so a listener per iterator would
 * make N iterators sharing one signal (an app-wide shutdown signal) cost O(N^2).
 */
const abortFollowers = new WeakMap();

function onAbort(signal, updates) {
  let followers = abortFollowers.get(signal);
  if (followers === undefined) {
    const set = new Set();
    const listener = () => {
      abortFollowers.delete(signal);
      for (const follower of set) follower._abort();
    };
    followers = { set, listener };
    abortFollowers.set(signal, followers);
    signal.addEventListener("abort", listener, { once: true });
  }
  followers.set.add(updates);
}

function offAbort(signal, updates) {
  const followers = abortFollowers.get(signal);
  if (followers === undefined || !followers.set.delete(updates) || followers.set.size > 0) return;
  // The last follower left: a long-lived signal keeps no listener of ours.
  abortFollowers.delete(signal);
  signal.removeEventListener("abort", followers.listener);
}

/**
 * The async iterator of runAndWait/watchRun (an AsyncGenerator look-alike). The first `next()`
 * starts the native watch; from then on its events (each update, then the end or an error)
 * are pushed here in order and handed to `next()` calls, first come first served. Unlike a
 * native async generator, `return()` does not wait behind a pending `next()`: it cancels the
 * native watch and resolves every pending `next()` with `{ done: true }` at once. An aborted
 * `signal` does the same. Errors (trigger failure, POLL_TIMEOUT, NOT_FOUND) reject `next()`
 * once; the iterator is then done.
 */
class RunUpdates {
  #rt;
  #start;
  #signal;
  #started = false;
  #done = false;
  /**
   * The id of this iterator's native watch and of its registration in the runtime, while the
   * watch goes on (started, neither ended nor cancelled); 0 otherwise.
   */
  #id = 0;
  /** Events delivered before a next() asked for them. */
  #events = [];
  /** next() calls waiting for an event: `{ resolve, reject }`. */
  #waiters = [];

  constructor(rt, start, signal) {
    this.#rt = rt;
    this.#start = start;
    this.#signal = signal ?? undefined;
    if (this.#signal) {
      if (this.#signal.aborted) this.#done = true;
      else onAbort(this.#signal, this);
    }
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  next() {
    if (this.#events.length > 0) {
      const event = this.#events.shift();
      return new Promise((resolve, reject) => this.#answer(event, resolve, reject));
    }
    if (this.#done) return Promise.resolve(DONE);
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      this.#rt._hold();
      if (!this.#started) this.#begin();
    });
  }

  async return(value) {
    this.#finish();
    return { done: true, value };
  }

  async throw(error) {
    this.#finish();
    throw error;
  }

  /** The signal aborted. */
  _abort() {
    this.#finish();
  }

  /** An event of the native watch (from the runtime's dispatch). */
  _receive(event) {
    if (this.#done) return;
    // The native watch is over: forget it now, so that an iterator nobody reads to its end is
    // not kept alive by the runtime.
    if (!event.update) this.#leave(false);
    if (this.#waiters.length === 0) {
      this.#events.push(event);
      return;
    }
    const waiter = this.#waiters.shift();
    this.#rt._release();
    this.#answer(event, waiter.resolve, waiter.reject);
  }

  async #begin() {
    this.#started = true;
    // Registered first: the native watch delivers its events under this id.
    const id = this.#rt._register(this);
    let started;
    try {
      started = await this.#start(id);
    } catch (error) {
      this.#rt._unregister(id);
      return this.#fail(error);
    }
    if (!started) {
      this.#rt._unregister(id);
      return this.#finish();
    }
    this.#id = id;
    if (this.#done) this.#leave(true); // return()/abort came while starting
  }

  /** Forgets the native watch, cancelling it first when it may still be going. */
  #leave(cancel) {
    if (this.#id === 0) return;
    if (cancel) this.#rt.native.cancelWatch(this.#id);
    this.#rt._unregister(this.#id);
    this.#id = 0;
  }

  /** Settles one next() with `event`; an error or the end finishes the iterator. */
  #answer(event, resolve, reject) {
    if (event.update) return resolve({ done: false, value: runUpdate(event) });
    this.#finish();
    if (event.error != null) reject(errorFromOutcome(event.error));
    else resolve(DONE);
  }

  /** Rejects the oldest waiting next() with `error` and finishes. */
  #fail(error) {
    const waiter = this.#waiters.shift();
    if (waiter) this.#rt._release();
    this.#finish();
    waiter?.reject(error);
  }

  #finish() {
    if (this.#done && this.#id === 0 && this.#waiters.length === 0) return;
    this.#done = true;
    this.#events.length = 0;
    if (this.#signal) offAbort(this.#signal, this);
    this.#leave(true);
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) {
      this.#rt._release();
      waiter.resolve(DONE);
    }
  }
}

if (typeof Symbol.asyncDispose === "symbol") {
  RunUpdates.prototype[Symbol.asyncDispose] = async function () {
    await this.return();
  };
}

/** `{ ok: true, data }` / `{ ok: false, status, message }`, or a rejection for caller mistakes. */
function toResult(outcome) {
  if (outcome.ok) return { ok: true, data: outcome.data ?? undefined };
  if (REJECT_CODES.has(outcome.code)) throw errorFromOutcome(outcome);
  const status = outcome.status ?? 500;
  return { ok: false, status, message: statusText(status) };
}

function createHandle(rt, key, token) {
  const native = rt.native;
  const tok = token ?? null;
  const api = {
    async runNow(params) {
      const value = await rt.prepareParams(key, params);
      return toResult(await native.runNow(key, tok, value === undefined ? null : toJson(value)));
    },
    runAndWait(params, signal) {
      return rt._updates(async (id) => {
        const value = await rt.prepareParams(key, params);
        if (signal?.aborted) return false; // aborted while validating: start nothing
        // One native watch that triggers the run on its first next(), then follows it: an
        // abort while run-now is in flight (or waiting to retry) drops it, nothing more is sent.
        // Our own errors (validation, missing id, configuration) keep their message; an
        // upstream failure reads "Failed to trigger job run: <status text>".
        native.startAndWatch(id, key, tok, value === undefined ? null : toJson(value));
        return true;
      }, signal);
    },
    watchRun(runId, signal) {
      const id = runIdArg(runId);
      return rt._updates(async (watchId) => {
        native.watch(watchId, key, tok, id, true);
        return true;
      }, signal);
    },
    async lastRun() {
      return toResult(await native.lastRun(key, tok));
    },
    async listRuns(options) {
      const limit = options?.limit;
      const n = limit == null ? null : Number(limit);
      return toResult(await native.listRuns(key, tok, n == null || Number.isNaN(n) ? null : Math.trunc(n)));
    },
    async getRun(runId) {
      return toResult(await native.getRun(key, tok, runIdArg(runId)));
    },
    async getRunOutput(runId) {
      return toResult(await native.getRunOutput(key, tok, runIdArg(runId)));
    },
    async getJob() {
      return toResult(await native.getJob(key, tok));
    },
    async cancelRun(runId) {
      const outcome = toResult(await native.cancelRun(key, tok, runIdArg(runId)));
      return outcome.ok ? { ok: true, data: undefined } : outcome;
    },
    asUser(req) {
      return createHandle(rt, key, rt.tokenFromRequest(req));
    },
  };
  return api;
}

function createJobsRuntime(config, options) {
  return new JobsRuntime(config ?? {}, options ?? {});
}

/**
 * Standalone entry (no AppKit): `const jobs = createJobs(config?, { env? })`, then
 * `jobs("etl").runNow(...)`. The callable also has `keys` (the job keys) and `close()`.
 */
function createJobs(config, options) {
  return createJobsRuntime(config, options).exports;
}

/**
 * Jobs as the Rust registry discovers them (`DATABRICKS_JOB_<NAME>`, the `DATABRICKS_JOB_ID`
 * default rule, explicit `config.jobs` merged over them), without building a service:
 * `[{ key, envVar, jobId }]` (`jobId` a decimal string, or null when none is valid).
 */
function discoverJobs(config = {}, env = process.env) {
  return binding().discoverJobs(nativeConfig(config ?? {}), stringEnv(env));
}

module.exports = {
  RunUpdates,
  discoverJobs,
  createJobsService: createJobsRuntime,
  createJobsRuntime,
  createJobs,
  JobsRuntime,
  headerOf,
  runIdArg,
  toResult,
  isStandardSchema,
};
