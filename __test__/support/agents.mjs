// Agents in a real AppKit app (not a test file): createApp with server(), our jobs plugin and
// AppKit's agents() plugin on loopback, pointed at an emulator, with a scripted model: an
// AgentAdapter that calls the tools the chat message names, in order, and answers with what
// they returned. AppKit runs in production mode (NODE_ENV unset), as it does on Databricks Apps.
import { createRequire } from "node:module";
import { createApp, server } from "@databricks/appkit";
import { agents, createAgent } from "@databricks/appkit/beta";
import { jobs } from "appkit-jobs";
import { patEnv } from "./emulator.mjs";
import { openSse } from "./http.mjs";
import { until } from "./util.mjs";

const { JobsPlugin } = createRequire(import.meta.url)("appkit-jobs");

/**
 * The scripted model. A chat message is JSON: `{ "calls": [{ "tool": "<name>", "args": {...} }] }`;
 * the model calls each tool in turn through AppKit (`context.executeTool`, which applies the
 * approval gate and runs the plugin's tool as the request's user), then answers with the
 * JSON of `[{ tool, result } | { tool, error }]`. `seen` holds the tools of every run, `results`
 * the outcomes of every call.
 */
export function scriptedModel() {
  const model = {
    seen: [],
    results: [],
    async *run(input, context) {
      model.seen.push(input.tools);
      const last = [...input.messages].reverse().find((m) => m.role === "user");
      let script;
      try {
        script = JSON.parse(last?.content ?? "{}");
      } catch {
        script = {};
      }
      const outcomes = [];
      let n = 0;
      for (const call of script.calls ?? []) {
        const callId = `call_${++n}`;
        yield { type: "tool_call", callId, name: call.tool, args: call.args ?? {} };
        try {
          const result = await context.executeTool(call.tool, call.args ?? {});
          outcomes.push({ tool: call.tool, result });
          yield { type: "tool_result", callId, result };
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error);
          outcomes.push({ tool: call.tool, error: message });
          yield { type: "tool_result", callId, result: null, error: message };
        }
      }
      model.results.push(...outcomes);
      yield { type: "message", content: JSON.stringify(outcomes) };
    },
  };
  return model;
}

/** Headers of a signed-in user of a Databricks App (what its proxy forwards). */
export function userHeaders(user) {
  return {
    "x-forwarded-access-token": user.token,
    "x-forwarded-user": user.id,
    "x-forwarded-email": user.email,
  };
}

/**
 * createApp({ plugins: [server(), jobs(jobsConfig), agents(agentsConfig)] }) against `emu`:
 * `{ app, plugin, base, chat(message, headers), approve(streamId, approvalId, decision, headers), close() }`.
 * `plugin` is the JobsPlugin instance AppKit made; `base` the app's URL.
 */
export async function startAgentsApp(emu, jobIds, jobsConfig, agentsConfig) {
  delete process.env.NODE_ENV;
  delete process.env.DATABRICKS_JOB_ID;
  Object.assign(process.env, patEnv(emu, jobIds));
  let plugin;
  const Spy = class extends JobsPlugin {
    constructor(config) {
      super(config);
      plugin = this;
    }
  };
  const app = await createApp({
    disableInternalTelemetry: true,
    plugins: [server({ port: 0, host: "127.0.0.1" }), { ...jobs(jobsConfig), plugin: Spy }, agents(agentsConfig)],
  });
  const srv = app.server.getServer();
  if (!srv.listening) await new Promise((r) => srv.once("listening", r));
  const base = `http://127.0.0.1:${srv.address().port}`;
  return {
    app,
    plugin,
    base,
    /** Opens a chat stream (`POST /api/agents/chat`) and reads it as it comes (see openSse). */
    chat: (message, headers = {}, agent) =>
      openSse(`${base}/api/agents/chat`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(agent ? { message: JSON.stringify(message), agent } : { message: JSON.stringify(message) }),
      }),
    /** `POST /api/agents/approve`: `{ status, json }`. */
    approve: async (streamId, approvalId, decision, headers = {}) => {
      const res = await fetch(`${base}/api/agents/approve`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify({ streamId, approvalId, decision }),
      });
      return { status: res.status, json: await res.json().catch(() => undefined) };
    },
    close: async () => {
      plugin?.abortActiveOperations();
      srv.closeAllConnections?.();
      await new Promise((r) => srv.close(() => r()));
    },
  };
}

/** The `appkit.approval_pending` event of a chat stream, once it came. */
export async function approvalPending(stream) {
  let found;
  await until(() => (found = stream.events().find((e) => e.data?.type === "appkit.approval_pending")) !== undefined, 10_000, "approval_pending");
  return found.data;
}

/** The tool outputs of a finished chat stream, in order: `[{ name, output }]` (output parsed when JSON). */
export function toolOutputs(events) {
  const names = new Map();
  const out = [];
  for (const { data } of events) {
    const item = data?.item;
    if (data?.type !== "response.output_item.done" && data?.type !== "response.output_item.added") continue;
    if (item?.type === "function_call") names.set(item.call_id, item.name);
    if (item?.type === "function_call_output" && data.type === "response.output_item.done") {
      let output = item.output;
      try {
        output = JSON.parse(output);
      } catch {
        // text
      }
      out.push({ name: names.get(item.call_id), output });
    }
  }
  return out;
}

export { createAgent };
