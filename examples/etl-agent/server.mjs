// An AppKit app whose agent answers "did the ETL finish, and if it failed, repair it", with the
// person asking approving the repair. The agent is the markdown file
// config/agents/etl-doctor/agent.md, or the same agent in code (agent.mjs) with
// ETL_DOCTOR_IN_CODE=1.
//
// On Databricks Apps (or locally with DATABRICKS_HOST and a token): DATABRICKS_JOB_ETL is the
// job's id, DATABRICKS_SERVING_ENDPOINT_NAME a streaming chat model. A chat is
// POST /api/agents/chat { "message": "Did the ETL finish?" }; when the agent calls jobs.etl.repair
// the stream sends `appkit.approval_pending`, and the page answers
// POST /api/agents/approve { streamId, approvalId, decision: "approve" | "deny" }.
import { createApp, server } from "@databricks/appkit";
import { agents } from "@databricks/appkit/beta";
import { jobs } from "appkit-jobs";
import { AGENTS_DIR, etlDoctor } from "./agent.mjs";

const inCode = process.env.ETL_DOCTOR_IN_CODE === "1";

await createApp({
  plugins: [
    server(),
    jobs({ jobs: { etl: { taskType: "notebook", description: "the nightly ETL" } } }),
    agents(inCode ? { dir: false, agents: { "etl-doctor": etlDoctor() } } : { dir: AGENTS_DIR }),
  ],
});
