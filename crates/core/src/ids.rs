//! Run and job ids: positive 64-bit integers. Every place that reads an id from text (a route's
//! path segment, a run id from JS, a `jobId` in config, a `DATABRICKS_JOB_<NAME>` value, the
//! emulator's control API) reads it here, with one rule.
use serde_json::Value;

use crate::JobsError;

/// Integers beyond this are not exact as JS numbers (`Number.MAX_SAFE_INTEGER`).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// An id written in decimal: ASCII digits only (no sign, space, exponent, hex or fraction),
/// positive and within `i64`.
pub fn parse(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok().filter(|id| *id > 0)
}

/// An id from a JS number: positive, integral and exact (at most 2^53 - 1; larger ids travel
/// as `bigint` or as text).
pub fn from_f64(n: f64) -> Option<i64> {
    (n.fract() == 0.0 && n >= 1.0 && n <= MAX_SAFE_INTEGER as f64).then_some(n as i64)
}

/// An id from JSON: a positive integer, or its decimal text (ids beyond 2^53 cross from JS as
/// text so that no digit is lost). A JS number may arrive as a float (`42.0`): it counts when
/// it is integral and exact.
pub fn from_json(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(id) => (id > 0).then_some(id),
            None => n.as_f64().and_then(from_f64),
        },
        Value::String(s) => parse(s),
        _ => None,
    }
}

/// The error for a run id that is not one, showing what was given (quoted, cut to 40 chars).
pub fn invalid_run_id(given: &str) -> JobsError {
    let shown: String = given.chars().take(40).collect();
    JobsError::InvalidRequest(format!(
        "Invalid run id {shown:?}: expected a positive integer"
    ))
}

/// A run id from text, or `InvalidRequest` naming what was given.
pub fn run_id(text: &str) -> Result<i64, JobsError> {
    parse(text).ok_or_else(|| invalid_run_id(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_strict_positive_decimal_integers() {
        assert_eq!(parse("123"), Some(123));
        assert_eq!(parse("100000000001"), Some(100_000_000_001));
        assert_eq!(parse("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse("0012"), Some(12));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1e3",
            "0x10",
            "1.5",
            "1.0",
            " 1",
            "1 ",
            "abc",
            "12a",
            "9223372036854775808",
            "99999999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn js_numbers_must_be_exact() {
        assert_eq!(from_f64(42.0), Some(42));
        assert_eq!(from_f64(MAX_SAFE_INTEGER as f64), Some(MAX_SAFE_INTEGER));
        for bad in [
            0.0,
            -1.0,
            1.5,
            f64::NAN,
            f64::INFINITY,
            9007199254740992.0,
            1e21,
        ] {
            assert_eq!(from_f64(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_ids_are_numbers_or_decimal_text() {
        assert_eq!(from_json(&json!(1001)), Some(1001));
        assert_eq!(from_json(&json!(5_000_000_000.0)), Some(5_000_000_000));
        assert_eq!(
            from_json(&json!("9007199254740993")),
            Some(9_007_199_254_740_993)
        );
        for bad in [
            json!(0),
            json!(-4),
            json!(1.5),
            json!("abc"),
            json!(null),
            json!([1]),
        ] {
            assert_eq!(from_json(&bad), None, "{bad}");
        }
    }

    #[test]
    fn invalid_run_ids_name_what_was_given() {
        let e = run_id("abc").unwrap_err();
        assert_eq!(e.code(), "INVALID_REQUEST");
        assert_eq!(
            e.to_string(),
            "Invalid run id \"abc\": expected a positive integer"
        );
    }
}
