//! `runs/repair`: running the failed (or chosen) tasks of an ended run again, inside the same
//! run. The chosen tasks (with `rerun_dependent_tasks`, and every task downstream of them) run
//! again in graph order, each as a new task run with a new id, starting when the tasks it
//! depends on in this repair have ended; the others keep their results. The run goes through
//! its life cycle again (no queue, no retries) and ends as its tasks' latest runs decide.
use std::sync::Arc;

use crate::lifecycle::Outcome;
use crate::schedule::{Plan, Recipe};
use crate::store::{Attempt, RepairInfo, RunRec, Store};

/// What a repair asks for, as `runs/repair` received it.
pub(crate) struct RepairRequest {
    pub run_id: i64,
    pub rerun_tasks: Option<Vec<String>>,
    pub rerun_all_failed_tasks: bool,
    pub rerun_dependent_tasks: bool,
    pub latest_repair_id: Option<i64>,
}

/// Why a repair is refused: the message of a 400 INVALID_PARAMETER_VALUE.
pub(crate) type Refusal = String;

impl RunRec {
    /// Which tasks a request runs again, in graph order, checked against the run's rules.
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
        let graph = &self.job.graph;
        let chosen = match (&req.rerun_tasks, req.rerun_all_failed_tasks) {
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
                    let i = graph.position(key).ok_or_else(|| {
                        format!("Task {key} does not exist in run {}.", self.run_id)
                    })?;
                    if tasks.contains(&i) {
                        return Err("rerun_tasks cannot contain duplicate task keys.".into());
                    }
                    tasks.push(i);
                }
                tasks
            }
            // Every task whose latest run did not succeed: failed, timed out, canceled, and the
            // ones skipped because of those (UPSTREAM_FAILED, UPSTREAM_CANCELED). Excluded
            // tasks count as successful.
            (None, true) => {
                let failed: Vec<usize> = self
                    .latest_results(now_v)
                    .into_iter()
                    .enumerate()
                    .filter(|(_, o)| !o.is_some_and(Outcome::is_ok))
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
        Ok(if req.rerun_dependent_tasks {
            graph.with_dependents(&chosen)
        } else {
            let mut marked = vec![false; graph.tasks.len()];
            for c in chosen {
                marked[c] = true;
            }
            graph.in_order(&marked)
        })
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
        let job = run.job.clone();
        let graph = &job.graph;
        let mut previous = run.latest_results(now_v);
        for &t in &tasks {
            previous[t] = None;
        }
        let ends = graph
            .tasks
            .iter()
            .map(|t| {
                let outcome = t.repair_outcome.unwrap_or(job.repair_outcome);
                let fail = match &t.for_each {
                    // A successful repair of a for-each task runs every iteration well.
                    _ if outcome.is_ok() => vec![],
                    Some(f) if !f.fail.is_empty() => f.fail.clone(),
                    Some(f) => f.inputs.len().checked_sub(1).into_iter().collect(),
                    None => vec![],
                };
                (outcome, fail)
            })
            .collect();
        let left_failed = previous.iter().any(|o| o.is_some_and(|o| !o.is_ok()));
        // A job that ends SUCCESS_WITH_FAILURES by definition stays so while a task is left failed.
        let outcome = (left_failed && job.outcome == Some(Outcome::SuccessWithFailures))
            .then_some(Outcome::SuccessWithFailures);
        let schedule = Recipe {
            graph,
            plan: Plan {
                queue: 0.0,
                retries: 0,
                ..job.plan
            },
            scale: 1.0,
            tasks,
            ends,
            previous,
            skip_run: false,
        }
        .schedule(outcome);

        let id = self.next_repair_id;
        self.next_repair_id += 1;
        let mut first_ids = Vec::with_capacity(schedule.lines.len());
        for line in &schedule.lines {
            let first = self.next_run_id;
            let ids = 1 + line.iterations.len() as i64;
            self.next_run_id += ids;
            for t in first..first + ids {
                self.repair_task_runs.insert(t, req.run_id);
            }
            first_ids.push(first);
        }
        let run = self.runs.get_mut(&req.run_id).expect("checked above");
        let mut attempt = Attempt::new(now_v, Arc::new(schedule));
        attempt.repair = Some(Box::new(RepairInfo { id, first_ids }));
        let previous = std::mem::replace(&mut run.current, attempt);
        run.earlier.push(previous);
        Ok(id)
    }
}
