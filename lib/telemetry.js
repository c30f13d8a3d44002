"use strict";
/*
 * OpenTelemetry for one plugin instance, through the app's own providers: the
 * `@opentelemetry/api` (and `@opentelemetry/api-logs`) globals, which AppKit's NodeSDK registers
 * when OTEL_EXPORTER_OTLP_ENDPOINT is set, or any SDK an app registers itself. Both packages are
 * optional peers: without them, or without a registered SDK, nothing is measured (the core's
 * measuring stays off) and every call costs one cached check.
 *
 * The Rust core measures where the work happens (`crates/core/src/telemetry.rs`); this module
 * turns its records into the stock plugin's shapes, and more:
 *
 * | signal  | name                                   | from                                         |
 * |---------|----------------------------------------|----------------------------------------------|
 * | span    | plugin.execute (INTERNAL, tracer <plugin name>) | each JS API call and route request    |
 * | span    | jobs.<operation> (CLIENT, tracer jobs-jobs)     | each Jobs API call it made            |
 * | span    | cache.getOrExecute (tracer cache-manager-cache-manager) | each cached read              |
 * | span    | jobs.runAndWait / watchRun / repairAndWait (jobs-jobs) | a whole wait; an event per state |
 * | metric  | jobs.api_call.count, jobs.api_call.duration (meter jobs) | every Jobs API call, polls too |
 * | metric  | cache.hit, cache.miss (meter cache-manager)     | cached reads                          |
 * | metric  | jobs.engine.*, jobs.routes.* (meter jobs)       | the poll engine and the SSE routes    |
 * | span    | jobs.ledger.<op> (CLIENT, tracer jobs-jobs, db.system postgresql) | each ledger statement  |
 * | metric  | jobs.ledger.operation.count/.duration, jobs.ledger.up, .backlog, .errors, .listening | the ledger |
 * | metric  | jobs.run_end.fired, .failures, .given_up                  | onRunEnd handlers             |
 * | log     | one record per API call and per wait (logger jobs) | when a logger provider is registered |
 *
 * Attributes carry operation names, job keys, run ids, HTTP statuses and error codes: never a
 * token, a URL or upstream text.
 */

/** How often (ms) the providers are looked up again: an SDK may be registered after us. */
const RECHECK_MS = 1000;
const JOBS_TRACER = "jobs-jobs";
const CACHE_TRACER = "cache-manager-cache-manager";

function optional(name) {
  try {
    return require(name);
  } catch {
    return null;
  }
}

/** The provider behind a global proxy, or the provider itself. */
function delegate(provider) {
  return typeof provider?.getDelegate === "function" ? provider.getDelegate() : provider;
}

/** A no-op provider, or a global proxy nothing was registered behind (api-logs hands one out). */
function isNoop(provider) {
  return provider == null || /^(Noop|Proxy)/.test(provider.constructor?.name ?? "");
}

/** The plugin's `telemetry` option as AppKit reads it: false, true, or { traces, metrics, logs }. */
function signalsWanted(option) {
  if (option === false) return { traces: false, metrics: false, logs: false };
  if (option == null || option === true || typeof option !== "object") return { traces: true, metrics: true, logs: true };
  return { traces: option.traces !== false, metrics: option.metrics !== false, logs: option.logs !== false };
}

class Telemetry {
  #native;
  #pluginName;
  #wanted;
  #api = optional("@opentelemetry/api");
  #logsApi = undefined;
  #checkedAt = -Infinity;
  #on = { traces: false, metrics: false, logs: false };
  #instruments = null;
  #routers = new Set();

  /** @param native BindingJobs @param {{ pluginName?: string, option?: unknown }} options */
  constructor(native, { pluginName = "jobs", option } = {}) {
    this.#native = native;
    this.#pluginName = pluginName;
    this.#wanted = signalsWanted(option);
  }

  /** Whether anything is measured now (providers looked up at most once a second). */
  active() {
    const now = performance.now();
    if (now - this.#checkedAt >= RECHECK_MS) {
      this.#checkedAt = now;
      this.#refresh();
    }
    return this.#on.traces || this.#on.metrics || this.#on.logs;
  }

  #refresh() {
    const api = this.#api;
    const on = { traces: false, metrics: false, logs: false };
    if (api) {
      on.traces = this.#wanted.traces && !isNoop(delegate(api.trace.getTracerProvider()));
      on.metrics = this.#wanted.metrics && !isNoop(delegate(api.metrics.getMeterProvider()));
      if (this.#wanted.logs) {
        if (this.#logsApi === undefined) this.#logsApi = optional("@opentelemetry/api-logs");
        on.logs = this.#logsApi != null && !isNoop(delegate(this.#logsApi.logs.getLoggerProvider()));
      }
    }
    this.#on = on;
    // The core measures as soon as any signal is on; metrics need the instruments too (a meter
    // taken before an SDK is registered stays a no-op, so they are made once it is).
    this.#native.setTelemetry(on.traces || on.metrics || on.logs);
    if (on.metrics && this.#instruments === null) this.#instruments = this.#observe(api.metrics.getMeter("jobs"), api.metrics.getMeter("cache-manager"));
  }

  /** The SSE routes' streams and resumes count in `jobs.routes.*`. */
  addRouter(router) {
    this.#routers.add(router);
  }

  /**
   * Runs one native call of a JS API method or a route, `operation` naming it, and makes its
   * spans and log record from the outcome (`{ ok, code, calls }`). `attributes` describe the
   * caller (`jobs.key`, `execution.context`, `caller.id`).
   */
  traced(operation, attributes, call) {
    // Without an SDK: the call itself, no async wrapper (a promise and two ticks per call).
    if (!this.active()) return call();
    return this.#traced(operation, attributes, call);
  }

  async #traced(operation, attributes, call) {
    const api = this.#api;
    const started = Date.now();
    const span = this.#on.traces ? api.trace.getTracer(this.#pluginName).startSpan("plugin.execute", { attributes: { "jobs.operation": operation, ...attributes } }) : null;
    let outcome;
    try {
      outcome = await call();
    } catch (error) {
      this.#fail(span, error?.code ?? "ERROR", error?.message);
      span?.end();
      this.#log(operation, Date.now() - started, false, attributes);
      throw error;
    }
    const failure = failureOf(outcome);
    if (span) {
      this.#callSpans(outcome?.calls, api.trace.setSpan(api.context.active(), span), attributes);
      if (failure) this.#fail(span, failure.code, failure.message);
      else span.setStatus({ code: api.SpanStatusCode.OK });
      span.end();
    }
    this.#log(operation, Date.now() - started, failure === null, attributes);
    return outcome;
  }

  /**
   * A span for a whole wait (`jobs.runAndWait`, `jobs.watchRun`, or an SSE stream of one), or
   * null when tracing is off: `started(calls)` adds the calls that began it, `update(status)`
   * an event per state change, `end(error)` the terminal state or the failure.
   */
  wait(operation, attributes, parent) {
    if (!this.active() || !this.#on.traces) return this.#on.logs ? new WaitLog(this, operation, attributes) : null;
    const api = this.#api;
    const span = api.trace
      .getTracer(JOBS_TRACER)
      .startSpan(`jobs.${operation}`, { kind: api.SpanKind.INTERNAL, attributes: { "jobs.operation": operation, ...attributes } }, parent ?? api.context.active());
    return new WaitSpan(this, api, span, operation, attributes);
  }

  /** The current context, for a wait that starts later (on its first `next()`). */
  currentContext() {
    return this.#api && this.active() ? this.#api.context.active() : undefined;
  }

  /** The spans of `calls` under `span` (a wait's). */
  callSpansUnder(calls, span, attributes) {
    this.#callSpans(calls, this.#api.trace.setSpan(this.#api.context.active(), span), attributes);
  }

  /** `jobs.<operation>` CLIENT spans (inside `cache.getOrExecute` for cached reads) under `parent`. */
  #callSpans(calls, parent, attributes) {
    if (!calls) return;
    const api = this.#api;
    const tracer = api.trace.getTracer(JOBS_TRACER);
    let cacheSpan = null;
    let cacheStart = 0;
    let cacheEnd = 0;
    // By start time, a cache record before the API call it made (which ends, and is recorded, first).
    const ordered = calls.slice().sort((a, b) => a.startMs - b.startMs || (b.cacheHit != null) - (a.cacheHit != null));
    for (const call of ordered) {
      const end = call.startMs + call.durationMs;
      if (call.cacheHit != null) {
        // A cached read: its span, with the API call of a miss inside (the next record).
        cacheSpan = api.trace.getTracer(CACHE_TRACER).startSpan(
          "cache.getOrExecute",
          {
            startTime: call.startMs,
            attributes: { "cache.key": `jobs:${call.operation}`, "cache.enabled": true, "cache.persistent": false, "cache.hit": call.cacheHit },
          },
          parent,
        );
        cacheSpan.addEvent(call.cacheHit ? "cache.hit" : "cache.miss", call.startMs);
        cacheSpan.setStatus({ code: call.errorCode ? api.SpanStatusCode.ERROR : api.SpanStatusCode.OK });
        cacheSpan.end(end);
        cacheStart = call.startMs;
        cacheEnd = end;
        continue;
      }
      const inCache = cacheSpan !== null && call.startMs >= cacheStart && end <= cacheEnd;
      const ledger = isLedger(call.operation);
      const span = tracer.startSpan(
        `jobs.${call.operation}`,
        {
          kind: api.SpanKind.CLIENT,
          startTime: call.startMs,
          attributes: ledger ? { "db.system": "postgresql", "db.operation": call.operation.slice(LEDGER.length), ...pick(attributes, "jobs.key"), ...(call.errorCode ? { "error.type": call.errorCode } : {}) } : this.#callAttributes(call, attributes),
        },
        inCache ? api.trace.setSpan(parent, cacheSpan) : parent,
      );
      if (call.errorCode) this.#fail(span, call.errorCode, call.httpStatus ? `HTTP ${call.httpStatus}` : call.errorCode);
      else span.setStatus({ code: api.SpanStatusCode.OK });
      span.end(end);
    }
  }

  #callAttributes(call, attributes) {
    const out = { "jobs.operation": call.operation, "jobs.attempts": call.attempts };
    if (attributes["jobs.key"] !== undefined) out["jobs.key"] = attributes["jobs.key"];
    if (call.httpStatus != null) out["http.response.status_code"] = call.httpStatus;
    if (call.runId != null) out["jobs.run_id"] = call.runId;
    if (call.errorCode) out["error.type"] = call.errorCode;
    return out;
  }

  /** Status ERROR with the exception recorded: our code and public message only. */
  #fail(span, code, message) {
    if (!span) return;
    span.recordException({ name: String(code ?? "ERROR"), message: String(message ?? code ?? "failed") });
    span.setStatus({ code: this.#api.SpanStatusCode.ERROR, message: String(message ?? code ?? "failed") });
  }

  /** One log record (stock shape: `jobs.operation`, `jobs.duration_ms`, `jobs.success`). */
  #log(operation, durationMs, success, attributes, extra = {}) {
    if (!this.#on.logs) return;
    const { SeverityNumber } = this.#logsApi;
    this.#logsApi.logs.getLogger("jobs").emit({
      severityNumber: success ? SeverityNumber.INFO : SeverityNumber.WARN,
      severityText: success ? "INFO" : "WARN",
      body: `jobs.${operation} ${success ? "ok" : "failed"} in ${Math.round(durationMs)} ms`,
      attributes: { "jobs.operation": operation, "jobs.duration_ms": durationMs, "jobs.success": success, ...pick(attributes, "jobs.key"), ...extra },
    });
  }

  /** Records the end of a wait as a log record. */
  logWait(operation, durationMs, success, attributes, extra) {
    this.#log(operation, durationMs, success, attributes, extra);
  }

  /** The instruments, observed when a metric reader collects (nothing per poll, nothing without a reader). */
  #observe(meter, cacheMeter) {
    const count = meter.createCounter("jobs.api_call.count", { description: "Total number of Jobs API calls", unit: "1" });
    const duration = meter.createHistogram("jobs.api_call.duration", { description: "Duration of Jobs API calls", unit: "ms" });
    const hits = cacheMeter.createCounter("cache.hit", { description: "Reads served from the jobs read cache", unit: "1" });
    const misses = cacheMeter.createCounter("cache.miss", { description: "Reads the jobs read cache could not serve", unit: "1" });
    const gauge = (name, description, unit) => meter.createObservableGauge(name, { description, unit });
    const counter = (name, description, unit) => meter.createObservableCounter(name, { description, unit });
    const engine = {
      runsWatched: gauge("jobs.engine.runs_watched", "Runs being polled (one poll per run and identity)", "{run}"),
      watchers: gauge("jobs.engine.watchers", "Watchers sharing the polls (runAndWait, watchRun, SSE streams)", "{watcher}"),
      polls: counter("jobs.engine.polls", "runs/get requests sent by the shared polls", "{request}"),
      updatesDelivered: counter("jobs.engine.updates_delivered", "State changes handed to watchers (fan-out of the shared polls)", "{update}"),
      retries: counter("jobs.engine.retries", "Jobs API requests sent again after a transient failure", "{request}"),
      rateLimitPauses: counter("jobs.engine.rate_limit_pauses", "429 answers that paused every poll", "{pause}"),
      waitingForTurn: gauge("jobs.engine.waiting_for_turn", "Requests waiting for a turn under maxRequestsPerSecond", "{request}"),
    };
    const ledgerCount = meter.createCounter("jobs.ledger.operation.count", { description: "Statements the ledger ran on its database", unit: "1" });
    const ledgerDuration = meter.createHistogram("jobs.ledger.operation.duration", { description: "Duration of the ledger's statements", unit: "ms" });
    const ledger = {
      up: gauge("jobs.ledger.up", "1 while the ledger's store answers (memory always does), 0 while its database is away", "1"),
      listening: gauge("jobs.ledger.listening", "1 while the ledger hears the other instances (LISTEN)", "1"),
      backlog: gauge("jobs.ledger.backlog", "Starts waiting for the database to come back", "{start}"),
      errors: counter("jobs.ledger.errors", "Ledger operations that failed (the plugin served from memory)", "{error}"),
      dropped: counter("jobs.ledger.dropped", "Starts dropped from a full backlog", "{start}"),
    };
    const runEnd = {
      fired: counter("jobs.run_end.fired", "onRunEnd handlers that succeeded", "{call}"),
      failures: counter("jobs.run_end.failures", "onRunEnd attempts that failed (thrown, rejected or timed out)", "{call}"),
      givenUp: counter("jobs.run_end.given_up", "onRunEnd handlers given up after their last attempt", "{call}"),
    };
    const streams = gauge("jobs.routes.sse_streams", "SSE streams open", "{stream}");
    const resumes = counter("jobs.routes.sse_resumes", "SSE streams resumed by Last-Event-ID (no second run)", "{stream}");
    meter.addBatchObservableCallback(
      (result) => {
        const m = this.#native.engineMetrics();
        for (const [key, instrument] of Object.entries(engine)) result.observe(instrument, m[key]);
        let open = 0;
        let resumed = 0;
        for (const router of this.#routers) {
          open += router.activeStreams();
          resumed += router.resumes();
        }
        result.observe(streams, open);
        result.observe(resumes, resumed);
        // The calls measured since the last collection, polls included, in one batch.
        const { calls, cache } = this.#native.takeCallMetrics();
        for (const c of calls) {
          const ledgerOp = isLedger(c.operation);
          const attrs = ledgerOp ? { operation: c.operation.slice(LEDGER.length), success: String(c.success) } : { operation: c.operation, success: String(c.success) };
          (ledgerOp ? ledgerCount : count).add(c.count, attrs);
          for (const ms of c.durationsMs) (ledgerOp ? ledgerDuration : duration).record(ms, attrs);
        }
        const l = this.#native.ledgerStatus();
        const store = { "jobs.ledger.store": l.store };
        result.observe(ledger.up, l.up ? 1 : 0, store);
        result.observe(ledger.listening, l.listening ? 1 : 0, store);
        result.observe(ledger.backlog, l.backlog, store);
        result.observe(ledger.errors, l.errors, store);
        result.observe(ledger.dropped, l.dropped, store);
        const ends = this.#native.runEndMetrics();
        for (const [key, instrument] of Object.entries(runEnd)) result.observe(instrument, ends[key]);
        for (const c of cache) (c.hit ? hits : misses).add(c.count, { "cache.key": `jobs:${c.operation}` });
      },
      [...Object.values(engine), ...Object.values(ledger), ...Object.values(runEnd), streams, resumes],
    );
    return true;
  }
}

/**
 * What failed in a native outcome (`{ ok: false, code, message }`) or a route response (a 5xx:
 * the server's failure; a 4xx is the client's), or null.
 */
function failureOf(outcome) {
  if (outcome?.ok === false) return { code: outcome.code, message: outcome.message };
  if (outcome?.ok === undefined && outcome?.status >= 500) return { code: `HTTP_${outcome.status}`, message: `HTTP ${outcome.status}` };
  return null;
}

/** Records of the ledger's database statements are `ledger.<op>`; the rest are Jobs API calls. */
const LEDGER = "ledger.";
function isLedger(operation) {
  return operation.startsWith(LEDGER);
}

function pick(object, key) {
  return object && object[key] !== undefined ? { [key]: object[key] } : {};
}

/** A wait's span: an event per state change, the terminal state at the end. */
class WaitSpan {
  #telemetry;
  #api;
  #span;
  #operation;
  #attributes;
  #started = Date.now();
  #last;
  #ended = false;

  constructor(telemetry, api, span, operation, attributes) {
    this.#telemetry = telemetry;
    this.#api = api;
    this.#span = span;
    this.#operation = operation;
    this.#attributes = attributes;
  }

  /** The calls that started the wait (a run-now, an ownership read), as child spans. */
  started(calls) {
    if (calls) this.#telemetry.callSpansUnder(calls, this.#span, this.#attributes);
  }

  runId(runId, repairId) {
    if (runId != null) this.#span.setAttribute("jobs.run_id", String(runId));
    if (repairId != null) this.#span.setAttribute("jobs.repair_id", String(repairId));
  }

  update(status, run) {
    this.#last = status;
    this.#span.addEvent("jobs.state_change", { "jobs.state": status ?? "unknown" });
    if (run) {
      const result = run.state?.result_state;
      if (result) this.#span.setAttribute("jobs.result_state", result);
    }
  }

  end(error) {
    if (this.#ended) return;
    this.#ended = true;
    const api = this.#api;
    if (this.#last) this.#span.setAttribute("jobs.terminal_state", this.#last);
    if (error) {
      this.#span.recordException({ name: String(error.code ?? "ERROR"), message: String(error.message) });
      this.#span.setStatus({ code: api.SpanStatusCode.ERROR, message: String(error.message) });
    } else {
      this.#span.setStatus({ code: api.SpanStatusCode.OK });
    }
    this.#span.end();
    this.#telemetry.logWait(this.#operation, Date.now() - this.#started, !error, this.#attributes, this.#last ? { "jobs.terminal_state": this.#last } : {});
  }
}

/** A wait with logs but no tracing: the log record at its end. */
class WaitLog {
  #telemetry;
  #operation;
  #attributes;
  #started = Date.now();
  #last;
  constructor(telemetry, operation, attributes) {
    this.#telemetry = telemetry;
    this.#operation = operation;
    this.#attributes = attributes;
  }
  started() {}
  runId() {}
  update(status) {
    this.#last = status;
  }
  end(error) {
    this.#telemetry.logWait(this.#operation, Date.now() - this.#started, !error, this.#attributes, this.#last ? { "jobs.terminal_state": this.#last } : {});
  }
}

module.exports = { Telemetry, signalsWanted };
