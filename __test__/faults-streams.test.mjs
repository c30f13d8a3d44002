// Streams under faults: runAndWait, watchRun and both SSE routes while the poll of the run
// (runs/get) fails. Time in the emulator is frozen: the run waits in QUEUED until the test
// moves it, so each fault lands in the middle of the wait.
//
// Expected: a transient failure (429 with/without Retry-After, 503, 504, reset, HTML 503,
// non-JSON body, a poll slower than the tier timeout, an expired OAuth token) is survived: the
// stream goes on and ends with the terminal state, no error. A permanent failure (500, HTML 500)
// ends it with an exception (JobsError: status, status text) or an SSE `error` event. Endless
// transient failures end at the job's waitTimeout: nothing hangs. After an abort, nothing is
// sent upstream any more.
import { test } from "node:test";
import assert from "node:assert/strict";
import { API, at, emulator, jobsFor, oauthEnv, patEnv } from "./support/emulator.mjs";
import { openSse, routes, runEvents } from "./support/http.mjs";
import { drain, lastState, sleep, until } from "./support/util.mjs";

const POLL_FAULTS = {
  "429 + Retry-After": { fault: { status: 429, retryAfter: 1 }, times: 1 },
  "429 without Retry-After": { fault: { status: 429 }, times: 2 },
  "503": { fault: { status: 503 }, times: 2 },
  "504": { fault: { status: 504 }, times: 2 },
  "connection reset": { fault: { reset: true }, times: 2 },
  "HTML 503": { fault: { status: 503, html: true }, times: 2 },
  "non-JSON 200 body": { fault: { status: 200, body: "not json", contentType: "text/plain" }, times: 2 },
  "poll slower than the timeout": { fault: { delayMs: 1200 }, times: 2, config: { timeout: 300 } },
  "expired OAuth token": { oauth: true },
  // A permanent failure has one code everywhere: the iterator's error and the SSE error event.
  "500": { fault: { status: 500, message: "upstream-detail" }, times: 1, fail: 500, code: "INTERNAL_ERROR" },
  "HTML 500": { fault: { status: 500, html: true }, times: 1, fail: 500, code: "UPSTREAM_ERROR" },
};

const CONFIG = { pollIntervalMs: 20, jobs: { etl: { taskType: "notebook" } } };

/** Arms the fault of `spec` on runs/get and waits until the poll has hit it `times` times. */
async function strike(emu, spec) {
  if (spec.oauth) {
    emu.expireOAuthTokens();
    await until(() => at(emu, API.getRun).some((r) => r.status === 401), 10_000, "a 401 on the poll");
    return;
  }
  emu.injectFault({ path: API.getRun, ...spec.fault, times: spec.times });
  await until(() => at(emu, API.getRun).filter((r) => r.fault).length >= spec.times, 10_000, "the faulted polls");
}

function checkEnd(name, spec, { updates, error }) {
  if (spec.fail) {
    assert.ok(error, `${name}: the stream must end with an error`);
    assert.equal(error.name, "JobsError");
    assert.equal(error.statusCode, spec.fail);
    assert.equal(error.code, spec.code);
    assert.equal(error.message, "Internal Server Error");
  } else {
    assert.equal(error, null, `${name}: ${error?.message}`);
    assert.equal(lastState(updates), "TERMINATED", name);
  }
}

async function iteratorCase(t, name, how) {
  const spec = POLL_FAULTS[name];
  const emu = await emulator(t);
  const api = jobsFor(t, { ...CONFIG, ...spec.config }, spec.oauth ? oauthEnv(emu) : patEnv(emu));
  const etl = api("etl");
  let iterable;
  if (how === "runAndWait") {
    iterable = etl.runAndWait({ date: "d" });
  } else {
    const started = await etl.runNow();
    iterable = etl.watchRun(started.data.run_id);
  }
  const it = iterable[Symbol.asyncIterator]();
  const first = await it.next();
  assert.equal(first.done, false);
  const runId = first.value.run.run_id;
  await strike(emu, spec);
  if (!spec.fail) emu.setRunState(runId, "SUCCESS");
  const rest = await drain({ [Symbol.asyncIterator]: () => it });
  checkEnd(`${how} / ${name}`, spec, { updates: [first.value, ...rest.updates], error: rest.error });
  assert.equal(emu.runCount(), 1, "one run");
}

async function sseCase(t, name, how) {
  const spec = POLL_FAULTS[name];
  const emu = await emulator(t);
  const env = spec.oauth ? oauthEnv(emu) : patEnv(emu);
  const { base, plugin } = await routes(t, { ...CONFIG, ...spec.config, env });
  let url = `${base}/api/jobs/etl/run?stream=true`;
  let init = { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ params: { date: "d" } }) };
  if (how === "GET stream") {
    const started = await (await fetch(`${base}/api/jobs/etl/run`, init)).json();
    url = `${base}/api/jobs/etl/runs/${started.runId}/stream`;
    init = {};
  }
  const sse = await openSse(url, init);
  assert.equal(sse.res.status, 200);
  await until(() => runEvents(sse.events()).length >= 1, 10_000, "the first update");
  const runId = runEvents(sse.events())[0].data.run.run_id;
  await strike(emu, spec);
  if (!spec.fail) emu.setRunState(runId, "SUCCESS");
  await sse.done; // the server ends the response
  const events = sse.events();
  const errors = events.filter((e) => e.event === "error");
  if (spec.fail) {
    assert.equal(errors.length, 1, `${how} / ${name}: ${sse.text()}`);
    assert.deepEqual(events.at(-1).data, { error: "Internal Server Error", code: spec.code });
    assert.match(events.at(-1).id, new RegExp(`^${runId}:\\d+$`));
  } else {
    assert.deepEqual(errors, [], `${how} / ${name}: ${sse.text()}`);
    assert.equal(lastState(events), "TERMINATED");
  }
  assert.ok(!sse.text().includes("upstream-detail") && !sse.text().includes("<html"), sse.text());
  assert.equal(emu.runCount(), 1, "one run");
  await until(() => plugin.activeStreamCount() === 0, 5_000, "the stream to close");
}

for (const how of ["runAndWait", "watchRun"]) {
  test(`${how} under poll faults`, { concurrency: true, timeout: 60_000 }, async (t) => {
    await Promise.all(Object.keys(POLL_FAULTS).map((name) => t.test(name, (tt) => iteratorCase(tt, name, how))));
  });
}

for (const how of ["POST run?stream=true", "GET stream"]) {
  test(`SSE ${how} under poll faults`, { concurrency: true, timeout: 60_000 }, async (t) => {
    await Promise.all(Object.keys(POLL_FAULTS).map((name) => t.test(name, (tt) => sseCase(tt, name, how))));
  });
}

test("endless transient poll failures end at waitTimeout, never hang", { timeout: 30_000 }, async (t) => {
  const emu = await emulator(t);
  const config = { pollIntervalMs: 20, jobs: { etl: { taskType: "notebook", waitTimeout: 1500 } } };
  const api = jobsFor(t, config, patEnv(emu));
  emu.injectFault({ path: API.getRun, status: 503, retryAfter: 0, times: 100_000 });
  const { updates, error } = await drain(api("etl").runAndWait());
  assert.deepEqual(updates, []);
  assert.equal(error?.code, "POLL_TIMEOUT");
  assert.equal(error.statusCode, 504);
  assert.match(error.message, /^Job run \d+ polling timeout after 1500ms$/);

  const { base } = await routes(t, { ...config, env: patEnv(emu) });
  const sse = await openSse(`${base}/api/jobs/etl/run?stream=true`, { method: "POST" });
  const text = await sse.done;
  const events = runEvents(sse.events());
  assert.equal(events.length, 1, text);
  assert.equal(events[0].event, "error");
  assert.equal(events[0].data.code, "POLL_TIMEOUT", "the same code as runAndWait's error");
});

test("a run-now that fails ends runAndWait with an exception and the opened SSE stream with an error event", async (t) => {
  const emu = await emulator(t);
  const api = jobsFor(t, CONFIG, patEnv(emu));
  emu.injectFault({ path: API.runNow, status: 500, message: "upstream-detail" });
  const { updates, error } = await drain(api("etl").runAndWait());
  assert.deepEqual(updates, []);
  assert.equal(error.statusCode, 500);
  assert.equal(error.message, "Failed to trigger job run: Internal Server Error");
  assert.deepEqual(at(emu, API.getRun), [], "nothing to poll");

  const { base } = await routes(t, { ...CONFIG, env: patEnv(emu) });
  emu.injectFault({ path: API.runNow, status: 503, retryAfter: 0, times: 3 });
  // The stream opens before run-now is sent, so a failure after our retries is an event: a
  // client that retries on an HTTP error status would send a write of its own.
  const sse = await openSse(`${base}/api/jobs/etl/run?stream=true`, { method: "POST" });
  assert.equal(sse.res.status, 200);
  await sse.done;
  assert.equal(sse.cut(), false, "an error ends the stream cleanly");
  const [opening, failure, ...rest] = sse.events();
  assert.equal(opening.data.accepted, "run");
  assert.equal(failure.event, "error");
  assert.equal(failure.id, opening.id);
  assert.deepEqual(failure.data, { error: "Failed to trigger job run: Service Unavailable", code: "TEMPORARILY_UNAVAILABLE" });
  assert.deepEqual(rest, []);
  assert.equal(at(emu, API.runNow).length, 1 + 3, "our retries, each with the stream's token");
  assert.equal(new Set(at(emu, API.runNow).slice(1).map((r) => r.body.idempotency_token)).size, 1);
  assert.equal(emu.runCount(), 0);
});

// ---------------------------------------------------------------------------------------------
// Nothing is sent after an abort.
// ---------------------------------------------------------------------------------------------

/** Waits past the retry the poll would make (Retry-After 1 s) and checks nothing more went out. */
async function assertQuietAfter(emu, path) {
  const sent = at(emu, path).length;
  await sleep(1_600);
  assert.equal(at(emu, path).length, sent, `${path} was requested after the abort`);
}

test("runAndWait: AbortSignal during a poll retry stops the poll", { timeout: 20_000 }, async (t) => {
  const emu = await emulator(t);
  const api = jobsFor(t, CONFIG, patEnv(emu));
  const ac = new AbortController();
  const it = api("etl").runAndWait({}, ac.signal)[Symbol.asyncIterator]();
  assert.equal((await it.next()).done, false);
  emu.injectFault({ path: API.getRun, status: 503, retryAfter: 1, times: 1_000 });
  await until(() => at(emu, API.getRun).some((r) => r.fault), 5_000, "a faulted poll");
  const pending = it.next();
  ac.abort();
  assert.deepEqual(await pending, { done: true, value: undefined });
  await assertQuietAfter(emu, API.getRun);
});

test("runAndWait: break and return() stop the poll, even with a next() pending", { timeout: 20_000 }, async (t) => {
  const emu = await emulator(t);
  const api = jobsFor(t, CONFIG, patEnv(emu));
  // break inside for-await
  for await (const update of api("etl").runAndWait()) {
    assert.equal(update.status, "QUEUED");
    emu.injectFault({ path: API.getRun, status: 503, retryAfter: 1, times: 1_000 });
    await until(() => at(emu, API.getRun).some((r) => r.fault), 5_000, "a faulted poll");
    break;
  }
  await assertQuietAfter(emu, API.getRun);

  // return() while next() waits
  emu.clearFaults();
  const it = api("etl").runAndWait()[Symbol.asyncIterator]();
  await it.next();
  emu.injectFault({ path: API.getRun, status: 503, retryAfter: 1, times: 1_000 });
  await until(() => at(emu, API.getRun).filter((r) => r.fault).length >= 1, 5_000, "a faulted poll");
  const pending = it.next();
  await it.return();
  assert.deepEqual(await pending, { done: true, value: undefined });
  await assertQuietAfter(emu, API.getRun);
});

test("runAndWait: an abort while run-now is being retried sends nothing more", { timeout: 20_000 }, async (t) => {
  const emu = await emulator(t);
  const api = jobsFor(t, CONFIG, patEnv(emu));
  emu.injectFault({ path: API.runNow, status: 503, retryAfter: 1 });
  const ac = new AbortController();
  const it = api("etl").runAndWait({}, ac.signal)[Symbol.asyncIterator]();
  const pending = it.next();
  await until(() => at(emu, API.runNow).length === 1, 5_000, "the first run-now");
  ac.abort();
  assert.deepEqual(await pending, { done: true, value: undefined });
  await assertQuietAfter(emu, API.runNow);
  assert.deepEqual(at(emu, API.getRun), []);
  assert.equal(emu.runCount(), 0);
});

test("SSE: a client that leaves during a poll retry stops the poll", { timeout: 20_000 }, async (t) => {
  const emu = await emulator(t);
  const { base, plugin } = await routes(t, { ...CONFIG, env: patEnv(emu) });
  const sse = await openSse(`${base}/api/jobs/etl/run?stream=true`, { method: "POST" });
  await until(() => sse.events().length >= 1, 5_000, "the first event");
  emu.injectFault({ path: API.getRun, status: 503, retryAfter: 1, times: 1_000 });
  await until(() => at(emu, API.getRun).some((r) => r.fault), 5_000, "a faulted poll");
  sse.abort();
  await until(() => plugin.activeStreamCount() === 0, 5_000, "the stream to close");
  await assertQuietAfter(emu, API.getRun);
});

test("abortActiveOperations cuts every stream, ends every iterator with SHUTTING_DOWN, and nothing is polled after", { timeout: 20_000 }, async (t) => {
  const emu = await emulator(t);
  const { base, plugin } = await routes(t, { ...CONFIG, env: patEnv(emu) });
  const streams = [];
  for (let i = 0; i < 3; i++) streams.push(await openSse(`${base}/api/jobs/etl/run?stream=true`, { method: "POST" }));
  const started = await (await fetch(`${base}/api/jobs/etl/run`, { method: "POST" })).json();
  streams.push(await openSse(`${base}/api/jobs/etl/runs/${started.runId}/stream`));
  // Iterators of the plugin's exports end too.
  const etl = plugin.exports()("etl");
  const its = [etl.runAndWait()[Symbol.asyncIterator](), etl.watchRun(started.runId)[Symbol.asyncIterator]()];
  for (const it of its) assert.equal((await it.next()).done, false);
  await until(() => streams.every((s) => runEvents(s.events()).length >= 1), 5_000, "a first update on every stream");
  emu.injectFault({ path: API.getRun, status: 503, retryAfter: 1, times: 1_000 });
  await until(() => at(emu, API.getRun).some((r) => r.fault), 5_000, "a faulted poll");
  const pending = Promise.allSettled(its.map((it) => it.next()));

  plugin.abortActiveOperations();

  await Promise.all(streams.map((s) => s.done));
  // Cut, not ended: an SSE client takes a clean end for "done", a cut makes it reconnect.
  assert.deepEqual(streams.map((s) => s.cut()), [true, true, true, true]);
  for (const result of await pending) {
    assert.equal(result.status, "rejected");
    assert.equal(result.reason.code, "SHUTTING_DOWN");
    assert.equal(result.reason.statusCode, 503);
  }
  for (const it of its) assert.deepEqual(await it.next(), { done: true, value: undefined });
  assert.equal(plugin.activeStreamCount(), 0);
  await assertQuietAfter(emu, API.getRun);
  // The routes still serve new streams afterwards.
  emu.clearFaults();
  const again = await openSse(`${base}/api/jobs/etl/runs/${started.runId}/stream`);
  await until(() => again.events().length >= 1, 5_000, "a stream after the abort");
  again.abort();
});

test("a workspace lost mid-wait ends runAndWait, watchRun and SSE streams with UPSTREAM_UNAVAILABLE at the outage bound", { timeout: 30_000 }, async (t) => {
  const emu = await emulator(t); // time frozen: the run stays QUEUED
  const config = { pollIntervalMs: 20, outageTimeout: 400, jobs: { etl: { taskType: "notebook" } } };
  const api = jobsFor(t, config, patEnv(emu));
  const { base } = await routes(t, { ...config, env: patEnv(emu) });
  const waits = [api("etl").runAndWait()[Symbol.asyncIterator]()];
  const runId = (await waits[0].next()).value.run.run_id;
  waits.push(api("etl").watchRun(runId)[Symbol.asyncIterator]());
  assert.equal((await waits[1].next()).value.status, "QUEUED");
  const sse = await openSse(`${base}/api/jobs/etl/runs/${runId}/stream`);
  await until(() => sse.events().length >= 1, 10_000, "the first event");

  await emu.stop(); // the workspace is gone: connections are refused from now on
  for (const it of waits) {
    const { error } = await drain({ [Symbol.asyncIterator]: () => it });
    assert.equal(error?.code, "UPSTREAM_UNAVAILABLE", String(error));
    assert.equal(error.statusCode, 503);
    assert.equal(error.message, `The Databricks workspace could not be reached for 400ms while waiting for run ${runId}`);
    assert.equal(error.cause.code, "ECONNREFUSED");
  }
  await sse.done;
  const last = sse.events().at(-1);
  assert.equal(last.event, "error");
  assert.deepEqual(last.data, {
    error: `The Databricks workspace could not be reached for 400ms while waiting for run ${runId}`,
    code: "UPSTREAM_UNAVAILABLE",
  });
});

test("an outage of 503s ends the wait with the last HTTP status as the cause; a shorter one is ridden out", { timeout: 30_000 }, async (t) => {
  const emu = await emulator(t);
  const api = jobsFor(t, { pollIntervalMs: 20, outageTimeout: 400 }, patEnv(emu));
  // A short outage (well under the bound) is invisible.
  const short = api("etl").runAndWait();
  const runId = (await short.next()).value.run.run_id;
  emu.injectFault({ path: API.getRun, status: 503, retryAfter: 0, times: 3 });
  await until(() => at(emu, API.getRun).filter((r) => r.fault).length >= 3, 10_000, "the short outage");
  emu.setRunState(runId, "SUCCESS");
  const rest = await drain(short);
  assert.equal(rest.error, null);
  assert.equal(lastState(rest.updates), "TERMINATED");
  // A long one is reported, with the status the workspace kept answering.
  emu.injectFault({ path: API.getRun, status: 503, times: 100_000 });
  const { error } = await drain(api("etl").runAndWait());
  assert.equal(error?.code, "UPSTREAM_UNAVAILABLE");
  assert.equal(error.cause.status, 503);
  assert.equal(error.cause.code, "TEMPORARILY_UNAVAILABLE");
});
