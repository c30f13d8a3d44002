//! The schedule of one attempt of a run (the original run, a repair, a seeded past run): when
//! each task leaves BLOCKED, its phases, how it ends, its for-each iterations, and the run's
//! own phases and result. Computed once when the attempt starts; where a run or task stands at
//! an instant is read off it ([`Schedule::run_at`], [`Schedule::line_at`]), with a cancel or a
//! forced state ([`Interventions`]) applied on top. No task per run, no timers.
use crate::graph::Graph;
use crate::lifecycle::{Forced, Life, Outcome, Snap};

/// A job's timings, virtual ms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub queue: f64,
    pub pending: f64,
    pub running: f64,
    pub terminating: f64,
    pub retries: u32,
    pub retry_wait: f64,
}

type Segs = Vec<(Life, f64)>;

/// A task run's timeline: BLOCKED until `begin`, then its segments, then `outcome`.
#[derive(Debug)]
pub(crate) struct Timeline {
    pub begin: f64,
    pub segs: Segs,
    pub outcome: Outcome,
}

impl Timeline {
    fn end(&self) -> f64 {
        self.begin + self.segs.iter().map(|s| s.1).sum::<f64>()
    }

    /// Where it stands at offset `e`.
    pub fn at(&self, e: f64) -> Snap {
        if e < self.begin {
            return Snap::new(Life::Blocked, None);
        }
        let mut s = Snap::new(Life::Blocked, Some(self.begin));
        let mut t = self.begin;
        for &(life, d) in &self.segs {
            if e < t + d {
                s.life = life;
                s.add(life, e - t);
                return s;
            }
            s.add(life, d);
            t += d;
            if life == Life::WaitingForRetry {
                s.attempt += 1;
            }
        }
        s.end(self.outcome, t);
        s
    }

    /// `(start, end)` of its RUNNING time, first to last.
    fn running(&self) -> Option<(f64, f64)> {
        let mut t = self.begin;
        let mut span: Option<(f64, f64)> = None;
        for &(life, d) in &self.segs {
            if life == Life::Running {
                span = Some((span.map_or(t, |s| s.0), t + d));
            }
            t += d;
        }
        span
    }
}

/// One task of the attempt, and the iterations of a for-each task.
#[derive(Debug)]
pub(crate) struct Line {
    pub task: usize,
    pub timeline: Timeline,
    pub iterations: Vec<Timeline>,
}

/// A cancel or a forced state, as offsets into the attempt.
#[derive(Clone, Copy, Default)]
pub(crate) struct Interventions {
    pub cancel: Option<f64>,
    pub forced: Option<(Forced, f64)>,
    /// How long a canceled run takes to stop.
    pub grace: f64,
}

impl Interventions {
    /// `natural(e)` changed by a pin, a forced end or a cancel. `run` is the run itself, whose
    /// pin holds even after it ended; a task's pin only holds a task that was active.
    pub fn apply(&self, natural: impl Fn(f64) -> Snap, e: f64, run: bool) -> Snap {
        if let Some((Forced::End(outcome), at)) = self.forced {
            let mut s = natural(at);
            let end = s.end_e.unwrap_or(at);
            s.begin.get_or_insert(at);
            s.user_cancelled = false;
            s.end(outcome, end);
            return s;
        }
        let base = |x: f64| match self.forced {
            Some((Forced::Pin(life), at)) if x >= at => {
                let mut s = natural(at);
                if run || s.is_active() {
                    s.life = life;
                    s.outcome = None;
                    s.end_e = None;
                    s.add(life, x - at);
                }
                s
            }
            _ => natural(x),
        };
        let Some(c) = self.cancel.filter(|c| e >= *c) else {
            return base(e);
        };
        let mut s = base(c);
        if s.life.is_terminal() {
            return s;
        }
        let stop = c + self.grace;
        if s.begin.is_none() {
            // Never started: skipped once the cancel has gone through.
            if e >= stop {
                s.begin = Some(stop);
                s.end(Outcome::UpstreamCanceled, stop);
            }
        } else if e < stop {
            s.life = Life::Terminating;
            s.cleanup_d += e - c;
        } else {
            s.cleanup_d += self.grace;
            s.end(Outcome::Canceled, stop);
            s.user_cancelled = true;
        }
        s
    }
}

/// How a task of the attempt ends when it runs: its outcome and, for a for-each task, the
/// iterations that fail.
pub(crate) type TaskEnd = (Outcome, Vec<usize>);

/// What an attempt runs.
pub(crate) struct Recipe<'a> {
    pub graph: &'a Graph,
    pub plan: Plan,
    /// Multiplies every duration but the queue (seeded runs of a given length).
    pub scale: f64,
    /// The tasks it runs, in graph order.
    pub tasks: Vec<usize>,
    /// How each task ends when this attempt runs it, by task index.
    pub ends: Vec<TaskEnd>,
    /// The latest results of the tasks it does not run, by task index.
    pub previous: Vec<Option<Outcome>>,
    /// The run is skipped after its queue (the job's outcome SKIPPED).
    pub skip_run: bool,
}

#[derive(Debug)]
pub(crate) struct Schedule {
    pub queue: f64,
    pub lines: Vec<Line>,
    /// When the first task starts RUNNING: the run leaves PENDING.
    first_running: f64,
    /// When the last task leaves RUNNING: the run is TERMINATING.
    exec_end: f64,
    pub end: f64,
    /// How the run ends when left alone.
    pub outcome: Outcome,
    retries: bool,
}

impl Recipe<'_> {
    /// Lays the tasks out: each starts when its dependencies in this attempt have ended and
    /// its `run_if` holds (otherwise it is skipped then), roots after the queue.
    pub fn lay_out(&self) -> (Vec<Line>, Vec<Option<Outcome>>) {
        let p = &self.plan;
        let k = self.scale;
        let mut results = self.previous.clone();
        let mut ends = vec![None; self.graph.tasks.len()];
        let mut lines = Vec::with_capacity(self.tasks.len());
        for &i in &self.tasks {
            let def = &self.graph.tasks[i];
            let here: Vec<f64> = def.deps.iter().filter_map(|&d| ends[d]).collect();
            let root = here.is_empty();
            let begin = here.iter().copied().fold(0.0, f64::max);
            let mut segs = Segs::new();
            if root && p.queue > 0.0 {
                segs.push((Life::Queued, p.queue));
            }
            let deps: Vec<Outcome> = def
                .deps
                .iter()
                .map(|&d| results[d].unwrap_or(Outcome::Success))
                .collect();
            let start = begin + segs.iter().map(|s| s.1).sum::<f64>();
            let mut iterations = Vec::new();
            let outcome = if self.skip_run {
                if !root {
                    segs.clear();
                }
                Outcome::Skipped
            } else if let Some(skipped) = def.run_if.skip(&deps) {
                segs.clear();
                skipped
            } else if let Some(f) = &def.for_each {
                // Iterations in waves of `concurrency`, each set up, run and cleaned up.
                let (_, fail) = &self.ends[i];
                let run = f.iteration_ms.or(def.duration).unwrap_or(p.running) * k;
                let each = (p.pending + p.terminating) * k + run;
                for j in 0..f.inputs.len() {
                    let failed = fail.contains(&j);
                    iterations.push(Timeline {
                        begin: start + (j / f.concurrency) as f64 * each,
                        segs: vec![
                            (Life::Pending, p.pending * k),
                            (Life::Running, run),
                            (Life::Terminating, p.terminating * k),
                        ],
                        outcome: if failed {
                            Outcome::Failed
                        } else {
                            Outcome::Success
                        },
                    });
                }
                let waves = f.inputs.len().div_ceil(f.concurrency);
                segs.push((Life::Running, waves as f64 * each));
                if iterations.iter().any(|t| !t.outcome.is_ok()) {
                    Outcome::Failed
                } else {
                    Outcome::Success
                }
            } else {
                let (outcome, _) = self.ends[i];
                let run = def.duration.unwrap_or(p.running) * k;
                for _ in 0..p.retries {
                    segs.push((Life::Pending, p.pending * k));
                    segs.push((Life::Running, run));
                    segs.push((Life::WaitingForRetry, p.retry_wait * k));
                }
                segs.push((Life::Pending, p.pending * k));
                segs.push((Life::Running, run));
                // An internal error ends the task without cleaning up.
                if outcome != Outcome::InternalError {
                    segs.push((Life::Terminating, p.terminating * k));
                }
                outcome
            };
            let timeline = Timeline {
                begin,
                segs,
                outcome,
            };
            ends[i] = Some(timeline.end());
            results[i] = Some(outcome);
            lines.push(Line {
                task: i,
                timeline,
                iterations,
            });
        }
        (lines, results)
    }

    /// The schedule, ending with `outcome` (`None`: as its tasks decide, [`derive`]).
    pub fn schedule(&self, outcome: Option<Outcome>) -> Schedule {
        let (lines, results) = self.lay_out();
        let end = lines
            .iter()
            .map(|l| l.timeline.end())
            .fold(self.plan.queue, f64::max);
        let running: Vec<(f64, f64)> = lines.iter().filter_map(|l| l.timeline.running()).collect();
        let first_running = running.iter().map(|r| r.0).fold(end, f64::min);
        let exec_end = running.iter().map(|r| r.1).fold(first_running, f64::max);
        let outcome = outcome.unwrap_or_else(|| derive(self.graph, &results));
        Schedule {
            queue: self.plan.queue,
            retries: lines
                .iter()
                .any(|l| l.timeline.segs.iter().any(|s| s.0 == Life::WaitingForRetry)),
            lines,
            first_running,
            exec_end,
            end,
            outcome,
        }
    }
}

/// A run's result from its tasks', as the Jobs service decides it: SUCCESS when every task
/// succeeded (or was excluded), SUCCESS_WITH_FAILURES when only non-leaf tasks failed, else
/// the failing leaves' (FAILED before TIMEDOUT before CANCELED; INTERNAL_ERROR when that is
/// all of them, as a one-task run that hit one ends).
pub(crate) fn derive(graph: &Graph, results: &[Option<Outcome>]) -> Outcome {
    let result = |i: usize| results[i].unwrap_or(Outcome::Success);
    if (0..results.len()).all(|i| result(i).is_ok()) {
        return Outcome::Success;
    }
    let failing: Vec<Outcome> = (0..results.len())
        .filter(|&i| graph.leaves[i] && !result(i).is_ok())
        .map(result)
        .collect();
    if failing.is_empty() {
        Outcome::SuccessWithFailures
    } else if failing.iter().all(|o| *o == Outcome::InternalError) {
        Outcome::InternalError
    } else if failing
        .iter()
        .any(|o| !o.is_cancel() && *o != Outcome::TimedOut)
    {
        Outcome::Failed
    } else if failing.contains(&Outcome::TimedOut) {
        Outcome::TimedOut
    } else {
        Outcome::Canceled
    }
}

/// Stats of a for-each task's iterations at an instant (`task_run_stats`).
#[derive(Default)]
pub(crate) struct IterationStats {
    pub total: usize,
    pub scheduled: usize,
    pub active: usize,
    pub completed: usize,
    pub succeeded: usize,
    pub failed: usize,
}

impl Schedule {
    /// A run of every task of `graph`, its lines in the job's task order.
    pub fn whole_run(
        graph: &Graph,
        plan: Plan,
        scale: f64,
        ends: Vec<TaskEnd>,
        outcome: Option<Outcome>,
    ) -> Schedule {
        let mut s = Recipe {
            graph,
            plan,
            scale,
            tasks: graph.order.clone(),
            ends,
            previous: vec![None; graph.tasks.len()],
            skip_run: outcome == Some(Outcome::Skipped),
        }
        .schedule(outcome);
        s.lines.sort_by_key(|l| l.task);
        s
    }

    /// The run at offset `e`, left alone. A one-task attempt is its task; otherwise the run is
    /// QUEUED, PENDING until a task runs, RUNNING (WAITING_FOR_RETRY while every started
    /// task waits for one), TERMINATING after the last task's RUNNING, then ended.
    fn run_natural(&self, e: f64) -> Snap {
        if let [only] = self.lines.as_slice() {
            let mut s = only.timeline.at(e);
            s.begin = Some(0.0);
            if s.life.is_terminal() {
                s.end(self.outcome, self.end);
            }
            return s;
        }
        let mut s = Snap::new(Life::Queued, Some(0.0));
        s.queue_d = e.clamp(0.0, self.queue);
        if self.retries {
            s.attempt = self
                .lines
                .iter()
                .map(|l| l.timeline.at(e).attempt)
                .max()
                .unwrap_or(0);
        }
        s.life = if e >= self.end {
            s.end(self.outcome, self.end);
            return s;
        } else if e < self.queue {
            Life::Queued
        } else if e < self.first_running {
            Life::Pending
        } else if e >= self.exec_end {
            Life::Terminating
        } else if self.retries && self.all_waiting(e) {
            Life::WaitingForRetry
        } else {
            Life::Running
        };
        s
    }

    fn all_waiting(&self, e: f64) -> bool {
        let active: Vec<Life> = self
            .lines
            .iter()
            .map(|l| l.timeline.at(e))
            .filter(Snap::is_active)
            .map(|s| s.life)
            .collect();
        !active.is_empty() && active.iter().all(|l| *l == Life::WaitingForRetry)
    }

    /// The run at offset `e`.
    pub fn run_at(&self, e: f64, iv: &Interventions) -> Snap {
        iv.apply(|x| self.run_natural(x), e, true)
    }

    /// Line `k` (a task run) at offset `e`.
    pub fn line_at(&self, k: usize, e: f64, iv: &Interventions) -> Snap {
        iv.apply(|x| self.lines[k].timeline.at(x), e, false)
    }

    /// Iteration `j` of line `k` at offset `e`.
    pub fn iteration_at(&self, k: usize, j: usize, e: f64, iv: &Interventions) -> Snap {
        iv.apply(|x| self.lines[k].iterations[j].at(x), e, false)
    }

    /// The iterations of line `k` at offset `e`, counted.
    pub fn iteration_stats(&self, k: usize, e: f64, iv: &Interventions) -> IterationStats {
        let mut st = IterationStats {
            total: self.lines[k].iterations.len(),
            ..Default::default()
        };
        for j in 0..st.total {
            let s = self.iteration_at(k, j, e, iv);
            match s.outcome {
                Some(o) if !o.executed() => {}
                Some(o) => {
                    st.scheduled += 1;
                    st.completed += 1;
                    if o.is_ok() {
                        st.succeeded += 1;
                    } else {
                        st.failed += 1;
                    }
                }
                None if s.begin.is_some() => {
                    st.scheduled += 1;
                    st.active += 1;
                }
                None => {}
            }
        }
        st
    }

    /// The line of task `task`, if this attempt runs it.
    pub fn line_of(&self, task: usize) -> Option<usize> {
        self.lines.iter().position(|l| l.task == task)
    }
}
