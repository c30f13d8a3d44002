// A child process for the stream tests (not a test file): a real AppKit app, createApp with
// server() and our jobs plugin, against the workspace in its env. It prints one line
// `{"port":N}` once it listens, and shuts down as AppKit does on SIGTERM (abortActiveOperations,
// then server.close()), printing `{"shutdown":true}` when its plugin has cut its streams.
//
//   node __test__/support/appkit-app.mjs
//   env: DATABRICKS_HOST, DATABRICKS_TOKEN, DATABRICKS_JOB_<KEY>, POLL_MS (default 50);
//   the ledger's (PGHOST, ... LAKEBASE_ENDPOINT) when the test gives them, LEASE_MS (the
//   ledger's leaseMs); ON_RUN_END=1: every job gets an onRunEnd handler that prints
//   `{"runEnd":{jobKey,runId,repairId,result,startedBy,pid}}` (ON_RUN_END_FAIL=N: its first N
//   calls throw).
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
let failures = Number(process.env.ON_RUN_END_FAIL ?? 0);
const onRunEnd = process.env.ON_RUN_END
  ? async (run, { jobKey, runId, repairId, startedBy }) => {
      if (failures-- > 0) throw new Error("the handler failed on purpose");
      const end = { jobKey, runId, repairId: repairId ?? 0, result: run.state?.result_state ?? null, startedBy: startedBy?.email ?? null, pid: process.pid };
      console.log(JSON.stringify({ runEnd: end }));
    }
  : undefined;
const config = {
  pollIntervalMs: Number(process.env.POLL_MS ?? 50),
  jobs: Object.fromEntries(keys.map((k) => [k, onRunEnd ? { onRunEnd } : {}])),
  ...(process.env.LEASE_MS ? { ledger: { leaseMs: Number(process.env.LEASE_MS) } } : {}),
};
const data = jobs(config);
const app = await createApp({ plugins: [server({ port: 0, host: "127.0.0.1" }), { ...data, plugin: Plugin }] });
const srv = app.server.getServer();
if (!srv.listening) await new Promise((r) => srv.once("listening", r));
console.log(JSON.stringify({ port: srv.address().port }));
