"use strict";
/*
 * The runtime of one plugin instance: the native service (`BindingJobs`: connection pool,
 * cache, poller), the job keys, params preparation, the user token of a request, and the
 * delivery of native watch events to the iterators (`RunUpdates`) that wait for them.
 *
 *   const rt = createJobsRuntime(config, { env });   // env defaults to process.env
 *   rt.native            the BindingJobs (give it to `new BindingRouter(rt.native)`)
 *   rt.keys              every job key (discovered from env + configured)
 *   rt.exports           the callable `(jobKey) => JobHandle`, with `.keys` and `.close()`
 *   rt.handle(key, token?)      a JobHandle (token: a user's access token; none = service principal)
 *   rt.tokenFromRequest(req)    the user's x-forwarded-access-token (see tokenFromRequest)
 *   rt.personFromRequest(req)   who the request names (x-forwarded-email, -user, -preferred-username)
 *   rt.prepareParams(key, params)  params validated by the job's JS schema (Zod), if any
 *   rt.close()           ends every wait started through this runtime with a SHUTTING_DOWN error
 */
const { JobsError, errorFromOutcome } = require("./errors.js");
const { native } = require("./native.js");
const { createHandle, toJson } = require("./handle.js");
const { RunUpdates } = require("./updates.js");
const { isJsSchema, validateParams } = require("./schema.js");
const { Telemetry } = require("./telemetry.js");

/** A string-only copy of an env object (process.env may hold undefined values). */
function stringEnv(env) {
  const out = {};
  for (const [k, v] of Object.entries(env ?? {})) if (typeof v === "string") out[k] = v;
  return out;
}

/**
 * The config the Rust core reads: plain JSON, JS schemas replaced by `externalSchema: true`.
 * The core checks every option; only what JSON cannot carry is checked here (NaN and
 * Infinity would silently become null).
 */
function nativeConfig(config) {
  const out = plainFields(config, "", ["jobs"]);
  const jobs = config.jobs;
  if (jobs != null && typeof jobs === "object" && !Array.isArray(jobs)) {
    out.jobs = {};
    for (const [key, job] of Object.entries(jobs)) {
      if (job == null || typeof job !== "object") {
        out.jobs[key] = job; // the core names what is wrong with it
        continue;
      }
      const entry = plainFields(job, `jobs.${key}.`, ["params", "onRunEnd"]);
      if (isJsSchema(job.params)) entry.externalSchema = true;
      else if (job.params != null) entry.params = job.params;
      // The handler stays here (see runEndDispatcher); the core only learns there is one.
      if (typeof job.onRunEnd === "function") entry.onRunEnd = true;
      else if (job.onRunEnd != null) {
        throw new JobsError(`Invalid jobs config: jobs.${key}.onRunEnd must be a function`, { code: "CONFIG_ERROR", statusCode: 500 });
      }
      out.jobs[key] = entry;
    }
  } else if (jobs !== undefined) {
    out.jobs = jobs;
  }
  // A JSON round trip drops anything that is not JSON (class instances' methods, symbols, ...).
  return JSON.parse(toJson(out));
}

/** The fields of `object` JSON can carry (functions, undefined and class instances left out), but `skip`. */
function plainFields(object, path, skip) {
  const out = {};
  for (const [k, v] of Object.entries(object)) {
    if (skip.includes(k) || typeof v === "function" || v === undefined) continue;
    if (typeof v === "number" && !Number.isFinite(v)) {
      throw new JobsError(`Invalid jobs config: ${path}${k} must be a finite number, got ${v}`, { code: "CONFIG_ERROR", statusCode: 500 });
    }
    if (v !== null && typeof v === "object" && !Array.isArray(v) && Object.getPrototypeOf(v) !== Object.prototype) continue;
    out[k] = v;
  }
  return out;
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

/** Runs a native call that reads the config; its CONFIG_ERROR (naming the option) becomes a JobsError. */
function readingConfig(call) {
  try {
    return call();
  } catch (error) {
    if (error?.code === "CONFIG_ERROR") throw new JobsError(error.message, { code: "CONFIG_ERROR", statusCode: 500 });
    throw error;
  }
}

function createService(config, env) {
  return readingConfig(() => new (native().BindingJobs)(nativeConfig(config), env));
}

const warned = new Set();

/** Warns once per process about a config that works but is not what was asked for. */
function warnOnce(message) {
  if (warned.has(message)) return;
  warned.add(message);
  process.emitWarning(`[appkit-jobs] ${message}`, { code: "APPKIT_JOBS_CONFIG" });
}

class JobsRuntime {
  constructor(config = {}, options = {}) {
    if (config === null || typeof config !== "object") throw new TypeError("jobs config must be an object");
    this.config = config;
    const env = stringEnv(options.env ?? process.env);
    this.native = createService(config, env);
    for (const warning of this.native.warnings()) warnOnce(warning);
    this.telemetry = new Telemetry(this.native, { pluginName: config.name ?? "jobs", option: config.telemetry });
    this.keys = this.native.keys();
    this._keySet = new Set(this.keys);
    // The service principal's handle of each key, made once: handles hold no state of their own.
    this._handles = new Map();
    // Watches being delivered to, by id: the native side pushes their events in batches and
    // wakes `_dispatch` once per batch (no promise, no threadsafe function per update).
    this._watches = new Map();
    this._lastWatchId = 0;
    // next() calls waiting across all watches (see `_hold`).
    this._waiting = 0;
    this.native.deliverTo(weakWake(this, "_dispatch"));
    // One-shot calls out (`runNow`), by id: the native side finishes them through one queue
    // and wakes `_settle` at once (no promise or threadsafe function per call).
    this._calls = new Map();
    this._lastCallId = 0;
    this.native.deliverDoneTo(weakWake(this, "_settle"));
    // The jobs with a JS schema (their params are validated here, asynchronously).
    this._jsSchemaKeys = new Set(Object.entries(config.jobs ?? {}).filter(([, job]) => isJsSchema(job?.params)).map(([key]) => key));
    this._warnedDevFallback = false;
    this._logger = options.logger ?? console;
    const handlesRunEnds = Object.values(config.jobs ?? {}).some((job) => typeof job?.onRunEnd === "function");
    if (handlesRunEnds) this.native.onRunEnd(runEndDispatcher(config.jobs));
    if (handlesRunEnds || this.native.ledgerStatus().store === "postgres") watchLedgerLogs(this);
    const select = (jobKey) => {
      this.assertKey(jobKey);
      return this.handle(jobKey, undefined);
    };
    Object.defineProperty(select, "keys", { value: this.keys.slice(), enumerable: true });
    Object.defineProperty(select, "close", { value: () => this.close(), enumerable: true });
    Object.defineProperty(select, "ledgerStatus", { value: () => this.native.ledgerStatus(), enumerable: true });
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

  /** The params to send for `key`: validated by the job's JS schema if it has one (else as given). */
  prepareParams(key, params) {
    return validateParams(key, this.jobConfig(key).params, params);
  }

  /** Whether `key`'s params go through a JS schema (`prepareParams` then has work to do). */
  hasJsSchema(key) {
    return this._jsSchemaKeys.has(key);
  }

  /**
   * A one-shot native call: `start(id)` starts it, and its outcome arrives through `_settle`.
   * While it is out, the runtime is held (see `_hold`): nothing else roots the resolver.
   */
  _call(start) {
    return new Promise((resolve) => {
      this._lastCallId = nextId(this._lastCallId);
      const id = this._lastCallId;
      start(id);
      this._calls.set(id, resolve);
      this._hold();
    });
  }

  _settle() {
    // One JSON text for the batch, or objects when an outcome holds an integer beyond 2^53.
    const batch = this.native.takeDone();
    for (const done of typeof batch === "string" ? JSON.parse(batch) : batch) {
      const resolve = this._calls.get(done.call);
      if (resolve === undefined) continue;
      this._calls.delete(done.call);
      this._release();
      resolve(done.outcome);
    }
  }

  /** The user's opaque id (`x-forwarded-user`) for telemetry's `caller.id`; never the token. */
  callerIdFromRequest(req) {
    return headerOf(req, "x-forwarded-user");
  }

  /**
   * Who a request names, as Databricks Apps forwards it (`x-forwarded-email`, `-user`,
   * `-preferred-username`): `{ email, userId, userName }`, or undefined when it names nobody.
   * Display data only (the core bounds and cleans it); never a permission.
   */
  personFromRequest(req) {
    const email = headerOf(req, "x-forwarded-email");
    const userId = headerOf(req, "x-forwarded-user");
    const userName = headerOf(req, "x-forwarded-preferred-username");
    return email ?? userId ?? userName ? { email, userId, userName } : undefined;
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

  handle(key, token, person) {
    if (token !== undefined || person !== undefined) return createHandle(this, key, token, undefined, person);
    let handle = this._handles.get(key);
    if (handle === undefined) {
      handle = createHandle(this, key, undefined);
      this._handles.set(key, handle);
    }
    return handle;
  }

  /** Updates of a run: `prepare()` resolves to `launch(id)`, which starts native watch `id` (see RunUpdates). */
  _updates(prepare, signal, traceAs) {
    return new RunUpdates(this, prepare, signal, traceAs);
  }

  _dispatch() {
    for (const event of this.native.takeEvents()) this._watches.get(event.watch)?._receive(event);
  }

  _register(updates) {
    this._lastWatchId = nextId(this._lastWatchId);
    this._watches.set(this._lastWatchId, updates);
    return this._lastWatchId;
  }

  _unregister(id) {
    this._watches.delete(id);
  }

  /** A next() starts waiting: see `awaited`. */
  _hold() {
    if (this._waiting++ === 0) awaitedAdd(this);
  }

  /** A next() settled. */
  _release() {
    if (--this._waiting === 0) awaitedDelete(this);
  }

  /** Ends every wait started through this runtime with a SHUTTING_DOWN error (runs go on). */
  close() {
    const waits = [...this._watches.values()];
    if (waits.length === 0) return;
    const error = new JobsError("The jobs plugin is shutting down: the wait ended before its run did", {
      code: "SHUTTING_DOWN",
      statusCode: 503,
    });
    for (const updates of waits) updates._shutDown(error);
  }
}

/**
 * What the core calls when a run (or a repair) the app started has ended: the job's `onRunEnd`
 * with the run's final state, `(run, { jobKey, runId, repairId, startedBy })`. Resolves null when
 * the handler succeeded, else its error's message (the core retries with back-off and logs it).
 * It holds the handlers, not the runtime: a runtime nobody uses is still collected.
 */
function runEndDispatcher(jobs) {
  return async ({ jobKey, runId, repairId, runJson }) => {
    const handler = jobs?.[jobKey]?.onRunEnd;
    if (typeof handler !== "function") return null;
    try {
      const run = JSON.parse(runJson);
      await handler(run, { jobKey, runId, repairId: repairId || undefined, startedBy: run.started_by ?? null });
      return null;
    } catch (error) {
      const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      return message || "the handler failed";
    }
  };
}

/** How often the ledger's log lines (the database going away, coming back) are written. */
const LEDGER_LOG_MS = 1000;

/**
 * Writes the ledger's log lines with the runtime's logger, every second, without keeping Node
 * alive or the runtime from being collected (the timer holds it weakly and stops with it).
 */
function watchLedgerLogs(runtime) {
  const ref = new WeakRef(runtime);
  const timer = setInterval(() => {
    const rt = ref.deref();
    if (rt === undefined) return clearInterval(timer);
    rt._writeLedgerLogs();
  }, LEDGER_LOG_MS);
  timer.unref();
}

JobsRuntime.prototype._writeLedgerLogs = function () {
  for (const line of this.native.takeLedgerLogs()) {
    if (line.warn) this._logger.warn?.(line.message);
    else this._logger.info?.(line.message);
  }
};

/**
 * Runtimes with a next() or a one-shot call waiting. A waiting caller is held only by its
 * promise, whose resolver is held by the iterator (or the runtime's calls), the iterator by its
 * runtime, and the runtime by nothing but native handles that hold it weakly: without a strong
 * root the whole cycle is collected mid-wait and the caller's await never settles. This set is
 * that root, from a next() or call until it settles, and no longer (an iterator nobody reads is
 * still let go). One timer, ref'd while the set is non-empty, keeps Node alive, as a pending
 * native promise would (made once and ref'd/unref'd: sequential calls each go 0 -> 1 -> 0).
 */
const awaited = new Set();
let keepAlive = null;

function awaitedAdd(runtime) {
  awaited.add(runtime);
  if (keepAlive === null) keepAlive = setInterval(noop, 1 << 30);
  else keepAlive.ref();
}

function awaitedDelete(runtime) {
  awaited.delete(runtime);
  if (awaited.size === 0 && keepAlive !== null) keepAlive.unref();
}

function noop() {}

/**
 * The native side's wake-up callback: `owner[method]()`, with `owner` held weakly. Made outside
 * the owner's constructor and methods (whose closures share a context holding `this`): the
 * native side keeps this callback alive, so a strong reference would keep the owner, and the
 * native service, alive forever.
 */
function weakWake(owner, method) {
  const ref = new WeakRef(owner);
  return () => ref.deref()?.[method]();
}

/** The id after `last`: 1 … 2^32 - 1, then 1 again (native ids are u32, 0 unused). */
function nextId(last) {
  return (last % 0xffff_ffff) + 1;
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
  return readingConfig(() => native().discoverJobs(nativeConfig(config ?? {}), stringEnv(env)));
}

module.exports = { createJobsRuntime, createJobs, discoverJobs, headerOf, stringEnv, nativeConfig, weakWake, nextId };
