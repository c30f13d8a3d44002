//! Reading a Jobs API Run: its life cycle state and whether it is over.
//! Runs stay `serde_json::Value` so every field the API sends reaches the caller untouched.
//!
//! A polled run is read straight from its JSON text instead (the run is never built as a
//! `Value`): borrowed readers of the API's fields ([`Num`], [`Text`], [`StateView`], ...),
//! [`PollView`] (what every poll reads, with its [signature]) and [`PolledRun`] (what a poll
//! keeps). `progress.rs` reads an update's run with the same readers.
//!
//! [signature]: PollView::signature
use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// Life cycle states after which a run never changes again.
pub const TERMINAL_LIFE_CYCLE_STATES: [&str; 3] = ["TERMINATED", "SKIPPED", "INTERNAL_ERROR"];

/// The state reported to watchers: `state.life_cycle_state` (still filled in by the API),
/// else the V2 `status.state`. `None` when the run carries neither.
pub fn life_cycle_state(run: &Value) -> Option<&str> {
    run.pointer("/state/life_cycle_state")
        .and_then(Value::as_str)
        .or_else(|| run.pointer("/status/state").and_then(Value::as_str))
}

/// True for every terminal state of either state block. Unknown states are not terminal,
/// and WAITING_FOR_RETRY / BLOCKED keep a run alive.
pub fn is_terminal(run: &Value) -> bool {
    let legacy = run
        .pointer("/state/life_cycle_state")
        .and_then(Value::as_str);
    let v2 = run.pointer("/status/state").and_then(Value::as_str);
    legacy.is_some_and(|s| TERMINAL_LIFE_CYCLE_STATES.contains(&s)) || v2 == Some("TERMINATED")
}

/// The run's `job_id`, accepting numbers and numeric strings.
pub fn job_id(run: &Value) -> Option<i64> {
    id_field(run, "job_id")
}

pub fn run_id(run: &Value) -> Option<i64> {
    id_field(run, "run_id")
}

/// The id a new repair must name as `latest_repair_id`: that of the last REPAIR item of the
/// run's `repair_history` (`None` for a run never repaired).
pub fn latest_repair_id(run: &Value) -> Option<i64> {
    run.get("repair_history")?
        .as_array()?
        .iter()
        .rev()
        .find(|item| item.get("type").and_then(Value::as_str) == Some("REPAIR"))
        .and_then(|item| crate::ids::from_json(item.get("id")?))
}

fn id_field(v: &Value, field: &str) -> Option<i64> {
    crate::ids::from_json(v.get(field)?)
}

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

/// A flag as sent (`has_more`): true only for a JSON `true`, false for anything else.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JsonTrue(pub bool);

impl<'de> Deserialize<'de> for JsonTrue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonTrue, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(JsonTrue(v == Value::Bool(true)))
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

/// A view read from a JSON object's text; `None` for anything else (serde would read a struct
/// from an array too, by position).
pub(crate) fn parse_object<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

pub(crate) fn state_of<'s>(
    state: Option<&'s StateView>,
    status: Option<&'s StatusView>,
) -> Option<&'s str> {
    state
        .and_then(|s| s.life_cycle_state.get())
        .or_else(|| status.and_then(|s| s.state.get()))
}

pub(crate) fn terminal(state: Option<&StateView>, status: Option<&StatusView>) -> bool {
    state
        .and_then(|s| s.life_cycle_state.get())
        .is_some_and(|s| TERMINAL_LIFE_CYCLE_STATES.contains(&s))
        || status.and_then(|s| s.state.get()) == Some("TERMINATED")
}

pub(crate) fn result_of<'s>(state: Option<&'s StateView>) -> Option<&'s str> {
    state.and_then(|s| s.result_state.get())
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
    has_more: Option<JsonTrue>,
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

/// Integers beyond this lose precision as JS numbers.
const MAX_SAFE_INTEGER: u64 = crate::ids::MAX_SAFE_INTEGER as u64;

/// A run as one poll read it: the whole run as JSON text, the few fields a poll reads (its
/// state, whether it is over, `job_id` and `run_id`) and its [`signature`]. Built straight
/// from the response body, the text is the body itself and the run is never built as a
/// `Value`: a watched run is polled every interval, and most polls only compare the signature.
///
/// [`signature`]: PollView::signature
#[derive(Debug, Clone)]
pub struct PolledRun {
    /// `state.life_cycle_state`, else the V2 `status.state`.
    pub status: Option<Box<str>>,
    /// The run is over (either state block terminal).
    pub terminal: bool,
    pub job_id: Option<i64>,
    pub run_id: Option<i64>,
    /// What a poll compares: equal signatures, nothing a user can see moved.
    pub signature: u64,
    /// The workspace's clock when the run was read (the answer's `Date`), ms since the epoch.
    pub server_time: Option<i64>,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    Text {
        text: Arc<str>,
        beyond_js_numbers: bool,
    },
    /// A response body known to be one line of UTF-8 JSON: copied to text and checked for
    /// integers beyond 2^53 only when asked (a poll whose state did not change never is).
    Raw(Bytes),
}

/// A run's JSON text, and whether it holds an integer beyond +-(2^53 - 1), which
/// `JSON.parse` would round.
#[derive(Debug, Clone)]
pub struct RunText {
    pub text: Arc<str>,
    pub beyond_js_numbers: bool,
}

impl PolledRun {
    /// From a parsed run (a run merged from several pages, tests).
    pub fn from_run(run: &Value) -> PolledRun {
        let text = serde_json::to_string(run).unwrap_or_else(|_| "{}".into());
        // A shape the view does not read still has its own state fields.
        let head;
        let view = match PollView::parse(&text) {
            Some(view) => view,
            None => {
                let mut fields = serde_json::Map::new();
                for key in ["state", "status", "job_id", "run_id"] {
                    if let Some(value) = run.get(key) {
                        fields.insert(key.into(), value.clone());
                    }
                }
                head = Value::Object(fields).to_string();
                PollView::parse(&head).unwrap_or_default()
            }
        };
        PolledRun::read(
            &view,
            Body::Text {
                text: Arc::from(text.as_str()),
                beyond_js_numbers: !js_safe(run),
            },
        )
    }

    /// From a runs/get body, when it holds the whole run: a JSON object on one line (SSE frames
    /// splice the text, so it must not break a line), in UTF-8, with no further page. `None`
    /// otherwise; the caller then parses and merges the run.
    pub fn from_body(body: &Bytes) -> Option<PolledRun> {
        if body.contains(&b'\n') || body.contains(&b'\r') {
            return None;
        }
        let text = std::str::from_utf8(body).ok()?;
        let view = PollView::parse(text)?;
        if view.is_paged() {
            return None;
        }
        Some(PolledRun::read(&view, Body::Raw(body.clone())))
    }

    fn read(view: &PollView, body: Body) -> PolledRun {
        PolledRun {
            status: view.life_cycle_state().map(Into::into),
            terminal: view.is_terminal(),
            job_id: view.job_id.0,
            run_id: view.run_id.0,
            signature: view.signature(),
            server_time: None,
            body,
        }
    }

    /// The run's text (the body's own bytes, copied once here) and its integer check.
    pub fn text(&self) -> RunText {
        match &self.body {
            Body::Text {
                text,
                beyond_js_numbers,
            } => RunText {
                text: text.clone(),
                beyond_js_numbers: *beyond_js_numbers,
            },
            Body::Raw(bytes) => {
                // `from_body` checked that the bytes are UTF-8 JSON.
                let text = std::str::from_utf8(bytes).unwrap_or("{}");
                // Only a run of 16 digits or more can be an integer beyond 2^53: without one the
                // text needs no walk. A body serde cannot walk is treated as unsafe: JS then gets
                // a value.
                let safe = !has_long_digit_run(text.as_bytes())
                    || serde_json::from_str::<JsSafe>(text).is_ok_and(|JsSafe(safe)| safe);
                RunText {
                    text: Arc::from(text),
                    beyond_js_numbers: !safe,
                }
            }
        }
    }
}

/// Whether `text` holds 16 or more digits in a row (2^53 has 16 digits; every shorter integer is
/// exact as a JS number).
fn has_long_digit_run(text: &[u8]) -> bool {
    let mut run = 0;
    for b in text {
        if b.is_ascii_digit() {
            run += 1;
            if run >= 16 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// Whether every integer in `run` is exact as a JS number.
pub fn js_safe(run: &Value) -> bool {
    match run {
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.unsigned_abs() <= MAX_SAFE_INTEGER,
            (None, Some(u)) => u <= MAX_SAFE_INTEGER,
            _ => true,
        },
        Value::Array(items) => items.iter().all(js_safe),
        Value::Object(fields) => fields.values().all(js_safe),
        _ => true,
    }
}

/// `js_safe` read straight from JSON text: walks the document without building it.
struct JsSafe(bool);

impl<'de> serde::Deserialize<'de> for JsSafe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<JsSafe, D::Error> {
        d.deserialize_any(JsSafeVisitor)
    }
}

struct JsSafeVisitor;

impl<'de> serde::de::Visitor<'de> for JsSafeVisitor {
    type Value = JsSafe;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<JsSafe, E> {
        Ok(JsSafe(true))
    }
    fn visit_i64<E>(self, v: i64) -> Result<JsSafe, E> {
        Ok(JsSafe(v.unsigned_abs() <= MAX_SAFE_INTEGER))
    }
    fn visit_u64<E>(self, v: u64) -> Result<JsSafe, E> {
        Ok(JsSafe(v <= MAX_SAFE_INTEGER))
    }
    fn visit_f64<E>(self, _: f64) -> Result<JsSafe, E> {
        Ok(JsSafe(true))
    }
    fn visit_str<E>(self, _: &str) -> Result<JsSafe, E> {
        Ok(JsSafe(true))
    }
    fn visit_unit<E>(self) -> Result<JsSafe, E> {
        Ok(JsSafe(true))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<JsSafe, A::Error> {
        let mut safe = true;
        while let Some(JsSafe(item)) = seq.next_element()? {
            safe &= item;
        }
        Ok(JsSafe(safe))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsSafe, A::Error> {
        let mut safe = true;
        while let Some((serde::de::IgnoredAny, JsSafe(item))) = map.next_entry()? {
            safe &= item;
        }
        Ok(JsSafe(safe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A task run in `state`.
    fn task(key: &str, run_id: i64, state: &str) -> Value {
        json!({"task_key": key, "run_id": run_id, "attempt_number": 0, "state": {"life_cycle_state": state}})
    }

    #[test]
    fn the_signature_moves_with_tasks_and_repairs_only() {
        let sig = |run: &Value| PollView::parse(&run.to_string()).unwrap().signature();
        let base = json!({"state": {"life_cycle_state": "RUNNING"}, "tasks": [task("a", 1, "RUNNING"), task("b", 2, "BLOCKED")]});
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
    fn terminal_states_of_both_blocks() {
        for s in ["TERMINATED", "SKIPPED", "INTERNAL_ERROR"] {
            assert!(
                is_terminal(&json!({"state": {"life_cycle_state": s}})),
                "{s}"
            );
        }
        assert!(is_terminal(&json!({"status": {"state": "TERMINATED"}})));
        for s in [
            "QUEUED",
            "PENDING",
            "RUNNING",
            "TERMINATING",
            "BLOCKED",
            "WAITING_FOR_RETRY",
            "SOMETHING_NEW",
        ] {
            assert!(
                !is_terminal(&json!({"state": {"life_cycle_state": s}})),
                "{s}"
            );
        }
        assert!(!is_terminal(&json!({"status": {"state": "WAITING"}})));
    }

    #[test]
    fn state_prefers_legacy_then_v2() {
        let run = json!({"state": {"life_cycle_state": "RUNNING"}, "status": {"state": "RUNNING"}});
        assert_eq!(life_cycle_state(&run), Some("RUNNING"));
        assert_eq!(
            life_cycle_state(&json!({"status": {"state": "QUEUED"}})),
            Some("QUEUED")
        );
        assert_eq!(life_cycle_state(&json!({})), None);
    }

    #[test]
    fn ids_from_numbers_and_strings() {
        assert_eq!(job_id(&json!({"job_id": 7})), Some(7));
        assert_eq!(
            job_id(&json!({"job_id": "9007199254740993"})),
            Some(9007199254740993)
        );
        assert_eq!(run_id(&json!({})), None);
    }

    #[test]
    fn a_polled_body_is_read_without_building_the_run() {
        let body = br#"{"run_id":7,"job_id":"12","state":{"life_cycle_state":"RUNNING"},"tasks":[{"run_id":9007199254740991,"x":[1.5,-3,null,true,"a\"b"]}],"has_more":false}"#;
        let polled = PolledRun::from_body(&Bytes::from_static(body)).unwrap();
        let RunText {
            text,
            beyond_js_numbers,
        } = polled.text();
        assert_eq!(&*text, std::str::from_utf8(body).unwrap());
        assert!(!beyond_js_numbers);
        assert_eq!(polled.status.as_deref(), Some("RUNNING"));
        assert_eq!(polled.job_id, Some(12));
        assert_eq!(polled.run_id, Some(7));
        assert!(!polled.terminal);
        // The same as reading the parsed run.
        let run: Value = serde_json::from_slice(body).unwrap();
        let from_run = PolledRun::from_run(&run);
        assert_eq!(
            (
                &from_run.status,
                from_run.terminal,
                from_run.job_id,
                from_run.run_id,
                from_run.signature
            ),
            (
                &polled.status,
                polled.terminal,
                polled.job_id,
                polled.run_id,
                polled.signature
            )
        );
        assert_eq!(from_run.text().beyond_js_numbers, beyond_js_numbers);
        assert_eq!(
            serde_json::from_str::<Value>(&from_run.text().text).unwrap(),
            run
        );
    }

    #[test]
    fn integers_beyond_js_numbers_are_seen_in_text_and_value_alike() {
        for body in [
            r#"{"run_id":9007199254740992}"#,
            r#"{"tasks":[{"run_id":9007199254740993}]}"#,
            r#"{"x":-9007199254740992}"#,
            r#"{"x":{"y":[18446744073709551615]}}"#,
        ] {
            let polled = PolledRun::from_body(&Bytes::from_static(body.as_bytes())).unwrap();
            assert!(polled.text().beyond_js_numbers, "{body}");
            let run: Value = serde_json::from_str(body).unwrap();
            assert!(!js_safe(&run), "{body}");
        }
        for body in [
            r#"{"x":-9007199254740991}"#,
            r#"{"x":1e300}"#,
            r#"{"x":[]}"#,
        ] {
            assert!(
                !PolledRun::from_body(&Bytes::from_static(body.as_bytes()))
                    .unwrap()
                    .text()
                    .beyond_js_numbers,
                "{body}"
            );
        }
    }

    #[test]
    fn bodies_that_cannot_be_spliced_or_are_paged_are_left_to_the_caller() {
        for body in [
            &b"{\"run_id\":1,\n\"state\":{}}"[..],
            b"{\"run_id\":1,\"has_more\":true}",
            b"{\"run_id\":1,\"next_page_token\":\"abc\"}",
            b"[1,2]",
            b"not json",
            b"",
            b"{\"run_id\":\"\xff\"}",
        ] {
            assert!(
                PolledRun::from_body(&Bytes::from_static(body)).is_none(),
                "{body:?}"
            );
        }
        assert!(PolledRun::from_body(&Bytes::from_static(
            b"{\"run_id\":1,\"next_page_token\":\"\"}"
        ))
        .is_some());
    }

    #[test]
    fn latest_repair_id_is_the_last_repair_item() {
        assert_eq!(latest_repair_id(&json!({})), None);
        assert_eq!(
            latest_repair_id(&json!({"repair_history": [{"type": "ORIGINAL"}]})),
            None
        );
        let run = json!({"repair_history": [
            {"type": "ORIGINAL"}, {"type": "REPAIR", "id": 734650698524280_i64}, {"type": "REPAIR", "id": "734650698524281"}
        ]});
        assert_eq!(latest_repair_id(&run), Some(734650698524281));
    }
}
