// The ETL doctor in code: the instructions of config/agents/etl-doctor/agent.md (one text for
// both forms) and the same five tools of the jobs plugin. `model`: an AgentAdapter or a serving
// endpoint's name; without one, AppKit's agents() uses DATABRICKS_SERVING_ENDPOINT_NAME.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createAgent } from "@databricks/appkit/beta";

export const AGENTS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "config", "agents");

/** The tools the doctor needs: read the ETL, repair it, follow the repair. Never `etl.run`. */
export const ETL_DOCTOR_TOOLS = ["etl.status", "etl.getRun", "etl.getRunOutput", "etl.repair", "etl.wait"];

const markdown = readFileSync(path.join(AGENTS_DIR, "etl-doctor", "agent.md"), "utf8");
export const instructions = markdown.replace(/^---[\s\S]*?---\s*/, "").trim();

export function etlDoctor(model) {
  return createAgent({
    instructions,
    ...(model ? { model } : {}),
    tools: (plugins) => ({ ...plugins.jobs.toolkit({ only: ETL_DOCTOR_TOOLS }) }),
  });
}
