//! The emulated workspace's data: jobs (from their specs) and runs, by id.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::config::{JobParameter, JobSpec};
use crate::lifecycle::{Forced, Outcome, Snap};
use appkit_jobs_core::{JobsError, Result};

/// Task-type settings block and the output field it produces.
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

/// The settings block of a task of `task_type` (one of [`TASK_TYPES`]) and its field name.
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
        _ => (
            "condition_task".into(),
            json!({"op": "EQUAL_TO", "left": "1", "right": "1"}),
        ),
    }
}

pub(crate) struct TaskDef {
    pub key: String,
    pub task_type: String,
    pub outcome: Option<Outcome>,
    pub output: Option<String>,
    pub settings: Value,
}

#[derive(Clone, Copy)]
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
    /// How tasks run again by a repair end.
    pub repair_outcome: Outcome,
    pub parameters: Vec<JobParameter>,
    pub output: Option<String>,
    pub error_message: Option<String>,
    pub created_time: i64,
}

impl Job {
    pub fn from_spec(spec: &JobSpec, created_time: i64) -> Result<Job> {
        let name = spec
            .name
            .as_deref()
            .map(|n| format!(" ({n:?})"))
            .unwrap_or_default();
        let bad = |m: String| JobsError::InvalidRequest(format!("job {}{name}: {m}", spec.id));
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
        let repair_outcome = parse_outcome(&spec.repair_outcome)?.unwrap_or(Outcome::Success);
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
        if let Some((key, unknown, _, _)) = tasks
            .iter()
            .find(|(_, t, _, _)| !TASK_TYPES.contains(&t.as_str()))
        {
            return Err(bad(format!(
                "task {key:?} has an unknown taskType {unknown:?} (use one of: {})",
                TASK_TYPES.join(", ")
            )));
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
            repair_outcome,
            parameters: spec.parameters.clone(),
            output: spec.output.clone(),
            error_message: spec.error_message.clone(),
            created_time,
        })
    }
}

pub(crate) struct RunRec {
    pub run_id: i64,
    pub number: i64,
    pub job: Arc<Job>,
    /// Virtual time the run was triggered.
    pub created_v: f64,
    pub creator: Arc<str>,
    pub overriding: Option<Box<Value>>,
    // Boxed: most runs have none, and a box is one pointer in every run.
    #[allow(clippy::box_collection)]
    pub job_params: Option<Box<HashMap<String, String>>>,
    /// Virtual time the current attempt began: `created_v`, or the latest repair's.
    pub attempt_v: f64,
    /// The current attempt, when it is a repair (`None`: the original run).
    pub repair: Option<Box<RepairRec>>,
    /// Earlier attempts (the original, then earlier repairs), as they ended.
    pub history: Vec<Attempt>,
    /// Virtual time of a cancel request that reached the current attempt while active.
    pub cancel_v: Option<f64>,
    /// A state forced on the current attempt (`set_run_state`).
    pub forced: Option<(Forced, f64)>,
}

/// A repair of a run: which tasks it runs again, as which task runs, and how the tasks and
/// the run end.
pub(crate) struct RepairRec {
    pub id: i64,
    pub tasks: Vec<usize>,
    pub task_run_ids: Vec<i64>,
    pub task_outcome: Outcome,
    pub outcome: Outcome,
}

/// An attempt of a run (the original or a repair) frozen as it ended.
pub(crate) struct Attempt {
    pub repair_id: Option<i64>,
    pub start_v: f64,
    pub snap: Snap,
    /// `(task index, task run id, task state)` of each task the attempt ran.
    pub tasks: Vec<(usize, i64, Snap)>,
}

/// Repair ids start above 2^32 too, like run ids, to catch narrow ids.
const FIRST_REPAIR_ID: i64 = 700_000_000_001;

pub(crate) struct Store {
    pub jobs: HashMap<i64, Arc<Job>>,
    pub runs: BTreeMap<i64, RunRec>,
    /// Task runs of repairs (their ids come after later runs'): task run id -> parent run id.
    pub repair_task_runs: HashMap<i64, i64>,
    pub next_repair_id: i64,
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
            repair_task_runs: HashMap::new(),
            next_repair_id: FIRST_REPAIR_ID,
            runs_by_job: HashMap::new(),
            numbers: HashMap::new(),
            idempotency: HashMap::new(),
            next_run_id: first_run_id,
            first_run_id,
        }
    }

    pub fn clear_runs(&mut self) {
        self.runs.clear();
        self.repair_task_runs.clear();
        self.next_repair_id = FIRST_REPAIR_ID;
        self.runs_by_job.clear();
        self.numbers.clear();
        self.idempotency.clear();
        self.next_run_id = self.first_run_id;
    }

    /// The parent run owning `id`, and the task run id when `id` is one of its task runs.
    pub fn find(&self, id: i64) -> Option<(&RunRec, Option<i64>)> {
        let parent = self.parent_of(id)?;
        let run = self.runs.get(&parent)?;
        Some((run, (id != parent).then_some(id)))
    }

    pub fn find_mut(&mut self, id: i64) -> Option<&mut RunRec> {
        let parent = self.parent_of(id)?;
        self.runs.get_mut(&parent)
    }

    fn parent_of(&self, id: i64) -> Option<i64> {
        if let Some(parent) = self.repair_task_runs.get(&id) {
            return Some(*parent);
        }
        let (_, run) = self.runs.range(..=id).next_back()?;
        run.owns(id).then_some(run.run_id)
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
                attempt_v: created_v,
                repair: None,
                history: Vec::new(),
                cancel_v: None,
                forced: None,
            },
        );
        (run_id, number)
    }
}
