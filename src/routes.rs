//! Binding of the framework-agnostic routes (`appkit_jobs_core::routes`): plugin.js and http.js
//! hand a plain request object to `BindingRouter.handle` and write what comes back, JSON, an
//! empty status, or an SSE stream whose frames are pushed to JS in batches (`openStream`,
//! `deliverTo`, `takeFrames`), as watch events are.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use appkit_jobs_core::routes::{
    RouteMatch, RouteRequest, RouteResponse, Router, RouterOptions, ROUTES,
};
use appkit_jobs_core::sse::{EventStream, StreamCanceller};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use serde_json::Value;

use appkit_jobs_core::jobs::Jobs;
use appkit_jobs_core::telemetry;

use crate::delivery::{Delivery, Wake};
use crate::error::{binding_calls, BindingCallRecord};
use crate::jobs::BindingJobs;

/// A route of `/api/jobs`: its `name` (telemetry, `getEndpoints()`), HTTP `method` and `path`
/// relative to the mount (`/:jobKey/runs/:runId`).
#[napi(object, object_from_js = false)]
pub struct BindingRoute {
    pub name: String,
    pub method: String,
    pub path: String,
}

/// Every route the core serves, from its one table of them: the glue mounts and names these.
#[napi]
pub fn route_table() -> Vec<BindingRoute> {
    ROUTES
        .iter()
        .map(|r| BindingRoute {
            name: r.name.to_string(),
            method: r.method.to_string(),
            path: r.path.to_string(),
        })
        .collect()
}

/// The route of a request as dispatch sees it: its `name` and `path` (as in `routeTable()`)
/// and the request's job key, decoded.
#[napi(object, object_from_js = false)]
pub struct BindingRouteMatch {
    pub name: String,
    pub path: String,
    pub job_key: String,
}

/// The route `method path` is for (`path` relative to the mount, percent-encoded as received),
/// or `null`: the core's own matching, so the glue names and pre-validates the route dispatch
/// will serve.
#[napi]
pub fn match_route(method: String, path: String) -> Option<BindingRouteMatch> {
    RouteMatch::of(&method, &path).map(|m| BindingRouteMatch {
        name: m.spec.name.to_string(),
        path: m.spec.path.to_string(),
        job_key: m.key,
    })
}

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
    hub: Arc<StreamHub>,
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
            hub: Arc::default(),
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
            return BindingRouteResponse::new(self.inner.handle(request).await, &self.hub);
        }
        let (response, calls) = telemetry::collect(self.inner.handle(request)).await;
        let mut response = BindingRouteResponse::new(response, &self.hub);
        response.calls = binding_calls(calls);
        response
    }

    /// Where stream frames go: `wake()` is called (on the JS thread, without keeping Node
    /// alive) when frames are waiting; JS then calls `takeFrames()`. Set once, before any stream.
    #[napi]
    pub fn deliver_to(&self, #[napi(ts_arg_type = "() => void")] wake: Wake) {
        self.hub.delivery.wake_with(wake);
    }

    /// Every stream frame delivered since the last call, in order.
    #[napi]
    pub fn take_frames(&self) -> Vec<BindingStreamFrame> {
        self.hub.delivery.take()
    }

    /// Stops open stream `id` (its client left): its watcher is dropped; its end still comes.
    #[napi]
    pub fn cancel_stream(&self, id: u32) {
        if let Some(canceller) = self.hub.lock().get(&id) {
            canceller.cancel();
        }
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

/// `kind` is `"json"` (`status`, `bodyJson`), `"empty"` (`status`) or `"stream"` (`openStream(id)`);
/// `headers` are the ones to send with it.
#[napi]
pub struct BindingRouteResponse {
    kind: &'static str,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: Option<Value>,
    stream: Mutex<Option<EventStream>>,
    hub: Option<Arc<StreamHub>>,
    calls: Option<Vec<BindingCallRecord>>,
}

impl BindingRouteResponse {
    fn new(r: RouteResponse, hub: &Arc<StreamHub>) -> Self {
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
            hub: stream.is_some().then(|| hub.clone()),
            stream: Mutex::new(stream),
            calls: None,
        }
    }
}

#[napi]
impl BindingRouteResponse {
    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    #[napi(getter)]
    pub fn status(&self) -> u32 {
        self.status as u32
    }

    #[napi(getter)]
    pub fn headers(&self) -> HashMap<&'static str, &'static str> {
        self.headers.iter().copied().collect()
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

    /// The run a `"stream"` response follows as decimal text, or `null` while a run-now's is
    /// not known (or for any other response).
    #[napi(getter)]
    pub fn run_id(&self) -> Option<String> {
        let stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        stream
            .as_ref()
            .map(EventStream::run_id)
            .filter(|id| *id > 0)
            .map(|id| id.to_string())
    }

    /// Starts delivering a `"stream"` response's frames as stream `id` (see
    /// `BindingRouter.deliverTo`) and answers its opening event's bytes, for the glue to write
    /// first; the stream's write (a run-now, a repair) is sent once this is called. `null` when
    /// the stream has no opening event; nothing happens for any other response, or a second time.
    #[napi]
    pub fn open_stream(&self, id: u32) -> Option<Buffer> {
        let mut stream = self
            .stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let hub = self.hub.clone()?;
        let opening = stream
            .take_opening()
            .map(|f| Buffer::from(f.text.into_bytes()));
        hub.start(id, stream);
        opening
    }

    /// Drops a `"stream"` response unopened (a HEAD request): its watcher stops at once.
    #[napi]
    pub fn discard(&self) {
        self.stream.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// One chunk of an open stream, or its end, as delivered to JS in batches: `stream` is the id
/// given to `openStream`. A frame has `text` (an event, an error event or a heartbeat comment),
/// the run's `status` for an update, the `error` code for an error event, `last` for the
/// stream's last frame (a terminal state or an error), `runId` on the first update. The end
/// (`end: true`) comes once, after every frame; a stream that ends without a `last` frame was
/// cut short (a shutdown) and its connection should be cut too.
#[napi(object, object_from_js = false)]
pub struct BindingStreamFrame {
    pub stream: u32,
    pub text: Option<Buffer>,
    pub status: Option<String>,
    pub error: Option<String>,
    pub last: bool,
    pub run_id: Option<String>,
    pub end: bool,
}

/// The open streams of one router: each is pumped by a task that pushes its frames to one
/// queue (one JS wake-up per batch, not a promise per frame), and can be cancelled by id.
#[derive(Default)]
pub struct StreamHub {
    delivery: Delivery<BindingStreamFrame>,
    open: std::sync::Mutex<HashMap<u32, StreamCanceller>>,
}

impl StreamHub {
    fn start(self: &Arc<Self>, id: u32, mut stream: EventStream) {
        if let Some(replaced) = self.lock().insert(id, stream.canceller()) {
            replaced.cancel(); // JS never reuses a live id
        }
        let hub = self.clone();
        napi::bindgen_prelude::spawn(async move {
            while let Some(f) = stream.next().await {
                hub.delivery.push(BindingStreamFrame {
                    stream: id,
                    text: Some(Buffer::from(f.text.into_bytes())),
                    status: f.status,
                    error: f.error,
                    last: f.last,
                    run_id: f.run_id.map(|r| r.to_string()),
                    end: false,
                });
            }
            hub.lock().remove(&id);
            hub.delivery.push(BindingStreamFrame {
                stream: id,
                text: None,
                status: None,
                error: None,
                last: false,
                run_id: None,
                end: true,
            });
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, StreamCanceller>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}
