//! The database password: none, a fixed one, or a Lakebase credential
//! (`POST /api/2.0/postgres/credentials`) minted with the plugin's own workspace identity.
//!
//! A Lakebase credential lasts an hour. It is kept until two minutes before it expires, and
//! one refresh serves every connection that needs it at the same time (the others wait for it).
//! PostgreSQL checks a password only when a connection opens, so connections already open
//! outlive their credential. A refused password drops the credential kept, so that the next
//! connection mints a fresh one.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;

use crate::auth::{Identity, Secret};
use crate::client::JobsClient;
use crate::error::JobsError;

/// Refresh this long before a credential expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(120);
/// Assumed lifetime of a credential whose answer gives no `expire_time`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

enum Source {
    None,
    Fixed(Secret),
    Lakebase {
        endpoint: String,
        client: JobsClient,
    },
}

/// Where connections get their password.
pub struct Credentials {
    source: Source,
    /// The minted credential and when to mint the next.
    kept: Mutex<Option<(Secret, SystemTime)>>,
    /// Credentials minted since start.
    minted: AtomicU64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.source {
            Source::None => "none",
            Source::Fixed(_) => "password",
            Source::Lakebase { .. } => "lakebase",
        };
        f.debug_struct("Credentials").field("kind", &kind).finish()
    }
}

impl Credentials {
    /// Lakebase credentials for `endpoint` when given, else the fixed `password` (if any).
    pub fn new(
        password: Option<Secret>,
        endpoint: Option<String>,
        client: &JobsClient,
    ) -> Credentials {
        let source = match (endpoint, password) {
            (Some(endpoint), _) => Source::Lakebase {
                endpoint,
                client: client.clone(),
            },
            (None, Some(p)) => Source::Fixed(p),
            (None, None) => Source::None,
        };
        Credentials {
            source,
            kept: Mutex::new(None),
            minted: AtomicU64::new(0),
        }
    }

    /// `"lakebase"`, `"password"` or `"none"`, for the ledger's status.
    pub fn kind(&self) -> &'static str {
        match self.source {
            Source::None => "none",
            Source::Fixed(_) => "password",
            Source::Lakebase { .. } => "lakebase",
        }
    }

    /// Lakebase credentials minted since start.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// The password for a new connection. A Lakebase credential is minted when none is kept or
    /// the kept one is within two minutes of expiring; concurrent callers share one mint.
    pub async fn password(&self) -> Result<Option<Secret>, JobsError> {
        let (endpoint, client) = match &self.source {
            Source::None => return Ok(None),
            Source::Fixed(p) => return Ok(Some(p.clone())),
            Source::Lakebase { endpoint, client } => (endpoint, client),
        };
        let mut kept = self.kept.lock().await;
        if let Some((secret, refresh_at)) = kept.as_ref() {
            if SystemTime::now() < *refresh_at {
                return Ok(Some(secret.clone()));
            }
        }
        let (secret, expires) = client
            .postgres_credential(&Identity::ServicePrincipal, endpoint)
            .await?;
        self.minted.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now();
        let expires = expires.unwrap_or(now + DEFAULT_LIFETIME);
        // A credential shorter-lived than the margin is used once, then minted again.
        let refresh_at = expires.checked_sub(REFRESH_MARGIN).unwrap_or(now).max(now);
        *kept = Some((secret.clone(), refresh_at));
        Ok(Some(secret))
    }

    /// The database refused the password: the next connection mints a fresh credential.
    pub async fn refused(&self) {
        *self.kept.lock().await = None;
    }
}
