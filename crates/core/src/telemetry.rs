//! What the engine measures for OpenTelemetry. Spans, metrics and log records are made in JS
//! (`lib/telemetry.js`) with the app's own `@opentelemetry/api` providers; the core only
//! measures, where the work happens:
//!
//! - one [`CallRecord`] per logical Jobs API call (retries and pages included): operation, start,
//!   duration, attempts, last HTTP status, error code, cache hit. Calls made for a caller that
//!   collects them ([`collect`]: a JS method, a route, the start of a watch) come back with its
//!   result, for spans; every call is also summed for the `jobs.api_call.*` metrics, which JS
//!   takes in batches ([`Telemetry::take_calls`]) when its metric reader collects;
//! - retries; the poller's counters (`poller::PollCounters`) and gauges and the router's are
//!   read at collection time.
//!
//! Off by default: until JS sees a registered OpenTelemetry SDK nothing is recorded (one atomic
//! load per call). No record carries a token, a URL or upstream text.
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::error::JobsError;

/// Durations kept per operation between two collections; beyond it only counts are exact.
const MAX_PENDING_DURATIONS: usize = 100_000;

/// One logical Jobs API call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The stock plugin's operation name: `runNow`, `getRun`, `listRuns`, `getRunOutput`,
    /// `cancelRun`, `getJob`, `repairRun`.
    pub operation: &'static str,
    /// Epoch milliseconds when the call started.
    pub start_ms: f64,
    pub duration_ms: f64,
    /// HTTP attempts sent (0 for a cache hit).
    pub attempts: u32,
    /// The last HTTP status (200 on success), when an answer came.
    pub http_status: Option<u16>,
    /// `JobsError::code` of a failed call.
    pub error_code: Option<String>,
    /// `Some(true)`: served from the read cache; `Some(false)`: a cached read that fetched.
    pub cache_hit: Option<bool>,
    pub run_id: Option<i64>,
}

impl CallRecord {
    pub fn success(&self) -> bool {
        self.error_code.is_none()
    }
}

/// Calls of one operation and outcome since the last collection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallSum {
    pub count: u64,
    pub durations_ms: Vec<f64>,
}

#[derive(Default)]
struct Pending {
    calls: HashMap<(&'static str, bool), CallSum>,
    /// (operation, hit) -> reads served from or missed by the cache.
    cache: HashMap<(&'static str, bool), u64>,
}

/// The telemetry of one plugin instance.
#[derive(Default)]
pub struct Telemetry {
    enabled: AtomicBool,
    pending: Mutex<Pending>,
    /// Retries sent since start (attempts beyond the first), counted while enabled.
    retries: AtomicU64,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.enabled())
            .finish()
    }
}

tokio::task_local! {
    /// The calls of the work being collected (see [`collect`]).
    static COLLECTED: RefCell<Vec<CallRecord>>;
}

/// Runs `fut`, returning with its output the calls it made in this task.
pub async fn collect<F: Future>(fut: F) -> (F::Output, Vec<CallRecord>) {
    COLLECTED
        .scope(RefCell::new(Vec::new()), async {
            let out = fut.await;
            let calls = COLLECTED.with(|c| c.take());
            (out, calls)
        })
        .await
}

/// Epoch milliseconds now.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A call being measured: [`Telemetry::start`] to [`Telemetry::finish`].
pub struct Started {
    start_ms: f64,
    at: Instant,
}

impl Telemetry {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// The start of a call, when telemetry is on.
    pub fn start(&self) -> Option<Started> {
        self.enabled().then(|| Started {
            start_ms: now_ms(),
            at: Instant::now(),
        })
    }

    /// Records the call begun at `started`: for its collector, and for the metrics.
    pub fn finish<T>(
        &self,
        started: Started,
        operation: &'static str,
        run_id: Option<i64>,
        attempts: u32,
        cache_hit: Option<bool>,
        result: &Result<T, JobsError>,
    ) {
        let (http_status, error_code) = match result {
            Ok(_) => ((attempts > 0).then_some(200), None),
            Err(e) => (e.upstream_status(), Some(e.code())),
        };
        self.retries
            .fetch_add(u64::from(attempts.saturating_sub(1)), Ordering::Relaxed);
        self.record(CallRecord {
            operation,
            start_ms: started.start_ms,
            duration_ms: started.at.elapsed().as_secs_f64() * 1000.0,
            attempts,
            http_status,
            error_code,
            cache_hit,
            run_id,
        });
    }

    /// Records an operation of the ledger's database begun at `started` (`operation` names it,
    /// `ledger.*`; `error_code` its failure's code).
    pub fn finish_ledger(
        &self,
        started: Started,
        operation: &'static str,
        error_code: Option<String>,
    ) {
        self.record(CallRecord {
            operation,
            start_ms: started.start_ms,
            duration_ms: started.at.elapsed().as_secs_f64() * 1000.0,
            attempts: 1,
            http_status: None,
            error_code,
            cache_hit: None,
            run_id: None,
        });
    }

    fn record(&self, call: CallRecord) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(hit) = call.cache_hit {
                *pending.cache.entry((call.operation, hit)).or_default() += 1;
            }
            // A cache record stands beside the API call a miss makes: not a `jobs.api_call`.
            if call.cache_hit.is_none() {
                let sum = pending
                    .calls
                    .entry((call.operation, call.success()))
                    .or_default();
                sum.count += 1;
                if sum.durations_ms.len() < MAX_PENDING_DURATIONS {
                    sum.durations_ms.push(call.duration_ms);
                }
            }
        }
        let _ = COLLECTED.try_with(|c| c.borrow_mut().push(call));
    }

    /// Retries sent since telemetry was turned on.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The calls summed since the last take: `(operation, success, sum)`.
    pub fn take_calls(&self) -> Vec<(&'static str, bool, CallSum)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .calls
            .drain()
            .map(|((op, ok), sum)| (op, ok, sum))
            .collect()
    }

    /// Cache hits and misses since the last take: `(operation, hit, count)`.
    pub fn take_cache(&self) -> Vec<(&'static str, bool, u64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .cache
            .drain()
            .map(|((op, hit), n)| (op, hit, n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(t: &Telemetry, op: &'static str, attempts: u32, result: Result<(), JobsError>) {
        let started = t.start().expect("enabled");
        t.finish(started, op, Some(7), attempts, None, &result);
    }

    #[tokio::test]
    async fn nothing_is_recorded_while_off() {
        let t = Telemetry::default();
        assert!(t.start().is_none());
        assert!(t.take_calls().is_empty());
    }

    #[tokio::test]
    async fn calls_reach_their_collector_and_the_metric_sums() {
        let t = Telemetry::default();
        t.set_enabled(true);
        let ((), calls) = collect(async {
            finish(&t, "getRun", 1, Ok(()));
            finish(
                &t,
                "runNow",
                3,
                Err(JobsError::Api {
                    status: 503,
                    error_code: Some("TEMPORARILY_UNAVAILABLE".into()),
                    upstream_message: "secret text".into(),
                    retry_after: None,
                }),
            );
        })
        .await;
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].http_status, Some(200));
        assert_eq!(calls[1].http_status, Some(503));
        assert_eq!(
            calls[1].error_code.as_deref(),
            Some("TEMPORARILY_UNAVAILABLE")
        );
        assert_eq!(calls[1].attempts, 3);
        assert!(!format!("{calls:?}").contains("secret text"));
        // Outside a collector the call still counts for the metrics.
        finish(&t, "getRun", 1, Ok(()));
        let mut sums = t.take_calls();
        sums.sort_by_key(|(op, ok, _)| (*op, *ok));
        assert_eq!(
            sums.iter()
                .map(|(op, ok, s)| (*op, *ok, s.count, s.durations_ms.len()))
                .collect::<Vec<_>>(),
            [("getRun", true, 2, 2), ("runNow", false, 1, 1)]
        );
        assert_eq!(t.retries(), 2);
        assert!(t.take_calls().is_empty());
    }
}
