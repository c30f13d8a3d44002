"use strict";
// The AppKit plugin class. AppKit duck-types plugins, so this class has no runtime dependency
// on @databricks/appkit: `createApp({ plugins: [server(), jobs()] })` constructs it, calls
// attachContext/setup, mounts injectRoutes() under /api/jobs and hands exports() to the app.
// All route behaviour lives in the Rust core (crates/core/src/routes.rs, sse.rs); this file only
// moves requests and responses between express (or node:http) and the native router.

const { createJobsRuntime, discoverJobs, nextId, weakWake } = require("./runtime.js");
const { asksForNothing, isJsSchema, paramsJsonSchema } = require("./schema.js");
const { native } = require("./native.js");
const { JobsAgentTools } = require("./agents.js");

/** How long setup() waits for job definitions (jobParameters without a schema) before going on. */
const SETUP_DEFINITIONS_WAIT_MS = 2000;

let routeTable;

/** The routes, `[{ name, method, path }]` (path relative to the mount), from the core's table. */
function routes() {
  routeTable ??= native().routeTable();
  return routeTable;
}

function isPlainObject(v) {
  if (v === null || typeof v !== "object") return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function firstValue(v) {
  if (Array.isArray(v)) return firstValue(v[0]);
  return v == null ? undefined : String(v);
}

function headerMap(headers) {
  const out = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    const v = firstValue(value);
    if (v !== undefined) out[name.toLowerCase()] = v;
  }
  return out;
}

/** `config` without the ledger's credentials (`ledger.password`, `ledger.connectionString`). */
function withoutSecrets(config) {
  const ledger = config.ledger;
  if (ledger === null || typeof ledger !== "object" || Array.isArray(ledger)) return config;
  const { password: _p, connectionString: _c, ...rest } = ledger;
  return { ...config, ledger: rest };
}

function runtimeManifest({ $schema: _schema, license: _license, resources, ...manifest }) {
  return { ...manifest, resources: { required: [], optional: [...resources.required, ...resources.optional] } };
}

const JSON_HEADERS = { "Content-Type": "application/json; charset=utf-8" };

/** Sends JSON text (headers from the core's route response, or JSON's for our own errors); a HEAD request gets no body. */
function sendJson(req, res, status, text, headers = JSON_HEADERS) {
  if (res.headersSent || res.writableEnded) return;
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader("Content-Length", Buffer.byteLength(text));
  res.end(isHead(req) ? undefined : text);
}

/** The route a request is for, as the core's dispatch matches it (`{ name, path, jobKey }`), or null. */
function matchRoute(method, path) {
  return native().matchRoute(method, path);
}

function isHead(req) {
  return String(req.method ?? "").toUpperCase() === "HEAD";
}

class JobsPlugin {
  /**
   * The manifest AppKit's tooling reads (lib/manifest.json, placed at dist/plugins/jobs/ for
   * `appkit plugin sync`, which declares its job resource in a deployment), with its static
   * resources made optional at run
   * time: the jobs an app needs come from getResourceRequirements(), so an app configured only
   * with DATABRICKS_JOB_<NAME> boots in production without DATABRICKS_JOB_ID.
   */
  static manifest = runtimeManifest(require("./manifest.json"));

  static phase = "normal";

  /**
   * One `job` resource per configured or discovered job, bound to its env var. A job whose id
   * is in the config (`jobId`) does not need the env var, so it is not required.
   */
  static getResourceRequirements(config = {}) {
    return discoverJobs(config ?? {}, config?.env ?? process.env).map(({ key, envVar, idFromConfig }) => ({
      type: "job",
      alias: `job-${key}`,
      resourceKey: `job-${key}`,
      description: `Databricks Job "${key}"`,
      permission: "CAN_MANAGE_RUN",
      fields: { id: { env: envVar, description: `Job ID for "${key}"` } },
      required: !idFromConfig,
    }));
  }

  /** The environment given as the `env` option (it may hold credentials: kept off `config`). */
  #env;
  /** Params schemas read from jobs' own definitions (see loadClientConfig). */
  #definedSchemas = new Map();

  constructor(config = {}) {
    // `env`, `heartbeatMs` and `logger` are this class's own options, not the core's.
    const { env, ...withoutEnv } = config;
    const { heartbeatMs: _h, logger: _l, ...coreConfig } = withoutEnv;
    this.#env = env;
    // The ledger's password and connection string go to the core only, never onto `config`.
    this.config = withoutSecrets(withoutEnv);
    this.name = config.name ?? JobsPlugin.manifest.name;
    this.context = config.context;
    this.registeredEndpoints = {};
    this._logger = config.logger ?? console;
    // One native core (connection pool, cache, poller, ledger) for the routes and the code.
    this._runtime = createJobsRuntime(coreConfig, { ...(env ? { env } : {}), logger: this._logger });
    this._exports = this._runtime.exports;
    this._native = null;
    // Open streams by the id given to openStream: `{ res, wait, complete, done, onClose }`.
    this._pipes = new Map();
    this._lastStreamId = 0;
    // The agent tools (lib/agents.js): AppKit's agents reach them through the methods below.
    this._agentTools = new JobsAgentTools(this, this._logger);
  }

  attachContext(deps = {}) {
    if (deps.context !== undefined) this.context = deps.context;
  }

  async setup() {
    const found = discoverJobs(this.config, this.#env ?? process.env);
    const keys = found.map((job) => job.key);
    this._logger.info?.(`[jobs] ${keys.length} job(s) configured: ${keys.length ? keys.join(", ") : "(none)"}`);
    for (const { key, envVar, jobId } of found) {
      if (jobId == null) {
        this._logger.warn?.(`[jobs] Job "${key}" has no valid job id: set ${envVar} to the numeric id of the Databricks job`);
      }
    }
    // Jobs whose form comes from their own definition: read them now, but never hold the
    // app's start for long on a slow workspace (a late answer still fills clientConfig()).
    let timer;
    const bound = new Promise((resolve) => {
      timer = setTimeout(resolve, SETUP_DEFINITIONS_WAIT_MS);
      timer.unref?.();
    });
    // The ledger's database, when it has one, comes up in the background; a start waits for it
    // as briefly, so that the first requests already share (it never fails the start).
    const ledger = this._runtime.native.ledgerStatus().store === "postgres" ? this._runtime.native.ledgerReady(SETUP_DEFINITIONS_WAIT_MS) : undefined;
    await Promise.race([Promise.all([this.loadClientConfig().catch(() => undefined), ledger]), bound]);
    clearTimeout(timer);
    this._runtime._writeLedgerLogs();
  }

  /**
   * `clientConfig()` after reading the parameters of jobs that take theirs from their own
   * definition (`jobParameters: true`, no params schema): each becomes a JSON Schema for the
   * page's form. AppKit's setup() does it; a standalone server calls it before serving the page.
   * A definition that cannot be read leaves that job's params null.
   */
  async loadClientConfig() {
    await Promise.all(
      this.jobKeys().map(async (key) => {
        const outcome = await this._runtime.native.definedParamsSchema(key, null);
        if (outcome.ok && outcome.data) this.#definedSchemas.set(key, outcome.data);
      }),
    );
    this._agentTools.schemasChanged();
    return this.clientConfig();
  }

  /** The configured job keys. */
  jobKeys() {
    return this._runtime.keys.slice();
  }

  injectRoutes(router) {
    for (const { name, method, path } of routes()) {
      router[method.toLowerCase()](path, (req, res, next) => {
        this.handleRequest(req, res).catch((err) =>
          next ? next(err) : sendJson(req, res, 500, JSON.stringify({ error: "Internal Server Error", code: "INTERNAL_ERROR", plugin: this.name })),
        );
      });
      this.registeredEndpoints[name] = `/api/${this.name}${path}`;
    }
  }

  getEndpoints() {
    return { ...this.registeredEndpoints };
  }

  exports() {
    return this._exports;
  }

  clientConfig() {
    const jobs = {};
    for (const key of this.jobKeys()) {
      const job = this.config.jobs?.[key] ?? {};
      jobs[key] = { params: paramsJsonSchema(job.params) ?? this.#definedSchemas.get(key) ?? null, taskType: job.taskType ?? null };
    }
    return { jobs };
  }

  /**
   * AppKit's ToolProvider: the agent tools of every job, by local name (`etl.status`, `etl.run`,
   * ...; see lib/agents.js and the README's "Agent tools").
   */
  getAgentTools() {
    return this._agentTools.definitions();
  }

  /**
   * Runs agent tool `name` with the handles of the plugin it is called on: AppKit's agents call
   * it on `asUser(req)`, so a chat's tool call runs as the requesting user and records its person.
   */
  executeAgentTool(name, args, signal) {
    return this._agentTools.execute(this.exports(), name, args, signal);
  }

  /** The tools as AppKit's toolkit record: `plugins.jobs.toolkit({ only, except, prefix, rename })`. */
  toolkit(opts) {
    return this._agentTools.toolkit(this.name, opts);
  }

  /**
   * The plugin seen as the user of `req` (its `x-forwarded-access-token`): its exports run with
   * the user's token. Without a token this throws a 401 error, except in development where it
   * falls back to the service principal with a warning.
   */
  asUser(req) {
    const rt = this._runtime;
    const token = rt.tokenFromRequest(req);
    const person = rt.personFromRequest(req);
    const callable = (jobKey) => {
      rt.assertKey(jobKey);
      return rt.handle(jobKey, token, person);
    };
    return new Proxy(this, {
      get(target, prop, receiver) {
        if (prop === "exports") return () => callable;
        return Reflect.get(target, prop, receiver);
      },
    });
  }

  /**
   * A shutdown: every open stream whose run has not ended is cut (its connection destroyed, so
   * that its client reconnects elsewhere and resumes), and every programmatic wait ends with a
   * SHUTTING_DOWN error. Runs are not cancelled.
   */
  abortActiveOperations() {
    // Every stream stops; its end arrives as a frame and cuts its connection (see _frames).
    if (this._native) this._native.abortAll();
    this._runtime.close();
  }

  /** Streams (and run watchers) still open on the native side. */
  activeStreamCount() {
    return this._native ? this._native.activeStreams() : 0;
  }

  _router() {
    if (!this._native) {
      const { BindingRouter } = native();
      const heartbeatMs = this.config.heartbeatMs ?? this.config.routes?.heartbeatMs;
      this._native = new BindingRouter(this._runtime.native, heartbeatMs ? { heartbeatMs } : undefined);
      this._native.deliverTo(weakWake(this, "_frames"));
      this._runtime.telemetry.addRouter(this._native);
    }
    return this._native;
  }

  /**
   * Serve one request of the jobs routes. `req` is an express request or a node:http request
   * with `body` already read (a string, a Buffer, or a parsed object); `path` defaults to the
   * path relative to the router mount (express `req.path`).
   */
  async handleRequest(req, res, options = {}) {
    const url = new URL(req.originalUrl ?? req.url ?? "/", "http://localhost");
    const path = options.path ?? req.path ?? url.pathname;
    const query = {};
    if (req.query && typeof req.query === "object") {
      for (const [k, v] of Object.entries(req.query)) {
        const first = firstValue(v);
        if (first !== undefined) query[k] = first;
      }
    } else {
      for (const [k, v] of url.searchParams) if (!(k in query)) query[k] = v;
    }
    let body = req.body;
    if (Buffer.isBuffer(body)) body = body.toString("utf8");
    else if (body !== undefined && body !== null && typeof body !== "string") body = JSON.stringify(body);
    const headers = headerMap(req.headers);

    const method = String(req.method ?? "GET").toUpperCase();
    const route = matchRoute(method, path);
    const pre = await this._validateExternal(route, query, headers, body);
    if (pre.error) return sendJson(req, res, 400, JSON.stringify({ error: pre.error, code: "VALIDATION_ERROR", plugin: this.name }));
    if (pre.body !== undefined) body = pre.body;

    const telemetry = this._runtime.telemetry;
    // Routes run as the service principal: their spans say so.
    const attributes = { "execution.context": "service", "caller.id": "service_principal", "http.route": route?.path ?? "unknown" };
    const response = await telemetry.traced(route?.name ?? "route", attributes, () =>
      this._router().handle({ method, path, query, headers, body: typeof body === "string" ? body : undefined }),
    );
    if (response.kind === "json") return sendJson(req, res, response.status, response.bodyJson, response.headers);
    if (response.kind === "empty") {
      res.statusCode = response.status;
      return res.end();
    }
    if (isHead(req)) {
      response.discard();
      res.statusCode = response.status;
      for (const [k, v] of Object.entries(response.headers)) res.setHeader(k, v);
      return res.end();
    }
    // A stream follows a run: one span for the whole wait, as for runAndWait/watchRun.
    const resumed = headers["last-event-id"] !== undefined || route?.name === "run-stream";
    const operation = resumed ? "watchRun" : route?.name === "repair-run" ? "repairAndWait" : "runAndWait";
    const runId = response.runId;
    const wait = telemetry.wait(operation, runId == null ? attributes : { ...attributes, "jobs.run_id": runId });
    return this._pipeStream(response, res, wait);
  }

  /**
   * Jobs whose params are a Standard Schema (Zod) are validated here, with the schema's own
   * semantics (runtime.js `prepareParams`), before the Rust core sees the request; the core skips
   * JSON Schema checks for them (`externalSchema`). Returns `{ error }` for a 400, or `{ body }`
   * carrying the validated (maybe transformed) params.
   */
  async _validateExternal(route, query, headers, body) {
    if (route?.name !== "run" && route?.name !== "repair-run") return {};
    const repair = route.name === "repair-run";
    const key = route.jobKey;
    if (!this._runtime.keys.includes(key)) return {};
    const schema = this.config.jobs?.[key]?.params;
    if (!isJsSchema(schema)) return {};
    if (query.stream === "true" && headers["last-event-id"]) return {}; // a resume starts nothing
    let parsed = {};
    if (typeof body === "string" && body.trim() !== "") {
      try {
        parsed = JSON.parse(body);
      } catch {
        return {}; // the core answers the malformed body
      }
    }
    if (!isPlainObject(parsed)) return {};
    const params = parsed.params;
    if (params !== undefined && !isPlainObject(params)) return {}; // the core answers 400
    if (repair && asksForNothing(params)) return {}; // a repair without params ({} too) keeps the run's
    try {
      const value = await this._runtime.prepareParams(key, params);
      return { body: JSON.stringify({ ...parsed, params: value ?? {} }) };
    } catch (err) {
      if (err && (err.statusCode === 400 || err.code === "VALIDATION_ERROR")) return { error: err.message };
      throw err;
    }
  }

  /**
   * Writes a stream response to `res`: the headers, its opening event, then the frames the
   * native side pushes (see `_frames`). Resolves when the response is over. The response ends
   * cleanly only after the stream's last frame (a terminal state or an error event): a stream
   * stopped before (a shutdown) has its connection destroyed instead, because an SSE client
   * takes a clean end for "done", while a cut makes it reconnect, to another instance, and
   * resume where it was. Frames are written as they come (SSE frames are small and few per run;
   * a slow client buffers them in its socket).
   */
  _pipeStream(response, res, wait) {
    const router = this._router();
    if (res.destroyed) {
      // The client left during the checks: its stream's write is never sent.
      response.discard();
      wait?.end(null);
      return Promise.resolve();
    }
    this._lastStreamId = nextId(this._lastStreamId);
    const id = this._lastStreamId;
    return new Promise((resolve) => {
      const pipe = { res, wait, complete: false, done: resolve };
      this._pipes.set(id, pipe);
      pipe.onClose = () => {
        if (this._pipes.has(id)) router.cancelStream(id);
      };
      res.on("close", pipe.onClose);
      res.statusCode = 200;
      for (const [k, v] of Object.entries(response.headers)) res.setHeader(k, v);
      res.flushHeaders?.();
      const opening = response.openStream(id);
      if (opening) res.write(opening);
    });
  }

  /** Frames pushed by the native side, in order, each to its stream's response. */
  _frames() {
    for (const frame of this._native.takeFrames()) {
      const pipe = this._pipes.get(frame.stream);
      if (pipe === undefined) continue;
      if (frame.end) {
        this._pipes.delete(frame.stream);
        pipe.res.off("close", pipe.onClose);
        pipe.wait?.end(null);
        if (pipe.complete) {
          if (!pipe.res.writableEnded) pipe.res.end();
        } else if (!pipe.res.destroyed) {
          pipe.res.destroy();
        }
        pipe.done();
        continue;
      }
      const wait = pipe.wait;
      if (wait) {
        if (frame.runId != null) wait.runId(frame.runId);
        if (frame.status != null) wait.update(frame.status);
        if (frame.error != null) wait.end({ code: frame.error, message: frame.error });
      }
      if (frame.last) pipe.complete = true;
      if (!pipe.res.destroyed) pipe.res.write(frame.text);
    }
  }
}

module.exports = { JobsPlugin };
