// Helpers shared by the route, AppKit and demo tests (not a test file itself).
import net from "node:net";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/** The emulator on 127.0.0.1:0 with its sample jobs (1001 nightly-etl ... 1009). */
export async function startEmu(options = {}) {
  const { startEmulator } = require("../index.js");
  return startEmulator({ port: 0, ...options });
}

/** Env for a plugin pointed at the emulator, with job keys → ids. */
export function emuEnv(emu, jobs) {
  const env = { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token };
  for (const [key, id] of Object.entries(jobs)) env[`DATABRICKS_JOB_${key.toUpperCase()}`] = String(id);
  return env;
}

/** Requests the emulator saw whose path ends with `suffix`. */
export function requestsTo(emu, suffix) {
  return emu.requests().filter((r) => r.path.endsWith(suffix));
}

/** Parses SSE text into `[{ id, event, data }]` (data JSON-parsed) and counts heartbeat comments. */
export function parseSse(text) {
  const events = [];
  let heartbeats = 0;
  for (const block of text.replace(/\r\n/g, "\n").split("\n\n")) {
    if (block.trim() === "") continue;
    let id = null;
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) {
        if (line.trim() === ": heartbeat") heartbeats++;
        continue;
      }
      if (line.startsWith("id: ")) id = line.slice(4);
      else if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    if (data.length) events.push({ id, event, data: JSON.parse(data.join("\n")) });
  }
  return { events, heartbeats };
}

/** Reads a fetch Response body to its end as text. */
export async function readAll(response) {
  return response.text();
}

export function isTerminalRun(run) {
  const s = run?.state?.life_cycle_state;
  return s === "TERMINATED" || s === "SKIPPED" || s === "INTERNAL_ERROR" || run?.status?.state === "TERMINATED";
}

/** Waits until `cond()` is true (checked every 25 ms, gives up after `ms`). */
export async function eventually(cond, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * A TCP proxy to `port` on 127.0.0.1 that, once, cuts the first connection whose response
 * has carried an SSE event (`event: message`). `cuts` counts the connections it cut.
 */
export async function startCuttingProxy(port) {
  const sockets = new Set();
  const state = { cuts: 0, armed: true };
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    client.on("close", () => sockets.delete(client));
    upstream.on("close", () => sockets.delete(upstream));
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.pipe(upstream);
    let seen = "";
    upstream.on("data", (chunk) => {
      if (!client.destroyed) client.write(chunk);
      if (!state.armed) return;
      seen += chunk.toString("latin1");
      if (seen.includes("event: message")) {
        state.armed = false;
        state.cuts++;
        // Let the event reach the client first, then drop both sides.
        setTimeout(() => {
          client.destroy();
          upstream.destroy();
        }, 20);
      }
    });
    upstream.on("end", () => client.end());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    state,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
