//! Seeded history: completed past runs of a job, so that a client has runs to estimate
//! expected durations from. A past run is a real run in the store (runs/list, runs/get, its
//! task runs), laid out by the job's own graph with its times scaled to the length asked for.
use std::sync::Arc;

use crate::config::PastRun;
use crate::lifecycle::Outcome;
use crate::schedule::Schedule;
use crate::store::{fresh_ends, Job, Store};

/// Default distance between seeded runs' starts, virtual ms.
const SPACING: f64 = 3_600_000.0;

/// The schedule of past run `past`.
fn schedule(job: &Job, past: &PastRun) -> Result<Schedule, String> {
    let outcome = match &past.outcome {
        None => None,
        Some(s) => Some(Outcome::parse(s).ok_or_else(|| format!("unknown outcome {s:?}"))?),
    };
    let graph = &job.graph;
    let mut ends = fresh_ends(graph, job.outcome);
    let outcome = match outcome {
        None => job.outcome,
        Some(Outcome::Success) => {
            for end in &mut ends {
                *end = (Outcome::Success, vec![]);
            }
            Some(Outcome::Success)
        }
        Some(o @ (Outcome::Skipped | Outcome::SuccessWithFailures)) => Some(o),
        Some(failure) => {
            // The tasks that fail in the job's own runs fail; if none does, the last one.
            if ends.iter().all(|(o, fail)| o.is_ok() && fail.is_empty()) {
                if let Some(&last) = graph.order.last() {
                    match graph.tasks[last].iterations() {
                        0 => ends[last].0 = failure,
                        n => ends[last].1 = vec![n - 1],
                    }
                }
            }
            Some(failure)
        }
    };
    let mut plan = job.plan;
    if let Some(q) = past.queue_ms {
        plan.queue = q as f64;
    }
    let natural = Schedule::whole_run(graph, plan, 1.0, ends.clone(), outcome);
    let length = natural.end - plan.queue;
    let scale = match past.duration_ms {
        Some(d) if length > 0.0 => d as f64 / length,
        _ => 1.0,
    };
    Ok(Schedule::whole_run(graph, plan, scale, ends, outcome))
}

/// Each past run's schedule and how long before now it began, checked: a seeded run must
/// have ended by now. Errors name the run by its place in the list.
pub(crate) fn prepare(job: &Job, runs: &[PastRun]) -> Result<Vec<(Schedule, f64)>, String> {
    let schedules = runs
        .iter()
        .enumerate()
        .map(|(i, past)| schedule(job, past).map_err(|e| format!("history run {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let longest = schedules.iter().map(|s| s.end).fold(0.0, f64::max);
    let spacing = SPACING.max(longest + 60_000.0);
    let n = runs.len();
    schedules
        .into_iter()
        .zip(runs)
        .enumerate()
        .map(|(i, (s, past))| {
            let ago = past.ago_ms.map_or((n - i) as f64 * spacing, |a| a as f64);
            if ago < s.end {
                return Err(format!(
                    "history run {i}: agoMs {ago} is shorter than the run itself ({} ms): a \
                     seeded run must have ended",
                    s.end.ceil()
                ));
            }
            Ok((s, ago))
        })
        .collect()
}

/// Adds `prepared` past runs of `job` as completed runs, seen from `now_v`; their run ids,
/// oldest first.
pub(crate) fn seed(
    store: &mut Store,
    job: &Arc<Job>,
    prepared: Vec<(Schedule, f64)>,
    now_v: f64,
    creator: &Arc<str>,
) -> Vec<i64> {
    let span = job.graph.span;
    // One block for the batch, so that within it too the older run has the smaller id.
    let base = store.reserve_past_ids(span * prepared.len() as i64);
    let mut ids = Vec::with_capacity(prepared.len());
    for (i, (schedule, ago)) in prepared.into_iter().enumerate() {
        let run_id = base + i as i64 * span;
        store.add_past_run(run_id, job.clone(), now_v - ago, creator.clone(), schedule);
        ids.push(run_id);
    }
    ids
}
