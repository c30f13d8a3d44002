#!/usr/bin/env node
"use strict";
// A consumer's first contact, run from a project where appkit-jobs is installed: the addon loads
// on this platform, and a job runs to its end on the bundled emulator (runAndWait, runNow,
// getRun). Used by the release workflow on every target and by scripts/test-arm64.sh.
const assert = require("node:assert/strict");
const { createRequire } = require("node:module");

const fromProject = createRequire(`${process.cwd()}/`);
const { startEmulator, createJobs } = fromProject("appkit-jobs");

(async () => {
  const started = Date.now();
  const emu = await startEmulator({ timeScale: 20 });
  try {
    const api = createJobs({}, { env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "1001" } });
    const states = [];
    for await (const update of api("etl").runAndWait()) states.push(update.status);
    assert.equal(states.at(-1), "TERMINATED", `states: ${states.join(" ")}`);
    const again = await api("etl").runNow();
    assert.ok(again.ok, JSON.stringify(again));
    const run = await api("etl").getRun(again.data.run_id);
    assert.ok(run.ok && run.data.job_id === 1001, JSON.stringify(run));
    console.log(`smoke ok on ${process.platform}-${process.arch} (Node ${process.version}): ${states.join(" -> ")} in ${Date.now() - started} ms`);
  } finally {
    await emu.stop();
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
