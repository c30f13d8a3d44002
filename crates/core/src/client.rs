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
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::Method;
use serde_json::{Map, Value};
use url::Url;

use crate::auth::{Auth, Identity, Secret};
use crate::http::exchange;
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

/// A reqwest client for the Jobs API: rustls, no redirects, a bounded idle pool.
fn http_client(options: &ClientOptions) -> reqwest::Client {
    let ua = options
        .user_agent
        .clone()
        .unwrap_or_else(|| format!("appkit-jobs/{}", env!("CARGO_PKG_VERSION")));
    reqwest::Client::builder()
        .user_agent(ua)
        .connect_timeout(options.connect_timeout.unwrap_or(Duration::from_secs(10)))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .or_else(|_| reqwest::Client::builder().build())
        .unwrap_or_else(|_| reqwest::Client::new())
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
    /// Each API path joined to the host once (a handful of paths; a join parses the URL).
    urls: std::sync::Mutex<HashMap<String, Url>>,
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
        let http = if options.user_agent.is_none() && options.connect_timeout.is_none() {
            // One pool (and one TLS setup, the costly part) per process: building them per
            // instance made an accidental instance per request slow and heavy.
            static SHARED: OnceLock<reqwest::Client> = OnceLock::new();
            SHARED.get_or_init(|| http_client(&options)).clone()
        } else {
            http_client(&options)
        };
        let auth = Auth::new(env, http.clone());
        JobsClient {
            inner: Arc::new(Inner {
                http,
                auth,
                gate: options.gate,
                urls: Default::default(),
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
            .await?
            .json()
    }

    /// GET /api/2.2/jobs/runs/get, following `next_page_token` and merging the paged arrays.
    pub async fn get_run(&self, id: &Identity, run_id: i64) -> Result<Value> {
        let q = [("run_id", run_id.to_string())];
        self.get_merged(id, "api/2.2/jobs/runs/get", &q, |acc, page| {
            merge_arrays(acc, page, RUN_PAGED_ARRAYS)
        })
        .await
    }

    /// GET /api/2.2/jobs/runs/get with `include_history=true`: the run with its
    /// `repair_history` (the original attempt, then each repair), pages merged.
    pub async fn get_run_with_history(&self, id: &Identity, run_id: i64) -> Result<Value> {
        let q = [
            ("run_id", run_id.to_string()),
            ("include_history", "true".to_string()),
        ];
        self.get_merged(id, "api/2.2/jobs/runs/get", &q, |acc, page| {
            merge_arrays(acc, page, RUN_PAGED_ARRAYS)
        })
        .await
    }

    /// GET /api/2.2/jobs/runs/get as a poll reads it: the body's own text and the fields a poll
    /// compares, without building the run (see `PolledRun::from_body`). A run with further
    /// pages (more than 100 tasks) is merged as by `get_run`.
    ///
    /// With `include_history=true`: a repair shows as a new `repair_history` entry, which names
    /// the latest attempt of each task. `server_time` is the answer's `Date`.
    pub async fn poll_run(&self, id: &Identity, run_id: i64) -> Result<PolledRun> {
        let path = "api/2.2/jobs/runs/get";
        let q = [
            ("run_id", run_id.to_string()),
            ("include_history", "true".to_string()),
        ];
        let Reply { body, date } = self.call(id, Method::GET, path, &q, None).await?;
        let mut polled = match PolledRun::from_body(&body) {
            Some(polled) => polled,
            None => {
                let first = parse_body(&body)?;
                let run = self
                    .merge_pages(id, path, &q, first, |acc, page| {
                        merge_arrays(acc, page, RUN_PAGED_ARRAYS)
                    })
                    .await?;
                PolledRun::from_run(&run)
            }
        };
        polled.server_time = date;
        Ok(polled)
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
                .await?
                .json()?;
            let got = match page.get_mut("runs").map(Value::take) {
                Some(Value::Array(items)) => items,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => {
                    return Err(JobsError::invalid_body(
                        "runs/list answered with a malformed runs field",
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
        .await?
        .json()
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
        .await?
        .json()
        .map(|_| ())
    }

    /// POST /api/2.2/jobs/runs/repair: `{ repair_id }`. `body` carries `run_id`, the task
    /// selection, `latest_repair_id` and parameters.
    pub async fn repair_run(&self, id: &Identity, body: &Value) -> Result<Value> {
        self.call(
            id,
            Method::POST,
            "api/2.2/jobs/runs/repair",
            &[],
            Some(body),
        )
        .await?
        .json()
    }

    async fn get_merged(
        &self,
        id: &Identity,
        path: &str,
        base_query: &[(&str, String)],
        merge: impl Fn(&mut Value, &Value),
    ) -> Result<Value> {
        let first = self
            .call(id, Method::GET, path, base_query, None)
            .await?
            .json()?;
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
            let page = self.call(id, Method::GET, path, &q, None).await?.json()?;
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

    /// POST /api/2.0/postgres/credentials `{ endpoint }`: a Lakebase database credential for
    /// `endpoint` (`projects/<p>/branches/<b>/endpoints/<e>`), minted for `id`: the password
    /// and, when the answer says, when it expires.
    pub async fn postgres_credential(
        &self,
        id: &Identity,
        endpoint: &str,
    ) -> Result<(Secret, Option<std::time::SystemTime>)> {
        let body = serde_json::json!({ "endpoint": endpoint });
        let answer = self
            .call(
                id,
                Method::POST,
                "api/2.0/postgres/credentials",
                &[],
                Some(&body),
            )
            .await?
            .json()?;
        let token = answer
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                JobsError::InvalidResponse("the database credential answer has no token".into())
            })?;
        let expires = answer
            .get("expire_time")
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        Ok((Secret::new(token), expires))
    }

    /// The URL of `path` on the workspace (joined once per path, then cloned).
    fn url(&self, path: &str) -> Result<Url> {
        let mut urls = self.inner.urls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(url) = urls.get(path) {
            return Ok(url.clone());
        }
        let url = self
            .inner
            .auth
            .host()?
            .join(path)
            .map_err(|_| JobsError::Internal("bad API path".into()))?;
        urls.insert(path.to_string(), url.clone());
        Ok(url)
    }

    /// One HTTP exchange (plus one retry after a 401 on a refreshable OAuth token): a 2xx
    /// answer's body and `Date`, else the API error.
    async fn call(
        &self,
        id: &Identity,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply> {
        let url = self.url(path)?;
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
            let crate::http::Answer {
                status,
                retry_after,
                date,
                body: bytes,
            } = Box::pin(exchange(req, "Jobs API request failed")).await?;
            if status == 401 && !retried_auth && self.inner.auth.invalidate(id, &bearer) {
                drop(permit);
                retried_auth = true;
                continue;
            }
            drop(permit);
            if !(200..300).contains(&status) {
                return Err(api_error(status, &bytes, retry_after, bearer.expose()));
            }
            return Ok(Reply { body: bytes, date });
        }
    }
}

/// A 2xx answer of the Jobs API: its body, and its `Date` (ms since the epoch) when it had one.
struct Reply {
    body: Bytes,
    date: Option<i64>,
}

impl Reply {
    /// The body as JSON (see `parse_body`).
    fn json(&self) -> Result<Value> {
        parse_body(&self.body)
    }
}

/// A 2xx body as JSON; an empty body is `{}`.
fn parse_body(bytes: &[u8]) -> Result<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(bytes)
        .map_err(|_| JobsError::invalid_body("the Jobs API answered with a body that is not JSON"))
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
}
