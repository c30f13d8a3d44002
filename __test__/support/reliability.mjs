// Helpers of the reliability suites (faults, hostile input, secrets, identity, lifecycle).
// Not a test file. Every helper that starts something registers its cleanup on the node:test
// context it is given.
import http from "node:http";
import { STATUS_CODES } from "node:http";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { startEmulator, createJobs } = require("../../index.js");
const { createJobsHandler } = require("../../http.js");

export { STATUS_CODES };

/** Sample job ids of the emulator. */
export const ETL = 1001;
export const REPORT = 1002;

/** An emulator for the duration of `t`. Time is frozen unless `timeScale` is given. */
export async function emulator(t, options = {}) {
  const emu = await startEmulator({ timeScale: 0, ...options });
  t.after(() => emu.stop());
  return emu;
}

/** PAT env of `emu` plus `DATABRICKS_JOB_<KEY>` for each `{ key: id }`. */
export function patEnv(emu, jobs = { etl: ETL }) {
  const env = { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token };
  for (const [k, id] of Object.entries(jobs)) env[`DATABRICKS_JOB_${k.toUpperCase()}`] = String(id);
  return env;
}

/** OAuth M2M env of `emu` (client id + secret, no PAT). */
export function oauthEnv(emu, jobs = { etl: ETL }) {
  const env = { DATABRICKS_HOST: emu.url, DATABRICKS_CLIENT_ID: emu.clientId, DATABRICKS_CLIENT_SECRET: emu.clientSecret };
  for (const [k, id] of Object.entries(jobs)) env[`DATABRICKS_JOB_${k.toUpperCase()}`] = String(id);
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

export const API = {
  runNow: "/api/2.2/jobs/run-now",
  getRun: "/api/2.2/jobs/runs/get",
  listRuns: "/api/2.2/jobs/runs/list",
  getOutput: "/api/2.2/jobs/runs/get-output",
  cancel: "/api/2.2/jobs/runs/cancel",
  getJob: "/api/2.2/jobs/get",
  token: "/oidc/v1/token",
};

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` holds (every 10 ms); throws after `ms` so a test never hangs. */
export async function until(cond, ms = 10_000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await sleep(10);
  }
}

/** A node:http server on 127.0.0.1:0 serving `handler`; returns its base URL. Closed when `t` ends. */
export async function serve(t, handler) {
  const server = http.createServer((req, res) => handler(req, res));
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(
    () =>
      new Promise((resolve) => {
        handler.close?.();
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  );
  return `http://127.0.0.1:${server.address().port}`;
}

/** createJobsHandler + serve: `{ base, handler, plugin }`. */
export async function routes(t, config) {
  const handler = createJobsHandler(config);
  const base = await serve(t, handler);
  return { base, handler, plugin: handler.plugin };
}

/** Parses SSE text: `[{ id, event, data }]` (data JSON-parsed when it is JSON). */
export function sseEvents(text) {
  const events = [];
  for (const block of text.replace(/\r\n/g, "\n").split("\n\n")) {
    let id = null;
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":") || line === "") continue;
      if (line.startsWith("id: ")) id = line.slice(4);
      else if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    if (data.length === 0) continue;
    let parsed = data.join("\n");
    try {
      parsed = JSON.parse(parsed);
    } catch {
      // keep the text
    }
    events.push({ id, event, data: parsed });
  }
  return events;
}

/**
 * Opens an SSE response and reads it incrementally: `events()` are those seen so far,
 * `done` resolves to the full text when the server ends the response (or the reader is aborted).
 */
export async function openSse(url, init = {}) {
  const controller = new AbortController();
  const res = await fetch(url, { ...init, signal: controller.signal });
  let text = "";
  const decoder = new TextDecoder();
  const done = (async () => {
    try {
      for await (const chunk of res.body) text += decoder.decode(chunk, { stream: true });
    } catch {
      // aborted by the test
    }
    return text;
  })();
  return {
    res,
    events: () => sseEvents(text),
    text: () => text,
    done,
    abort: () => controller.abort(),
  };
}

/** Drains an async iterator of run updates: `{ updates, error }`. */
export async function drain(iterable) {
  const updates = [];
  try {
    for await (const u of iterable) updates.push(u);
    return { updates, error: null };
  } catch (error) {
    return { updates, error };
  }
}

/** Last life-cycle state of a list of updates or SSE message events. */
export function lastState(items) {
  const last = items.at(-1);
  const run = last?.run ?? last?.data?.run;
  return run?.state?.life_cycle_state ?? null;
}

/** A small seeded PRNG (mulberry32), so generated inputs are reproducible. */
export function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (items) => items[Math.floor(next() * items.length)],
    bool: (p = 0.5) => next() < p,
  };
}
