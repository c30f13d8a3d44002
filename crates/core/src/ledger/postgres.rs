//! The ledger on PostgreSQL (Lakebase or any other): a pool of connections (deadpool, each
//! connection with the password of the moment, see `credentials.rs`), a supervisor that brings
//! the database up (connect, migrate) and back after any failure, and a listener on its own
//! connection for what other instances announce (`LISTEN appkit_jobs`).
//!
//! The database never fails the plugin: every operation is bounded in time; while the database
//! is away operations answer `Down` at once (no connect attempt on a caller's path), starts are
//! kept in a bounded backlog and written once it is back, and the supervisor retries with
//! back-off, minting a fresh credential for each new connection.
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::{AsyncMessage, Client, Config};
use tokio_util::sync::CancellationToken;

use super::credentials::Credentials;
use super::migrations::{self, SCHEMA};
use super::settings::PgSettings;
use super::{LedgerError, StartRecord, StartedBy};
use crate::telemetry::Telemetry;

/// A statement run on a pooled connection (see `PgStore::run`).
pub type Statement<'c, T> = futures::future::BoxFuture<'c, Result<T, tokio_postgres::Error>>;

/// Bound of every operation (pool wait, connect, query).
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections in the pool at most.
const POOL_SIZE: usize = 8;
/// Starts kept while the database is away, at most (then the oldest are dropped, counted).
pub const MAX_BACKLOG: usize = 10_000;
/// Back-off of the supervisor and the listener between attempts.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(10);
/// How often the listener checks that its connection still answers (a half-open socket never
/// ends the connection by itself), and how often expired cache rows are swept.
const LISTENER_CHECK: Duration = Duration::from_secs(10);
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long invalidations of watched runs' jobs gather before one statement sends them.
const INVALIDATE_BATCH: Duration = Duration::from_millis(50);
/// The channel instances announce on.
pub const CHANNEL: &str = "appkit_jobs";

/// What other instances announce, as the listener hands it on.
#[derive(Debug, Clone, PartialEq)]
pub enum Announcement {
    /// A write changed this job: cached reads of it are stale.
    Invalidate(i64),
    /// Anything else on the channel (for the modules that announce it).
    Other(String),
    /// The listener (re)connected: anything announced meanwhile was missed.
    Reconnected,
}

pub type OnAnnouncement = Arc<dyn Fn(&Announcement) + Send + Sync>;

/// Counters and the state of the database, for the ledger's status and telemetry.
#[derive(Debug, Default)]
pub struct PgHealth {
    up: AtomicBool,
    listening: AtomicBool,
    /// Operations that failed (the database away, a timeout, an error).
    pub errors: AtomicU64,
    /// Operations done.
    pub ops: AtomicU64,
    /// Starts dropped from a full backlog.
    pub dropped: AtomicU64,
    version: AtomicI32,
    last_error: Mutex<Option<LedgerError>>,
}

impl PgHealth {
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }
    pub fn version(&self) -> i32 {
        self.version.load(Ordering::Relaxed)
    }
    pub fn last_error(&self) -> Option<LedgerError> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A line for the app's log (the JS side writes them with its logger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub warn: bool,
    pub message: String,
}

/// Log lines waiting for JS, at most.
const MAX_LOG_LINES: usize = 100;

struct Manager {
    config: Config,
    credentials: Arc<Credentials>,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Manager {
    /// A new connection with the password of the moment, driven by a task of its own: the
    /// client, and what the connection hears on the channels it listens to (the pool's never
    /// listen; the listener reads them).
    async fn open(&self) -> Result<(Client, mpsc::UnboundedReceiver<String>), LedgerError> {
        let mut config = self.config.clone();
        let password = self
            .credentials
            .password()
            .await
            .map_err(LedgerError::credential)?;
        if let Some(p) = &password {
            config.password(p.expose());
        }
        config.connect_timeout(OP_TIMEOUT);
        let (tx, rx) = mpsc::unbounded_channel();
        let attempt = async {
            match (&self.tls, config.get_ssl_mode()) {
                (Some(tls), _) => {
                    let (client, connection) = config.connect(tls.clone()).await?;
                    tokio::spawn(drive(connection, tx));
                    Ok(client)
                }
                (None, tokio_postgres::config::SslMode::Disable) => {
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(drive(connection, tx));
                    Ok(client)
                }
                (None, _) => Err(LedgerError {
                    code: "ERR_TLS".into(),
                    detail: "no TLS configuration could be built on this platform".into(),
                }),
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(Ok(client)) => Ok((client, rx)),
            Ok(Err(e)) => {
                if e.is_auth() {
                    self.credentials.refused().await;
                }
                Err(e)
            }
            Err(_) => Err(LedgerError::timeout()),
        }
    }
}

/// Drives a connection until it closes, handing on the notifications it receives
/// (tokio-postgres delivers them only through `poll_message`).
async fn drive<S, T>(
    connection: tokio_postgres::Connection<S, T>,
    tx: mpsc::UnboundedSender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut connection = connection;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(n)) => {
                let _ = tx.send(n.payload().to_string());
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// A pooled connection, with its prepared statements: each statement is parsed and planned once
/// per connection (a plain query would prepare it again on every call, one more round trip).
pub struct PgConn {
    client: Client,
    prepared: Mutex<HashMap<String, tokio_postgres::Statement>>,
}

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

impl PgConn {
    async fn statement(
        &self,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        if let Some(prepared) = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
        {
            return Ok(prepared.clone());
        }
        let prepared = self.client.prepare(sql).await?;
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }

    pub async fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query(&statement, params).await
    }

    pub async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    pub async fn query_one(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query_one(&statement, params).await
    }

    pub async fn execute(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.execute(&statement, params).await
    }

    /// Statements without parameters, not prepared.
    pub async fn batch_execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }
}

impl deadpool::managed::Manager for Manager {
    type Type = PgConn;
    type Error = LedgerError;

    async fn create(&self) -> Result<PgConn, LedgerError> {
        Ok(PgConn {
            client: self.open().await?.0,
            prepared: Mutex::default(),
        })
    }

    async fn recycle(
        &self,
        conn: &mut PgConn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<LedgerError> {
        if conn.client.is_closed() {
            return Err(deadpool::managed::RecycleError::message(
                "connection closed",
            ));
        }
        Ok(())
    }
}

type Pool = deadpool::managed::Pool<Manager>;

/// rustls with this platform's trust store (Lakebase's certificates are publicly trusted).
fn rustls_connector() -> Option<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_platform_verifier()
        .ok()?
        .with_no_client_auth();
    Some(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The ledger's database.
pub struct PgStore {
    settings: PgSettings,
    manager_config: Arc<ManagerParts>,
    pool: Pool,
    credentials: Arc<Credentials>,
    pub health: PgHealth,
    backlog: Mutex<VecDeque<StartRecord>>,
    /// Wakes the supervisor when an operation failed.
    wake: Notify,
    instance: Arc<str>,
    on_announcement: Mutex<Vec<OnAnnouncement>>,
    logs: Mutex<VecDeque<LogLine>>,
    stop: CancellationToken,
    telemetry: Arc<Telemetry>,
    /// Jobs to invalidate in the next batch, and whether a batch is on its way.
    pending: Mutex<(HashSet<i64>, bool)>,
    /// How long a watch of a run's end is claimed for (see `run_end.rs`), ms.
    end_lease_ms: std::sync::atomic::AtomicU64,
}

/// What the listener needs to open its own connections.
struct ManagerParts {
    config: Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("at", &self.settings.described)
            .field("up", &self.health.up())
            .finish()
    }
}

impl PgStore {
    /// The store, its supervisor and listener started (within a Tokio runtime). It comes up in
    /// the background: until then every operation answers `Down`.
    pub fn start(
        settings: PgSettings,
        credentials: Arc<Credentials>,
        instance: Arc<str>,
        telemetry: Arc<Telemetry>,
    ) -> Arc<PgStore> {
        let tls = rustls_connector();
        let manager = Manager {
            config: settings.config.clone(),
            credentials: credentials.clone(),
            tls: tls.clone(),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(OP_TIMEOUT))
            .create_timeout(Some(OP_TIMEOUT))
            .recycle_timeout(Some(OP_TIMEOUT))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime and timeouts builds");
        let store = Arc::new(PgStore {
            manager_config: Arc::new(ManagerParts {
                config: settings.config.clone(),
                tls,
            }),
            settings,
            pool,
            credentials,
            health: PgHealth::default(),
            backlog: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            instance,
            on_announcement: Mutex::new(Vec::new()),
            logs: Mutex::new(VecDeque::new()),
            stop: CancellationToken::new(),
            telemetry,
            pending: Mutex::new((HashSet::new(), false)),
            end_lease_ms: std::sync::atomic::AtomicU64::new(15_000),
        });
        tokio::spawn(supervise(Arc::downgrade(&store), store.stop.clone()));
        tokio::spawn(listen(Arc::downgrade(&store), store.stop.clone()));
        store
    }

    /// Stops the supervisor and the listener, and closes the pool.
    pub fn close(&self) {
        self.stop.cancel();
        self.pool.close();
    }

    /// How long this instance's claim on a run's end lasts without renewal.
    pub fn set_end_lease(&self, lease: Duration) {
        self.end_lease_ms
            .store(lease.as_millis() as u64, Ordering::Relaxed);
    }

    fn end_lease_ms(&self) -> f64 {
        self.end_lease_ms.load(Ordering::Relaxed) as f64
    }

    /// This instance's id (what its leases and starts name).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Cancelled when the store closes: tasks built on it stop with it.
    pub fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn described(&self) -> &str {
        &self.settings.described
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Calls `f` with everything the listener hears.
    pub fn on_announcement(&self, f: OnAnnouncement) {
        self.on_announcement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }

    /// The log lines since the last call.
    pub fn take_logs(&self) -> Vec<LogLine> {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    fn log(&self, warn: bool, message: String) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if logs.len() >= MAX_LOG_LINES {
            logs.pop_front();
        }
        logs.push_back(LogLine { warn, message });
    }

    pub fn backlog_len(&self) -> usize {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Runs `op` on a pooled connection, bounded by `OP_TIMEOUT`; `Down` at once while the
    /// database is away. A failure takes the database down and wakes the supervisor.
    async fn with_client<T, F>(&self, operation: &'static str, op: F) -> Result<T, LedgerError>
    where
        F: for<'c> FnOnce(&'c PgConn) -> Statement<'c, T>,
    {
        if !self.health.up() {
            return Err(LedgerError::down());
        }
        let started = self.telemetry.start();
        let attempt = async {
            let client = self.pool.get().await.map_err(LedgerError::from_pool)?;
            op(&client).await.map_err(LedgerError::from)
        };
        let result = match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(LedgerError::timeout()),
        };
        self.health.ops.fetch_add(1, Ordering::Relaxed);
        if let Some(started) = started {
            let code = result.as_ref().err().map(|e| e.code.clone());
            self.telemetry.finish_ledger(started, operation, code);
        }
        if let Err(e) = &result {
            self.failed(e.clone());
        }
        result
    }

    fn failed(&self, e: LedgerError) {
        self.health.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .health
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        // A statement the database refused is that statement's failure; only a lost or
        // refused connection takes the database down.
        if !e.is_connectivity() {
            self.log(true, format!("[jobs] ledger: a statement failed ({e})"));
            return;
        }
        if self.health.up.swap(false, Ordering::AcqRel) {
            self.log(
                true,
                format!(
                    "[jobs] ledger: the database {} failed ({}); serving from memory until it is back",
                    self.settings.described, e
                ),
            );
        }
        self.wake.notify_one();
    }

    /// Records a start and makes its job's cached reads stale everywhere; while the database is
    /// away the start waits in the backlog (the others' caches expire).
    pub async fn record(&self, record: &StartRecord) {
        if self.health.up() {
            match self.write_start(record, true).await {
                Ok(()) => return,
                // Refused by the database itself (not lost on the way): no later try would do
                // better, and one kept would hold up the backlog behind it.
                Err(e) if !e.is_connectivity() => {
                    self.health.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(_) => {}
            }
        }
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        if backlog.len() >= MAX_BACKLOG {
            backlog.pop_front();
            self.health.dropped.fetch_add(1, Ordering::Relaxed);
        }
        backlog.push_back(record.clone());
    }

    /// One start's statement (see `insert_start`).
    async fn write_start(&self, record: &StartRecord, invalidate: bool) -> Result<(), LedgerError> {
        let (r, instance, end_lease) = (record.clone(), self.instance.clone(), self.end_lease_ms());
        self.with_client("ledger.recordStart", move |c| {
            Box::pin(insert_start(c, r, instance, invalidate, end_lease))
        })
        .await
    }

    /// Writes the backlog, oldest first, until it is empty or the database goes away again; a
    /// start the database refuses is dropped (and counted), so it cannot hold up the others.
    async fn flush(&self) -> usize {
        let mut written = 0;
        let mut jobs = HashSet::new();
        loop {
            let next = self
                .backlog
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .front()
                .cloned();
            let Some(record) = next else {
                break;
            };
            match self.write_start(&record, false).await {
                Ok(()) => {
                    jobs.insert(record.job_id);
                    written += 1;
                }
                Err(e) if !e.is_connectivity() => {
                    self.health.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => break,
            }
            let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
            if backlog
                .front()
                .is_some_and(|f| (f.run_id, f.repair_id) == (record.run_id, record.repair_id))
            {
                backlog.pop_front();
            }
        }
        // Reads of these jobs cached meanwhile (on any instance) said nobody started them.
        if !jobs.is_empty() {
            let _ = self.invalidate(jobs.into_iter().collect()).await;
        }
        written
    }

    /// Who started each of `run_ids` (the ones the ledger knows).
    pub async fn started_by(
        &self,
        run_ids: Vec<i64>,
    ) -> Result<Vec<(i64, StartedBy)>, LedgerError> {
        self.with_client("ledger.startedBy", move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!(
                            "SELECT run_id, email, user_id, user_name FROM {SCHEMA}.starts
                             WHERE repair_id = 0 AND run_id = ANY($1)"
                        ),
                        &[&run_ids],
                    )
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        (
                            row.get(0),
                            StartedBy {
                                email: row.get(1),
                                user_id: row.get(2),
                                user_name: row.get(3),
                            },
                        )
                    })
                    .collect())
            })
        })
        .await
    }

    /// The job of `run_id`: from the starts recorded, else from what the fleet published for
    /// the identity of `partition`.
    pub async fn job_of(&self, partition: String, run_id: i64) -> Result<Option<i64>, LedgerError> {
        self.with_client("ledger.jobOf", move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        &format!(
                            "SELECT job_id FROM {SCHEMA}.starts WHERE run_id = $2
                             UNION ALL
                             SELECT job_id FROM {SCHEMA}.updates
                             WHERE partition = $1 AND run_id = $2 AND job_id IS NOT NULL
                             LIMIT 1"
                        ),
                        &[&partition, &run_id],
                    )
                    .await?;
                Ok(row.map(|r| r.get(0)))
            })
        })
        .await
    }

    /// The newest runs of `job_id` that `who` started: `(started_at ms, run_id)`.
    pub async fn started_by_who(
        &self,
        job_id: i64,
        who: String,
        limit: i64,
    ) -> Result<Vec<(i64, i64)>, LedgerError> {
        self.with_client("ledger.startedByWho", move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!(
                            "SELECT (extract(epoch FROM started_at) * 1000)::bigint, run_id
                             FROM {SCHEMA}.starts
                             WHERE job_id = $1 AND repair_id = 0
                               AND (email = $2 OR user_id = $2 OR user_name = $2)
                             ORDER BY started_at DESC LIMIT $3"
                        ),
                        &[&job_id, &who, &limit],
                    )
                    .await?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            })
        })
        .await
    }

    /// A shared cache entry: the current generation of `gen_job` (0 without one), and the
    /// entry when it is there, of that generation and not expired (its value and time left).
    pub async fn cache_get(
        &self,
        key: String,
        gen_job: Option<i64>,
    ) -> Result<(i64, Option<(String, Duration)>), LedgerError> {
        self.with_client("ledger.cacheGet", move |c| {
            Box::pin(async move {
                let row = c
                    .query_one(
                        &format!(
                            "SELECT g.gen, c.value,
                                    (extract(epoch FROM c.expires_at - now()) * 1000)::bigint
                             FROM (SELECT coalesce((SELECT gen FROM {SCHEMA}.job_generations
                                                    WHERE job_id = $2), 0) AS gen) g
                             LEFT JOIN {SCHEMA}.cache c
                               ON c.key = $1 AND c.gen = g.gen AND c.expires_at > now()"
                        ),
                        &[&key, &gen_job],
                    )
                    .await?;
                let gen: i64 = row.get(0);
                let value: Option<String> = row.get(1);
                let left: Option<i64> = row.get(2);
                Ok((
                    gen,
                    value
                        .zip(left)
                        .map(|(v, ms)| (v, Duration::from_millis(ms.max(1) as u64))),
                ))
            })
        })
        .await
    }

    /// Stores a shared cache entry read at generation `gen` (an older generation is never read).
    pub async fn cache_put(
        &self,
        key: String,
        gen_job: Option<i64>,
        gen: i64,
        value: String,
        ttl: Duration,
    ) -> Result<(), LedgerError> {
        let ttl_ms = ttl.as_millis() as f64;
        self.with_client("ledger.cachePut", move |c| {
            Box::pin(async move {
                c.execute(
                    &format!(
                        "INSERT INTO {SCHEMA}.cache (key, gen_job, gen, value, expires_at)
                         VALUES ($1, $2, $3, $4, now() + $5::float8 * interval '1 millisecond')
                         ON CONFLICT (key) DO UPDATE
                           SET gen_job = excluded.gen_job, gen = excluded.gen,
                               value = excluded.value, expires_at = excluded.expires_at
                           WHERE {SCHEMA}.cache.gen <= excluded.gen"
                    ),
                    &[&key, &gen_job, &gen, &value, &ttl_ms],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Writes changed `job_ids`: their cached reads are stale on every instance (each job's
    /// generation moves on, and the others hear it).
    pub async fn invalidate(&self, job_ids: Vec<i64>) -> Result<(), LedgerError> {
        self.with_client("ledger.invalidate", move |c| {
            Box::pin(async move {
                c.execute(INVALIDATE_JOBS, &[&job_ids]).await?;
                Ok(())
            })
        })
        .await
    }

    /// `invalidate`, soon: the jobs asked within a few milliseconds go in one statement (a
    /// watched run's every state change asks; thousands of runs would otherwise write as often).
    pub fn invalidate_soon(self: &Arc<Self>, job_id: i64) {
        if !self.health.up() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.0.insert(job_id);
        if pending.1 {
            return;
        }
        pending.1 = true;
        let store = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(INVALIDATE_BATCH).await;
            let jobs: Vec<i64> = {
                let mut pending = store.pending.lock().unwrap_or_else(|e| e.into_inner());
                pending.1 = false;
                pending.0.drain().collect()
            };
            let _ = store.invalidate(jobs).await;
        });
    }

    /// Sends `payload` on the channel (other instances' listeners hear it).
    pub async fn announce(&self, payload: String) -> Result<(), LedgerError> {
        self.with_client("ledger.announce", move |c| {
            Box::pin(async move {
                c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// Runs `op` with a pooled connection (for the modules built on the ledger).
    pub async fn run<T, F>(&self, operation: &'static str, op: F) -> Result<T, LedgerError>
    where
        F: for<'c> FnOnce(&'c PgConn) -> Statement<'c, T>,
    {
        self.with_client(operation, op).await
    }

    /// Connect, migrate, then write the backlog: the database is up.
    async fn bring_up(&self) -> Result<(), LedgerError> {
        let attempt = async {
            let mut client = self.pool.get().await.map_err(LedgerError::from_pool)?;
            let migrated = migrations::migrate(&mut client.client)
                .await
                .map_err(LedgerError::from)?;
            Ok::<_, LedgerError>(migrated)
        };
        // A migration may wait on another instance's lock (up to its lock timeout).
        let migrated = match tokio::time::timeout(Duration::from_secs(40), attempt).await {
            Ok(r) => r?,
            Err(_) => return Err(LedgerError::timeout()),
        };
        self.health.version.store(migrated.to, Ordering::Relaxed);
        self.health.up.store(true, Ordering::Release);
        let migrated_note = if migrated.from != migrated.to {
            format!(
                ", schema {SCHEMA} migrated {} -> {}",
                migrated.from, migrated.to
            )
        } else {
            format!(", schema {SCHEMA} at version {}", migrated.to)
        };
        let written = self.flush().await;
        let backlog_note = if written > 0 {
            format!(", {written} start(s) written from the backlog")
        } else {
            String::new()
        };
        self.log(
            false,
            format!(
                "[jobs] ledger: PostgreSQL {} is up{migrated_note}{backlog_note}",
                self.settings.described
            ),
        );
        Ok(())
    }

    /// Deletes expired cache rows (any instance may; it is idempotent).
    async fn sweep(&self) {
        let _ = self
            .with_client("ledger.sweep", |c| {
                Box::pin(async move {
                    c.execute(
                        &format!("DELETE FROM {SCHEMA}.cache WHERE expires_at < now()"),
                        &[],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await;
    }

    fn announce_locally(&self, a: &Announcement) {
        let handlers = self
            .on_announcement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for h in handlers {
            h(a);
        }
    }
}

/// Moves each job's generation on and tells every listener (`inv:<job id>`).
const INVALIDATE_JOBS: &str = "WITH g AS (
       INSERT INTO appkit_jobs.job_generations (job_id, gen) SELECT unnest($1::bigint[]), 1
       ON CONFLICT (job_id) DO UPDATE SET gen = appkit_jobs.job_generations.gen + 1
       RETURNING job_id)
     SELECT pg_notify('appkit_jobs', 'inv:' || job_id) FROM g";

/// Records a start; with `invalidate`, also moves its job's generation on and announces it, in
/// the same statement (one round trip on the path of a run-now).
async fn insert_start(
    c: &PgConn,
    r: StartRecord,
    instance: Arc<str>,
    invalidate: bool,
    end_lease_ms: f64,
) -> Result<(), tokio_postgres::Error> {
    let params = r.params.map(tokio_postgres::types::Json);
    let instance: &str = &instance;
    let insert = format!(
        "INSERT INTO {SCHEMA}.starts
           (run_id, repair_id, job_id, job_key, email, user_id, user_name, params, instance,
            started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, to_timestamp($10::double precision / 1000))
         ON CONFLICT (run_id, repair_id) DO NOTHING"
    );
    // A run whose end the app handles is watched by this instance (see `run_end.rs`).
    let watch = format!(
        "INSERT INTO {SCHEMA}.run_ends (run_id, repair_id, job_key, claimed_by, claimed_until)
         SELECT $1, $2, $4, $9, now() + $12 * interval '1 millisecond' WHERE $11
         ON CONFLICT (run_id, repair_id) DO NOTHING"
    );
    let statement = if invalidate {
        format!(
            "WITH s AS ({insert}),
                  e AS ({watch}),
                  g AS (INSERT INTO {SCHEMA}.job_generations (job_id, gen) VALUES ($3, 1)
                        ON CONFLICT (job_id) DO UPDATE SET gen = {SCHEMA}.job_generations.gen + 1
                        RETURNING job_id)
             SELECT pg_notify('{CHANNEL}', 'inv:' || job_id) FROM g"
        )
    } else {
        format!("WITH s AS ({insert}) {watch}")
    };
    c.execute(
        &statement,
        &[
            &r.run_id,
            &r.repair_id,
            &r.job_id,
            &r.job_key,
            &r.started_by.email,
            &r.started_by.user_id,
            &r.started_by.user_name,
            &params,
            &instance,
            &(r.at_ms as f64),
            &r.watch_end,
            &end_lease_ms,
        ],
    )
    .await?;
    Ok(())
}

/// Brings the database up, and back up after every failure (with back-off); while it is up,
/// sweeps expired cache rows now and then.
async fn supervise(store: std::sync::Weak<PgStore>, stop: CancellationToken) {
    let mut retry = FIRST_RETRY;
    let mut reported = false;
    loop {
        let Some(s) = store.upgrade() else { return };
        if !s.health.up() {
            match s.bring_up().await {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    reported = false;
                }
                Err(e) => {
                    s.health.errors.fetch_add(1, Ordering::Relaxed);
                    if !reported {
                        reported = true;
                        s.log(
                            true,
                            format!(
                                "[jobs] ledger: cannot reach the database {} ({e}); serving from memory, retrying",
                                s.settings.described
                            ),
                        );
                    }
                    *s.health
                        .last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(e);
                    drop(s);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(LAST_RETRY);
                    continue;
                }
            }
        }
        let wake = async {
            tokio::select! {
                _ = s.wake.notified() => false,
                _ = tokio::time::sleep(SWEEP_EVERY) => true,
            }
        };
        let sweep = tokio::select! {
            _ = stop.cancelled() => return,
            sweep = wake => sweep,
        };
        if sweep {
            s.sweep().await;
        }
        if !s.health.up() {
            // Let a dead socket's siblings fail too before reconnecting.
            drop(s);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(FIRST_RETRY) => {}
            }
        }
    }
}

/// The listener: its own connection (a pooled one's notifications are dropped), `LISTEN`,
/// every notification handed on; after any reconnect, `Reconnected` (what was announced
/// meanwhile is lost: listeners re-read what they keep).
async fn listen(store: std::sync::Weak<PgStore>, stop: CancellationToken) {
    let mut retry = FIRST_RETRY;
    loop {
        let Some(s) = store.upgrade() else { return };
        let parts = s.manager_config.clone();
        let manager = Manager {
            config: parts.config.clone(),
            credentials: s.credentials.clone(),
            tls: parts.tls.clone(),
        };
        drop(s);
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = manager.open() => c,
        };
        if let Ok((client, mut rx)) = connected {
            let listening = tokio::time::timeout(
                OP_TIMEOUT,
                client.batch_execute(&format!("LISTEN {CHANNEL}")),
            )
            .await;
            if matches!(listening, Ok(Ok(()))) {
                retry = FIRST_RETRY;
                if let Some(s) = store.upgrade() {
                    s.health.listening.store(true, Ordering::Release);
                    s.announce_locally(&Announcement::Reconnected);
                }
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        payload = rx.recv() => match payload {
                            Some(p) => match store.upgrade() {
                                Some(s) => s.announce_locally(&parse_announcement(&p)),
                                None => return,
                            },
                            None => break,
                        },
                        _ = tokio::time::sleep(LISTENER_CHECK) => {
                            let alive = tokio::time::timeout(OP_TIMEOUT, client.simple_query("SELECT 1")).await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
            }
        }
        if let Some(s) = store.upgrade() {
            s.health.listening.store(false, Ordering::Release);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
}

fn parse_announcement(payload: &str) -> Announcement {
    match payload.strip_prefix("inv:").and_then(|id| id.parse().ok()) {
        Some(job_id) => Announcement::Invalidate(job_id),
        None => Announcement::Other(payload.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements() {
        assert_eq!(parse_announcement("inv:42"), Announcement::Invalidate(42));
        assert_eq!(
            parse_announcement("inv:x"),
            Announcement::Other("inv:x".into())
        );
        assert_eq!(
            parse_announcement("run:0:1:2"),
            Announcement::Other("run:0:1:2".into())
        );
    }

    #[test]
    fn a_tls_configuration_builds_here() {
        assert!(rustls_connector().is_some());
    }
}
