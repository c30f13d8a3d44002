// A real AppKit app in this process (not a test file): createApp with server() on loopback and
// our jobs plugin, pointed at an emulator. AppKit runs in production mode (NODE_ENV unset):
// it enforces the plugin's resource requirements, with DATABRICKS_JOB_<NAME> variables only.
import { createRequire } from "node:module";
import { createApp, server } from "@databricks/appkit";
import { jobs } from "appkit-jobs";
import { patEnv } from "./emulator.mjs";

const { JobsPlugin } = createRequire(import.meta.url)("appkit-jobs");

/**
 * `{ app, plugin, port, base, close() }`: `plugin` is the JobsPlugin instance AppKit made,
 * `base` the URL of /api/jobs. `jobIds`: `{ key: job id }` of the emulator's jobs.
 */
export async function startAppKit(emu, jobIds, pluginConfig) {
  delete process.env.NODE_ENV;
  delete process.env.DATABRICKS_JOB_ID;
  // AppKit asks the emulator itself who the service principal is (SCIM Me) and which workspace it is.
  Object.assign(process.env, patEnv(emu, jobIds));
  let plugin;
  const Spy = class extends JobsPlugin {
    constructor(config) {
      super(config);
      plugin = this;
    }
  };
  const app = await createApp({ plugins: [server({ port: 0, host: "127.0.0.1" }), { ...jobs(pluginConfig), plugin: Spy }] });
  const srv = app.server.getServer();
  if (!srv.listening) await new Promise((r) => srv.once("listening", r));
  const port = srv.address().port;
  return {
    app,
    plugin,
    port,
    base: `http://127.0.0.1:${port}/api/jobs`,
    close: async () => {
      plugin?.abortActiveOperations();
      srv.closeAllConnections?.();
      await new Promise((r) => srv.close(() => r()));
    },
  };
}
