"use strict";
// appkit-jobs: a drop-in replacement for AppKit's jobs plugin with a Rust core.
//
//   const { jobs } = require("appkit-jobs");          // AppKit: createApp({ plugins: [server(), jobs()] })
//   const { createJobs } = require("appkit-jobs");    // standalone: createJobs()( "etl").runNow()
//   const { startEmulator } = require("appkit-jobs"); // local Jobs API 2.2 emulator
//
// Plain `exports.x = ...` assignments so that Node's ESM named imports see every name.
const { JobsError, ValidationError } = require("./errors.js");
const { createJobs, createJobsRuntime } = require("./runtime.js");
const { JobsPlugin } = require("./plugin.js");
const { startEmulator } = require("./emulator.js");
const { createJobsHandler } = require("./http.js");

/**
 * AppKit plugin factory: `{ plugin: JobsPlugin, config, name: "jobs" }`.
 * @param {import("./index").IJobsConfig} [config]
 */
function jobs(config) {
  return { plugin: JobsPlugin, config: config ?? {}, name: "jobs" };
}

/**
 * `app.jobs` seen with the params types of `config` (types only: it returns `exports` itself,
 * after checking that it is a jobs export).
 */
function typedJobs(exports, _config) {
  if (typeof exports !== "function") throw new TypeError("typedJobs: expected the jobs export (app.jobs)");
  return exports;
}

exports.jobs = jobs;
exports.typedJobs = typedJobs;
exports.createJobs = createJobs;
exports.createJobsRuntime = createJobsRuntime;
exports.startEmulator = startEmulator;
exports.createJobsHandler = createJobsHandler;
exports.JobsError = JobsError;
exports.ValidationError = ValidationError;
exports.JobsPlugin = JobsPlugin;
