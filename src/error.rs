//! Errors cross the Node boundary as data: every async method resolves to a `BindingOutcome`
//! and the JS layer (handle.js, with errors.js) builds the `ExecutionResult` or the JS `Error`.
use std::future::Future;
use std::panic::AssertUnwindSafe;

use appkit_jobs_core::telemetry::CallRecord;
use appkit_jobs_core::JobsError;
use futures::FutureExt;
use napi_derive::napi;
use serde_json::Value;

/// The result of a native call: `{ ok: true, data }` or `{ ok: false, status, code, message,
/// reject }`. `message` is always public text (`JobsError::public_message`): never a secret or
/// an upstream message. `reject` marks a caller's mistake (`JobsError::rejects`), which the JS
/// API throws instead of resolving to `{ ok: false }`.
#[napi(object)]
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingOutcome {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject: Option<bool>,
    /// What went wrong underneath (`ECONNREFUSED`, `ENOTFOUND`, `ERR_TLS`, ...), for `cause.code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause_code: Option<String>,
    /// The upstream HTTP status behind the failure (the last one seen, for an outage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u32>,
    /// The Jobs API calls the call made, when telemetry is on (for spans).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<BindingCallRecord>>,
}

/// One logical Jobs API call (retries and pages included), measured by the core.
#[napi(object)]
#[derive(Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingCallRecord {
    /// The stock operation name: runNow, getRun, listRuns, getRunOutput, cancelRun, getJob.
    pub operation: String,
    /// Epoch milliseconds.
    pub start_ms: f64,
    pub duration_ms: f64,
    /// HTTP attempts sent (0 for a cache hit).
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// true: served from the read cache; false: a cached read that fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_hit: Option<bool>,
    /// The run's id as decimal text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl From<CallRecord> for BindingCallRecord {
    fn from(c: CallRecord) -> Self {
        BindingCallRecord {
            operation: c.operation.to_string(),
            start_ms: c.start_ms,
            duration_ms: c.duration_ms,
            attempts: c.attempts,
            http_status: c.http_status.map(u32::from),
            error_code: c.error_code,
            cache_hit: c.cache_hit,
            run_id: c.run_id.map(|id| id.to_string()),
        }
    }
}

/// The calls of a collected piece of work, for a boundary object (`None` when there were none).
pub fn binding_calls(calls: Vec<CallRecord>) -> Option<Vec<BindingCallRecord>> {
    (!calls.is_empty()).then(|| calls.into_iter().map(Into::into).collect())
}

impl BindingOutcome {
    pub fn ok(data: Value) -> Self {
        BindingOutcome {
            ok: true,
            data: Some(data),
            status: None,
            code: None,
            message: None,
            reject: None,
            cause_code: None,
            upstream_status: None,
            calls: None,
        }
    }

    /// Success with no data (`cancelRun`, the end of a watch).
    pub fn empty() -> Self {
        BindingOutcome {
            data: None,
            ..BindingOutcome::ok(Value::Null)
        }
    }

    pub fn err(error: &JobsError) -> Self {
        BindingOutcome {
            ok: false,
            data: None,
            status: Some(u32::from(error.status())),
            code: Some(error.code()),
            message: Some(error.public_message()),
            reject: Some(error.rejects()),
            cause_code: error.cause_code(),
            upstream_status: error.upstream_status().map(u32::from),
            calls: None,
        }
    }
}

/// What a successful core call hands back as an outcome's `data`.
pub trait OutcomeData {
    fn into_data(self) -> Option<Value>;
}

impl OutcomeData for Value {
    fn into_data(self) -> Option<Value> {
        Some(self)
    }
}

impl OutcomeData for Vec<Value> {
    fn into_data(self) -> Option<Value> {
        Some(Value::Array(self))
    }
}

impl OutcomeData for Option<Value> {
    fn into_data(self) -> Option<Value> {
        self
    }
}

impl OutcomeData for () {
    fn into_data(self) -> Option<Value> {
        None
    }
}

impl<T: OutcomeData> From<appkit_jobs_core::Result<T>> for BindingOutcome {
    fn from(result: appkit_jobs_core::Result<T>) -> Self {
        match result.map(OutcomeData::into_data) {
            Ok(Some(data)) => Self::ok(data),
            Ok(None) => Self::empty(),
            Err(e) => Self::err(&e),
        }
    }
}

/// A native future panicked.
pub struct Panicked;

impl From<Panicked> for BindingOutcome {
    fn from(_: Panicked) -> Self {
        BindingOutcome::err(&JobsError::Internal("the native call panicked".into()))
    }
}

/// Runs a future and turns a panic inside it into an `INTERNAL_ERROR` outcome
/// (`#[napi(catch_unwind)]` only covers the synchronous part of an async method).
pub fn guarded<F>(fut: F) -> impl Future<Output = BindingOutcome>
where
    F: Future<Output = BindingOutcome>,
{
    catch_panic(fut).map(|result| result.unwrap_or_else(BindingOutcome::from))
}

/// Runs a future; a panic inside it is `Err(Panicked)`.
///
/// Plain functions rather than `async fn`s: an `async fn` keeps its argument and the future
/// it awaits side by side, doubling the size of every native call and watch it wraps.
pub fn catch_panic<F: Future>(fut: F) -> impl Future<Output = Result<F::Output, Panicked>> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .map(|result| result.map_err(|_| Panicked))
}
