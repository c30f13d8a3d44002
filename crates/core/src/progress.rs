//! What a watcher sees move in a run, read straight from a poll's JSON text (the run is never
//! built as a `Value`):
//! - [`PollView`]: what every poll reads, with its [signature]: what a poll compares to decide
//!   whether anything a user can see moved: the run's state, and each task run's state, result,
//!   attempt and for-each counts, and the repairs;
//! - [`RunView`]: the fields of a run and its tasks that an update summarises;
//! - [`describe`]: an update's `changes` (what moved since the previous update, from the kept
//!   [`Digest`]) and `progress` (the summary).
//!
//! [signature]: PollView::signature
//!
//! The latest attempt of each task: `tasks[]` lists every task run of every attempt; per
//! `task_key`, the one named in the latest `repair_history` entry's `task_run_ids`, else the
//! last one in `tasks[]`.
use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// A view read from a JSON object's text; `None` for anything else (serde would read a struct
/// from an array too, by position).
fn parse_object<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
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
}

/// What a poll reads of a run: the state and ids `PolledRun` keeps, and the [signature] of
/// what a user can see, hashed while the text is read: tasks and repairs are never collected.
///
/// [signature]: PollView::signature
#[derive(Debug, Default, Deserialize)]
pub struct PollView<'a> {
    #[serde(default)]
    pub run_id: Num,
    #[serde(default)]
    pub job_id: Num,
    #[serde(borrow, default)]
    pub state: Option<StateView<'a>>,
    #[serde(borrow, default)]
    pub status: Option<StatusView<'a>>,
    #[serde(default)]
    tasks: Option<TasksSignature>,
    #[serde(default)]
    repair_history: Option<RepairsSignature>,
    #[serde(default)]
    has_more: Option<IgnoredBool>,
    #[serde(borrow, default)]
    next_page_token: Text<'a>,
}

/// What a task contributes to a poll's signature.
#[derive(Deserialize)]
struct TaskSignature<'a> {
    #[serde(borrow, default)]
    task_key: Text<'a>,
    #[serde(default)]
    run_id: Num,
    #[serde(default)]
    attempt_number: Num,
    #[serde(borrow, default)]
    state: Option<StateView<'a>>,
    #[serde(borrow, default)]
    status: Option<StatusView<'a>>,
    #[serde(default)]
    for_each_task: Option<ForEachView>,
}

/// The hash of every task run's key, run, attempt, states and for-each counts, in order.
#[derive(Debug, Default)]
struct TasksSignature(u64);

impl<'de> Deserialize<'de> for TasksSignature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TasksSignature, D::Error> {
        struct Tasks;
        impl<'de> Visitor<'de> for Tasks {
            type Value = TasksSignature;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of tasks")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TasksSignature, A::Error> {
                let mut h = DefaultHasher::new();
                while let Some(t) = seq.next_element::<TaskSignature<'de>>()? {
                    t.task_key.get().hash(&mut h);
                    t.run_id.hash(&mut h);
                    t.attempt_number.hash(&mut h);
                    state_of(t.state.as_ref(), t.status.as_ref()).hash(&mut h);
                    result_of(t.state.as_ref()).hash(&mut h);
                    t.status.as_ref().and_then(|s| s.state.get()).hash(&mut h);
                    t.for_each_task
                        .as_ref()
                        .and_then(|f| f.stats.as_ref()?.task_run_stats)
                        .hash(&mut h);
                }
                Ok(TasksSignature(h.finish()))
            }
        }
        d.deserialize_seq(Tasks)
    }
}

/// How many entries the repair history has, and the last one's id.
#[derive(Debug, Default)]
struct RepairsSignature(usize, Option<i64>);

impl<'de> Deserialize<'de> for RepairsSignature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RepairsSignature, D::Error> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            id: Num,
        }
        struct Repairs;
        impl<'de> Visitor<'de> for Repairs {
            type Value = RepairsSignature;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of repairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RepairsSignature, A::Error> {
                let mut out = RepairsSignature::default();
                while let Some(e) = seq.next_element::<Entry>()? {
                    out = RepairsSignature(out.0 + 1, e.id.0);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Repairs)
    }
}

impl<'a> PollView<'a> {
    /// The view of a run's JSON text; `None` when it does not read as a run object.
    pub fn parse(text: &'a str) -> Option<PollView<'a>> {
        parse_object(text)
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

    /// What a poll compares: the run's own state fields, every task run's state, result,
    /// attempt and for-each counts, and the repairs. Equal signatures: nothing a user can see
    /// moved.
    pub fn signature(&self) -> u64 {
        let mut h = DefaultHasher::new();
        let state = self.state.as_ref();
        let status = self.status.as_ref();
        state.and_then(|s| s.life_cycle_state.get()).hash(&mut h);
        state.and_then(|s| s.result_state.get()).hash(&mut h);
        status.and_then(|s| s.state.get()).hash(&mut h);
        let termination = status.and_then(|s| s.termination_details.as_ref());
        termination.and_then(|t| t.code.get()).hash(&mut h);
        termination.and_then(|t| t.kind.get()).hash(&mut h);
        self.tasks.as_ref().map(|t| t.0).hash(&mut h);
        let repairs = self.repair_history.as_ref();
        repairs.map(|r| (r.0, r.1)).hash(&mut h);
        h.finish()
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
    use serde_json::json;

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
    fn the_signature_moves_with_tasks_and_repairs_only() {
        let sig = |run: &Value| PollView::parse(&text(run)).unwrap().signature();
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
