// appkit-jobs/react: hooks and components for AppKit's React apps (React 18 or 19 and
// @databricks/appkit-ui, both optional peers of appkit-jobs). Plain ESM without JSX, for a
// bundler to take as it is. The hooks alone, without appkit-ui: appkit-jobs/react/hooks.
export { JobsProvider, typedJobHooks, useJob, useJobConfig, useJobRuns } from "./hooks.mjs";
export { JobPanel, JobParamsForm, JobRunButton, JobRunTimeline, JobRunsTable } from "./components.mjs";
export { fieldErrors, formFields, isRepairable, isTerminal, lifeCycleState, paramsFromValues, resultOf, startedByLabel, startedByTitle, timelineModel } from "./model.mjs";
