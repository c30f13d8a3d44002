// `npm run demo`: a page to trigger and follow jobs, served by a plain node:http server with the
// standalone handler of appkit-jobs (no AppKit needed at runtime).
//
// - Without DATABRICKS_HOST: starts the bundled Jobs API emulator with sample jobs and points
//   the plugin at it.
// - With DATABRICKS_HOST and credentials (DATABRICKS_TOKEN, or DATABRICKS_CLIENT_ID +
//   DATABRICKS_CLIENT_SECRET, or a ~/.databrickscfg profile) and DATABRICKS_JOB_<NAME>=<id>
//   variables: uses that workspace and those jobs.
//
// Options: PORT (default 8000; 0 picks a free port), HOST (default 127.0.0.1),
// DEMO_TIME_SCALE (emulator speed, default 1), DEMO_POLL_MS (default 1000).
import http from "node:http";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { DEMO_JOBS } from "./jobs.mjs";

export { DEMO_JOBS };

const require = createRequire(import.meta.url);
const { createJobsHandler } = require("appkit-jobs/http");

const here = dirname(fileURLToPath(import.meta.url));
const PUBLIC = join(here, "public");
const SHARED = join(here, "..", "lib", "react");
const STATIC = {
  "/": [join(PUBLIC, "index.html"), "text/html; charset=utf-8"],
  "/index.html": [join(PUBLIC, "index.html"), "text/html; charset=utf-8"],
  "/app.js": [join(PUBLIC, "app.js"), "text/javascript; charset=utf-8"],
  "/style.css": [join(PUBLIC, "style.css"), "text/css; charset=utf-8"],
  // The plain page reads runs and SSE with appkit-jobs/react's own pure helpers (no React in them).
  "/shared/model.mjs": [join(SHARED, "model.mjs"), "text/javascript; charset=utf-8"],
  "/shared/stream.mjs": [join(SHARED, "stream.mjs"), "text/javascript; charset=utf-8"],
};
/** The React page (appkit-jobs/react), built on its first request: see react/build.mjs. */
const REACT = {
  "/react.html": ["html", "text/html; charset=utf-8"],
  "/react.js": ["js", "text/javascript; charset=utf-8"],
  "/react.css": ["css", "text/css; charset=utf-8"],
};

/**
 * Starts the demo. Returns `{ url, server, handler, emulator, mode, close() }`.
 * @param {{ port?: number, host?: string, env?: Record<string, string|undefined>, timeScale?: number,
 *   pollIntervalMs?: number, log?: (msg: string) => void }} [options]
 */
export async function startDemo(options = {}) {
  const env = { ...(options.env ?? process.env) };
  const log = options.log ?? ((msg) => console.log(msg));
  const host = options.host ?? env.HOST ?? "127.0.0.1";
  const port = options.port ?? (env.PORT !== undefined ? Number(env.PORT) : 8000);
  const pollIntervalMs = options.pollIntervalMs ?? (Number(env.DEMO_POLL_MS) || 1000);

  let emulator = null;
  let mode = "workspace";
  let jobsConfig;
  // An instance of the fleet demo (demo/fleet.mjs): the emulator is the fleet's, the jobs the demo's.
  const instance = env.DEMO_INSTANCE;
  if (instance && env.DEMO_JOBS) {
    mode = "emulator";
    jobsConfig = Object.fromEntries(Object.entries(DEMO_JOBS).map(([key, job]) => [key, job.config]));
  } else if (!env.DATABRICKS_HOST) {
    mode = "emulator";
    const { startEmulator } = require("appkit-jobs");
    const timeScale = options.timeScale ?? (Number(env.DEMO_TIME_SCALE) || 1);
    emulator = await startEmulator({ port: 0, timeScale });
    env.DATABRICKS_HOST = emulator.url;
    env.DATABRICKS_TOKEN = emulator.token;
    delete env.DATABRICKS_CLIENT_ID;
    delete env.DATABRICKS_CLIENT_SECRET;
    delete env.DATABRICKS_CONFIG_PROFILE;
    for (const name of Object.keys(env)) if (name.startsWith("DATABRICKS_JOB_")) delete env[name];
    jobsConfig = {};
    for (const [key, job] of Object.entries(DEMO_JOBS)) {
      env[`DATABRICKS_JOB_${key.toUpperCase()}`] = String(job.id);
      jobsConfig[key] = job.config;
    }
  }

  const handler = createJobsHandler({ jobs: jobsConfig, pollIntervalMs, env, heartbeatMs: options.heartbeatMs });
  const pageConfig = async () => ({
    mode,
    host: mode === "workspace" ? String(env.DATABRICKS_HOST).replace(/^(?!https?:\/\/)/, "https://") : undefined,
    jobs: (await handler.loadClientConfig()).jobs,
  });

  let reactPage = null;
  const reactFile = async (kind) => {
    if (kind === "html") return readFile(join(here, "react", "index.html"));
    reactPage ??= import("./react/build.mjs").then(({ buildReactPage }) => buildReactPage({ log }));
    return (await reactPage)[kind];
  };

  const server = http.createServer((req, res) => {
    if (instance) res.setHeader("X-Demo-Instance", instance);
    handler(req, res, async () => {
      const path = new URL(req.url ?? "/", "http://localhost").pathname;
      if (instance && req.method === "GET" && path === "/__demo/instance") {
        // What this instance of the fleet is doing, for the fleet demo's page.
        const engine = handler.plugin._runtime.native.engineMetrics();
        res.setHeader("Content-Type", "application/json; charset=utf-8");
        res.setHeader("Cache-Control", "no-store");
        return res.end(JSON.stringify({ instance, pid: process.pid, ledger: handler.plugin.exports().ledgerStatus(), runsWatched: engine.runsWatched, polls: engine.polls }));
      }
      if (req.method === "GET" && path === "/config.json") {
        res.setHeader("Content-Type", "application/json; charset=utf-8");
        res.setHeader("Cache-Control", "no-store");
        return res.end(JSON.stringify(await pageConfig()));
      }
      if (req.method === "GET" && REACT[path]) {
        try {
          const body = await reactFile(REACT[path][0]);
          res.setHeader("Content-Type", REACT[path][1]);
          res.setHeader("Cache-Control", "no-cache");
          return res.end(body);
        } catch (err) {
          log(`appkit-jobs demo: the React page could not be built: ${err.message}`);
          res.statusCode = 500;
          res.setHeader("Content-Type", "text/plain; charset=utf-8");
          return res.end("The React page could not be built (it needs the devDependencies: npm install).");
        }
      }
      const file = req.method === "GET" ? STATIC[path] : undefined;
      if (!file) {
        res.statusCode = 404;
        res.setHeader("Content-Type", "text/plain; charset=utf-8");
        return res.end("Not Found");
      }
      try {
        const body = await readFile(file[0]);
        res.setHeader("Content-Type", file[1]);
        res.setHeader("Cache-Control", "no-cache");
        res.end(body);
      } catch {
        res.statusCode = 500;
        res.end("Internal Server Error");
      }
    }).catch(() => {
      if (!res.headersSent) res.statusCode = 500;
      res.end();
    });
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  const address = server.address();
  if (instance) console.log(JSON.stringify({ demoPort: address.port }));
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${address.port}/`;
  const jobKeys = Object.keys(handler.clientConfig().jobs);
  log(
    instance
      ? `appkit-jobs demo: instance ${instance} (pid ${process.pid}) of the fleet, ledger ${handler.plugin.exports().ledgerStatus().store}`
      : mode === "emulator"
      ? `appkit-jobs demo: Jobs API emulator at ${emulator.url} with sample jobs (${jobKeys.join(", ")})`
      : `appkit-jobs demo: workspace ${env.DATABRICKS_HOST}, jobs: ${jobKeys.join(", ") || "(none: set DATABRICKS_JOB_<NAME>=<id>)"}`,
  );
  if (!instance) log(`appkit-jobs demo: open ${url} (the same on appkit-jobs/react's components: ${url}react.html)`);

  let closed = false;
  async function close() {
    if (closed) return;
    closed = true;
    handler.close();
    server.closeAllConnections?.();
    await new Promise((resolve) => server.close(() => resolve()));
    if (emulator) await emulator.stop();
  }
  return { url, server, handler, emulator, mode, close };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // `npm run demo -- --instances 2`: a fleet of instances on one PostgreSQL, behind one port.
  const at = process.argv.indexOf("--instances");
  const instances = at > 0 ? Number(process.argv[at + 1]) : 1;
  if (at > 0 && !(Number.isInteger(instances) && instances >= 1 && instances <= 5)) {
    console.error("appkit-jobs demo: --instances takes 1 to 5 (Databricks Apps runs 1 to 5 instances)");
    process.exit(1);
  }
  const start = at > 0 ? () => import("./fleet.mjs").then(({ startFleetDemo }) => startFleetDemo({ instances })) : () => startDemo();
  const demo = await start().catch((err) => {
    console.error(`appkit-jobs demo: ${err.message}`);
    process.exit(1);
  });
  const stop = () => demo.close().then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
