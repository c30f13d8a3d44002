//! Workspace host and credentials of one plugin instance.
//!
//! | module     | concept                                                           |
//! |------------|-------------------------------------------------------------------|
//! | `identity` | [`Secret`], [`Identity`] (service principal or user), partitions   |
//! | `profile`  | host and credentials from the env map and `~/.databrickscfg`      |
//! | `oauth`    | OAuth M2M tokens: discovery, fetch, single-flight refresh         |
//!
//! [`Auth`] resolves the configuration once and hands out bearer tokens: a user's own token, a
//! PAT as is, or a current OAuth M2M token. A broken configuration is kept and reported, as a
//! [`JobsError::Config`] naming what to set, by the calls that need it.
mod identity;
mod oauth;
mod profile;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use url::Url;

pub use identity::{Identity, Secret, UserToken};
pub use oauth::refresh_margin;
pub use profile::{
    normalize_host, parse_config_file, resolve_config, select_profile, ConfigFile, Credentials,
    ResolvedConfig,
};

use crate::{JobsError, Result};
use oauth::OAuth;

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
        let kind = self.credentials_kind().unwrap_or("unconfigured");
        f.debug_struct("Auth")
            .field("host", &self.inner.host.as_ref().map(Url::as_str).ok())
            .field("auth_type", &kind)
            .finish()
    }
}

impl Auth {
    /// Never fails: a broken configuration is kept and reported by `host()` / `bearer()`.
    pub fn new(env: &HashMap<String, String>, http: reqwest::Client) -> Auth {
        let cfg = resolve_config(env);
        let oauth = match &cfg.credentials {
            Ok(Credentials::OAuthM2m {
                client_id,
                client_secret,
            }) => Some(OAuth::new(client_id.clone(), client_secret.clone())),
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
        self.inner.oauth.as_ref().map_or(0, OAuth::fetch_count)
    }

    /// The bearer token for a call made as `identity`: the user's own token, the PAT, or a
    /// current OAuth M2M token (fetched or refreshed as needed; never an expired one).
    pub async fn bearer(&self, identity: &Identity) -> Result<Secret> {
        let host = self.inner.host.as_ref().map_err(Clone::clone)?;
        if let Identity::User(u) = identity {
            return Ok(u.secret().clone());
        }
        match (&self.inner.credentials, &self.inner.oauth) {
            (Err(e), _) => Err(e.clone()),
            (Ok(Credentials::Pat(t)), _) => Ok(t.clone()),
            (Ok(Credentials::OAuthM2m { .. }), Some(oauth)) => match oauth.fresh() {
                Some(t) => Ok(t),
                // Boxed: the token fetch (an HTTP exchange) is a large future that would
                // otherwise sit inline in every API call's future, fast path included.
                None => Box::pin(oauth.token(&self.inner.http, host)).await,
            },
            (Ok(Credentials::OAuthM2m { .. }), None) => Err(JobsError::Internal(
                "OAuth state missing for M2M credentials".into(),
            )),
        }
    }

    /// After a 401 for `rejected`: drops the cached OAuth token if it is still the one that
    /// failed, so the next `bearer()` fetches a new one. Returns whether retrying the request
    /// with a new token can help (only for the service principal on OAuth M2M).
    pub fn invalidate(&self, identity: &Identity, rejected: &Secret) -> bool {
        match (&self.inner.oauth, identity) {
            (Some(oauth), Identity::ServicePrincipal) => {
                oauth.invalidate(rejected);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_env::env;

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
