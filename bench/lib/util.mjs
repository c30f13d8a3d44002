// Small helpers of the benchmark: child processes, the emulator's control API, number formatting.
import { fork, spawn } from "node:child_process";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const BENCH_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const ROOT = path.dirname(BENCH_DIR);

/** Starts bench/lib/emulator-proc.mjs; resolves `{ url, token, pid, stop() }` once it listens. */
export function startEmulatorProcess(options, { timeoutMs = 30_000, env = process.env } = {}) {
  const child = spawn(process.execPath, [path.join(BENCH_DIR, "lib", "emulator-proc.mjs"), JSON.stringify(options)], {
    cwd: ROOT,
    // The addon's runtime has one worker unless told otherwise; the emulator (the workspace of
    // every row) keeps the two it had, so that rows stay comparable with earlier rounds.
    env: { TOKIO_WORKER_THREADS: "2", ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (c) => {
    stderr = (stderr + c).slice(-4000);
  });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`emulator did not start within ${timeoutMs} ms: ${stderr}`));
    }, timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`emulator exited (${code}) before listening: ${stderr}`));
    });
    child.stdout.on("data", (c) => {
      out += c;
      const line = out.split("\n").find((l) => l.startsWith("EMULATOR "));
      if (!line) return;
      clearTimeout(timer);
      child.removeAllListeners("exit");
      child.stdout.removeAllListeners("data");
      child.stdout.resume();
      const info = JSON.parse(line.slice("EMULATOR ".length));
      resolve({
        ...info,
        stop: () =>
          new Promise((r) => {
            if (child.exitCode !== null) return r();
            const kill = setTimeout(() => child.kill("SIGKILL"), 5000);
            child.once("exit", () => {
              clearTimeout(kill);
              r();
            });
            child.kill("SIGTERM");
          }),
      });
    });
  });
}

const controlAgent = new http.Agent({ keepAlive: true, maxSockets: 4 });

/**
 * A request to the emulator's control API (`/__emulator/...`); resolves the parsed JSON body. A
 * kept-alive socket the server closed meanwhile (ECONNRESET before any answer) is tried again.
 */
export async function control(emu, method, route, body) {
  try {
    return await controlOnce(emu, method, route, body);
  } catch (err) {
    if (err?.code !== "ECONNRESET") throw err;
    return controlOnce(emu, method, route, body);
  }
}

function controlOnce(emu, method, route, body) {
  const url = new URL(`/__emulator/${route}`, emu.url);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method,
        agent: controlAgent,
        headers: payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {},
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          if (res.statusCode >= 300) return reject(new Error(`emulator control ${method} ${route}: ${res.statusCode}`));
          resolve(text ? JSON.parse(text) : {});
        });
        res.on("error", reject);
      },
    );
    req.setTimeout(60_000, () => req.destroy(new Error(`emulator control ${method} ${route} timed out`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/** Counts of the emulator's logged Jobs API requests: run-now, runs/get (total and per run id), other. */
export async function upstreamCounts(emu) {
  const { requests } = await control(emu, "GET", "requests");
  const counts = { total: 0, runNow: 0, runsGet: 0, other: 0, errors: 0, perRun: new Map() };
  for (const r of requests) {
    if (!r.path.includes("/jobs/")) continue; // SCIM Me and the like: AppKit's boot, not the plugin
    counts.total++;
    if (r.status >= 400 || r.status === 0) counts.errors++;
    if (r.path.endsWith("/jobs/run-now")) counts.runNow++;
    else if (r.path.endsWith("/jobs/runs/get")) {
      counts.runsGet++;
      const id = new URLSearchParams(r.query).get("run_id");
      counts.perRun.set(id, (counts.perRun.get(id) ?? 0) + 1);
    } else counts.other++;
  }
  return counts;
}

/**
 * Forks bench/lib/app-proc.mjs with `task`; `onMessage(msg, child)` sees every message;
 * resolves the `result` message. Killed (and rejected) after `timeoutMs`.
 */
export function runChild(task, env, { timeoutMs, onMessage } = {}) {
  const child = fork(path.join(BENCH_DIR, "lib", "app-proc.mjs"), [JSON.stringify(task)], {
    cwd: ROOT,
    env,
    execArgv: ["--expose-gc", ...(task.cpuProf ? ["--cpu-prof", `--cpu-prof-dir=${task.cpuProf}`] : [])],
    stdio: ["ignore", "ignore", "pipe", "ipc"],
    serialization: "advanced",
  });
  let stderr = "";
  child.stderr.on("data", (c) => {
    stderr = (stderr + c).slice(-4000);
  });
  return new Promise((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill("SIGKILL");
      reject(new Error(`${task.side}/${task.scenario} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on("message", (msg) => {
      if (msg.type === "result" && !settled) {
        settled = true;
        clearTimeout(timer);
        resolve(msg.result);
      } else if (msg.type === "error" && !settled) {
        settled = true;
        clearTimeout(timer);
        reject(new Error(`${task.side}/${task.scenario} failed: ${msg.message}`));
      } else onMessage?.(msg, child);
    });
    child.once("exit", (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${task.side}/${task.scenario} exited (${code ?? signal}) without a result: ${stderr.trim()}`));
    });
  });
}

export function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** Formats a number with `digits` significant decimals; "-" when not a finite number. */
export function fmt(x, digits = 2) {
  if (typeof x === "string") return x;
  if (x == null || !Number.isFinite(x)) return "-";
  if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString("en-US");
  if (Math.abs(x) >= 100) return x.toFixed(Math.max(0, digits - 2));
  if (Math.abs(x) >= 10) return x.toFixed(Math.max(0, digits - 1));
  return x.toFixed(digits);
}

export const MB = 1024 * 1024;
export const KB = 1024;

/** A markdown table from rows of cells. */
export function table(header, rows) {
  const all = [header, ...rows].map((r) => r.map((c) => String(c ?? "")));
  const widths = header.map((_, i) => Math.max(3, ...all.map((r) => r[i].length)));
  const line = (r) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [line(all[0]), `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`, ...all.slice(1).map(line)].join("\n");
}
