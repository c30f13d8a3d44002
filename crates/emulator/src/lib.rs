//! A local emulator of a Databricks workspace's Jobs API 2.2 (axum, in memory).
//!
//! It serves, on `127.0.0.1`, the six endpoints the client uses (`POST /api/2.2/jobs/run-now`,
//! `GET /api/2.2/jobs/runs/get`, `GET /api/2.2/jobs/runs/list`, `GET /api/2.2/jobs/runs/get-output`,
//! `POST /api/2.2/jobs/runs/cancel`, `GET /api/2.2/jobs/get`; `/api/2.1/` is accepted too), OAuth M2M
//! (`GET /oidc/.well-known/oauth-authorization-server`, `POST /oidc/v1/token`), the host metadata
//! current SDKs probe when they start (`GET /.well-known/databricks-config`), and what an AppKit
//! app needs to boot (`GET /api/2.0/preview/scim/v2/Me` with `x-databricks-org-id`,
//! `POST /telemetry-ext`). Control endpoints live under `/__emulator/` (see `control.rs`).
//!
//! Runs follow a life cycle computed lazily from a virtual clock (no task per run):
//! QUEUED → PENDING → RUNNING → [WAITING_FOR_RETRY → PENDING → RUNNING]* → TERMINATING →
//! TERMINATED (SUCCESS, FAILED, ...), or SKIPPED after the queue, or INTERNAL_ERROR after
//! RUNNING. Cancel goes through TERMINATING to TERMINATED/CANCELED.
//!
//! ```no_run
//! # async fn demo() -> appkit_jobs_core::Result<()> {
//! use appkit_jobs_emulator::{Emulator, EmulatorOptions, FaultSpec};
//! let emu = Emulator::start(EmulatorOptions { time_scale: Some(100.0), ..Default::default() }).await?;
//! let env = [("DATABRICKS_HOST", emu.url()), ("DATABRICKS_TOKEN", emu.token())];
//! emu.inject_fault(FaultSpec { path: "/api/2.2/jobs/runs/get".into(), status: Some(503), retry_after: Some(1), ..Default::default() })?;
//! // ... run the code under test against emu.url() ...
//! let log = emu.requests();
//! emu.stop().await;
//! # let _ = (env, log); Ok(()) }
//! ```
//!
//! Public API (all control methods are synchronous and cheap):
//! - [`Emulator::start`]`(EmulatorOptions) -> Result<Emulator>`: binds 127.0.0.1 on the caller's tokio runtime.
//! - [`Emulator::url`], [`Emulator::port`], [`Emulator::token`] (service principal PAT),
//!   [`Emulator::client_id`], [`Emulator::client_secret`], [`Emulator::org_id`].
//! - [`Emulator::stop`]`().await`: stops listening and closes idle connections (idempotent; also on drop).
//! - [`Emulator::inject_fault`]`(FaultSpec)`, [`Emulator::clear_faults`].
//! - [`Emulator::requests`]`() -> Vec<RequestLogEntry>`, [`Emulator::clear_requests`].
//! - [`Emulator::reset`]: forgets runs, requests, faults, idempotency tokens and OAuth tokens.
//! - [`Emulator::set_run_state`]`(run_id, "RUNNING" | "SUCCESS" | "FAILED" | ...) -> Result<Value>`.
//! - [`Emulator::get_run`]`(run_id) -> Option<Value>` (a parent or task run, as runs/get renders it).
//! - [`Emulator::add_user`]`(UserSpec)`, [`Emulator::add_job`]`(JobSpec)`, [`Emulator::jobs`].
//! - [`Emulator::set_time_scale`]`(f64)`, [`Emulator::advance_time`]`(ms)`.
//! - [`Emulator::set_oauth_token_ttl`]`(secs)`, [`Emulator::expire_oauth_tokens`].
//! - [`Emulator::run_count`].
mod api;
pub mod config;
mod control;
mod lifecycle;
mod net;
mod render;
mod repair;
mod store;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use appkit_jobs_core::{JobsError, Result};
pub use config::{
    sample_jobs, EmulatorOptions, FaultSpec, JobParameter, JobSpec, Permission, TaskSpec, UserSpec,
};
use lifecycle::{Clock, Forced};
use render::RenderCtx;
use store::{Job, Store};

/// One request the emulator answered (control requests excepted). Secrets are never kept:
/// no headers, and the OAuth token request body is replaced by `"[redacted]"`.
#[derive(Debug, Clone, Serialize)]
pub struct RequestLogEntry {
    pub method: String,
    pub path: String,
    /// The raw query string, `""` when none.
    pub query: String,
    /// The body as JSON when it parses, else as a string; `null` when empty.
    pub body: Value,
    /// `"service_principal"`, `"oauth:<client id>"`, `"user:<user name>"`, or `null` when the
    /// request carried no valid credential.
    pub identity: Option<String>,
    /// The status answered (0 for a reset connection).
    pub status: u16,
    /// Whether an injected fault shaped the answer.
    pub fault: bool,
}

pub(crate) struct ActiveFault {
    pub spec: FaultSpec,
    pub remaining: u32,
}

pub(crate) struct Inner {
    pub clock: Clock,
    pub store: Store,
    pub users: HashMap<String, Arc<UserSpec>>,
    pub oauth_tokens: HashMap<String, Instant>,
    pub oauth_ttl: Duration,
}

pub(crate) struct Shared {
    pub base_url: String,
    pub org_id: String,
    pub sp_token: String,
    pub sp_name: Arc<str>,
    pub client_id: String,
    pub client_secret: String,
    pub inner: Mutex<Inner>,
    pub log: Mutex<VecDeque<RequestLogEntry>>,
    pub log_limit: usize,
    pub faults: Mutex<Vec<ActiveFault>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Shared {
    pub(crate) fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    pub(crate) fn push_log(&self, entry: RequestLogEntry) {
        let mut log = lock(&self.log);
        if log.len() >= self.log_limit {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// Takes one use of the first fault matching the request.
    pub(crate) fn take_fault(&self, method: &str, path: &str) -> Option<FaultSpec> {
        let mut faults = lock(&self.faults);
        if faults.is_empty() {
            return None;
        }
        let i = faults.iter().position(|f| f.spec.matches(method, path))?;
        let spec = faults[i].spec.clone();
        faults[i].remaining -= 1;
        if faults[i].remaining == 0 {
            faults.remove(i);
        }
        Some(spec)
    }

    pub(crate) fn inject_fault(&self, spec: FaultSpec) -> Result<()> {
        if spec.path.is_empty() {
            return Err(JobsError::InvalidRequest("a fault needs a path".into()));
        }
        if let Some(s) = spec.status {
            if !(100..=599).contains(&s) {
                return Err(JobsError::InvalidRequest(format!(
                    "invalid fault status {s}"
                )));
            }
        }
        if spec.status.is_none()
            && spec.delay_ms.is_none()
            && !spec.reset
            && !spec.lose_response
            && spec.body.is_none()
            && !spec.html
        {
            return Err(JobsError::InvalidRequest(
                "a fault needs status, delayMs, reset, loseResponse, body or html".into(),
            ));
        }
        let remaining = spec.times.unwrap_or(1).max(1);
        lock(&self.faults).push(ActiveFault { spec, remaining });
        Ok(())
    }

    pub(crate) fn add_job(&self, spec: &JobSpec) -> Result<()> {
        let mut inner = self.inner();
        let created = inner.clock.epoch_ms(inner.clock.now());
        let job = Job::from_spec(spec, created)?;
        inner.store.jobs.insert(job.id, Arc::new(job));
        Ok(())
    }

    pub(crate) fn add_user(&self, user: UserSpec) -> Result<()> {
        user.validate()?;
        if user.token == self.sp_token {
            return Err(JobsError::InvalidRequest(
                "a user token must differ from the service principal token".into(),
            ));
        }
        self.inner()
            .users
            .insert(user.token.clone(), Arc::new(user));
        Ok(())
    }

    pub(crate) fn reset(&self) {
        {
            let mut inner = self.inner();
            inner.store.clear_runs();
            inner.oauth_tokens.clear();
        }
        lock(&self.log).clear();
        lock(&self.faults).clear();
    }

    pub(crate) fn render_ctx<'a>(&'a self, inner: &'a Inner) -> RenderCtx<'a> {
        RenderCtx {
            base_url: &self.base_url,
            org_id: &self.org_id,
            clock: &inner.clock,
            now_v: inner.clock.now(),
        }
    }

    pub(crate) fn get_run(&self, run_id: i64) -> Option<Value> {
        let inner = self.inner();
        let ctx = self.render_ctx(&inner);
        let (run, task) = inner.store.find(run_id)?;
        render::render_get(run, task, &ctx, 0, true)
    }

    pub(crate) fn set_run_state(&self, run_id: i64, target: &str) -> Result<Value> {
        {
            let mut inner = self.inner();
            let now = inner.clock.now();
            let run = inner
                .store
                .find_mut(run_id)
                .ok_or_else(|| JobsError::NotFound(format!("Run {run_id} does not exist.")))?;
            let forced = Forced::parse(target, run.job.plan.outcome).ok_or_else(|| {
                JobsError::InvalidRequest(format!(
                    "unknown state {target:?}: use QUEUED, PENDING, RUNNING, TERMINATING, WAITING_FOR_RETRY, BLOCKED, \
                     TERMINATED, SUCCESS, SUCCESS_WITH_FAILURES, FAILED, TIMEDOUT, CANCELED, SKIPPED or INTERNAL_ERROR"
                ))
            })?;
            run.cancel_v = None;
            run.forced = Some((forced, now));
        }
        self.get_run(run_id)
            .ok_or_else(|| JobsError::NotFound(format!("Run {run_id} does not exist.")))
    }

    pub(crate) fn set_time_scale(&self, scale: f64) -> Result<()> {
        if !scale.is_finite() || scale < 0.0 {
            return Err(JobsError::InvalidRequest(
                "timeScale must be a finite number >= 0".into(),
            ));
        }
        self.inner().clock.set_scale(scale);
        Ok(())
    }

    pub(crate) fn advance_time(&self, ms: f64) -> Result<()> {
        if !ms.is_finite() || ms < 0.0 {
            return Err(JobsError::InvalidRequest(
                "advance needs a finite number of milliseconds >= 0".into(),
            ));
        }
        self.inner().clock.advance(ms);
        Ok(())
    }

    pub(crate) fn jobs(&self) -> Vec<Value> {
        let inner = self.inner();
        let mut jobs: Vec<_> = inner.store.jobs.values().collect();
        jobs.sort_by_key(|j| j.id);
        jobs.iter()
            .map(|j| {
                let tt = j.tasks.first().map(|t| t.task_type.as_str()).unwrap_or("notebook");
                json!({"id": j.id, "name": j.name, "taskType": tt, "taskCount": j.tasks.len(),
                       "parameters": j.parameters.iter().map(|p| p.name.clone()).collect::<Vec<_>>()})
            })
            .collect()
    }
}

/// A running emulator. Dropping it stops the server too.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Emulator {
    /// Starts the emulator on 127.0.0.1 (`options.port`, 0 = any free port), on the current
    /// tokio runtime. Fails on a bind error or invalid jobs/users.
    pub async fn start(options: EmulatorOptions) -> Result<Emulator> {
        let scale = options.time_scale.unwrap_or(1.0);
        if !scale.is_finite() || scale < 0.0 {
            return Err(JobsError::Config(
                "emulator timeScale must be a finite number >= 0".into(),
            ));
        }
        let mut specs = options.jobs.clone().unwrap_or_default();
        if let Some(file) = &options.jobs_file {
            specs.extend(config::load_jobs_file(file)?);
        }
        if options.jobs.is_none() && options.jobs_file.is_none() {
            specs = sample_jobs();
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(|e| {
                JobsError::Config(format!(
                    "emulator cannot listen on 127.0.0.1:{}: {e}",
                    options.port
                ))
            })?;
        let listener = net::EmuListener(listener);
        let addr = net::local_addr(&listener).map_err(|e| JobsError::Internal(e.to_string()))?;
        let first_run_id = options.first_run_id.unwrap_or(100_000_000_001);
        if first_run_id <= 0 {
            return Err(JobsError::Config(
                "emulator firstRunId must be positive".into(),
            ));
        }
        let shared = Arc::new(Shared {
            base_url: format!("http://127.0.0.1:{}", addr.port()),
            org_id: options
                .org_id
                .clone()
                .unwrap_or_else(|| "1234567890123456".into()),
            sp_token: options
                .token
                .clone()
                .unwrap_or_else(|| format!("dapi{}", random_hex(16))),
            sp_name: Arc::from(
                options
                    .service_principal_name
                    .as_deref()
                    .unwrap_or("emulator-sp@example.com"),
            ),
            client_id: options
                .client_id
                .clone()
                .unwrap_or_else(|| "emulator-client".into()),
            client_secret: options
                .client_secret
                .clone()
                .unwrap_or_else(|| format!("dose{}", random_hex(16))),
            inner: Mutex::new(Inner {
                clock: Clock::new(scale),
                store: Store::new(first_run_id),
                users: HashMap::new(),
                oauth_tokens: HashMap::new(),
                oauth_ttl: Duration::from_secs(options.oauth_token_ttl_secs.unwrap_or(3600)),
            }),
            log: Mutex::new(VecDeque::new()),
            log_limit: options.request_log_limit.unwrap_or(10_000).max(1),
            faults: Mutex::new(Vec::new()),
        });
        let mut seen = HashMap::new();
        for spec in &specs {
            if let Some(first) = seen.insert(spec.id, spec.name.clone()) {
                let named = |n: &Option<String>| {
                    n.as_deref().map(|n| format!(" {n:?}")).unwrap_or_default()
                };
                return Err(JobsError::Config(format!(
                    "emulator: job {} is defined twice (as{} and as{}): job ids must be unique",
                    spec.id,
                    named(&first),
                    named(&spec.name)
                )));
            }
            shared
                .add_job(spec)
                .map_err(|e| JobsError::Config(format!("emulator: {e}")))?;
        }
        for user in options.users {
            shared
                .add_user(user)
                .map_err(|e| JobsError::Config(format!("emulator: {e}")))?;
        }
        let (tx, rx) = oneshot::channel::<()>();
        let app = api::router(shared.clone());
        let task = tokio::spawn(async move {
            let server = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<net::Conn>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            let _ = server.await;
        });
        Ok(Emulator {
            shared,
            addr,
            shutdown: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
        })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// The service principal's personal access token.
    pub fn token(&self) -> String {
        self.shared.sp_token.clone()
    }
    pub fn client_id(&self) -> String {
        self.shared.client_id.clone()
    }
    pub fn client_secret(&self) -> String {
        self.shared.client_secret.clone()
    }
    pub fn org_id(&self) -> String {
        self.shared.org_id.clone()
    }

    /// Stops accepting connections and waits (at most 2 s) for open ones to finish; then the
    /// port is free. Idempotent.
    pub async fn stop(&self) {
        let tx = lock(&self.shutdown).take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
        let task = lock(&self.task).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Adds a fault for the next `times` matching requests.
    pub fn inject_fault(&self, fault: FaultSpec) -> Result<()> {
        self.shared.inject_fault(fault)
    }
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }
    /// The request log, oldest first.
    pub fn requests(&self) -> Vec<RequestLogEntry> {
        lock(&self.shared.log).iter().cloned().collect()
    }
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }
    /// Forgets runs (ids start over), requests, faults, idempotency tokens and OAuth tokens.
    /// Jobs, users and the clock stay.
    pub fn reset(&self) {
        self.shared.reset()
    }
    /// Moves a run (parent id, or a task run id: its parent) to a state at once. Active states
    /// (QUEUED, PENDING, RUNNING, TERMINATING, WAITING_FOR_RETRY, BLOCKED) hold until the next
    /// call or a cancel; TERMINATED (the job's outcome), SUCCESS, SUCCESS_WITH_FAILURES, FAILED,
    /// TIMEDOUT, CANCELED, SKIPPED and INTERNAL_ERROR end the run now. Returns the run.
    pub fn set_run_state(&self, run_id: i64, state: &str) -> Result<Value> {
        self.shared.set_run_state(run_id, state)
    }
    /// The run as runs/get renders it (first page of tasks), without auth.
    pub fn get_run(&self, run_id: i64) -> Option<Value> {
        self.shared.get_run(run_id)
    }
    pub fn add_user(&self, user: UserSpec) -> Result<()> {
        self.shared.add_user(user)
    }
    /// Adds or replaces a job. Existing runs keep the old definition.
    pub fn add_job(&self, job: JobSpec) -> Result<()> {
        self.shared.add_job(&job)
    }
    /// `[{ id, name, taskType, taskCount, parameters }]`, by id.
    pub fn jobs(&self) -> Vec<Value> {
        self.shared.jobs()
    }
    /// Virtual ms per real ms from now on (0 freezes time).
    pub fn set_time_scale(&self, scale: f64) -> Result<()> {
        self.shared.set_time_scale(scale)
    }
    /// Moves the virtual clock forward.
    pub fn advance_time(&self, ms: f64) -> Result<()> {
        self.shared.advance_time(ms)
    }
    /// Lifetime of OAuth tokens issued from now on.
    pub fn set_oauth_token_ttl(&self, secs: u64) {
        self.shared.inner().oauth_ttl = Duration::from_secs(secs);
    }
    /// Makes every OAuth token issued so far expired (401 on next use).
    pub fn expire_oauth_tokens(&self) {
        let now = Instant::now();
        for exp in self.shared.inner().oauth_tokens.values_mut() {
            *exp = now;
        }
    }
    /// Number of runs (parents) created since start or the last reset.
    pub fn run_count(&self) -> usize {
        self.shared.inner().store.runs.len()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = lock(&self.shutdown).take() {
            let _ = tx.send(());
        }
    }
}
