//! What a watcher sees move in a run, read straight from an update's JSON text (the run is
//! never built as a `Value`; the readers of its fields are `run.rs`'s, where a poll's own view,
//! `PollView`, decides whether there is an update at all):
//! - [`RunView`]: the fields of a run and its tasks that an update summarises;
//! - [`describe`]: an update's `changes` (what moved since the previous update, from the kept
//!   [`Digest`]) and `progress` (the summary).
//!
//! The latest attempt of each task: `tasks[]` lists every task run of every attempt; per
//! `task_key`, the one named in the latest `repair_history` entry's `task_run_ids`, else the
//! last one in `tasks[]`.
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::History;
use crate::run::{
    parse_object, result_of, state_of, terminal, ForEachView, IterationStats, Num, StateView,
    StatusView, Text,
};

/// Task results that count as failed, besides the INTERNAL_ERROR life cycle state.
const FAILED_RESULTS: [&str; 5] = [
    "FAILED",
    "TIMEDOUT",
    "CANCELED",
    "UPSTREAM_FAILED",
    "UPSTREAM_CANCELED",
];
/// Life cycle states of a task that is under way.
const RUNNING_STATES: [&str; 3] = ["PENDING", "RUNNING", "TERMINATING"];
/// The most a running task's own time can add to its share before it ends.
const RUNNING_TASK_CAP: f64 = 0.95;
/// The most `fraction` reaches while the run is active.
const ACTIVE_CAP: f64 = 0.99;

/// The fields of a run that an update summarises; serde skips every other one.
#[derive(Debug, Default, Deserialize)]
pub struct RunView<'a> {
    #[serde(borrow, default)]
    pub state: Option<StateView<'a>>,
    #[serde(borrow, default)]
    pub status: Option<StatusView<'a>>,
    #[serde(default)]
    pub start_time: Num,
    #[serde(default)]
    pub end_time: Num,
    #[serde(borrow, default)]
    pub tasks: Option<Vec<TaskView<'a>>>,
    #[serde(borrow, default)]
    pub repair_history: Option<Vec<RepairView<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TaskView<'a> {
    #[serde(borrow, default)]
    pub task_key: Text<'a>,
    #[serde(default)]
    pub run_id: Num,
    #[serde(default)]
    pub attempt_number: Num,
    #[serde(borrow, default)]
    pub state: Option<StateView<'a>>,
    #[serde(borrow, default)]
    pub status: Option<StatusView<'a>>,
    #[serde(default)]
    pub start_time: Num,
    #[serde(borrow, default)]
    pub depends_on: Option<Vec<DependsView<'a>>>,
    #[serde(default)]
    pub for_each_task: Option<ForEachView>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DependsView<'a> {
    #[serde(borrow, default)]
    pub task_key: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RepairView<'a> {
    #[serde(borrow, default, rename = "type")]
    pub kind: Text<'a>,
    #[serde(default)]
    pub id: Num,
    #[serde(default)]
    pub start_time: Num,
    #[serde(default)]
    pub end_time: Num,
    #[serde(default)]
    pub task_run_ids: Option<Vec<Num>>,
}

impl<'a> RunView<'a> {
    /// The view of a run's JSON text; `None` when it does not read as a run object.
    pub fn parse(text: &'a str) -> Option<RunView<'a>> {
        parse_object(text)
    }

    /// `state.life_cycle_state`, else the V2 `status.state`.
    pub fn life_cycle_state(&self) -> Option<&str> {
        state_of(self.state.as_ref(), self.status.as_ref())
    }

    fn tasks(&self) -> &[TaskView<'a>] {
        self.tasks.as_deref().unwrap_or(&[])
    }

    fn repairs(&self) -> &[RepairView<'a>] {
        self.repair_history.as_deref().unwrap_or(&[])
    }

    /// The latest REPAIR entry of the history: its id, start and the task runs it made.
    fn latest_repair(&self) -> Option<&RepairView<'a>> {
        self.repairs()
            .iter()
            .rev()
            .find(|r| r.kind.get() == Some("REPAIR"))
    }

    /// The latest attempt of each task, in the order the tasks first appear.
    pub fn latest_tasks(&self) -> Vec<&TaskView<'a>> {
        let named: HashSet<i64> = self
            .repairs()
            .last()
            .and_then(|r| r.task_run_ids.as_ref())
            .map(|ids| ids.iter().filter_map(|n| n.0).collect())
            .unwrap_or_default();
        let mut out: Vec<&TaskView<'a>> = Vec::new();
        let mut at: HashMap<&str, (usize, bool)> = HashMap::new();
        for task in self.tasks() {
            let key = task.task_key.get().unwrap_or("");
            let is_named = task.run_id.0.is_some_and(|id| named.contains(&id));
            match at.get(key).copied() {
                None => {
                    at.insert(key, (out.len(), is_named));
                    out.push(task);
                }
                // The one the latest attempt names wins; otherwise the last one listed.
                Some((i, was_named)) if is_named || !was_named => {
                    out[i] = task;
                    at.insert(key, (i, is_named));
                }
                Some(_) => {}
            }
        }
        out
    }
}

impl<'a> TaskView<'a> {
    pub fn life_cycle_state(&self) -> Option<&str> {
        state_of(self.state.as_ref(), self.status.as_ref())
    }

    pub fn result(&self) -> Option<&str> {
        result_of(self.state.as_ref())
    }

    fn is_done(&self) -> bool {
        terminal(self.state.as_ref(), self.status.as_ref())
    }

    fn is_failed(&self) -> bool {
        self.result().is_some_and(|r| FAILED_RESULTS.contains(&r))
            || self.life_cycle_state() == Some("INTERNAL_ERROR")
    }

    fn is_running(&self) -> bool {
        self.life_cycle_state()
            .is_some_and(|s| RUNNING_STATES.contains(&s))
    }

    fn iterations(&self) -> Option<IterationStats> {
        self.for_each_task.as_ref()?.stats.as_ref()?.task_run_stats
    }
}

/// What an update showed, kept by the poll to compare the next one with, so that an update
/// parses only its own text: the run's state and result, each task's latest attempt, the
/// latest repair.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Digest {
    run: (Option<Box<str>>, Option<Box<str>>),
    tasks: Vec<TaskDigest>,
    repair: Option<i64>,
}

/// A task's latest attempt as a change compares it (see `changes_out`).
#[derive(Debug, Clone, PartialEq)]
struct TaskDigest {
    key: Box<str>,
    run_id: Option<i64>,
    attempt: i64,
    state: Option<Box<str>>,
    result: Option<Box<str>>,
    v2: Option<Box<str>>,
    iterations: Option<IterationStats>,
}

impl TaskDigest {
    fn of(t: &TaskView) -> TaskDigest {
        TaskDigest {
            key: t.task_key.get().unwrap_or("").into(),
            run_id: t.run_id.0,
            attempt: t.attempt_number.0.unwrap_or(0),
            state: t.life_cycle_state().map(Into::into),
            result: t.result().map(Into::into),
            v2: t
                .status
                .as_ref()
                .and_then(|s| s.state.get())
                .map(Into::into),
            iterations: t.iterations(),
        }
    }

    fn state(&self) -> StateOut<'_> {
        StateOut {
            attempt: Some(self.attempt),
            result: self.result.as_deref(),
            state: self.state.as_deref(),
        }
    }
}

// The JSON written for an update. Fields are in the order serde_json gives a parsed object
// (sorted), so that a spliced SSE frame equals the same object serialized.

#[derive(Serialize)]
struct StateOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<i64>,
    result: Option<&'a str>,
    state: Option<&'a str>,
}

#[derive(Serialize)]
struct RunChangeOut<'a> {
    from: Option<StateOut<'a>>,
    to: StateOut<'a>,
}

#[derive(Serialize)]
struct TaskChangeOut<'a> {
    from: Option<StateOut<'a>>,
    #[serde(rename = "taskKey")]
    task_key: &'a str,
    to: StateOut<'a>,
}

#[derive(Serialize)]
struct RepairOut {
    id: i64,
}

#[derive(Serialize)]
struct ChangesOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    repair: Option<RepairOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<RunChangeOut<'a>>,
    tasks: Vec<TaskChangeOut<'a>>,
}

#[derive(Serialize)]
struct ForEachOut<'a> {
    active: Option<i64>,
    completed: Option<i64>,
    failed: Option<i64>,
    scheduled: Option<i64>,
    succeeded: Option<i64>,
    #[serde(rename = "taskKey")]
    task_key: Option<&'a str>,
    total: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProgressOut<'a> {
    elapsed_ms: Option<i64>,
    expected_ms: Option<i64>,
    for_each: Vec<ForEachOut<'a>>,
    fraction: f64,
    since: &'static str,
    task_expected_ms: std::collections::BTreeMap<&'a str, i64>,
    tasks_done: u32,
    tasks_failed: u32,
    tasks_running: u32,
    tasks_total: usize,
}

#[derive(Serialize)]
struct MetaOut<'a> {
    changes: ChangesOut<'a>,
    progress: ProgressOut<'a>,
}

/// An update's description: `meta` is `{"changes":{...},"progress":{...}}` as JSON text,
/// `digest` what the next update compares with, `fraction` the progress fraction (the next
/// update's floor).
pub struct Described {
    pub meta: String,
    pub digest: Digest,
    pub fraction: f64,
    /// When the run (or its repair) is expected to end, on the workspace's clock (ms): its
    /// start plus `expectedMs`. `None` once it has ended, or without history.
    pub expected_end: Option<i64>,
}

/// Describes an update of the run `view`: what moved since `previous` (the poll's previous
/// update, `None` for its first) and the progress summary.
///
/// `changes`: `{ run?: { from, to }, tasks: [{ taskKey, from, to }], repair?: { id } }`. `run`
/// is there when the run's own state or result moved; `tasks` lists the latest attempts that
/// moved (empty on a poll's first update, which has nothing to compare with); `repair` names
/// the latest repair when it is new (on a poll's first update: the repair the run is in).
///
/// `progress`: `{ tasksTotal, tasksDone, tasksFailed, tasksRunning, forEach: [{ taskKey, total,
/// scheduled, active, completed, succeeded, failed }], elapsedMs, expectedMs, taskExpectedMs,
/// fraction, since }`; see the README ("Live progress") for each figure. `server_now` is the
/// workspace's clock when the run was read (ms), `history` the job's typical durations when
/// known, `floor` the previous update's fraction (a poll's fraction never goes down), and
/// `terminal` whether the run is over (then `fraction` is 1).
pub fn describe(
    previous: Option<&Digest>,
    view: &RunView,
    server_now: i64,
    history: Option<&History>,
    floor: f64,
    terminal: bool,
) -> Described {
    let latest = view.latest_tasks();
    let repair = view.latest_repair();
    let digest = Digest {
        run: (
            view.life_cycle_state().map(Into::into),
            result_of(view.state.as_ref()).map(Into::into),
        ),
        tasks: latest.iter().map(|t| TaskDigest::of(t)).collect(),
        repair: repair.and_then(|r| r.id.0),
    };
    let changes = changes_out(previous, &digest);

    // A repair counts from its own start, over the tasks it runs again.
    let rerun: Option<HashSet<i64>> = repair.and_then(|r| {
        r.task_run_ids
            .as_ref()
            .map(|ids| ids.iter().filter_map(|n| n.0).collect())
    });
    let counted: Vec<&TaskView> = match &rerun {
        Some(ids) => latest
            .iter()
            .copied()
            .filter(|t| t.run_id.0.is_some_and(|id| ids.contains(&id)))
            .collect(),
        None => latest.clone(),
    };
    let (since, ended) = match repair {
        Some(r) => (r.start_time.0, r.end_time.0),
        None => (view.start_time.0, view.end_time.0),
    };
    let since = since.filter(|t| *t > 0);
    // An ended run (or repair) took what its own times say; an active one, until now.
    let until = match ended.filter(|e| terminal && *e > 0) {
        Some(end) => end,
        None => server_now,
    };
    let elapsed = since.map(|s| (until - s).max(0));
    let task_ms = |t: &TaskView| history.and_then(|h| h.task_ms.get(t.task_key.get()?).copied());
    let expected = match (&rerun, history) {
        (None, Some(h)) => h.run_ms,
        (Some(_), Some(_)) => critical_path(&counted, &task_ms),
        (_, None) => None,
    };

    let mut done = 0u32;
    let mut failed = 0u32;
    let mut running = 0u32;
    let mut for_each = Vec::new();
    let mut task_expected = std::collections::BTreeMap::new();
    for t in &latest {
        done += t.is_done() as u32;
        failed += (t.is_done() && t.is_failed()) as u32;
        running += t.is_running() as u32;
        if let Some(s) = t.iterations() {
            for_each.push(ForEachOut {
                active: s.active_iterations.0,
                completed: s.completed_iterations.0,
                failed: s.failed_iterations.0,
                scheduled: s.scheduled_iterations.0,
                succeeded: s.succeeded_iterations.0,
                task_key: t.task_key.get(),
                total: s.total_iterations.0,
            });
        }
        if let (Some(key), Some(ms)) = (t.task_key.get(), task_ms(t)) {
            task_expected.insert(key, ms);
        }
    }

    let fraction = if terminal {
        1.0
    } else {
        let share = |t: &&TaskView| -> f64 {
            if t.is_done() {
                return 1.0;
            }
            if let Some(s) = t.iterations() {
                if let (Some(total), Some(completed)) =
                    (s.total_iterations.0, s.completed_iterations.0)
                {
                    if total > 0 {
                        return (completed as f64 / total as f64).min(RUNNING_TASK_CAP);
                    }
                }
            }
            match (
                t.is_running(),
                t.start_time.0.filter(|s| *s > 0),
                task_ms(t),
            ) {
                (true, Some(start), Some(ms)) if ms > 0 => {
                    ((server_now - start).max(0) as f64 / ms as f64).min(RUNNING_TASK_CAP)
                }
                _ => 0.0,
            }
        };
        let tasks_part = if counted.is_empty() {
            0.0
        } else {
            counted.iter().map(share).sum::<f64>() / counted.len() as f64
        };
        let raw = match (elapsed, expected) {
            (Some(e), Some(x)) if x > 0 => 0.5 * (e as f64 / x as f64).min(1.0) + 0.5 * tasks_part,
            _ => tasks_part,
        };
        raw.max(floor).min(ACTIVE_CAP)
    };
    let fraction = (fraction * 1000.0).round() / 1000.0;
    let progress = ProgressOut {
        elapsed_ms: elapsed,
        expected_ms: expected,
        for_each,
        fraction,
        since: if repair.is_some() { "repair" } else { "run" },
        task_expected_ms: task_expected,
        tasks_done: done,
        tasks_failed: failed,
        tasks_running: running,
        tasks_total: latest.len(),
    };
    let meta = serde_json::to_string(&MetaOut { changes, progress }).unwrap_or_default();
    Described {
        meta,
        digest,
        fraction,
        expected_end: match (since, expected) {
            (Some(s), Some(x)) if !terminal => Some(s + x),
            _ => None,
        },
    }
}

/// The `changes` of an update whose digest is `now`, against the previous update's.
fn changes_out<'a>(previous: Option<&'a Digest>, now: &'a Digest) -> ChangesOut<'a> {
    let run_state = |(s, r): &'a (Option<Box<str>>, Option<Box<str>>)| StateOut {
        attempt: None,
        result: r.as_deref(),
        state: s.as_deref(),
    };
    let run = (previous.map(|p| &p.run) != Some(&now.run)).then(|| RunChangeOut {
        from: previous.map(|p| run_state(&p.run)),
        to: run_state(&now.run),
    });
    let mut tasks = Vec::new();
    if let Some(previous) = previous {
        let before: HashMap<&str, &TaskDigest> =
            previous.tasks.iter().map(|t| (&*t.key, t)).collect();
        for task in &now.tasks {
            let from = before.get(&*task.key);
            if from.is_none_or(|f| *f != task) {
                tasks.push(TaskChangeOut {
                    from: from.map(|f| f.state()),
                    task_key: &task.key,
                    to: task.state(),
                });
            }
        }
    }
    let repair = match (now.repair, previous.and_then(|p| p.repair)) {
        (Some(id), before) if before != Some(id) => Some(RepairOut { id }),
        _ => None,
    };
    ChangesOut { repair, run, tasks }
}

/// The expected duration of running `tasks` (and only them) in their dependency order: the
/// longest chain of their typical durations. `None` when one of them has no history.
fn critical_path(tasks: &[&TaskView], task_ms: &dyn Fn(&TaskView) -> Option<i64>) -> Option<i64> {
    let keys: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.task_key.get().unwrap_or(""), i))
        .collect();
    let own: Vec<i64> = tasks.iter().map(|t| task_ms(t)).collect::<Option<_>>()?;
    // Longest chain ending at each task, by memoised depth-first search (cycles are cut).
    fn finish(
        i: usize,
        tasks: &[&TaskView],
        keys: &HashMap<&str, usize>,
        own: &[i64],
        memo: &mut [Option<i64>],
        visiting: &mut [bool],
    ) -> i64 {
        if let Some(v) = memo[i] {
            return v;
        }
        if visiting[i] {
            return own[i];
        }
        visiting[i] = true;
        let before = tasks[i]
            .depends_on
            .iter()
            .flatten()
            .filter_map(|d| keys.get(d.task_key.get()?).copied())
            .map(|j| finish(j, tasks, keys, own, memo, visiting))
            .max()
            .unwrap_or(0);
        visiting[i] = false;
        memo[i] = Some(before + own[i]);
        before + own[i]
    }
    let mut memo = vec![None; tasks.len()];
    let mut visiting = vec![false; tasks.len()];
    (0..tasks.len())
        .map(|i| finish(i, tasks, &keys, &own, &mut memo, &mut visiting))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The `progress` `describe` writes, as a value.
    fn summarize(
        view: &RunView,
        now: i64,
        history: Option<&History>,
        floor: f64,
        terminal: bool,
    ) -> Value {
        let d = describe(None, view, now, history, floor, terminal);
        serde_json::from_str::<Value>(&d.meta).unwrap()["progress"].take()
    }

    /// The `changes` of `now` after `previous`, as a value.
    fn changes(previous: Option<&RunView>, now: &RunView) -> Value {
        let before = previous.map(|p| describe(None, p, 0, None, 0.0, false).digest);
        let d = describe(before.as_ref(), now, 0, None, 0.0, false);
        serde_json::from_str::<Value>(&d.meta).unwrap()["changes"].take()
    }

    fn task(key: &str, run_id: i64, state: &str, result: Option<&str>) -> Value {
        let mut s = json!({"life_cycle_state": state});
        if let Some(r) = result {
            s["result_state"] = json!(r);
        }
        json!({"task_key": key, "run_id": run_id, "attempt_number": 0, "state": s, "start_time": 1000})
    }

    fn text(run: &Value) -> String {
        run.to_string()
    }

    #[test]
    fn the_latest_attempt_of_each_task_follows_the_latest_repair() {
        let run = json!({
            "tasks": [
                task("a", 11, "TERMINATED", Some("SUCCESS")),
                task("b", 12, "TERMINATED", Some("FAILED")),
                task("b", 22, "RUNNING", None),
                task("b", 32, "TERMINATED", Some("FAILED")),
            ],
            "repair_history": [
                {"type": "ORIGINAL", "id": 1, "task_run_ids": [11, 12]},
                {"type": "REPAIR", "id": 2, "task_run_ids": [22]}
            ]
        });
        let t = text(&run);
        let view = RunView::parse(&t).unwrap();
        let latest: Vec<i64> = view
            .latest_tasks()
            .iter()
            .map(|t| t.run_id.0.unwrap())
            .collect();
        // 22 is named by the latest repair; 32, listed later, is not.
        assert_eq!(latest, vec![11, 22]);
        let plain =
            json!({"tasks": [task("a", 1, "RUNNING", None), task("a", 2, "PENDING", None)]});
        let t = text(&plain);
        let latest: Vec<i64> = RunView::parse(&t)
            .unwrap()
            .latest_tasks()
            .iter()
            .map(|t| t.run_id.0.unwrap())
            .collect();
        assert_eq!(latest, vec![2]);
    }

    #[test]
    fn the_meta_text_is_what_serde_json_writes_for_the_same_object() {
        // SSE frames splice it into their data: its keys must be in serde_json's order.
        let run = json!({"state": {"life_cycle_state": "RUNNING"}, "start_time": 5,
            "tasks": [task("a", 1, "RUNNING", None), {"task_key": "e", "run_id": 2, "state": {"life_cycle_state": "RUNNING"},
              "for_each_task": {"stats": {"task_run_stats": {"total_iterations": 3}}}}],
            "repair_history": [{"type": "REPAIR", "id": 9, "start_time": 4, "task_run_ids": [1, 2]}]});
        let t = text(&run);
        let history = History {
            run_ms: Some(10),
            task_ms: [("a".to_string(), 3)].into_iter().collect(),
        };
        let meta = describe(
            None,
            &RunView::parse(&t).unwrap(),
            9,
            Some(&history),
            0.0,
            false,
        )
        .meta;
        assert_eq!(
            serde_json::from_str::<Value>(&meta).unwrap().to_string(),
            meta
        );
    }

    #[test]
    fn changes_name_what_moved() {
        let before = json!({"state": {"life_cycle_state": "RUNNING"}, "tasks": [task("extract", 1, "RUNNING", None), task("load", 2, "BLOCKED", None)]});
        let after = json!({"state": {"life_cycle_state": "RUNNING"}, "tasks": [task("extract", 1, "TERMINATED", Some("SUCCESS")), task("load", 2, "RUNNING", None)]});
        let (b, a) = (text(&before), text(&after));
        let (b, a) = (RunView::parse(&b).unwrap(), RunView::parse(&a).unwrap());
        assert_eq!(
            changes(Some(&b), &a),
            json!({"tasks": [
                {"taskKey": "extract", "from": {"state": "RUNNING", "result": null, "attempt": 0}, "to": {"state": "TERMINATED", "result": "SUCCESS", "attempt": 0}},
                {"taskKey": "load", "from": {"state": "BLOCKED", "result": null, "attempt": 0}, "to": {"state": "RUNNING", "result": null, "attempt": 0}}
            ]})
        );
        assert_eq!(
            changes(None, &b),
            json!({"run": {"from": null, "to": {"state": "RUNNING", "result": null}}, "tasks": []})
        );
    }

    #[test]
    fn progress_counts_latest_tasks_and_blends_time() {
        let run = json!({
            "state": {"life_cycle_state": "RUNNING"}, "start_time": 10_000,
            "tasks": [
                task("a", 1, "TERMINATED", Some("SUCCESS")),
                task("b", 2, "TERMINATED", Some("UPSTREAM_FAILED")),
                task("c", 3, "RUNNING", None),
                task("d", 4, "BLOCKED", None),
                {"task_key": "e", "run_id": 5, "state": {"life_cycle_state": "RUNNING"},
                 "for_each_task": {"stats": {"task_run_stats": {"total_iterations": 10, "scheduled_iterations": 10, "active_iterations": 2, "completed_iterations": 4, "succeeded_iterations": 3, "failed_iterations": 1}}}}
            ]
        });
        let t = text(&run);
        let view = RunView::parse(&t).unwrap();
        let p = summarize(&view, 13_000, None, 0.0, false);
        assert_eq!(p["tasksTotal"], 5);
        assert_eq!(p["tasksDone"], 2);
        assert_eq!(p["tasksFailed"], 1);
        assert_eq!(p["tasksRunning"], 2);
        assert_eq!(p["elapsedMs"], 3000);
        assert_eq!(p["expectedMs"], Value::Null);
        assert_eq!(p["since"], "run");
        assert_eq!(p["forEach"][0]["completed"], 4);
        // No history: tasks only, (1 + 1 + 0 + 0 + 0.4) / 5.
        assert_eq!(p["fraction"], 0.48);
        let history = History {
            run_ms: Some(6000),
            task_ms: [("c".to_string(), 4000)].into_iter().collect(),
        };
        let p = summarize(&view, 13_000, Some(&history), 0.0, false);
        assert_eq!(p["expectedMs"], 6000);
        assert_eq!(p["taskExpectedMs"], json!({"c": 4000}));
        // c has run 12 s of its 4 s: capped at 0.95; half time (0.5), half tasks ((2 + 0.95 + 0.4) / 5).
        assert_eq!(p["fraction"], 0.585);
        // Never down within a poll, below 1 while active, 1 at the end.
        assert_eq!(summarize(&view, 13_000, None, 0.7, false)["fraction"], 0.7);
        assert_eq!(
            summarize(&view, 99_000, Some(&history), 0.999, false)["fraction"],
            0.99
        );
        let ended = json!({"state": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}, "tasks": []});
        let t = text(&ended);
        assert_eq!(
            summarize(&RunView::parse(&t).unwrap(), 0, None, 0.0, true)["fraction"],
            1.0
        );
    }

    #[test]
    fn a_repair_counts_from_its_own_start_over_the_tasks_it_runs() {
        let run = json!({
            "state": {"life_cycle_state": "RUNNING"}, "start_time": 1000,
            "tasks": [
                task("a", 1, "TERMINATED", Some("SUCCESS")),
                task("b", 2, "TERMINATED", Some("FAILED")),
                task("c", 3, "TERMINATED", Some("UPSTREAM_FAILED")),
                {"task_key": "b", "run_id": 12, "state": {"life_cycle_state": "RUNNING"}, "start_time": 50_000},
                {"task_key": "c", "run_id": 13, "state": {"life_cycle_state": "BLOCKED"}, "depends_on": [{"task_key": "b"}]}
            ],
            "repair_history": [
                {"type": "ORIGINAL", "id": 100, "start_time": 1000, "task_run_ids": [1, 2, 3]},
                {"type": "REPAIR", "id": 200, "start_time": 49_000, "task_run_ids": [12, 13]}
            ]
        });
        let t = text(&run);
        let view = RunView::parse(&t).unwrap();
        let history = History {
            run_ms: Some(60_000),
            task_ms: [("b".to_string(), 2000), ("c".to_string(), 3000)]
                .into_iter()
                .collect(),
        };
        let p = summarize(&view, 51_000, Some(&history), 0.0, false);
        assert_eq!(p["since"], "repair");
        assert_eq!(p["elapsedMs"], 2000);
        assert_eq!(p["expectedMs"], 5000, "b then c");
        assert_eq!(p["tasksTotal"], 3);
        assert_eq!(p["tasksDone"], 1);
        // Over b and c only: time 2/5 -> 0.2; tasks (0.5 + 0) / 2 -> 0.125.
        assert_eq!(p["fraction"], 0.325);
    }
}
