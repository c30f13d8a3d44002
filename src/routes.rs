//! Binding of the framework-agnostic routes (`appkit_jobs_core::routes`): plugin.js and http.js
//! hand a plain request object to `BindingRouter.handle` and write what comes back, JSON, an
//! empty status, or an SSE `BindingEventStream` pulled chunk by chunk.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appkit_jobs_core::routes::{
    EventStream, RouteRequest, RouteResponse, Router, RouterOptions, StreamCanceller,
};
use napi_derive::napi;
use serde_json::Value;

use appkit_jobs_core::jobs::Jobs;
use appkit_jobs_core::telemetry;

use crate::error::{binding_calls, BindingCallRecord};
use crate::jobs::BindingJobs;

#[napi(object)]
#[derive(Default)]
pub struct BindingRouterOptions {
    /// Silence (ms) after which an SSE stream sends a `: heartbeat` comment. Default 10000.
    pub heartbeat_ms: Option<u32>,
}

/// A request relative to the mount point: `{ method: "POST", path: "/etl/run", query, headers, body }`.
#[napi(object)]
pub struct BindingRouteRequest {
    pub method: String,
    pub path: String,
    pub query: Option<HashMap<String, String>>,
    /// Header names in lower case.
    pub headers: Option<HashMap<String, String>>,
    /// The raw JSON body, if any.
    pub body: Option<String>,
}

/// The `/api/jobs` routes over one plugin's core (its connection pool, cache and poller).
#[napi]
pub struct BindingRouter {
    inner: Arc<Router>,
    jobs: Arc<Jobs>,
}

#[napi]
impl BindingRouter {
    #[napi(constructor)]
    pub fn new(jobs: &BindingJobs, options: Option<BindingRouterOptions>) -> Self {
        let options = options.unwrap_or_default();
        let mut router_options = RouterOptions::default();
        if let Some(ms) = options.heartbeat_ms.filter(|ms| *ms > 0) {
            router_options.heartbeat = Duration::from_millis(ms as u64);
        }
        BindingRouter {
            inner: Arc::new(Router::new(jobs.core(), router_options)),
            jobs: jobs.core(),
        }
    }

    /// Serves one request. Never rejects for a request problem: errors are JSON responses.
    #[napi(catch_unwind)]
    pub async fn handle(&self, req: BindingRouteRequest) -> BindingRouteResponse {
        let request = RouteRequest {
            method: req.method,
            path: req.path,
            query: req.query.unwrap_or_default(),
            headers: req.headers.unwrap_or_default(),
            body: req.body.map(Into::into).unwrap_or_default(),
        };
        if !self.jobs.telemetry().enabled() {
            return BindingRouteResponse::from(self.inner.handle(request).await);
        }
        let (response, calls) = telemetry::collect(self.inner.handle(request)).await;
        let mut response = BindingRouteResponse::from(response);
        response.calls = binding_calls(calls);
        response
    }

    /// Streams resumed by `Last-Event-ID` since start.
    #[napi]
    pub fn resumes(&self) -> f64 {
        self.inner.resumes() as f64
    }

    /// Ends every open stream and drops its watcher (runs are not cancelled).
    #[napi]
    pub fn abort_all(&self) {
        self.inner.abort_all();
    }

    /// Streams whose run watcher is still alive.
    #[napi]
    pub fn active_streams(&self) -> u32 {
        self.inner.active_streams() as u32
    }
}

/// `kind` is `"json"` (`status`, `bodyJson`), `"empty"` (`status`) or `"stream"` (`takeStream()`);
/// `headers` are the ones to send with it.
#[napi]
pub struct BindingRouteResponse {
    kind: &'static str,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: Option<Value>,
    stream: Mutex<Option<EventStream>>,
    calls: Option<Vec<BindingCallRecord>>,
}

impl From<RouteResponse> for BindingRouteResponse {
    fn from(r: RouteResponse) -> Self {
        let status = r.status();
        let headers = r.headers();
        let (kind, body, stream) = match r {
            RouteResponse::Json { body, .. } => ("json", Some(body), None),
            RouteResponse::Empty { .. } => ("empty", None, None),
            RouteResponse::Stream(s) => ("stream", None, Some(s)),
        };
        BindingRouteResponse {
            kind,
            status,
            headers,
            body,
            stream: Mutex::new(stream),
            calls: None,
        }
    }
}

#[napi]
impl BindingRouteResponse {
    #[napi(getter)]
    pub fn kind(&self) -> String {
        self.kind.to_string()
    }

    #[napi(getter)]
    pub fn status(&self) -> u32 {
        self.status as u32
    }

    #[napi(getter)]
    pub fn headers(&self) -> HashMap<String, String> {
        self.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The Jobs API calls the request made, when telemetry is on (for spans).
    #[napi(getter)]
    pub fn calls(&self) -> Option<Vec<BindingCallRecord>> {
        self.calls.clone()
    }

    /// The JSON body as text: integers keep every digit (run ids beyond 2^53 included).
    #[napi(getter)]
    pub fn body_json(&self) -> Option<String> {
        self.body.as_ref().map(Value::to_string)
    }

    /// The SSE stream of a `"stream"` response; `null` otherwise or once taken.
    #[napi]
    pub fn take_stream(&self) -> Option<BindingEventStream> {
        let stream = self
            .stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let cancel = stream.canceller();
        let run_id = stream.run_id();
        Some(BindingEventStream {
            inner: Arc::new(tokio::sync::Mutex::new(stream)),
            cancel,
            run_id,
        })
    }
}

#[napi(object)]
pub struct BindingFrame {
    pub text: String,
    pub status: Option<String>,
    pub error: Option<String>,
    /// The stream's last frame (a terminal state or an error): only then may the response end
    /// cleanly; a stream that stops without one was cut short, and so is its connection.
    pub last: bool,
    /// The run followed, as decimal text, on the stream's first update.
    pub run_id: Option<String>,
}

/// Framed SSE text: `next()` resolves to the next chunk (event, error event or heartbeat
/// comment) or `null` at the end; `cancel()` stops it and drops the run watcher.
#[napi]
pub struct BindingEventStream {
    inner: Arc<tokio::sync::Mutex<EventStream>>,
    cancel: StreamCanceller,
    run_id: i64,
}

#[napi]
impl BindingEventStream {
    /// The next chunk: `{ text, status?, error?, last, runId? }` (the run's state of an update
    /// event, the code of an error event), or `null` at the end.
    #[napi(catch_unwind)]
    pub async fn next(&self) -> Option<BindingFrame> {
        let inner = self.inner.clone();
        let mut stream = inner.lock().await;
        stream.next().await.map(|f| BindingFrame {
            text: f.text,
            status: f.status,
            error: f.error,
            last: f.last,
            run_id: f.run_id.map(|id| id.to_string()),
        })
    }

    #[napi]
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The run this stream follows as decimal text, or `null` while a run-now's is not known.
    #[napi(getter)]
    pub fn run_id(&self) -> Option<String> {
        (self.run_id > 0).then(|| self.run_id.to_string())
    }
}
