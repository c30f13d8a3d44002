//! A job's tasks as a graph: each task's definition (type, dependencies, `run_if`, duration,
//! outcomes, for-each), checked (known dependencies, no cycles), in an order that runs every
//! task after its dependencies, and each task's `jobs/get` settings.
use serde_json::{json, Map, Value};

use crate::config::{ForEachSpec, JobSpec, TaskSpec};
use crate::lifecycle::Outcome;

/// The task types a job spec may name.
pub const TASK_TYPES: &[&str] = &[
    "notebook",
    "python_wheel",
    "python_script",
    "python",
    "spark_python",
    "spark_jar",
    "jar",
    "spark_submit",
    "sql",
    "dbt",
    "run_job",
    "pipeline",
    "condition",
];

/// More iterations than this in one for-each task is refused (the ids of a run are one block).
const MAX_ITERATIONS: usize = 5000;

/// The settings block of a task of `task_type` (one of [`TASK_TYPES`]) and its field name.
fn type_settings(task_type: &str, job_id: i64, key: &str) -> (&'static str, Value) {
    match task_type {
        "notebook" => (
            "notebook_task",
            json!({"notebook_path": format!("/Workspace/jobs/{key}"), "source": "WORKSPACE"}),
        ),
        "python_wheel" => (
            "python_wheel_task",
            json!({"package_name": "emulated_pkg", "entry_point": key}),
        ),
        "python_script" | "python" | "spark_python" => (
            "spark_python_task",
            json!({"python_file": format!("/Workspace/jobs/{key}.py")}),
        ),
        "spark_jar" | "jar" => (
            "spark_jar_task",
            json!({"main_class_name": "com.example.Main"}),
        ),
        "spark_submit" => ("spark_submit_task", json!({"parameters": []})),
        "sql" => (
            "sql_task",
            json!({"warehouse_id": "emulated-warehouse", "file": {"path": format!("/Workspace/jobs/{key}.sql")}}),
        ),
        "dbt" => ("dbt_task", json!({"commands": ["dbt deps", "dbt run"]})),
        "run_job" => ("run_job_task", json!({"job_id": job_id})),
        "pipeline" => ("pipeline_task", json!({"pipeline_id": "emulated-pipeline"})),
        _ => (
            "condition_task",
            json!({"op": "EQUAL_TO", "left": "1", "right": "1"}),
        ),
    }
}

/// A task's `run_if`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunIf {
    AllSuccess,
    AllDone,
    NoneFailed,
    AtLeastOneSuccess,
    AllFailed,
    AtLeastOneFailed,
}

impl RunIf {
    fn parse(s: &str) -> Option<RunIf> {
        Some(match s.to_ascii_uppercase().as_str() {
            "ALL_SUCCESS" => RunIf::AllSuccess,
            "ALL_DONE" => RunIf::AllDone,
            "NONE_FAILED" => RunIf::NoneFailed,
            "AT_LEAST_ONE_SUCCESS" => RunIf::AtLeastOneSuccess,
            "ALL_FAILED" => RunIf::AllFailed,
            "AT_LEAST_ONE_FAILED" => RunIf::AtLeastOneFailed,
            _ => return None,
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            RunIf::AllSuccess => "ALL_SUCCESS",
            RunIf::AllDone => "ALL_DONE",
            RunIf::NoneFailed => "NONE_FAILED",
            RunIf::AtLeastOneSuccess => "AT_LEAST_ONE_SUCCESS",
            RunIf::AllFailed => "ALL_FAILED",
            RunIf::AtLeastOneFailed => "AT_LEAST_ONE_FAILED",
        }
    }

    /// Given how a task's dependencies ended, `None` when the task runs, else how it is
    /// skipped. As documented: an unmet success condition is UPSTREAM_FAILED (UPSTREAM_CANCELED
    /// when the failures were cancels), an unmet failure condition is EXCLUDED, and a task
    /// whose dependencies were all excluded is excluded too.
    pub fn skip(self, deps: &[Outcome]) -> Option<Outcome> {
        if deps.is_empty() {
            return None;
        }
        if deps.iter().all(|o| *o == Outcome::Excluded) {
            return Some(Outcome::Excluded);
        }
        let failed = deps.iter().filter(|o| !o.is_ok()).count();
        let succeeded = deps.iter().filter(|o| o.is_ok() && o.executed()).count();
        let holds = match self {
            RunIf::AllSuccess => failed == 0,
            RunIf::AllDone => true,
            RunIf::NoneFailed => failed == 0 && deps.iter().any(|o| o.executed()),
            RunIf::AtLeastOneSuccess => succeeded > 0,
            RunIf::AllFailed => failed == deps.len(),
            RunIf::AtLeastOneFailed => failed > 0,
        };
        if holds {
            return None;
        }
        Some(match self {
            RunIf::AllFailed | RunIf::AtLeastOneFailed => Outcome::Excluded,
            _ if deps.iter().all(|o| o.is_ok() || o.is_cancel()) => Outcome::UpstreamCanceled,
            _ => Outcome::UpstreamFailed,
        })
    }
}

/// A for-each task's iterations.
pub(crate) struct ForEachDef {
    pub inputs: Vec<Value>,
    pub concurrency: usize,
    /// Virtual ms in RUNNING per iteration (`None`: the task's duration).
    pub iteration_ms: Option<f64>,
    pub fail: Vec<usize>,
    /// The nested task's key and settings (`for_each_task.task`).
    pub nested_key: String,
    pub nested: Value,
}

pub(crate) struct TaskDef {
    pub key: String,
    /// The type of the task, or of the nested task of a for-each task.
    pub task_type: String,
    pub deps: Vec<usize>,
    pub run_if: RunIf,
    /// Virtual ms in RUNNING (`None`: the job's).
    pub duration: Option<f64>,
    pub outcome: Option<Outcome>,
    pub repair_outcome: Option<Outcome>,
    pub output: Option<String>,
    pub for_each: Option<ForEachDef>,
    /// Where its iterations' run ids start, after the run's and its tasks' ids.
    pub iteration_base: usize,
    /// jobs/get `settings.tasks[]` shape.
    pub settings: Value,
}

impl TaskDef {
    pub fn iterations(&self) -> usize {
        self.for_each.as_ref().map_or(0, |f| f.inputs.len())
    }
}

pub(crate) struct Graph {
    pub tasks: Vec<TaskDef>,
    /// Every task after its dependencies (Kahn's order, ties by position in the spec).
    pub order: Vec<usize>,
    /// Tasks no other task depends on: they decide a run's result.
    pub leaves: Vec<bool>,
    /// Run ids a run takes: its own, one per task, one per for-each iteration.
    pub span: i64,
}

fn parse_outcome(s: &Option<String>) -> Result<Option<Outcome>, String> {
    match s {
        None => Ok(None),
        Some(s) => Outcome::parse(s)
            .map(Some)
            .ok_or_else(|| format!("unknown outcome {s:?}")),
    }
}

impl Graph {
    /// The job's tasks: its `tasks`, or `taskCount` tasks of `taskType`. Errors name the task.
    pub fn build(spec: &JobSpec) -> Result<Graph, String> {
        let default_type = spec.task_type.clone().unwrap_or_else(|| "notebook".into());
        let generated: Vec<TaskSpec>;
        let specs: &[TaskSpec] = if spec.tasks.is_empty() {
            let n = spec.task_count.unwrap_or(1).max(1);
            generated = (0..n)
                .map(|i| TaskSpec {
                    task_key: if n == 1 {
                        "main".into()
                    } else {
                        format!("task_{:03}", i + 1)
                    },
                    ..Default::default()
                })
                .collect();
            &generated
        } else {
            &spec.tasks
        };
        let keys: Vec<&str> = specs.iter().map(|t| t.task_key.as_str()).collect();
        let mut tasks = Vec::with_capacity(specs.len());
        let mut iterations = 0;
        for (i, t) in specs.iter().enumerate() {
            let key = &t.task_key;
            if key.is_empty() {
                return Err("every task needs a taskKey".into());
            }
            if keys[..i].contains(&key.as_str()) {
                return Err(format!("task key {key:?} is used twice"));
            }
            let task_err = |m: String| format!("task {key:?} {m}");
            let task_type = t.task_type.clone().unwrap_or_else(|| default_type.clone());
            if !TASK_TYPES.contains(&task_type.as_str()) {
                return Err(task_err(format!(
                    "has an unknown taskType {task_type:?} (use one of: {})",
                    TASK_TYPES.join(", ")
                )));
            }
            let mut deps = Vec::with_capacity(t.depends_on.len());
            for d in &t.depends_on {
                let j = keys.iter().position(|k| k == d).ok_or_else(|| {
                    task_err(format!("depends on {d:?}, which is not a task of this job"))
                })?;
                if deps.contains(&j) {
                    return Err(task_err(format!("depends on {d:?} twice")));
                }
                deps.push(j);
            }
            let run_if = match &t.run_if {
                None => RunIf::AllSuccess,
                Some(r) => RunIf::parse(r).ok_or_else(|| {
                    task_err(format!(
                        "has an unknown runIf {r:?} (use ALL_SUCCESS, ALL_DONE, NONE_FAILED, \
                         AT_LEAST_ONE_SUCCESS, ALL_FAILED or AT_LEAST_ONE_FAILED)"
                    ))
                })?,
            };
            let for_each = t
                .for_each
                .as_ref()
                .map(|f| for_each(f, key, &task_type, spec.id, t.duration_ms))
                .transpose()
                .map_err(task_err)?;
            let iteration_base = iterations;
            iterations += for_each.as_ref().map_or(0, |f| f.inputs.len());
            tasks.push(TaskDef {
                key: key.clone(),
                task_type,
                deps,
                run_if,
                duration: t.duration_ms.map(|d| d as f64),
                outcome: parse_outcome(&t.outcome).map_err(task_err)?,
                repair_outcome: parse_outcome(&t.repair_outcome).map_err(task_err)?,
                output: t.output.clone(),
                for_each,
                iteration_base,
                settings: Value::Null,
            });
        }
        let order = topological(&tasks)?;
        let mut leaves = vec![true; tasks.len()];
        for t in &tasks {
            for &d in &t.deps {
                leaves[d] = false;
            }
        }
        let settings: Vec<Value> = tasks.iter().map(|t| settings(t, &tasks, spec.id)).collect();
        for (t, s) in tasks.iter_mut().zip(settings) {
            t.settings = s;
        }
        Ok(Graph {
            span: 1 + tasks.len() as i64 + iterations as i64,
            tasks,
            order,
            leaves,
        })
    }

    /// `chosen` and every task depending on one of them, directly or not.
    pub fn with_dependents(&self, chosen: &[usize]) -> Vec<usize> {
        let mut marked = vec![false; self.tasks.len()];
        for &c in chosen {
            marked[c] = true;
        }
        // In graph order a task comes after all its dependencies, so one pass marks them.
        for &i in &self.order {
            if !marked[i] && self.tasks[i].deps.iter().any(|&d| marked[d]) {
                marked[i] = true;
            }
        }
        self.in_order(&marked)
    }

    /// The marked tasks, in graph order.
    pub fn in_order(&self, marked: &[bool]) -> Vec<usize> {
        self.order.iter().copied().filter(|&i| marked[i]).collect()
    }

    pub fn position(&self, key: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.key == key)
    }
}

fn for_each(
    f: &ForEachSpec,
    key: &str,
    task_type: &str,
    job_id: i64,
    duration_ms: Option<u64>,
) -> Result<ForEachDef, String> {
    let inputs: Vec<Value> = match (&f.inputs, f.count) {
        (Some(inputs), None) => inputs.clone(),
        (None, Some(n)) => (0..n).map(Value::from).collect(),
        (Some(_), Some(_)) => return Err("forEach takes inputs or count, not both".into()),
        (None, None) => return Err("forEach needs inputs or count".into()),
    };
    if inputs.len() > MAX_ITERATIONS {
        return Err(format!(
            "forEach has {} inputs; at most {MAX_ITERATIONS}",
            inputs.len()
        ));
    }
    let concurrency = f.concurrency.unwrap_or(1);
    if !(1..=100).contains(&concurrency) {
        return Err(format!(
            "forEach concurrency must be 1 to 100, got {concurrency}"
        ));
    }
    if let Some(bad) = f.fail_iterations.iter().find(|&&i| i >= inputs.len()) {
        return Err(format!(
            "forEach failIterations names iteration {bad}, but there are {} inputs",
            inputs.len()
        ));
    }
    let nested_key = format!("{key}_iteration");
    let (field, body) = type_settings(task_type, job_id, &nested_key);
    Ok(ForEachDef {
        concurrency: concurrency as usize,
        iteration_ms: f.iteration_duration_ms.or(duration_ms).map(|d| d as f64),
        fail: f.fail_iterations.clone(),
        nested: json!({"task_key": nested_key, field: body}),
        nested_key,
        inputs,
    })
}

/// Kahn's algorithm, taking the first ready task by position so that a graph without
/// dependencies keeps the spec's order. A cycle is named by the tasks on it.
fn topological(tasks: &[TaskDef]) -> Result<Vec<usize>, String> {
    let mut missing: Vec<usize> = tasks.iter().map(|t| t.deps.len()).collect();
    let mut done = vec![false; tasks.len()];
    let mut order = Vec::with_capacity(tasks.len());
    while order.len() < tasks.len() {
        let Some(next) = (0..tasks.len()).find(|&i| !done[i] && missing[i] == 0) else {
            return Err(cycle(tasks, &done));
        };
        done[next] = true;
        order.push(next);
        for (i, t) in tasks.iter().enumerate() {
            if t.deps.contains(&next) {
                missing[i] -= 1;
            }
        }
    }
    Ok(order)
}

/// A cycle among the tasks not yet ordered: follow dependencies until one repeats.
fn cycle(tasks: &[TaskDef], done: &[bool]) -> String {
    let start = (0..tasks.len()).find(|&i| !done[i]).unwrap_or(0);
    let mut path = vec![start];
    let mut at = start;
    // Every task left has a dependency left, so the walk meets a task twice.
    while let Some(&next) = tasks[at].deps.iter().find(|&&d| !done[d]) {
        if let Some(p) = path.iter().position(|&x| x == next) {
            let names: Vec<&str> = path[p..]
                .iter()
                .chain(std::iter::once(&next))
                .map(|&i| tasks[i].key.as_str())
                .collect();
            return format!(
                "tasks depend on each other in a cycle: {}",
                names.join(" -> ")
            );
        }
        path.push(next);
        at = next;
    }
    "tasks depend on each other in a cycle".into()
}

/// A task's jobs/get settings: key, dependencies, `run_if`, its type's block (or
/// `for_each_task` with the nested task), timeout and notifications.
fn settings(t: &TaskDef, tasks: &[TaskDef], job_id: i64) -> Value {
    let mut s = Map::new();
    s.insert("task_key".into(), json!(t.key));
    if !t.deps.is_empty() {
        let deps: Vec<Value> = t
            .deps
            .iter()
            .map(|&d| json!({"task_key": tasks[d].key}))
            .collect();
        s.insert("depends_on".into(), Value::Array(deps));
        s.insert("run_if".into(), json!(t.run_if.as_str()));
    }
    match &t.for_each {
        Some(f) => {
            s.insert(
                "for_each_task".into(),
                json!({
                    "inputs": Value::Array(f.inputs.clone()).to_string(),
                    "concurrency": f.concurrency,
                    "task": f.nested,
                }),
            );
        }
        None => {
            let (field, body) = type_settings(&t.task_type, job_id, &t.key);
            s.insert(field.into(), body);
        }
    }
    s.insert("timeout_seconds".into(), json!(0));
    s.insert("email_notifications".into(), json!({}));
    Value::Object(s)
}
