//! What a watcher sees move in a run, read straight from a poll's JSON text (the run is never
//! built as a `Value`):
//! - [`RunView`]: the few fields of a run and its tasks that are compared or summarised;
//! - [`signature`]: what a poll compares to decide whether anything a user can see moved: the
//!   run's state, and each task run's state, result, attempt and for-each counts, and the
//!   repairs;
//! - [`changes`]: what moved since the previous update (the `changes` field of an update);
//! - [`summarize`]: the progress summary (the `progress` field).
//!
//! The latest attempt of each task: `tasks[]` lists every task run of every attempt; per
//! `task_key`, the one named in the latest `repair_history` entry's `task_run_ids`, else the
//! last one in `tasks[]`.
use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::history::History;
use crate::run::TERMINAL_LIFE_CYCLE_STATES;

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

/// A number the API sends (an integer, or its decimal text); anything else reads as `None`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Num(pub Option<i64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

struct NumVisitor;

impl<'de> Visitor<'de> for NumVisitor {
    type Value = Num;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number")
    }
    fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
        Ok(Num(Some(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
        Ok(Num(i64::try_from(v).ok()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
        Ok(Num((v.is_finite() && v.fract() == 0.0).then_some(v as i64)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Num, E> {
        Ok(Num(v.trim().parse().ok()))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Num, E> {
        Ok(Num(None))
    }
    fn visit_unit<E>(self) -> Result<Num, E> {
        Ok(Num(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Num(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Num(None))
    }
}

/// A string the API sends, borrowed from the text unless it holds escapes; anything else
/// reads as `None`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        d.deserialize_any(TextVisitor(std::marker::PhantomData))
    }
}

struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
    type Value = Text<'a>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
        Ok(Text(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }
    fn visit_unit<E>(self) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'a>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }
}

/// The fields of a run that a poll compares and summarises; serde skips every other one.
#[derive(Debug, Default, Deserialize)]
pub struct RunView<'a> {
    #[serde(default)]
    pub run_id: Num,
    #[serde(default)]
    pub job_id: Num,
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
    /// Paging (a run of more than 100 tasks): read, never summarised.
    #[serde(default)]
    pub has_more: Option<IgnoredBool>,
    #[serde(borrow, default)]
    pub next_page_token: Text<'a>,
}

/// `has_more` as sent: true only for a JSON `true`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IgnoredBool(pub bool);

impl<'de> Deserialize<'de> for IgnoredBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IgnoredBool, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(IgnoredBool(v == Value::Bool(true)))
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct StateView<'a> {
    #[serde(borrow, default)]
    pub life_cycle_state: Text<'a>,
    #[serde(borrow, default)]
    pub result_state: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StatusView<'a> {
    #[serde(borrow, default)]
    pub state: Text<'a>,
    #[serde(borrow, default)]
    pub termination_details: Option<TerminationView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TerminationView<'a> {
    #[serde(borrow, default)]
    pub code: Text<'a>,
    #[serde(borrow, default, rename = "type")]
    pub kind: Text<'a>,
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
pub struct ForEachView {
    #[serde(default)]
    pub stats: Option<ForEachStatsView>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ForEachStatsView {
    #[serde(default)]
    pub task_run_stats: Option<IterationStats>,
}

/// A for-each task's `stats.task_run_stats`.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
pub struct IterationStats {
    #[serde(default)]
    pub total_iterations: Num,
    #[serde(default)]
    pub scheduled_iterations: Num,
    #[serde(default)]
    pub active_iterations: Num,
    #[serde(default)]
    pub completed_iterations: Num,
    #[serde(default)]
    pub succeeded_iterations: Num,
    #[serde(default)]
    pub failed_iterations: Num,
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
        // serde would read a struct from an array too (by position).
        if !text.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    /// `state.life_cycle_state`, else the V2 `status.state`.
    pub fn life_cycle_state(&self) -> Option<&str> {
        state_of(self.state.as_ref(), self.status.as_ref())
    }

    /// Whether the run is over (either state block terminal).
    pub fn is_terminal(&self) -> bool {
        terminal(self.state.as_ref(), self.status.as_ref())
    }

    /// Further pages of the run follow (more than 100 tasks).
    pub fn is_paged(&self) -> bool {
        self.has_more.is_some_and(|h| h.0)
            || self.next_page_token.get().is_some_and(|t| !t.is_empty())
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

fn state_of<'s>(state: Option<&'s StateView>, status: Option<&'s StatusView>) -> Option<&'s str> {
    state
        .and_then(|s| s.life_cycle_state.get())
        .or_else(|| status.and_then(|s| s.state.get()))
}

fn terminal(state: Option<&StateView>, status: Option<&StatusView>) -> bool {
    state
        .and_then(|s| s.life_cycle_state.get())
        .is_some_and(|s| TERMINAL_LIFE_CYCLE_STATES.contains(&s))
        || status.and_then(|s| s.state.get()) == Some("TERMINATED")
}

fn result_of<'s>(state: Option<&'s StateView>) -> Option<&'s str> {
    state.and_then(|s| s.result_state.get())
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

    /// What a change of a task compares: its run, attempt, states and for-each counts.
    fn moved_from(&self, other: &TaskView) -> bool {
        self.run_id != other.run_id
            || self.attempt_number != other.attempt_number
            || self.life_cycle_state() != other.life_cycle_state()
            || self.result() != other.result()
            || self.status.as_ref().and_then(|s| s.state.get())
                != other.status.as_ref().and_then(|s| s.state.get())
            || self.iterations() != other.iterations()
    }
}

/// What a poll compares: the run's own state fields, every task run's state, result, attempt
/// and for-each counts, and the repairs. Equal signatures: nothing a user can see moved.
pub fn signature(view: &RunView) -> u64 {
    let mut h = DefaultHasher::new();
    let state = view.state.as_ref();
    let status = view.status.as_ref();
    state.and_then(|s| s.life_cycle_state.get()).hash(&mut h);
    state.and_then(|s| s.result_state.get()).hash(&mut h);
    status.and_then(|s| s.state.get()).hash(&mut h);
    let termination = status.and_then(|s| s.termination_details.as_ref());
    termination.and_then(|t| t.code.get()).hash(&mut h);
    termination.and_then(|t| t.kind.get()).hash(&mut h);
    for task in view.tasks() {
        task.task_key.get().hash(&mut h);
        task.run_id.hash(&mut h);
        task.attempt_number.hash(&mut h);
        task.life_cycle_state().hash(&mut h);
        task.result().hash(&mut h);
        task.status
            .as_ref()
            .and_then(|s| s.state.get())
            .hash(&mut h);
        task.iterations().hash(&mut h);
    }
    let repairs = view.repairs();
    repairs.len().hash(&mut h);
    repairs.last().map(|r| r.id).hash(&mut h);
    h.finish()
}

/// `{ state, result }` of a run, or `{ state, result, attempt }` of a task.
fn state_json(state: Option<&str>, result: Option<&str>, attempt: Option<i64>) -> Value {
    let mut m = Map::new();
    m.insert("state".into(), json!(state));
    m.insert("result".into(), json!(result));
    if let Some(attempt) = attempt {
        m.insert("attempt".into(), json!(attempt));
    }
    Value::Object(m)
}

fn task_state_json(task: &TaskView) -> Value {
    state_json(
        task.life_cycle_state(),
        task.result(),
        Some(task.attempt_number.0.unwrap_or(0)),
    )
}

/// What moved between `previous` (the poll's previous update, `None` for its first) and `now`:
/// `{ run?: { from, to }, tasks: [{ taskKey, from, to }], repair?: { id } }`. `run` is there
/// when the run's own state or result moved; `tasks` lists the latest attempts that moved
/// (empty on a poll's first update, which has nothing to compare with); `repair` names the
/// latest repair when it is new (on a poll's first update: the repair the run is in).
pub fn changes(previous: Option<&RunView>, now: &RunView) -> Value {
    let mut out = Map::new();
    let run_now = (now.life_cycle_state(), result_of(now.state.as_ref()));
    let run_before = previous.map(|p| (p.life_cycle_state(), result_of(p.state.as_ref())));
    if run_before != Some(run_now) {
        out.insert(
            "run".into(),
            json!({
                "from": run_before.map(|(s, r)| state_json(s, r, None)),
                "to": state_json(run_now.0, run_now.1, None),
            }),
        );
    }
    let mut tasks = Vec::new();
    if let Some(previous) = previous {
        let before: HashMap<&str, &TaskView> = previous
            .latest_tasks()
            .into_iter()
            .map(|t| (t.task_key.get().unwrap_or(""), t))
            .collect();
        for task in now.latest_tasks() {
            let key = task.task_key.get().unwrap_or("");
            let from = before.get(key);
            if from.is_none_or(|f| task.moved_from(f)) {
                tasks.push(json!({
                    "taskKey": key,
                    "from": from.map(|f| task_state_json(f)),
                    "to": task_state_json(task),
                }));
            }
        }
    }
    let repair_now = now.latest_repair().and_then(|r| r.id.0);
    let repair_before = previous.and_then(|p| p.latest_repair()?.id.0);
    if repair_now.is_some() && repair_now != repair_before {
        out.insert("repair".into(), json!({ "id": repair_now }));
    }
    out.insert("tasks".into(), Value::Array(tasks));
    Value::Object(out)
}

/// The progress summary of an update. `server_now`: the workspace's clock when the run was
/// read (the poll answer's `Date`, ms); `history`: the job's typical durations, when known;
/// `floor`: the fraction of the poll's previous update (a poll's fraction never goes down).
///
/// ```json
/// { "tasksTotal", "tasksDone", "tasksFailed", "tasksRunning",
///   "forEach": [{ "taskKey", "total", "scheduled", "active", "completed", "succeeded", "failed" }],
///   "elapsedMs", "expectedMs", "taskExpectedMs": { "<taskKey>": ms }, "fraction", "since" }
/// ```
/// See the README ("Live progress") for how each figure is computed.
/// `terminal`: the run is over (as the poll read it), so `fraction` is 1.
pub fn summarize(
    view: &RunView,
    server_now: i64,
    history: Option<&History>,
    floor: f64,
    terminal: bool,
) -> Value {
    let latest = view.latest_tasks();
    let repair = view.latest_repair();
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
    for t in &latest {
        done += t.is_done() as u32;
        failed += (t.is_done() && t.is_failed()) as u32;
        running += t.is_running() as u32;
        if let Some(s) = t.iterations() {
            for_each.push(json!({
                "taskKey": t.task_key.get(),
                "total": s.total_iterations.0,
                "scheduled": s.scheduled_iterations.0,
                "active": s.active_iterations.0,
                "completed": s.completed_iterations.0,
                "succeeded": s.succeeded_iterations.0,
                "failed": s.failed_iterations.0,
            }));
        }
    }
    let mut task_expected = Map::new();
    for t in &latest {
        if let (Some(key), Some(ms)) = (t.task_key.get(), task_ms(t)) {
            task_expected.insert(key.to_string(), json!(ms));
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
    json!({
        "tasksTotal": latest.len(),
        "tasksDone": done,
        "tasksFailed": failed,
        "tasksRunning": running,
        "forEach": for_each,
        "elapsedMs": elapsed,
        "expectedMs": expected,
        "taskExpectedMs": task_expected,
        "fraction": (fraction * 1000.0).round() / 1000.0,
        "since": if repair.is_some() { "repair" } else { "run" },
    })
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
    fn the_signature_moves_with_tasks_and_repairs_only() {
        let sig = |run: &Value| signature(&RunView::parse(&text(run)).unwrap());
        let base = json!({"state": {"life_cycle_state": "RUNNING"}, "tasks": [task("a", 1, "RUNNING", None), task("b", 2, "BLOCKED", None)]});
        let mut same = base.clone();
        same["run_page_url"] = json!("x");
        same["tasks"][0]["execution_duration"] = json!(5);
        assert_eq!(
            sig(&base),
            sig(&same),
            "fields nobody sees move do not count"
        );
        let mut task_moved = base.clone();
        task_moved["tasks"][1]["state"]["life_cycle_state"] = json!("RUNNING");
        assert_ne!(sig(&base), sig(&task_moved));
        let mut retried = base.clone();
        retried["tasks"][0]["attempt_number"] = json!(1);
        assert_ne!(sig(&base), sig(&retried));
        let mut repaired = base.clone();
        repaired["repair_history"] =
            json!([{"type": "ORIGINAL", "id": 1}, {"type": "REPAIR", "id": 5}]);
        assert_ne!(sig(&base), sig(&repaired));
        let mut iterations = base.clone();
        iterations["tasks"][0]["for_each_task"] = json!({"stats": {"task_run_stats": {"total_iterations": 4, "completed_iterations": 1}}});
        let mut more = iterations.clone();
        more["tasks"][0]["for_each_task"]["stats"]["task_run_stats"]["completed_iterations"] =
            json!(2);
        assert_ne!(sig(&iterations), sig(&more));
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
