//! Emulator configuration: options, job specs, user tokens, faults and the sample jobs.
//! Everything here deserializes from the camelCase JSON a JS caller passes.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use appkit_jobs_core::{JobsError, Result};

/// Options of [`crate::Emulator::start`]. Every field is optional.
///
/// JSON (camelCase): `{ port, jobs, jobsFile, timeScale, token, servicePrincipalName, users,
/// clientId, clientSecret, oauthTokenTtlSecs, orgId, firstRunId, requestLogLimit, lakebase }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmulatorOptions {
    /// TCP port on 127.0.0.1; 0 (the default) picks a free one.
    pub port: u16,
    /// The jobs to serve. `None` (and no `jobs_file`) serves [`sample_jobs`].
    pub jobs: Option<Vec<JobSpec>>,
    /// A JSON file holding either an array of jobs or `{ "jobs": [...] }`. Added to `jobs`.
    pub jobs_file: Option<String>,
    /// Virtual milliseconds per real millisecond (default 1.0; 0 freezes time).
    pub time_scale: Option<f64>,
    /// The service principal's personal access token (default: a random `dapi...` token).
    pub token: Option<String>,
    /// The service principal's user name (default `emulator-sp@example.com`).
    pub service_principal_name: Option<String>,
    /// User tokens with per-job permissions.
    pub users: Vec<UserSpec>,
    /// OAuth M2M client id (default `emulator-client`).
    pub client_id: Option<String>,
    /// OAuth M2M client secret (default: random).
    pub client_secret: Option<String>,
    /// Lifetime of OAuth access tokens, in real seconds (default 3600).
    pub oauth_token_ttl_secs: Option<u64>,
    /// The workspace id sent as `x-databricks-org-id` and in `run_page_url` (default `1234567890123456`).
    pub org_id: Option<String>,
    /// The first run id handed out (default 100000000001, above 2^32 to catch narrow ids).
    /// Seeded past runs take ids below it (above it when it leaves no room).
    pub first_run_id: Option<i64>,
    /// How many requests the request log keeps, oldest dropped first (default 10000).
    pub request_log_limit: Option<usize>,
    /// Lakebase's database credentials (`POST /api/2.0/postgres/credentials`); without it
    /// that endpoint answers 404, as for a workspace with no such database endpoint.
    pub lakebase: Option<LakebaseSpec>,
}

/// What `POST /api/2.0/postgres/credentials` hands out. JSON: `{ password, endpoint, ttlSecs }`.
///
/// The answer is `{ token: <password>, expire_time: <now + ttlSecs, RFC 3339> }`: the password
/// of a real PostgreSQL the caller then connects to (a test's own), so the whole Lakebase path
/// runs offline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LakebaseSpec {
    pub password: String,
    /// When set, only this endpoint name (`projects/<p>/branches/<b>/endpoints/<e>`) is known:
    /// any other answers 404.
    pub endpoint: Option<String>,
    /// Lifetime of a credential in real seconds (default 3600, as Lakebase's).
    pub ttl_secs: Option<u64>,
}

/// One job. JSON: `{ id, name, taskType, tasks, taskCount, outcome, repairOutcome, queueMs,
/// pendingMs, durationMs, terminatingMs, retries, retryWaitMs, parameters, output, errorMessage,
/// history }`.
///
/// Timing: a run waits `queueMs` in QUEUED, then its tasks run as a graph (each task:
/// BLOCKED until its `dependsOn` tasks end, then `pendingMs` in PENDING, its `durationMs` in
/// RUNNING, `terminatingMs` in TERMINATING); the run is PENDING until a task runs, RUNNING
/// while tasks run, TERMINATING once the last task's RUNNING is over, then TERMINATED.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    /// Task type of generated tasks: notebook (default), python_wheel, python_script,
    /// spark_jar, spark_submit, sql, dbt, run_job, pipeline, condition.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Explicit tasks. Empty: `task_count` tasks (default 1) of `task_type`.
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
    #[serde(default)]
    pub task_count: Option<usize>,
    /// How every run ends: SUCCESS, SUCCESS_WITH_FAILURES, FAILED, TIMEDOUT, CANCELED, SKIPPED or
    /// INTERNAL_ERROR, also the outcome of each task without its own. Without it the tasks
    /// succeed unless their own `outcome` says otherwise, and the run's result follows them
    /// as the Jobs service decides it: SUCCESS when every task succeeded,
    /// SUCCESS_WITH_FAILURES when some failed but every leaf task succeeded, else FAILED
    /// (TIMEDOUT or CANCELED when that is how the failing leaves ended).
    #[serde(default)]
    pub outcome: Option<String>,
    /// How the tasks a repair runs again end (default SUCCESS; a task's own `repairOutcome` wins).
    #[serde(default)]
    pub repair_outcome: Option<String>,
    /// Virtual milliseconds in QUEUED (default 100).
    #[serde(default)]
    pub queue_ms: Option<u64>,
    /// Virtual milliseconds in PENDING (default 300).
    #[serde(default)]
    pub pending_ms: Option<u64>,
    /// Virtual milliseconds in RUNNING per task attempt (default 2000; a task's own `durationMs` wins).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Virtual milliseconds in TERMINATING (default 200).
    #[serde(default)]
    pub terminating_ms: Option<u64>,
    /// Failed attempts of each task before its final one, each followed by WAITING_FOR_RETRY
    /// (default 0). Repairs do not retry.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Virtual milliseconds in WAITING_FOR_RETRY (default 500).
    #[serde(default)]
    pub retry_wait_ms: Option<u64>,
    /// Job-level parameters (`settings.parameters`), overridable with `job_parameters`.
    #[serde(default)]
    pub parameters: Vec<JobParameter>,
    /// The output text of a successful task (notebook result / logs). Default: a JSON
    /// echo of the run's parameters.
    #[serde(default)]
    pub output: Option<String>,
    /// The error text of a failed task.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Past runs to seed, so that `runs/list` has completed runs to estimate durations from:
    /// a count (that many successful runs) or a list of [`PastRun`]. Seeded again by `reset`.
    #[serde(default)]
    pub history: Option<HistorySeed>,
}

/// A task of a job. JSON: `{ taskKey, type, dependsOn, runIf, durationMs, outcome,
/// repairOutcome, output, forEach }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    pub task_key: String,
    #[serde(default, rename = "type", alias = "taskType")]
    pub task_type: Option<String>,
    /// Task keys this task waits for (`depends_on`); no cycles.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// When the task runs once its dependencies are done: ALL_SUCCESS (default), ALL_DONE,
    /// NONE_FAILED, AT_LEAST_ONE_SUCCESS, ALL_FAILED, AT_LEAST_ONE_FAILED. When it does not
    /// hold the task is skipped: UPSTREAM_FAILED for the first three, EXCLUDED for the
    /// failure-handling two (and when every dependency was excluded).
    #[serde(default)]
    pub run_if: Option<String>,
    /// Virtual milliseconds in RUNNING (default: the job's `durationMs`).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// How this task ends when it runs (default: the job's `outcome` when it has one, else SUCCESS).
    #[serde(default)]
    pub outcome: Option<String>,
    /// How this task ends when a repair runs it again (default: the job's `repairOutcome`).
    #[serde(default)]
    pub repair_outcome: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
    /// Makes this a for-each task: its nested task (of this task's `type`) runs once per input.
    #[serde(default)]
    pub for_each: Option<ForEachSpec>,
}

/// A for-each task. JSON: `{ inputs, count, concurrency, iterationDurationMs, failIterations }`.
///
/// The iterations run `concurrency` at a time, each `pendingMs` + `iterationDurationMs` +
/// `terminatingMs`; the task fails when an iteration fails. In `task_run_stats`, an iteration
/// is scheduled once it has started, active until it ends, then completed. A repair that ends SUCCESS runs
/// every iteration again successfully; any other repair outcome fails the same iterations again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForEachSpec {
    /// The inputs (any JSON values), rendered as the JSON text `for_each_task.inputs`.
    #[serde(default)]
    pub inputs: Option<Vec<Value>>,
    /// Instead of `inputs`: that many inputs `0, 1, ...`.
    #[serde(default)]
    pub count: Option<usize>,
    /// Iterations at once (default 1, at most 100).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Virtual ms in RUNNING per iteration (default: the task's duration).
    #[serde(default)]
    pub iteration_duration_ms: Option<u64>,
    /// Indexes of the iterations that fail.
    #[serde(default)]
    pub fail_iterations: Vec<usize>,
}

/// Seeded past runs: a count of successful runs, or each run described.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HistorySeed {
    Count(u32),
    Runs(Vec<PastRun>),
}

impl HistorySeed {
    /// The runs it describes; a count is that many successful runs of the job's own length.
    pub fn runs(&self) -> Vec<PastRun> {
        match self {
            HistorySeed::Count(n) => (0..*n)
                .map(|_| PastRun {
                    outcome: Some("SUCCESS".into()),
                    ..Default::default()
                })
                .collect(),
            HistorySeed::Runs(runs) => runs.clone(),
        }
    }
}

/// A completed past run. JSON: `{ outcome, durationMs, queueMs, agoMs }`.
///
/// It runs the job's graph, its times scaled so that its `run_duration` is `durationMs`;
/// `outcome` SUCCESS makes every task succeed, FAILED, TIMEDOUT, CANCELED and INTERNAL_ERROR
/// fail the tasks that fail in the job's own runs (or else the last task), and the run ends
/// with it; SKIPPED skips the run after its queue. Runs are given oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PastRun {
    /// Default: how the job's own runs end.
    pub outcome: Option<String>,
    /// The run's `run_duration` (default: the job's natural one).
    pub duration_ms: Option<u64>,
    /// Its `queue_duration` (default: the job's `queueMs`).
    pub queue_ms: Option<u64>,
    /// How long before now it started (default: runs an hour apart, the newest started an
    /// hour ago, or further apart for runs longer than that). It must have ended by now.
    pub ago_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobParameter {
    pub name: String,
    #[serde(default)]
    pub default: String,
}

/// A user token. JSON: `{ token, userName, permissions: { "<jobId>": "CAN_VIEW" | "CAN_MANAGE_RUN" |
/// "CAN_MANAGE" | "IS_OWNER" }, defaultPermission }`. Without a permission on a job the user
/// gets 403 PERMISSION_DENIED for it. Reads need CAN_VIEW, run-now and cancel CAN_MANAGE_RUN.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    pub token: String,
    pub user_name: String,
    #[serde(default)]
    pub permissions: HashMap<i64, String>,
    #[serde(default)]
    pub default_permission: Option<String>,
}

/// A fault for the next `times` requests whose path matches `path` (exact, or a prefix when it
/// ends with `*`), and `method` when given. JSON: `{ path, method, status, errorCode, message,
/// retryAfter, delayMs, reset, loseResponse, body, contentType, html, times }`.
///
/// Applied in order: `delay_ms` (then, alone, the request proceeds normally), `reset` (the
/// connection is closed with a TCP RST and no response), `body`/`html` (a non-JSON body with
/// `status`, default 502), `status` (a Databricks error body, with `Retry-After` when set).
/// `lose_response` without those: the request is carried out, then the connection is reset (a
/// write whose answer is lost).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultSpec {
    pub path: String,
    pub method: Option<String>,
    pub status: Option<u16>,
    pub error_code: Option<String>,
    pub message: Option<String>,
    /// `Retry-After` header, integer seconds.
    pub retry_after: Option<u64>,
    pub delay_ms: Option<u64>,
    pub reset: bool,
    /// Carry the request out, then reset the connection (a write whose answer is lost).
    pub lose_response: bool,
    pub body: Option<String>,
    pub content_type: Option<String>,
    /// Shorthand for an HTML error page body.
    pub html: bool,
    /// How many matching requests it applies to (default 1).
    pub times: Option<u32>,
}

impl FaultSpec {
    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        let path_ok = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => self.path == path,
        };
        path_ok
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// Permission levels, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    CanView,
    CanManageRun,
    CanManage,
    IsOwner,
}

impl Permission {
    pub fn parse(s: &str) -> Option<Permission> {
        match s.to_ascii_uppercase().as_str() {
            "CAN_VIEW" => Some(Permission::CanView),
            "CAN_MANAGE_RUN" => Some(Permission::CanManageRun),
            "CAN_MANAGE" => Some(Permission::CanManage),
            "IS_OWNER" => Some(Permission::IsOwner),
            _ => None,
        }
    }
}

impl UserSpec {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.token.is_empty() {
            return Err(JobsError::InvalidRequest(
                "a user needs a non-empty token".into(),
            ));
        }
        for p in self
            .permissions
            .values()
            .chain(self.default_permission.iter())
        {
            if Permission::parse(p).is_none() {
                return Err(JobsError::InvalidRequest(format!(
                    "unknown permission {p:?} (use CAN_VIEW, CAN_MANAGE_RUN, CAN_MANAGE or IS_OWNER)"
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn permission(&self, job_id: i64) -> Option<Permission> {
        self.permissions
            .get(&job_id)
            .or(self.default_permission.as_ref())
            .and_then(|p| Permission::parse(p))
    }
}

/// Reads a jobs file: an array of jobs, or an object with a `jobs` array.
pub fn load_jobs_file(path: &str) -> Result<Vec<JobSpec>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| JobsError::Config(format!("cannot read emulator jobs file {path}: {e}")))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        JobsError::Config(format!("emulator jobs file {path} is not valid JSON: {e}"))
    })?;
    let list = match value {
        Value::Object(mut o) => o.remove("jobs").unwrap_or(Value::Null),
        other => other,
    };
    serde_json::from_value(list)
        .map_err(|e| JobsError::Config(format!("emulator jobs file {path}: bad job list: {e}")))
}

fn job(id: i64, name: &str, task_type: &str, outcome: &str, duration_ms: u64) -> JobSpec {
    JobSpec {
        id,
        name: Some(name.to_string()),
        task_type: Some(task_type.to_string()),
        tasks: vec![],
        task_count: None,
        outcome: Some(outcome.to_string()),
        repair_outcome: None,
        queue_ms: None,
        pending_ms: None,
        duration_ms: Some(duration_ms),
        terminating_ms: None,
        retries: None,
        retry_wait_ms: None,
        parameters: vec![],
        output: None,
        error_message: None,
        history: None,
    }
}

fn task(key: &str, task_type: &str, depends_on: &[&str], duration_ms: u64) -> TaskSpec {
    TaskSpec {
        task_key: key.into(),
        task_type: Some(task_type.into()),
        depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        duration_ms: Some(duration_ms),
        ..Default::default()
    }
}

fn past_runs(runs: &[(&str, u64)]) -> Option<HistorySeed> {
    Some(HistorySeed::Runs(
        runs.iter()
            .map(|(outcome, ms)| PastRun {
                outcome: Some(outcome.to_string()),
                duration_ms: Some(*ms),
                ..Default::default()
            })
            .collect(),
    ))
}

/// The jobs served when none are configured: one per outcome and task type, a 150-task job,
/// a task graph and a chain (ids 1001..=1011).
pub fn sample_jobs() -> Vec<JobSpec> {
    let mut etl = job(1001, "nightly-etl", "notebook", "SUCCESS", 2000);
    etl.parameters = vec![
        JobParameter {
            name: "date".into(),
            default: "today".into(),
        },
        JobParameter {
            name: "mode".into(),
            default: "full".into(),
        },
    ];
    let mut failing = job(1002, "flaky-report", "python_wheel", "FAILED", 1500);
    failing.error_message = Some("ValueError: report input is empty".into());
    let slow = job(1003, "slow-sql", "sql", "TIMEDOUT", 10_000);
    let mut big = job(1004, "wide-pipeline", "notebook", "SUCCESS", 3000);
    big.task_count = Some(150);
    let skipped = job(1005, "skipped-job", "python_script", "SKIPPED", 1000);
    let broken = job(1006, "broken-cluster", "spark_jar", "INTERNAL_ERROR", 1000);
    let mut retrying = job(1007, "retrying-job", "spark_jar", "SUCCESS", 1000);
    retrying.retries = Some(1);
    let dbt = job(1008, "dbt-models", "dbt", "SUCCESS", 1500);
    let mut mixed = job(
        1009,
        "mixed-tasks",
        "notebook",
        "SUCCESS_WITH_FAILURES",
        1500,
    );
    mixed.tasks = vec![
        task("ingest", "notebook", &[], 1500),
        TaskSpec {
            outcome: Some("FAILED".into()),
            ..task("train", "python_wheel", &[], 1500)
        },
        TaskSpec {
            outcome: Some("SUCCESS".into()),
            ..task("report", "sql", &[], 1500)
        },
    ];
    vec![
        etl,
        failing,
        slow,
        big,
        skipped,
        broken,
        retrying,
        dbt,
        mixed,
        graph_pipeline(),
        chain(),
    ]
}

/// Fan-out from `extract`, a for-each over five regions, fan-in at `join`, then `publish`,
/// which fails (its repair succeeds), so `report` is UPSTREAM_FAILED and the run FAILED;
/// `notify` runs anyway (ALL_DONE). About 12 s a run; five past runs seeded.
fn graph_pipeline() -> JobSpec {
    let mut spec = job(1010, "graph-pipeline", "notebook", "SUCCESS", 2000);
    spec.outcome = None;
    spec.error_message = Some("publish: the target table is locked by another writer".into());
    let regions = ["north", "south", "east", "west", "central"];
    spec.tasks = vec![
        task("extract", "notebook", &[], 1500),
        task("clean_orders", "sql", &["extract"], 2000),
        task("clean_customers", "python_script", &["extract"], 1500),
        TaskSpec {
            for_each: Some(ForEachSpec {
                inputs: Some(regions.iter().map(|r| Value::from(*r)).collect()),
                concurrency: Some(2),
                iteration_duration_ms: Some(1000),
                ..Default::default()
            }),
            ..task("score_regions", "notebook", &["extract"], 1000)
        },
        task(
            "join",
            "notebook",
            &["clean_orders", "clean_customers", "score_regions"],
            2000,
        ),
        TaskSpec {
            outcome: Some("FAILED".into()),
            ..task("publish", "python_wheel", &["join"], 1000)
        },
        task("report", "sql", &["publish"], 800),
        TaskSpec {
            run_if: Some("ALL_DONE".into()),
            ..task("notify", "notebook", &["publish"], 500)
        },
    ];
    spec.history = past_runs(&[
        ("SUCCESS", 11_400),
        ("SUCCESS", 12_100),
        ("FAILED", 9_800),
        ("SUCCESS", 11_800),
        ("SUCCESS", 12_600),
    ]);
    spec
}

/// extract -> transform -> load, about half a second each, with five past runs.
fn chain() -> JobSpec {
    let mut spec = job(1011, "etl-chain", "notebook", "SUCCESS", 500);
    spec.outcome = None;
    spec.pending_ms = Some(100);
    spec.terminating_ms = Some(100);
    spec.tasks = vec![
        task("extract", "notebook", &[], 500),
        task("transform", "notebook", &["extract"], 500),
        task("load", "sql", &["transform"], 500),
    ];
    spec.history = past_runs(&[
        ("SUCCESS", 2_050),
        ("SUCCESS", 2_200),
        ("SUCCESS", 2_100),
        ("SUCCESS", 2_400),
        ("SUCCESS", 2_150),
    ]);
    spec
}
