// One click, one run, whatever the connection or a deployment does. A browser-side client,
// AppKit UI's own connectSSE (unmodified), follows `POST /api/jobs/:jobKey/run?stream=true` and
// the repair stream of real AppKit apps (child processes) while the network misbehaves:
//   1. every run-now answer is lost (the workspace carries each one out);
//   2. the connection drops after the stream opened, before the first state;
//   3. the same on a repair;
//   4. a rolling deploy: the instance serving the stream gets SIGTERM, a second one takes over.
// Each case counts what the workspace did (runs started, repairs made): one is the only pass.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { connectSSE } from "@databricks/appkit-ui/js";
import { API, at, emulator, patEnv } from "./support/emulator.mjs";
import { startBalancer, startTimedCutProxy } from "./support/http.mjs";
import { until } from "./support/util.mjs";

const APP = fileURLToPath(new URL("./support/appkit-app.mjs", import.meta.url));
const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** A job that runs about 3 s at the emulator's real-time pace, and one that fails (to repair). */
const JOBS = [
  { id: 1001, name: "etl", queueMs: 100, pendingMs: 400, durationMs: 2500, terminatingMs: 100 },
  { id: 1002, name: "report", outcome: "FAILED", queueMs: 0, pendingMs: 300, durationMs: 1200, terminatingMs: 100, tasks: [{ taskKey: "load" }, { taskKey: "report" }] },
];

/** A real AppKit app in a child process; killed when `t` ends if it is still running. */
async function startApp(t, emu) {
  const env = { ...process.env, ...patEnv(emu, { etl: 1001, report: 1002 }) };
  delete env.NODE_ENV;
  delete env.DATABRICKS_JOB_ID;
  const child = spawn(process.execPath, [APP], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  const lines = [];
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
        return; // AppKit's own log lines
      }
      lines.push(message);
      if (message.port) resolve(message.port);
    });
    exited.then(({ code }) => reject(new Error(`the app exited (${code}) before listening:\n${stderr}`)));
  });
  return { port, child, lines, exited, stderr: () => stderr };
}

/**
 * Follows a stream with connectSSE as a page would: `{ messages, errors, timeline }` once it
 * stops (`timeline`: "opening", "state", "error event" and "drop", in the order seen).
 */
async function follow(url, payload, onMessage = () => {}) {
  const messages = [];
  const errors = [];
  const timeline = [];
  await connectSSE({
    url,
    payload,
    retryDelay: 50,
    maxRetries: 3,
    onMessage: (m) => {
      const message = { id: m.id, data: JSON.parse(m.data) };
      messages.push(message);
      timeline.push(message.data.accepted ? "opening" : message.data.error ? "error event" : "state");
      onMessage(message, messages);
    },
    onError: (e) => {
      errors.push(e);
      timeline.push("drop");
    },
  });
  return { messages, errors, timeline };
}

/** The run with its repair history, read from the workspace itself. */
async function runWithHistory(emu, runId) {
  const res = await fetch(`${emu.url}/api/2.2/jobs/runs/get?run_id=${runId}&include_history=true`, {
    headers: { authorization: `Bearer ${emu.token}` },
  });
  return res.json();
}

const tokens = (emu) => at(emu, API.runNow).map((r) => r.body.idempotency_token);
const repairRequests = (emu) => at(emu, "/api/2.2/jobs/runs/repair");
const isState = (m) => m.data.accepted === undefined && m.data.error === undefined;

/** The updates after the opening event follow one run, in order, to its terminal state. */
function assertFollowedToTheEnd(messages, runId) {
  const updates = messages.filter(isState);
  assert.ok(updates.length >= 1, JSON.stringify(messages));
  for (const u of updates) assert.equal(u.data.run.run_id, runId);
  const seqs = updates.map((u) => Number(u.id.split(":")[1]));
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `ids increase: ${updates.map((u) => u.id)}`);
  assert.equal(updates.at(-1).data.status, "TERMINATED", JSON.stringify(updates.at(-1).data.run.state));
}

test("1. every run-now answer lost: one run in the workspace, and the page sees the one error", { timeout: 60_000 }, async (t) => {
  const emu = await emulator(t, { jobs: JOBS, timeScale: 0 });
  const app = await startApp(t, emu);
  // The workspace carries out each run-now, then the connection is reset: enough times to
  // cover every attempt of our write tier.
  emu.injectFault({ path: API.runNow, loseResponse: true, times: 20 });
  const { messages, errors } = await follow(`http://127.0.0.1:${app.port}/api/jobs/etl/run?stream=true`, {});
  assert.deepEqual(errors, [], "a clean end: connectSSE does not retry");
  const [opening, failure, ...rest] = messages;
  assert.match(opening.id, /^start:1001-/);
  assert.deepEqual(opening.data.accepted, "run");
  assert.deepEqual(failure.data, { error: "Failed to trigger job run: Bad Gateway", code: "NETWORK_ERROR" });
  assert.deepEqual(rest, []);
  assert.equal(emu.runCount(), 1, "one run for one click");
  assert.ok(tokens(emu).length >= 2, "our retries were sent");
  assert.deepEqual(new Set(tokens(emu)), new Set([opening.id.slice("start:".length)]), "every run-now carried the stream's token");
});

test("2. a drop after the stream opened and before the first state resumes the same run", { timeout: 60_000 }, async (t) => {
  const emu = await emulator(t, { jobs: JOBS, timeScale: 1 });
  const app = await startApp(t, emu);
  // The first poll of the run is slow; the connection drops 600 ms after the opening event.
  emu.injectFault({ path: API.getRun, delayMs: 5_000, times: 1 });
  const proxy = await startTimedCutProxy(app.port, 600);
  t.after(() => proxy.close());
  const { messages, errors, timeline } = await follow(`http://127.0.0.1:${proxy.port}/api/jobs/etl/run?stream=true`, {});
  assert.equal(proxy.state.cuts, 1);
  assert.equal(errors.length, 1, "connectSSE saw the drop once");
  assert.deepEqual(timeline.slice(0, 3), ["opening", "drop", "state"], "dropped before the first state");
  const [opening] = messages;
  assert.equal(opening.data.accepted, "run");
  assert.equal(messages.filter((m) => m.data.accepted).length, 1, "the resumed stream does not open twice");
  assert.equal(emu.runCount(), 1, "one run for one click");
  const token = opening.id.slice("start:".length);
  assert.deepEqual(tokens(emu), [token, token], "the reconnect re-sent run-now with the same token");
  const runId = messages.find(isState).data.run.run_id;
  assertFollowedToTheEnd(messages, runId);
});

test("3. a drop after the repair reached the workspace and before the first state follows that repair", { timeout: 60_000 }, async (t) => {
  const emu = await emulator(t, { jobs: JOBS, timeScale: 0 });
  const app = await startApp(t, emu);
  const base = `http://127.0.0.1:${app.port}/api/jobs`;
  const { runId } = await (await fetch(`${base}/report/run`, { method: "POST" })).json();
  emu.advanceTime(10_000);
  await until(() => emu.getRun(runId)?.state?.result_state === "FAILED", 10_000, "the run to fail");
  emu.setTimeScale(1);
  // Two slow reads of the run: the history read before the stream opens, and the one after the
  // repair (waiting for the run to show it). The connection drops 600 ms after the opening event.
  emu.injectFault({ path: API.getRun, delayMs: 3_000, times: 2 });
  const proxy = await startTimedCutProxy(app.port, 600);
  t.after(() => proxy.close());
  const { messages, errors, timeline } = await follow(`http://127.0.0.1:${proxy.port}/api/jobs/report/runs/${runId}/repair?stream=true`, {
    rerunAllFailedTasks: true,
  });
  assert.equal(proxy.state.cuts, 1);
  assert.equal(errors.length, 1, "connectSSE saw the drop once");
  assert.deepEqual(timeline.slice(0, 3), ["opening", "drop", "state"], "dropped before the first state");
  const [opening] = messages;
  assert.equal(opening.id, `repair:${runId}:0`);
  assert.equal(opening.data.accepted, "repair");
  assert.equal(messages.filter((m) => m.data.error).length, 0, JSON.stringify(messages.at(-1)));
  assert.equal(repairRequests(emu).length, 1, "one repair for one click");
  assertFollowedToTheEnd(messages, runId);
  const { repair_history: history } = await runWithHistory(emu, runId);
  assert.equal(history.filter((h) => h.type === "REPAIR").length, 1, "one repair in the run's history");
});

test("4. a rolling deploy: the instance serving the stream shuts down, the page resumes on the next one", { timeout: 90_000 }, async (t) => {
  const emu = await emulator(t, { jobs: JOBS, timeScale: 1 });
  const [a, b] = [await startApp(t, emu), await startApp(t, emu)];
  const balancer = await startBalancer([a.port, b.port]);
  t.after(() => balancer.close());
  let terminated = false;
  const { messages, errors, timeline } = await follow(`http://127.0.0.1:${balancer.port}/api/jobs/etl/run?stream=true`, {}, (m) => {
    // SIGTERM to the serving instance once the run is followed and still active.
    if (!terminated && isState(m) && m.data.status !== "TERMINATED") {
      terminated = true;
      a.child.kill("SIGTERM");
    }
  });
  assert.ok(terminated, "the deploy happened mid-run");
  assert.equal(errors.length, 1, "the cut was seen as a dropped connection, not as the end");
  assert.equal(timeline.filter((e) => e === "drop").length, 1);
  assert.equal(timeline.at(-1), "state");
  assert.deepEqual(balancer.state.routes, [0, 1], "the reconnect landed on the other instance");
  assert.equal(emu.runCount(), 1, "one run for one click");
  assert.equal(tokens(emu).length, 1, "the reconnect after the first state sent no run-now");
  const runId = messages.find(isState).data.run.run_id;
  assertFollowedToTheEnd(messages, runId);
  // The old instance shut down promptly and cleanly: its plugin cut the stream, nothing pending.
  assert.deepEqual(await a.exited, { code: 0, signal: null }, a.stderr());
  assert.ok(a.lines.some((l) => l.shutdown === true));
});
