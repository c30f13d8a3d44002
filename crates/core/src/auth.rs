//! Workspace host and credentials.
//!
//! * [`Secret`] wraps every credential; it prints as `***` and is read only through `expose()`.
//! * [`Identity`] is who a call runs as: the service principal (the app's own credentials) or a
//!   user (the forwarded `x-forwarded-access-token`). `scope()` is the cache/poll key of an
//!   identity: 0 for the service principal, a keyed hash of the token for a user.
//! * [`Auth`] resolves the configuration once (env map first, then a `~/.databrickscfg` profile)
//!   and hands out bearer tokens: a PAT as is, or an OAuth M2M token fetched with client
//!   credentials, refreshed before it expires with one refresh in flight however many callers.
//!
//! Configuration errors are [`JobsError::Config`] messages that name what to set; no message
//! ever carries a token, a client secret or a host's user-info.
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use url::Url;

use crate::{JobsError, Result};

// ---------------------------------------------------------------------------------------------
// Secrets and identities
// ---------------------------------------------------------------------------------------------

/// A credential. `Debug` and `Display` print `***`; `expose()` is the only way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Arc::from(value.into()))
    }

    /// The credential itself, for an `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A user's forwarded access token with its precomputed scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserToken {
    token: Secret,
    scope: u64,
}

impl UserToken {
    pub fn new(token: &str) -> UserToken {
        UserToken {
            scope: user_scope(token),
            token: Secret::new(token),
        }
    }

    pub fn secret(&self) -> &Secret {
        &self.token
    }

    pub fn scope(&self) -> u64 {
        self.scope
    }
}

/// Who a call runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The app's own credentials (PAT or OAuth M2M).
    ServicePrincipal,
    /// On behalf of a user, with the user's forwarded token.
    User(UserToken),
}

impl Identity {
    pub fn user(token: &str) -> Identity {
        Identity::User(UserToken::new(token))
    }

    /// 0 for the service principal; for a user a keyed hash of the token (never 0), with a key
    /// drawn at random once per process. Caches and shared polls are keyed by it.
    pub fn scope(&self) -> u64 {
        match self {
            Identity::ServicePrincipal => 0,
            Identity::User(u) => u.scope,
        }
    }

    pub fn is_user(&self) -> bool {
        matches!(self, Identity::User(_))
    }
}

fn user_scope(token: &str) -> u64 {
    // `RandomState` is SipHash keyed with random keys; one instance per process gives a
    // stable keyed hash that cannot be reversed to the token or precomputed by an outsider.
    static KEY: OnceLock<RandomState> = OnceLock::new();
    let mut h = KEY.get_or_init(RandomState::new).build_hasher();
    "appkit-jobs user scope".hash(&mut h);
    token.hash(&mut h);
    match h.finish() {
        0 => 1,
        n => n,
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// How the service principal authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A personal access token, sent as is.
    Pat(Secret),
    /// OAuth machine-to-machine: client credentials exchanged for short-lived tokens.
    OAuthM2m {
        client_id: String,
        client_secret: Secret,
    },
}

/// The resolved configuration: the host and the service principal's credentials, each either
/// usable or the one clear error to report when it is needed.
#[derive(Clone, Debug)]
pub struct ResolvedConfig {
    pub host: Result<Url>,
    pub credentials: Result<Credentials>,
    /// The `~/.databrickscfg` profile that contributed values, if any.
    pub profile: Option<String>,
}

const HOST_HINT: &str = "set DATABRICKS_HOST to the workspace URL (e.g. https://my-workspace.cloud.databricks.com), or `host` in a ~/.databrickscfg profile";
const CREDS_HINT: &str = "set DATABRICKS_TOKEN (personal access token), or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET (OAuth M2M), or `token` / `client_id` and `client_secret` in a ~/.databrickscfg profile";

/// Resolves host and credentials from an environment map (not `std::env`, so tests and the JS
/// side can pass their own) and the config file it points to. Env values win over the file.
pub fn resolve_config(env: &HashMap<String, String>) -> ResolvedConfig {
    let (profile_name, profile) = match load_profile(env) {
        Ok(p) => p,
        Err(e) => {
            return ResolvedConfig {
                host: Err(e.clone()),
                credentials: Err(e),
                profile: None,
            }
        }
    };
    let get = |env_key: &str, file_key: &str| -> Option<String> {
        non_empty(env.get(env_key).map(String::as_str))
            .or_else(|| non_empty(profile.get(file_key).map(String::as_str)))
            .map(str::to_string)
    };

    let host = match get("DATABRICKS_HOST", "host") {
        None => Err(JobsError::Config(format!(
            "Databricks host is not configured: {HOST_HINT}"
        ))),
        Some(h) => normalize_host(&h),
    };

    let token = get("DATABRICKS_TOKEN", "token");
    let client_id = get("DATABRICKS_CLIENT_ID", "client_id");
    let client_secret = get("DATABRICKS_CLIENT_SECRET", "client_secret");
    let auth_type = get("DATABRICKS_AUTH_TYPE", "auth_type").map(|s| s.to_ascii_lowercase());

    let pat = || {
        match &token {
        Some(t) => Ok(Credentials::Pat(Secret::new(t.clone()))),
        None => Err(JobsError::Config(
            "DATABRICKS_AUTH_TYPE is pat but no token is configured: set DATABRICKS_TOKEN (or `token` in the ~/.databrickscfg profile)".into(),
        )),
    }
    };
    let m2m = || {
        match (&client_id, &client_secret) {
        (Some(id), Some(secret)) => {
            Ok(Credentials::OAuthM2m { client_id: id.clone(), client_secret: Secret::new(secret.clone()) })
        }
        (Some(_), None) => Err(JobsError::Config(
            "OAuth M2M needs a client secret: set DATABRICKS_CLIENT_SECRET (or `client_secret` in the ~/.databrickscfg profile) next to DATABRICKS_CLIENT_ID".into(),
        )),
        (None, Some(_)) => Err(JobsError::Config(
            "OAuth M2M needs a client id: set DATABRICKS_CLIENT_ID (or `client_id` in the ~/.databrickscfg profile) next to DATABRICKS_CLIENT_SECRET".into(),
        )),
        (None, None) => Err(JobsError::Config(format!("Databricks credentials are not configured: {CREDS_HINT}"))),
    }
    };

    let credentials = match auth_type.as_deref() {
        Some("pat") => pat(),
        Some("oauth-m2m") => m2m(),
        Some(other) => Err(JobsError::Config(format!(
            "Unsupported DATABRICKS_AUTH_TYPE \"{}\": use \"pat\" or \"oauth-m2m\", or leave it unset",
            // auth types are plain words; anything else is not echoed back
            if other.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') && other.len() <= 40 { other } else { "?" }
        ))),
        None if token.is_some() => pat(),
        None if client_id.is_some() || client_secret.is_some() => m2m(),
        None => Err(JobsError::Config(format!("Databricks credentials are not configured: {CREDS_HINT}"))),
    };

    ResolvedConfig {
        host,
        credentials,
        profile: profile_name,
    }
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// `my-ws.cloud.databricks.com` -> `https://my-ws.cloud.databricks.com/`. `http://` is kept when
/// given explicitly (a local emulator). Path, query and user-info are dropped.
pub fn normalize_host(raw: &str) -> Result<Url> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let bad = || {
        JobsError::Config(format!(
            "DATABRICKS_HOST is not a valid workspace URL: {HOST_HINT}"
        ))
    };
    let url = Url::parse(&with_scheme).map_err(|_| bad())?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    let origin = url.origin().ascii_serialization();
    Url::parse(&format!("{origin}/")).map_err(|_| bad())
}

/// An INI file: section name -> (lower-cased key -> value).
pub type ConfigFile = HashMap<String, HashMap<String, String>>;

/// Parses a `~/.databrickscfg`-style INI file. `#` and `;` start comment lines; keys are
/// case-insensitive; a line that is neither a section, a comment nor `key = value` is an error.
pub fn parse_config_file(text: &str) -> std::result::Result<ConfigFile, String> {
    let mut out: ConfigFile = HashMap::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(format!("line {}: unterminated section header", i + 1));
            };
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) else {
            return Err(format!(
                "line {}: expected `key = value` or `[section]`",
                i + 1
            ));
        };
        let Some(section) = &current else {
            return Err(format!("line {}: a key outside of any [section]", i + 1));
        };
        let key = k.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(format!("line {}: empty key", i + 1));
        }
        out.entry(section.clone())
            .or_default()
            .insert(key, v.trim().to_string());
    }
    Ok(out)
}

/// Picks the profile: `DATABRICKS_CONFIG_PROFILE`, else `[__settings__] default_profile`, else
/// `[DEFAULT]`, else none. `Err` carries the profile name to report when an explicit one is missing.
pub fn select_profile<'a>(
    file: &'a ConfigFile,
    explicit: Option<&str>,
) -> std::result::Result<Option<(String, &'a HashMap<String, String>)>, String> {
    if let Some(name) = explicit {
        return match file.get(name) {
            Some(p) => Ok(Some((name.to_string(), p))),
            None => Err(name.to_string()),
        };
    }
    if let Some(name) = file
        .get("__settings__")
        .and_then(|s| s.get("default_profile"))
        .map(|s| s.trim())
    {
        if !name.is_empty() {
            return match file.get(name) {
                Some(p) => Ok(Some((name.to_string(), p))),
                None => Err(name.to_string()),
            };
        }
    }
    Ok(file.get("DEFAULT").map(|p| ("DEFAULT".to_string(), p)))
}

fn load_profile(
    env: &HashMap<String, String>,
) -> Result<(Option<String>, HashMap<String, String>)> {
    let explicit_file = non_empty(env.get("DATABRICKS_CONFIG_FILE").map(String::as_str));
    let explicit_profile = non_empty(env.get("DATABRICKS_CONFIG_PROFILE").map(String::as_str));
    let path: Option<PathBuf> = match explicit_file {
        Some(p) => Some(expand_home(p, env)),
        None => non_empty(env.get("HOME").map(String::as_str))
            .or_else(|| non_empty(env.get("USERPROFILE").map(String::as_str)))
            .map(|home| PathBuf::from(home).join(".databrickscfg")),
    };
    let text = match &path {
        None => None,
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit_file.is_none() => None,
            Err(_) => {
                return Err(JobsError::Config(format!(
                "Cannot read the Databricks config file {}: fix DATABRICKS_CONFIG_FILE or unset it",
                p.display()
            )))
            }
        },
    };
    let Some(text) = text else {
        return match explicit_profile {
            Some(name) => Err(JobsError::Config(format!(
                "DATABRICKS_CONFIG_PROFILE is \"{name}\" but there is no Databricks config file: create ~/.databrickscfg or set DATABRICKS_CONFIG_FILE"
            ))),
            None => Ok((None, HashMap::new())),
        };
    };
    let shown = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let file = parse_config_file(&text)
        .map_err(|detail| JobsError::Config(format!("Cannot parse the Databricks config file {shown} ({detail}): fix the file or set DATABRICKS_CONFIG_FILE")))?;
    match select_profile(&file, explicit_profile) {
        Ok(Some((name, values))) => Ok((Some(name), values.clone())),
        Ok(None) => Ok((None, HashMap::new())),
        Err(name) => Err(JobsError::Config(format!(
            "Profile \"{name}\" is not in the Databricks config file {shown}: set DATABRICKS_CONFIG_PROFILE to one of its [profiles]"
        ))),
    }
}

fn expand_home(p: &str, env: &HashMap<String, String>) -> PathBuf {
    match (
        p.strip_prefix("~/"),
        non_empty(env.get("HOME").map(String::as_str)),
    ) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

// ---------------------------------------------------------------------------------------------
// Auth: bearer tokens
// ---------------------------------------------------------------------------------------------

/// A fetched OAuth token and the instants that govern its use.
#[derive(Clone)]
struct CachedToken {
    token: Secret,
    /// From here on the token is not handed out any more; a refresh happens first.
    refresh_at: Instant,
}

struct OAuth {
    client_id: String,
    client_secret: Secret,
    token_endpoint: tokio::sync::OnceCell<Url>,
    current: RwLock<Option<CachedToken>>,
    /// Held by the one caller refreshing; the others wait on it and then reuse its token.
    refreshing: tokio::sync::Mutex<()>,
    fetches: std::sync::atomic::AtomicU64,
}

struct AuthInner {
    http: reqwest::Client,
    host: Result<Url>,
    credentials: Result<Credentials>,
    oauth: Option<OAuth>,
}

/// Host and credentials of one plugin instance. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<AuthInner>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner.credentials {
            Ok(Credentials::Pat(_)) => "pat",
            Ok(Credentials::OAuthM2m { .. }) => "oauth-m2m",
            Err(_) => "unconfigured",
        };
        f.debug_struct("Auth")
            .field("host", &self.inner.host.as_ref().map(Url::as_str).ok())
            .field("auth_type", &kind)
            .finish()
    }
}

/// The OAuth refresh margin: 40 s before expiry, or half the lifetime for short-lived tokens.
pub fn refresh_margin(expires_in: Duration) -> Duration {
    std::cmp::min(Duration::from_secs(40), expires_in / 2)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Discovery {
    token_endpoint: Option<String>,
}

impl Auth {
    /// Never fails: a broken configuration is kept and reported by `host()` / `bearer()`.
    pub fn new(env: &HashMap<String, String>, http: reqwest::Client) -> Auth {
        let cfg = resolve_config(env);
        let oauth = match &cfg.credentials {
            Ok(Credentials::OAuthM2m {
                client_id,
                client_secret,
            }) => Some(OAuth {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                token_endpoint: tokio::sync::OnceCell::new(),
                current: RwLock::new(None),
                refreshing: tokio::sync::Mutex::new(()),
                fetches: Default::default(),
            }),
            _ => None,
        };
        Auth {
            inner: Arc::new(AuthInner {
                http,
                host: cfg.host,
                credentials: cfg.credentials,
                oauth,
            }),
        }
    }

    /// The workspace URL (origin with a trailing `/`), or the configuration error.
    pub fn host(&self) -> Result<Url> {
        self.inner.host.clone()
    }

    /// The service principal's credential kind, or the configuration error.
    pub fn credentials_kind(&self) -> Result<&'static str> {
        match &self.inner.credentials {
            Ok(Credentials::Pat(_)) => Ok("pat"),
            Ok(Credentials::OAuthM2m { .. }) => Ok("oauth-m2m"),
            Err(e) => Err(e.clone()),
        }
    }

    /// How many OAuth tokens were fetched so far (0 without OAuth). For tests and diagnostics.
    pub fn oauth_fetch_count(&self) -> u64 {
        self.inner
            .oauth
            .as_ref()
            .map_or(0, |o| o.fetches.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The bearer token for a call made as `identity`: the user's own token, the PAT, or a
    /// current OAuth M2M token (fetched or refreshed as needed; never an expired one).
    pub async fn bearer(&self, identity: &Identity) -> Result<Secret> {
        if let Identity::User(u) = identity {
            self.host()?;
            return Ok(u.token.clone());
        }
        let host = self.host()?;
        match &self.inner.credentials {
            Err(e) => Err(e.clone()),
            Ok(Credentials::Pat(t)) => Ok(t.clone()),
            Ok(Credentials::OAuthM2m { .. }) => {
                let oauth = self
                    .inner
                    .oauth
                    .as_ref()
                    .expect("oauth state exists for m2m credentials");
                if let Some(t) = Self::fresh(oauth) {
                    return Ok(t);
                }
                // Boxed: the token fetch (an HTTP exchange) is a large future that would
                // otherwise sit inline in every API call's future, fast path included.
                Box::pin(self.oauth_token(oauth, &host)).await
            }
        }
    }

    /// After a 401 for `rejected`: drops the cached OAuth token if it is still the one that
    /// failed, so the next `bearer()` fetches a new one. Returns whether retrying the request
    /// with a new token can help (only for the service principal on OAuth M2M).
    pub fn invalidate(&self, identity: &Identity, rejected: &Secret) -> bool {
        if identity.is_user() {
            return false;
        }
        let Some(oauth) = &self.inner.oauth else {
            return false;
        };
        let mut cur = oauth.current.write().unwrap_or_else(|e| e.into_inner());
        if cur.as_ref().is_some_and(|c| &c.token == rejected) {
            *cur = None;
        }
        true
    }

    fn fresh(oauth: &OAuth) -> Option<Secret> {
        let cur = oauth.current.read().unwrap_or_else(|e| e.into_inner());
        cur.as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    async fn oauth_token(&self, oauth: &OAuth, host: &Url) -> Result<Secret> {
        if let Some(t) = Self::fresh(oauth) {
            return Ok(t);
        }
        // Single flight: the first caller refreshes, the rest wait here and reuse its token.
        let _guard = oauth.refreshing.lock().await;
        if let Some(t) = Self::fresh(oauth) {
            return Ok(t);
        }
        let endpoint = oauth
            .token_endpoint
            .get_or_try_init(|| self.discover(host))
            .await?
            .clone();
        let started = Instant::now();
        oauth
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = self
            .inner
            .http
            .post(endpoint)
            .basic_auth(&oauth.client_id, Some(oauth.client_secret.expose()))
            .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")]);
        let (status, retry_after, body) = exchange(request, "OAuth token request failed").await?;
        if !(200..300).contains(&status) {
            return Err(token_endpoint_error(status, retry_after));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            JobsError::Network("the OAuth token endpoint answered with an invalid body".into())
        })?;
        let token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                JobsError::Network(
                    "the OAuth token endpoint answered without an access_token".into(),
                )
            })?;
        let expires_in = parsed
            .expires_in
            .and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(3600));
        let secret = Secret::new(token);
        let refresh_at = started + expires_in - refresh_margin(expires_in);
        *oauth.current.write().unwrap_or_else(|e| e.into_inner()) = Some(CachedToken {
            token: secret.clone(),
            refresh_at,
        });
        Ok(secret)
    }

    async fn discover(&self, host: &Url) -> Result<Url> {
        let url = host
            .join("oidc/.well-known/oauth-authorization-server")
            .expect("static path joins");
        let fallback = || host.join("oidc/v1/token").expect("static path joins");
        let resp = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| network_error("OAuth discovery failed", &e))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(fallback());
        }
        let retry_after = parse_retry_after(resp.headers());
        let body = resp
            .bytes()
            .await
            .map_err(|e| network_error("OAuth discovery failed", &e))?;
        if !(200..300).contains(&status) {
            return Err(JobsError::Api {
                status,
                error_code: None,
                upstream_message: "OAuth discovery failed".into(),
                retry_after,
            });
        }
        let d: Discovery = serde_json::from_slice(&body).map_err(|_| {
            JobsError::Network("OAuth discovery answered with an invalid body".into())
        })?;
        match d.token_endpoint {
            Some(e) => Url::parse(&e)
                .ok()
                .filter(|u| matches!(u.scheme(), "https" | "http"))
                .ok_or_else(|| {
                    JobsError::Network(
                        "OAuth discovery answered with an invalid token_endpoint".into(),
                    )
                }),
            None => Ok(fallback()),
        }
    }
}

fn token_endpoint_error(status: u16, retry_after: Option<Duration>) -> JobsError {
    match status {
        400 | 401 | 403 => JobsError::Config(format!(
            "The OAuth token request was rejected (HTTP {status}): check DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET (or `client_id` / `client_secret` in the ~/.databrickscfg profile)"
        )),
        _ => JobsError::Api {
            status,
            error_code: None,
            upstream_message: "OAuth token request failed".into(),
            retry_after,
        },
    }
}

/// Sends `request` and reads the whole answer: status, `Retry-After` and body. A failure to
/// send or read is a network error described as `what`.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<(u16, Option<Duration>, Bytes)> {
    let resp = request.send().await.map_err(|e| network_error(what, &e))?;
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let body = resp.bytes().await.map_err(|e| network_error(what, &e))?;
    Ok((status, retry_after, body))
}

/// A transport error as text without the URL (which could carry query values) or any header.
pub(crate) fn network_error(context: &str, e: &reqwest::Error) -> JobsError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut src = std::error::Error::source(e);
    // The innermost causes (e.g. "connection refused", "connection reset by peer") say most.
    while let Some(s) = src {
        let text = s.to_string();
        if !text.contains("://") {
            detail = text;
        }
        src = s.source();
    }
    if detail.is_empty() {
        JobsError::Network(format!("{context}: {kind}"))
    } else {
        JobsError::Network(format!("{context}: {kind} ({detail})"))
    }
}

/// `Retry-After` as integer seconds or an HTTP-date (RFC 7231 IMF-fixdate).
pub fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    parse_retry_after_value(v, std::time::SystemTime::now())
}

pub fn parse_retry_after_value(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = parse_http_date(v)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` -> a `SystemTime`.
fn parse_http_date(v: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, mon, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == mon)? as u64
        + 1;
    let year: i64 = year.parse().ok()?;
    let mut t = time.split(':').map(|x| x.parse::<u64>());
    let (h, m, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || year < 1970 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days as u64 * 86400 + h * 3600 + m * 60 + s;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn cfg_err(r: &Result<impl fmt::Debug>) -> String {
        match r {
            Err(JobsError::Config(m)) => m.clone(),
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            let p = std::env::temp_dir().join(format!("appkit-jobs-auth-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn write(&self, name: &str, text: &str) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("dapi-very-secret");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "dapi-very-secret");
        let id = Identity::user("user-token-xyz");
        assert!(!format!("{id:?}").contains("user-token-xyz"));
        let creds = Credentials::OAuthM2m {
            client_id: "cid".into(),
            client_secret: Secret::new("shh-123"),
        };
        assert!(!format!("{creds:?}").contains("shh-123"));
    }

    #[test]
    fn scopes_are_keyed_and_distinct() {
        assert_eq!(Identity::ServicePrincipal.scope(), 0);
        let a = Identity::user("token-a");
        let a2 = Identity::user("token-a");
        let b = Identity::user("token-b");
        assert_eq!(a.scope(), a2.scope());
        assert_ne!(a.scope(), b.scope());
        assert_ne!(a.scope(), 0);
        // Not an unkeyed hash of the token: a fresh default hasher disagrees with the scope.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        "token-a".hash(&mut h);
        assert_ne!(a.scope(), h.finish());
    }

    #[test]
    fn host_normalization() {
        assert_eq!(
            normalize_host("my-ws.cloud.databricks.com")
                .unwrap()
                .as_str(),
            "https://my-ws.cloud.databricks.com/"
        );
        assert_eq!(
            normalize_host("https://my-ws.cloud.databricks.com/")
                .unwrap()
                .as_str(),
            "https://my-ws.cloud.databricks.com/"
        );
        assert_eq!(
            normalize_host(" https://ws.azuredatabricks.net/?o=123 ")
                .unwrap()
                .as_str(),
            "https://ws.azuredatabricks.net/"
        );
        assert_eq!(
            normalize_host("http://127.0.0.1:8123").unwrap().as_str(),
            "http://127.0.0.1:8123/"
        );
        assert_eq!(
            normalize_host("127.0.0.1:8123").unwrap().as_str(),
            "https://127.0.0.1:8123/"
        );
        let e = normalize_host("https://user:dapi-secret@ws.example.com").unwrap();
        assert!(!e.as_str().contains("dapi-secret"));
        let m = cfg_err(&normalize_host("ftp://x.example.com"));
        assert!(m.contains("DATABRICKS_HOST"));
        let m = cfg_err(&normalize_host("https://"));
        assert!(m.contains("DATABRICKS_HOST"));
    }

    #[test]
    fn env_pat_and_m2m() {
        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "ws.example.com"),
            ("DATABRICKS_TOKEN", "dapi1"),
        ]));
        assert_eq!(c.host.unwrap().as_str(), "https://ws.example.com/");
        assert_eq!(
            c.credentials.unwrap(),
            Credentials::Pat(Secret::new("dapi1"))
        );

        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "https://ws.example.com"),
            ("DATABRICKS_CLIENT_ID", "cid"),
            ("DATABRICKS_CLIENT_SECRET", "csecret"),
        ]));
        assert_eq!(
            c.credentials.unwrap(),
            Credentials::OAuthM2m {
                client_id: "cid".into(),
                client_secret: Secret::new("csecret")
            }
        );

        // auth type chooses when both are present; PAT first otherwise
        let both = [
            ("DATABRICKS_HOST", "ws.example.com"),
            ("DATABRICKS_TOKEN", "dapi1"),
            ("DATABRICKS_CLIENT_ID", "cid"),
            ("DATABRICKS_CLIENT_SECRET", "csecret"),
        ];
        assert!(matches!(
            resolve_config(&env(&both)).credentials,
            Ok(Credentials::Pat(_))
        ));
        let mut e = env(&both);
        e.insert("DATABRICKS_AUTH_TYPE".into(), "oauth-m2m".into());
        assert!(matches!(
            resolve_config(&e).credentials,
            Ok(Credentials::OAuthM2m { .. })
        ));
    }

    #[test]
    fn missing_configuration_names_what_to_set() {
        let c = resolve_config(&env(&[]));
        assert!(cfg_err(&c.host).contains("set DATABRICKS_HOST"));
        let m = cfg_err(&c.credentials);
        assert!(m.contains("DATABRICKS_TOKEN") && m.contains("DATABRICKS_CLIENT_ID"));

        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "h.example.com"),
            ("DATABRICKS_CLIENT_ID", "cid"),
        ]));
        assert!(cfg_err(&c.credentials).contains("DATABRICKS_CLIENT_SECRET"));
        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "h.example.com"),
            ("DATABRICKS_CLIENT_SECRET", "topsecret"),
        ]));
        let m = cfg_err(&c.credentials);
        assert!(m.contains("DATABRICKS_CLIENT_ID") && !m.contains("topsecret"));

        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "h"),
            ("DATABRICKS_AUTH_TYPE", "pat"),
            ("DATABRICKS_CLIENT_ID", "x"),
        ]));
        assert!(cfg_err(&c.credentials).contains("DATABRICKS_TOKEN"));
        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "h"),
            ("DATABRICKS_AUTH_TYPE", "azure-cli"),
            ("DATABRICKS_TOKEN", "t"),
        ]));
        assert!(cfg_err(&c.credentials).contains("azure-cli"));
        // empty values count as unset
        let c = resolve_config(&env(&[("DATABRICKS_HOST", "  "), ("DATABRICKS_TOKEN", "")]));
        assert!(c.host.is_err() && c.credentials.is_err());
    }

    #[test]
    fn config_file_parsing() {
        let text = "\
# comment
; another
[DEFAULT]
host = https://default.example.com
token = dapi-default

[dev]
HOST=dev.example.com
client_id = cid
client_secret = c=s=with=equals

[__settings__]
default_profile = dev
";
        let f = parse_config_file(text).unwrap();
        assert_eq!(f["DEFAULT"]["token"], "dapi-default");
        assert_eq!(f["dev"]["host"], "dev.example.com");
        assert_eq!(f["dev"]["client_secret"], "c=s=with=equals");
        assert!(parse_config_file("host = x\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(parse_config_file("[a]\njunk line\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse_config_file("[a\n").is_err());

        // profile selection: explicit > __settings__.default_profile > DEFAULT
        assert_eq!(
            select_profile(&f, Some("DEFAULT")).unwrap().unwrap().0,
            "DEFAULT"
        );
        assert_eq!(select_profile(&f, None).unwrap().unwrap().0, "dev");
        assert_eq!(select_profile(&f, Some("nope")).unwrap_err(), "nope");
        let g = parse_config_file("[DEFAULT]\nhost=a\n[other]\nhost=b\n").unwrap();
        assert_eq!(select_profile(&g, None).unwrap().unwrap().0, "DEFAULT");
        let h = parse_config_file("[other]\nhost=b\n").unwrap();
        assert!(select_profile(&h, None).unwrap().is_none());
    }

    #[test]
    fn profiles_from_file_and_env_precedence() {
        let dir = TempDir::new();
        let home = dir.0.display().to_string();
        dir.write(
            ".databrickscfg",
            "[DEFAULT]\nhost = default.example.com\ntoken = dapi-file\n\n[m2m]\nhost = http://127.0.0.1:9\nclient_id = fid\nclient_secret = fsecret\n",
        );
        // HOME from the env map, DEFAULT profile
        let c = resolve_config(&env(&[("HOME", &home)]));
        assert_eq!(c.profile.as_deref(), Some("DEFAULT"));
        assert_eq!(c.host.unwrap().as_str(), "https://default.example.com/");
        assert_eq!(
            c.credentials.unwrap(),
            Credentials::Pat(Secret::new("dapi-file"))
        );
        // env wins over the file, key by key
        let c = resolve_config(&env(&[
            ("HOME", &home),
            ("DATABRICKS_HOST", "env.example.com"),
        ]));
        assert_eq!(c.host.unwrap().as_str(), "https://env.example.com/");
        assert_eq!(
            c.credentials.unwrap(),
            Credentials::Pat(Secret::new("dapi-file"))
        );
        // explicit profile
        let c = resolve_config(&env(&[
            ("HOME", &home),
            ("DATABRICKS_CONFIG_PROFILE", "m2m"),
        ]));
        assert_eq!(c.host.unwrap().as_str(), "http://127.0.0.1:9/");
        assert!(
            matches!(c.credentials, Ok(Credentials::OAuthM2m { ref client_id, .. }) if client_id == "fid")
        );
        // missing profile: one clear error naming the variable
        let c = resolve_config(&env(&[
            ("HOME", &home),
            ("DATABRICKS_CONFIG_PROFILE", "prod"),
        ]));
        let m = cfg_err(&c.host);
        assert!(m.contains("\"prod\"") && m.contains("DATABRICKS_CONFIG_PROFILE"));
        // explicit config file + __settings__
        let f = dir.write(
            "custom.cfg",
            "[__settings__]\ndefault_profile = b\n[b]\nhost = b.example.com\ntoken = dapi-b\n",
        );
        let c = resolve_config(&env(&[("DATABRICKS_CONFIG_FILE", &f)]));
        assert_eq!(c.profile.as_deref(), Some("b"));
        assert_eq!(
            c.credentials.unwrap(),
            Credentials::Pat(Secret::new("dapi-b"))
        );
        // explicit file that does not exist
        let c = resolve_config(&env(&[(
            "DATABRICKS_CONFIG_FILE",
            "/nonexistent/appkit-jobs.cfg",
        )]));
        assert!(cfg_err(&c.credentials).contains("DATABRICKS_CONFIG_FILE"));
        // a broken file: error names the file and line, not its secrets
        let f = dir.write("broken.cfg", "[x]\ntoken = dapi-broken\nthis is not ini\n");
        let c = resolve_config(&env(&[("DATABRICKS_CONFIG_FILE", &f)]));
        let m = cfg_err(&c.host);
        assert!(m.contains("line 3") && !m.contains("dapi-broken"));
        // no HOME, no file: plain env errors
        let c = resolve_config(&env(&[("HOME", "/nonexistent-home-appkit")]));
        assert!(cfg_err(&c.host).contains("DATABRICKS_HOST"));
    }

    #[test]
    fn retry_after_parsing() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784111777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after_value("7", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after_value("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after_value("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after_value("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after_value("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after_value("soon", now), None);
        assert_eq!(parse_retry_after_value("-3", now), None);
    }

    #[test]
    fn refresh_margin_rule() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(40)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(80)),
            Duration::from_secs(40)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn bearer_reports_config_errors_and_user_tokens() {
        let http = reqwest::Client::new();
        let auth = Auth::new(&env(&[]), http.clone());
        let e = auth.bearer(&Identity::ServicePrincipal).await.unwrap_err();
        assert!(matches!(e, JobsError::Config(ref m) if m.contains("DATABRICKS_HOST")));

        let auth = Auth::new(
            &env(&[("DATABRICKS_HOST", "http://127.0.0.1:9")]),
            http.clone(),
        );
        let e = auth.bearer(&Identity::ServicePrincipal).await.unwrap_err();
        assert!(matches!(e, JobsError::Config(ref m) if m.contains("DATABRICKS_TOKEN")));
        // a user needs only the host
        let t = auth.bearer(&Identity::user("user-tok")).await.unwrap();
        assert_eq!(t.expose(), "user-tok");
        assert!(!auth.invalidate(&Identity::user("user-tok"), &t));

        let auth = Auth::new(
            &env(&[
                ("DATABRICKS_HOST", "http://127.0.0.1:9"),
                ("DATABRICKS_TOKEN", "dapi-x"),
            ]),
            http,
        );
        assert_eq!(
            auth.bearer(&Identity::ServicePrincipal)
                .await
                .unwrap()
                .expose(),
            "dapi-x"
        );
        assert!(!format!("{auth:?}").contains("dapi-x"));
    }
}
