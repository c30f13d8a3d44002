//! Reading a Jobs API Run: its life cycle state and whether it is over.
//! Runs stay `serde_json::Value` so every field the API sends reaches the caller untouched.
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::progress::PollView;

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

fn id_field(v: &Value, field: &str) -> Option<i64> {
    crate::ids::from_json(v.get(field)?)
}

/// Integers beyond this lose precision as JS numbers.
const MAX_SAFE_INTEGER: u64 = crate::ids::MAX_SAFE_INTEGER as u64;

/// A run as one poll read it: the whole run as JSON text, the few fields a poll reads (its
/// state, whether it is over, `job_id` and `run_id`) and its [`signature`]. Built straight
/// from the response body, the text is the body itself and the run is never built as a
/// `Value`: a watched run is polled every interval, and most polls only compare the signature.
///
/// [`signature`]: crate::progress::PollView::signature
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
}
