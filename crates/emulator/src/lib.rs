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
//! Runs follow a life cycle computed lazily from a virtual clock (no task per run): QUEUED →
//! PENDING → RUNNING → TERMINATING → TERMINATED (SUCCESS, FAILED, ...), or SKIPPED after the
//! queue, or INTERNAL_ERROR. Within RUNNING the job's tasks run as a graph (`dependsOn`,
//! `runIf`, for-each tasks), each with its own life cycle (BLOCKED → PENDING → RUNNING →
//! [WAITING_FOR_RETRY → PENDING → RUNNING]* → TERMINATING → TERMINATED, or SKIPPED as
//! UPSTREAM_FAILED / EXCLUDED) and its own times; `runs/repair` runs tasks again in graph
//! order. Cancel goes through TERMINATING to TERMINATED/CANCELED. Every answer's `Date` is
//! the virtual clock's. Past runs can be seeded (`history`) for duration estimates.
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
//! - [`Emulator::run_count`], [`Emulator::seed_history`]`(job_id, HistorySeed) -> Result<Vec<i64>>`.
//
// Modules, in layers, each using only earlier ones (no import cycles): `config` (specs), `lifecycle` (the clock and
// states), `graph` (a job's tasks), `schedule` (an attempt laid out in time), `store` (jobs and
// runs), `history` and `repair` (on the store), `render` (JSON), `shared` (the state and its
// operations), `http` (answers), `control` (its endpoints), `net` (the listener), `api` (the
// Jobs API endpoints, handing `/__emulator/` to `control`).
mod api;
pub mod config;
mod control;
mod graph;
mod history;
mod http;
mod lifecycle;
mod net;
mod render;
mod repair;
mod schedule;
mod shared;
mod store;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use appkit_jobs_core::{JobsError, Result};
pub use config::{
    sample_jobs, EmulatorOptions, FaultSpec, ForEachSpec, HistorySeed, JobParameter, JobSpec,
    LakebaseSpec, PastRun, Permission, TaskSpec, UserSpec,
};
use lifecycle::Clock;
pub use shared::RequestLogEntry;
use shared::{lock, random_hex, Inner, Shared};
use store::Store;

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
                lakebase: options.lakebase.clone(),
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
    /// What `POST /api/2.0/postgres/credentials` hands out from now on (`None`: 404).
    pub fn set_lakebase(&self, spec: Option<LakebaseSpec>) {
        self.shared.inner().lakebase = spec;
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
    /// Number of runs (parents) started by run-now since start or the last reset (seeded
    /// history not counted).
    pub fn run_count(&self) -> usize {
        let inner = self.shared.inner();
        inner.store.runs.len() - inner.store.seeded
    }
    /// Seeds completed past runs of job `job_id` (a count, or each run described); their run
    /// ids, oldest first. Forgotten by [`Emulator::reset`], unlike the job spec's `history`.
    pub fn seed_history(&self, job_id: i64, history: HistorySeed) -> Result<Vec<i64>> {
        self.shared.seed_history(job_id, &history)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = lock(&self.shutdown).take() {
            let _ = tx.send(());
        }
    }
}
