//! Rendering the emulated workspace as the Jobs API's JSON shapes: jobs/get, runs/get (parent
//! and task runs), runs/get-output, in pages of 100 array elements.
use serde_json::{json, Map, Value};

use crate::lifecycle::Clock;
use crate::lifecycle::{Forced, Life, Outcome, Snap};
use crate::store::{Job, RunRec};

/// Elements of each array per page in runs/get and jobs/get.
pub const PAGE_SIZE: usize = 100;

impl Job {
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

impl RunRec {
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

/// A task's snapshot in an attempt whose state is `parent`: the parent's, ending with the
/// task's own outcome `own` when the run ended by itself.
fn task_snap(run: &RunRec, parent: &Snap, own: Option<Outcome>) -> Snap {
    let mut s = parent.clone();
    let natural_end = !s.user_cancelled && !matches!(run.forced, Some((Forced::End(_), _)));
    if let (Some(_), true, Some(own)) = (s.outcome, natural_end, own) {
        s.outcome = Some(own);
        s.life = own.life();
    }
    s
}

/// The outcome of task `i` of the original attempt, when it differs from the run's.
fn original_task_outcome(run: &RunRec, parent: &Snap, i: usize) -> Option<Outcome> {
    match (run.job.tasks[i].outcome, parent.outcome) {
        (Some(own), _) => Some(own),
        // "Some tasks failed" describes the run; a task without its own outcome succeeded.
        (None, Some(Outcome::SuccessWithFailures)) => Some(Outcome::Success),
        _ => None,
    }
}

/// One task run: which task, its run id, its state, and when its attempt began (virtual ms).
pub(crate) struct TaskView {
    pub index: usize,
    pub run_id: i64,
    pub snap: Snap,
    pub base_v: f64,
}

impl RunRec {
    /// The task runs of the current attempt, given its state `parent`: every task of the
    /// original run, or the tasks a repair runs again (which end as the repair does).
    pub(crate) fn current_tasks(&self, parent: &Snap) -> Vec<TaskView> {
        match &self.repair {
            None => (0..self.task_count())
                .map(|i| TaskView {
                    index: i,
                    run_id: self.run_id + 1 + i as i64,
                    snap: task_snap(self, parent, original_task_outcome(self, parent, i)),
                    base_v: self.attempt_v,
                })
                .collect(),
            Some(repair) => repair
                .tasks
                .iter()
                .zip(&repair.task_run_ids)
                .map(|(&index, &run_id)| TaskView {
                    index,
                    run_id,
                    snap: task_snap(self, parent, Some(repair.task_outcome)),
                    base_v: self.attempt_v,
                })
                .collect(),
        }
    }

    /// Every task run, one per task and attempt, the earliest attempt first.
    pub(crate) fn task_views(&self, now_v: f64) -> Vec<TaskView> {
        let mut views: Vec<TaskView> = self
            .history
            .iter()
            .flat_map(|a| {
                a.tasks.iter().map(|(index, run_id, snap)| TaskView {
                    index: *index,
                    run_id: *run_id,
                    snap: snap.clone(),
                    base_v: a.start_v,
                })
            })
            .collect();
        views.extend(self.current_tasks(&self.snapshot(now_v)));
        views
    }

    /// The task run `run_id`, or the latest run of the first task for the parent's id.
    pub(crate) fn task_view(&self, run_id: Option<i64>, now_v: f64) -> Option<TaskView> {
        let views = self.task_views(now_v);
        match run_id {
            Some(id) => views.into_iter().find(|v| v.run_id == id),
            None => views.into_iter().rev().find(|v| v.index == 0),
        }
    }
}

/// `start_time`, `end_time` and durations: `start_v` is when the run began, `base_v` when the
/// attempt `snap` describes began (its `end_e` counts from there).
fn timing(
    obj: &mut Map<String, Value>,
    snap: &Snap,
    ctx: &RenderCtx,
    (start_v, base_v): (f64, f64),
    phase_durations: bool,
) {
    let start = ctx.clock.epoch_ms(start_v);
    let elapsed = match snap.end_e {
        Some(end) => base_v + end - start_v,
        None => (ctx.now_v - start_v).max(0.0),
    };
    obj.insert("start_time".into(), json!(start));
    obj.insert(
        "end_time".into(),
        json!(snap
            .end_e
            .map(|e| ctx.clock.epoch_ms(base_v + e))
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

/// The fields a run and a task run share: state, timing (from `start_v`, the attempt from
/// `base_v`), page URL.
fn run_fields(
    obj: &mut Map<String, Value>,
    run: &RunRec,
    snap: &Snap,
    task_key: Option<&str>,
    ctx: &RenderCtx,
    (run_id, start_v, base_v, phase_durations): (i64, f64, f64, bool),
) {
    let (state, status) = state_blocks(snap, task_key);
    obj.insert("state".into(), state);
    obj.insert("status".into(), status);
    timing(obj, snap, ctx, (start_v, base_v), phase_durations);
    obj.insert(
        "run_page_url".into(),
        json!(ctx.page_url(run.job_id(), run_id)),
    );
}

fn render_task(run: &RunRec, view: &TaskView, ctx: &RenderCtx) -> Value {
    let def = &run.job.tasks[view.index];
    let mut obj = match &def.settings {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    obj.insert("run_id".into(), json!(view.run_id));
    run_fields(
        &mut obj,
        run,
        &view.snap,
        Some(&def.key),
        ctx,
        (view.run_id, view.base_v, view.base_v, true),
    );
    Value::Object(obj)
}

/// A Run as runs/get returns it. `page` selects 100 task runs; `with_tasks` false leaves them
/// out (runs/list without `expand_tasks`); `with_history` adds `repair_history`.
pub(crate) fn render_run(
    run: &RunRec,
    ctx: &RenderCtx,
    page: usize,
    with_tasks: bool,
    with_history: bool,
) -> Value {
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
    let first_task = run.job.tasks.first().map(|t| t.key.as_str());
    let single = run.task_count() == 1 && run.repair.is_none();
    run_fields(
        &mut obj,
        run,
        &snap,
        first_task,
        ctx,
        (run.run_id, run.created_v, run.attempt_v, single),
    );
    if with_tasks {
        let views = run.task_views(ctx.now_v);
        let (slice, next) = page_of(&views, page);
        let tasks: Vec<Value> = slice.iter().map(|v| render_task(run, v, ctx)).collect();
        obj.insert("tasks".into(), Value::Array(tasks));
        obj.insert("has_more".into(), json!(next.is_some()));
        if let Some(n) = next {
            obj.insert("next_page_token".into(), json!(page_token(n)));
        }
    }
    if with_history && page == 0 {
        obj.insert("repair_history".into(), repair_history(run, &snap, ctx));
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

/// `repair_history`: the original attempt, then each repair (with its `id`), the current last.
fn repair_history(run: &RunRec, current: &Snap, ctx: &RenderCtx) -> Value {
    let entry = |repair_id: Option<i64>, start_v: f64, snap: &Snap, task_run_ids: Vec<i64>| {
        let mut e = Map::new();
        e.insert(
            "type".into(),
            json!(if repair_id.is_some() {
                "REPAIR"
            } else {
                "ORIGINAL"
            }),
        );
        if let Some(id) = repair_id {
            e.insert("id".into(), json!(id));
        }
        let (state, status) = state_blocks(snap, None);
        e.insert("state".into(), state);
        e.insert("status".into(), status);
        e.insert("start_time".into(), json!(ctx.clock.epoch_ms(start_v)));
        e.insert(
            "end_time".into(),
            json!(snap
                .end_e
                .map(|end| ctx.clock.epoch_ms(start_v + end))
                .unwrap_or(0)),
        );
        e.insert("task_run_ids".into(), json!(task_run_ids));
        Value::Object(e)
    };
    let mut items: Vec<Value> = run
        .history
        .iter()
        .map(|a| {
            entry(
                a.repair_id,
                a.start_v,
                &a.snap,
                a.tasks.iter().map(|t| t.1).collect(),
            )
        })
        .collect();
    let current_ids = run
        .current_tasks(current)
        .iter()
        .map(|t| t.run_id)
        .collect();
    items.push(entry(
        run.repair.as_ref().map(|r| r.id),
        run.attempt_v,
        current,
        current_ids,
    ));
    Value::Array(items)
}

/// runs/get for `run`, or for its task run `task`; `None` when no such task run exists.
pub(crate) fn render_get(
    run: &RunRec,
    task: Option<i64>,
    ctx: &RenderCtx,
    page: usize,
    with_history: bool,
) -> Option<Value> {
    match task {
        None => Some(render_run(run, ctx, page, true, with_history)),
        Some(id) => Some(render_task_run(
            run,
            &run.task_view(Some(id), ctx.now_v)?,
            ctx,
        )),
    }
}

/// A task run as runs/get returns it for a task's `run_id`.
pub(crate) fn render_task_run(run: &RunRec, view: &TaskView, ctx: &RenderCtx) -> Value {
    let key = &run.job.tasks[view.index].key;
    let mut obj = Map::new();
    obj.insert("job_id".into(), json!(run.job_id()));
    obj.insert("run_id".into(), json!(view.run_id));
    obj.insert("parent_run_id".into(), json!(run.run_id));
    obj.insert("number_in_job".into(), json!(run.number));
    obj.insert("creator_user_name".into(), json!(&*run.creator));
    obj.insert("run_name".into(), json!(key));
    obj.insert("run_type".into(), json!("JOB_RUN"));
    obj.insert("trigger".into(), json!("ONE_TIME"));
    obj.insert("format".into(), json!("MULTI_TASK"));
    run_fields(
        &mut obj,
        run,
        &view.snap,
        Some(key),
        ctx,
        (view.run_id, view.base_v, view.base_v, true),
    );
    obj.insert("tasks".into(), json!([render_task(run, view, ctx)]));
    obj.insert("has_more".into(), json!(false));
    if let Some(o) = &run.overriding {
        obj.insert("overriding_parameters".into(), (**o).clone());
    }
    Value::Object(obj)
}

/// runs/get-output for the task run `view` of `run` (`metadata`: the run as runs/get renders it).
pub(crate) fn render_output(
    run: &RunRec,
    view: &TaskView,
    metadata: Value,
    ctx: &RenderCtx,
) -> Value {
    let (i, snap) = (view.index, &view.snap);
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
                    out.insert("run_job_output".into(), json!({"run_id": view.run_id}));
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
