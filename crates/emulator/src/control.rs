//! Control endpoints of the emulator, under `/__emulator/`: no auth, never logged, never
//! faulted, all JSON.
//!
//! - `GET /__emulator/` -> an index of these endpoints
//! - `GET /__emulator/health` -> `{ok: true}`
//! - `GET /__emulator/requests` -> `{requests: [RequestLogEntry]}`; `DELETE /__emulator/requests`
//! - `POST /__emulator/faults` (a `FaultSpec`); `DELETE /__emulator/faults`
//! - `POST /__emulator/reset`
//! - `GET /__emulator/runs/{id}` -> the run; `POST /__emulator/runs/{id}/state` `{state}` -> the run
//! - `GET /__emulator/jobs` -> `{jobs: [...]}`; `POST /__emulator/jobs` (a `JobSpec`)
//! - `POST /__emulator/jobs/{id}/history` (a count, an array of `PastRun`, or `{runs}` / `{count}`)
//!   -> `{runIds: [...]}`, oldest first
//! - `POST /__emulator/users` (a `UserSpec`)
//! - `POST /__emulator/time` `{scale?, advanceMs?}`
//! - `POST /__emulator/oauth` `{ttlSecs?, expireAll?}`
use std::time::{Duration, Instant};

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use crate::config::{HistorySeed, JobSpec};
use crate::http::{invalid, json_response};
use crate::shared::{lock, Shared};
use appkit_jobs_core::{ids, JobsError};

pub(crate) fn control(shared: &Shared, method: &Method, rest: &str, bytes: &[u8]) -> Response {
    let body: Value = if bytes.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => return invalid(format!("control body is not JSON: {e}")).response(),
        }
    };
    let result = control_inner(shared, method.as_str(), rest, body);
    match result {
        Ok(v) => json_response(200, &v),
        Err(e) => {
            let status = if matches!(e, JobsError::NotFound(_)) {
                404
            } else {
                400
            };
            let code = if status == 404 {
                "RESOURCE_DOES_NOT_EXIST"
            } else {
                "INVALID_PARAMETER_VALUE"
            };
            json_response(
                status,
                &json!({"error_code": code, "message": e.to_string()}),
            )
        }
    }
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, JobsError> {
    serde_json::from_value(v)
        .map_err(|e| JobsError::InvalidRequest(format!("bad control body: {e}")))
}

fn control_inner(
    shared: &Shared,
    method: &str,
    rest: &str,
    body: Value,
) -> Result<Value, JobsError> {
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", [""]) => Ok(index()),
        ("GET", ["health"]) => Ok(json!({"ok": true})),
        ("GET", ["requests"]) => {
            Ok(json!({"requests": lock(&shared.log).iter().collect::<Vec<_>>()}))
        }
        ("DELETE", ["requests"]) => {
            lock(&shared.log).clear();
            Ok(json!({}))
        }
        ("POST", ["faults"]) => shared.inject_fault(from_json(body)?).map(|_| json!({})),
        ("DELETE", ["faults"]) => {
            lock(&shared.faults).clear();
            Ok(json!({}))
        }
        ("POST", ["reset"]) => {
            shared.reset();
            Ok(json!({}))
        }
        ("GET", ["jobs"]) => Ok(json!({"jobs": shared.jobs()})),
        ("POST", ["jobs"]) => shared
            .add_job(&from_json::<JobSpec>(body)?)
            .map(|_| json!({})),
        ("POST", ["jobs", id, "history"]) => {
            let id = ids::parse(id)
                .ok_or_else(|| JobsError::InvalidRequest(format!("invalid job id {id:?}")))?;
            // `{runs: [...]}` and `{count: n}` read as the bare array and number.
            let body = match body {
                Value::Object(mut o)
                    if o.len() == 1 && (o.contains_key("runs") || o.contains_key("count")) =>
                {
                    o.remove("runs")
                        .or_else(|| o.remove("count"))
                        .unwrap_or_default()
                }
                other => other,
            };
            let seed: HistorySeed = from_json(body)?;
            let run_ids = shared.seed_history(id, &seed)?;
            Ok(json!({"runIds": run_ids}))
        }
        ("POST", ["users"]) => shared.add_user(from_json(body)?).map(|_| json!({})),
        ("GET", ["runs", id]) => {
            let id = ids::run_id(id)?;
            shared
                .get_run(id)
                .ok_or_else(|| JobsError::NotFound(format!("Run {id} does not exist.")))
        }
        ("POST", ["runs", id, "state"]) => {
            let id = ids::run_id(id)?;
            let state = body
                .get("state")
                .and_then(Value::as_str)
                .ok_or_else(|| JobsError::InvalidRequest("missing \"state\"".into()))?;
            shared.set_run_state(id, state)
        }
        ("POST", ["time"]) => {
            if let Some(s) = body.get("scale") {
                shared.set_time_scale(
                    s.as_f64().ok_or_else(|| {
                        JobsError::InvalidRequest("scale must be a number".into())
                    })?,
                )?;
            }
            if let Some(ms) = body.get("advanceMs") {
                shared.advance_time(ms.as_f64().ok_or_else(|| {
                    JobsError::InvalidRequest("advanceMs must be a number".into())
                })?)?;
            }
            Ok(json!({}))
        }
        ("POST", ["oauth"]) => {
            if let Some(t) = body.get("ttlSecs") {
                let secs = t.as_u64().ok_or_else(|| {
                    JobsError::InvalidRequest("ttlSecs must be a non-negative integer".into())
                })?;
                shared.inner().oauth_ttl = Duration::from_secs(secs);
            }
            if body.get("expireAll").and_then(Value::as_bool) == Some(true) {
                let now = Instant::now();
                for exp in shared.inner().oauth_tokens.values_mut() {
                    *exp = now;
                }
            }
            Ok(json!({}))
        }
        _ => Err(JobsError::NotFound(format!(
            "no emulator control endpoint {method} /__emulator{rest}"
        ))),
    }
}

/// `GET /__emulator/`: what the control API offers.
fn index() -> Value {
    json!({
        "endpoints": [
            {"method": "GET", "path": "/__emulator/health", "does": "liveness: {ok: true}"},
            {"method": "GET", "path": "/__emulator/requests", "does": "the request log"},
            {"method": "DELETE", "path": "/__emulator/requests", "does": "clear the request log"},
            {"method": "POST", "path": "/__emulator/faults", "does": "inject a fault (path, method, status, errorCode, message, retryAfter, delayMs, reset, loseResponse, body, contentType, html, times)"},
            {"method": "DELETE", "path": "/__emulator/faults", "does": "clear the faults"},
            {"method": "POST", "path": "/__emulator/reset", "does": "forget runs, requests, faults and tokens"},
            {"method": "GET", "path": "/__emulator/jobs", "does": "the jobs served"},
            {"method": "POST", "path": "/__emulator/jobs", "does": "add or replace a job"},
            {"method": "POST", "path": "/__emulator/jobs/{id}/history", "does": "seed completed past runs: a count, or [{outcome?, durationMs?, queueMs?, agoMs?}]"},
            {"method": "POST", "path": "/__emulator/users", "does": "add a user token with permissions"},
            {"method": "GET", "path": "/__emulator/runs/{id}", "does": "a run as runs/get renders it"},
            {"method": "POST", "path": "/__emulator/runs/{id}/state", "does": "move a run to a state: {state}"},
            {"method": "POST", "path": "/__emulator/time", "does": "virtual time: {scale?, advanceMs?}"},
            {"method": "POST", "path": "/__emulator/oauth", "does": "OAuth tokens: {ttlSecs?, expireAll?}"}
        ]
    })
}
