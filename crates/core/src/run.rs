//! Reading a Jobs API Run: its life cycle state and whether it is over.
//! Runs stay `serde_json::Value` so every field the API sends reaches the caller untouched.
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
    let legacy = run.pointer("/state/life_cycle_state").and_then(Value::as_str);
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

fn id_field(v: &Value, field: &str) -> Option<i64> {
    match v.get(field)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terminal_states_of_both_blocks() {
        for s in ["TERMINATED", "SKIPPED", "INTERNAL_ERROR"] {
            assert!(is_terminal(&json!({"state": {"life_cycle_state": s}})), "{s}");
        }
        assert!(is_terminal(&json!({"status": {"state": "TERMINATED"}})));
        for s in ["QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY", "SOMETHING_NEW"] {
            assert!(!is_terminal(&json!({"state": {"life_cycle_state": s}})), "{s}");
        }
        assert!(!is_terminal(&json!({"status": {"state": "WAITING"}})));
    }

    #[test]
    fn state_prefers_legacy_then_v2() {
        let run = json!({"state": {"life_cycle_state": "RUNNING"}, "status": {"state": "RUNNING"}});
        assert_eq!(life_cycle_state(&run), Some("RUNNING"));
        assert_eq!(life_cycle_state(&json!({"status": {"state": "QUEUED"}})), Some("QUEUED"));
        assert_eq!(life_cycle_state(&json!({})), None);
    }

    #[test]
    fn ids_from_numbers_and_strings() {
        assert_eq!(job_id(&json!({"job_id": 7})), Some(7));
        assert_eq!(job_id(&json!({"job_id": "9007199254740993"})), Some(9007199254740993));
        assert_eq!(run_id(&json!({})), None);
    }
}
