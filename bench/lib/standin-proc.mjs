// A Databricks workspace stand-in written in Node (plain node:http), in its own process, for
// bench/runnow-standin.mjs: `node bench/lib/standin-proc.mjs '<options JSON>'`. Prints one line
// `STANDIN {"url":...,"token":...,"pid":...}` once it listens, then serves until SIGTERM or
// until its parent closes stdin. Loopback only.
//
// It answers what an AppKit app with either jobs plugin calls, as a real server would
// (keep-alive, Content-Length, a Date header): run-now, runs/get (a run's state from the time
// since its run-now: QUEUED, PENDING, RUNNING, TERMINATING, TERMINATED/SUCCESS), runs/list,
// jobs/get, SCIM Me, AppKit's /telemetry-ext, the host metadata SDKs read at start. Anything
// else is a 404 in the API's error shape, and counted.
//
// Switches (options JSON), to test one HTTP behaviour at a time:
//   keepAlive   true   false: `Connection: close` on every answer
//   chunked     false  true: the body is written in two chunks (Transfer-Encoding: chunked)
//   date        true   false: no Date header
//   headers     false  true: the extra headers a real workspace sends (request id, HSTS, ...)
//   latencyMs   0      every answer waits this long first (a timer, no CPU)
//   padBytes    0      this many more bytes in every Jobs API answer (a `_pad` field)
//   phasesMs    { queued: 10, pending: 20, running: 240, terminating: 30 }
// Control: GET /__standin/requests -> { counts: { "<METHOD> <path>": n } }; POST /__standin/reset.
import http from "node:http";

const options = {
  keepAlive: true,
  chunked: false,
  date: true,
  headers: false,
  latencyMs: 0,
  padBytes: 0,
  phasesMs: { queued: 10, pending: 20, running: 240, terminating: 30 },
  jobId: 7001,
  ...JSON.parse(process.argv[2] ?? "{}"),
};
const TOKEN = "dapi-standin-token";
const ORG_ID = "1234567890123456";
const PAD = options.padBytes > 0 ? "x".repeat(options.padBytes) : "";
const P = options.phasesMs;

let base = "";
let nextRunId = 100_000_000_001;
/** run id -> { jobId, number, start } */
const runs = new Map();
const numbers = new Map();
let counts = new Map();

function send(req, res, status, body) {
  let text = JSON.stringify(body);
  if (PAD && req.url.startsWith("/api/2.")) text = `${text.slice(0, -1)}${text.length > 2 ? "," : ""}"_pad":"${PAD}"}`;
  const finish = () => {
    res.statusCode = status;
    res.sendDate = options.date;
    res.setHeader("content-type", "application/json");
    res.setHeader("x-databricks-org-id", ORG_ID);
    if (options.headers) {
      res.setHeader("x-request-id", crypto.randomUUID());
      res.setHeader("strict-transport-security", "max-age=31536000; includeSubDomains; preload");
      res.setHeader("x-content-type-options", "nosniff");
      res.setHeader("server", "databricks");
      res.setHeader("vary", "Accept-Encoding");
      res.setHeader("cache-control", "no-cache, no-store, must-revalidate");
    }
    if (!options.keepAlive) res.setHeader("connection", "close");
    if (options.chunked) {
      const half = text.length >> 1;
      res.write(text.slice(0, half));
      res.end(text.slice(half));
    } else {
      res.setHeader("content-length", Buffer.byteLength(text));
      res.end(text);
    }
  };
  if (options.latencyMs > 0) setTimeout(finish, options.latencyMs);
  else finish();
}

function apiError(req, res, status, code, message) {
  send(req, res, status, { error_code: code, message });
}

const TASK = { notebook_task: { notebook_path: "/Workspace/jobs/main", source: "WORKSPACE" }, task_key: "main", timeout_seconds: 0 };

/** A run as runs/get shows it at `now` (~1.5 KB, the shape of the API's answer). */
function renderRun(runId, run, now) {
  const t = now - run.start;
  let life;
  let result;
  let message = "";
  if (t < P.queued) [life, message] = ["QUEUED", "Waiting in the job queue."];
  else if (t < P.queued + P.pending) [life, message] = ["PENDING", "Waiting for cluster."];
  else if (t < P.queued + P.pending + P.running) [life, message] = ["RUNNING", "In run"];
  else if (t < P.queued + P.pending + P.running + P.terminating) life = "TERMINATING";
  else [life, result] = ["TERMINATED", "SUCCESS"];
  const ended = life === "TERMINATED";
  const end = ended ? run.start + P.queued + P.pending + P.running + P.terminating : 0;
  const state = { life_cycle_state: life, ...(result ? { result_state: result } : {}), state_message: message, user_cancelled_or_timedout: false };
  const status = ended
    ? { state: "TERMINATED", termination_details: { code: "SUCCESS", message: "", type: "SUCCESS" } }
    : { state: life === "PENDING" ? "PENDING" : life };
  const page = (id) => `${base}/?o=${ORG_ID}#job/${run.jobId}/run/${id}`;
  const times = {
    cleanup_duration: 0,
    end_time: end,
    execution_duration: ended ? P.running : 0,
    queue_duration: Math.min(t, P.queued),
    run_duration: ended ? end - run.start : 0,
    setup_duration: 0,
    start_time: run.start,
  };
  return {
    attempt_number: 0,
    ...times,
    creator_user_name: "standin-sp@example.com",
    format: "MULTI_TASK",
    has_more: false,
    job_id: run.jobId,
    number_in_job: run.number,
    original_attempt_run_id: runId,
    run_id: runId,
    run_name: "bench",
    run_page_url: page(runId),
    run_type: "JOB_RUN",
    state,
    status,
    tasks: [{ attempt_number: 0, ...times, email_notifications: {}, ...TASK, run_id: runId + 1, run_page_url: page(runId + 1), state, status }],
    trigger: "ONE_TIME",
  };
}

function runNow(req, res, body) {
  const jobId = Number(body?.job_id);
  if (!Number.isSafeInteger(jobId) || jobId <= 0) return apiError(req, res, 400, "INVALID_PARAMETER_VALUE", "job_id is required.");
  // Idempotency: the same token answers the same run.
  const token = body.idempotency_token;
  if (token !== undefined) {
    const known = runs.get(`token:${token}`);
    if (known) return send(req, res, 200, { number_in_job: known.number, run_id: known.runId });
  }
  const runId = nextRunId;
  nextRunId += 10;
  const number = (numbers.get(jobId) ?? 0) + 1;
  numbers.set(jobId, number);
  const run = { jobId, number, start: Date.now(), runId };
  runs.set(runId, run);
  if (token !== undefined) runs.set(`token:${token}`, run);
  send(req, res, 200, { number_in_job: number, run_id: runId });
}

function query(url) {
  return Object.fromEntries(new URL(url, "http://x").searchParams);
}

function route(req, res, body) {
  const path = req.url.split("?")[0];
  const key = `${req.method} ${path}`;
  counts.set(key, (counts.get(key) ?? 0) + 1);
  if (path === "/__standin/requests") return send(req, res, 200, { counts: Object.fromEntries(counts) });
  if (path === "/__standin/reset") {
    counts = new Map();
    runs.clear();
    return send(req, res, 200, {});
  }
  if (path === "/.well-known/databricks-config") {
    return send(req, res, 200, { oidc_endpoint: `${base}/oidc`, workspace_id: ORG_ID, cloud: "AWS", host_type: "workspace" });
  }
  if (req.headers.authorization !== `Bearer ${TOKEN}`) return apiError(req, res, 401, "UNAUTHENTICATED", "Invalid access token.");
  const api = path.replace(/^\/api\/2\.[12]\/jobs\//, "jobs/");
  if (req.method === "POST" && api === "jobs/run-now") return runNow(req, res, body);
  if (req.method === "GET" && api === "jobs/runs/get") {
    const runId = Number(query(req.url).run_id);
    const run = runs.get(runId);
    if (!run) return apiError(req, res, 404, "RESOURCE_DOES_NOT_EXIST", `Run ${runId} does not exist.`);
    return send(req, res, 200, renderRun(runId, run, Date.now()));
  }
  if (req.method === "GET" && api === "jobs/runs/list") {
    // Completed runs of the job (its history): three successful ones, ended a while ago.
    const q = query(req.url);
    const jobId = Number(q.job_id) || options.jobId;
    const total = P.queued + P.pending + P.running + P.terminating;
    const past = [1, 2, 3].map((i) => renderRun(90_000_000_000 + i * 10, { jobId, number: i, start: Date.now() - 60_000 * i }, Date.now() - 60_000 * i + total + 1));
    if (q.expand_tasks !== "true") for (const r of past) delete r.tasks;
    return send(req, res, 200, { has_more: false, runs: past });
  }
  if (req.method === "GET" && api === "jobs/get") {
    const jobId = Number(query(req.url).job_id);
    return send(req, res, 200, {
      created_time: Date.now() - 86_400_000,
      creator_user_name: "standin-sp@example.com",
      job_id: jobId,
      run_as_user_name: "standin-sp@example.com",
      settings: {
        email_notifications: {},
        format: "MULTI_TASK",
        max_concurrent_runs: 1000,
        name: "bench",
        parameters: [{ name: "date", default: "2025-01-01" }, { name: "mode", default: "full" }],
        queue: { enabled: true },
        tasks: [{ email_notifications: {}, ...TASK }],
        timeout_seconds: 0,
      },
    });
  }
  if (req.method === "GET" && path === "/api/2.0/preview/scim/v2/Me") {
    return send(req, res, 200, {
      schemas: ["urn:ietf:params:scim:schemas:core:2.0:User"],
      id: "4242424242424242",
      userName: "standin-sp@example.com",
      displayName: "standin-sp@example.com",
      active: true,
      emails: [{ value: "standin-sp@example.com", type: "work", primary: true }],
      groups: [],
    });
  }
  if (req.method === "POST" && path === "/telemetry-ext") return send(req, res, 200, {});
  apiError(req, res, 404, "ENDPOINT_NOT_FOUND", `No API found for '${req.method} ${path}'`);
}

const server = http.createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let body;
    if (chunks.length > 0) {
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        return apiError(req, res, 400, "MALFORMED_REQUEST", "Invalid JSON.");
      }
    }
    route(req, res, body);
  });
});
server.listen(0, "127.0.0.1", () => {
  base = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(`STANDIN ${JSON.stringify({ url: base, token: TOKEN, pid: process.pid })}\n`);
});

function stop() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
