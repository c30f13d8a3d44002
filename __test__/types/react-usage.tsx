// appkit-jobs/react used as an app would: typed params from the server's config, the hooks'
// results, the components in TSX. Lines marked @ts-expect-error must fail to compile.
import { z } from "zod";
import { JobPanel, JobParamsForm, JobRunButton, JobRunTimeline, JobRunsTable, JobsProvider, typedJobHooks, useJob, useJobRuns, type JobError, type UseJobResult } from "appkit-jobs/react";
import { useJob as useJobFromHooks } from "appkit-jobs/react/hooks";
import { jobs, type IJobsConfig } from "appkit-jobs";

// The server's config, shared with the client as a type only.
const jobsConfig = {
  jobs: {
    etl: { taskType: "notebook", params: z.object({ startDate: z.string(), dryRun: z.boolean().optional() }) },
    report: { params: { type: "object", properties: { region: { type: "string" } } } },
    nightly: {},
  },
} satisfies IJobsConfig;
const plugin = jobs(jobsConfig);

export function Typed() {
  const etl = useJob<typeof jobsConfig, "etl">("etl");
  void etl.start({ startDate: "2025-01-01" });
  // @ts-expect-error startDate is a string
  void etl.start({ startDate: 5 });
  // @ts-expect-error not a job of the config
  useJob<typeof jobsConfig, "etll">("etll");
  const { useJob: useTypedJob, useJobRuns: useTypedRuns } = typedJobHooks<typeof jobsConfig>();
  const report = useTypedJob("report");
  void report.start({ anything: 1 }); // a JSON Schema job: Record<string, unknown>
  // @ts-expect-error unknown key
  useTypedJob("nope");
  const fromPlugin = typedJobHooks<typeof plugin>().useJob("etl");
  // @ts-expect-error dryRun is a boolean
  void fromPlugin.start({ startDate: "x", dryRun: "yes" });
  const runs = useTypedRuns("nightly", { limit: 3 });
  const first: number | undefined = runs.runs[0]?.run_id;
  void first;
  return (
    <>
      <JobRunButton<typeof jobsConfig, "etl"> job={etl} params={() => ({ startDate: "2025-02-01" })}>
        Run ETL
      </JobRunButton>
      <JobParamsForm job={report} submitLabel="Go" />
      <JobRunTimeline job={etl} onRepair={(id) => void etl.repair({ runId: id, rerunTasks: ["publish"] })} />
      <JobRunsTable runs={runs} onRepair={(id) => void etl.repair({ runId: id })} />
    </>
  );
}

export function Untyped() {
  const job: UseJobResult = useJobFromHooks("anything", { basePath: "/api/jobs", maxRetries: 10 });
  const error: JobError | null = job.error;
  const fields: Record<string, string> | undefined = error?.fields;
  void fields;
  const pct: number | undefined = job.progress?.fraction;
  void pct;
  const runs = useJobRuns("anything");
  void runs.refresh();
  void job.cancel();
  void job.repair();
  return (
    <JobsProvider basePath="/api/jobs" config={{ jobs: { anything: { params: null, taskType: null } } }}>
      <JobPanel jobKey="anything" limit={3} title="Anything" />
      <JobRunButton jobKey="anything" disabled={false} className="w-full" />
      <JobRunsTable jobKey="anything" limit={5} />
    </JobsProvider>
  );
}
