//! `runs/repair`: running the failed (or chosen) tasks of an ended run again, inside the same
//! run. The current attempt is frozen into the run's history, the chosen tasks get new task
//! run ids, and the run goes through its life cycle again (no queue, no retries).
use crate::lifecycle::{Outcome, Snap};
use crate::store::{Attempt, RepairRec, RunRec, Store};

/// What a repair asks for, as `runs/repair` received it.
pub(crate) struct RepairRequest {
    pub run_id: i64,
    pub rerun_tasks: Option<Vec<String>>,
    pub rerun_all_failed_tasks: bool,
    pub latest_repair_id: Option<i64>,
}

/// Why a repair is refused: the message of a 400 INVALID_PARAMETER_VALUE.
pub(crate) type Refusal = String;

fn succeeded(outcome: Option<Outcome>) -> bool {
    matches!(
        outcome,
        Some(Outcome::Success | Outcome::SuccessWithFailures | Outcome::Skipped)
    )
}

impl RunRec {
    /// The outcome of each task's latest task run, by task index.
    fn latest_task_outcomes(&self, now_v: f64) -> Vec<Option<Outcome>> {
        let mut out = vec![None; self.task_count()];
        for view in self.task_views(now_v) {
            out[view.index] = view.snap.outcome;
        }
        out
    }

    /// The id the next repair must name as `latest_repair_id`.
    pub(crate) fn latest_repair_id(&self) -> Option<i64> {
        self.repair.as_ref().map(|r| r.id)
    }

    /// Which tasks a request runs again, checked against the run's rules.
    fn tasks_to_repair(&self, req: &RepairRequest, now_v: f64) -> Result<Vec<usize>, Refusal> {
        let snap = self.snapshot(now_v);
        if !snap.life.is_terminal() {
            return Err(format!(
                "Run {} is in state {} and cannot be repaired until it has ended.",
                self.run_id,
                snap.life.as_str()
            ));
        }
        match (self.latest_repair_id(), req.latest_repair_id) {
            (Some(_), None) => {
                return Err(
                    "The latest repair ID needs to be provided in order to create a new repair"
                        .into(),
                )
            }
            (Some(latest), Some(given)) if latest != given => {
                return Err(format!(
                    "latest_repair_id {given} does not match the latest repair {latest} of run {}.",
                    self.run_id
                ))
            }
            (None, Some(given)) => {
                return Err(format!(
                    "latest_repair_id {given} does not match: run {} has not been repaired.",
                    self.run_id
                ))
            }
            _ => {}
        }
        let tasks = match (&req.rerun_tasks, req.rerun_all_failed_tasks) {
            (Some(_), true) => {
                return Err("Only one of rerun_tasks or rerun_all_failed_tasks can be used.".into())
            }
            (None, false) => {
                return Err("One of rerun_tasks or rerun_all_failed_tasks is required.".into())
            }
            (Some(keys), false) => {
                if keys.is_empty() {
                    return Err("rerun_tasks must name at least one task.".into());
                }
                let mut tasks = Vec::with_capacity(keys.len());
                for key in keys {
                    let i = self
                        .job
                        .tasks
                        .iter()
                        .position(|t| &t.key == key)
                        .ok_or_else(|| {
                            format!("Task {key} does not exist in run {}.", self.run_id)
                        })?;
                    if tasks.contains(&i) {
                        return Err("rerun_tasks cannot contain duplicate task keys.".into());
                    }
                    tasks.push(i);
                }
                tasks
            }
            (None, true) => {
                let failed: Vec<usize> = self
                    .latest_task_outcomes(now_v)
                    .into_iter()
                    .enumerate()
                    .filter(|(_, o)| !succeeded(*o))
                    .map(|(i, _)| i)
                    .collect();
                if failed.is_empty() {
                    return Err(format!(
                        "Run {} has no failed tasks to repair.",
                        self.run_id
                    ));
                }
                failed
            }
        };
        Ok(tasks)
    }

    /// Freezes the current attempt into the history.
    fn freeze(&mut self, now_v: f64) {
        let snap: Snap = self.snapshot(now_v);
        let tasks = self
            .current_tasks(&snap)
            .into_iter()
            .map(|v| (v.index, v.run_id, v.snap))
            .collect();
        self.history.push(Attempt {
            repair_id: self.latest_repair_id(),
            start_v: self.attempt_v,
            snap,
            tasks,
        });
    }
}

impl Store {
    /// Starts a repair of `req.run_id` (a parent run) at `now_v`; its repair id.
    pub(crate) fn repair(&mut self, req: &RepairRequest, now_v: f64) -> Result<i64, Refusal> {
        let run = self
            .runs
            .get(&req.run_id)
            .ok_or_else(|| format!("Run {} does not exist.", req.run_id))?;
        let tasks = run.tasks_to_repair(req, now_v)?;
        let task_outcome = run.job.repair_outcome;
        // The run ends as its tasks' latest runs do: a task left failed fails it.
        let left_failed = run
            .latest_task_outcomes(now_v)
            .iter()
            .enumerate()
            .any(|(i, o)| !tasks.contains(&i) && !succeeded(*o));
        let outcome = match (left_failed, run.job.plan.outcome) {
            (false, _) => task_outcome,
            (true, Outcome::SuccessWithFailures) => Outcome::SuccessWithFailures,
            (true, _) => Outcome::Failed,
        };

        let id = self.next_repair_id;
        self.next_repair_id += 1;
        let first = self.next_run_id;
        self.next_run_id += tasks.len() as i64;
        let task_run_ids: Vec<i64> = (first..first + tasks.len() as i64).collect();
        for &t in &task_run_ids {
            self.repair_task_runs.insert(t, req.run_id);
        }
        let run = self.runs.get_mut(&req.run_id).expect("checked above");
        run.freeze(now_v);
        run.attempt_v = now_v;
        run.cancel_v = None;
        run.forced = None;
        run.repair = Some(Box::new(RepairRec {
            id,
            tasks,
            task_run_ids,
            task_outcome,
            outcome,
        }));
        Ok(id)
    }
}
