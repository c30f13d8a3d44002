//! In-memory model of the emulated workspace: jobs, runs, a virtual clock, and the run
//! life cycle computed lazily from time (no task per run).
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::config::{JobParameter, JobSpec};
use crate::{JobsError, Result};

/// Elements of each array per page in runs/get and jobs/get.
pub const PAGE_SIZE: usize = 100;

// ---------------------------------------------------------------- clock

/// Virtual time in milliseconds since the emulator started, advancing `scale` times real time.
pub(crate) struct Clock {
    start_epoch_ms: i64,
    anchor: Instant,
    anchor_v: f64,
    scale: f64,
}

impl Clock {
    pub fn new(scale: f64) -> Clock {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock {
            start_epoch_ms: epoch,
            anchor: Instant::now(),
            anchor_v: 0.0,
            scale,
        }
    }
    pub fn now(&self) -> f64 {
        self.anchor_v + self.anchor.elapsed().as_secs_f64() * 1000.0 * self.scale
    }
    pub fn set_scale(&mut self, scale: f64) {
        let now = self.now();
        self.anchor = Instant::now();
        self.anchor_v = now;
        self.scale = scale;
    }
    pub fn advance(&mut self, ms: f64) {
        self.anchor_v += ms;
    }
    pub fn epoch_ms(&self, v: f64) -> i64 {
        self.start_epoch_ms + v.floor() as i64
    }
}

// ---------------------------------------------------------------- states

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Queued,
    Pending,
    Running,
    Terminating,
    Terminated,
    Skipped,
    InternalError,
    WaitingForRetry,
    Blocked,
}

impl Life {
    pub fn as_str(self) -> &'static str {
        match self {
            Life::Queued => "QUEUED",
            Life::Pending => "PENDING",
            Life::Running => "RUNNING",
            Life::Terminating => "TERMINATING",
            Life::Terminated => "TERMINATED",
            Life::Skipped => "SKIPPED",
            Life::InternalError => "INTERNAL_ERROR",
            Life::WaitingForRetry => "WAITING_FOR_RETRY",
            Life::Blocked => "BLOCKED",
        }
    }
    /// The V2 `status.state`.
    pub fn v2(self) -> &'static str {
        match self {
            Life::Queued => "QUEUED",
            Life::Pending => "PENDING",
            Life::Running => "RUNNING",
            Life::Terminating => "TERMINATING",
            Life::Terminated | Life::Skipped | Life::InternalError => "TERMINATED",
            Life::WaitingForRetry => "WAITING",
            Life::Blocked => "BLOCKED",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Life::Terminated | Life::Skipped | Life::InternalError)
    }
    fn message(self) -> &'static str {
        match self {
            Life::Queued => "Waiting in the job queue.",
            Life::Pending => "Waiting for cluster.",
            Life::Running => "In run",
            Life::Terminating => "Terminating the run.",
            Life::WaitingForRetry => "Waiting for retry.",
            Life::Blocked => "Blocked by an upstream run.",
            _ => "",
        }
    }
}

/// How a run ends when left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    SuccessWithFailures,
    Failed,
    TimedOut,
    Canceled,
    Skipped,
    InternalError,
}

impl Outcome {
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s.to_ascii_uppercase().as_str() {
            "SUCCESS" => Outcome::Success,
            "SUCCESS_WITH_FAILURES" => Outcome::SuccessWithFailures,
            "FAILED" => Outcome::Failed,
            "TIMEDOUT" | "TIMED_OUT" => Outcome::TimedOut,
            "CANCELED" | "CANCELLED" => Outcome::Canceled,
            "SKIPPED" => Outcome::Skipped,
            "INTERNAL_ERROR" => Outcome::InternalError,
            _ => return None,
        })
    }
    pub fn life(self) -> Life {
        match self {
            Outcome::Skipped => Life::Skipped,
            Outcome::InternalError => Life::InternalError,
            _ => Life::Terminated,
        }
    }
    pub fn result_state(self) -> Option<&'static str> {
        match self {
            Outcome::Success => Some("SUCCESS"),
            Outcome::SuccessWithFailures => Some("SUCCESS_WITH_FAILURES"),
            Outcome::Failed | Outcome::InternalError => Some("FAILED"),
            Outcome::TimedOut => Some("TIMEDOUT"),
            Outcome::Canceled => Some("CANCELED"),
            Outcome::Skipped => None,
        }
    }
    /// `(code, type, message)` of `status.termination_details`.
    fn termination(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Outcome::Success => ("SUCCESS", "SUCCESS", ""),
            Outcome::SuccessWithFailures => {
                ("SUCCESS_WITH_FAILURES", "SUCCESS", "Some tasks failed.")
            }
            Outcome::Failed => (
                "RUN_EXECUTION_ERROR",
                "CLIENT_ERROR",
                "Workload failed, see run output for details.",
            ),
            Outcome::TimedOut => (
                "CANCELED",
                "CLIENT_ERROR",
                "The run was stopped after reaching its timeout.",
            ),
            Outcome::Canceled => ("CANCELED", "SUCCESS", "The run was canceled."),
            Outcome::Skipped => ("SKIPPED", "SUCCESS", "The run was skipped."),
            Outcome::InternalError => (
                "INTERNAL_ERROR",
                "INTERNAL_ERROR",
                "An unexpected error occurred while running the job.",
            ),
        }
    }
}

/// What `set_run_state` forces.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Forced {
    /// Stay in this active state until told otherwise (or canceled).
    Pin(Life),
    /// End now with this outcome.
    End(Outcome),
}

impl Forced {
    pub fn parse(s: &str, default_outcome: Outcome) -> Option<Forced> {
        let up = s.to_ascii_uppercase();
        Some(match up.as_str() {
            "QUEUED" => Forced::Pin(Life::Queued),
            "PENDING" => Forced::Pin(Life::Pending),
            "RUNNING" => Forced::Pin(Life::Running),
            "TERMINATING" => Forced::Pin(Life::Terminating),
            "WAITING_FOR_RETRY" => Forced::Pin(Life::WaitingForRetry),
            "BLOCKED" => Forced::Pin(Life::Blocked),
            "TERMINATED" => Forced::End(default_outcome),
            other => Forced::End(Outcome::parse(other)?),
        })
    }
}

// ---------------------------------------------------------------- jobs

/// Task-type settings block and the output field it produces.
fn task_settings(task_type: &str, job_id: i64, key: &str) -> (String, Value) {
    match task_type {
        "notebook" => (
            "notebook_task".into(),
            json!({"notebook_path": format!("/Workspace/jobs/{key}"), "source": "WORKSPACE"}),
        ),
        "python_wheel" => (
            "python_wheel_task".into(),
            json!({"package_name": "emulated_pkg", "entry_point": key}),
        ),
        "python_script" | "python" | "spark_python" => (
            "spark_python_task".into(),
            json!({"python_file": format!("/Workspace/jobs/{key}.py")}),
        ),
        "spark_jar" | "jar" => (
            "spark_jar_task".into(),
            json!({"main_class_name": "com.example.Main"}),
        ),
        "spark_submit" => ("spark_submit_task".into(), json!({"parameters": []})),
        "sql" => (
            "sql_task".into(),
            json!({"warehouse_id": "emulated-warehouse", "file": {"path": format!("/Workspace/jobs/{key}.sql")}}),
        ),
        "dbt" => (
            "dbt_task".into(),
            json!({"commands": ["dbt deps", "dbt run"]}),
        ),
        "run_job" => ("run_job_task".into(), json!({"job_id": job_id})),
        "pipeline" => (
            "pipeline_task".into(),
            json!({"pipeline_id": "emulated-pipeline"}),
        ),
        "condition" => (
            "condition_task".into(),
            json!({"op": "EQUAL_TO", "left": "1", "right": "1"}),
        ),
        other => (format!("{other}_task"), json!({})),
    }
}

pub(crate) struct TaskDef {
    pub key: String,
    pub task_type: String,
    pub outcome: Option<Outcome>,
    pub output: Option<String>,
    pub settings: Value,
}

pub(crate) struct Plan {
    pub queue: f64,
    pub pending: f64,
    pub running: f64,
    pub terminating: f64,
    pub retries: u32,
    pub retry_wait: f64,
    pub outcome: Outcome,
}

pub(crate) struct Job {
    pub id: i64,
    pub name: String,
    pub tasks: Vec<TaskDef>,
    pub plan: Plan,
    pub parameters: Vec<JobParameter>,
    pub output: Option<String>,
    pub error_message: Option<String>,
    pub created_time: i64,
}

impl Job {
    pub fn from_spec(spec: &JobSpec, created_time: i64) -> Result<Job> {
        let bad = |m: String| JobsError::InvalidRequest(format!("job {}: {m}", spec.id));
        if spec.id <= 0 {
            return Err(bad("id must be a positive integer".into()));
        }
        let parse_outcome = |s: &Option<String>| -> Result<Option<Outcome>> {
            match s {
                None => Ok(None),
                Some(s) => Outcome::parse(s)
                    .map(Some)
                    .ok_or_else(|| bad(format!("unknown outcome {s:?}"))),
            }
        };
        let outcome = parse_outcome(&spec.outcome)?.unwrap_or(Outcome::Success);
        let default_type = spec.task_type.clone().unwrap_or_else(|| "notebook".into());
        let mut tasks = Vec::new();
        if spec.tasks.is_empty() {
            let n = spec.task_count.unwrap_or(1).max(1);
            for i in 0..n {
                let key = if n == 1 {
                    "main".to_string()
                } else {
                    format!("task_{:03}", i + 1)
                };
                tasks.push((key, default_type.clone(), None, None));
            }
        } else {
            for t in &spec.tasks {
                if t.task_key.is_empty() {
                    return Err(bad("every task needs a taskKey".into()));
                }
                let tt = t.task_type.clone().unwrap_or_else(|| default_type.clone());
                tasks.push((
                    t.task_key.clone(),
                    tt,
                    parse_outcome(&t.outcome)?,
                    t.output.clone(),
                ));
            }
        }
        let tasks = tasks
            .into_iter()
            .map(|(key, task_type, outcome, output)| {
                let (field, body) = task_settings(&task_type, spec.id, &key);
                let mut settings = Map::new();
                settings.insert("task_key".into(), json!(key));
                settings.insert(field, body);
                settings.insert("timeout_seconds".into(), json!(0));
                settings.insert("email_notifications".into(), json!({}));
                TaskDef {
                    key,
                    task_type,
                    outcome,
                    output,
                    settings: Value::Object(settings),
                }
            })
            .collect();
        Ok(Job {
            id: spec.id,
            name: spec
                .name
                .clone()
                .unwrap_or_else(|| format!("job-{}", spec.id)),
            tasks,
            plan: Plan {
                queue: spec.queue_ms.unwrap_or(100) as f64,
                pending: spec.pending_ms.unwrap_or(300) as f64,
                running: spec.duration_ms.unwrap_or(2000) as f64,
                terminating: spec.terminating_ms.unwrap_or(200) as f64,
                retries: spec.retries.unwrap_or(0),
                retry_wait: spec.retry_wait_ms.unwrap_or(500) as f64,
                outcome,
            },
            parameters: spec.parameters.clone(),
            output: spec.output.clone(),
            error_message: spec.error_message.clone(),
            created_time,
        })
    }

    /// jobs/get body, page `page` of the tasks.
    pub fn render(&self, page: usize, run_as: &str) -> Value {
        let (slice, next) = page_of(&self.tasks, page);
        let tasks: Vec<Value> = slice.iter().map(|t| t.settings.clone()).collect();
        let params: Vec<Value> = if page == 0 {
            self.parameters
                .iter()
                .map(|p| json!({"name": p.name, "default": p.default}))
                .collect()
        } else {
            vec![]
        };
        let mut settings = json!({
            "name": self.name,
            "tasks": tasks,
            "format": "MULTI_TASK",
            "max_concurrent_runs": 1000,
            "timeout_seconds": 0,
            "email_notifications": {},
            "queue": {"enabled": true},
        });
        if !params.is_empty() {
            settings["parameters"] = Value::Array(params);
        }
        let mut body = json!({
            "job_id": self.id,
            "creator_user_name": run_as,
            "run_as_user_name": run_as,
            "created_time": self.created_time,
            "settings": settings,
            "has_more": next.is_some(),
        });
        if let Some(n) = next {
            body["next_page_token"] = json!(page_token(n));
        }
        body
    }
}

fn page_of<T>(items: &[T], page: usize) -> (&[T], Option<usize>) {
    let start = (page * PAGE_SIZE).min(items.len());
    let end = (start + PAGE_SIZE).min(items.len());
    let next = if end < items.len() {
        Some(page + 1)
    } else {
        None
    };
    (&items[start..end], next)
}

pub fn page_token(page: usize) -> String {
    format!("pg{page}")
}

/// Parses a runs/get or jobs/get page token; `None` for an invalid one.
pub fn parse_page_token(token: Option<&str>) -> Option<usize> {
    match token {
        None | Some("") => Some(0),
        Some(t) => t.strip_prefix("pg")?.parse().ok(),
    }
}

// ---------------------------------------------------------------- runs

pub(crate) struct RunRec {
    pub run_id: i64,
    pub number: i64,
    pub job: Arc<Job>,
    /// Virtual time the run was triggered.
    pub created_v: f64,
    pub creator: Arc<str>,
    pub overriding: Option<Box<Value>>,
    // Boxed on purpose: 8 bytes per run instead of 48 when (as usually) absent.
    #[allow(clippy::box_collection)]
    pub job_params: Option<Box<HashMap<String, String>>>,
    /// Virtual time of a cancel request that reached an active run.
    pub cancel_v: Option<f64>,
    pub forced: Option<(Forced, f64)>,
}

/// The run's situation at a given instant.
#[derive(Debug, Clone)]
pub(crate) struct Snap {
    pub life: Life,
    pub outcome: Option<Outcome>,
    pub user_cancelled: bool,
    pub attempt: u32,
    /// Elapsed virtual ms at the end, for terminal states.
    pub end_e: Option<f64>,
    pub queue_d: f64,
    pub setup_d: f64,
    pub exec_d: f64,
    pub cleanup_d: f64,
}

impl Snap {
    fn new() -> Snap {
        Snap {
            life: Life::Queued,
            outcome: None,
            user_cancelled: false,
            attempt: 0,
            end_e: None,
            queue_d: 0.0,
            setup_d: 0.0,
            exec_d: 0.0,
            cleanup_d: 0.0,
        }
    }
    fn add(&mut self, life: Life, d: f64) {
        match life {
            Life::Queued => self.queue_d += d,
            Life::Pending => self.setup_d += d,
            Life::Running => self.exec_d += d,
            Life::Terminating => self.cleanup_d += d,
            _ => {}
        }
    }
}

/// The natural timeline of a plan at elapsed virtual time `e`.
fn walk(plan: &Plan, e: f64) -> Snap {
    let mut segs: Vec<(Life, f64)> = Vec::with_capacity(6 + 3 * plan.retries as usize);
    segs.push((Life::Queued, plan.queue));
    if plan.outcome != Outcome::Skipped {
        for _ in 0..plan.retries {
            segs.push((Life::Pending, plan.pending));
            segs.push((Life::Running, plan.running));
            segs.push((Life::WaitingForRetry, plan.retry_wait));
        }
        segs.push((Life::Pending, plan.pending));
        segs.push((Life::Running, plan.running));
        if plan.outcome != Outcome::InternalError {
            segs.push((Life::Terminating, plan.terminating));
        }
    }
    let mut snap = Snap::new();
    let mut t = 0.0;
    for (life, d) in segs {
        if e < t + d {
            snap.life = life;
            snap.add(life, (e - t).max(0.0));
            return snap;
        }
        snap.add(life, d);
        t += d;
        if life == Life::WaitingForRetry {
            snap.attempt += 1;
        }
    }
    snap.life = plan.outcome.life();
    snap.outcome = Some(plan.outcome);
    snap.end_e = Some(t);
    snap
}

impl RunRec {
    pub fn job_id(&self) -> i64 {
        self.job.id
    }
    pub fn task_count(&self) -> usize {
        self.job.tasks.len()
    }
    /// Whether `id` is this run or one of its task runs.
    pub fn owns(&self, id: i64) -> bool {
        id >= self.run_id && id <= self.run_id + self.task_count() as i64
    }

    fn cancel_grace(&self) -> f64 {
        if self.job.plan.terminating > 0.0 {
            self.job.plan.terminating
        } else {
            200.0
        }
    }

    /// Timeline with a pin applied, ignoring cancel and forced ends.
    fn base(&self, e: f64) -> Snap {
        match self.forced {
            Some((Forced::Pin(life), at_v)) => {
                let at = at_v - self.created_v;
                if e < at {
                    return walk(&self.job.plan, e);
                }
                let mut s = walk(&self.job.plan, at);
                s.life = life;
                s.outcome = None;
                s.end_e = None;
                s.add(life, e - at);
                s
            }
            _ => walk(&self.job.plan, e),
        }
    }

    pub fn snapshot(&self, now_v: f64) -> Snap {
        let e = (now_v - self.created_v).max(0.0);
        if let Some((Forced::End(outcome), at_v)) = self.forced {
            let at = (at_v - self.created_v).max(0.0);
            let natural = walk(&self.job.plan, at);
            let end = natural.end_e.unwrap_or(at);
            let mut s = natural;
            s.life = outcome.life();
            s.outcome = Some(outcome);
            s.end_e = Some(end);
            return s;
        }
        if let Some(cv) = self.cancel_v {
            let c = (cv - self.created_v).max(0.0);
            if e >= c {
                let mut s = self.base(c);
                let grace = self.cancel_grace();
                if e < c + grace {
                    s.life = Life::Terminating;
                    s.cleanup_d += e - c;
                } else {
                    s.cleanup_d += grace;
                    s.life = Life::Terminated;
                    s.outcome = Some(Outcome::Canceled);
                    s.user_cancelled = true;
                    s.end_e = Some(c + grace);
                }
                return s;
            }
        }
        self.base(e)
    }

    pub fn is_active(&self, now_v: f64) -> bool {
        !self.snapshot(now_v).life.is_terminal()
    }

    /// `job_parameters` of a run: the job's definitions with the values of this run, then
    /// any extra names the run was given.
    fn effective_job_params(&self) -> Vec<Value> {
        let given = self.job_params.as_deref();
        let mut out: Vec<Value> = self
            .job
            .parameters
            .iter()
            .map(|p| {
                let value = given
                    .and_then(|m| m.get(&p.name))
                    .cloned()
                    .unwrap_or_else(|| p.default.clone());
                json!({"name": p.name, "default": p.default, "value": value})
            })
            .collect();
        if let Some(m) = given {
            let mut extra: Vec<_> = m
                .iter()
                .filter(|(k, _)| !self.job.parameters.iter().any(|p| &p.name == *k))
                .collect();
            extra.sort();
            out.extend(
                extra
                    .into_iter()
                    .map(|(k, v)| json!({"name": k, "value": v})),
            );
        }
        out
    }
}

/// Everything rendering needs besides the run.
pub(crate) struct RenderCtx<'a> {
    pub base_url: &'a str,
    pub org_id: &'a str,
    pub clock: &'a Clock,
    pub now_v: f64,
}

impl RenderCtx<'_> {
    fn page_url(&self, job_id: i64, run_id: i64) -> String {
        format!(
            "{}/?o={}#job/{}/run/{}",
            self.base_url, self.org_id, job_id, run_id
        )
    }
}

fn state_blocks(snap: &Snap, task_key: Option<&str>) -> (Value, Value) {
    let mut state = Map::new();
    state.insert("life_cycle_state".into(), json!(snap.life.as_str()));
    let mut status = Map::new();
    status.insert("state".into(), json!(snap.life.v2()));
    let message: String;
    if let Some(outcome) = snap.outcome {
        if let Some(r) = outcome.result_state() {
            state.insert("result_state".into(), json!(r));
        }
        let (code, ty, msg) = if snap.user_cancelled {
            ("USER_CANCELED", "SUCCESS", "Run cancelled by user.")
        } else {
            outcome.termination()
        };
        message = match (outcome, task_key) {
            (Outcome::Failed, Some(k)) if !snap.user_cancelled => {
                format!("Task {k} failed with message: {msg}")
            }
            _ => msg.to_string(),
        };
        status.insert(
            "termination_details".into(),
            json!({"code": code, "type": ty, "message": message}),
        );
    } else {
        message = snap.life.message().to_string();
        if snap.life == Life::Queued {
            status.insert(
                "queue_details".into(),
                json!({"code": "ACTIVE_RUNS_LIMIT_REACHED", "message": "The run is queued until a slot is free."}),
            );
            state.insert(
                "queue_reason".into(),
                json!("The run is queued until a slot is free."),
            );
        }
    }
    state.insert("state_message".into(), json!(message));
    state.insert(
        "user_cancelled_or_timedout".into(),
        json!(snap.user_cancelled || snap.outcome == Some(Outcome::TimedOut)),
    );
    (Value::Object(state), Value::Object(status))
}

/// The snapshot of task `i`: the parent's, with the task's own outcome when the run ended by itself.
fn task_snap(run: &RunRec, parent: &Snap, i: usize) -> Snap {
    let mut s = parent.clone();
    let natural_end = !s.user_cancelled && !matches!(run.forced, Some((Forced::End(_), _)));
    let own = match (run.job.tasks[i].outcome, s.outcome) {
        (Some(own), _) => Some(own),
        // "Some tasks failed" describes the run; a task without its own outcome succeeded.
        (None, Some(Outcome::SuccessWithFailures)) => Some(Outcome::Success),
        _ => None,
    };
    if let (Some(_), true, Some(own)) = (s.outcome, natural_end, own) {
        s.outcome = Some(own);
        s.life = own.life();
    }
    s
}

fn timing(
    obj: &mut Map<String, Value>,
    snap: &Snap,
    ctx: &RenderCtx,
    created_v: f64,
    phase_durations: bool,
) {
    let start = ctx.clock.epoch_ms(created_v);
    let elapsed = match snap.end_e {
        Some(end) => end,
        None => (ctx.now_v - created_v).max(0.0),
    };
    obj.insert("start_time".into(), json!(start));
    obj.insert(
        "end_time".into(),
        json!(snap
            .end_e
            .map(|e| ctx.clock.epoch_ms(created_v + e))
            .unwrap_or(0)),
    );
    let (s, x, c) = if phase_durations {
        (
            snap.setup_d as i64,
            snap.exec_d as i64,
            snap.cleanup_d as i64,
        )
    } else {
        (0, 0, 0)
    };
    obj.insert("setup_duration".into(), json!(s));
    obj.insert("execution_duration".into(), json!(x));
    obj.insert("cleanup_duration".into(), json!(c));
    obj.insert("queue_duration".into(), json!(snap.queue_d as i64));
    obj.insert(
        "run_duration".into(),
        json!((elapsed - snap.queue_d).max(0.0) as i64),
    );
    obj.insert("attempt_number".into(), json!(snap.attempt));
}

fn render_task(run: &RunRec, parent: &Snap, i: usize, ctx: &RenderCtx) -> Value {
    let def = &run.job.tasks[i];
    let snap = task_snap(run, parent, i);
    let task_run_id = run.run_id + 1 + i as i64;
    let mut obj = match &def.settings {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    obj.insert("run_id".into(), json!(task_run_id));
    let (state, status) = state_blocks(&snap, Some(&def.key));
    obj.insert("state".into(), state);
    obj.insert("status".into(), status);
    timing(&mut obj, &snap, ctx, run.created_v, true);
    obj.insert(
        "run_page_url".into(),
        json!(ctx.page_url(run.job_id(), task_run_id)),
    );
    Value::Object(obj)
}

/// A Run as runs/get returns it. `page` selects 100 tasks; `with_tasks` false leaves them out
/// (runs/list without `expand_tasks`).
pub(crate) fn render_run(run: &RunRec, ctx: &RenderCtx, page: usize, with_tasks: bool) -> Value {
    let snap = run.snapshot(ctx.now_v);
    let mut obj = Map::new();
    obj.insert("job_id".into(), json!(run.job_id()));
    obj.insert("run_id".into(), json!(run.run_id));
    obj.insert("original_attempt_run_id".into(), json!(run.run_id));
    obj.insert("number_in_job".into(), json!(run.number));
    obj.insert("creator_user_name".into(), json!(&*run.creator));
    obj.insert("run_name".into(), json!(run.job.name));
    obj.insert("run_type".into(), json!("JOB_RUN"));
    obj.insert("trigger".into(), json!("ONE_TIME"));
    obj.insert("format".into(), json!("MULTI_TASK"));
    let (state, status) = state_blocks(&snap, run.job.tasks.first().map(|t| t.key.as_str()));
    obj.insert("state".into(), state);
    obj.insert("status".into(), status);
    timing(&mut obj, &snap, ctx, run.created_v, run.task_count() == 1);
    obj.insert(
        "run_page_url".into(),
        json!(ctx.page_url(run.job_id(), run.run_id)),
    );
    if with_tasks {
        let indices: Vec<usize> = (0..run.task_count()).collect();
        let (slice, next) = page_of(&indices, page);
        let tasks: Vec<Value> = slice
            .iter()
            .map(|&i| render_task(run, &snap, i, ctx))
            .collect();
        obj.insert("tasks".into(), Value::Array(tasks));
        obj.insert("has_more".into(), json!(next.is_some()));
        if let Some(n) = next {
            obj.insert("next_page_token".into(), json!(page_token(n)));
        }
    }
    if (!run.job.parameters.is_empty() || run.job_params.is_some()) && page == 0 {
        obj.insert(
            "job_parameters".into(),
            Value::Array(run.effective_job_params()),
        );
    }
    if let Some(o) = &run.overriding {
        obj.insert("overriding_parameters".into(), (**o).clone());
    }
    Value::Object(obj)
}

/// A task run as runs/get returns it for a task's `run_id`.
pub(crate) fn render_task_run(run: &RunRec, i: usize, ctx: &RenderCtx) -> Value {
    let parent = run.snapshot(ctx.now_v);
    let task = render_task(run, &parent, i, ctx);
    let snap = task_snap(run, &parent, i);
    let task_run_id = run.run_id + 1 + i as i64;
    let mut obj = Map::new();
    obj.insert("job_id".into(), json!(run.job_id()));
    obj.insert("run_id".into(), json!(task_run_id));
    obj.insert("parent_run_id".into(), json!(run.run_id));
    obj.insert("number_in_job".into(), json!(run.number));
    obj.insert("creator_user_name".into(), json!(&*run.creator));
    obj.insert("run_name".into(), json!(run.job.tasks[i].key));
    obj.insert("run_type".into(), json!("JOB_RUN"));
    obj.insert("trigger".into(), json!("ONE_TIME"));
    obj.insert("format".into(), json!("MULTI_TASK"));
    let (state, status) = state_blocks(&snap, Some(&run.job.tasks[i].key));
    obj.insert("state".into(), state);
    obj.insert("status".into(), status);
    timing(&mut obj, &snap, ctx, run.created_v, true);
    obj.insert(
        "run_page_url".into(),
        json!(ctx.page_url(run.job_id(), task_run_id)),
    );
    obj.insert("tasks".into(), json!([task]));
    obj.insert("has_more".into(), json!(false));
    if let Some(o) = &run.overriding {
        obj.insert("overriding_parameters".into(), (**o).clone());
    }
    Value::Object(obj)
}

/// runs/get-output for task `i` of `run` (`metadata` is the task run, or `parent_meta`).
pub(crate) fn render_output(run: &RunRec, i: usize, ctx: &RenderCtx, metadata: Value) -> Value {
    let parent = run.snapshot(ctx.now_v);
    let snap = task_snap(run, &parent, i);
    let def = &run.job.tasks[i];
    let mut out = Map::new();
    match snap.outcome {
        Some(Outcome::Success) | Some(Outcome::SuccessWithFailures) => {
            let text = def
                .output
                .clone()
                .or_else(|| run.job.output.clone())
                .unwrap_or_else(|| {
                    json!({
                        "job_id": run.job_id(),
                        "run_id": run.run_id,
                        "task_key": def.key,
                        "job_parameters": run.job_params.as_deref(),
                        "overriding_parameters": run.overriding.as_deref(),
                    })
                    .to_string()
                });
            match def.task_type.as_str() {
                "notebook" => {
                    out.insert(
                        "notebook_output".into(),
                        json!({"result": text, "truncated": false}),
                    );
                }
                "sql" => {
                    out.insert(
                        "sql_output".into(),
                        json!({"query_output": {"output_link": format!("{}/sql/history", ctx.base_url), "warehouse_id": "emulated-warehouse"}}),
                    );
                }
                "dbt" => {
                    out.insert(
                        "dbt_output".into(),
                        json!({"artifacts_headers": {}, "artifacts_link": format!("{}/dbt/artifacts.tar.gz", ctx.base_url)}),
                    );
                }
                "run_job" => {
                    out.insert(
                        "run_job_output".into(),
                        json!({"run_id": run.run_id + 1 + i as i64}),
                    );
                }
                _ => {
                    out.insert("logs".into(), json!(text));
                    out.insert("logs_truncated".into(), json!(false));
                }
            }
        }
        Some(Outcome::Failed) | Some(Outcome::TimedOut) | Some(Outcome::InternalError)
            if !snap.user_cancelled =>
        {
            let msg = run
                .job
                .error_message
                .clone()
                .unwrap_or_else(|| "Workload failed: emulated error".into());
            out.insert("error".into(), json!(msg));
            out.insert(
                "error_trace".into(),
                json!(format!(
                    "Traceback (most recent call last):\n  File \"{}\", line 1\n{msg}",
                    def.key
                )),
            );
        }
        _ => {}
    }
    out.insert("metadata".into(), metadata);
    Value::Object(out)
}

// ---------------------------------------------------------------- the store

pub(crate) struct Store {
    pub jobs: HashMap<i64, Arc<Job>>,
    pub runs: BTreeMap<i64, RunRec>,
    pub runs_by_job: HashMap<i64, Vec<i64>>,
    pub numbers: HashMap<i64, i64>,
    pub idempotency: HashMap<String, i64>,
    pub next_run_id: i64,
    pub first_run_id: i64,
}

impl Store {
    pub fn new(first_run_id: i64) -> Store {
        Store {
            jobs: HashMap::new(),
            runs: BTreeMap::new(),
            runs_by_job: HashMap::new(),
            numbers: HashMap::new(),
            idempotency: HashMap::new(),
            next_run_id: first_run_id,
            first_run_id,
        }
    }

    pub fn clear_runs(&mut self) {
        self.runs.clear();
        self.runs_by_job.clear();
        self.numbers.clear();
        self.idempotency.clear();
        self.next_run_id = self.first_run_id;
    }

    /// The parent run owning `id` and, for a task run id, the task index.
    pub fn find(&self, id: i64) -> Option<(&RunRec, Option<usize>)> {
        let (_, run) = self.runs.range(..=id).next_back()?;
        if !run.owns(id) {
            return None;
        }
        let idx = if id == run.run_id {
            None
        } else {
            Some((id - run.run_id - 1) as usize)
        };
        Some((run, idx))
    }

    pub fn find_mut(&mut self, id: i64) -> Option<&mut RunRec> {
        let (_, run) = self.runs.range_mut(..=id).next_back()?;
        if run.owns(id) {
            Some(run)
        } else {
            None
        }
    }

    pub fn create_run(
        &mut self,
        job: Arc<Job>,
        created_v: f64,
        creator: Arc<str>,
        overriding: Option<Value>,
        job_params: Option<HashMap<String, String>>,
    ) -> (i64, i64) {
        let run_id = self.next_run_id;
        self.next_run_id += 1 + job.tasks.len() as i64;
        let counter = self.numbers.entry(job.id).or_insert(0);
        *counter += 1;
        let number = *counter;
        self.runs_by_job.entry(job.id).or_default().push(run_id);
        self.runs.insert(
            run_id,
            RunRec {
                run_id,
                number,
                job,
                created_v,
                creator,
                overriding: overriding.map(Box::new),
                job_params: job_params.map(Box::new),
                cancel_v: None,
                forced: None,
            },
        );
        (run_id, number)
    }
}
