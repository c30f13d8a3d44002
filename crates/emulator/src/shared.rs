//! The emulator's shared state (jobs, runs, users, tokens, the clock, the request log, the
//! faults) and the operations both the control API and [`crate::Emulator`] offer.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{FaultSpec, HistorySeed, JobSpec, LakebaseSpec, UserSpec};
use crate::history;
use crate::lifecycle::{Clock, Forced};
use crate::render::{self, RenderCtx};
use crate::store::{Job, Store};
use appkit_jobs_core::{JobsError, Result};

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
    /// See [`LakebaseSpec`]; changed with `Emulator::set_lakebase`.
    pub lakebase: Option<LakebaseSpec>,
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

/// A job's history refused, naming the job as its spec errors do.
fn refused(job: &Job, e: String) -> JobsError {
    JobsError::InvalidRequest(format!("job {} ({:?}): {e}", job.id, job.name))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn random_hex(n: usize) -> String {
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

    /// Adds or replaces a job, and seeds the past runs its spec has. A job whose history
    /// cannot be seeded is refused (at once, not at the next reset).
    pub(crate) fn add_job(&self, spec: &JobSpec) -> Result<()> {
        let mut inner = self.inner();
        let now = inner.clock.now();
        let job = Arc::new(Job::from_spec(spec, inner.clock.epoch_ms(now))?);
        let prepared = history::prepare(&job, &job.history).map_err(|e| refused(&job, e))?;
        inner.store.jobs.insert(job.id, job.clone());
        history::seed(&mut inner.store, &job, prepared, now, &self.sp_name);
        Ok(())
    }

    /// Seeds completed past runs of job `job_id`; their run ids, oldest first.
    pub(crate) fn seed_history(&self, job_id: i64, seed: &HistorySeed) -> Result<Vec<i64>> {
        let mut inner = self.inner();
        let now = inner.clock.now();
        let job = inner
            .store
            .jobs
            .get(&job_id)
            .cloned()
            .ok_or_else(|| JobsError::NotFound(format!("Job {job_id} does not exist.")))?;
        let prepared = history::prepare(&job, &seed.runs()).map_err(|e| refused(&job, e))?;
        Ok(history::seed(
            &mut inner.store,
            &job,
            prepared,
            now,
            &self.sp_name,
        ))
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

    /// Forgets runs, requests, faults and tokens; the jobs' own seeded history comes back.
    pub(crate) fn reset(&self) {
        {
            let mut inner = self.inner();
            inner.store.clear_runs();
            inner.oauth_tokens.clear();
            let now = inner.clock.now();
            let mut jobs: Vec<Arc<Job>> = inner.store.jobs.values().cloned().collect();
            jobs.sort_by_key(|j| j.id);
            for job in jobs {
                // Checked when the job was added, so this does not fail.
                if let Ok(prepared) = history::prepare(&job, &job.history) {
                    history::seed(&mut inner.store, &job, prepared, now, &self.sp_name);
                }
            }
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
            let forced = Forced::parse(target, run.job.fresh.outcome).ok_or_else(|| {
                JobsError::InvalidRequest(format!(
                    "unknown state {target:?}: use QUEUED, PENDING, RUNNING, TERMINATING, WAITING_FOR_RETRY, BLOCKED, \
                     TERMINATED, SUCCESS, SUCCESS_WITH_FAILURES, FAILED, TIMEDOUT, CANCELED, SKIPPED or INTERNAL_ERROR"
                ))
            })?;
            run.current.cancel_v = None;
            run.current.forced = Some((forced, now));
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
                let tt = j.graph.tasks.first().map(|t| t.task_type.as_str()).unwrap_or("notebook");
                json!({"id": j.id, "name": j.name, "taskType": tt, "taskCount": j.task_count(),
                       "parameters": j.parameters.iter().map(|p| p.name.clone()).collect::<Vec<_>>()})
            })
            .collect()
    }
}
