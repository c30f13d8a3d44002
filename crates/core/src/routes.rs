//! The HTTP behaviour of `/api/jobs`, with no web framework in it: a [`RouteRequest`] goes in,
//! a [`RouteResponse`] (JSON, empty, or an SSE [`EventStream`]) comes out. The express glue,
//! the `node:http` handler and the Rust tests all drive the same [`Router::handle`].
//!
//! Every route runs as the service principal. Error bodies are `{ error, plugin: "jobs" }`
//! and carry only our own messages or the generic HTTP status text of an upstream failure.
//!
//! Streams and their resume ids ([`ResumeId`], sent as SSE event ids):
//! - Our own checks answer with an HTTP status before a stream opens: the request, the job,
//!   the params, another job's run (404), and the reads a write needs first (the job's
//!   definition, a repair's run history).
//! - A run or repair stream then opens *before* its write is sent, with an opening data event
//!   `{status: null, timestamp, run: null, accepted: "run" | "repair"}` whose id says how to get
//!   back to the same run: `start:<idempotency token>` (a reconnect re-sends run-now with that
//!   token, and the workspace answers with the run it already started) or
//!   `repair:<runId>:<latest repair before, 0 for none>` (a reconnect finds the newer repair in
//!   the run's history, or re-sends the repair naming the same latest one, which the API
//!   refuses if the first went through). Neither needs state on the server, so a reconnect may
//!   land on any replica.
//! - Once the run is followed, ids are `<runId>:<seq>`; a reconnect with one re-attaches to the
//!   run (its job checked) and `seq` keeps counting.
//! - After the stream opened, every failure is an `event: error`, never an HTTP status, so a
//!   client that retries on an HTTP error cannot send a second write.
//! - A stream ends cleanly only after a terminal state or an error event. `abort_all` (a
//!   shutdown) stops the others without an end (see [`Frame::last`]): the glue cuts their
//!   connections, so that clients reconnect, to another instance, and resume.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::error::{JobsError, Result};
use crate::ids;
use crate::jobs::{token_job_id, Jobs};
use crate::poller::RunWatch;
use crate::repair::{RepairOptions, RepairResume};
use crate::run;

/// The plugin name carried in every error body.
pub const PLUGIN_NAME: &str = "jobs";
/// Without a params schema, a run request may carry at most this many keys.
pub const MAX_UNVALIDATED_PARAM_KEYS: usize = 50;
/// Default and bounds of `GET /:jobKey/runs?limit=`.
pub const DEFAULT_LIST_LIMIT: i64 = 20;
pub const MAX_LIST_LIMIT: i64 = 100;
/// Headers of every JSON response.
pub const JSON_HEADERS: [(&str, &str); 1] = [("Content-Type", "application/json; charset=utf-8")];
/// Headers of every SSE response.
pub const SSE_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache, no-transform"),
    ("X-Accel-Buffering", "no"),
];
/// The comment frame sent while a stream waits.
pub const HEARTBEAT_FRAME: &str = ": heartbeat\n\n";

/// A request, relative to the mount point (`/etl/run`, not `/api/jobs/etl/run`).
#[derive(Debug, Clone, Default)]
pub struct RouteRequest {
    pub method: String,
    /// Path relative to the mount, percent-encoded as received (segments are decoded here).
    pub path: String,
    pub query: HashMap<String, String>,
    /// Header names in lower case (`last-event-id`).
    pub headers: HashMap<String, String>,
    /// The raw request body (JSON text or empty).
    pub body: Bytes,
}

impl RouteRequest {
    pub fn new(method: &str, path: &str) -> Self {
        RouteRequest {
            method: method.to_string(),
            path: path.to_string(),
            ..Default::default()
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to answer.
#[derive(Debug)]
pub enum RouteResponse {
    Json { status: u16, body: Value },
    Empty { status: u16 },
    Stream(EventStream),
}

impl RouteResponse {
    pub fn status(&self) -> u16 {
        match self {
            RouteResponse::Json { status, .. } | RouteResponse::Empty { status } => *status,
            RouteResponse::Stream(_) => 200,
        }
    }

    /// The headers to send with this response (the glue adds only `Content-Length`).
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            RouteResponse::Json { .. } => &JSON_HEADERS,
            RouteResponse::Empty { .. } => &[],
            RouteResponse::Stream(_) => &SSE_HEADERS,
        }
    }

    /// An error body: the stock plugin's `{ error, plugin }`, plus the stable `code` a page can
    /// branch on (the `JobsError` code, e.g. VALIDATION_ERROR, UNKNOWN_JOB, NOT_FOUND).
    fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        RouteResponse::Json {
            status,
            body: json!({ "error": message.into(), "code": code, "plugin": PLUGIN_NAME }),
        }
    }

    fn from_error(e: &JobsError) -> Self {
        let status = match e {
            // The stock plugin answers 404 for a key whose id is not configured.
            JobsError::JobIdMissing { .. } => 404,
            other => other.status(),
        };
        RouteResponse::error(status, &e.code(), e.public_message())
    }
}

#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// A `: heartbeat` comment is sent when a stream has been silent this long.
    pub heartbeat: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            heartbeat: Duration::from_secs(10),
        }
    }
}

/// The routes of one plugin instance.
pub struct Router {
    jobs: Arc<Jobs>,
    options: RouterOptions,
    /// Cancelled by `abort_all`, then replaced, so later streams are not born cancelled.
    generation: Mutex<CancellationToken>,
    active: Arc<AtomicUsize>,
    /// Streams resumed by `Last-Event-ID` (none of which started a run).
    resumes: AtomicU64,
}

impl Router {
    pub fn new(jobs: Arc<Jobs>, options: RouterOptions) -> Router {
        Router {
            jobs,
            options,
            generation: Mutex::new(CancellationToken::new()),
            active: Arc::new(AtomicUsize::new(0)),
            resumes: AtomicU64::new(0),
        }
    }

    /// Ends every open stream and drops its watcher. Runs are not cancelled.
    pub fn abort_all(&self) {
        let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        generation.cancel();
        *generation = CancellationToken::new();
    }

    /// Streams resumed by `Last-Event-ID` since start.
    pub fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::Relaxed)
    }

    /// Streams whose producer (and run watcher) is still alive.
    pub fn active_streams(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub async fn handle(&self, req: RouteRequest) -> RouteResponse {
        let segments: Vec<String> = req
            .path
            .split('?')
            .next()
            .unwrap_or("")
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let mut method = req.method.to_ascii_uppercase();
        // HEAD answers as GET does; the glue sends no body.
        if method == "HEAD" {
            method = "GET".into();
        }
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let route = match (method.as_str(), seg.as_slice()) {
            ("POST", [key, "run"]) => Route::Run(key),
            ("GET", [key, "runs"]) => Route::List(key),
            ("GET", [key, "status"]) => Route::Status(key),
            ("GET", [key, "runs", id]) => Route::GetRun(key, id),
            ("DELETE", [key, "runs", id]) => Route::Cancel(key, id),
            ("GET", [key, "runs", id, "stream"]) => Route::Reattach(key, id),
            ("POST", [key, "runs", id, "repair"]) => Route::Repair(key, id),
            _ => return RouteResponse::error(404, "NOT_FOUND", "Not Found"),
        };
        let key = route.key();
        if let Err(e) = self.jobs.registry().get(key) {
            return match e {
                JobsError::UnknownJob { .. } => unknown_job(key),
                other => RouteResponse::from_error(&other),
            };
        }
        let sp = Identity::ServicePrincipal;
        match route {
            Route::Run(key) => self.run(key, &req).await,
            Route::List(key) => {
                let limit = parse_limit(req.query.get("limit").map(String::as_str));
                match self.jobs.list_runs(key, &sp, Some(limit)).await {
                    Ok(runs) => RouteResponse::Json {
                        status: 200,
                        body: json!({ "runs": runs }),
                    },
                    Err(e) => RouteResponse::from_error(&e),
                }
            }
            Route::Status(key) => match self.jobs.last_run(key, &sp).await {
                Ok(last) => {
                    let status = last
                        .as_ref()
                        .and_then(run::life_cycle_state)
                        .map(str::to_string);
                    RouteResponse::Json {
                        status: 200,
                        body: json!({ "status": status, "run": last }),
                    }
                }
                Err(e) => RouteResponse::from_error(&e),
            },
            Route::GetRun(key, id) => {
                let Some(run_id) = ids::parse(id) else {
                    return invalid_run_id();
                };
                match self.jobs.get_run(key, &sp, run_id).await {
                    Ok(run) => RouteResponse::Json {
                        status: 200,
                        body: run,
                    },
                    Err(e) => RouteResponse::from_error(&e),
                }
            }
            Route::Cancel(key, id) => {
                let Some(run_id) = ids::parse(id) else {
                    return invalid_run_id();
                };
                match self.jobs.cancel_run(key, &sp, run_id).await {
                    Ok(()) => RouteResponse::Empty { status: 204 },
                    Err(e) => RouteResponse::from_error(&e),
                }
            }
            Route::Repair(key, id) => {
                let Some(run_id) = ids::parse(id) else {
                    return invalid_run_id();
                };
                self.repair(key, run_id, &req).await
            }
            Route::Reattach(key, id) => {
                let Some(run_id) = ids::parse(id) else {
                    return invalid_run_id();
                };
                // An EventSource reconnect of this same URL sends Last-Event-ID: keep counting.
                let after = match last_event_id(&req).map(ResumeId::parse) {
                    Some(Some(ResumeId::Run { run_id: rid, seq })) if rid == run_id => seq,
                    Some(_) => return invalid_last_event_id(),
                    None => 0,
                };
                self.follow(key, run_id, after).await
            }
        }
    }

    async fn run(&self, key: &str, req: &RouteRequest) -> RouteResponse {
        let sp = Identity::ServicePrincipal;
        let streaming = req.query.get("stream").is_some_and(|v| v == "true");

        // A reconnect of a dropped stream: the same POST, plus the id of the last event seen.
        let mut token = None;
        if streaming {
            match last_event_id(req).map(ResumeId::parse) {
                None => {}
                Some(Some(ResumeId::Run { run_id, seq })) => {
                    return self.follow(key, run_id, seq).await
                }
                Some(Some(ResumeId::Start { token: t })) => {
                    // A token names its job: one of another job's never reaches run-now.
                    match self.jobs.registry().get(key).and_then(|e| e.job_id()) {
                        Ok(job_id) if token_job_id(&t) == Some(job_id) => token = Some(t),
                        Ok(_) => return unknown_resume(key),
                        Err(e) => return RouteResponse::from_error(&e),
                    }
                }
                Some(_) => return invalid_last_event_id(),
            }
        }

        let params = match self.run_params(key, &req.body) {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        if !streaming {
            return match self.jobs.run_now(key, &sp, params).await {
                Ok(started) => match run::run_id(&started) {
                    Some(run_id) => RouteResponse::Json {
                        status: 200,
                        body: json!({ "runId": run_id }),
                    },
                    None => RouteResponse::from_error(&JobsError::InvalidResponse(
                        "run-now answered without a run_id".into(),
                    )),
                },
                Err(e) => RouteResponse::from_error(&e),
            };
        }
        let replayed = token.is_some();
        let prepared = match self.jobs.prepare_run(key, &sp, params, token).await {
            Ok(p) => p,
            Err(e) => return RouteResponse::from_error(&e),
        };
        let opening = Opening {
            id: ResumeId::Start {
                token: prepared.token().to_string(),
            },
            // A resumed client saw the opening event already.
            accepted: (!replayed).then_some("run"),
            describe: JobsError::trigger_message,
        };
        if replayed {
            self.resumes.fetch_add(1, Ordering::Relaxed);
        }
        let (jobs, key) = (self.jobs.clone(), key.to_string());
        self.stream(
            opening,
            async move { jobs.send_and_watch(&key, &sp, &prepared, replayed).await }.boxed(),
        )
    }

    /// An SSE stream of a run of `key` that already exists (ownership checked), its event
    /// numbers continuing after `after_seq`: a resume when that is above 0.
    async fn follow(&self, key: &str, run_id: i64, after_seq: u64) -> RouteResponse {
        match self
            .jobs
            .watch_run(key, &Identity::ServicePrincipal, run_id)
            .await
        {
            Ok(watch) => {
                if after_seq > 0 {
                    self.resumes.fetch_add(1, Ordering::Relaxed);
                }
                let opening = Opening {
                    id: ResumeId::Run {
                        run_id,
                        seq: after_seq,
                    },
                    accepted: None,
                    describe: JobsError::public_message,
                };
                self.stream(opening, futures::future::ready(Ok(watch)).boxed())
            }
            Err(e) => RouteResponse::from_error(&e),
        }
    }

    /// `POST /:jobKey/runs/:runId/repair`: `{ repairId }`, or with `?stream=true` the run's
    /// updates from the repair to its new end, opened, framed and resumed as the run route's.
    async fn repair(&self, key: &str, run_id: i64, req: &RouteRequest) -> RouteResponse {
        let sp = Identity::ServicePrincipal;
        let streaming = req.query.get("stream").is_some_and(|v| v == "true");
        let mut resume = None;
        if streaming {
            match last_event_id(req).map(ResumeId::parse) {
                None => {}
                Some(Some(ResumeId::Run { run_id: rid, seq })) if rid == run_id => {
                    return self.follow(key, run_id, seq).await
                }
                Some(Some(ResumeId::Repair { run_id: rid, after })) if rid == run_id => {
                    resume = Some(after)
                }
                Some(_) => return invalid_last_event_id(),
            }
        }
        let body = match json_body(&req.body) {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        let mut options = match RepairOptions::from_json(body.as_ref()) {
            Ok(o) => o,
            Err(e) => return RouteResponse::from_error(&e),
        };
        options.params = match self.checked_params(key, options.params.take()) {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        if !streaming {
            return match self.jobs.repair_run(key, &sp, run_id, options).await {
                Ok(repaired) => RouteResponse::Json {
                    status: 200,
                    body: json!({ "repairId": repaired.get("repair_id") }),
                },
                Err(e) => RouteResponse::from_error(&e),
            };
        }
        let (jobs, owned_key) = (self.jobs.clone(), key.to_string());
        let Some(after) = resume else {
            let prepared = match self
                .jobs
                .prepare_repair(key, &sp, run_id, &options, None)
                .await
            {
                Ok(p) => p,
                Err(e) => return RouteResponse::from_error(&e),
            };
            let opening = Opening {
                id: ResumeId::Repair {
                    run_id,
                    after: prepared.latest(),
                },
                accepted: Some("repair"),
                describe: JobsError::public_message,
            };
            return self.stream(
                opening,
                async move {
                    let repair = jobs.send_repair(&owned_key, &sp, &prepared, false).await?;
                    jobs.watch_repair(&owned_key, &sp, run_id, repair).await
                }
                .boxed(),
            );
        };
        // Resumed: follow the repair this stream asked for, sending it only if it is not there.
        let found = match self
            .jobs
            .resume_repair(key, &sp, run_id, &options, after)
            .await
        {
            Ok(found) => found,
            Err(e) => return RouteResponse::from_error(&e),
        };
        self.resumes.fetch_add(1, Ordering::Relaxed);
        let opening = Opening {
            id: ResumeId::Repair { run_id, after },
            accepted: None,
            describe: JobsError::public_message,
        };
        self.stream(
            opening,
            async move {
                let repair = match found {
                    RepairResume::Made(repair) => repair,
                    RepairResume::Send(prepared) => {
                        jobs.send_repair(&owned_key, &sp, &prepared, true).await?
                    }
                };
                jobs.watch_repair(&owned_key, &sp, run_id, repair).await
            }
            .boxed(),
        )
    }

    /// The checks of the run route, before anything is sent upstream.
    fn run_params(&self, key: &str, body: &Bytes) -> Result<Option<Value>, RouteResponse> {
        let params = json_body(body)?.and_then(|mut b| b.as_object_mut()?.remove("params"));
        self.checked_params(key, params)
    }

    /// `params` of a run or repair request, checked before anything is sent upstream.
    fn checked_params(
        &self,
        key: &str,
        params: Option<Value>,
    ) -> Result<Option<Value>, RouteResponse> {
        let Some(params) = params else {
            return Ok(None);
        };
        let Value::Object(map) = &params else {
            return Err(RouteResponse::error(
                400,
                VALIDATION_ERROR,
                "params must be a plain object",
            ));
        };
        let entry = self
            .jobs
            .registry()
            .get(key)
            .map_err(|e| RouteResponse::from_error(&e))?;
        let has_schema = entry.config.params.is_some() || entry.config.external_schema;
        if !has_schema {
            // A task type (or job-level parameters) tells us where params go; without one
            // there is nothing they could mean.
            if entry.config.task_type.is_none() && !entry.config.job_parameters {
                return Err(RouteResponse::error(
                    400,
                    VALIDATION_ERROR,
                    "This job does not accept parameters",
                ));
            }
            if map.len() > MAX_UNVALIDATED_PARAM_KEYS {
                return Err(RouteResponse::error(
                    400,
                    VALIDATION_ERROR,
                    format!(
                        "Too many parameters ({}). Define a params schema to accept more than {}.",
                        map.len(),
                        MAX_UNVALIDATED_PARAM_KEYS
                    ),
                ));
            }
        }
        Ok(Some(params))
    }

    /// Opens a stream: the opening event (when `opening.accepted`), then the updates of the
    /// run `start` follows once it has done its write, or its failure as an error event. With
    /// an opening event, `start` waits until the glue has written it and asks for more: a
    /// client gone before it saw the id to resume by (it would reconnect without one) gets
    /// no write sent on its behalf.
    fn stream(
        &self,
        opening: Opening,
        start: BoxFuture<'static, Result<RunWatch>>,
    ) -> RouteResponse {
        let cancel = self
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .child_token();
        let (tx, rx) = mpsc::channel(16);
        let producer = Producer {
            id: opening.id.clone(),
            describe: opening.describe,
            tx,
            cancel: cancel.clone(),
            _active: ActiveGuard::new(self.active.clone()),
        };
        let announce = opening
            .accepted
            .map(|kind| opening_frame(&opening.id, kind));
        let (written, on_written) = match announce {
            Some(_) => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        tokio::spawn(producer.run(on_written, start));
        RouteResponse::Stream(EventStream {
            opening: announce.map(Box::new),
            written,
            rx,
            heartbeat: self.options.heartbeat,
            cancel,
            run_id: opening.id.run_id(),
        })
    }
}

/// How a stream begins: the id its events carry until the run is followed, the `accepted`
/// value of its opening event (`None`: no opening event, e.g. on a resume), and the public
/// text of a failure.
struct Opening {
    id: ResumeId,
    accepted: Option<&'static str>,
    describe: fn(&JobsError) -> String,
}

/// What a `Last-Event-ID` (an event id this router sent) names: where a reconnect resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeId {
    /// `<runId>:<seq>`: a followed run, `seq` events seen.
    Run { run_id: i64, seq: u64 },
    /// `start:<token>`: a run-now sent, or about to be, with this idempotency token.
    Start { token: String },
    /// `repair:<runId>:<after>`: a repair of the run sent, or about to be, after the repair
    /// `after` (0 in the text: none).
    Repair { run_id: i64, after: Option<i64> },
}

impl ResumeId {
    /// The id from its text; anything malformed is `None`.
    pub fn parse(text: &str) -> Option<ResumeId> {
        let text = text.trim();
        if let Some(token) = text.strip_prefix("start:") {
            token_job_id(token)?;
            return Some(ResumeId::Start {
                token: token.to_string(),
            });
        }
        if let Some(rest) = text.strip_prefix("repair:") {
            let (run, after) = rest.split_once(':')?;
            let after = match after {
                "0" => None,
                other => Some(ids::parse(other)?),
            };
            return Some(ResumeId::Repair {
                run_id: ids::parse(run)?,
                after,
            });
        }
        let (run_id, seq) = parse_event_id(text)?;
        Some(ResumeId::Run { run_id, seq })
    }

    /// The run it names, 0 when not known yet (a run-now's token).
    pub fn run_id(&self) -> i64 {
        match self {
            ResumeId::Run { run_id, .. } | ResumeId::Repair { run_id, .. } => *run_id,
            ResumeId::Start { .. } => 0,
        }
    }
}

impl std::fmt::Display for ResumeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResumeId::Run { run_id, seq } => write!(f, "{run_id}:{seq}"),
            ResumeId::Start { token } => write!(f, "start:{token}"),
            ResumeId::Repair { run_id, after } => {
                write!(f, "repair:{run_id}:{}", after.unwrap_or(0))
            }
        }
    }
}

enum Route<'a> {
    Run(&'a str),
    List(&'a str),
    Status(&'a str),
    GetRun(&'a str, &'a str),
    Cancel(&'a str, &'a str),
    Reattach(&'a str, &'a str),
    Repair(&'a str, &'a str),
}

impl<'a> Route<'a> {
    fn key(&self) -> &'a str {
        match self {
            Route::Run(k) | Route::List(k) | Route::Status(k) => k,
            Route::GetRun(k, _)
            | Route::Cancel(k, _)
            | Route::Reattach(k, _)
            | Route::Repair(k, _) => k,
        }
    }
}

/// A request body: `None` when empty or `null`, else a JSON object (400 otherwise).
fn json_body(body: &Bytes) -> Result<Option<Value>, RouteResponse> {
    let text = std::str::from_utf8(body).map_err(|_| invalid_request("Invalid JSON body"))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str(text) {
        Ok(Value::Null) => Ok(None),
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(invalid_request("Request body must be a JSON object")),
        Err(_) => Err(invalid_request("Invalid JSON body")),
    }
}

/// Counts a live producer until it is dropped.
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(counter)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Turns a stream's start (its write, then its watch) into SSE frames. Ends after a terminal
/// state or an error event, when the stream is dropped or cancelled, or on `abort_all`; the
/// watcher is dropped with it, and so is a write still in flight (a reconnect re-sends it
/// under the same resume id).
struct Producer {
    /// The id of the events sent so far: the opening id until the run is followed, then
    /// `<runId>:<seq>`.
    id: ResumeId,
    describe: fn(&JobsError) -> String,
    tx: mpsc::Sender<Frame>,
    cancel: CancellationToken,
    _active: ActiveGuard,
}

impl Producer {
    /// `written`: resolves once the opening event was written (see `Router::stream`).
    async fn run(
        mut self,
        written: Option<oneshot::Receiver<()>>,
        start: BoxFuture<'static, Result<RunWatch>>,
    ) {
        let cancel = self.cancel.clone();
        let tx = self.tx.clone();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tx.closed() => {}
            _ = self.produce(written, start) => {}
        }
    }

    async fn produce(
        &mut self,
        written: Option<oneshot::Receiver<()>>,
        start: BoxFuture<'static, Result<RunWatch>>,
    ) {
        if let Some(written) = written {
            if written.await.is_err() {
                return; // the stream was dropped first
            }
        }
        let mut watch = match start.await {
            Ok(watch) => watch,
            Err(e) => return self.send_error(&e).await,
        };
        // The start's own wording (e.g. "Failed to trigger job run") is for the start only.
        self.describe = JobsError::public_message;
        let run_id = watch.run_id();
        let mut seq = match self.id {
            ResumeId::Run { seq, .. } => seq,
            _ => 0,
        };
        let mut first = true;
        while let Some(item) = watch.next().await {
            match item {
                Ok(update) => {
                    // The job's cached reads were dropped once, when the shared poll published
                    // this update (see `Jobs::new`), not once per stream.
                    seq += 1;
                    self.id = ResumeId::Run { run_id, seq };
                    // The run's text is the poll's own, shared by every watcher of this
                    // update: splice it in rather than serializing the run per stream.
                    let frame = Frame {
                        text: update_frame(
                            &self.id.to_string(),
                            &update.run_json,
                            &update.meta_json,
                            &update.status,
                            update.timestamp,
                        ),
                        status: update.status.clone(),
                        error: None,
                        last: update.terminal,
                        run_id: first.then_some(run_id),
                    };
                    first = false;
                    if self.tx.send(frame).await.is_err() {
                        return;
                    }
                    if update.terminal {
                        return;
                    }
                }
                Err(e) => return self.send_error(&e).await,
            }
        }
    }

    async fn send_error(&mut self, e: &JobsError) {
        if let ResumeId::Run { run_id, seq } = self.id {
            self.id = ResumeId::Run {
                run_id,
                seq: seq + 1,
            };
        }
        let frame = Frame {
            text: error_frame(&self.id.to_string(), &(self.describe)(e), &e.code()),
            status: None,
            error: Some(e.code()),
            last: true,
            run_id: None,
        };
        let _ = self.tx.send(frame).await;
    }
}

/// One chunk of an SSE response, and what it says (for telemetry and the glue).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The text to write.
    pub text: String,
    /// The run's state, for an update event.
    pub status: Option<String>,
    /// The error code, for an `event: error`.
    pub error: Option<String>,
    /// The stream's last frame (a terminal state or an error): only after it may a response
    /// end cleanly. A stream that stops without one was cut short (a shutdown), and its
    /// connection must be cut too, so that the client reconnects and resumes.
    pub last: bool,
    /// The run followed, on the stream's first update.
    pub run_id: Option<i64>,
}

/// An open SSE response: pull framed text chunks with [`EventStream::next`] until `None`.
/// Dropping it (or [`EventStream::cancel`]) stops the watcher; the run goes on.
#[derive(Debug)]
pub struct EventStream {
    /// The opening event, until `next` hands it out (boxed: most streams have none).
    opening: Option<Box<Frame>>,
    /// Tells the producer the opening event was written: fired by the `next` after it.
    written: Option<oneshot::Sender<()>>,
    rx: mpsc::Receiver<Frame>,
    heartbeat: Duration,
    cancel: CancellationToken,
    run_id: i64,
}

impl EventStream {
    /// The next chunk to write: an event, an error event, or a `: heartbeat` comment after a
    /// silence of the configured interval. `None` once the stream is over.
    pub async fn next(&mut self) -> Option<Frame> {
        if self.cancel.is_cancelled() {
            self.rx.close();
            return None;
        }
        if let Some(opening) = self.opening.take() {
            return Some(*opening);
        }
        if let Some(written) = self.written.take() {
            let _ = written.send(());
        }
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => { self.rx.close(); None }
            item = self.rx.recv() => item,
            _ = tokio::time::sleep(self.heartbeat) => Some(Frame {
                text: HEARTBEAT_FRAME.to_string(),
                status: None,
                error: None,
                last: false,
                run_id: None,
            }),
        }
    }

    /// The opening event, for a glue that writes it itself before pulling the rest (the
    /// next `next` then starts the stream's write); `None` when the stream has none.
    pub fn take_opening(&mut self) -> Option<Frame> {
        self.opening.take().map(|f| *f)
    }

    /// Stops the stream: the watcher is dropped at once and `next` answers `None`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The run this stream follows, 0 while a run-now's is not known yet.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// A handle that cancels this stream from elsewhere (while `next` is pending).
    pub fn canceller(&self) -> StreamCanceller {
        StreamCanceller(self.cancel.clone())
    }
}

/// Cancels one [`EventStream`] without access to it.
#[derive(Debug, Clone)]
pub struct StreamCanceller(CancellationToken);

impl StreamCanceller {
    pub fn cancel(&self) {
        self.0.cancel();
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub fn event_id(run_id: i64, seq: u64) -> String {
    format!("{run_id}:{seq}")
}

/// `<runId>:<seq>` with a positive run id; anything else is `None`.
pub fn parse_event_id(id: &str) -> Option<(i64, u64)> {
    let (run, seq) = id.trim().split_once(':')?;
    let run_id = ids::parse(run)?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((run_id, seq.parse().ok()?))
}

/// The opening event of a stream, sent before its write: no state yet, only what was accepted.
fn opening_frame(id: &ResumeId, accepted: &'static str) -> Frame {
    let data = json!({
        "status": null,
        "timestamp": now_ms(),
        "run": null,
        "accepted": accepted,
    });
    Frame {
        text: message_frame(&id.to_string(), &data),
        status: None,
        error: None,
        last: false,
        run_id: None,
    }
}

/// Now, in epoch milliseconds (the `timestamp` of an event).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn message_frame(id: &str, data: &Value) -> String {
    format!("id: {id}\nevent: message\ndata: {data}\n\n")
}

/// The frame of one update, `data: {"changes":...,"progress":...,"run":<run_json>,"status":...,
/// "timestamp":...}` (the key order `serde_json` gives the same object), from the ready-made
/// JSON texts of the run and of its `meta_json` (an object whose fields come first).
pub fn update_frame(
    id: &str,
    run_json: &str,
    meta_json: &str,
    status: &Option<String>,
    timestamp: i64,
) -> String {
    let status = match status {
        Some(s) => Value::String(s.clone()).to_string(),
        None => "null".to_string(),
    };
    let meta = meta_json
        .trim()
        .strip_prefix('{')
        .and_then(|m| m.strip_suffix('}'))
        .unwrap_or("")
        .trim();
    let mut frame =
        String::with_capacity(run_json.len() + meta.len() + status.len() + id.len() + 80);
    frame.push_str("id: ");
    frame.push_str(id);
    frame.push_str("\nevent: message\ndata: {");
    if !meta.is_empty() {
        frame.push_str(meta);
        frame.push(',');
    }
    frame.push_str("\"run\":");
    frame.push_str(run_json);
    frame.push_str(",\"status\":");
    frame.push_str(&status);
    frame.push_str(",\"timestamp\":");
    frame.push_str(&timestamp.to_string());
    frame.push_str("}\n\n");
    frame
}

pub fn error_frame(id: &str, message: &str, code: &str) -> String {
    format!(
        "id: {id}\nevent: error\ndata: {}\n\n",
        json!({ "error": message, "code": code })
    )
}

/// `?limit=` as the stock plugin reads it (leading integer, 0 or missing means the default),
/// clamped to 1..=100.
pub fn parse_limit(raw: Option<&str>) -> i64 {
    let Some(raw) = raw else {
        return DEFAULT_LIST_LIMIT;
    };
    let t = raw.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lead: String = digits.chars().take_while(char::is_ascii_digit).collect();
    if lead.is_empty() {
        return DEFAULT_LIST_LIMIT;
    }
    // Anything longer than 4 digits is above the cap anyway.
    let magnitude: i64 = if lead.trim_start_matches('0').len() > 4 {
        10_000
    } else {
        lead.parse().unwrap_or(0)
    };
    let n = if neg { -magnitude } else { magnitude };
    if n == 0 {
        return DEFAULT_LIST_LIMIT;
    }
    n.clamp(1, MAX_LIST_LIMIT)
}

/// The job key as it may appear in an error: everything but `[A-Za-z0-9_-]` removed, at most
/// 64 characters kept.
pub fn sanitize_key(key: &str) -> String {
    key.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect()
}

/// The code of a 400 for params (the same as a schema failure's).
const VALIDATION_ERROR: &str = "VALIDATION_ERROR";

fn unknown_job(key: &str) -> RouteResponse {
    RouteResponse::error(
        404,
        "UNKNOWN_JOB",
        format!("Unknown job \"{}\"", sanitize_key(key)),
    )
}

fn invalid_request(message: &str) -> RouteResponse {
    RouteResponse::error(400, "INVALID_REQUEST", message)
}

fn invalid_run_id() -> RouteResponse {
    invalid_request("Invalid runId")
}

fn invalid_last_event_id() -> RouteResponse {
    invalid_request("Invalid Last-Event-ID")
}

/// A well-formed resume id that names another job's run-now.
fn unknown_resume(key: &str) -> RouteResponse {
    RouteResponse::error(
        404,
        "NOT_FOUND",
        format!(
            "No run of job \"{}\" matches this Last-Event-ID",
            sanitize_key(key)
        ),
    )
}

/// The request's `Last-Event-ID`, when it has a non-blank one.
fn last_event_id(req: &RouteRequest) -> Option<&str> {
    req.header("last-event-id").filter(|v| !v.trim().is_empty())
}

/// A path segment with its percent-escapes decoded (invalid UTF-8 replaced).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_clamps_like_the_stock_plugin() {
        assert_eq!(parse_limit(None), 20);
        assert_eq!(parse_limit(Some("")), 20);
        assert_eq!(parse_limit(Some("abc")), 20);
        assert_eq!(parse_limit(Some("0")), 20);
        assert_eq!(parse_limit(Some("5")), 5);
        assert_eq!(parse_limit(Some("5abc")), 5);
        assert_eq!(parse_limit(Some("-3")), 1);
        assert_eq!(parse_limit(Some("100")), 100);
        assert_eq!(parse_limit(Some("101")), 100);
        assert_eq!(parse_limit(Some("99999999999999999999")), 100);
    }

    #[test]
    fn event_ids_carry_the_run() {
        assert_eq!(event_id(42, 3), "42:3");
        assert_eq!(parse_event_id("42:3"), Some((42, 3)));
        assert_eq!(parse_event_id(" 42:0 "), Some((42, 0)));
        for bad in [
            "", "42", ":3", "42:", "0:1", "-4:1", "a:1", "42:x", "42:-1", "1e3:1", "42:3:4",
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_sanitised_and_paths_decoded() {
        assert_eq!(
            sanitize_key("<script>alert(1)</script>"),
            "scriptalert1script"
        );
        assert_eq!(sanitize_key("etl_2-b"), "etl_2-b");
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn spliced_update_frames_equal_serialized_ones() {
        let run = json!({"run_id": 7, "state": {"life_cycle_state": "RUNNING", "state_message": "a \"q\" \u{2028}"}, "tasks": [{"n": 1.5}]});
        let text = serde_json::to_string(&run).unwrap();
        for status in [
            Some("RUNNING".to_string()),
            Some("we\"ird\n".to_string()),
            None,
        ] {
            let spliced = update_frame("7:3", &text, "{}", &status, 1_700_000_000_123);
            let serialized = message_frame(
                "7:3",
                &json!({"status": status, "timestamp": 1_700_000_000_123i64, "run": run}),
            );
            assert_eq!(spliced, serialized);
            let meta =
                json!({"changes": {"tasks": [{"taskKey": "a"}]}, "progress": {"fraction": 0.5}});
            let spliced = update_frame("7:3", &text, &meta.to_string(), &status, 1);
            let serialized = message_frame(
                "7:3",
                &json!({"changes": meta["changes"], "progress": meta["progress"], "status": status, "timestamp": 1, "run": run}),
            );
            assert_eq!(spliced, serialized);
        }
    }

    #[test]
    fn frames_follow_appkit_framing() {
        let f = message_frame(
            "7:1",
            &json!({"status": "RUNNING", "timestamp": 1, "run": {"run_id": 7}}),
        );
        assert_eq!(f, "id: 7:1\nevent: message\ndata: {\"run\":{\"run_id\":7},\"status\":\"RUNNING\",\"timestamp\":1}\n\n");
        let e = error_frame("7:2", "Service Unavailable", "TEMPORARY_UNAVAILABLE");
        assert!(e.starts_with("id: 7:2\nevent: error\ndata: {"));
        let data: Value =
            serde_json::from_str(e.lines().nth(2).unwrap().trim_start_matches("data: ")).unwrap();
        assert_eq!(
            data,
            json!({"error": "Service Unavailable", "code": "TEMPORARY_UNAVAILABLE"})
        );
    }
}
