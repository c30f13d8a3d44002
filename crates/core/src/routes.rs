//! The HTTP behaviour of `/api/jobs`, with no web framework in it: a [`RouteRequest`] goes in,
//! a [`RouteResponse`] (JSON, empty, or an SSE [`EventStream`]) comes out. The express glue,
//! the `node:http` handler and the Rust tests all drive the same [`Router::handle`].
//!
//! Every route runs as the service principal. Error bodies are `{ error, plugin: "jobs" }`
//! and carry only our own messages or the generic HTTP status text of an upstream failure.
//! The person a request names (`X-Forwarded-Email`, `-User`, `-Preferred-Username`, which
//! Databricks Apps sets) is recorded in the ledger as starting what the request starts, and is
//! who `GET /:jobKey/runs?startedBy=me` lists; it is never used for a permission.
//!
//! Our own checks answer with an HTTP status before a stream opens: the request, the job, the
//! params, another job's run (404), and the reads a write needs first (the job's definition, a
//! repair's run history). The streams themselves, their resume ids and their framing are
//! `sse.rs`'s.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::error::{JobsError, Result};
use crate::ids;
use crate::jobs::{token_job_id, Jobs};
use crate::ledger::who::{self, StartedBy};
use crate::params;
use crate::poller::RunWatch;
use crate::repair::{RepairOptions, RepairResume};
use crate::run;
use crate::sse::{self, EventStream, Opening, ResumeId, SSE_HEADERS};

/// The plugin name carried in every error body.
pub const PLUGIN_NAME: &str = "jobs";
/// Default and bounds of `GET /:jobKey/runs?limit=`.
pub const DEFAULT_LIST_LIMIT: i64 = 20;
pub const MAX_LIST_LIMIT: i64 = 100;
/// Headers of every JSON response.
pub const JSON_HEADERS: [(&str, &str); 1] = [("Content-Type", "application/json; charset=utf-8")];

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
        let Some(route) = RouteMatch::of(&req.method, &req.path) else {
            return RouteResponse::error(404, "NOT_FOUND", "Not Found");
        };
        let key = route.key.as_str();
        if let Err(e) = self.jobs.registry().get(key) {
            return match e {
                JobsError::UnknownJob { .. } => unknown_job(key),
                other => RouteResponse::from_error(&other),
            };
        }
        // The run a route names, read after the job (an unknown job is a 404 first); 0 for a
        // route that names none.
        let run_id = match route.run_id.as_deref().map(ids::parse) {
            None => 0,
            Some(Some(run_id)) => run_id,
            Some(None) => return invalid_run_id(),
        };
        let sp = Identity::ServicePrincipal;
        // Who the request names (Databricks Apps forwards it): recorded as starting what the
        // request starts, and `startedBy=me`. Display data, never a permission.
        let person = StartedBy::from_headers(|name| req.header(name));
        match route.spec.kind {
            Kind::Run => self.run(key, &req, person).await,
            Kind::List => {
                let limit = parse_limit(req.query.get("limit").map(String::as_str));
                let listed = match req.query.get("startedBy").map(String::as_str) {
                    None | Some("") => Box::pin(self.jobs.list_runs(key, &sp, Some(limit))).await,
                    Some("me") => match person.as_ref().and_then(StartedBy::key) {
                        Some(me) => {
                            Box::pin(self.jobs.list_runs_started_by(key, &sp, me, Some(limit)))
                                .await
                        }
                        None => return invalid_request(
                            "startedBy=me needs the X-Forwarded-Email or X-Forwarded-User header (Databricks Apps sets them)",
                        ),
                    },
                    Some(who) => {
                        let who: String = who.chars().take(who::MAX_FIELD_CHARS).collect();
                        Box::pin(self.jobs.list_runs_started_by(key, &sp, &who, Some(limit))).await
                    }
                };
                match listed {
                    Ok(runs) => RouteResponse::Json {
                        status: 200,
                        body: json!({ "runs": runs }),
                    },
                    Err(e) => RouteResponse::from_error(&e),
                }
            }
            Kind::Status => match self.jobs.last_run(key, &sp).await {
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
            Kind::GetRun => match self.jobs.get_run(key, &sp, run_id).await {
                Ok(run) => RouteResponse::Json {
                    status: 200,
                    body: run,
                },
                Err(e) => RouteResponse::from_error(&e),
            },
            Kind::Cancel => match self.jobs.cancel_run(key, &sp, run_id).await {
                Ok(()) => RouteResponse::Empty { status: 204 },
                Err(e) => RouteResponse::from_error(&e),
            },
            Kind::Repair => self.repair(key, run_id, &req, person).await,
            Kind::Reattach => {
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

    async fn run(&self, key: &str, req: &RouteRequest, person: Option<StartedBy>) -> RouteResponse {
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
            return match self.jobs.run_now_by(key, &sp, params, person).await {
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
            Ok(p) => p.started_by(person),
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
    async fn repair(
        &self,
        key: &str,
        run_id: i64,
        req: &RouteRequest,
        person: Option<StartedBy>,
    ) -> RouteResponse {
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
        options.started_by = person;
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

    /// `params` of a run or repair request, checked before anything is sent upstream (see
    /// `params::from_request`).
    fn checked_params(
        &self,
        key: &str,
        params: Option<Value>,
    ) -> Result<Option<Value>, RouteResponse> {
        let entry = self
            .jobs
            .registry()
            .get(key)
            .map_err(|e| RouteResponse::from_error(&e))?;
        params::from_request(entry, params)
            .map_err(|message| RouteResponse::error(400, VALIDATION_ERROR, message))
    }

    /// Opens a stream (see `sse::open`), stopped by `abort_all`.
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
        RouteResponse::Stream(sse::open(
            opening,
            start,
            cancel,
            self.active.clone(),
            self.options.heartbeat,
        ))
    }
}

/// One route of `/api/jobs`: its `name` (telemetry's operation, `getEndpoints()`), its HTTP
/// method, and its path relative to the mount, where `:jobKey` and `:runId` stand for a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Run,
    List,
    GetRun,
    Reattach,
    Status,
    Cancel,
    Repair,
}

/// Every route: the one table of them. [`Router::handle`] dispatches by it, and the JS glue
/// mounts and names routes from it (through the binding's `routeTable()`).
pub const ROUTES: [RouteSpec; 7] = [
    RouteSpec {
        name: "run",
        method: "POST",
        path: "/:jobKey/run",
        kind: Kind::Run,
    },
    RouteSpec {
        name: "runs",
        method: "GET",
        path: "/:jobKey/runs",
        kind: Kind::List,
    },
    RouteSpec {
        name: "run-detail",
        method: "GET",
        path: "/:jobKey/runs/:runId",
        kind: Kind::GetRun,
    },
    RouteSpec {
        name: "run-stream",
        method: "GET",
        path: "/:jobKey/runs/:runId/stream",
        kind: Kind::Reattach,
    },
    RouteSpec {
        name: "status",
        method: "GET",
        path: "/:jobKey/status",
        kind: Kind::Status,
    },
    RouteSpec {
        name: "cancel-run",
        method: "DELETE",
        path: "/:jobKey/runs/:runId",
        kind: Kind::Cancel,
    },
    RouteSpec {
        name: "repair-run",
        method: "POST",
        path: "/:jobKey/runs/:runId/repair",
        kind: Kind::Repair,
    },
];

/// A request's route, with the segments its path holds for `:jobKey` and `:runId` (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub spec: &'static RouteSpec,
    pub key: String,
    pub run_id: Option<String>,
}

impl RouteMatch {
    /// The route of a request: `method` as sent (HEAD answers as GET does; the glue sends no
    /// body), `path` relative to the mount and percent-encoded as received (a query is
    /// ignored). Segments are decoded before they are matched, so `/etl/%72un` is the run
    /// route: the JS glue asks this too (through the binding), and sees what dispatch sees.
    pub fn of(method: &str, path: &str) -> Option<RouteMatch> {
        let mut method = method.to_ascii_uppercase();
        if method == "HEAD" {
            method = "GET".into();
        }
        let segments: Vec<String> = path
            .split('?')
            .next()
            .unwrap_or("")
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        ROUTES.iter().find_map(|spec| {
            let parts = || spec.path.split('/').filter(|p| !p.is_empty());
            if spec.method != method || parts().count() != segments.len() {
                return None;
            }
            let mut found = RouteMatch {
                spec,
                key: String::new(),
                run_id: None,
            };
            for (part, segment) in parts().zip(&segments) {
                match part {
                    ":jobKey" => found.key = segment.clone(),
                    ":runId" => found.run_id = Some(segment.clone()),
                    fixed if fixed == segment => {}
                    _ => return None,
                }
            }
            Some(found)
        })
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
    fn requests_find_their_route_in_the_one_table() {
        let found = |method: &str, path: &str| {
            RouteMatch::of(method, path).map(|m| {
                let run = m.run_id.unwrap_or_default();
                format!("{} {} {run}", m.spec.name, m.key)
            })
        };
        for (method, path, expected) in [
            ("POST", "/etl/run", "run etl "),
            ("post", "etl/run/", "run etl "),
            ("GET", "/etl/runs?limit=3", "runs etl "),
            ("HEAD", "/etl/status", "status etl "),
            ("GET", "/etl/runs/7", "run-detail etl 7"),
            ("DELETE", "/etl/runs/x", "cancel-run etl x"),
            ("GET", "/etl/runs/7/stream", "run-stream etl 7"),
            ("POST", "/etl/runs/7/repair", "repair-run etl 7"),
            // Segments are decoded before they are matched, the key and the run id too.
            ("POST", "/etl/%72un", "run etl "),
            ("POST", "/a%20b/runs/%37/repair", "repair-run a b 7"),
        ] {
            assert_eq!(
                found(method, path).as_deref(),
                Some(expected),
                "{method} {path}"
            );
        }
        for (method, path) in [
            ("GET", "/etl/run"),
            ("POST", "/etl/runs"),
            ("GET", "/etl"),
            ("GET", "/etl/runs/7/other"),
            ("PUT", "/etl/runs/7"),
            ("POST", "/etl/run%"),
            ("GET", "/"),
        ] {
            assert_eq!(found(method, path), None, "{method} {path}");
        }
        // Each route is found by its own path, and names are unique.
        for spec in &ROUTES {
            let path = spec.path.replace(":jobKey", "k").replace(":runId", "1");
            let m = RouteMatch::of(spec.method, &path).unwrap();
            assert_eq!(m.spec, spec);
            assert_eq!(ROUTES.iter().filter(|r| r.name == spec.name).count(), 1);
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
}
