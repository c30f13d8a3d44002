// The jobs plugin as an AppKit agent toolkit (issue 28), inside real AppKit apps: createApp with
// server(), jobs() and AppKit's agents(), a scripted model (an AgentAdapter that calls the tools
// each chat message names), and the emulator, which logs who made each request. Chats go over
// POST /api/agents/chat and approvals over POST /api/agents/approve, as a browser's would.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { z } from "zod";
import { runAgent } from "@databricks/appkit/beta";
import { jobs, JobsPlugin } from "appkit-jobs";
import { emulator, patEnv, requestsTo } from "./support/emulator.mjs";
import { createAgent, scriptedModel, startAgentsApp, toolOutputs, userHeaders } from "./support/agents.mjs";
import { until } from "./support/util.mjs";
import { AGENTS_DIR, ETL_DOCTOR_TOOLS, etlDoctor } from "../examples/etl-agent/agent.mjs";

const ALICE = { token: "tok-alice-agents", id: "u-alice", email: "alice@example.com" };
const BOB = { token: "tok-bob-agents", id: "u-bob", email: "bob@example.com" };
const USERS = [
  { token: ALICE.token, userName: ALICE.email, defaultPermission: "CAN_MANAGE_RUN" },
  { token: BOB.token, userName: BOB.email, defaultPermission: "CAN_VIEW" },
];
const AS_ALICE = userHeaders(ALICE);
const AS_BOB = userHeaders(BOB);

// etl: a notebook job with a Zod schema; report: fails (python_wheel, no schema); wide: 150
// tasks, no params; daily: a JSON Schema; defined: its parameters from its own definition.
const JOB_IDS = { etl: 1001, report: 1002, wide: 1004, daily: 1003, defined: 1001 };
const DAILY_SCHEMA = {
  type: "object",
  properties: { day: { type: "string", pattern: "^[0-9]{4}-[0-9]{2}-[0-9]{2}$" } },
  required: ["day"],
  additionalProperties: false,
};
const jobsConfig = () => ({
  pollIntervalMs: 50,
  jobs: {
    etl: { taskType: "notebook", description: "the nightly ETL", params: z.object({ startDate: z.string(), endDate: z.string().optional() }) },
    report: { taskType: "python_wheel" },
    wide: {},
    daily: { taskType: "sql", params: DAILY_SCHEMA },
    defined: { jobParameters: true },
  },
});
const VERBS = ["status", "listRuns", "getRun", "getRunOutput", "wait", "run", "repair", "cancel"];
const READS = ["status", "listRuns", "getRun", "getRunOutput", "wait"];
const EFFECTS = { status: "read", listRuns: "read", getRun: "read", getRunOutput: "read", wait: "read", run: "write", repair: "write", cancel: "destructive" };

/**
 * An emulator and an app whose agent `assistant` has `plugins.jobs.toolkit()` (or `tools`);
 * `agentsConfig` replaces the agents() config. Both stop when `t` ends.
 */
async function setup(t, { tools, agentsConfig } = {}) {
  const emu = await emulator(t, { users: USERS });
  const model = scriptedModel();
  const assistant = createAgent({
    instructions: "You run the team's Databricks jobs.",
    model,
    tools: tools ?? ((plugins) => ({ ...plugins.jobs.toolkit() })),
  });
  const app = await startAgentsApp(emu, JOB_IDS, jobsConfig(), agentsConfig?.(model) ?? { dir: false, agents: { assistant } });
  t.after(() => app.close());
  return {
    emu,
    model,
    app,
    converse: (calls, headers, options) => converse(app, { calls }, headers, options),
  };
}

/**
 * One chat turn: every approval it asks for is answered (`decide(toolName)`: "approve" by
 * default) as the browser would, until the stream ends. `{ outputs, approvals, events }`.
 */
async function converse(app, message, headers, { decide = () => "approve", agent } = {}) {
  const stream = await app.chat(message, headers, agent);
  assert.equal(stream.res.status, 200, "the chat stream opens");
  let finished = false;
  stream.done.then(() => (finished = true));
  const approvals = [];
  const answered = new Set();
  for (;;) {
    let pending = [];
    await until(
      () => {
        pending = stream.events().filter((e) => e.data?.type === "appkit.approval_pending" && !answered.has(e.data.approval_id));
        return finished || pending.length > 0;
      },
      20_000,
      "the chat to end or ask for an approval",
    );
    if (pending.length === 0) break;
    for (const { data } of pending) {
      answered.add(data.approval_id);
      const decision = decide(data.tool_name);
      approvals.push({ tool: data.tool_name, args: data.args, effect: data.annotations?.effect, decision });
      const r = await app.approve(data.stream_id, data.approval_id, decision, headers);
      assert.equal(r.status, 200, `the ${decision} of ${data.tool_name} is taken`);
    }
  }
  const events = stream.events();
  return { events, approvals, outputs: toolOutputs(events) };
}

const writes = (emu) => ({
  runNow: requestsTo(emu, "/jobs/run-now"),
  repair: requestsTo(emu, "/runs/repair"),
  cancel: requestsTo(emu, "/runs/cancel"),
});

/** No answer carries a URL other than a run page's, or a token. */
function assertSafe(text) {
  for (const user of [ALICE, BOB]) assert.ok(!text.includes(user.token), "no token in an answer");
  assert.ok(!/https?:\/\/(?![^"\s]*#job\/\d+\/run\/\d+)/.test(text), `no URL but a run page's: ${text}`);
}

test("the toolkit: eight tools per job named <plugin>.<job>.<verb>, their effects, the job's params as the run tool's schema", async (t) => {
  const { model, app, converse } = await setup(t);
  await converse([], AS_ALICE);
  const seen = new Map(model.seen[0].map((def) => [def.name, def]));
  const expected = Object.keys(JOB_IDS).flatMap((key) => VERBS.map((verb) => `jobs.${key}.${verb}`));
  assert.deepEqual([...seen.keys()].sort(), expected.sort());
  for (const [name, def] of seen) {
    const verb = name.split(".").at(-1);
    assert.equal(def.annotations.effect, EFFECTS[verb], `${name} effect`);
    assert.equal(def.annotations.requiresUserContext, true);
    assert.equal(def.parameters.type, "object", `${name} takes an object`);
    assert.equal(def.parameters.$schema, undefined, `${name}: no $schema (model endpoints refuse it)`);
    assert.ok(def.description.length > 20 && def.description.length < 500, `${name} description`);
  }
  // run: the job's own params, as JSON Schema (a Zod object's input: unknown keys are dropped, not refused).
  assert.deepEqual(seen.get("jobs.etl.run").parameters, {
    type: "object",
    properties: { startDate: { type: "string" }, endDate: { type: "string" } },
    required: ["startDate"],
  });
  assert.match(seen.get("jobs.etl.run").description, /the nightly ETL/);
  assert.deepEqual(seen.get("jobs.daily.run").parameters, DAILY_SCHEMA);
  assert.deepEqual(Object.keys(seen.get("jobs.defined.run").parameters.properties).sort(), ["date", "mode"], "a definition's parameters");
  assert.deepEqual(seen.get("jobs.wide.run").parameters, { type: "object", properties: {}, additionalProperties: false }, "a job that takes no params");
  assert.deepEqual(seen.get("jobs.report.run").parameters.additionalProperties, { type: "string" }, "a task type without a schema: values as text");
  // repair: the run, the tasks, and the job's params when it takes some.
  assert.deepEqual(seen.get("jobs.etl.repair").parameters.required, ["runId"]);
  assert.deepEqual(seen.get("jobs.etl.repair").parameters.properties.params.properties, seen.get("jobs.etl.run").parameters.properties);
  assert.equal(seen.get("jobs.wide.repair").parameters.properties.params, undefined);
  for (const verb of ["getRun", "getRunOutput", "wait", "cancel"]) assert.deepEqual(seen.get(`jobs.etl.${verb}`).parameters.required, ["runId"]);

  // The provider's own surface: local names, and AppKit's toolkit options.
  const plugin = app.plugin;
  assert.deepEqual(
    plugin.getAgentTools().map((d) => d.name).sort(),
    Object.keys(JOB_IDS).flatMap((key) => VERBS.map((verb) => `${key}.${verb}`)).sort(),
  );
  const entries = plugin.toolkit({ only: ["etl.status", "etl.run"] });
  assert.deepEqual(Object.keys(entries).sort(), ["jobs.etl.run", "jobs.etl.status"]);
  assert.deepEqual(
    { ...entries["jobs.etl.run"], def: undefined },
    { __toolkitRef: true, pluginName: "jobs", localName: "etl.run", def: undefined, annotations: { effect: "write", requiresUserContext: true, idempotent: false }, autoInheritable: false },
  );
  assert.equal(entries["jobs.etl.run"].def.name, "jobs.etl.run");
  assert.equal(entries["jobs.etl.status"].autoInheritable, true);
  assert.deepEqual(Object.keys(plugin.toolkit({ only: ["etl.status"], prefix: "" })), ["etl.status"]);
  assert.deepEqual(Object.keys(plugin.toolkit({ only: ["etl.status"], prefix: "ops_" })), ["ops_etl.status"]);
  const renamed = plugin.toolkit({ only: ["etl.run", "etl.status"], rename: { "etl.run": "start_etl" } });
  assert.deepEqual(Object.keys(renamed).sort(), ["jobs.etl.status", "start_etl"]);
  assert.equal(renamed.start_etl.def.name, "start_etl");
  assert.equal(renamed.start_etl.localName, "etl.run");
  const except = plugin.toolkit({ except: VERBS.filter((v) => v !== "status").map((v) => `etl.${v}`) });
  assert.ok(except["jobs.etl.status"] && !except["jobs.etl.run"] && except["jobs.wide.run"]);
  for (const entry of Object.values(plugin.toolkit())) {
    assert.equal(entry.autoInheritable, READS.includes(entry.localName.split(".").at(-1)), `${entry.localName}: only reads auto-inherit`);
  }
});

test("auto-inherit (opted into): an agent without tools gets the read tools only", async (t) => {
  const { model, converse } = await setup(t, {
    agentsConfig: (m) => ({ dir: false, autoInheritTools: true, agents: { bare: createAgent({ instructions: "Answer questions about jobs.", model: m }) } }),
  });
  await converse([], AS_ALICE);
  const names = model.seen[0].map((d) => d.name).sort();
  assert.deepEqual(names, Object.keys(JOB_IDS).flatMap((key) => READS.map((verb) => `jobs.${key}.${verb}`)).sort());
});

test("run: a person approves, then exactly one run starts, as the user, recorded as started by them", async (t) => {
  const { emu, app, converse } = await setup(t);
  const turn = await converse([{ tool: "jobs.etl.run", args: { startDate: "2025-01-01" } }], AS_ALICE);
  assert.deepEqual(turn.approvals, [{ tool: "jobs.etl.run", args: { startDate: "2025-01-01" }, effect: "write", decision: "approve" }]);
  const { runNow } = writes(emu);
  assert.equal(runNow.length, 1, "one run-now");
  assert.equal(runNow[0].identity, `user:${ALICE.email}`, "with alice's token");
  assert.deepEqual(runNow[0].body.notebook_params, { startDate: "2025-01-01" });
  const [{ name, output }] = turn.outputs;
  assert.equal(name, "jobs.etl.run");
  assert.equal(output.started, true);
  assert.equal(typeof output.runId, "number");
  assert.match(output.url, /#job\/1001\/run\/\d+$/);
  assertSafe(JSON.stringify(turn.outputs));

  // The ledger says alice started it; her listRuns ("me") finds it, without an approval.
  const mine = await app.app.jobs("etl").listRuns({ startedBy: ALICE.email });
  assert.deepEqual(mine.data.map((r) => r.run_id), [output.runId]);
  assert.equal(mine.data[0].started_by.email, ALICE.email);
  const read = await converse([{ tool: "jobs.etl.listRuns", args: { startedBy: "me" } }, { tool: "jobs.etl.status" }], AS_ALICE);
  assert.deepEqual(read.approvals, [], "reads need no approval");
  const [list, status] = read.outputs.map((o) => o.output);
  assert.deepEqual(list.runs.map((r) => [r.runId, r.startedBy]), [[output.runId, ALICE.email]]);
  assert.equal(status.runId, output.runId);
  assert.equal(status.startedBy, ALICE.email);
  assert.equal(writes(emu).runNow.length, 1, "still one run");
});

test("deny: a denied run, repair or cancel sends nothing", async (t) => {
  const { emu, app, converse } = await setup(t);
  const failed = (await app.app.jobs("report").runNow()).data.run_id;
  emu.setRunState(failed, "FAILED");
  const active = (await app.app.jobs("report").runNow()).data.run_id;
  const before = writes(emu);
  const turn = await converse(
    [
      { tool: "jobs.etl.run", args: { startDate: "2025-01-01" } },
      { tool: "jobs.report.repair", args: { runId: failed } },
      { tool: "jobs.report.cancel", args: { runId: active } },
      { tool: "jobs.report.status" },
    ],
    AS_ALICE,
    { decide: () => "deny" },
  );
  assert.deepEqual(
    turn.approvals.map((a) => [a.tool, a.effect]),
    [
      ["jobs.etl.run", "write"],
      ["jobs.report.repair", "write"],
      ["jobs.report.cancel", "destructive"],
    ],
  );
  const outputs = turn.outputs.map((o) => o.output);
  for (const [i, tool] of ["jobs.etl.run", "jobs.report.repair", "jobs.report.cancel"].entries()) {
    assert.equal(outputs[i], `Tool execution denied by user approval gate (tool: ${tool}).`);
  }
  assert.equal(outputs[3].runId, active, "a read in the same turn still answers");
  const after = writes(emu);
  assert.equal(after.runNow.length, before.runNow.length, "no run-now");
  assert.equal(after.repair.length, 0, "no runs/repair");
  assert.equal(after.cancel.length, 0, "no runs/cancel");
});

test("bad arguments answer what to fix, and send nothing", async (t) => {
  const { emu, converse } = await setup(t);
  emu.clearRequests();
  const calls = [
    ["jobs.etl.run", { startDate: 5 }, /^Invalid arguments for etl\.run: startDate: .*expected string/],
    ["jobs.etl.run", {}, /^Invalid arguments for etl\.run: startDate: /],
    ["jobs.daily.run", { day: "yesterday" }, /^Invalid arguments for daily\.run: .*day/],
    ["jobs.defined.run", { dat: "2025-01-01" }, /^Invalid arguments for defined\.run: unknown parameter "dat" for this job \(it defines: date, mode\)/],
    ["jobs.wide.run", { notebook_params: { a: "1" } }, /^Invalid arguments for wide\.run: job "wide" takes no parameters: call it with \{\}$/],
    ["jobs.etl.getRun", { runId: "abc" }, /^Invalid arguments for etl\.getRun: runId: expected a positive integer run id$/],
    ["jobs.etl.getRunOutput", {}, /^Invalid arguments for etl\.getRunOutput: runId: required$/],
    ["jobs.etl.listRuns", { limit: 500 }, /^Invalid arguments for etl\.listRuns: limit: expected an integer from 1 to 20$/],
    ["jobs.etl.wait", { runId: 1, timeoutSeconds: 100000 }, /^Invalid arguments for etl\.wait: timeoutSeconds: expected an integer from 1 to 240$/],
    ["jobs.etl.repair", { runId: 1, rerunTasks: [] }, /^Invalid arguments for etl\.repair: rerunTasks: expected a non-empty list of task keys$/],
    ["jobs.etl.repair", { runId: 1, params: { startDate: 7 } }, /^Invalid arguments for etl\.repair: startDate: /],
    ["jobs.etl.cancel", { runId: -4 }, /^Invalid arguments for etl\.cancel: runId: /],
  ];
  const turn = await converse(
    calls.map(([tool, args]) => ({ tool, args })),
    AS_ALICE,
  );
  assert.equal(turn.outputs.length, calls.length);
  for (const [i, [tool, , expected]] of calls.entries()) {
    assert.equal(turn.outputs[i].name, tool);
    assert.match(turn.outputs[i].output, expected, tool);
  }
  assertSafe(JSON.stringify(turn.outputs));
  const sent = emu.requests().filter((r) => r.path.startsWith("/api/2.2/jobs/") && r.path !== "/api/2.2/jobs/get");
  assert.deepEqual(sent, [], "nothing reached the Jobs API but the definition read");
});

test("another job's run is not found, and nothing is sent to it", async (t) => {
  const { emu, app, converse } = await setup(t);
  const other = (await app.app.jobs("report").runNow()).data.run_id;
  emu.setRunState(other, "FAILED");
  const before = writes(emu);
  const turn = await converse(
    ["getRun", "getRunOutput", "wait", "cancel", "repair"].map((verb) => ({ tool: `jobs.etl.${verb}`, args: { runId: other } })),
    AS_ALICE,
  );
  assert.equal(turn.outputs.length, 5);
  for (const { name, output } of turn.outputs) {
    assert.equal(output, `Run ${other} was not found for job "etl": use a run id from this job's status or listRuns tools.`, name);
  }
  assertSafe(JSON.stringify(turn.outputs));
  const after = writes(emu);
  assert.equal(after.cancel.length, 0, "never cancelled");
  assert.equal(after.repair.length, 0, "never repaired");
  assert.equal(after.runNow.length, before.runNow.length);
  assert.equal(emu.getRun(other).state.result_state, "FAILED");
});

test("as the user: a viewer's approved run is refused by the workspace as theirs; a request without a token runs nothing", async (t) => {
  const { emu, converse } = await setup(t);
  const bob = await converse([{ tool: "jobs.etl.run", args: { startDate: "2025-01-01" } }, { tool: "jobs.etl.status" }], AS_BOB);
  assert.equal(bob.approvals.length, 1);
  assert.equal(bob.outputs[0].output, 'Permission denied (403 Forbidden): this needs CAN_MANAGE_RUN on job "etl".');
  assert.equal(emu.runCount(), 0, "no run started");
  assert.deepEqual(
    requestsTo(emu, "/jobs/run-now").map((r) => [r.identity, r.status]),
    [[`user:${BOB.email}`, 403]],
    "run-now went out with bob's token, and only once (a 403 is not retried)",
  );
  assert.deepEqual(bob.outputs[1].output, { job: "etl", run: null, message: 'Job "etl" has no runs yet.' }, "bob may view");
  assert.ok(requestsTo(emu, "/runs/list").every((r) => r.identity === `user:${BOB.email}`));

  emu.clearRequests();
  const anonymous = await converse([{ tool: "jobs.etl.status" }], { "x-forwarded-user": "u-nobody" });
  assert.match(anonymous.outputs[0].output, /no x-forwarded-access-token header/);
  assert.deepEqual(emu.requests().filter((r) => r.path.startsWith("/api/2.2/")), [], "nothing sent without the user's token");
});

test("compact answers: every read of a 150-task run is under 4 KB", async (t) => {
  const { emu, app, converse } = await setup(t);
  const runId = (await app.app.jobs("wide").runNow()).data.run_id;
  emu.setRunState(runId, "FAILED");
  const raw = await app.app.jobs("wide").getRun(runId);
  assert.ok(JSON.stringify(raw.data).length > 40_000, "the run itself is large");
  const turn = await converse(
    [
      { tool: "jobs.wide.status" },
      { tool: "jobs.wide.getRun", args: { runId } },
      { tool: "jobs.wide.getRunOutput", args: { runId } },
      { tool: "jobs.wide.getRunOutput", args: { runId, taskKey: "task_042" } },
      { tool: "jobs.wide.listRuns", args: { limit: 20 } },
      { tool: "jobs.wide.wait", args: { runId } },
    ],
    AS_ALICE,
  );
  assert.equal(turn.outputs.length, 6);
  for (const { name, output } of turn.outputs) {
    const text = JSON.stringify(output);
    assert.ok(typeof output === "object", `${name} answered: ${text}`);
    assert.ok(text.length < 4096, `${name}: ${text.length} characters`);
  }
  const [status, run, outputs, one, list, waited] = turn.outputs.map((o) => o.output);
  for (const answer of [status, run, waited]) {
    assert.equal(answer.runId, runId);
    assert.equal(answer.state, "TERMINATED");
    assert.equal(answer.result, "FAILED");
    assert.equal(answer.done, true);
    assert.match(answer.url, /#job\/1004\/run\//);
    assert.deepEqual([answer.progress.tasksTotal, answer.progress.tasksDone, answer.progress.tasksFailed, answer.progress.fraction], [150, 150, 150, 1]);
    assert.equal(answer.failedTasks.length, 10);
    assert.equal(answer.moreFailedTasks, 140);
  }
  assert.ok(outputs.tasks.length > 0 && outputs.omitted > 0, "outputs listed until the budget, the rest counted");
  assert.deepEqual(one.tasks.map((t) => t.task), ["task_042"]);
  assert.match(one.tasks[0].error, /failed/i);
  assert.deepEqual(list.runs.map((r) => r.runId), [runId]);
  assertSafe(JSON.stringify(turn.outputs));
});

for (const form of ["markdown", "code"]) {
  test(`the example agent (${form}): did the ETL finish? It failed: repaired after an approval, then followed to its end`, async (t) => {
    const { emu, model, app, converse } = await setup(t, {
      agentsConfig: (m) => (form === "markdown" ? { dir: AGENTS_DIR, defaultModel: m } : { dir: false, agents: { "etl-doctor": etlDoctor(m) } }),
    });
    const runId = (await app.app.jobs("etl").runNow({ startDate: "2025-01-01" })).data.run_id;
    emu.setRunState(runId, "FAILED");
    const first = await converse([{ tool: "jobs.etl.status" }], AS_ALICE);
    assert.deepEqual(model.seen[0].map((d) => d.name).sort(), ETL_DOCTOR_TOOLS.map((n) => `jobs.${n}`).sort(), "the doctor's five tools");
    const status = first.outputs[0].output;
    assert.deepEqual([status.runId, status.state, status.result, status.done], [runId, "TERMINATED", "FAILED", true]);
    assert.ok(status.failedTasks.length > 0);
    assert.equal(first.approvals.length, 0, "reads ask nobody");

    // The repair, approved; then wait, while the repaired tasks succeed.
    const second = converse(
      [
        { tool: "jobs.etl.repair", args: { runId } },
        { tool: "jobs.etl.wait", args: { runId, timeoutSeconds: 60 } },
      ],
      AS_ALICE,
    );
    await until(() => requestsTo(emu, "/runs/repair").length === 1, 20_000, "the repair");
    await until(() => emu.getRun(runId)?.state?.life_cycle_state !== "TERMINATED", 20_000, "the repair to start");
    emu.setRunState(runId, "SUCCESS");
    const turn = await second;
    assert.deepEqual(turn.approvals.map((a) => [a.tool, a.effect, a.decision]), [["jobs.etl.repair", "write", "approve"]]);
    const [repair, waited] = turn.outputs.map((o) => o.output);
    assert.equal(repair.repaired, true);
    assert.equal(repair.runId, runId);
    const [sent] = requestsTo(emu, "/runs/repair");
    assert.equal(sent.identity, `user:${ALICE.email}`, "repaired with alice's token");
    assert.equal(sent.body.rerun_all_failed_tasks, true);
    assert.deepEqual([waited.state, waited.result, waited.done, waited.progress.fraction], ["TERMINATED", "SUCCESS", true, 1]);
    assert.equal(writes(emu).runNow.length, 1, "no new run: only the repair");
  });
}

test("markdown agents: plugin:jobs: [etl.status] gives exactly that tool; options objects work too", async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "appkit-jobs-agents-"));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  await fs.mkdir(path.join(dir, "etlbot"));
  await fs.writeFile(
    path.join(dir, "etlbot", "agent.md"),
    ["---", "default: true", "tools:", "  - plugin:jobs: [etl.status]", "---", "You answer whether the nightly ETL finished."].join("\n"),
  );
  await fs.mkdir(path.join(dir, "watcher"));
  await fs.writeFile(
    path.join(dir, "watcher", "agent.md"),
    ["---", "tools:", '  - plugin:jobs: { only: [etl.status, etl.wait], prefix: "" }', "---", "You watch the ETL."].join("\n"),
  );
  const { emu, model, converse } = await setup(t, { agentsConfig: (m) => ({ dir, defaultModel: m }) });
  const turn = await converse(
    [
      { tool: "jobs.etl.status" },
      { tool: "jobs.etl.run", args: { startDate: "2025-01-01" } },
    ],
    AS_ALICE,
  );
  assert.deepEqual(model.seen[0].map((d) => d.name), ["jobs.etl.status"]);
  assert.deepEqual(turn.outputs[0].output, { job: "etl", run: null, message: 'Job "etl" has no runs yet.' });
  assert.match(turn.outputs[1].output, /Unknown tool: jobs\.etl\.run/);
  assert.equal(turn.approvals.length, 0);
  assert.equal(writes(emu).runNow.length, 0);

  await converse([{ tool: "etl.status" }], AS_ALICE, { agent: "watcher" });
  assert.deepEqual(model.seen[1].map((d) => d.name).sort(), ["etl.status", "etl.wait"]);
});

test("standalone runAgent: plugin tools run as the service principal (AppKit's rule: no request, no approval gate)", async (t) => {
  const emu = await emulator(t, { users: USERS });
  Object.assign(process.env, patEnv(emu, JOB_IDS));
  const model = scriptedModel();
  const batch = createAgent({
    name: "batch",
    instructions: "Start the ETL.",
    model,
    tools: (plugins) => ({ ...plugins.jobs.toolkit({ only: ["etl.run"] }) }),
  });
  const result = await runAgent(batch, {
    messages: JSON.stringify({ calls: [{ tool: "jobs.etl.run", args: { startDate: "2025-02-01" } }] }),
    plugins: [jobs(jobsConfig())],
  });
  const [outcome] = JSON.parse(result.text);
  assert.equal(outcome.result.started, true, result.text);
  const [runNow] = requestsTo(emu, "/jobs/run-now");
  assert.equal(runNow.identity, "service_principal");
  assert.equal(requestsTo(emu, "/jobs/run-now").length, 1);
});

test("a definition read after the toolkit was taken: the run tool's schema fills in, in place", async (t) => {
  const emu = await emulator(t);
  const plugin = new JobsPlugin({ env: patEnv(emu, { defined: 1001 }), jobs: { defined: { jobParameters: true } }, logger: { info() {}, warn() {} } });
  t.after(() => plugin.abortActiveOperations());
  const entry = plugin.toolkit({ only: ["defined.run", "defined.repair"] });
  const schema = entry["jobs.defined.run"].def.parameters;
  assert.deepEqual(schema.additionalProperties, { type: "string" }, "before the definition: values as text");
  await plugin.loadClientConfig();
  assert.deepEqual(Object.keys(schema.properties).sort(), ["date", "mode"], "the same object, now the definition's");
  assert.deepEqual(Object.keys(entry["jobs.defined.repair"].def.parameters.properties.params.properties).sort(), ["date", "mode"]);
  assert.deepEqual(Object.keys(plugin.getAgentTools().find((d) => d.name === "defined.run").parameters.properties).sort(), ["date", "mode"]);
});

test("an upstream failure answers with its status and what to do, never the upstream's text", async (t) => {
  const { emu, converse } = await setup(t);
  emu.injectFault({ path: "/api/2.2/jobs/runs/list", status: 500, errorCode: "INTERNAL_ERROR", message: "db-7 at https://internal.example/x failed", times: 10 });
  const turn = await converse([{ tool: "jobs.etl.status" }, { tool: "jobs.etl.listRuns" }], AS_ALICE);
  for (const { output } of turn.outputs) {
    assert.equal(output, "The Jobs API is not available (500 Internal Server Error): try again later.");
  }
  assertSafe(JSON.stringify(turn.outputs));
  assert.ok(!JSON.stringify(turn.events).includes("db-7"), "the upstream's message reaches neither the model nor the page");
});

test("wait: a run still going when timeoutSeconds pass answers done: false and how to go on; an unknown tool rejects", async (t) => {
  const { app, converse } = await setup(t);
  const runId = (await app.app.jobs("wide").runNow()).data.run_id; // time is frozen: it stays queued
  const turn = await converse([{ tool: "jobs.wide.wait", args: { runId, timeoutSeconds: 1 } }], AS_ALICE);
  const waited = turn.outputs[0].output;
  assert.equal(waited.runId, runId);
  assert.equal(waited.done, false);
  assert.match(waited.message, /^Still [A-Z]+ after \d+ s: call wait again to keep following it\.$/);
  assert.equal(waited.progress.tasksTotal, 150);
  assert.ok(JSON.stringify(waited).length < 4096);
  await assert.rejects(app.plugin.executeAgentTool("nope.status", {}), /Unknown tool: nope\.status/);
});
