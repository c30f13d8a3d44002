//! The emulated workspace's data: jobs (from their specs) and runs, by id and by start time.
//! A run is a list of attempts (the original, then repairs), each with its schedule; its task
//! runs (and for-each iterations) are read off those.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::config::{HistorySeed, JobParameter, JobSpec, PastRun};
use crate::graph::Graph;
use crate::lifecycle::{Forced, Outcome, Snap};
use crate::schedule::{Interventions, IterationStats, Plan, Schedule, TaskEnd};
use appkit_jobs_core::{JobsError, Result};

pub(crate) struct Job {
    pub id: i64,
    pub name: String,
    pub graph: Graph,
    pub plan: Plan,
    /// The spec's `outcome`: every run ends so (tasks without their own outcome too).
    pub outcome: Option<Outcome>,
    /// How tasks run again by a repair end, unless the task says.
    pub repair_outcome: Outcome,
    pub parameters: Vec<JobParameter>,
    pub output: Option<String>,
    pub error_message: Option<String>,
    pub created_time: i64,
    /// The schedule of every run started now (shared: it depends only on the job).
    pub fresh: Arc<Schedule>,
    /// Past runs the spec seeds, again after each reset.
    pub history: Vec<PastRun>,
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
        let outcome = parse_outcome(&spec.outcome)?;
        let repair_outcome = parse_outcome(&spec.repair_outcome)?.unwrap_or(Outcome::Success);
        let graph = Graph::build(spec).map_err(bad)?;
        let plan = Plan {
            queue: spec.queue_ms.unwrap_or(100) as f64,
            pending: spec.pending_ms.unwrap_or(300) as f64,
            running: spec.duration_ms.unwrap_or(2000) as f64,
            terminating: spec.terminating_ms.unwrap_or(200) as f64,
            retries: spec.retries.unwrap_or(0),
            retry_wait: spec.retry_wait_ms.unwrap_or(500) as f64,
        };
        let history = spec
            .history
            .as_ref()
            .map(HistorySeed::runs)
            .unwrap_or_default();
        let fresh = Schedule::whole_run(&graph, plan, 1.0, fresh_ends(&graph, outcome), outcome);
        let job = Job {
            id: spec.id,
            name: spec
                .name
                .clone()
                .unwrap_or_else(|| format!("job-{}", spec.id)),
            graph,
            plan,
            outcome,
            repair_outcome,
            parameters: spec.parameters.clone(),
            output: spec.output.clone(),
            error_message: spec.error_message.clone(),
            created_time,
            fresh: Arc::new(fresh),
            history,
        };
        Ok(job)
    }

    pub fn task_count(&self) -> usize {
        self.graph.tasks.len()
    }

    /// How long a canceled run takes to stop.
    pub fn cancel_grace(&self) -> f64 {
        if self.plan.terminating > 0.0 {
            self.plan.terminating
        } else {
            200.0
        }
    }
}

/// How each task of a fresh run ends: its own outcome, else the job's (a job ending
/// SUCCESS_WITH_FAILURES has tasks that succeeded), else SUCCESS.
pub(crate) fn fresh_ends(graph: &Graph, outcome: Option<Outcome>) -> Vec<TaskEnd> {
    let inherited = match outcome {
        Some(Outcome::SuccessWithFailures) | Some(Outcome::Skipped) | None => Outcome::Success,
        Some(o) => o,
    };
    graph
        .tasks
        .iter()
        .map(|t| {
            let fail = t
                .for_each
                .as_ref()
                .map(|f| f.fail.clone())
                .unwrap_or_default();
            (t.outcome.unwrap_or(inherited), fail)
        })
        .collect()
}

/// A repair: its id and the first run id of each of its task runs (iterations follow).
pub(crate) struct RepairInfo {
    pub id: i64,
    pub first_ids: Vec<i64>,
}

/// One attempt of a run: the original or a repair.
pub(crate) struct Attempt {
    /// Virtual time it began.
    pub start_v: f64,
    pub schedule: Arc<Schedule>,
    pub repair: Option<Box<RepairInfo>>,
    /// Virtual time of a cancel request that reached it while active.
    pub cancel_v: Option<f64>,
    /// A state forced on it (`set_run_state`), and when.
    pub forced: Option<(Forced, f64)>,
}

impl Attempt {
    pub fn new(start_v: f64, schedule: Arc<Schedule>) -> Attempt {
        Attempt {
            start_v,
            schedule,
            repair: None,
            cancel_v: None,
            forced: None,
        }
    }

    pub fn interventions(&self, grace: f64) -> Interventions {
        Interventions {
            cancel: self.cancel_v.map(|c| c - self.start_v),
            forced: self.forced.map(|(f, at)| (f, at - self.start_v)),
            grace,
        }
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
    /// Seeded history (not started by run-now).
    pub seeded: bool,
    /// The current attempt: the original run, or its latest repair.
    pub current: Attempt,
    /// Earlier attempts, oldest first (empty until a repair).
    pub earlier: Vec<Attempt>,
}

/// A task run (or for-each iteration) of a run, where it stands at an instant.
pub(crate) struct TaskView<'a> {
    pub attempt: &'a Attempt,
    /// Its line in the attempt's schedule.
    pub line: usize,
    pub task: usize,
    pub iteration: Option<usize>,
    pub run_id: i64,
    pub snap: Snap,
}

impl RunRec {
    fn new(
        run_id: i64,
        number: i64,
        job: Arc<Job>,
        created_v: f64,
        creator: Arc<str>,
        schedule: Arc<Schedule>,
    ) -> RunRec {
        RunRec {
            run_id,
            number,
            job,
            created_v,
            creator,
            overriding: None,
            job_params: None,
            seeded: false,
            current: Attempt::new(created_v, schedule),
            earlier: Vec::new(),
        }
    }

    pub fn job_id(&self) -> i64 {
        self.job.id
    }
    pub fn task_count(&self) -> usize {
        self.job.task_count()
    }
    /// Whether `id` is this run or one of its original task runs or iterations.
    pub fn owns(&self, id: i64) -> bool {
        id >= self.run_id && id < self.run_id + self.job.graph.span
    }

    /// Every attempt, oldest first.
    pub fn attempts(&self) -> impl Iterator<Item = &Attempt> {
        self.earlier.iter().chain(std::iter::once(&self.current))
    }

    fn at(&self, a: &Attempt, now_v: f64) -> (f64, Interventions) {
        (now_v - a.start_v, a.interventions(self.job.cancel_grace()))
    }

    /// Where attempt `a` stands at `now_v`.
    pub fn attempt_snapshot(&self, a: &Attempt, now_v: f64) -> Snap {
        let (e, iv) = self.at(a, now_v);
        a.schedule.run_at(e, &iv)
    }

    /// The current attempt's state at `now_v` (virtual ms).
    pub fn snapshot(&self, now_v: f64) -> Snap {
        self.attempt_snapshot(&self.current, now_v)
    }

    pub fn is_active(&self, now_v: f64) -> bool {
        !self.snapshot(now_v).life.is_terminal()
    }

    /// The run id of line `k` of attempt `a`.
    fn line_run_id(&self, a: &Attempt, k: usize) -> i64 {
        match &a.repair {
            Some(r) => r.first_ids[k],
            None => self.run_id + 1 + a.schedule.lines[k].task as i64,
        }
    }

    /// The run id of iteration `j` of line `k` of attempt `a`.
    fn iteration_run_id(&self, a: &Attempt, k: usize, j: usize) -> i64 {
        match &a.repair {
            Some(r) => r.first_ids[k] + 1 + j as i64,
            None => {
                let def = &self.job.graph.tasks[a.schedule.lines[k].task];
                self.run_id + 1 + self.task_count() as i64 + (def.iteration_base + j) as i64
            }
        }
    }

    fn view<'a>(
        &self,
        a: &'a Attempt,
        k: usize,
        iteration: Option<usize>,
        now_v: f64,
    ) -> TaskView<'a> {
        let (e, iv) = self.at(a, now_v);
        let task = a.schedule.lines[k].task;
        let (run_id, snap) = match iteration {
            None => {
                let mut snap = a.schedule.line_at(k, e, &iv);
                // A task run again by a repair counts on from its earlier runs.
                snap.attempt += self
                    .attempts()
                    .take_while(|x| !std::ptr::eq(*x, a))
                    .filter(|x| x.schedule.line_of(task).is_some())
                    .count() as u32;
                (self.line_run_id(a, k), snap)
            }
            Some(j) => (
                self.iteration_run_id(a, k, j),
                a.schedule.iteration_at(k, j, e, &iv),
            ),
        };
        TaskView {
            attempt: a,
            line: k,
            task,
            iteration,
            run_id,
            snap,
        }
    }

    /// The task runs of attempt `a`, in its order.
    pub fn attempt_views<'a>(&self, a: &'a Attempt, now_v: f64) -> Vec<TaskView<'a>> {
        (0..a.schedule.lines.len())
            .map(|k| self.view(a, k, None, now_v))
            .collect()
    }

    /// Every task run, one per task and attempt, the earliest attempt first.
    pub fn task_views(&self, now_v: f64) -> Vec<TaskView<'_>> {
        self.attempts()
            .flat_map(|a| self.attempt_views(a, now_v))
            .collect()
    }

    /// The iterations of the for-each task run `view`.
    pub fn iteration_views<'a>(&self, view: &TaskView<'a>, now_v: f64) -> Vec<TaskView<'a>> {
        let n = view.attempt.schedule.lines[view.line].iterations.len();
        (0..n)
            .map(|j| self.view(view.attempt, view.line, Some(j), now_v))
            .collect()
    }

    /// The iterations of the for-each task run `view`, counted.
    pub fn iteration_stats(&self, view: &TaskView, now_v: f64) -> IterationStats {
        let (e, iv) = self.at(view.attempt, now_v);
        view.attempt.schedule.iteration_stats(view.line, e, &iv)
    }

    /// The task run or iteration `id`, or for the run's own id the latest run of its first task.
    pub fn task_view(&self, id: Option<i64>, now_v: f64) -> Option<TaskView<'_>> {
        let Some(id) = id else {
            let a = self
                .attempts()
                .filter(|a| a.schedule.line_of(0).is_some())
                .last()?;
            return Some(self.view(a, a.schedule.line_of(0)?, None, now_v));
        };
        for a in self.attempts() {
            for k in 0..a.schedule.lines.len() {
                let first = self.line_run_id(a, k);
                if first == id {
                    return Some(self.view(a, k, None, now_v));
                }
                let n = a.schedule.lines[k].iterations.len();
                if n > 0 {
                    let base = self.iteration_run_id(a, k, 0);
                    if (base..base + n as i64).contains(&id) {
                        return Some(self.view(a, k, Some((id - base) as usize), now_v));
                    }
                }
            }
        }
        None
    }

    /// The result of each task's latest task run (`None` while it has not ended), by task.
    pub fn latest_results(&self, now_v: f64) -> Vec<Option<Outcome>> {
        let mut out = vec![None; self.task_count()];
        for v in self.task_views(now_v) {
            out[v.task] = v.snap.outcome;
        }
        out
    }

    /// The id the next repair must name as `latest_repair_id`.
    pub fn latest_repair_id(&self) -> Option<i64> {
        self.current.repair.as_ref().map(|r| r.id)
    }
}

/// Repair ids start above 2^32 too, like run ids, to catch narrow ids.
const FIRST_REPAIR_ID: i64 = 700_000_000_001;

/// Runs in start order: (start instant in whole virtual ms, run id).
type Order = BTreeSet<(i64, i64)>;

pub(crate) struct Store {
    pub jobs: HashMap<i64, Arc<Job>>,
    pub runs: BTreeMap<i64, RunRec>,
    /// Task runs of repairs (their ids come after later runs'): task run id -> parent run id.
    pub repair_task_runs: HashMap<i64, i64>,
    pub next_repair_id: i64,
    /// Every run, oldest first (runs/list reads it backwards).
    pub order: Order,
    pub by_job: HashMap<i64, Order>,
    pub numbers: HashMap<i64, i64>,
    pub idempotency: HashMap<String, i64>,
    pub next_run_id: i64,
    pub first_run_id: i64,
    /// Seeded past runs take ids below the first run id, downwards: older runs, smaller ids.
    pub next_past_id: i64,
    pub seeded: usize,
}

impl Store {
    pub fn new(first_run_id: i64) -> Store {
        Store {
            jobs: HashMap::new(),
            runs: BTreeMap::new(),
            repair_task_runs: HashMap::new(),
            next_repair_id: FIRST_REPAIR_ID,
            order: Order::new(),
            by_job: HashMap::new(),
            numbers: HashMap::new(),
            idempotency: HashMap::new(),
            next_run_id: first_run_id,
            first_run_id,
            next_past_id: first_run_id,
            seeded: 0,
        }
    }

    pub fn clear_runs(&mut self) {
        let jobs = std::mem::take(&mut self.jobs);
        *self = Store::new(self.first_run_id);
        self.jobs = jobs;
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

    /// Where run `run_id` stands in the start order.
    pub fn order_key(&self, run_id: i64) -> Option<(i64, i64)> {
        let run = self.runs.get(&run_id)?;
        Some((crate::lifecycle::whole_ms(run.created_v), run_id))
    }

    fn insert(&mut self, run: RunRec) {
        let key = (crate::lifecycle::whole_ms(run.created_v), run.run_id);
        self.order.insert(key);
        self.by_job.entry(run.job.id).or_default().insert(key);
        self.runs.insert(run.run_id, run);
    }

    fn number(&mut self, job_id: i64) -> i64 {
        let counter = self.numbers.entry(job_id).or_insert(0);
        *counter += 1;
        *counter
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
        self.next_run_id += job.graph.span;
        let number = self.number(job.id);
        let mut run = RunRec::new(
            run_id,
            number,
            job.clone(),
            created_v,
            creator,
            job.fresh.clone(),
        );
        run.overriding = overriding.map(Box::new);
        run.job_params = job_params.map(Box::new);
        self.insert(run);
        (run_id, number)
    }

    /// `n` consecutive run ids for past runs, the first of them: below those handed out so far
    /// (older runs, smaller ids), or, when a small first run id leaves no room, above like new runs.
    pub fn reserve_past_ids(&mut self, n: i64) -> i64 {
        let below = self.next_past_id - n;
        if below > 0 {
            self.next_past_id = below;
            return below;
        }
        let above = self.next_run_id;
        self.next_run_id += n;
        above
    }

    /// Adds a completed past run of `job` that began at `created_v`, with an id from
    /// [`Store::reserve_past_ids`].
    pub fn add_past_run(
        &mut self,
        run_id: i64,
        job: Arc<Job>,
        created_v: f64,
        creator: Arc<str>,
        schedule: Schedule,
    ) {
        let number = self.number(job.id);
        self.seeded += 1;
        let mut run = RunRec::new(run_id, number, job, created_v, creator, Arc::new(schedule));
        run.seeded = true;
        self.insert(run);
    }
}
