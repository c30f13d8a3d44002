// AppKit's own tooling finds the plugin: `appkit plugin sync` (what templates and deployments
// use to declare an app's resources) reads server/server.ts and the manifest.json that npm
// packages ship under dist/plugins/. With `jobs` imported from appkit-jobs, the jobs plugin must
// come from appkit-jobs, be required by the template, and declare its job resource with
// CAN_MANAGE_RUN; `appkit plugin validate` must accept the manifest.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { placeManifest } from "../scripts/manifest.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const APPKIT_CLI = path.join(ROOT, "node_modules", "@databricks", "appkit", "bin", "appkit.js");

// The checkout is linked as the installed package: it needs AppKit's copy of the manifest,
// which `prepare` places (generated: a clean `rm -rf dist` must not break this test).
placeManifest();

function appkit(cwd, args) {
  return spawnSync(process.execPath, [APPKIT_CLI, ...args], { cwd, encoding: "utf8", timeout: 120_000 });
}

/** A temporary app whose node_modules holds AppKit and this package (as installed, by link). */
function tempApp(t, serverTs) {
  const app = fs.mkdtempSync(path.join(os.tmpdir(), "appkit-jobs-cli-"));
  t.after(() => fs.rmSync(app, { recursive: true, force: true }));
  fs.mkdirSync(path.join(app, "server"));
  fs.mkdirSync(path.join(app, "node_modules", "@databricks"), { recursive: true });
  fs.symlinkSync(path.join(ROOT, "node_modules", "@databricks", "appkit"), path.join(app, "node_modules", "@databricks", "appkit"));
  fs.symlinkSync(ROOT, path.join(app, "node_modules", "appkit-jobs"));
  fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  fs.writeFileSync(path.join(app, "server", "server.ts"), serverTs);
  return app;
}

test("appkit plugin sync lists jobs from appkit-jobs, required by the template, with its job resource", (t) => {
  const app = tempApp(
    t,
    `import { createApp, server } from "@databricks/appkit";
import { jobs } from "appkit-jobs";

await createApp({ plugins: [server(), jobs({ jobs: { etl: { taskType: "notebook" } } })] });
`,
  );
  const r = appkit(app, ["plugin", "sync", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /failed schema validation/);
  const { plugins } = JSON.parse(r.stdout);
  assert.equal(plugins.jobs.package, "appkit-jobs");
  assert.equal(plugins.jobs.requiredByTemplate, true);
  const [job] = plugins.jobs.resources.required;
  assert.equal(job.type, "job");
  assert.equal(job.permission, "CAN_MANAGE_RUN");
  assert.equal(job.fields.id.env, "DATABRICKS_JOB_ID");
  assert.equal(plugins.server.requiredByTemplate, true);
});

test("appkit plugin validate accepts the shipped manifest", () => {
  const r = appkit(ROOT, ["plugin", "validate", path.join("dist", "plugins", "jobs"), "--json"]);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  const results = JSON.parse(r.stdout);
  assert.ok(results.length >= 1 && results.every((x) => x.valid), r.stdout);
});
