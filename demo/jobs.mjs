// The jobs the demo exposes (the emulator's sample jobs), shared by the demo server and the fleet demo.

/** The emulator's sample jobs the demo exposes, with a params schema where it makes sense. */
export const DEMO_JOBS = {
  etl: {
    id: 1001,
    config: {
      taskType: "notebook",
      params: {
        type: "object",
        properties: {
          date: { type: "string", format: "date", title: "Date", description: "day to process" },
          mode: { type: "string", enum: ["full", "incremental"], default: "incremental", title: "Mode" },
          dryRun: { type: "boolean", title: "Dry run", default: false },
        },
        required: ["date"],
        additionalProperties: false,
      },
    },
  },
  report: {
    id: 1002,
    config: {
      taskType: "python_wheel",
      params: {
        type: "object",
        properties: {
          region: { type: "string", enum: ["emea", "amer", "apac"], title: "Region" },
          top: { type: "integer", minimum: 1, maximum: 50, default: 10, title: "Top N" },
        },
        required: ["region"],
      },
    },
  },
  // No schema here: the form and the check come from the job's own parameters (jobs/get).
  nightly: { id: 1001, config: { jobParameters: true } },
  // Its runs fail: the page offers to repair them.
  mixed: { id: 1009, config: {} },
  warehouse: { id: 1003, config: { taskType: "sql" } },
  pipeline: { id: 1004, config: {} },
  // A task graph: fan-out, a for-each task, fan-in; `publish` fails, so its repair is offered.
  graph: { id: 1010, config: {} },
  // extract -> transform -> load, with history: the page shows the expected end.
  chain: { id: 1011, config: {} },
};
