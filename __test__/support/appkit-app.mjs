// A child process for the stream tests (not a test file): a real AppKit app, createApp with
// server() and our jobs plugin, against the workspace in its env. It prints one line
// `{"port":N}` once it listens, and shuts down as AppKit does on SIGTERM (abortActiveOperations,
// then server.close()), printing `{"shutdown":true}` when its plugin has cut its streams.
//
//   node __test__/support/appkit-app.mjs
//   env: DATABRICKS_HOST, DATABRICKS_TOKEN, DATABRICKS_JOB_<KEY>, POLL_MS (default 50)
import { createApp, server } from "@databricks/appkit";
import { jobs } from "appkit-jobs";
import { createRequire } from "node:module";

const { JobsPlugin } = createRequire(import.meta.url)("appkit-jobs");

class Plugin extends JobsPlugin {
  abortActiveOperations() {
    super.abortActiveOperations();
    console.log(JSON.stringify({ shutdown: true, streams: this.activeStreamCount() }));
  }
}

const keys = Object.keys(process.env)
  .filter((k) => k.startsWith("DATABRICKS_JOB_"))
  .map((k) => k.slice("DATABRICKS_JOB_".length).toLowerCase());
const data = jobs({ pollIntervalMs: Number(process.env.POLL_MS ?? 50), jobs: Object.fromEntries(keys.map((k) => [k, {}])) });
const app = await createApp({ plugins: [server({ port: 0, host: "127.0.0.1" }), { ...data, plugin: Plugin }] });
const srv = app.server.getServer();
if (!srv.listening) await new Promise((r) => srv.once("listening", r));
console.log(JSON.stringify({ port: srv.address().port }));
