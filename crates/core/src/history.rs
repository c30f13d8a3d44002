//! How long a job's runs usually take, from its recent history: one `runs/list` page of
//! completed runs with their tasks (`expand_tasks`), read through the read cache per job and
//! identity (see `Jobs::history`). The figures measure the same span as a watcher's
//! `elapsedMs`: from a run's `start_time` (queue time included) to its `end_time`.
use std::collections::BTreeMap;

use serde_json::Value;

/// Typical durations of a job's successful runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The median `end_time - start_time` of the runs whose result was SUCCESS (not
    /// SUCCESS_WITH_FAILURES); `None` without any.
    pub run_ms: Option<i64>,
    /// Per task key, the median `end_time - start_time` of its successful task runs within
    /// those runs; tasks never seen succeed are absent.
    pub task_ms: BTreeMap<String, i64>,
}

impl History {
    /// From completed runs as runs/list gives them (`expand_tasks=true` for per-task figures).
    pub fn from_runs(runs: &[Value]) -> History {
        let mut run_ms = Vec::new();
        let mut task_ms: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for run in runs.iter().filter(|r| succeeded(r)) {
            if let Some(d) = span(run) {
                run_ms.push(d);
            }
            for task in run
                .get("tasks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(key) = task.get("task_key").and_then(Value::as_str) else {
                    continue;
                };
                if succeeded(task) {
                    if let Some(d) = span(task) {
                        task_ms.entry(key.to_string()).or_default().push(d);
                    }
                }
            }
        }
        History {
            run_ms: median(&mut run_ms),
            task_ms: task_ms
                .into_iter()
                .filter_map(|(k, mut v)| Some((k, median(&mut v)?)))
                .collect(),
        }
    }

    /// As JSON, for the read cache: `{ "run_ms": n | null, "task_ms": { key: n } }`.
    pub fn to_value(&self) -> Value {
        serde_json::json!({ "run_ms": self.run_ms, "task_ms": self.task_ms })
    }

    /// Back from `to_value`.
    pub fn from_value(v: &Value) -> History {
        History {
            run_ms: v.get("run_ms").and_then(Value::as_i64),
            task_ms: v
                .get("task_ms")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A run or task run whose result was SUCCESS (`state.result_state`, else the V2
/// `status.termination_details.code`).
fn succeeded(run: &Value) -> bool {
    run.pointer("/state/result_state")
        .or_else(|| run.pointer("/status/termination_details/code"))
        .and_then(Value::as_str)
        == Some("SUCCESS")
}

/// `end_time - start_time`, when both are set and in order.
fn span(run: &Value) -> Option<i64> {
    let start = run.get("start_time").and_then(Value::as_i64)?;
    let end = run.get("end_time").and_then(Value::as_i64)?;
    (start > 0 && end >= start).then_some(end - start)
}

/// The median (the mean of the two middle values for an even count), `None` when empty.
fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(result: &str, start: i64, end: i64, tasks: Value) -> Value {
        json!({"state": {"result_state": result}, "start_time": start, "end_time": end, "tasks": tasks})
    }

    #[test]
    fn medians_of_successful_runs_and_tasks() {
        let runs = vec![
            run(
                "SUCCESS",
                1000,
                4000,
                json!([
                    {"task_key": "a", "state": {"result_state": "SUCCESS"}, "start_time": 1100, "end_time": 2100},
                    {"task_key": "b", "state": {"result_state": "SUCCESS"}, "start_time": 2100, "end_time": 3900}
                ]),
            ),
            run(
                "SUCCESS",
                5000,
                10000,
                json!([
                    {"task_key": "a", "state": {"result_state": "SUCCESS"}, "start_time": 5100, "end_time": 8100},
                    {"task_key": "b", "state": {"result_state": "FAILED"}, "start_time": 8100, "end_time": 9000}
                ]),
            ),
            run("SUCCESS", 20000, 24000, json!([])),
            // Not counted: another result, a run without an end.
            run("SUCCESS_WITH_FAILURES", 0, 99999, json!([])),
            run("FAILED", 1, 2, json!([])),
            json!({"status": {"termination_details": {"code": "SUCCESS"}}, "start_time": 30000, "end_time": 0}),
        ];
        let h = History::from_runs(&runs);
        assert_eq!(h.run_ms, Some(4000)); // 3000, 4000, 5000
        assert_eq!(h.task_ms.get("a"), Some(&2000)); // 1000, 3000
        assert_eq!(h.task_ms.get("b"), Some(&1800));
        assert_eq!(History::from_value(&h.to_value()), h);
        assert_eq!(History::from_runs(&[]), History::default());
    }
}
