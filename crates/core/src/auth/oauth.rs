//! OAuth machine-to-machine: client credentials exchanged for short-lived tokens at the
//! workspace's token endpoint (found by OIDC discovery), refreshed before they expire with one
//! refresh in flight however many callers wait for it.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;

use super::Secret;
use crate::http::{exchange, network_error, parse_retry_after};
use crate::{JobsError, Result};

/// The OAuth refresh margin: 40 s before expiry, or half the lifetime for short-lived tokens.
pub fn refresh_margin(expires_in: Duration) -> Duration {
    std::cmp::min(Duration::from_secs(40), expires_in / 2)
}

/// A fetched token and the instant from which it is no longer handed out.
#[derive(Clone)]
struct CachedToken {
    token: Secret,
    refresh_at: Instant,
}

/// The service principal's OAuth M2M state: its credentials and the current token.
pub(super) struct OAuth {
    client_id: String,
    client_secret: Secret,
    token_endpoint: tokio::sync::OnceCell<Url>,
    current: RwLock<Option<CachedToken>>,
    /// Held by the one caller refreshing; the others wait on it and then reuse its token.
    refreshing: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
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

impl OAuth {
    pub(super) fn new(client_id: String, client_secret: Secret) -> OAuth {
        OAuth {
            client_id,
            client_secret,
            token_endpoint: tokio::sync::OnceCell::new(),
            current: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// Tokens fetched so far.
    pub(super) fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The current token while it is not due for a refresh.
    pub(super) fn fresh(&self) -> Option<Secret> {
        let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
        cur.as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    /// Drops the cached token if it is still `rejected`, so that the next call fetches anew.
    pub(super) fn invalidate(&self, rejected: &Secret) {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if cur.as_ref().is_some_and(|c| &c.token == rejected) {
            *cur = None;
        }
    }

    /// A fresh token: the cached one, or one fetched now (single flight).
    pub(super) async fn token(&self, http: &reqwest::Client, host: &Url) -> Result<Secret> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _guard = self.refreshing.lock().await;
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let endpoint = self
            .token_endpoint
            .get_or_try_init(|| discover(http, host))
            .await?
            .clone();
        let started = Instant::now();
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let request = http
            .post(endpoint)
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")]);
        let crate::http::Answer {
            status,
            retry_after,
            body,
            ..
        } = exchange(request, "OAuth token request failed").await?;
        if !(200..300).contains(&status) {
            return Err(token_endpoint_error(status, retry_after));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            JobsError::invalid_body("the OAuth token endpoint answered with an invalid body")
        })?;
        let token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                JobsError::invalid_body("the OAuth token endpoint answered without an access_token")
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
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(CachedToken {
            token: secret.clone(),
            refresh_at: started + expires_in - refresh_margin(expires_in),
        });
        Ok(secret)
    }
}

/// The token endpoint from the workspace's OIDC discovery document; `{host}/oidc/v1/token`
/// when the workspace has none.
async fn discover(http: &reqwest::Client, host: &Url) -> Result<Url> {
    let url = host
        .join("oidc/.well-known/oauth-authorization-server")
        .expect("static path joins");
    let fallback = || host.join("oidc/v1/token").expect("static path joins");
    let resp = http
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
    let d: Discovery = serde_json::from_slice(&body)
        .map_err(|_| JobsError::invalid_body("OAuth discovery answered with an invalid body"))?;
    match d.token_endpoint {
        Some(e) => Url::parse(&e)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| {
                JobsError::invalid_body("OAuth discovery answered with an invalid token_endpoint")
            }),
        None => Ok(fallback()),
    }
}

/// A refused token request is a configuration problem (wrong id or secret); anything else is
/// an upstream failure, retried like one.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
