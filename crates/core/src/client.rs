//! Jobs API 2.2 client over one reqwest (rustls) pool per instance.
//!
//! Each method makes ONE attempt at the call (retries are the execution tier's job). The only
//! exception is authentication: a 401 answered to a service-principal OAuth token drops that
//! token and retries once with a new one, so a token that expires mid-wait recovers.
//!
//! Errors: a non-2xx answer is [`JobsError::Api`] with the status, the `error_code` of a JSON
//! body (none for HTML or other bodies), the upstream message (for logs only) and `Retry-After`;
//! a transport failure or an unreadable success body is [`JobsError::Network`]. No error text
//! contains a URL or a credential.
//!
//! Ids are `i64` end to end; JSON numbers are never read through `f64`.
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::Method;
use serde_json::{Map, Value};

use crate::auth::{exchange, Auth, Identity};
use crate::run::PolledRun;
use crate::{JobsError, Result};

/// Awaited before every HTTP request the client sends (e.g. a requests-per-second limiter).
pub trait RequestGate: Send + Sync + 'static {
    fn acquire(&self) -> BoxFuture<'_, ()>;
}

/// Options of a [`JobsClient`].
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// Sent as `User-Agent` (default `appkit-jobs/<version>`).
    pub user_agent: Option<String>,
    /// Awaited before each request; `None` sends at once.
    pub gate: Option<Arc<dyn RequestGate>>,
    /// Connect timeout (default 10 s). Whole-call timeouts belong to the execution tier.
    pub connect_timeout: Option<Duration>,
    /// HTTP requests in flight at most (default [`DEFAULT_MAX_IN_FLIGHT`]); later ones queue.
    /// This bounds the open connections (memory) under thousands of concurrent calls.
    pub max_in_flight: Option<usize>,
}

/// Default of [`ClientOptions::max_in_flight`]: one host easily serves many thousands of
/// requests per second through this many connections.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Idle connections kept per host, and for how long.
const POOL_MAX_IDLE_PER_HOST: usize = 64;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("user_agent", &self.user_agent)
            .field("gate", &self.gate.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// Query of [`JobsClient::list_runs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRuns {
    pub job_id: i64,
    /// How many runs to collect in total (pages of at most 25 are requested until reached).
    pub limit: usize,
    pub active_only: bool,
    pub completed_only: bool,
    pub expand_tasks: bool,
}

/// The largest `limit` the Jobs API accepts for one runs/list page.
pub const RUNS_LIST_PAGE: usize = 25;
/// Safety stop for runs/get and jobs/get page merging.
const MAX_PAGES: usize = 1000;

/// Arrays runs/get returns 100 at a time.
const RUN_PAGED_ARRAYS: &[&str] = &[
    "tasks",
    "job_clusters",
    "job_parameters",
    "repair_history",
    "iterations",
];
/// Arrays of a job's `settings` that jobs/get returns 100 at a time.
const JOB_SETTINGS_PAGED_ARRAYS: &[&str] = &["tasks", "job_clusters", "parameters", "environments"];

struct Inner {
    http: reqwest::Client,
    auth: Auth,
    gate: Option<Arc<dyn RequestGate>>,
    /// Bounds the HTTP requests in flight (send + body read; never held across retries).
    in_flight: tokio::sync::Semaphore,
}

/// A Jobs API client. Cheap to clone; clones share the connection pool and the OAuth token.
#[derive(Clone)]
pub struct JobsClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for JobsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobsClient")
            .field("auth", &self.inner.auth)
            .finish()
    }
}

impl JobsClient {
    /// Builds the client and its one connection pool; never fails (a broken configuration is
    /// reported by the calls).
    pub fn new(env: &HashMap<String, String>, options: ClientOptions) -> JobsClient {
        let ua = options
            .user_agent
            .clone()
            .unwrap_or_else(|| format!("appkit-jobs/{}", env!("CARGO_PKG_VERSION")));
        let http = reqwest::Client::builder()
            .user_agent(ua)
            .connect_timeout(options.connect_timeout.unwrap_or(Duration::from_secs(10)))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .or_else(|_| reqwest::Client::builder().build())
            .unwrap_or_else(|_| reqwest::Client::new());
        let auth = Auth::new(env, http.clone());
        JobsClient {
            inner: Arc::new(Inner {
                http,
                auth,
                gate: options.gate,
                in_flight: tokio::sync::Semaphore::new(
                    options
                        .max_in_flight
                        .unwrap_or(DEFAULT_MAX_IN_FLIGHT)
                        .max(1),
                ),
            }),
        }
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// POST /api/2.2/jobs/run-now. `body` carries `job_id`, parameters and `idempotency_token`.
    pub async fn run_now(&self, id: &Identity, body: &Value) -> Result<Value> {
        self.call(id, Method::POST, "api/2.2/jobs/run-now", &[], Some(body))
            .await
    }

    /// GET /api/2.2/jobs/runs/get, following `next_page_token` and merging the paged arrays.
    pub async fn get_run(&self, id: &Identity, run_id: i64) -> Result<Value> {
        let q = [("run_id", run_id.to_string())];
        self.get_merged(id, "api/2.2/jobs/runs/get", &q, |acc, page| {
            merge_arrays(acc, page, RUN_PAGED_ARRAYS)
        })
        .await
    }

    /// GET /api/2.2/jobs/runs/get as a poll reads it: the body's own text and the fields a poll
    /// compares, without building the run (see `PolledRun::from_body`). A run with further
    /// pages (more than 100 tasks) is merged as by `get_run`.
    pub async fn poll_run(&self, id: &Identity, run_id: i64) -> Result<PolledRun> {
        let path = "api/2.2/jobs/runs/get";
        let q = [("run_id", run_id.to_string())];
        let body = self.call_bytes(id, Method::GET, path, &q, None).await?;
        if let Some(polled) = PolledRun::from_body(&body) {
            return Ok(polled);
        }
        let first = parse_body(&body)?;
        let run = self
            .merge_pages(id, path, &q, first, |acc, page| {
                merge_arrays(acc, page, RUN_PAGED_ARRAYS)
            })
            .await?;
        Ok(PolledRun::from_run(&run))
    }

    /// GET /api/2.2/jobs/get, following `next_page_token` and merging `settings.tasks` etc.
    pub async fn get_job(&self, id: &Identity, job_id: i64) -> Result<Value> {
        let q = [("job_id", job_id.to_string())];
        self.get_merged(id, "api/2.2/jobs/get", &q, |acc, page| {
            if let (Some(a), Some(p)) = (acc.get_mut("settings"), page.get("settings")) {
                merge_arrays(a, p, JOB_SETTINGS_PAGED_ARRAYS);
            }
        })
        .await
    }

    /// GET /api/2.2/jobs/runs/list in pages of at most 25 until `limit` runs are collected or
    /// the API has no more. Newest first, as the API answers.
    pub async fn list_runs(&self, id: &Identity, q: ListRuns) -> Result<Vec<Value>> {
        let mut runs: Vec<Value> = Vec::new();
        let mut token: Option<String> = None;
        while runs.len() < q.limit {
            let mut query = vec![
                ("job_id", q.job_id.to_string()),
                (
                    "limit",
                    std::cmp::min(RUNS_LIST_PAGE, q.limit - runs.len()).to_string(),
                ),
            ];
            if q.active_only {
                query.push(("active_only", "true".into()));
            }
            if q.completed_only {
                query.push(("completed_only", "true".into()));
            }
            if q.expand_tasks {
                query.push(("expand_tasks", "true".into()));
            }
            if let Some(t) = &token {
                query.push(("page_token", t.clone()));
            }
            let mut page = self
                .call(id, Method::GET, "api/2.2/jobs/runs/list", &query, None)
                .await?;
            let got = match page.get_mut("runs").map(Value::take) {
                Some(Value::Array(items)) => items,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => {
                    return Err(JobsError::Network(
                        "runs/list answered with a malformed runs field".into(),
                    ))
                }
            };
            let empty = got.is_empty();
            runs.extend(got);
            let next = page
                .get("next_page_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty());
            let has_more = page
                .get("has_more")
                .and_then(Value::as_bool)
                .unwrap_or(next.is_some());
            match next {
                Some(t) if has_more && !empty && token.as_deref() != Some(t) => {
                    token = Some(t.to_string())
                }
                _ => break,
            }
        }
        runs.truncate(q.limit);
        Ok(runs)
    }

    /// GET /api/2.2/jobs/runs/get-output.
    pub async fn get_run_output(&self, id: &Identity, run_id: i64) -> Result<Value> {
        self.call(
            id,
            Method::GET,
            "api/2.2/jobs/runs/get-output",
            &[("run_id", run_id.to_string())],
            None,
        )
        .await
    }

    /// POST /api/2.2/jobs/runs/cancel. Asynchronous upstream: the run may still be running.
    pub async fn cancel_run(&self, id: &Identity, run_id: i64) -> Result<()> {
        let body = serde_json::json!({ "run_id": run_id });
        self.call(
            id,
            Method::POST,
            "api/2.2/jobs/runs/cancel",
            &[],
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    async fn get_merged(
        &self,
        id: &Identity,
        path: &str,
        base_query: &[(&str, String)],
        merge: impl Fn(&mut Value, &Value),
    ) -> Result<Value> {
        let first = self.call(id, Method::GET, path, base_query, None).await?;
        self.merge_pages(id, path, base_query, first, merge).await
    }

    /// Follows `next_page_token` from the `first` page, merging each page into it.
    async fn merge_pages(
        &self,
        id: &Identity,
        path: &str,
        base_query: &[(&str, String)],
        first: Value,
        merge: impl Fn(&mut Value, &Value),
    ) -> Result<Value> {
        let mut acc = first;
        let mut seen: Vec<String> = Vec::new();
        let mut pages = 1;
        while let Some(token) = next_page_token(&acc) {
            if seen.contains(&token) || pages >= MAX_PAGES {
                break;
            }
            let mut q = base_query.to_vec();
            q.push(("page_token", token.clone()));
            seen.push(token);
            let page = self.call(id, Method::GET, path, &q, None).await?;
            merge(&mut acc, &page);
            pages += 1;
            if let Some(obj) = acc.as_object_mut() {
                match page.get("next_page_token") {
                    Some(t) => obj.insert("next_page_token".into(), t.clone()),
                    None => obj.remove("next_page_token"),
                };
            }
        }
        if let Some(obj) = acc.as_object_mut() {
            obj.remove("next_page_token");
            if obj.contains_key("has_more") {
                obj.insert("has_more".into(), Value::Bool(false));
            }
        }
        Ok(acc)
    }

    /// One HTTP exchange (plus one retry after a 401 on a refreshable OAuth token), its body
    /// parsed.
    async fn call(
        &self,
        id: &Identity,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        parse_body(&self.call_bytes(id, method, path, query, body).await?)
    }

    /// One HTTP exchange (plus one retry after a 401 on a refreshable OAuth token): the body of
    /// a 2xx answer, else the API error.
    async fn call_bytes(
        &self,
        id: &Identity,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Bytes> {
        let url = self
            .inner
            .auth
            .host()?
            .join(path)
            .map_err(|_| JobsError::Internal("bad API path".into()))?;
        let mut retried_auth = false;
        loop {
            let bearer = self.inner.auth.bearer(id).await?;
            if let Some(gate) = &self.inner.gate {
                gate.acquire().await;
            }
            // Held for the exchange only (send and body), released before any retry or parse.
            // Taken before the request is built: a queued call holds no request.
            let permit = self
                .inner
                .in_flight
                .acquire()
                .await
                .map_err(|_| JobsError::Internal("the HTTP client is closed".into()))?;
            let mut req = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(bearer.expose());
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            // Boxed: the HTTP exchange is most of a call's future, and would otherwise sit in
            // every queued call and in every poll and run-now that contains one.
            let (status, retry_after, bytes) =
                Box::pin(exchange(req, "Jobs API request failed")).await?;
            if status == 401 && !retried_auth && self.inner.auth.invalidate(id, &bearer) {
                drop(permit);
                retried_auth = true;
                continue;
            }
            drop(permit);
            if !(200..300).contains(&status) {
                return Err(api_error(status, &bytes, retry_after, bearer.expose()));
            }
            return Ok(bytes);
        }
    }
}

/// A 2xx body as JSON; an empty body is `{}`.
fn parse_body(bytes: &[u8]) -> Result<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(bytes).map_err(|_| {
        JobsError::Network("the Jobs API answered with a body that is not JSON".into())
    })
}

fn next_page_token(v: &Value) -> Option<String> {
    v.get("next_page_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Appends `page[k]` to `acc[k]` for each paged array `k`.
fn merge_arrays(acc: &mut Value, page: &Value, keys: &[&str]) {
    let Some(acc) = acc.as_object_mut() else {
        return;
    };
    for k in keys {
        let Some(Value::Array(more)) = page.get(*k) else {
            continue;
        };
        match acc.get_mut(*k) {
            Some(Value::Array(existing)) => existing.extend(more.iter().cloned()),
            _ => {
                acc.insert((*k).to_string(), Value::Array(more.clone()));
            }
        }
    }
}

/// A non-2xx answer as a typed error. The upstream message is kept for logs only, cut to a
/// reasonable size and scrubbed of the bearer token should the server echo it.
fn api_error(status: u16, body: &[u8], retry_after: Option<Duration>, bearer: &str) -> JobsError {
    let (error_code, message) = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => {
            let code = o
                .get("error_code")
                .and_then(Value::as_str)
                .map(str::to_string);
            let msg = o
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| o.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            (code, msg)
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let looks_html = text.trim_start().starts_with('<');
            (
                None,
                if looks_html {
                    "non-JSON (HTML) error body".to_string()
                } else {
                    text.trim().to_string()
                },
            )
        }
    };
    let mut message: String = message.chars().take(1000).collect();
    if !bearer.is_empty() && message.contains(bearer) {
        message = message.replace(bearer, "***");
    }
    JobsError::Api {
        status,
        error_code,
        upstream_message: message,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_paged_arrays() {
        let mut acc = json!({"run_id": 5_000_000_000_123i64, "tasks": [{"task_key": "a"}], "next_page_token": "p2"});
        let page = json!({"tasks": [{"task_key": "b"}], "job_clusters": [{"job_cluster_key": "c"}], "run_name": "ignored"});
        merge_arrays(&mut acc, &page, RUN_PAGED_ARRAYS);
        assert_eq!(acc["tasks"].as_array().unwrap().len(), 2);
        assert_eq!(acc["job_clusters"][0]["job_cluster_key"], "c");
        assert!(acc.get("run_name").is_none());
        assert_eq!(acc["run_id"].as_i64(), Some(5_000_000_000_123));
    }

    #[test]
    fn api_error_parsing() {
        let e = api_error(
            400,
            br#"{"error_code":"INVALID_PARAMETER_VALUE","message":"Run 1 does not exist."}"#,
            None,
            "tok",
        );
        match e {
            JobsError::Api {
                status,
                error_code,
                upstream_message,
                retry_after,
            } => {
                assert_eq!(status, 400);
                assert_eq!(error_code.as_deref(), Some("INVALID_PARAMETER_VALUE"));
                assert_eq!(upstream_message, "Run 1 does not exist.");
                assert_eq!(retry_after, None);
            }
            other => panic!("{other:?}"),
        }
        let e = api_error(
            502,
            b"<html><body>Bad gateway</body></html>",
            Some(Duration::from_secs(3)),
            "tok",
        );
        assert!(matches!(
            e,
            JobsError::Api {
                status: 502,
                error_code: None,
                retry_after: Some(_),
                ..
            }
        ));
        assert_eq!(e.code(), "UPSTREAM_ERROR");
        let e = api_error(
            403,
            br#"{"error_code":"PERMISSION_DENIED","message":"token dapi-leak is not allowed"}"#,
            None,
            "dapi-leak",
        );
        assert!(!format!("{e:?}").contains("dapi-leak"));
    }

    // ---- against the emulator -------------------------------------------------------------

    use crate::emulator::{Emulator, EmulatorOptions, FaultSpec, RequestLogEntry, UserSpec};
    use crate::exec::{execute, TierPolicy};
    use std::sync::atomic::{AtomicU32, Ordering};

    async fn emulator(opts: EmulatorOptions) -> Emulator {
        Emulator::start(EmulatorOptions {
            time_scale: Some(0.0),
            ..opts
        })
        .await
        .expect("emulator starts")
    }

    fn sp_env(emu: &Emulator) -> HashMap<String, String> {
        HashMap::from([
            ("DATABRICKS_HOST".to_string(), emu.url()),
            ("DATABRICKS_TOKEN".to_string(), emu.token()),
            (
                "HOME".to_string(),
                "/nonexistent-appkit-jobs-home".to_string(),
            ),
        ])
    }

    fn m2m_env(emu: &Emulator) -> HashMap<String, String> {
        HashMap::from([
            ("DATABRICKS_HOST".to_string(), emu.url()),
            ("DATABRICKS_CLIENT_ID".to_string(), emu.client_id()),
            ("DATABRICKS_CLIENT_SECRET".to_string(), emu.client_secret()),
            (
                "HOME".to_string(),
                "/nonexistent-appkit-jobs-home".to_string(),
            ),
        ])
    }

    fn requests_to<'a>(log: &'a [RequestLogEntry], path: &str) -> Vec<&'a RequestLogEntry> {
        log.iter().filter(|r| r.path == path).collect()
    }

    fn query_param(entry: &RequestLogEntry, name: &str) -> Option<String> {
        url::form_urlencoded::parse(entry.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Read policy with short waits so retry tests stay quick.
    fn quick_read() -> TierPolicy {
        TierPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            ..TierPolicy::read()
        }
    }

    const SP: Identity = Identity::ServicePrincipal;

    #[tokio::test]
    async fn list_runs_pages_past_25() {
        let emu = emulator(EmulatorOptions::default()).await;
        let client = JobsClient::new(&sp_env(&emu), ClientOptions::default());
        // no runs yet: runs[] is absent upstream, an empty list here
        let none = client
            .list_runs(
                &SP,
                ListRuns {
                    job_id: 1001,
                    limit: 20,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(none.is_empty());

        let mut ids = Vec::new();
        for _ in 0..60 {
            let r = client.run_now(&SP, &json!({"job_id": 1001})).await.unwrap();
            ids.push(r["run_id"].as_i64().expect("an i64 run id"));
        }
        assert!(ids[0] > u32::MAX as i64, "ids above 2^32 stay exact");

        emu.clear_requests();
        let runs = client
            .list_runs(
                &SP,
                ListRuns {
                    job_id: 1001,
                    limit: 55,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(runs.len(), 55);
        let got: Vec<i64> = runs.iter().map(|r| r["run_id"].as_i64().unwrap()).collect();
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(
            got,
            newest_first[..55].to_vec(),
            "newest first, no gaps or repeats"
        );
        let log = emu.requests();
        let pages = requests_to(&log, "/api/2.2/jobs/runs/list");
        let limits: Vec<String> = pages
            .iter()
            .map(|r| query_param(r, "limit").unwrap())
            .collect();
        assert_eq!(limits, ["25", "25", "5"]);
        assert!(query_param(pages[0], "page_token").is_none());
        assert!(query_param(pages[1], "page_token").is_some());

        // more wanted than exist: stops when has_more is false
        emu.clear_requests();
        let all = client
            .list_runs(
                &SP,
                ListRuns {
                    job_id: 1001,
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(all.len(), 60);
        assert_eq!(
            requests_to(&emu.requests(), "/api/2.2/jobs/runs/list").len(),
            3
        );

        // filters are passed through
        emu.clear_requests();
        let active = client
            .list_runs(
                &SP,
                ListRuns {
                    job_id: 1001,
                    limit: 3,
                    active_only: true,
                    expand_tasks: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(active.len(), 3);
        let log = emu.requests();
        let q = requests_to(&log, "/api/2.2/jobs/runs/list")[0];
        assert_eq!(query_param(q, "active_only").as_deref(), Some("true"));
        assert_eq!(query_param(q, "expand_tasks").as_deref(), Some("true"));
        assert!(active[0]["tasks"].is_array());
        emu.stop().await;
    }

    #[tokio::test]
    async fn get_run_and_get_job_merge_pages_beyond_100_tasks() {
        let emu = emulator(EmulatorOptions::default()).await;
        let client = JobsClient::new(&sp_env(&emu), ClientOptions::default());
        let run_id = client.run_now(&SP, &json!({"job_id": 1004})).await.unwrap()["run_id"]
            .as_i64()
            .unwrap();
        emu.clear_requests();
        let run = client.get_run(&SP, run_id).await.unwrap();
        let tasks = run["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 150);
        let mut keys: Vec<&str> = tasks
            .iter()
            .map(|t| t["task_key"].as_str().unwrap())
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 150, "no task twice");
        assert!(run.get("next_page_token").is_none());
        assert_eq!(run["run_id"].as_i64(), Some(run_id));
        let log = emu.requests();
        let gets = requests_to(&log, "/api/2.2/jobs/runs/get");
        assert_eq!(gets.len(), 2);
        assert!(query_param(gets[1], "page_token").is_some());

        // A poll of the same run: the first page is not the whole run, so it is merged too.
        emu.clear_requests();
        let polled = client.poll_run(&SP, run_id).await.unwrap();
        let merged: Value = serde_json::from_str(&polled.text().text).unwrap();
        assert_eq!(merged["tasks"].as_array().unwrap().len(), 150);
        assert!(merged.get("next_page_token").is_none());
        assert_eq!(crate::run::run_id(&polled.head), Some(run_id));
        assert_eq!(
            requests_to(&emu.requests(), "/api/2.2/jobs/runs/get").len(),
            2
        );

        let job = client.get_job(&SP, 1004).await.unwrap();
        assert_eq!(job["settings"]["tasks"].as_array().unwrap().len(), 150);
        assert_eq!(job["job_id"].as_i64(), Some(1004));
        assert!(job.get("next_page_token").is_none());
        emu.stop().await;
    }

    #[tokio::test]
    async fn read_503_then_success_is_retried() {
        let emu = emulator(EmulatorOptions::default()).await;
        let client = JobsClient::new(&sp_env(&emu), ClientOptions::default());
        emu.inject_fault(FaultSpec {
            path: "/api/2.2/jobs/get".into(),
            status: Some(503),
            error_code: Some("TEMPORARILY_UNAVAILABLE".into()),
            ..Default::default()
        })
        .unwrap();
        // one attempt per client call: the 503 surfaces as a typed, transient error
        let e = client.get_job(&SP, 1001).await.unwrap_err();
        assert!(
            matches!(e, JobsError::Api { status: 503, ref error_code, .. } if error_code.as_deref() == Some("TEMPORARILY_UNAVAILABLE"))
        );
        assert!(e.is_transient());

        emu.inject_fault(FaultSpec {
            path: "/api/2.2/jobs/get".into(),
            status: Some(503),
            ..Default::default()
        })
        .unwrap();
        emu.clear_requests();
        let job = execute(&quick_read(), || client.get_job(&SP, 1001))
            .await
            .unwrap();
        assert_eq!(job["job_id"].as_i64(), Some(1001));
        let log = emu.requests();
        let statuses: Vec<u16> = requests_to(&log, "/api/2.2/jobs/get")
            .iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [503, 200]);

        // a reset connection is a network error, retried as well
        emu.inject_fault(FaultSpec {
            path: "/api/2.2/jobs/get".into(),
            reset: true,
            ..Default::default()
        })
        .unwrap();
        let job = execute(&quick_read(), || client.get_job(&SP, 1001))
            .await
            .unwrap();
        assert_eq!(job["job_id"].as_i64(), Some(1001));
        emu.stop().await;
    }

    #[tokio::test]
    async fn retry_after_on_429_is_honoured() {
        let emu = emulator(EmulatorOptions::default()).await;
        let client = JobsClient::new(&sp_env(&emu), ClientOptions::default());
        emu.inject_fault(FaultSpec {
            path: "/api/2.2/jobs/get".into(),
            status: Some(429),
            error_code: Some("REQUEST_LIMIT_EXCEEDED".into()),
            retry_after: Some(1),
            ..Default::default()
        })
        .unwrap();
        let e = client.get_job(&SP, 1001).await.unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(e.code(), "REQUEST_LIMIT_EXCEEDED");

        emu.inject_fault(FaultSpec {
            path: "/api/2.2/jobs/get".into(),
            status: Some(429),
            retry_after: Some(1),
            ..Default::default()
        })
        .unwrap();
        let started = std::time::Instant::now();
        let job = execute(&quick_read(), || client.get_job(&SP, 1001))
            .await
            .unwrap();
        assert_eq!(job["job_id"].as_i64(), Some(1001));
        // the 20 ms backoff was replaced by the server's 1 s
        assert!(started.elapsed() >= Duration::from_secs(1));
        emu.stop().await;
    }

    #[tokio::test]
    async fn run_now_retried_with_same_idempotency_token_starts_one_run() {
        let emu = emulator(EmulatorOptions::default()).await;
        let client = JobsClient::new(&sp_env(&emu), ClientOptions::default());
        let body = json!({"job_id": 1001, "idempotency_token": uuid::Uuid::new_v4().to_string()});
        emu.inject_fault(FaultSpec {
            path: "/api/2.2/jobs/run-now".into(),
            status: Some(503),
            ..Default::default()
        })
        .unwrap();
        let policy = TierPolicy {
            initial_backoff: Duration::from_millis(20),
            ..TierPolicy::write()
        };
        let first = execute(&policy, || client.run_now(&SP, &body))
            .await
            .unwrap();
        // the answer was lost in transit: the caller sends the same request again
        let again = execute(&policy, || client.run_now(&SP, &body))
            .await
            .unwrap();
        assert_eq!(first["run_id"], again["run_id"]);
        assert_eq!(emu.run_count(), 1);
        let log = emu.requests();
        let posts = requests_to(&log, "/api/2.2/jobs/run-now");
        assert_eq!(
            posts.iter().map(|r| r.status).collect::<Vec<_>>(),
            [503, 200, 200]
        );
        assert!(posts
            .iter()
            .all(|r| r.body["idempotency_token"] == body["idempotency_token"]));

        // cancel is idempotent and returns ()
        let run_id = first["run_id"].as_i64().unwrap();
        client.cancel_run(&SP, run_id).await.unwrap();
        client.cancel_run(&SP, run_id).await.unwrap();
        emu.stop().await;
    }

    #[tokio::test]
    async fn oauth_m2m_single_flight_refresh_and_401_recovery() {
        let emu = emulator(EmulatorOptions::default()).await;
        let client = JobsClient::new(&m2m_env(&emu), ClientOptions::default());
        assert_eq!(client.auth().credentials_kind().unwrap(), "oauth-m2m");

        // many concurrent callers, one token fetch
        let calls = (0..40).map(|_| client.get_job(&SP, 1001));
        for r in futures::future::join_all(calls).await {
            assert_eq!(r.unwrap()["job_id"].as_i64(), Some(1001));
        }
        assert_eq!(client.auth().oauth_fetch_count(), 1);
        let log = emu.requests();
        assert_eq!(requests_to(&log, "/oidc/v1/token").len(), 1);
        assert_eq!(
            requests_to(&log, "/oidc/.well-known/oauth-authorization-server").len(),
            1
        );
        assert!(requests_to(&log, "/api/2.2/jobs/get").iter().all(|r| r
            .identity
            .as_deref()
            .is_some_and(|i| i.starts_with("oauth:"))));

        // the token expires behind our back: the 401 forces one refresh and one retry
        emu.set_oauth_token_ttl(4);
        emu.expire_oauth_tokens();
        emu.clear_requests();
        let calls = (0..20).map(|_| client.get_job(&SP, 1001));
        for r in futures::future::join_all(calls).await {
            assert_eq!(r.unwrap()["job_id"].as_i64(), Some(1001));
        }
        assert_eq!(client.auth().oauth_fetch_count(), 2);
        assert_eq!(requests_to(&emu.requests(), "/oidc/v1/token").len(), 1);

        // a 4 s token is refreshed at half-life, before it expires: no request is refused
        tokio::time::sleep(Duration::from_millis(2100)).await;
        emu.clear_requests();
        let calls = (0..20).map(|_| client.get_job(&SP, 1001));
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(client.auth().oauth_fetch_count(), 3);
        let log = emu.requests();
        assert!(
            log.iter().all(|r| r.status != 401),
            "an expired token was sent"
        );
        assert_eq!(requests_to(&log, "/oidc/v1/token").len(), 1);
        emu.stop().await;
    }

    #[tokio::test]
    async fn oauth_bad_secret_is_a_config_error_without_the_secret() {
        let emu = emulator(EmulatorOptions::default()).await;
        let mut env = m2m_env(&emu);
        env.insert(
            "DATABRICKS_CLIENT_SECRET".into(),
            "wrong-secret-value-123".into(),
        );
        let client = JobsClient::new(&env, ClientOptions::default());
        let e = client.get_job(&SP, 1001).await.unwrap_err();
        assert!(matches!(e, JobsError::Config(_)), "{e:?}");
        let text = format!("{e} {e:?} {}", e.public_message());
        assert!(text.contains("DATABRICKS_CLIENT_SECRET"));
        assert!(!text.contains("wrong-secret-value-123"));
        emu.stop().await;
    }

    #[tokio::test]
    async fn profile_file_auth() {
        let emu = emulator(EmulatorOptions::default()).await;
        let dir = std::env::temp_dir().join(format!("appkit-jobs-client-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!(
            "[DEFAULT]\nhost = {url}\ntoken = {tok}\n\n[robot]\nhost = {url}\nclient_id = {cid}\nclient_secret = {cs}\n",
            url = emu.url(),
            tok = emu.token(),
            cid = emu.client_id(),
            cs = emu.client_secret()
        );
        std::fs::write(dir.join(".databrickscfg"), text).unwrap();
        let home = dir.display().to_string();

        let pat = JobsClient::new(
            &HashMap::from([("HOME".to_string(), home.clone())]),
            ClientOptions::default(),
        );
        assert_eq!(
            pat.get_job(&SP, 1002).await.unwrap()["job_id"].as_i64(),
            Some(1002)
        );
        let robot = JobsClient::new(
            &HashMap::from([
                ("HOME".to_string(), home.clone()),
                ("DATABRICKS_CONFIG_PROFILE".to_string(), "robot".to_string()),
            ]),
            ClientOptions::default(),
        );
        assert_eq!(
            robot.get_job(&SP, 1002).await.unwrap()["job_id"].as_i64(),
            Some(1002)
        );
        assert_eq!(robot.auth().oauth_fetch_count(), 1);
        let log = emu.requests();
        let ids: Vec<_> = requests_to(&log, "/api/2.2/jobs/get")
            .iter()
            .map(|r| r.identity.clone().unwrap_or_default())
            .collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], "service_principal");
        assert!(ids[1].starts_with("oauth:"));
        let _ = std::fs::remove_dir_all(&dir);
        emu.stop().await;
    }

    #[tokio::test]
    async fn error_bodies_are_typed() {
        let emu = emulator(EmulatorOptions::default()).await;
        let client = JobsClient::new(&sp_env(&emu), ClientOptions::default());
        // a missing run: 400 INVALID_PARAMETER_VALUE
        let e = client.get_run(&SP, 987_654_321_012).await.unwrap_err();
        match &e {
            JobsError::Api {
                status: 400,
                error_code,
                upstream_message,
                ..
            } => {
                assert_eq!(error_code.as_deref(), Some("INVALID_PARAMETER_VALUE"));
                assert!(upstream_message.contains("does not exist"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.public_message(), "Bad Request");
        // an HTML error page
        emu.inject_fault(FaultSpec {
            path: "/api/2.2/jobs/get".into(),
            html: true,
            status: Some(502),
            ..Default::default()
        })
        .unwrap();
        let e = client.get_job(&SP, 1001).await.unwrap_err();
        assert!(
            matches!(
                e,
                JobsError::Api {
                    status: 502,
                    error_code: None,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!e.is_transient());
        // a success answer that is not JSON
        emu.inject_fault(FaultSpec {
            path: "/api/2.2/jobs/get".into(),
            status: Some(200),
            body: Some("<<not json>>".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(
            client.get_job(&SP, 1001).await.unwrap_err(),
            JobsError::Network(_)
        ));
        // a reset connection
        emu.inject_fault(FaultSpec {
            path: "/api/2.2/jobs/get".into(),
            reset: true,
            ..Default::default()
        })
        .unwrap();
        let e = client.get_job(&SP, 1001).await.unwrap_err();
        assert!(matches!(e, JobsError::Network(_)), "{e:?}");
        assert!(!e.to_string().contains("://"));
        // get-output on a multi-task parent run is a 400 upstream
        let run_id = client.run_now(&SP, &json!({"job_id": 1009})).await.unwrap()["run_id"]
            .as_i64()
            .unwrap();
        assert!(matches!(
            client.get_run_output(&SP, run_id).await.unwrap_err(),
            JobsError::Api { status: 400, .. }
        ));
        let run_id = client.run_now(&SP, &json!({"job_id": 1001})).await.unwrap()["run_id"]
            .as_i64()
            .unwrap();
        let out = client.get_run_output(&SP, run_id).await.unwrap();
        assert_eq!(out["metadata"]["run_id"].as_i64(), Some(run_id));
        emu.stop().await;
    }

    #[tokio::test]
    async fn no_error_contains_a_token() {
        let emu = emulator(EmulatorOptions::default()).await;
        let secret = "dapi-not-the-right-token-0042";
        let mut env = sp_env(&emu);
        env.insert("DATABRICKS_TOKEN".into(), secret.into());
        let client = JobsClient::new(&env, ClientOptions::default());
        let mut errors = vec![client.get_job(&SP, 1001).await.unwrap_err()];
        assert!(matches!(errors[0], JobsError::Api { status: 401, .. }));
        // a user token that is refused, with no retry (nothing to refresh)
        emu.clear_requests();
        let user_secret = "user-secret-token-7777";
        errors.push(
            client
                .get_job(&Identity::user(user_secret), 1001)
                .await
                .unwrap_err(),
        );
        assert_eq!(requests_to(&emu.requests(), "/api/2.2/jobs/get").len(), 1);
        emu.stop().await;
        // nobody listening any more
        errors.push(client.get_job(&SP, 1001).await.unwrap_err());
        assert!(
            matches!(errors.last(), Some(JobsError::Network(_))),
            "{:?}",
            errors.last()
        );
        for e in &errors {
            let text = format!("{e} | {e:?} | {} | {}", e.public_message(), e.code());
            assert!(
                !text.contains(secret) && !text.contains(user_secret),
                "{text}"
            );
            assert!(!text.contains("://"), "no URL in {text}");
        }
    }

    #[tokio::test]
    async fn user_identity_uses_the_user_token() {
        let emu = emulator(EmulatorOptions {
            users: vec![UserSpec {
                token: "alice-token".into(),
                user_name: "alice@example.com".into(),
                permissions: HashMap::from([(1001, "CAN_MANAGE_RUN".to_string())]),
                default_permission: None,
            }],
            ..Default::default()
        })
        .await;
        let client = JobsClient::new(&sp_env(&emu), ClientOptions::default());
        let alice = Identity::user("alice-token");
        assert_eq!(
            client.get_job(&alice, 1001).await.unwrap()["job_id"].as_i64(),
            Some(1001)
        );
        let e = client.get_job(&alice, 1002).await.unwrap_err();
        assert!(
            matches!(e, JobsError::Api { status: 403, ref error_code, .. } if error_code.as_deref() == Some("PERMISSION_DENIED"))
        );
        let log = emu.requests();
        assert!(requests_to(&log, "/api/2.2/jobs/get")
            .iter()
            .all(|r| r.identity.as_deref() == Some("user:alice@example.com")));
        emu.stop().await;
    }

    struct CountingGate(AtomicU32);
    impl RequestGate for CountingGate {
        fn acquire(&self) -> BoxFuture<'_, ()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn gate_is_awaited_before_each_request() {
        let emu = emulator(EmulatorOptions::default()).await;
        let gate = Arc::new(CountingGate(AtomicU32::new(0)));
        let client = JobsClient::new(
            &sp_env(&emu),
            ClientOptions {
                gate: Some(gate.clone()),
                ..Default::default()
            },
        );
        let run_id = client.run_now(&SP, &json!({"job_id": 1004})).await.unwrap()["run_id"]
            .as_i64()
            .unwrap();
        client.get_run(&SP, run_id).await.unwrap();
        assert_eq!(
            gate.0.load(Ordering::SeqCst),
            3,
            "run-now + two runs/get pages"
        );
        emu.stop().await;
    }

    #[tokio::test]
    async fn unconfigured_client_names_what_to_set() {
        let client = JobsClient::new(&HashMap::new(), ClientOptions::default());
        let e = client.get_job(&SP, 1).await.unwrap_err();
        assert!(matches!(e, JobsError::Config(ref m) if m.contains("DATABRICKS_HOST")));
    }

    #[tokio::test]
    async fn requests_in_flight_are_capped_and_the_rest_queue() {
        // A loopback server that holds each request until released and counts how many it
        // holds at once.
        #[derive(Default)]
        struct Seen {
            now: AtomicU32,
            max: AtomicU32,
            total: AtomicU32,
        }
        let seen = Arc::new(Seen::default());
        let release = Arc::new(tokio::sync::Notify::new());
        let (s2, r2) = (seen.clone(), release.clone());
        let app = axum::Router::new().fallback(move || {
            let (seen, release) = (s2.clone(), r2.clone());
            async move {
                let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
                seen.max.fetch_max(now, Ordering::SeqCst);
                seen.total.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                seen.now.fetch_sub(1, Ordering::SeqCst);
                axum::Json(json!({"run_id": 1, "job_id": 2}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let env = HashMap::from([
            ("DATABRICKS_HOST".to_string(), url),
            ("DATABRICKS_TOKEN".to_string(), "dapi-test".to_string()),
            (
                "HOME".to_string(),
                "/nonexistent-appkit-jobs-home".to_string(),
            ),
        ]);
        let client = JobsClient::new(
            &env,
            ClientOptions {
                max_in_flight: Some(3),
                ..Default::default()
            },
        );
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move { c.get_run(&SP, i + 1).await })
            })
            .collect();
        // Three reach the server; the other seven wait for a permit.
        while seen.now.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(seen.total.load(Ordering::SeqCst), 3);
        // Release the held requests one by one until every call has been answered.
        while seen.total.load(Ordering::SeqCst) < 10 || seen.now.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            release.notify_one();
        }
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap()["run_id"], 1);
        }
        assert_eq!(seen.total.load(Ordering::SeqCst), 10);
        assert_eq!(seen.max.load(Ordering::SeqCst), 3);
        server.abort();
    }
}
