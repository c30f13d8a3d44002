//! The Jobs API side of the emulator's HTTP server: auth (PAT, user tokens, OAuth M2M), faults,
//! the request log, and the Jobs API 2.2 endpoints. Requests under `/__emulator/` go to
//! [`crate::control`].
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{FaultSpec, Permission, UserSpec};
use crate::http::{invalid, json_response, set_date, ApiErr};
use crate::net::Conn;
use crate::render::{self, parse_page_token};
use crate::repair::RepairRequest;
use crate::shared::{RequestLogEntry, Shared};
use crate::store::{RunRec, Store};

/// Upper bound of a request body.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Each `*_params` field of run-now must stay within this many bytes as JSON.
const MAX_PARAMS_BYTES: usize = 10_000;
const MAP_PARAMS: [&str; 4] = [
    "notebook_params",
    "python_named_params",
    "sql_params",
    "job_parameters",
];
const LIST_PARAMS: [&str; 4] = [
    "python_params",
    "jar_params",
    "spark_submit_params",
    "dbt_commands",
];

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn default_error_code(status: u16) -> &'static str {
    match status {
        400 => "INVALID_PARAMETER_VALUE",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "RESOURCE_DOES_NOT_EXIST",
        409 => "RESOURCE_CONFLICT",
        429 => "REQUEST_LIMIT_EXCEEDED",
        501 => "NOT_IMPLEMENTED",
        503 => "TEMPORARILY_UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL_ERROR",
    }
}

/// Who sent a request.
#[derive(Clone)]
enum Ident {
    ServicePrincipal,
    OAuth,
    User(Arc<UserSpec>),
}

impl Ident {
    fn label(&self, shared: &Shared) -> String {
        match self {
            Ident::ServicePrincipal => "service_principal".into(),
            Ident::OAuth => format!("oauth:{}", shared.client_id),
            Ident::User(u) => format!("user:{}", u.user_name),
        }
    }
    fn name(&self, shared: &Shared) -> Arc<str> {
        match self {
            Ident::User(u) => Arc::from(u.user_name.as_str()),
            _ => shared.sp_name.clone(),
        }
    }
    /// Whether this identity may do `need` on `job_id`.
    fn check(&self, job_id: i64, need: Permission) -> Result<(), ApiErr> {
        let Ident::User(u) = self else { return Ok(()) };
        match u.permission(job_id) {
            Some(p) if p >= need => Ok(()),
            _ => Err(ApiErr {
                status: 403,
                code: "PERMISSION_DENIED",
                message: format!(
                    "User {} does not have {} permissions on Job {job_id}.",
                    u.user_name,
                    if need == Permission::CanView {
                        "View"
                    } else {
                        "Manage Run"
                    }
                ),
            }),
        }
    }
    fn can_view(&self, job_id: i64) -> bool {
        self.check(job_id, Permission::CanView).is_ok()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Ident, ApiErr> {
    let unauth = |m: &str| ApiErr {
        status: 401,
        code: "UNAUTHENTICATED",
        message: m.to_string(),
    };
    let Some(token) = bearer(headers) else {
        return Err(unauth(
            "Credential was not sent or was of an unsupported type for this API.",
        ));
    };
    if token == shared.sp_token {
        return Ok(Ident::ServicePrincipal);
    }
    let inner = shared.inner();
    if let Some(u) = inner.users.get(token) {
        return Ok(Ident::User(u.clone()));
    }
    match inner.oauth_tokens.get(token) {
        Some(exp) if *exp > Instant::now() => Ok(Ident::OAuth),
        Some(_) => Err(unauth("Token is expired.")),
        None => Err(unauth("Invalid access token.")),
    }
}

fn parse_query(q: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

fn id_value(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A required id field of a JSON body (a number or a decimal string).
fn body_id(body: &Value, field: &str) -> Result<i64, ApiErr> {
    match body.get(field) {
        None | Some(Value::Null) => Err(invalid(format!("Missing required field: {field}"))),
        v => id_value(v)
            .ok_or_else(|| invalid(format!("Invalid value for {field}: it must be an integer."))),
    }
}

fn query_id(q: &HashMap<String, String>, field: &str) -> Result<i64, ApiErr> {
    let raw = q
        .get(field)
        .ok_or_else(|| invalid(format!("Missing required field: {field}")))?;
    raw.trim().parse().map_err(|_| {
        invalid(format!(
            "Invalid value for {field}: {raw:?} is not an integer."
        ))
    })
}

fn query_bool(q: &HashMap<String, String>, field: &str) -> Result<bool, ApiErr> {
    match q.get(field).map(|s| s.to_ascii_lowercase()) {
        None => Ok(false),
        Some(s) if s == "true" || s == "1" => Ok(true),
        Some(s) if s == "false" || s == "0" || s.is_empty() => Ok(false),
        Some(s) => Err(invalid(format!(
            "Invalid value for {field}: {s:?} is not a boolean."
        ))),
    }
}

fn page_param(q: &HashMap<String, String>) -> Result<usize, ApiErr> {
    parse_page_token(q.get("page_token").map(String::as_str))
        .ok_or_else(|| invalid("Invalid page_token."))
}

fn run_missing(id: i64) -> ApiErr {
    invalid(format!("Run {id} does not exist."))
}
fn job_missing(id: i64) -> ApiErr {
    invalid(format!("Job {id} does not exist."))
}

/// Every answer carries the workspace's `Date`: the virtual clock's, taken when it is sent.
async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    req: Request,
) -> Response {
    let mut resp = answer(&shared, conn, req).await;
    let date = shared.inner().clock.http_date();
    set_date(&mut resp, &date);
    resp
}

async fn answer(shared: &Arc<Shared>, conn: Conn, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return invalid("Request body too large or unreadable.").response(),
    };
    if let Some(rest) = path.strip_prefix("/__emulator") {
        return crate::control::control(shared, &method, rest, &bytes);
    }

    let ident = authenticate(shared, &parts.headers);
    let is_token_call = path == "/oidc/v1/token";
    let log_body = if is_token_call {
        json!("[redacted]")
    } else if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let mut entry = RequestLogEntry {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: log_body,
        identity: ident.as_ref().ok().map(|i| i.label(shared)),
        status: 0,
        fault: false,
    };

    // `loseResponse`: the request is carried out below, then its answer is dropped.
    let mut lose_answer = false;
    if let Some(fault) = shared.take_fault(method.as_str(), &path) {
        entry.fault = true;
        if let Some(ms) = fault.delay_ms {
            // A client that gives up during the delay drops this handler: log the request
            // anyway (status 499), so that its attempts can still be counted.
            struct Abandoned(Option<(Arc<Shared>, RequestLogEntry)>);
            impl Drop for Abandoned {
                fn drop(&mut self) {
                    if let Some((shared, mut entry)) = self.0.take() {
                        entry.status = 499;
                        shared.push_log(entry);
                    }
                }
            }
            let mut abandoned = Abandoned(Some((shared.clone(), entry.clone())));
            tokio::time::sleep(Duration::from_millis(ms)).await;
            abandoned.0 = None;
        }
        lose_answer = fault.lose_response;
        let shaped = fault_response(&fault, &conn);
        if let Some(resp) = shaped {
            entry.status = if fault.reset {
                0
            } else {
                resp.status().as_u16()
            };
            shared.push_log(entry);
            return resp;
        }
    }

    let resp = match dispatch(
        shared,
        ident,
        &method,
        &path,
        &query,
        &parts.headers,
        &bytes,
        &entry.body,
    ) {
        Ok(v) => json_response(200, &v),
        Err(e) => e.response(),
    };
    let mut resp = resp;
    if let Ok(v) = HeaderValue::from_str(&shared.org_id) {
        resp.headers_mut().insert("x-databricks-org-id", v);
    }
    entry.status = resp.status().as_u16();
    shared.push_log(entry);
    if lose_answer {
        conn.reset();
        return reset_response();
    }
    resp
}

/// What a handler returns for a connection it resets: nothing reaches the client.
fn reset_response() -> Response {
    let mut r = Response::new(Body::empty());
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The answer a fault imposes, or `None` for a delay-only fault.
fn fault_response(fault: &FaultSpec, conn: &Conn) -> Option<Response> {
    if fault.reset {
        conn.reset();
        return Some(reset_response());
    }
    if fault.body.is_some() || fault.html {
        let status = fault.status.unwrap_or(502);
        let (body, ctype) = match &fault.body {
            Some(b) => (b.clone(), fault.content_type.clone().unwrap_or_else(|| "text/plain".into())),
            None => (
                format!("<html><head><title>{status} Error</title></head><body><h1>{status}</h1><p>Upstream error.</p></body></html>"),
                fault.content_type.clone().unwrap_or_else(|| "text/html; charset=utf-8".into()),
            ),
        };
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        if let Ok(v) = HeaderValue::from_str(&ctype) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        add_retry_after(&mut r, fault.retry_after);
        return Some(r);
    }
    let status = fault.status?;
    let code = fault
        .error_code
        .clone()
        .unwrap_or_else(|| default_error_code(status).to_string());
    let message = fault
        .message
        .clone()
        .unwrap_or_else(|| format!("Injected fault: {code}"));
    let mut r = json_response(status, &json!({"error_code": code, "message": message}));
    add_retry_after(&mut r, fault.retry_after);
    Some(r)
}

fn add_retry_after(r: &mut Response, secs: Option<u64>) {
    if let Some(s) = secs {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    shared: &Shared,
    ident: Result<Ident, ApiErr>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    bytes: &[u8],
    body: &Value,
) -> Result<Value, ApiErr> {
    // Unauthenticated endpoints.
    match (method.as_str(), path) {
        // Host metadata, which current SDKs (Python 0.10x+, Go) fetch when they start: the
        // OIDC endpoint their OAuth discovery derives from, and the workspace's id.
        ("GET", "/.well-known/databricks-config") => {
            return Ok(json!({
                "oidc_endpoint": format!("{}/oidc", shared.base_url),
                "workspace_id": shared.org_id,
                "cloud": "AWS",
                "host_type": "workspace",
            }));
        }
        ("GET", "/oidc/.well-known/oauth-authorization-server")
        | ("GET", "/oidc/.well-known/openid-configuration") => {
            let u = &shared.base_url;
            return Ok(json!({
                "issuer": format!("{u}/oidc"),
                "authorization_endpoint": format!("{u}/oidc/v1/authorize"),
                "token_endpoint": format!("{u}/oidc/v1/token"),
                "jwks_uri": format!("{u}/oidc/jwks.json"),
                "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
                "response_types_supported": ["code"],
                "scopes_supported": ["all-apis", "offline_access"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }));
        }
        ("POST", "/oidc/v1/token") => return oauth_token(shared, headers, bytes),
        _ => {}
    }
    let ident = ident?;
    // `/api/2.1/jobs/...` is served like 2.2.
    let route = path
        .strip_prefix("/api/2.1/jobs/")
        .or_else(|| path.strip_prefix("/api/2.2/jobs/"));
    let q = parse_query(query);
    match (method.as_str(), route, path) {
        ("POST", Some("run-now"), _) => run_now(shared, &ident, body),
        ("GET", Some("runs/get"), _) => get_run(shared, &ident, &q),
        ("GET", Some("runs/list"), _) => list_runs(shared, &ident, &q),
        ("GET", Some("runs/get-output"), _) => get_output(shared, &ident, &q),
        ("POST", Some("runs/cancel"), _) => cancel(shared, &ident, body),
        ("POST", Some("runs/repair"), _) => repair_run(shared, &ident, body),
        ("GET", Some("get"), _) => get_job(shared, &ident, &q),
        ("GET", Some("list"), _) => list_jobs(shared, &ident, &q),
        ("GET", _, "/api/2.0/preview/scim/v2/Me") => Ok(scim_me(shared, &ident)),
        ("POST", _, "/api/2.0/postgres/credentials") => postgres_credential(shared, body),
        ("POST", _, "/telemetry-ext") => Ok(json!({})),
        (m, _, p) => Err(ApiErr {
            status: 404,
            code: "ENDPOINT_NOT_FOUND",
            message: format!("No API found for '{m} {p}'"),
        }),
    }
}

fn oauth_err(status: u16, error: &str, description: &str) -> ApiErr {
    // Carried through ApiErr for its status; the body is rewritten below.
    ApiErr {
        status,
        code: "OAUTH",
        message: json!({"error": error, "error_description": description}).to_string(),
    }
}

fn oauth_token(shared: &Shared, headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ApiErr> {
    let form: HashMap<String, String> = url::form_urlencoded::parse(bytes).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err(oauth_err(
            400,
            "unsupported_grant_type",
            "Only client_credentials is supported.",
        ));
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
                .map(|(_, r)| r.trim().to_string())
        })
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    let creds = basic.or_else(|| {
        Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        ))
    });
    match creds {
        Some((id, secret)) if id == shared.client_id && secret == shared.client_secret => {}
        _ => {
            return Err(oauth_err(
                401,
                "invalid_client",
                "Client authentication failed.",
            ))
        }
    }
    if let Some(scope) = form.get("scope") {
        if !scope.split_whitespace().any(|s| s == "all-apis") {
            return Err(oauth_err(
                400,
                "invalid_scope",
                "The requested scope is not allowed.",
            ));
        }
    }
    let token = format!("emu-oauth-{}", uuid::Uuid::new_v4().simple());
    let mut inner = shared.inner();
    let ttl = inner.oauth_ttl;
    let now = Instant::now();
    if inner.oauth_tokens.len() > 10_000 {
        inner.oauth_tokens.retain(|_, exp| *exp > now);
    }
    inner.oauth_tokens.insert(token.clone(), now + ttl);
    Ok(
        json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl.as_secs(), "scope": "all-apis"}),
    )
}

/// `POST /api/2.0/postgres/credentials` `{ endpoint }`: a database credential for a Lakebase
/// endpoint, `{ token, expire_time }` (see `LakebaseSpec`). Any authenticated identity may ask.
fn postgres_credential(shared: &Shared, body: &Value) -> Result<Value, ApiErr> {
    let endpoint = match body.get("endpoint").and_then(Value::as_str) {
        Some(e) if !e.trim().is_empty() => e,
        _ => return Err(invalid("Missing required field: endpoint")),
    };
    let inner = shared.inner();
    let spec = inner
        .lakebase
        .as_ref()
        .filter(|s| s.endpoint.as_deref().is_none_or(|known| known == endpoint))
        .ok_or_else(|| ApiErr {
            status: 404,
            code: "RESOURCE_DOES_NOT_EXIST",
            message: format!("Endpoint {endpoint:?} does not exist."),
        })?;
    let expires =
        std::time::SystemTime::now() + Duration::from_secs(spec.ttl_secs.unwrap_or(3600).max(1));
    Ok(json!({
        "token": spec.password,
        "expire_time": humantime::format_rfc3339_seconds(expires).to_string(),
    }))
}

fn scim_me(shared: &Shared, ident: &Ident) -> Value {
    let name = ident.name(shared);
    // A stable numeric id per user name (FNV-1a).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.as_bytes() {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": format!("{}", h % 9_000_000_000_000_000 + 1_000_000_000_000_000),
        "userName": &*name,
        "displayName": &*name,
        "active": true,
        "emails": [{"value": &*name, "type": "work", "primary": true}],
        "groups": [],
    })
}

/// The task parameters (`overriding_parameters`) and `job_parameters` of a run-now or repair
/// body, checked as the Jobs API checks them.
#[allow(clippy::type_complexity)]
fn run_params(
    obj: &serde_json::Map<String, Value>,
) -> Result<(Option<Value>, Option<HashMap<String, String>>), ApiErr> {
    let mut overriding = serde_json::Map::new();
    for field in MAP_PARAMS.iter().chain(LIST_PARAMS.iter()) {
        let Some(v) = obj.get(*field) else { continue };
        if v.is_null() {
            continue;
        }
        let is_map = MAP_PARAMS.contains(field);
        if is_map && !v.is_object() {
            return Err(invalid(format!("{field} must be an object of strings.")));
        }
        if !is_map && !v.is_array() {
            return Err(invalid(format!("{field} must be an array of strings.")));
        }
        let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0);
        if size > MAX_PARAMS_BYTES {
            return Err(invalid(format!(
                "The size of {field} ({size} bytes) exceeds the limit of {MAX_PARAMS_BYTES} bytes."
            )));
        }
        if *field != "job_parameters" {
            overriding.insert(field.to_string(), v.clone());
        }
    }
    if obj.get("notebook_params").is_some_and(|v| !v.is_null())
        && obj.get("jar_params").is_some_and(|v| !v.is_null())
    {
        return Err(invalid(
            "notebook_params and jar_params cannot be specified together.",
        ));
    }
    if let Some(p) = obj.get("pipeline_params").filter(|v| !v.is_null()) {
        overriding.insert("pipeline_params".into(), p.clone());
    }
    let job_params = match obj.get("job_parameters") {
        Some(Value::Object(m)) => {
            let mut out = HashMap::new();
            for (k, v) in m {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => v.to_string(),
                    _ => return Err(invalid(format!("job_parameters.{k} must be a string."))),
                };
                out.insert(k.clone(), s);
            }
            Some(out)
        }
        _ => None,
    };
    let overriding = (!overriding.is_empty()).then_some(Value::Object(overriding));
    Ok((overriding, job_params))
}

fn run_now(shared: &Shared, ident: &Ident, body: &Value) -> Result<Value, ApiErr> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("The request body must be a JSON object."))?;
    let job_id = body_id(body, "job_id")?;
    let token = match obj.get("idempotency_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 64 => Some(s.clone()),
        Some(Value::String(_)) => {
            return Err(invalid("idempotency_token must be at most 64 characters."))
        }
        Some(_) => return Err(invalid("idempotency_token must be a string.")),
    };
    let (overriding, job_params) = run_params(obj)?;

    let mut inner = shared.inner();
    let job = inner
        .store
        .jobs
        .get(&job_id)
        .cloned()
        .ok_or_else(|| job_missing(job_id))?;
    ident.check(job_id, Permission::CanManageRun)?;
    if let Some(t) = &token {
        if let Some(&existing) = inner.store.idempotency.get(t) {
            if let Some((run, _)) = inner.store.find(existing) {
                return Ok(json!({"run_id": run.run_id, "number_in_job": run.number}));
            }
        }
    }
    let now = inner.clock.now();
    let (run_id, number) =
        inner
            .store
            .create_run(job, now, ident.name(shared), overriding, job_params);
    if let Some(t) = token {
        inner.store.idempotency.insert(t, run_id);
    }
    Ok(json!({"run_id": run_id, "number_in_job": number}))
}

/// The run (parent) holding `run_id` and the task run id when it is one, if `ident` may view it.
fn viewable_run<'a>(
    store: &'a Store,
    ident: &Ident,
    run_id: i64,
) -> Result<(&'a RunRec, Option<i64>), ApiErr> {
    let (run, task) = store.find(run_id).ok_or_else(|| run_missing(run_id))?;
    ident.check(run.job_id(), Permission::CanView)?;
    Ok((run, task))
}

fn get_run(shared: &Shared, ident: &Ident, q: &HashMap<String, String>) -> Result<Value, ApiErr> {
    let run_id = query_id(q, "run_id")?;
    let page = page_param(q)?;
    let with_history = query_bool(q, "include_history")?;
    let inner = shared.inner();
    let ctx = shared.render_ctx(&inner);
    let (run, task) = viewable_run(&inner.store, ident, run_id)?;
    render::render_get(run, task, &ctx, page, with_history).ok_or_else(|| run_missing(run_id))
}

fn get_output(
    shared: &Shared,
    ident: &Ident,
    q: &HashMap<String, String>,
) -> Result<Value, ApiErr> {
    let run_id = query_id(q, "run_id")?;
    let inner = shared.inner();
    let ctx = shared.render_ctx(&inner);
    let (run, task) = viewable_run(&inner.store, ident, run_id)?;
    if task.is_none() && run.task_count() > 1 {
        return Err(invalid(
            "Retrieving the output of runs with multiple tasks is not supported. \
             Please retrieve the output of each individual task run instead.",
        ));
    }
    let view = run
        .task_view(task, ctx.now_v)
        .ok_or_else(|| run_missing(run_id))?;
    let metadata =
        render::render_get(run, task, &ctx, 0, false).ok_or_else(|| run_missing(run_id))?;
    Ok(render::render_output(run, &view, metadata, &ctx))
}

/// runs/repair: runs the chosen or failed tasks of an ended run again (see [`crate::repair`]).
/// The Jobs API takes no idempotency token here; `latest_repair_id` orders repairs instead.
fn repair_run(shared: &Shared, ident: &Ident, body: &Value) -> Result<Value, ApiErr> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("The request body must be a JSON object."))?;
    let run_id = body_id(body, "run_id")?;
    let rerun_tasks = match obj.get("rerun_tasks") {
        None | Some(Value::Null) => None,
        Some(keys) => Some(
            Vec::<String>::deserialize(keys)
                .map_err(|_| invalid("rerun_tasks must be an array of task keys."))?,
        ),
    };
    let flag = |field: &str| match obj.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(format!("{field} must be a boolean."))),
    };
    let rerun_all_failed_tasks = flag("rerun_all_failed_tasks")?;
    let rerun_dependent_tasks = flag("rerun_dependent_tasks")?;
    let latest_repair_id = match obj.get("latest_repair_id") {
        None | Some(Value::Null) => None,
        v => Some(id_value(v).ok_or_else(|| {
            invalid("Invalid value for latest_repair_id: it must be an integer.")
        })?),
    };
    let (overriding, job_params) = run_params(obj)?;

    let mut inner = shared.inner();
    let now = inner.clock.now();
    let (run, task) = inner
        .store
        .find(run_id)
        .ok_or_else(|| run_missing(run_id))?;
    ident.check(run.job_id(), Permission::CanManageRun)?;
    if task.is_some() {
        return Err(invalid(format!(
            "Run {run_id} is a task run; repair its parent run {}.",
            run.run_id
        )));
    }
    let request = RepairRequest {
        run_id,
        rerun_tasks,
        rerun_all_failed_tasks,
        rerun_dependent_tasks,
        latest_repair_id,
    };
    let repair_id = inner.store.repair(&request, now).map_err(invalid)?;
    let run = inner.store.runs.get_mut(&run_id).expect("repaired above");
    if let Some(o) = overriding {
        run.overriding = Some(Box::new(o));
    }
    if let Some(p) = job_params {
        run.job_params = Some(Box::new(p));
    }
    Ok(json!({"repair_id": repair_id}))
}

fn cancel(shared: &Shared, ident: &Ident, body: &Value) -> Result<Value, ApiErr> {
    let run_id = body_id(body, "run_id")?;
    let mut inner = shared.inner();
    let now = inner.clock.now();
    let run = inner
        .store
        .find_mut(run_id)
        .ok_or_else(|| run_missing(run_id))?;
    ident.check(run.job_id(), Permission::CanManageRun)?;
    if run.current.cancel_v.is_none() && run.is_active(now) {
        run.current.cancel_v = Some(now);
    }
    Ok(json!({}))
}

fn get_job(shared: &Shared, ident: &Ident, q: &HashMap<String, String>) -> Result<Value, ApiErr> {
    let job_id = query_id(q, "job_id")?;
    let page = page_param(q)?;
    let inner = shared.inner();
    let job = inner
        .store
        .jobs
        .get(&job_id)
        .ok_or_else(|| job_missing(job_id))?;
    ident.check(job_id, Permission::CanView)?;
    Ok(job.render(page, &shared.sp_name))
}

/// jobs/list: the jobs this identity may view, by id, `limit` (1..=100, default 20) a page,
/// `name` an exact filter; tasks only with `expand_tasks`.
fn list_jobs(shared: &Shared, ident: &Ident, q: &HashMap<String, String>) -> Result<Value, ApiErr> {
    let limit = match q.get("limit") {
        None => 20,
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(invalid(format!(
                    "Invalid limit {raw} - it has to be between 1 and 100"
                )))
            }
        },
    };
    let after: i64 = match q.get("page_token").map(String::as_str) {
        None | Some("") => 0,
        Some(t) => t
            .strip_prefix("ja")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| invalid("Invalid page_token."))?,
    };
    let expand = query_bool(q, "expand_tasks")?;
    let name = q.get("name");
    let inner = shared.inner();
    let mut jobs: Vec<_> = inner
        .store
        .jobs
        .values()
        .filter(|j| j.id > after && ident.can_view(j.id))
        .filter(|j| name.is_none_or(|n| &j.name == n))
        .collect();
    jobs.sort_by_key(|j| j.id);
    let has_more = jobs.len() > limit;
    let page: Vec<Value> = jobs
        .iter()
        .take(limit)
        .map(|j| {
            let mut job = j.render(0, &shared.sp_name);
            if let Some(obj) = job.as_object_mut() {
                obj.remove("has_more");
                obj.remove("next_page_token");
                if !expand {
                    if let Some(settings) = obj.get_mut("settings").and_then(Value::as_object_mut) {
                        settings.remove("tasks");
                    }
                }
            }
            job
        })
        .collect();
    let mut out = serde_json::Map::new();
    if has_more {
        let last = jobs[limit - 1].id;
        out.insert("next_page_token".into(), json!(format!("ja{last}")));
    }
    if !page.is_empty() {
        out.insert("jobs".into(), Value::Array(page));
    }
    out.insert("has_more".into(), json!(has_more));
    Ok(Value::Object(out))
}

fn list_runs(shared: &Shared, ident: &Ident, q: &HashMap<String, String>) -> Result<Value, ApiErr> {
    let limit: usize = match q.get("limit") {
        None => 20,
        Some(raw) => {
            let n: i64 = raw
                .trim()
                .parse()
                .map_err(|_| invalid(format!("Invalid limit {raw}")))?;
            if n < 0 {
                return Err(invalid(format!(
                    "Invalid limit {n} - it has to be positive"
                )));
            }
            if n > 25 {
                return Err(invalid(format!(
                    "Invalid limit {n} - it has to be no more than 25"
                )));
            }
            if n == 0 {
                25
            } else {
                n as usize
            }
        }
    };
    let offset: usize = match q.get("offset") {
        None => 0,
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|_| invalid(format!("Invalid offset {raw}")))?,
    };
    let active_only = query_bool(q, "active_only")?;
    let completed_only = query_bool(q, "completed_only")?;
    if active_only && completed_only {
        return Err(invalid(
            "active_only and completed_only cannot both be true.",
        ));
    }
    let expand = query_bool(q, "expand_tasks")?;
    let before: Option<i64> = match q.get("page_token").map(String::as_str) {
        None | Some("") => None,
        Some(t) => Some(
            t.strip_prefix("rb")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| invalid("Invalid page_token."))?,
        ),
    };
    let from: Option<i64> = q
        .get("start_time_from")
        .map(|s| s.parse().map_err(|_| invalid("Invalid start_time_from")))
        .transpose()?;
    let to: Option<i64> = q
        .get("start_time_to")
        .map(|s| s.parse().map_err(|_| invalid("Invalid start_time_to")))
        .transpose()?;
    let run_type_ok = q.get("run_type").is_none_or(|t| t == "JOB_RUN");
    let job_id = match q.get("job_id") {
        None => None,
        Some(raw) => Some(
            raw.trim()
                .parse::<i64>()
                .map_err(|_| invalid(format!("Invalid value for job_id: {raw:?}")))?,
        ),
    };

    let inner = shared.inner();
    let ctx = shared.render_ctx(&inner);
    let store = &inner.store;
    if let Some(j) = job_id {
        if !store.jobs.contains_key(&j) {
            return Err(job_missing(j));
        }
        ident.check(j, Permission::CanView)?;
    }
    // Newest first by start time (seeded past runs have older starts than later run ids'),
    // after the run a page token names.
    let empty = Default::default();
    let order = match job_id {
        Some(j) => store.by_job.get(&j).unwrap_or(&empty),
        None => &store.order,
    };
    let after = match before {
        None => None,
        Some(b) => Some(
            store
                .order_key(b)
                .ok_or_else(|| invalid("Invalid page_token."))?,
        ),
    };
    let ids = order
        .range(..after.unwrap_or((i64::MAX, i64::MAX)))
        .rev()
        .map(|(_, id)| *id);
    let mut runs = Vec::new();
    let mut has_more = false;
    let mut last = None;
    let mut skipped = 0;
    if run_type_ok {
        for id in ids {
            let Some(run) = store.runs.get(&id) else {
                continue;
            };
            if job_id.is_none() && !ident.can_view(run.job_id()) {
                continue;
            }
            if active_only || completed_only {
                let active = run.is_active(ctx.now_v);
                if (active_only && !active) || (completed_only && active) {
                    continue;
                }
            }
            let start = ctx.clock.epoch_ms(run.created_v);
            if from.is_some_and(|f| start < f) || to.is_some_and(|t| start > t) {
                continue;
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            if runs.len() == limit {
                has_more = true;
                break;
            }
            let mut item = render::render_run(run, &ctx, 0, expand, false);
            // A listed run says whether it has more than 100 tasks; runs/get pages them.
            if let Some(o) = item.as_object_mut() {
                o.remove("next_page_token");
            }
            runs.push(item);
            last = Some(id);
        }
    }
    let mut out = serde_json::Map::new();
    if !runs.is_empty() {
        out.insert("runs".into(), Value::Array(runs));
    }
    out.insert("has_more".into(), json!(has_more));
    if has_more {
        if let Some(l) = last {
            out.insert("next_page_token".into(), json!(format!("rb{l}")));
        }
    }
    if let Some(b) = before {
        out.insert("prev_page_token".into(), json!(format!("ra{b}")));
    }
    Ok(Value::Object(out))
}
