// Secrets never leave: the service principal's PAT, the OAuth client secret, users' tokens and
// wrong tokens given by mistake never appear in any ExecutionResult, error (message, stack,
// cause, inspection), HTTP response (body and headers), SSE event or console/log line, across
// successes, upstream faults (whose messages quote the secrets), bad credentials and bad
// configuration. Every output is captured and searched.
import { test } from "node:test";
import assert from "node:assert/strict";
import util from "node:util";
import { createRequire } from "node:module";
import { API, at, emulator } from "./support/emulator.mjs";
import { openSse, routes } from "./support/http.mjs";
import { drain, sleep, until } from "./support/util.mjs";

const require = createRequire(import.meta.url);
const { createJobs, jobs: jobsPlugin } = require("appkit-jobs");

const SP_TOKEN = "dapiSPSECRET0000000000000000000001";
const CLIENT_SECRET = "doseOAUTHSECRET00000000000000000002";
const ALICE = "aliceUSERSECRET000000000000000003";
const BOB = "bobUSERSECRET00000000000000000004";
const STRANGER = "strangerUSERSECRET0000000000000005";
const WRONG_PAT = "dapiWRONGSECRET00000000000000000006";
const WRONG_CLIENT_SECRET = "doseWRONGSECRET000000000000000007";
/** Upstream text: never shown, whatever it says (it stands for any message the workspace sends). */
const UPSTREAM_TEXT = "UpstreamSaysSomethingPrivate-7e1f";
const SECRETS = [SP_TOKEN, CLIENT_SECRET, ALICE, BOB, STRANGER, WRONG_PAT, WRONG_CLIENT_SECRET, UPSTREAM_TEXT];

/** Collects every string the code under test hands back or prints. */
class Capture {
  texts = [];
  #restore = [];

  start() {
    for (const level of ["log", "info", "warn", "error", "debug", "trace"]) {
      const original = console[level];
      console[level] = (...args) => {
        this.add(util.format(...args));
        return original.apply(console, args);
      };
      this.#restore.push(() => (console[level] = original));
    }
    for (const stream of [process.stdout, process.stderr]) {
      const original = stream.write;
      stream.write = (chunk, ...rest) => {
        this.add(String(chunk));
        return original.call(stream, chunk, ...rest);
      };
      this.#restore.push(() => (stream.write = original));
    }
    return this;
  }

  stop() {
    for (const r of this.#restore.splice(0)) r();
  }

  add(value) {
    if (typeof value === "string") this.texts.push(value);
    else if (value instanceof Error) {
      this.texts.push(value.message, String(value.stack), util.inspect(value, { depth: 6, showHidden: true }));
      this.texts.push(JSON.stringify(value), JSON.stringify(value.cause ?? null));
    } else {
      this.texts.push(util.inspect(value, { depth: 8, showHidden: true }));
      try {
        this.texts.push(JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
      } catch {
        // circular: the inspection above has it
      }
    }
    return value;
  }

  /** Awaits `p`, capturing its value or its rejection. */
  async settle(p) {
    try {
      return this.add(await p);
    } catch (e) {
      this.add(e);
      return e;
    }
  }

  assertClean(where) {
    for (const text of this.texts) {
      for (const secret of SECRETS) {
        for (const form of [secret, encodeURIComponent(secret), Buffer.from(secret).toString("base64")]) {
          if (text.includes(form)) assert.fail(`${where}: a secret leaked in: ${text.replace(form, "<SECRET>").slice(0, 400)}`);
        }
      }
    }
    assert.ok(this.texts.length > 0, "nothing was captured");
  }
}

async function secretEmulator(t) {
  const emu = await emulator(t, {
    timeScale: 500,
    token: SP_TOKEN,
    clientSecret: CLIENT_SECRET,
    users: [
      { token: ALICE, userName: "alice@example.com", defaultPermission: "CAN_MANAGE_RUN" },
      { token: BOB, userName: "bob@example.com", permissions: {} },
    ],
  });
  return emu;
}

const FAULT_TEXT = (secret) => `invalid access token ${secret} for ${secret}`;

async function exerciseHandle(cap, emu, handle) {
  const started = await cap.settle(handle.runNow({ a: "1" }));
  const runId = started?.data?.run_id ?? 100000000001;
  await cap.settle(handle.getRun(runId));
  await cap.settle(handle.getRunOutput(runId));
  await cap.settle(handle.listRuns({ limit: 3 }));
  await cap.settle(handle.lastRun());
  await cap.settle(handle.getJob());
  await cap.settle(handle.cancelRun(runId));
  await cap.settle(handle.getRun("not-a-number"));
  cap.add(await drain(handle.watchRun(runId)));
  const { updates, error } = await drain(handle.runAndWait({ b: "2" }));
  cap.add(updates);
  if (error) cap.add(error);
  cap.add(util.inspect(handle, { depth: 4, showHidden: true }));
}

test("the capture finds a secret wherever it is", () => {
  for (const leak of [`x${SP_TOKEN}x`, new Error(`bad ${ALICE}`), { deep: { deeper: [CLIENT_SECRET] } }, Buffer.from(BOB).toString("base64")]) {
    const probe = new Capture();
    probe.add(leak);
    assert.throws(() => probe.assertClean("probe"), /a secret leaked/);
  }
});

test("PAT, users and upstream faults quoting the secrets: nothing leaks from the JS API", async (t) => {
  const emu = await secretEmulator(t);
  const cap = new Capture().start();
  try {
    const env = { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: SP_TOKEN, DATABRICKS_JOB_ETL: "1001" };
    const api = createJobs({ pollIntervalMs: 10, jobs: { etl: { taskType: "notebook" } } }, { env });
    t.after(() => api.close());
    cap.add(util.inspect(api, { depth: 6, showHidden: true }));
    const etl = api("etl");
    await exerciseHandle(cap, emu, etl);
    for (const token of [ALICE, BOB, STRANGER]) {
      await exerciseHandle(cap, emu, etl.asUser({ headers: { "x-forwarded-access-token": token } }));
    }
    // Every API path answers an error whose message quotes the secrets.
    for (const status of [400, 401, 403, 404, 500, 503]) {
      for (const path of Object.values(API)) emu.injectFault({ path, status, message: FAULT_TEXT(SP_TOKEN), times: 3, retryAfter: 0 });
      await exerciseHandle(cap, emu, etl);
      emu.clearFaults();
    }
    // Faults quoting users' tokens, the OAuth client secret and arbitrary upstream text, on
    // every JS API path and as each user; each fault must actually have been served.
    const QUOTE_ALL = `${UPSTREAM_TEXT}: tokens ${ALICE} ${BOB} ${STRANGER}, client secret ${CLIENT_SECRET}`;
    for (const handle of [etl, etl.asUser({ headers: { "x-forwarded-access-token": ALICE } })]) {
      for (const status of [400, 403, 500]) {
        const served = emu.requests().filter((r) => r.fault).length;
        for (const path of Object.values(API)) emu.injectFault({ path, status, message: QUOTE_ALL, times: 2 });
        await exerciseHandle(cap, emu, handle);
        emu.clearFaults();
        const fired = emu.requests().filter((r) => r.fault).length - served;
        assert.ok(fired >= 6, `status ${status}: only ${fired} faults were served`);
      }
      // A wait whose poll starts failing with such a message after the first update.
      const it = handle.runAndWait()[Symbol.asyncIterator]();
      cap.add(await it.next());
      emu.injectFault({ path: API.getRun, status: 403, message: QUOTE_ALL, times: 10 });
      await cap.settle(it.next());
      assert.ok(at(emu, API.getRun).some((r) => r.fault), "the poll fault fired");
      emu.clearFaults();
    }
    // ... or an HTML / plain body quoting them.
    for (const path of Object.values(API)) emu.injectFault({ path, status: 502, body: FAULT_TEXT(SP_TOKEN), times: 3 });
    await exerciseHandle(cap, emu, etl);
    emu.clearFaults();
    // A poll failing permanently mid-wait.
    const it = etl.runAndWait()[Symbol.asyncIterator]();
    cap.add(await it.next());
    emu.injectFault({ path: API.getRun, status: 500, message: FAULT_TEXT(SP_TOKEN), times: 10 });
    await cap.settle(it.next());
    emu.clearFaults();
  } finally {
    cap.stop();
  }
  cap.assertClean("JS API");
  assert.ok(at(emu, API.runNow).length > 0, "the calls reached the workspace");
});

test("bad credentials and bad configuration: clear errors, no secret", async (t) => {
  const emu = await secretEmulator(t);
  const cap = new Capture().start();
  try {
    const cases = [
      { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: WRONG_PAT },
      { DATABRICKS_HOST: emu.url, DATABRICKS_CLIENT_ID: emu.clientId, DATABRICKS_CLIENT_SECRET: WRONG_CLIENT_SECRET },
      { DATABRICKS_HOST: emu.url, DATABRICKS_CLIENT_ID: "someone-else", DATABRICKS_CLIENT_SECRET: CLIENT_SECRET },
      { DATABRICKS_TOKEN: SP_TOKEN }, // no host
      { DATABRICKS_HOST: "not a url", DATABRICKS_TOKEN: SP_TOKEN },
      { DATABRICKS_HOST: "http://127.0.0.1:1", DATABRICKS_TOKEN: SP_TOKEN }, // nothing listens
      { DATABRICKS_HOST: `http://u:${SP_TOKEN}@127.0.0.1:1`, DATABRICKS_TOKEN: SP_TOKEN },
      { DATABRICKS_HOST: emu.url, DATABRICKS_CLIENT_SECRET: CLIENT_SECRET }, // secret without id
    ];
    for (const env of cases) {
      const api = createJobs({ timeout: 3_000, jobs: { etl: { taskType: "notebook" } } }, { env: { ...env, DATABRICKS_JOB_ETL: "1001" } });
      const etl = api("etl");
      const r = await cap.settle(etl.getJob());
      assert.ok(r instanceof Error ? r.statusCode >= 400 : r.ok === false, `${JSON.stringify(Object.keys(env))} should fail`);
      await cap.settle(etl.runNow());
      cap.add(await drain(etl.runAndWait()));
      api.close();
    }
    // The OAuth token endpoint failing with a message quoting the secret.
    const env = { DATABRICKS_HOST: emu.url, DATABRICKS_CLIENT_ID: emu.clientId, DATABRICKS_CLIENT_SECRET: CLIENT_SECRET, DATABRICKS_JOB_ETL: "1001" };
    for (const fault of [{ status: 500, message: FAULT_TEXT(CLIENT_SECRET) }, { status: 400, body: FAULT_TEXT(CLIENT_SECRET) }, { reset: true, times: 5 }]) {
      emu.injectFault({ path: API.token, ...fault });
      const api = createJobs({ timeout: 3_000 }, { env });
      await cap.settle(api("etl").getJob());
      api.close();
      emu.clearFaults();
    }
  } finally {
    cap.stop();
  }
  cap.assertClean("credentials");
});

test("routes, SSE and plugin logs: nothing leaks", async (t) => {
  const emu = await secretEmulator(t);
  const cap = new Capture().start();
  try {
    const logger = { info: (m) => cap.add(m), warn: (m) => cap.add(m), error: (m) => cap.add(m), debug: (m) => cap.add(m) };
    const env = { DATABRICKS_HOST: emu.url, DATABRICKS_CLIENT_ID: emu.clientId, DATABRICKS_CLIENT_SECRET: CLIENT_SECRET, DATABRICKS_JOB_ETL: "1001", DATABRICKS_JOB_NOID: "" };
    const { base, plugin } = await routes(t, { pollIntervalMs: 10, jobs: { etl: { taskType: "notebook" }, noid: {} }, env, logger });
    await plugin.setup();
    cap.add(plugin.clientConfig());
    cap.add(plugin.getEndpoints());
    const call = async (path, init = {}) => {
      const res = await fetch(`${base}/api/jobs${path}`, init);
      cap.add(`${res.status} ${JSON.stringify([...res.headers])} ${await res.text()}`);
      return res;
    };
    // The user's token arrives on every request: routes run as the service principal and
    // must not echo it.
    const headers = { "x-forwarded-access-token": ALICE, authorization: `Bearer ${BOB}`, "content-type": "application/json" };
    const run = await (await fetch(`${base}/api/jobs/etl/run`, { method: "POST", headers, body: "{}" })).json();
    cap.add(run);
    const paths = [["/etl/runs"], ["/etl/status"], [`/etl/runs/${run.runId}`], ["/noid/status"], ["/nope/runs"], [`/etl/runs/${run.runId}`, { method: "DELETE" }]];
    for (const [p, init] of paths) await call(p, { headers, ...init });
    for (const status of [401, 403, 500, 503]) {
      for (const path of Object.values(API)) emu.injectFault({ path, status, message: FAULT_TEXT(CLIENT_SECRET), times: 3, retryAfter: 0 });
      for (const [p, init] of paths) await call(p, { headers, ...init });
      const sse = await openSse(`${base}/api/jobs/etl/run?stream=true`, { method: "POST", headers });
      cap.add(await sse.done);
      emu.clearFaults();
    }
    // A stream that errors mid-way with a message quoting the secret. Time stands still
    // meanwhile: the run cannot end between its first event and the fault.
    emu.setTimeScale(0);
    const sse = await openSse(`${base}/api/jobs/etl/run?stream=true`, { method: "POST", headers, body: "{}" });
    await until(() => sse.events().length >= 1, 5_000, "a first event");
    emu.injectFault({ path: API.getRun, status: 500, message: FAULT_TEXT(CLIENT_SECRET), times: 10 });
    cap.add(await sse.done);
    assert.ok(sse.events().some((e) => e.event === "error"), sse.text());
    emu.clearFaults();
    emu.setTimeScale(500);
    // And one that ends normally.
    const ok = await openSse(`${base}/api/jobs/etl/run?stream=true`, { method: "POST", headers, body: "{}" });
    cap.add(await ok.done);
    await sleep(10);
  } finally {
    cap.stop();
  }
  cap.assertClean("routes");
  assert.ok(emu.requests().some((r) => r.identity === `oauth:${emu.clientId}`), "OAuth was used");
});

test("the plugin factory's value and the plugin instance do not print secrets", async (t) => {
  const emu = await secretEmulator(t);
  const cap = new Capture().start();
  try {
    const env = { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: SP_TOKEN, DATABRICKS_JOB_ETL: "1001" };
    const { plugin: Plugin } = jobsPlugin({ jobs: { etl: {} } });
    const plugin = new Plugin({ jobs: { etl: {} }, env: { ...env } });
    cap.add(util.inspect(plugin, { depth: 8, showHidden: true }));
    cap.add(util.inspect(plugin.exports(), { depth: 6 }));
    cap.add(util.inspect(plugin.exports()("etl"), { depth: 6 }));
    cap.add(await plugin.exports()("etl").getJob());
    plugin.abortActiveOperations();
  } finally {
    cap.stop();
  }
  cap.assertClean("plugin");
});

test("a standalone handler given `env` prints no credential when inspected or serialised", async (t) => {
  const emu = await secretEmulator(t);
  const { createJobsHandler } = require("appkit-jobs/http");
  const handler = createJobsHandler({ jobs: { etl: {} }, env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: SP_TOKEN, DATABRICKS_JOB_ETL: "1001" } });
  t.after(() => handler.close());
  const cap = new Capture();
  cap.add(util.inspect(handler, { depth: 10, showHidden: true }));
  cap.add(util.inspect(handler.plugin, { depth: 10, showHidden: true }));
  cap.add(JSON.stringify(handler.plugin.config));
  cap.add(util.inspect(handler.jobs("etl"), { depth: 10, showHidden: true }));
  cap.add(await handler.jobs("etl").getJob());
  assert.equal((await handler.jobs("etl").getJob()).ok, true, "the env it was given is still used");
  cap.assertClean("handler");
});

