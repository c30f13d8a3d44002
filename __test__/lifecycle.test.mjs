// Lifecycle: Node exits on its own after code that aborts, times out or abandons iterators and
// streams (each scenario runs in a child process that ends without process.exit; the test
// only checks that it exits, with a generous limit as a hang guard), and
// abortActiveOperations() cuts every stream of an active run. The soak of 100,000 polls with levelled memory and
// no leftover tasks or connections is a Rust test (crates/core/src/reliability_tests.rs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const HANG_GUARD_MS = 60_000;

/** Runs `body` (an async ESM snippet with `api`, `emu`, `env`, helpers in scope) in a child node. */
function runChild(body) {
  const script = `
    import { createRequire } from "node:module";
    const require = createRequire(${JSON.stringify(ROOT + "/")});
    const { createJobs, startEmulator } = require("./lib/index.js");
    const { createJobsHandler } = require("./lib/http.js");
    const http = require("node:http");
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const emu = await startEmulator({ timeScale: 0 });
    const env = { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "1001" };
    const api = createJobs({ pollIntervalMs: 20, jobs: { etl: { taskType: "notebook" } } }, { env });
    ${body}
    console.log("END-OF-SCRIPT");
  `;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (c) => (out += c));
    child.stderr.on("data", (c) => (out += c));
    const guard = setTimeout(() => child.kill("SIGKILL"), HANG_GUARD_MS);
    child.on("exit", (code, signal) => {
      clearTimeout(guard);
      resolve({ code, signal, out });
    });
  });
}

async function assertExits(body) {
  const { code, signal, out } = await runChild(body);
  assert.equal(signal, null, `the child hung and was killed:\n${out}`);
  assert.equal(code, 0, out);
  assert.match(out, /END-OF-SCRIPT/);
  return out;
}

test("exits after an aborted runAndWait and an aborted watchRun", { timeout: HANG_GUARD_MS + 5_000 }, async () => {
  await assertExits(`
    const ac = new AbortController();
    const it = api("etl").runAndWait({}, ac.signal)[Symbol.asyncIterator]();
    await it.next();
    const pending = it.next(); // the run is frozen: this waits
    ac.abort();
    if (!(await pending).done) throw new Error("abort did not end the iterator");
    const runId = (await api("etl").runNow()).data.run_id;
    const ac2 = new AbortController();
    const w = api("etl").watchRun(runId, ac2.signal);
    setTimeout(() => ac2.abort(), 50);
    for await (const _ of w) {}
  `);
});

test("exits after a poll timeout (waitTimeout) and a request timeout", { timeout: HANG_GUARD_MS + 5_000 }, async () => {
  await assertExits(`
    const short = createJobs({ timeout: 200, pollIntervalMs: 20, jobs: { etl: { waitTimeout: 300 } } }, { env });
    let code;
    try { for await (const _ of short("etl").runAndWait()) {} } catch (e) { code = e.code; }
    if (code !== "POLL_TIMEOUT") throw new Error("expected POLL_TIMEOUT, got " + code);
    emu.injectFault({ path: "/api/2.2/jobs/get", delayMs: 5_000 });
    const r = await short("etl").getJob();
    if (r.status !== 504) throw new Error("expected 504, got " + JSON.stringify(r));
  `);
});

test("exits with iterators abandoned after an update, never closed, emulator never stopped", { timeout: HANG_GUARD_MS + 5_000 }, async () => {
  await assertExits(`
    for (let i = 0; i < 5; i++) {
      const it = api("etl").runAndWait()[Symbol.asyncIterator]();
      await it.next(); // one update, then the iterator is dropped: its poll goes on in Rust
    }
    const runId = (await api("etl").runNow()).data.run_id;
    for await (const _ of api("etl").watchRun(runId)) break;
    const w = api("etl").watchRun(runId)[Symbol.asyncIterator]();
    await w.next();
    await sleep(100);
    // no close(), no emu.stop(): nothing may keep the process alive
  `);
});

test("a next() left pending keeps Node alive like a timer would; close() releases it", { timeout: HANG_GUARD_MS + 5_000 }, async () => {
  // A pending next() is a wait someone may still be awaiting (a script's top-level
  // for-await), so it holds the event loop until the run ends, waitTimeout passes, or it is
  // aborted / returned / closed. close() on the callable (or abortActiveOperations on the
  // plugin) ends every such wait.
  await assertExits(`
    const pending = [];
    for (let i = 0; i < 5; i++) {
      const it = api("etl").runAndWait()[Symbol.asyncIterator]();
      await it.next();
      pending.push(it.next()); // the run is frozen: this would wait for waitTimeout (10 min)
    }
    await sleep(100);
    const settled = Promise.allSettled(pending);
    api.close();
    const ends = await settled;
    if (!ends.every((e) => e.status === "rejected" && e.reason.code === "SHUTTING_DOWN")) throw new Error("close() left a wait open, or ended it as if done");
  `);
});

test("exits with an SSE stream left open by a client that went away, and the server closed", { timeout: HANG_GUARD_MS + 5_000 }, async () => {
  await assertExits(`
    const handler = createJobsHandler({ pollIntervalMs: 20, env, jobs: { etl: { taskType: "notebook" } } });
    const server = http.createServer(handler);
    await new Promise((r) => server.listen(0, "127.0.0.1", r));
    const base = "http://127.0.0.1:" + server.address().port;
    const ac = new AbortController();
    const res = await fetch(base + "/api/jobs/etl/run?stream=true", { method: "POST", signal: ac.signal });
    const reader = res.body.getReader();
    await reader.read();
    ac.abort();
    const res2 = await fetch(base + "/api/jobs/etl/run?stream=true", { method: "POST" });
    await res2.body.getReader().read(); // second stream left open by the client
    server.closeAllConnections();
    server.close();
  `);
});

test("abortActiveOperations cuts every open stream and ends every iterator; Node then exits", { timeout: HANG_GUARD_MS + 5_000 }, async () => {
  const out = await assertExits(`
    const handler = createJobsHandler({ pollIntervalMs: 20, env, jobs: { etl: { taskType: "notebook" } } });
    const server = http.createServer(handler);
    await new Promise((r) => server.listen(0, "127.0.0.1", r));
    const base = "http://127.0.0.1:" + server.address().port;
    const ends = [];
    for (let i = 0; i < 10; i++) {
      const res = await fetch(base + "/api/jobs/etl/run?stream=true", { method: "POST" });
      ends.push(res.text().then(() => "ended", () => "cut"));
    }
    const its = [];
    for (let i = 0; i < 5; i++) {
      const it = handler.jobs("etl").runAndWait()[Symbol.asyncIterator]();
      await it.next();
      its.push(it.next());
    }
    while (handler.plugin.activeStreamCount() < 10) await sleep(10);
    const settled = Promise.allSettled(its);
    handler.plugin.abortActiveOperations();
    if (!(await Promise.all(ends)).every((e) => e === "cut")) throw new Error("a stream of an active run ended cleanly");
    const done = await settled;
    if (!done.every((d) => d.reason?.code === "SHUTTING_DOWN")) throw new Error("an iterator survived abortActiveOperations");
    while (handler.plugin.activeStreamCount() > 0) await sleep(10);
    console.log("STREAMS-ENDED", ends.length, its.length);
    server.close();
    await emu.stop();
  `);
  assert.match(out, /STREAMS-ENDED 10 5/);
});
