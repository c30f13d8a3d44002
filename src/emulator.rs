//! `BindingEmulator`: the Jobs API emulator (`appkit-jobs-emulator`), seen from Node.
//!
//! Options, jobs, users and faults cross as typed objects (`Binding*Spec`, camelCase) and are
//! converted to the emulator's own types; run ids as `string | number | bigint`. The server runs
//! on napi's tokio runtime and does not keep Node alive.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use appkit_jobs_core::JobsError;
use appkit_jobs_emulator::{
    Emulator, EmulatorOptions, FaultSpec, ForEachSpec, HistorySeed, JobParameter, JobSpec,
    LakebaseSpec, PastRun, TaskSpec, UserSpec,
};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

use crate::jobs::run_id_of;

fn to_napi(e: JobsError) -> Error {
    Error::new(Status::InvalidArg, e.to_string())
}

/// A whole number option that must fit `u64` (ports, milliseconds, counts).
fn whole(what: &str, n: Option<f64>) -> Result<Option<u64>> {
    match n {
        None => Ok(None),
        Some(n) if n.fract() == 0.0 && (0.0..=9.0e15).contains(&n) => Ok(Some(n as u64)),
        Some(n) => Err(Error::new(
            Status::InvalidArg,
            format!("{what} must be a whole number >= 0, got {n}"),
        )),
    }
}

fn job_id(n: f64) -> Result<i64> {
    appkit_jobs_core::ids::from_f64(n).ok_or_else(|| {
        Error::new(
            Status::InvalidArg,
            format!("job id must be a positive integer, got {n}"),
        )
    })
}

/// Options of `startEmulator` (every field optional).
#[napi(object)]
#[derive(Default)]
pub struct BindingEmulatorOptions {
    /// TCP port on 127.0.0.1; 0 (the default) picks a free one.
    pub port: Option<u32>,
    /// The jobs to serve; without `jobs` and `jobsFile`, sample jobs.
    pub jobs: Option<Vec<BindingJobSpec>>,
    /// A JSON file holding an array of jobs, or `{ "jobs": [...] }`.
    pub jobs_file: Option<String>,
    /// Virtual milliseconds per real millisecond (default 1; 0 freezes time).
    pub time_scale: Option<f64>,
    pub token: Option<String>,
    pub service_principal_name: Option<String>,
    pub users: Option<Vec<BindingUserSpec>>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub oauth_token_ttl_secs: Option<f64>,
    pub org_id: Option<String>,
    /// The first run id handed out (a number, or decimal text beyond 2^53).
    pub first_run_id: Option<Either3<String, f64, BigInt>>,
    pub request_log_limit: Option<f64>,
    /// What `POST /api/2.0/postgres/credentials` hands out (Lakebase's database credentials).
    pub lakebase: Option<BindingLakebaseSpec>,
}

/// Lakebase's database credentials as the emulator hands them out: `{ token: password,
/// expire_time: now + ttlSecs }`, for `endpoint` only when it is set.
#[napi(object)]
pub struct BindingLakebaseSpec {
    pub password: String,
    pub endpoint: Option<String>,
    pub ttl_secs: Option<f64>,
}

impl BindingLakebaseSpec {
    fn into_spec(self) -> Result<LakebaseSpec> {
        Ok(LakebaseSpec {
            password: self.password,
            endpoint: self.endpoint,
            ttl_secs: whole("lakebase.ttlSecs", self.ttl_secs)?,
        })
    }
}

/// A job the emulator serves.
#[napi(object)]
pub struct BindingJobSpec {
    pub id: f64,
    pub name: Option<String>,
    pub task_type: Option<String>,
    pub tasks: Option<Vec<BindingTaskSpec>>,
    pub task_count: Option<f64>,
    pub outcome: Option<String>,
    /// How tasks run again by `runs/repair` end (default SUCCESS).
    pub repair_outcome: Option<String>,
    pub queue_ms: Option<f64>,
    pub pending_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub terminating_ms: Option<f64>,
    pub retries: Option<u32>,
    pub retry_wait_ms: Option<f64>,
    pub parameters: Option<Vec<BindingJobParameter>>,
    pub output: Option<String>,
    pub error_message: Option<String>,
    /// Past runs to seed: a count (successful runs), or each run described.
    pub history: Option<Either<f64, Vec<BindingPastRun>>>,
}

/// A task of a job: its dependencies, `runIf`, duration, outcomes, and for-each iterations.
#[napi(object)]
pub struct BindingTaskSpec {
    pub task_key: String,
    pub task_type: Option<String>,
    /// Task keys it waits for.
    pub depends_on: Option<Vec<String>>,
    /// ALL_SUCCESS (default), ALL_DONE, NONE_FAILED, AT_LEAST_ONE_SUCCESS, ALL_FAILED, AT_LEAST_ONE_FAILED.
    pub run_if: Option<String>,
    /// Virtual ms in RUNNING (default: the job's `durationMs`).
    pub duration_ms: Option<f64>,
    pub outcome: Option<String>,
    /// How it ends when a repair runs it again (default: the job's `repairOutcome`).
    pub repair_outcome: Option<String>,
    pub output: Option<String>,
    pub for_each: Option<BindingForEachSpec>,
}

/// A for-each task: its inputs (or a count), iterations at once, their duration, which fail.
#[napi(object)]
pub struct BindingForEachSpec {
    pub inputs: Option<Vec<Value>>,
    pub count: Option<f64>,
    pub concurrency: Option<u32>,
    pub iteration_duration_ms: Option<f64>,
    pub fail_iterations: Option<Vec<u32>>,
}

/// A completed past run: how it ended, its `run_duration`, `queue_duration`, and how long ago
/// it started (virtual ms).
#[napi(object)]
pub struct BindingPastRun {
    pub outcome: Option<String>,
    pub duration_ms: Option<f64>,
    pub queue_ms: Option<f64>,
    pub ago_ms: Option<f64>,
}

#[napi(object)]
pub struct BindingJobParameter {
    pub name: String,
    pub default: Option<String>,
}

/// A user token with per-job permissions (`CAN_VIEW`, `CAN_MANAGE_RUN`, `CAN_MANAGE`, `IS_OWNER`).
#[napi(object)]
pub struct BindingUserSpec {
    pub token: String,
    pub user_name: String,
    /// Job id (decimal) -> permission.
    pub permissions: Option<HashMap<String, String>>,
    pub default_permission: Option<String>,
}

/// A fault for the next `times` (default 1) requests matching `path` (exact, or a prefix
/// ending with `*`).
#[napi(object)]
pub struct BindingFaultSpec {
    pub path: String,
    pub method: Option<String>,
    pub status: Option<u32>,
    pub error_code: Option<String>,
    pub message: Option<String>,
    /// `Retry-After`, whole seconds.
    pub retry_after: Option<f64>,
    pub delay_ms: Option<f64>,
    pub reset: Option<bool>,
    /// Carry the request out, then reset the connection (the answer is lost).
    pub lose_response: Option<bool>,
    pub body: Option<String>,
    pub content_type: Option<String>,
    pub html: Option<bool>,
    pub times: Option<u32>,
}

impl BindingJobSpec {
    fn into_spec(self) -> Result<JobSpec> {
        let id = job_id(self.id)?;
        Ok(JobSpec {
            id,
            name: self.name,
            task_type: self.task_type,
            tasks: self
                .tasks
                .unwrap_or_default()
                .into_iter()
                .map(BindingTaskSpec::into_spec)
                .collect::<Result<_>>()?,
            task_count: whole("taskCount", self.task_count)?.map(|n| n as usize),
            outcome: self.outcome,
            repair_outcome: self.repair_outcome,
            queue_ms: whole("queueMs", self.queue_ms)?,
            pending_ms: whole("pendingMs", self.pending_ms)?,
            duration_ms: whole("durationMs", self.duration_ms)?,
            terminating_ms: whole("terminatingMs", self.terminating_ms)?,
            retries: self.retries,
            retry_wait_ms: whole("retryWaitMs", self.retry_wait_ms)?,
            parameters: self
                .parameters
                .unwrap_or_default()
                .into_iter()
                .map(|p| JobParameter {
                    name: p.name,
                    default: p.default.unwrap_or_default(),
                })
                .collect(),
            output: self.output,
            error_message: self.error_message,
            history: self.history.map(history_seed).transpose()?,
        })
    }
}

impl BindingTaskSpec {
    fn into_spec(self) -> Result<TaskSpec> {
        let for_each = match self.for_each {
            None => None,
            Some(f) => Some(ForEachSpec {
                inputs: f.inputs,
                count: whole("forEach.count", f.count)?.map(|n| n as usize),
                concurrency: f.concurrency,
                iteration_duration_ms: whole(
                    "forEach.iterationDurationMs",
                    f.iteration_duration_ms,
                )?,
                fail_iterations: f
                    .fail_iterations
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i as usize)
                    .collect(),
            }),
        };
        Ok(TaskSpec {
            task_key: self.task_key,
            task_type: self.task_type,
            depends_on: self.depends_on.unwrap_or_default(),
            run_if: self.run_if,
            duration_ms: whole("durationMs", self.duration_ms)?,
            outcome: self.outcome,
            repair_outcome: self.repair_outcome,
            output: self.output,
            for_each,
        })
    }
}

/// `history`: a whole count, or past runs.
fn history_seed(h: Either<f64, Vec<BindingPastRun>>) -> Result<HistorySeed> {
    Ok(match h {
        Either::A(n) => HistorySeed::Count(
            u32::try_from(whole("history", Some(n))?.unwrap_or(0))
                .map_err(|_| Error::new(Status::InvalidArg, "history: too many runs"))?,
        ),
        Either::B(runs) => HistorySeed::Runs(
            runs.into_iter()
                .map(|r| {
                    Ok(PastRun {
                        outcome: r.outcome,
                        duration_ms: whole("history.durationMs", r.duration_ms)?,
                        queue_ms: whole("history.queueMs", r.queue_ms)?,
                        ago_ms: whole("history.agoMs", r.ago_ms)?,
                    })
                })
                .collect::<Result<_>>()?,
        ),
    })
}

impl BindingUserSpec {
    fn into_spec(self) -> Result<UserSpec> {
        let mut permissions = HashMap::new();
        for (job, permission) in self.permissions.unwrap_or_default() {
            let id = appkit_jobs_core::ids::parse(job.trim()).ok_or_else(|| {
                Error::new(
                    Status::InvalidArg,
                    format!("permissions: {job:?} is not a job id"),
                )
            })?;
            permissions.insert(id, permission);
        }
        Ok(UserSpec {
            token: self.token,
            user_name: self.user_name,
            permissions,
            default_permission: self.default_permission,
        })
    }
}

impl BindingFaultSpec {
    fn into_spec(self) -> Result<FaultSpec> {
        Ok(FaultSpec {
            path: self.path,
            method: self.method,
            status: self.status.map(|s| s.min(u32::from(u16::MAX)) as u16),
            error_code: self.error_code,
            message: self.message,
            retry_after: whole("retryAfter", self.retry_after)?,
            delay_ms: whole("delayMs", self.delay_ms)?,
            reset: self.reset.unwrap_or(false),
            lose_response: self.lose_response.unwrap_or(false),
            body: self.body,
            content_type: self.content_type,
            html: self.html.unwrap_or(false),
            times: self.times,
        })
    }
}

impl BindingEmulatorOptions {
    fn into_options(self) -> Result<EmulatorOptions> {
        let port = self.port.unwrap_or(0);
        Ok(EmulatorOptions {
            port: u16::try_from(port).map_err(|_| {
                Error::new(
                    Status::InvalidArg,
                    format!("port must be 0-65535, got {port}"),
                )
            })?,
            jobs: self
                .jobs
                .map(|jobs| jobs.into_iter().map(BindingJobSpec::into_spec).collect())
                .transpose()?,
            jobs_file: self.jobs_file,
            time_scale: self.time_scale,
            token: self.token,
            service_principal_name: self.service_principal_name,
            users: self
                .users
                .unwrap_or_default()
                .into_iter()
                .map(BindingUserSpec::into_spec)
                .collect::<Result<_>>()?,
            client_id: self.client_id,
            client_secret: self.client_secret,
            oauth_token_ttl_secs: whole("oauthTokenTtlSecs", self.oauth_token_ttl_secs)?,
            org_id: self.org_id,
            first_run_id: self.first_run_id.map(first_run_id).transpose()?,
            request_log_limit: whole("requestLogLimit", self.request_log_limit)?
                .map(|n| n as usize),
            lakebase: self
                .lakebase
                .map(BindingLakebaseSpec::into_spec)
                .transpose()?,
        })
    }
}

/// `firstRunId`: any positive integer, also a JS number beyond 2^53 (a test of large ids
/// picks one that a double holds exactly).
fn first_run_id(id: Either3<String, f64, BigInt>) -> Result<i64> {
    let invalid = || Error::new(Status::InvalidArg, "firstRunId must be a positive integer");
    match id {
        Either3::B(n) if n.fract() == 0.0 && (1.0..9.2e18).contains(&n) => Ok(n as i64),
        Either3::B(_) => Err(invalid()),
        other => run_id_of(other).map_err(|_| invalid()),
    }
}

/// Emulators not stopped yet. The emulator stops a server when its `Emulator` is dropped; from
/// JS that would happen at a random garbage collection if the caller kept only `url` and
/// `token`, so each server is held here until `stop()` (or the process exits).
static RUNNING: Mutex<Vec<Arc<Emulator>>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<Arc<Emulator>>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running emulator.
#[napi]
pub struct BindingEmulator {
    inner: Arc<Emulator>,
}

/// Starts an emulator on 127.0.0.1.
#[napi(catch_unwind)]
pub async fn start_emulator(options: Option<BindingEmulatorOptions>) -> Result<BindingEmulator> {
    let options = options.unwrap_or_default().into_options()?;
    let emu = Emulator::start(options)
        .await
        .map_err(|e| Error::new(Status::GenericFailure, e.to_string()))?;
    let inner = Arc::new(emu);
    running().push(inner.clone());
    Ok(BindingEmulator { inner })
}

#[napi]
impl BindingEmulator {
    /// `http://127.0.0.1:PORT`
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.inner.url()
    }
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        u32::from(self.inner.port())
    }
    /// The service principal's personal access token.
    #[napi(getter)]
    pub fn token(&self) -> String {
        self.inner.token()
    }
    #[napi(getter)]
    pub fn client_id(&self) -> String {
        self.inner.client_id()
    }
    #[napi(getter)]
    pub fn client_secret(&self) -> String {
        self.inner.client_secret()
    }
    #[napi(getter)]
    pub fn org_id(&self) -> String {
        self.inner.org_id()
    }

    /// Stops the server and frees the port (idempotent).
    #[napi(catch_unwind)]
    pub async fn stop(&self) -> Result<()> {
        running().retain(|e| !Arc::ptr_eq(e, &self.inner));
        self.inner.stop().await;
        Ok(())
    }

    #[napi]
    pub fn inject_fault(&self, fault: BindingFaultSpec) -> Result<()> {
        self.inner.inject_fault(fault.into_spec()?).map_err(to_napi)
    }
    #[napi]
    pub fn clear_faults(&self) {
        self.inner.clear_faults()
    }
    /// The request log: `[{ method, path, query, body, identity, status, fault }]`, oldest first.
    #[napi(
        ts_return_type = "Array<{ method: string; path: string; query: string; body: unknown; identity: string | null; status: number; fault: boolean }>"
    )]
    pub fn requests(&self) -> Result<Value> {
        serde_json::to_value(self.inner.requests()).map_err(|e| Error::from_reason(e.to_string()))
    }
    #[napi]
    pub fn clear_requests(&self) {
        self.inner.clear_requests()
    }
    /// Forgets runs, requests, faults, idempotency and OAuth tokens.
    #[napi]
    pub fn reset(&self) {
        self.inner.reset()
    }
    /// Moves a run to a state at once and returns it.
    #[napi]
    pub fn set_run_state(
        &self,
        run_id: Either3<String, f64, BigInt>,
        state: String,
    ) -> Result<Value> {
        let run_id = run_id_of(run_id).map_err(to_napi)?;
        self.inner.set_run_state(run_id, &state).map_err(to_napi)
    }
    /// The run as runs/get renders it (first page of tasks), or null.
    #[napi]
    pub fn get_run(&self, run_id: Either3<String, f64, BigInt>) -> Result<Option<Value>> {
        Ok(self.inner.get_run(run_id_of(run_id).map_err(to_napi)?))
    }
    #[napi]
    pub fn add_user(&self, user: BindingUserSpec) -> Result<()> {
        self.inner.add_user(user.into_spec()?).map_err(to_napi)
    }
    /// Adds a job, or replaces the one with the same id.
    #[napi]
    pub fn add_job(&self, job: BindingJobSpec) -> Result<()> {
        self.inner.add_job(job.into_spec()?).map_err(to_napi)
    }
    #[napi(
        ts_return_type = "Array<{ id: number; name: string; taskType: string; taskCount: number; parameters: string[] }>"
    )]
    pub fn jobs(&self) -> Value {
        Value::Array(self.inner.jobs())
    }
    #[napi]
    pub fn set_time_scale(&self, scale: f64) -> Result<()> {
        self.inner.set_time_scale(scale).map_err(to_napi)
    }
    #[napi]
    pub fn advance_time(&self, ms: f64) -> Result<()> {
        self.inner.advance_time(ms).map_err(to_napi)
    }
    /// What `POST /api/2.0/postgres/credentials` hands out from now on (`null`: 404).
    #[napi]
    pub fn set_lakebase(&self, spec: Option<BindingLakebaseSpec>) -> Result<()> {
        self.inner
            .set_lakebase(spec.map(BindingLakebaseSpec::into_spec).transpose()?);
        Ok(())
    }
    #[napi]
    pub fn set_oauth_token_ttl(&self, secs: u32) {
        self.inner.set_oauth_token_ttl(u64::from(secs))
    }
    #[napi]
    pub fn expire_oauth_tokens(&self) {
        self.inner.expire_oauth_tokens()
    }
    #[napi]
    pub fn run_count(&self) -> u32 {
        self.inner.run_count() as u32
    }
    /// Seeds completed past runs of a job; their run ids, oldest first.
    #[napi(ts_return_type = "number[]")]
    pub fn seed_history(
        &self,
        job_id: f64,
        history: Either<f64, Vec<BindingPastRun>>,
    ) -> Result<Value> {
        let ids = self
            .inner
            .seed_history(self::job_id(job_id)?, history_seed(history)?)
            .map_err(to_napi)?;
        Ok(Value::from(ids))
    }
}
