// appkit-jobs/react/hooks: useJob and useJobRuns over the plugin's /api/jobs routes. Only React
// is imported (no DOM at import time, no appkit-ui), so SSR and Node tests can load this file.
import { createContext, createElement, useContext, useEffect, useMemo, useRef, useState } from "react";
import { fieldErrors, isTerminal, lifeCycleState } from "./model.mjs";
import { followStream, isJobError, networkError, requestJson } from "./stream.mjs";

const DEFAULT_BASE_PATH = "/api/jobs";

const JobsContext = createContext(null);

/**
 * Settings shared by the hooks and components below it: `basePath` (default "/api/jobs"),
 * `config` (the plugin's client config, `{ jobs: { <key>: { params, taskType } } }`, for pages
 * not served by AppKit), `fetch` (e.g. to add headers).
 */
export function JobsProvider({ basePath, config, fetch, children }) {
  const value = useMemo(() => ({ basePath, config, fetch }), [basePath, config, fetch]);
  return createElement(JobsContext.Provider, { value }, children);
}

/** The jobs plugin's client config as AppKit serves it (the page's `__appkit__` payload). */
function appKitJobsConfig() {
  if (typeof window === "undefined" || typeof document === "undefined") return null;
  let config = null;
  const script = document.getElementById("__appkit__");
  if (script?.textContent) {
    try {
      config = JSON.parse(script.textContent);
    } catch {
      config = null;
    }
  }
  config ??= window.__appkit__;
  return config?.plugins?.jobs ?? null;
}

function useSettings(options) {
  const ctx = useContext(JobsContext);
  const basePath = String(options.basePath ?? ctx?.basePath ?? DEFAULT_BASE_PATH).replace(/\/+$/, "");
  const fetchImpl = options.fetch ?? ctx?.fetch;
  return {
    basePath,
    // Looked up at call time: a test or polyfill may install fetch after this module loaded.
    fetch: fetchImpl ?? ((input, init) => globalThis.fetch(input, init)),
    config: ctx?.config,
  };
}

/**
 * One job's client config (`{ params: JSON Schema | null, taskType }`), from the nearest
 * JobsProvider's `config`, else the page's `__appkit__` payload (read here as appkit-ui's
 * `usePluginClientConfig("jobs")` reads it, so that this file needs no appkit-ui), else null.
 */
export function useJobConfig(jobKey, options = {}) {
  const { config } = useSettings(options);
  return useMemo(() => {
    const jobs = (config ?? appKitJobsConfig())?.jobs;
    return jobs && Object.hasOwn(jobs, jobKey) ? jobs[jobKey] : null;
  }, [config, jobKey]);
}

// Runs started from this page tell the run lists of their job to refresh.
const listeners = new Map();

function scopeOf(basePath, jobKey) {
  return `${basePath}\u0000${jobKey}`;
}

function emit(scope, kind) {
  for (const fn of [...(listeners.get(scope) ?? [])]) fn(kind);
}

function subscribe(scope, fn) {
  let set = listeners.get(scope);
  if (!set) listeners.set(scope, (set = new Set()));
  set.add(fn);
  return () => {
    set.delete(fn);
    if (set.size === 0) listeners.delete(scope);
  };
}

/** A repair's selection: as given, or every failed task when it names none. */
function repairChoice(options) {
  return options.rerunAllFailedTasks || options.rerunTasks ? options : { ...options, rerunAllFailedTasks: true };
}

function toJobError(err) {
  const error = isJobError(err) ? { ...err } : networkError(err);
  if (error.code === "VALIDATION_ERROR") error.fields = fieldErrors(error.message);
  return error;
}

function jobUrl(settings, jobKey, path) {
  return `${settings.basePath}/${encodeURIComponent(jobKey)}${path}`;
}

function sseInit(method, lastEventId, signal, body) {
  const headers = { Accept: "text/event-stream" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  return { method, headers, body, signal };
}

const BUSY = new Set(["starting", "attaching", "accepted", "following", "reconnecting"]);

const INITIAL = Object.freeze({
  run: null,
  status: null,
  progress: null,
  changes: null,
  error: null,
  phase: "loading",
  updatedAt: null,
  reconnects: 0,
});

/**
 * The job `jobKey`: its current run (or else its latest one), followed live. See the types
 * (lib/react/index.d.mts) for every field; the functions are stable across renders.
 */
export function useJob(jobKey, options = {}) {
  const settings = useSettings(options);
  const config = useJobConfig(jobKey, options);
  const [state, setState] = useState(INITIAL);
  const ref = useRef(null);
  if (ref.current === null) ref.current = { alive: false, controllers: new Set(), follow: null, state: INITIAL, key: null };
  const self = ref.current;
  self.settings = settings;
  self.jobKey = jobKey;
  self.options = options;

  if (!self.api) self.api = createJobApi(self, setState);

  useEffect(() => {
    const identity = scopeOf(settings.basePath, jobKey);
    self.alive = true;
    if (self.key !== identity) {
      self.key = identity;
      self.state = INITIAL;
      setState(INITIAL);
    }
    if (self.options.attach !== false) self.api.refresh();
    else self.api.set({ phase: "idle" });
    // Repairs and cancels made elsewhere on this page (a runs table) are followed here.
    const unsubscribe = subscribe(identity, (kind) => {
      if (kind === "external" && !self.follow) self.api.refresh();
    });
    return () => {
      self.alive = false;
      unsubscribe();
      for (const c of self.controllers) c.abort();
      self.controllers.clear();
      self.follow = null;
    };
  }, [jobKey, settings.basePath]);

  return useMemo(
    () => ({
      ...state,
      jobKey,
      config,
      busy: BUSY.has(state.phase),
      start: self.api.start,
      cancel: self.api.cancel,
      repair: self.api.repair,
      refresh: self.api.refresh,
    }),
    [state, jobKey, config],
  );
}

function createJobApi(self, setState) {
  const set = (patch) => {
    if (!self.alive) return;
    self.state = { ...self.state, ...(typeof patch === "function" ? patch(self.state) : patch) };
    setState(self.state);
  };
  const track = () => {
    const c = new AbortController();
    self.controllers.add(c);
    return c;
  };
  const release = (c) => self.controllers.delete(c);
  const url = (path) => jobUrl(self.settings, self.jobKey, path);
  const scope = () => scopeOf(self.settings.basePath, self.jobKey);

  /** Follows one stream; `restore` gives back what to show if it fails before any state. */
  async function follow(kind, open, restore) {
    if (!self.alive) return;
    self.follow?.abort(); // the page follows one stream at a time; the other run goes on
    const c = track();
    self.follow = c;
    const where = scope();
    let seen = null;
    set({ phase: kind === "attach" ? "attaching" : "starting", error: null, reconnects: 0 });
    let failed = null;
    try {
      await followStream({
        open,
        signal: c.signal,
        maxRetries: self.options.maxRetries ?? 5,
        retryDelayMs: self.options.retryDelayMs ?? 500,
        onRetry: () => set((s) => ({ phase: "reconnecting", reconnects: s.reconnects + 1 })),
        onEvent: ({ event, data }) => {
          if (event === "error") {
            set({ error: { code: data.code ?? "STREAM_ERROR", message: data.error ?? "The stream failed" } });
            return true;
          }
          if (data.accepted) {
            set({ phase: "accepted" });
            return false;
          }
          if (!data.run) return false;
          const status = data.status ?? lifeCycleState(data.run);
          set({ run: data.run, status, progress: data.progress ?? null, changes: data.changes ?? null, updatedAt: Date.now(), phase: "following" });
          if (seen !== status) emit(where, seen === null ? "started" : "changed");
          seen = status;
          return isTerminal(data.run);
        },
      });
    } catch (err) {
      failed = toJobError(err);
    } finally {
      release(c);
      if (self.follow === c) self.follow = null;
    }
    if (c.signal.aborted) return;
    set({ phase: "idle", ...(failed ? { error: failed } : {}), ...(failed && seen === null ? restore?.() : {}) });
    emit(where, "ended");
    // A start whose answer was lost may have started a run all the same: look.
    if (failed?.code === "NETWORK_ERROR" && seen === null) refresh();
  }

  async function refresh() {
    if (!self.alive) return;
    const c = track();
    try {
      const body = await requestJson(self.settings.fetch, url("/status"), { signal: c.signal });
      if (c.signal.aborted || self.follow) return; // a stream is newer than this answer
      const run = body?.run ?? null;
      set({ run, status: body?.status ?? lifeCycleState(run), progress: null, changes: null, updatedAt: Date.now(), phase: "idle" });
      if (run && run.run_id != null && !isTerminal(run)) attach(run.run_id);
    } catch (err) {
      if (!c.signal.aborted) set({ error: toJobError(err), phase: self.follow ? self.state.phase : "idle" });
    } finally {
      release(c);
    }
  }

  function attach(runId) {
    return follow("attach", (lastEventId, signal) => self.settings.fetch(url(`/runs/${runId}/stream`), sseInit("GET", lastEventId, signal)));
  }

  function shown() {
    const { run, status, progress, changes, updatedAt } = self.state;
    return { run, status, progress, changes, updatedAt };
  }

  function start(params) {
    if (!self.alive) return Promise.resolve();
    const before = shown();
    set({ run: null, status: null, progress: null, changes: null, updatedAt: null });
    const body = JSON.stringify(params === undefined ? {} : { params });
    return follow("run", (lastEventId, signal) => self.settings.fetch(url("/run?stream=true"), sseInit("POST", lastEventId, signal, body)), () => before);
  }

  function repair(options = {}) {
    if (!self.alive) return Promise.resolve();
    const { runId = self.state.run?.run_id, ...rest } = options ?? {};
    if (runId == null) {
      set({ error: { code: "INVALID_REQUEST", message: "There is no run to repair" } });
      return Promise.resolve();
    }
    const before = shown();
    if (String(runId) !== String(self.state.run?.run_id)) set({ run: null, status: null, progress: null, changes: null });
    const body = JSON.stringify(repairChoice(rest));
    return follow(
      "repair",
      (lastEventId, signal) => self.settings.fetch(url(`/runs/${runId}/repair?stream=true`), sseInit("POST", lastEventId, signal, body)),
      () => before,
    );
  }

  async function cancel(runId = self.state.run && !isTerminal(self.state.run) ? self.state.run.run_id : undefined) {
    if (!self.alive || runId == null) return;
    const c = track();
    try {
      await requestJson(self.settings.fetch, url(`/runs/${runId}`), { method: "DELETE", signal: c.signal });
      emit(scope(), "changed");
    } catch (err) {
      if (!c.signal.aborted) set({ error: toJobError(err) });
    } finally {
      release(c);
    }
  }

  return { set, start, repair, cancel, refresh };
}

const RUNS_INITIAL = Object.freeze({ runs: [], error: null, loading: true });

/**
 * The job's recent runs, newest first (`limit`, default 10, clamped by the server to 1..100),
 * refreshed when a run started, cancelled or repaired from this page moves or ends, and every
 * `refreshIntervalMs` if given. `cancel(runId)` and `repair(runId, options?)` act on one run.
 * `startedBy: "me"` lists only the runs the page's user started (the server reads who from the
 * headers Databricks Apps forwards); any other value, that person's.
 */
export function useJobRuns(jobKey, options = {}) {
  const settings = useSettings(options);
  const limit = options.limit ?? 10;
  const startedBy = options.startedBy ?? null;
  const interval = options.refreshIntervalMs ?? 0;
  const [state, setState] = useState(RUNS_INITIAL);
  const ref = useRef(null);
  if (ref.current === null) ref.current = { alive: false, current: null, controllers: new Set() };
  const self = ref.current;
  self.settings = settings;
  self.jobKey = jobKey;
  self.limit = limit;
  self.startedBy = startedBy;
  if (!self.api) self.api = createRunsApi(self, setState);

  useEffect(() => {
    self.alive = true;
    self.api.refresh();
    const unsubscribe = subscribe(scopeOf(settings.basePath, jobKey), () => self.api.refresh());
    const timer = interval > 0 ? setInterval(() => self.api.refresh(), interval) : null;
    return () => {
      self.alive = false;
      unsubscribe();
      clearInterval(timer);
      for (const c of self.controllers) c.abort();
      self.controllers.clear();
      self.current = null;
    };
  }, [jobKey, settings.basePath, limit, interval, startedBy]);

  return useMemo(() => ({ ...state, refresh: self.api.refresh, cancel: self.api.cancel, repair: self.api.repair }), [state]);
}

function createRunsApi(self, setState) {
  const set = (patch) => {
    if (self.alive) setState((s) => ({ ...s, ...patch }));
  };
  const url = (path) => jobUrl(self.settings, self.jobKey, path);
  const track = () => {
    const c = new AbortController();
    self.controllers.add(c);
    return c;
  };

  async function refresh() {
    if (!self.alive) return;
    self.current?.abort(); // the newest answer wins
    const c = track();
    self.current = c;
    set({ loading: true });
    try {
      const who = self.startedBy === null ? "" : `&startedBy=${encodeURIComponent(self.startedBy)}`;
      const body = await requestJson(self.settings.fetch, url(`/runs?limit=${encodeURIComponent(self.limit)}${who}`), { signal: c.signal });
      if (!c.signal.aborted) set({ runs: Array.isArray(body?.runs) ? body.runs : [], error: null, loading: false });
    } catch (err) {
      if (!c.signal.aborted) set({ error: toJobError(err), loading: false });
    } finally {
      self.controllers.delete(c);
      if (self.current === c) self.current = null;
    }
  }

  async function act(method, path, body) {
    if (!self.alive) return;
    const c = track();
    try {
      await requestJson(self.settings.fetch, url(path), { method, body, signal: c.signal });
      emit(scopeOf(self.settings.basePath, self.jobKey), "external");
    } catch (err) {
      if (!c.signal.aborted) set({ error: toJobError(err) });
    } finally {
      self.controllers.delete(c);
    }
  }

  const cancel = (runId) => act("DELETE", `/runs/${runId}`);
  const repair = (runId, options = {}) =>
    act("POST", `/runs/${runId}/repair`, repairChoice(options));
  return { refresh, cancel, repair };
}

/**
 * The hooks with a server config's types (no runtime effect):
 * `const { useJob, useJobRuns } = typedJobHooks<typeof jobsConfig>()`.
 */
export function typedJobHooks() {
  return { useJob, useJobRuns, useJobConfig };
}

export { fieldErrors, formFields, isRepairable, isTerminal, lifeCycleState, paramsFromValues, resultOf, startedByLabel, startedByTitle, timelineModel } from "./model.mjs";
