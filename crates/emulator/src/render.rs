//! Rendering the emulated workspace as the Jobs API's JSON shapes: jobs/get, runs/get (parent
//! runs, task runs, for-each iterations), runs/get-output, in pages of 100 array elements.
use serde_json::{json, Map, Value};

use crate::lifecycle::{whole_ms, Clock, Life, Outcome, Snap};
use crate::store::{Job, RunRec, TaskView};

/// Elements of each array per page in runs/get and jobs/get.
pub const PAGE_SIZE: usize = 100;

impl Job {
    /// jobs/get body, page `page` of the tasks.
    pub fn render(&self, page: usize, run_as: &str) -> Value {
        let (slice, next) = page_of(&self.graph.tasks, page);
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

/// `job_parameters` of a run: the job's definitions with the values of this run, then any
/// extra names the run was given.
fn effective_job_params(run: &RunRec) -> Vec<Value> {
    let given = run.job_params.as_deref();
    let mut out: Vec<Value> = run
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
            .filter(|(k, _)| !run.job.parameters.iter().any(|p| &p.name == *k))
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

/// `state` (deprecated, still filled in) and `status` of a snapshot.
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

/// `start_time`, `end_time` and durations. `start_v` is when it began (`None`: it has not, so
/// 0), `base_v` when its attempt began (`snap`'s offsets count from there).
fn timing(
    obj: &mut Map<String, Value>,
    snap: &Snap,
    ctx: &RenderCtx,
    (start_v, base_v): (Option<f64>, f64),
    phase_durations: bool,
) {
    let end_v = snap.end_e.map(|e| base_v + e);
    let start_ms = start_v.map(|s| ctx.clock.epoch_ms(s));
    let end_ms = end_v.map(|e| ctx.clock.epoch_ms(e));
    // From whole-ms instants, so that end_time - start_time is exactly queue + run duration.
    let elapsed = match start_ms {
        None => 0,
        Some(s) => end_ms.unwrap_or_else(|| ctx.clock.epoch_ms(ctx.now_v)) - s,
    };
    obj.insert("start_time".into(), json!(start_ms.unwrap_or(0)));
    obj.insert("end_time".into(), json!(end_ms.unwrap_or(0)));
    let (s, x, c) = if phase_durations {
        (
            whole_ms(snap.setup_d),
            whole_ms(snap.exec_d),
            whole_ms(snap.cleanup_d),
        )
    } else {
        (0, 0, 0)
    };
    obj.insert("setup_duration".into(), json!(s));
    obj.insert("execution_duration".into(), json!(x));
    obj.insert("cleanup_duration".into(), json!(c));
    obj.insert("queue_duration".into(), json!(whole_ms(snap.queue_d)));
    obj.insert(
        "run_duration".into(),
        json!((elapsed - whole_ms(snap.queue_d)).max(0)),
    );
    obj.insert("attempt_number".into(), json!(snap.attempt));
}

/// The fields a run and a task run share: state, timing, page URL.
fn run_fields(
    obj: &mut Map<String, Value>,
    run: &RunRec,
    snap: &Snap,
    task_key: Option<&str>,
    ctx: &RenderCtx,
    (run_id, start_v, base_v, phase_durations): (i64, Option<f64>, f64, bool),
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

/// `run_fields` of the task run `view` (its times from its own attempt), named `key`.
fn task_run_fields(
    obj: &mut Map<String, Value>,
    run: &RunRec,
    view: &TaskView,
    key: &str,
    ctx: &RenderCtx,
) {
    let base_v = view.attempt.start_v;
    let start_v = view.snap.begin.map(|b| base_v + b);
    run_fields(
        obj,
        run,
        &view.snap,
        Some(key),
        ctx,
        (view.run_id, start_v, base_v, true),
    );
}

/// A for-each task's own run (not one of its iterations).
fn is_for_each_container(run: &RunRec, view: &TaskView) -> bool {
    view.iteration.is_none() && run.job.graph.tasks[view.task].for_each.is_some()
}

/// A task run's key and settings: its task's, or for an iteration the nested task's.
fn task_settings<'a>(run: &'a RunRec, view: &TaskView) -> (&'a str, &'a Value) {
    let def = &run.job.graph.tasks[view.task];
    match (&def.for_each, view.iteration) {
        (Some(f), Some(_)) => (f.nested_key.as_str(), &f.nested),
        _ => (def.key.as_str(), &def.settings),
    }
}

/// One element of `tasks[]` (or `iterations[]`).
fn render_task(run: &RunRec, view: &TaskView, ctx: &RenderCtx) -> Value {
    let (key, settings) = task_settings(run, view);
    let mut obj = match settings {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    obj.insert("run_id".into(), json!(view.run_id));
    task_run_fields(&mut obj, run, view, key, ctx);
    if is_for_each_container(run, view) {
        let st = run.iteration_stats(view, ctx.now_v);
        let mut stats = json!({"task_run_stats": {
            "total_iterations": st.total,
            "scheduled_iterations": st.scheduled,
            "active_iterations": st.active,
            "completed_iterations": st.completed,
            "succeeded_iterations": st.succeeded,
            "failed_iterations": st.failed,
        }});
        if st.failed > 0 {
            stats["error_message_stats"] = json!([{
                "error_message": error_message(run),
                "count": st.failed,
                "termination_category": "RUN_EXECUTION_ERROR",
            }]);
        }
        if let Some(Value::Object(f)) = obj.get_mut("for_each_task") {
            f.insert("stats".into(), stats);
        }
    }
    Value::Object(obj)
}

fn error_message(run: &RunRec) -> String {
    run.job
        .error_message
        .clone()
        .unwrap_or_else(|| "Workload failed: emulated error".into())
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
    // Seeded history stands for a job's scheduled runs.
    let trigger = if run.seeded { "PERIODIC" } else { "ONE_TIME" };
    obj.insert("trigger".into(), json!(trigger));
    obj.insert("format".into(), json!("MULTI_TASK"));
    // A failed run's message names the first task that failed.
    let graph = &run.job.graph;
    let failed_task = match snap.outcome {
        Some(Outcome::Failed) => run
            .latest_results(ctx.now_v)
            .iter()
            .position(|o| o.is_some_and(|o| !o.is_ok() && o.executed()))
            .or((!graph.tasks.is_empty()).then_some(0)),
        _ => None,
    };
    let first_task = failed_task.map(|i| graph.tasks[i].key.as_str());
    // Phase durations are per task; only a one-task run's original attempt shows them.
    let single = run.task_count() == 1 && run.earlier.is_empty();
    run_fields(
        &mut obj,
        run,
        &snap,
        first_task,
        ctx,
        (run.run_id, Some(run.created_v), run.current.start_v, single),
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
        obj.insert("repair_history".into(), repair_history(run, ctx));
    }
    if (!run.job.parameters.is_empty() || run.job_params.is_some()) && page == 0 {
        obj.insert(
            "job_parameters".into(),
            Value::Array(effective_job_params(run)),
        );
    }
    if let Some(o) = &run.overriding {
        obj.insert("overriding_parameters".into(), (**o).clone());
    }
    Value::Object(obj)
}

/// `repair_history`: the original attempt, then each repair (with its `id`), the current last.
fn repair_history(run: &RunRec, ctx: &RenderCtx) -> Value {
    let items = run.attempts().map(|a| {
        let snap = run.attempt_snapshot(a, ctx.now_v);
        let mut e = Map::new();
        e.insert(
            "type".into(),
            json!(if a.repair.is_some() {
                "REPAIR"
            } else {
                "ORIGINAL"
            }),
        );
        if let Some(r) = &a.repair {
            e.insert("id".into(), json!(r.id));
        }
        let (state, status) = state_blocks(&snap, None);
        e.insert("state".into(), state);
        e.insert("status".into(), status);
        e.insert("start_time".into(), json!(ctx.clock.epoch_ms(a.start_v)));
        e.insert(
            "end_time".into(),
            json!(snap
                .end_e
                .map_or(0, |end| ctx.clock.epoch_ms(a.start_v + end))),
        );
        let ids: Vec<i64> = run
            .attempt_views(a, ctx.now_v)
            .iter()
            .map(|v| v.run_id)
            .collect();
        e.insert("task_run_ids".into(), json!(ids));
        Value::Object(e)
    });
    Value::Array(items.collect())
}

/// runs/get for `run`, or for its task run or iteration `task`; `None` when there is no such
/// task run. `page` pages the tasks (or a for-each task run's iterations).
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
            page,
        )),
    }
}

/// A task run as runs/get returns it for a task's `run_id`; a for-each task run lists its
/// iterations (`iterations`, 100 a page).
pub(crate) fn render_task_run(
    run: &RunRec,
    view: &TaskView,
    ctx: &RenderCtx,
    page: usize,
) -> Value {
    let (key, _) = task_settings(run, view);
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
    task_run_fields(&mut obj, run, view, key, ctx);
    obj.insert("tasks".into(), json!([render_task(run, view, ctx)]));
    let mut next = None;
    if is_for_each_container(run, view) {
        let iterations = run.iteration_views(view, ctx.now_v);
        let (slice, n) = page_of(&iterations, page);
        next = n;
        let items: Vec<Value> = slice.iter().map(|v| render_task(run, v, ctx)).collect();
        obj.insert("iterations".into(), Value::Array(items));
    }
    obj.insert("has_more".into(), json!(next.is_some()));
    if let Some(n) = next {
        obj.insert("next_page_token".into(), json!(page_token(n)));
    }
    if let Some(o) = &run.overriding {
        obj.insert("overriding_parameters".into(), (**o).clone());
    }
    Value::Object(obj)
}

/// runs/get-output for the task run `view` of `run` (`metadata`: the run as runs/get renders
/// it). A for-each task run has no output of its own; its iterations do.
pub(crate) fn render_output(
    run: &RunRec,
    view: &TaskView,
    metadata: Value,
    ctx: &RenderCtx,
) -> Value {
    let snap = &view.snap;
    let def = &run.job.graph.tasks[view.task];
    let container = is_for_each_container(run, view);
    let (key, _) = task_settings(run, view);
    let mut out = Map::new();
    match snap.outcome {
        _ if container => {}
        Some(Outcome::Success) | Some(Outcome::SuccessWithFailures) => {
            let text = def
                .output
                .clone()
                .or_else(|| run.job.output.clone())
                .unwrap_or_else(|| {
                    let mut echo = json!({
                        "job_id": run.job_id(),
                        "run_id": run.run_id,
                        "task_key": key,
                        "job_parameters": run.job_params.as_deref(),
                        "overriding_parameters": run.overriding.as_deref(),
                    });
                    if let (Some(f), Some(j)) = (&def.for_each, view.iteration) {
                        echo["input"] = f.inputs[j].clone();
                    }
                    echo.to_string()
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
            let msg = error_message(run);
            out.insert(
                "error_trace".into(),
                json!(format!(
                    "Traceback (most recent call last):\n  File \"{key}\", line 1\n{msg}"
                )),
            );
            out.insert("error".into(), json!(msg));
        }
        _ => {}
    }
    out.insert("metadata".into(), metadata);
    Value::Object(out)
}
