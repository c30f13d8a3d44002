//! The ledger: what an app's instances share. Who started or repaired each run through the
//! plugin (with when, the job, the params and the instance), and the read cache's entries.
//!
//! Two stores behind one interface:
//! - in memory ([`memory::MemoryStore`]): the default, this process only;
//! - PostgreSQL ([`postgres::PgStore`], Lakebase or any other, see `settings.rs`), shared by
//!   every instance, with the in-memory store in front of it.
//!
//! A database failure never fails the plugin: every method here answers from what this process
//! knows when the database cannot, and starts recorded meanwhile are written once it is back.
pub mod credentials;
pub mod fleet;
pub mod memory;
pub mod migrations;
pub mod postgres;
pub mod settings;
pub mod who;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::client::JobsClient;
use crate::exec::{SharedHit, SharedTier};
use crate::telemetry::Telemetry;

pub use settings::{LedgerOption, LedgerSettings, PgSettings};
pub use who::StartedBy;

/// A run started (`repair_id` 0) or repaired through the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRecord {
    pub run_id: i64,
    pub repair_id: i64,
    pub job_id: i64,
    pub job_key: String,
    pub started_by: StartedBy,
    /// The params as the caller gave them (before mapping), when any.
    pub params: Option<Value>,
    /// When, in epoch ms (this instance's clock).
    pub at_ms: i64,
    /// The app handles this run's end (its job has `onRunEnd`): the fleet watches for it.
    pub watch_end: bool,
}

/// Why the database could not do something: a stable code (a SQLSTATE such as `28P01`, a
/// network code such as `ECONNREFUSED`, `TIMEOUT`, `DOWN`, `CREDENTIAL_<code>`) and a short
/// detail for logs. Never a password, a token or a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerError {
    pub code: String,
    pub detail: String,
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl LedgerError {
    fn down() -> LedgerError {
        LedgerError {
            code: "DOWN".into(),
            detail: "the database is not reachable right now".into(),
        }
    }

    fn timeout() -> LedgerError {
        LedgerError {
            code: "TIMEOUT".into(),
            detail: "the database did not answer in time".into(),
        }
    }

    fn credential(e: crate::JobsError) -> LedgerError {
        LedgerError {
            code: format!("CREDENTIAL_{}", e.code()),
            detail: format!("no database credential: {}", e.public_message()),
        }
    }

    fn from_pool(e: deadpool::managed::PoolError<LedgerError>) -> LedgerError {
        match e {
            deadpool::managed::PoolError::Backend(e) => e,
            deadpool::managed::PoolError::Timeout(_) => LedgerError::timeout(),
            other => LedgerError {
                code: "POOL".into(),
                detail: other.to_string(),
            },
        }
    }

    /// The connection is lost or refused (as opposed to one statement failing): a network code,
    /// a timeout, or a SQLSTATE of the classes connection exception (08), invalid authorization
    /// (28), insufficient resources (53), operator intervention (57), system error (58) or
    /// internal error (XX).
    fn is_connectivity(&self) -> bool {
        let sqlstate = self.code.len() == 5 && self.code.chars().all(|c| c.is_ascii_alphanumeric());
        if !sqlstate {
            return self.code != "EPOSTGRES";
        }
        ["08", "28", "53", "57", "58", "XX"]
            .iter()
            .any(|class| self.code.starts_with(class))
    }

    /// The database refused the credentials.
    fn is_auth(&self) -> bool {
        self.code == "28P01" || self.code == "28000"
    }
}

impl From<tokio_postgres::Error> for LedgerError {
    fn from(e: tokio_postgres::Error) -> LedgerError {
        if let Some(code) = e.code() {
            // The server's own message; it never holds a password.
            let detail = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            return LedgerError {
                code: code.code().to_string(),
                detail: detail.chars().take(200).collect(),
            };
        }
        let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>());
        let code = match io.map(std::io::Error::kind) {
            Some(std::io::ErrorKind::ConnectionRefused) => "ECONNREFUSED",
            Some(std::io::ErrorKind::ConnectionReset) => "ECONNRESET",
            Some(std::io::ErrorKind::TimedOut) => "ETIMEDOUT",
            Some(_) => "ENETWORK",
            None if e.is_closed() => "ECONNRESET",
            None => "EPOSTGRES",
        };
        LedgerError {
            code: code.into(),
            detail: e.to_string().chars().take(200).collect(),
        }
    }
}

/// What the ledger is doing, for telemetry and `ledgerStatus()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerStatus {
    /// `"memory"` or `"postgres"`.
    pub store: &'static str,
    /// The database answers (always true in memory).
    pub up: bool,
    /// The listener hears other instances.
    pub listening: bool,
    /// `host:port/database`, no credential.
    pub database: Option<String>,
    /// The schema's version.
    pub schema_version: i32,
    /// `"lakebase"`, `"password"` or `"none"`.
    pub credentials: &'static str,
    pub credentials_minted: u64,
    pub operations: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Starts waiting for the database, and dropped because too many were waiting.
    pub backlog: usize,
    pub dropped: u64,
    /// Starts this process remembers.
    pub remembered: usize,
    pub instance: String,
}

/// The ledger of one plugin instance.
pub struct Ledger {
    local: memory::MemoryStore,
    pg: Option<Arc<postgres::PgStore>>,
    instance: Arc<str>,
    /// `ledger.leaseMs`, when given.
    lease: Option<Duration>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("store", &self.status().store)
            .finish()
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Some(pg) = &self.pg {
            pg.close();
        }
    }
}

/// An id for this instance: the host name, the process id and four random bytes.
fn instance_id(env: &HashMap<String, String>) -> Arc<str> {
    let host = env
        .get("HOSTNAME")
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .unwrap_or("instance");
    let host: String = host.chars().filter(|c| !c.is_control()).take(64).collect();
    Arc::from(format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

impl Ledger {
    /// In memory only.
    pub fn memory(env: &HashMap<String, String>) -> Ledger {
        Ledger {
            local: memory::MemoryStore::default(),
            pg: None,
            instance: instance_id(env),
            lease: None,
        }
    }

    /// Where `settings` say; a database is connected in the background (within a Tokio
    /// runtime), with `client` minting Lakebase credentials; its operations are measured by
    /// `telemetry` (`ledger.*` records).
    pub fn start(
        settings: LedgerSettings,
        env: &HashMap<String, String>,
        client: &JobsClient,
        telemetry: Arc<Telemetry>,
    ) -> Ledger {
        let mut ledger = Ledger::memory(env);
        if let LedgerSettings::Postgres(pg) = settings {
            ledger.lease = pg.lease;
            let credentials = Arc::new(credentials::Credentials::new(
                pg.password.clone(),
                pg.endpoint.clone(),
                client,
            ));
            ledger.pg = Some(postgres::PgStore::start(
                *pg,
                credentials,
                ledger.instance.clone(),
                telemetry,
            ));
        }
        ledger
    }

    /// The fleet's polls (one poller per run for every instance), when the ledger has a database:
    /// leases of `ledger.leaseMs`, else `fleet::default_lease(base)`, checked every poll interval
    /// (a third of the lease at most). Within a Tokio runtime.
    pub fn fleet(&self, base: Duration) -> Option<Arc<fleet::FleetPolls>> {
        let pg = self.pg.as_ref()?;
        let (lease, check) = self.lease_and_check(base);
        Some(fleet::FleetPolls::start(pg.clone(), lease, check))
    }

    /// The lease of what an instance holds for the fleet (a run's poll, a watch for its end):
    /// `ledger.leaseMs`, else `fleet::default_lease(base)`; and how often the others check for
    /// lapsed ones: every poll interval, a third of the lease at most, 100 ms at least.
    pub fn lease_and_check(&self, base: Duration) -> (Duration, Duration) {
        let lease = self.lease.unwrap_or_else(|| fleet::default_lease(base));
        (lease, base.min(lease / 3).max(Duration::from_millis(100)))
    }

    /// The database, when the ledger has one.
    pub fn postgres(&self) -> Option<&Arc<postgres::PgStore>> {
        self.pg.as_ref()
    }

    /// Records a start: in this process at once, and in the database before returning while it
    /// is up (bounded in time); while it is not, it is written once it is back.
    pub async fn record(&self, record: StartRecord) {
        self.local.insert(record.clone());
        if let Some(pg) = &self.pg {
            pg.record(&record).await;
        }
    }

    /// The job of `run_id` when the ledger knows it: a run started or repaired through the plugin
    /// (here, or anywhere with the database), or one the fleet polls for the identity of
    /// `partition` (`Identity::fleet_partition`). A run's job never changes.
    pub async fn job_of(&self, partition: &str, run_id: i64) -> Option<i64> {
        if let Some(job_id) = self.local.job_of(run_id) {
            return Some(job_id);
        }
        let pg = self.pg.as_ref().filter(|pg| pg.health.up())?;
        pg.job_of(partition.to_string(), run_id)
            .await
            .ok()
            .flatten()
    }

    /// Who started `run_id`, when the ledger knows.
    pub async fn started_by(&self, run_id: i64) -> Option<StartedBy> {
        self.started_by_each(&[run_id]).await.remove(&run_id)
    }

    /// Who started each of `run_ids` (the ones the ledger knows). Without the database, what
    /// this process recorded.
    pub async fn started_by_each(&self, run_ids: &[i64]) -> HashMap<i64, StartedBy> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for id in run_ids {
            match self.local.started_by(*id) {
                Some(who) => {
                    found.insert(*id, who);
                }
                None => missing.push(*id),
            }
        }
        if let (Some(pg), false) = (&self.pg, missing.is_empty()) {
            if let Ok(rows) = pg.started_by(missing).await {
                found.extend(rows);
            }
        }
        found
    }

    /// The newest runs of `job_id` that `who` started (see `StartedBy::matches`), at most
    /// `limit`: from the database, with this process's own starts not written yet; without the
    /// database, this process's.
    pub async fn runs_started_by(&self, job_id: i64, who: &str, limit: usize) -> Vec<i64> {
        let mut runs = self.local.started_by_who(job_id, who, limit);
        if let Some(pg) = &self.pg {
            if let Ok(rows) = pg
                .started_by_who(job_id, who.to_string(), limit as i64)
                .await
            {
                // A run recorded here and there appears twice (at two clocks' instants).
                let mut newest: HashMap<i64, i64> = HashMap::new();
                for (at, id) in runs.into_iter().chain(rows) {
                    let t = newest.entry(id).or_insert(at);
                    *t = (*t).max(at);
                }
                runs = newest.into_iter().map(|(id, at)| (at, id)).collect();
                runs.sort_unstable_by(|a, b| b.cmp(a));
                runs.truncate(limit);
            }
        }
        runs.into_iter().map(|(_, id)| id).collect()
    }

    /// After a write to `job_id` (a run-now, whose run `record` names when it started one): the
    /// start recorded, then the job's shared cache entries made stale on every instance, in one
    /// statement while the database is up, before returning.
    pub async fn record_and_invalidate(&self, record: Option<StartRecord>, job_id: i64) {
        match record {
            Some(record) => self.record(record).await,
            None => self.invalidate(job_id).await,
        }
    }

    /// A write changed `job_id`: the shared cache's entries of it are stale on every instance.
    pub async fn invalidate(&self, job_id: i64) {
        if let Some(pg) = &self.pg {
            let _ = pg.invalidate(vec![job_id]).await;
        }
    }

    /// `invalidate`, batched with others within milliseconds (a watched run moved).
    pub fn invalidate_soon(&self, job_id: i64) {
        if let Some(pg) = &self.pg {
            pg.invalidate_soon(job_id);
        }
    }

    /// The shared tier of the read cache, when the ledger has a database.
    pub fn shared_tier(&self) -> Option<Arc<dyn SharedTier>> {
        self.pg
            .as_ref()
            .map(|pg| Arc::new(PgTier(pg.clone())) as Arc<dyn SharedTier>)
    }

    /// Log lines for the app's log since the last call.
    pub fn take_logs(&self) -> Vec<postgres::LogLine> {
        self.pg.as_ref().map(|p| p.take_logs()).unwrap_or_default()
    }

    pub fn status(&self) -> LedgerStatus {
        let remembered = self.local.len();
        match &self.pg {
            None => LedgerStatus {
                store: "memory",
                up: true,
                listening: false,
                database: None,
                schema_version: 0,
                credentials: "none",
                credentials_minted: 0,
                operations: 0,
                errors: 0,
                last_error: None,
                backlog: 0,
                dropped: 0,
                remembered,
                instance: self.instance.to_string(),
            },
            Some(pg) => {
                use std::sync::atomic::Ordering::Relaxed;
                LedgerStatus {
                    store: "postgres",
                    up: pg.health.up(),
                    listening: pg.health.listening(),
                    database: Some(pg.described().to_string()),
                    schema_version: pg.health.version(),
                    credentials: pg.credentials().kind(),
                    credentials_minted: pg.credentials().minted(),
                    operations: pg.health.ops.load(Relaxed),
                    errors: pg.health.errors.load(Relaxed),
                    last_error: pg.health.last_error().map(|e| e.to_string()),
                    backlog: pg.backlog_len(),
                    dropped: pg.health.dropped.load(Relaxed),
                    remembered,
                    instance: self.instance.to_string(),
                }
            }
        }
    }

    /// Waits until the database is up, at most `within` (false when it is not, or there is
    /// none). For a start that would rather begin with the database, never for correctness.
    pub async fn ready(&self, within: Duration) -> bool {
        let Some(pg) = &self.pg else { return false };
        let deadline = tokio::time::Instant::now() + within;
        while !pg.health.up() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// The read cache's shared tier on the ledger's database.
struct PgTier(Arc<postgres::PgStore>);

impl SharedTier for PgTier {
    fn get<'a>(&'a self, key: &'a str, gen_job: Option<i64>) -> BoxFuture<'a, Option<SharedHit>> {
        Box::pin(async move {
            if !self.0.health.up() {
                return None;
            }
            let (gen, entry) = self.0.cache_get(key.to_string(), gen_job).await.ok()?;
            let value = entry.and_then(|(text, left)| {
                serde_json::from_str::<Value>(&text).ok().map(|v| (v, left))
            });
            Some(SharedHit { gen, value })
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        gen_job: Option<i64>,
        gen: i64,
        value: &'a Value,
        ttl: Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self
                .0
                .cache_put(key.to_string(), gen_job, gen, value.to_string(), ttl)
                .await;
        })
    }
}
