//! The service behind every `JobHandle` method and every `/api/jobs` route: one registry, one
//! client (one connection pool), one read cache and one poller per plugin instance.
//!
//! - Writes: `run_now` sends an `idempotency_token` generated once per logical call, so the
//!   write tier may retry it on transient failures without ever starting two runs; `cancel_run`
//!   is idempotent and retried the same way. Both drop the job's cached reads.
//! - Reads go through the read cache (keyed by `Identity::partition()`, so one identity's data is
//!   never served to another) and the read tier (retries, `Retry-After`, timeout).
//! - Scope: `get_run`, `get_run_output`, `cancel_run` and `watch_run` first read the run and
//!   answer `NotFound` when it belongs to another job, without touching it.
//! - `get_run_output` on the parent run of a multi-task job (which the API refuses with a 400)
//!   answers `{ "metadata": <run>, "tasks": [{ "task_key", "run_id", ...task output }] }`; a task
//!   whose output could not be read carries `error_status` and `error` (status text) instead.
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, StreamExt};
use serde_json::{Map, Value};

use crate::auth::Identity;
use crate::client::{ClientOptions, JobsClient, ListRuns, RUNS_LIST_PAGE};
use crate::error::{status_text, JobsError, Result};
use crate::exec::{self, CacheKey, ExecSettings, ReadCache, TierPolicy, HISTORY_OP};
use crate::history::History;
use crate::ledger::{postgres::Announcement, Ledger, LedgerSettings, StartRecord, StartedBy};
use crate::params;
use crate::poller::{
    FetchAttribution, FetchHistory, FetchRun, OnUpdate, PollHooks, PollSettings, Poller, RunUpdate,
    RunWatch, WatchOptions, DEFAULT_MAX_OUTAGE, DEFAULT_POLL_INTERVAL, MIN_POLL_INTERVAL,
};
use crate::registry::{JobEntry, PluginConfig, Registry};
use crate::run;
use crate::run_end::RunEnds;
use crate::telemetry::Telemetry;

/// `listRuns` default and bounds.
pub const DEFAULT_LIST_LIMIT: i64 = 20;
pub const MAX_LIST_LIMIT: i64 = 100;
/// Task outputs fetched at once by `get_run_output` on a multi-task run.
const OUTPUT_CONCURRENCY: usize = 8;
/// Cached reads kept at most (across identities).
const CACHE_ENTRIES: u64 = 10_000;
/// Run -> job ownerships remembered at most (across identities); the oldest go first.
const OWNER_ENTRIES: usize = 50_000;

/// Which job each run belongs to, as read by one identity: a run's `job_id` never changes, so
/// ownership checks need no second read. Keyed by `(Identity::partition(), run_id)`: one identity's
/// reads never vouch for another's access. Bounded (FIFO).
#[derive(Default)]
struct Owners {
    map: HashMap<(u64, i64), i64>,
    order: VecDeque<(u64, i64)>,
}

impl Owners {
    fn get(&self, partition: u64, run_id: i64) -> Option<i64> {
        self.map.get(&(partition, run_id)).copied()
    }

    fn insert(&mut self, partition: u64, run_id: i64, job_id: i64) {
        if self.map.insert((partition, run_id), job_id).is_none() {
            self.order.push_back((partition, run_id));
            while self.order.len() > OWNER_ENTRIES {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

/// How long a job's durations are kept when the read tier has no cache TTL.
const HISTORY_TTL: Duration = Duration::from_secs(60);
/// At most this many (identity, job) entries are kept; beyond it, expired ones are dropped
/// (user identities come and go with their tokens).
const HISTORY_ENTRIES: usize = 10_000;

/// A job's typical durations, per (identity partition, job): one page of completed runs with
/// their tasks, read through the read cache and the read tier and measured as `listRuns`, once
/// per job and identity however many polls ask, kept for the cache TTL (one more run barely
/// moves a median). Polls peek: they never wait for it, and hold no future while it is read.
struct HistoryReads {
    client: JobsClient,
    cache: Arc<ReadCache>,
    telemetry: Arc<Telemetry>,
    policy: TierPolicy,
    ttl: Duration,
    known: Mutex<HashMap<(u64, i64), HistoryEntry>>,
}

#[derive(Default)]
struct HistoryEntry {
    found: Option<Arc<History>>,
    /// When the last read started: the next waits a TTL, whether it found durations or failed
    /// (a job whose runs this identity may not list is not asked again on every poll).
    started: Option<std::time::Instant>,
}

impl HistoryReads {
    /// The job's durations when known (even a little stale), starting a read when the last one
    /// started a TTL ago or never. Must be called within a Tokio runtime.
    fn peek(self: &Arc<Self>, identity: &Identity, job_id: i64) -> Option<Arc<History>> {
        let key = (identity.partition(), job_id);
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= HISTORY_ENTRIES && !known.contains_key(&key) {
            // An expired entry only holds a stale answer: its next peek would read again anyway.
            known.retain(|_, e| e.started.is_some_and(|at| at.elapsed() < self.ttl));
            if known.len() >= HISTORY_ENTRIES {
                known.clear();
            }
        }
        let entry = known.entry(key).or_default();
        if entry.started.is_none_or(|at| at.elapsed() >= self.ttl) {
            entry.started = Some(std::time::Instant::now());
            let (reads, identity) = (self.clone(), identity.clone());
            tokio::spawn(async move {
                if let Some(found) = reads.read(&identity, job_id).await {
                    let mut known = reads.known.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = known.entry(key).or_default();
                    // A read that found no successful run keeps what was learnt meanwhile.
                    if found.run_ms.is_some() || entry.found.is_none() {
                        entry.found = Some(Arc::new(found));
                    }
                }
            });
        }
        entry.found.clone()
    }

    /// A run seen to its end here, for a job whose history holds no successful run (a new job,
    /// or one read before its first run ended): its durations stand in until the next read, so
    /// the runs after it are aimed at their end too. Parsed only while the job has no figure.
    fn learn(&self, partition: u64, job_id: i64, update: &RunUpdate) {
        let key = (partition, job_id);
        let lacks = |known: &HashMap<(u64, i64), HistoryEntry>| {
            known
                .get(&key)
                .is_some_and(|e| e.found.as_ref().is_none_or(|h| h.run_ms.is_none()))
        };
        if !update.terminal || !lacks(&self.known.lock().unwrap_or_else(|e| e.into_inner())) {
            return;
        }
        let Ok(run) = serde_json::from_str::<Value>(&update.run_json) else {
            return;
        };
        let seen = History::from_runs(std::slice::from_ref(&run));
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if seen.run_ms.is_some() && lacks(&known) {
            if let Some(entry) = known.get_mut(&key) {
                entry.found = Some(Arc::new(seen));
            }
        }
    }

    async fn read(&self, identity: &Identity, job_id: i64) -> Option<History> {
        let key = CacheKey::of(identity, HISTORY_OP, job_id, ());
        let read = self.cache.get_or_fetch(key, async {
            let started = self.telemetry.start();
            let q = ListRuns {
                job_id,
                limit: RUNS_LIST_PAGE,
                completed_only: true,
                expand_tasks: true,
                ..ListRuns::default()
            };
            let result =
                exec::execute(&self.policy, || self.client.list_runs(identity, q.clone())).await;
            if let Some(started) = started {
                self.telemetry
                    .finish(started, "listRuns", None, 1, None, &result);
            }
            result.map(|runs| History::from_runs(&runs).to_value())
        });
        read.await.ok().map(|v| History::from_value(&v))
    }
}

/// The jobs service of one plugin instance. `Send + Sync`; share it as `Arc<Jobs>`.
pub struct Jobs {
    registry: Registry,
    client: JobsClient,
    settings: ExecSettings,
    cache: Arc<ReadCache>,
    owners: Arc<Mutex<Owners>>,
    poller: Poller,
    warnings: Vec<String>,
    telemetry: Arc<Telemetry>,
    ledger: Arc<Ledger>,
    /// Who a call with no person behind it is recorded as: the app's service principal.
    service_principal: StartedBy,
    /// The app's run-end handlers (`onRunEnd`).
    run_ends: Arc<RunEnds>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("registry", &self.registry)
            .field("client", &self.client)
            .field("poller", &self.poller)
            .finish()
    }
}

/// `limit` clamped to 1..=100, 20 when absent.
pub fn clamp_limit(limit: Option<i64>) -> usize {
    limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, MAX_LIST_LIMIT) as usize
}

/// A fresh run-now idempotency token for `job_id`: `<jobId>-<UUID v4>` (at most 56 characters,
/// within the API's 64). The job id in front binds a token to its job: a stream resumed by its
/// token (see `routes.rs`) may only re-send run-now for the job the token names.
pub fn idempotency_token(job_id: i64) -> String {
    // From the thread's RNG (seeded once by the OS): a token needs to be unique, not secret,
    // and `new_v4` asks the OS for every one.
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    format!("{job_id}-{uuid}")
}

/// The job a token of [`idempotency_token`] names, or `None` when `token` is not one.
pub fn token_job_id(token: &str) -> Option<i64> {
    let (job, uuid) = token.split_once('-')?;
    let job_id = crate::ids::parse(job)?;
    (uuid.len() == 36 && uuid::Uuid::try_parse(uuid).is_ok()).then_some(job_id)
}

/// A run-now request that passed every check and is ready to send: its body carries the
/// idempotency token, so sending it again (a retry, a resumed stream) starts no second run.
#[derive(Debug, Clone)]
pub struct PreparedRun {
    job_id: i64,
    job_key: String,
    token: String,
    body: Value,
    /// The params as given, for the ledger.
    params: Option<Value>,
    /// Who the ledger records as starting the run.
    started_by: StartedBy,
    /// The token came from the caller (a resumed stream): the workspace answers a token with
    /// whatever run it names, maybe another job's, so the run is checked before it is recorded.
    token_given: bool,
}

impl PreparedRun {
    /// The idempotency token the request carries.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn job_id(&self) -> i64 {
        self.job_id
    }

    /// Recorded as started by `who` (by default the service principal, or for a user's call
    /// nobody named).
    pub fn started_by(mut self, who: Option<StartedBy>) -> PreparedRun {
        if let Some(who) = who {
            self.started_by = who;
        }
        self
    }
}

impl Jobs {
    /// Builds everything once: the registry (schemas compiled), the client and its pool, the
    /// tiers, the read cache and the poller. Never fails: configuration problems are reported
    /// by the calls that need what is missing.
    pub fn new(config: PluginConfig, env: HashMap<String, String>) -> Jobs {
        let mut warnings = Vec::new();
        let base_interval = match config.poll_interval_ms.map(Duration::from_millis) {
            None => DEFAULT_POLL_INTERVAL,
            Some(ms) if ms < MIN_POLL_INTERVAL => {
                warnings.push(format!(
                    "pollIntervalMs {} is below the floor of {} ms: runs are polled every {} ms at the fastest",
                    ms.as_millis(),
                    MIN_POLL_INTERVAL.as_millis(),
                    MIN_POLL_INTERVAL.as_millis()
                ));
                MIN_POLL_INTERVAL
            }
            Some(ms) => ms,
        };
        let poll = PollSettings {
            base_interval,
            max_requests_per_second: config.max_requests_per_second,
            max_outage: config
                .outage_timeout
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_MAX_OUTAGE),
        };
        let mut jobs = Jobs::with_poll_settings(config, env, poll);
        warnings.append(&mut jobs.warnings);
        jobs.warnings = warnings;
        jobs
    }

    /// `new` with the poll engine's settings given as they are (no floor): for Rust callers
    /// that drive the engine directly, e.g. a soak test polling every millisecond.
    pub fn with_poll_settings(
        config: PluginConfig,
        env: HashMap<String, String>,
        poll: PollSettings,
    ) -> Jobs {
        let registry = Registry::new(&env, &config);
        let client = JobsClient::new(&env, ClientOptions::default());
        let settings = ExecSettings::new(config.timeout);
        let mut warnings = Vec::new();
        // The environment may name a database half-way: the ledger then stays in memory, said
        // once (a mistake in the `ledger` option itself was refused with the config).
        let ledger_settings = config.ledger.resolve(&env).unwrap_or_else(|e| {
            warnings.push(format!("{e}: the ledger stays in memory"));
            LedgerSettings::Memory
        });
        let telemetry = Arc::new(Telemetry::default());
        let ledger = Arc::new(Ledger::start(
            ledger_settings,
            &env,
            &client,
            telemetry.clone(),
        ));
        let cache = Arc::new(ReadCache::with_shared(
            &settings.read,
            CACHE_ENTRIES,
            ledger.shared_tier(),
        ));
        if let Some(pg) = ledger.postgres() {
            // What other instances announce: a job's cached reads are stale; after a
            // reconnect, anything may be.
            let cache = Arc::downgrade(&cache);
            pg.on_announcement(Arc::new(move |a: &Announcement| {
                let Some(cache) = cache.upgrade() else { return };
                match a {
                    Announcement::Invalidate(job_id) => cache.invalidate_job(*job_id),
                    Announcement::Reconnected => cache.invalidate_all(),
                    Announcement::Other(_) => {}
                }
            }));
        }
        let owners = Arc::new(Mutex::new(Owners::default()));

        // The poller reads runs/get uncached, one attempt per tick under the read timeout: it
        // paces and retries transient errors itself (and pauses on a 429's Retry-After).
        let poll_policy = TierPolicy {
            attempts: 1,
            cache_ttl: None,
            ..settings.read.clone()
        };
        let poll_client = client.clone();
        let poll_telemetry = telemetry.clone();
        let fetch: FetchRun = Arc::new(move |identity: Identity, run_id: i64| {
            let client = poll_client.clone();
            let policy = poll_policy.clone();
            let telemetry = poll_telemetry.clone();
            async move {
                let started = telemetry.start();
                let result = exec::execute(&policy, || client.poll_run(&identity, run_id)).await;
                if let Some(started) = started {
                    telemetry.finish(started, "getRun", Some(run_id), 1, None, &result);
                }
                result
            }
            .boxed()
        });
        // The job's typical durations for `expectedMs` (see `HistoryReads`).
        let reads = Arc::new(HistoryReads {
            client: client.clone(),
            cache: cache.clone(),
            telemetry: telemetry.clone(),
            policy: settings.read.clone(),
            ttl: settings
                .read
                .cache_ttl
                .filter(|t| !t.is_zero())
                .unwrap_or(HISTORY_TTL),
            known: Mutex::default(),
        });
        // Once per shared state change (not per watcher): the job's cached lists and runs are
        // stale now, and the poll's read tells which job the run belongs to.
        let (update_cache, update_owners, update_ledger) =
            (cache.clone(), owners.clone(), ledger.clone());
        let update_reads = reads.clone();
        let on_update: OnUpdate = Arc::new(
            move |partition: u64, run_id: i64, update: &RunUpdate, read_here: bool| {
                if let Some(job_id) = update.job_id {
                    update_owners
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(partition, run_id, job_id);
                    update_cache.invalidate_job(job_id);
                    // Every instance's caches: once, by the instance that read the update.
                    if read_here {
                        update_ledger.invalidate_soon(job_id);
                    }
                    update_reads.learn(partition, job_id, update);
                }
            },
        );
        let history: FetchHistory =
            Arc::new(move |identity: &Identity, job_id: i64| reads.peek(identity, job_id));
        let attribution_ledger = ledger.clone();
        let attribution: FetchAttribution = Arc::new(move |_: &Identity, run_id: i64| {
            let ledger = attribution_ledger.clone();
            async move {
                ledger
                    .started_by(run_id)
                    .await
                    .map(|who| Arc::from(who.to_json()))
            }
            .boxed()
        });
        // One poller per run for the whole fleet, when the ledger has a database.
        let fleet = ledger
            .fleet(poll.base_interval)
            .map(|f| f as Arc<dyn crate::poller::Fleet>);
        let poller = Poller::with_hooks(
            fetch,
            poll,
            PollHooks {
                on_update: Some(on_update),
                history: Some(history),
                attribution: Some(attribution),
                fleet,
            },
        );
        let service_principal =
            StartedBy::service_principal(env.get("DATABRICKS_CLIENT_ID").map(String::as_str));
        let (lease, check) = ledger.lease_and_check(poller.settings().base_interval);
        let run_ends = RunEnds::new(poller.clone(), ledger.clone(), &registry, lease, check);

        Jobs {
            registry,
            client,
            settings,
            cache,
            owners,
            poller,
            warnings,
            telemetry,
            ledger,
            service_principal,
            run_ends,
        }
    }

    /// What the configuration got that works but is not what was asked for (e.g. a poll
    /// interval raised to the floor), for the JS side to warn about once.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn client(&self) -> &JobsClient {
        &self.client
    }

    pub fn poller(&self) -> &Poller {
        &self.poller
    }

    /// The ledger (who started each run; the shared cache).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The app's run-end handlers (see `run_end.rs`).
    pub fn run_ends(&self) -> &Arc<RunEnds> {
        &self.run_ends
    }

    /// Who `id`'s calls are recorded as when the caller names nobody: the service principal,
    /// or for a user's call nobody named.
    pub fn default_started_by(&self, id: &Identity) -> StartedBy {
        match id {
            Identity::ServicePrincipal => self.service_principal.clone(),
            Identity::User(_) => StartedBy::default(),
        }
    }

    /// Drops this process's cached reads of `job_id` (every identity), at once.
    pub(crate) fn forget_job_reads(&self, job_id: i64) {
        self.cache.invalidate_job(job_id);
    }

    /// Drops the cached reads of `key`'s job for every identity, on every instance (soon).
    pub fn invalidate_job_cache(&self, key: &str) {
        if let Ok((_, job_id)) = self.entry(key) {
            self.cache.invalidate_job(job_id);
            self.ledger.invalidate_soon(job_id);
        }
    }

    fn entry(&self, key: &str) -> Result<(&JobEntry, i64)> {
        let entry = self.registry.get(key)?;
        let job_id = entry.job_id()?;
        Ok((entry, job_id))
    }

    /// Validates and maps `params`, then triggers the job: `{ run_id, number_in_job }`.
    pub async fn run_now(&self, key: &str, id: &Identity, params: Option<Value>) -> Result<Value> {
        self.run_now_by(key, id, params, None).await
    }

    /// `run_now`, recorded as started by `by` (`None`: `default_started_by`).
    pub async fn run_now_by(
        &self,
        key: &str,
        id: &Identity,
        params: Option<Value>,
        by: Option<StartedBy>,
    ) -> Result<Value> {
        let prepared = self
            .prepare_run(key, id, params, None)
            .await?
            .started_by(by);
        self.send_run(id, &prepared).await
    }

    /// Everything a run-now does before the write: params validated and mapped, checked against
    /// the job's own definition (a read) where they come from it, and the idempotency token
    /// (`token`, or a fresh one) added. Nothing is sent to run-now yet.
    pub async fn prepare_run(
        &self,
        key: &str,
        id: &Identity,
        params: Option<Value>,
        token: Option<String>,
    ) -> Result<PreparedRun> {
        let entry = self.registry.get(key)?;
        let mut body = params::build_run_now_request(entry, params.as_ref())?;
        // Boxed: the definition's read (jobs/get through the cache) is a large future, and inline
        // it would grow every run-now in flight, whichever job it is for.
        if let Some(defined) = Box::pin(self.defined_parameters(key, id)).await? {
            params::check_defined(key, params.as_ref(), &defined)?;
        }
        let job_id = entry.job_id()?;
        let token_given = token.is_some();
        let token = token.unwrap_or_else(|| idempotency_token(job_id));
        if let Value::Object(map) = &mut body {
            map.insert("idempotency_token".into(), Value::String(token.clone()));
        }
        Ok(PreparedRun {
            job_id,
            job_key: key.to_string(),
            token,
            body,
            params,
            started_by: self.default_started_by(id),
            token_given,
        })
    }

    /// Sends a prepared run-now under the write tier: every retry carries the same token, so
    /// at most one run starts for it, however often it is sent.
    pub async fn send_run(&self, id: &Identity, prepared: &PreparedRun) -> Result<Value> {
        let started = self
            .call("runNow", None, &self.settings.write, || {
                self.client.run_now(id, &prepared.body)
            })
            .await;
        // Who started it, in the ledger before the caller has the run id (so the whole fleet
        // knows the run even if this instance dies now); then the job's cached reads are stale
        // everywhere. Even a failed (e.g. timed out) attempt may have started a run.
        let record = started
            .as_ref()
            .ok()
            .and_then(run::run_id)
            .map(|run_id| StartRecord {
                run_id,
                repair_id: 0,
                job_id: prepared.job_id,
                job_key: prepared.job_key.clone(),
                started_by: prepared.started_by.clone(),
                params: prepared.params.clone(),
                at_ms: crate::telemetry::now_ms() as i64,
                watch_end: self.run_ends.handles(&prepared.job_key),
            });
        self.cache.invalidate_job(prepared.job_id);
        let record = match record {
            Some(r) if prepared.token_given => self.owned_start(id, r).await,
            record => record,
        };
        self.record_start(record, prepared.job_id).await;
        started
    }

    /// Records a start (or a repair) for the fleet and makes the job's reads stale everywhere,
    /// then watches for its end when the app handles it (`onRunEnd`).
    pub(crate) async fn record_start(&self, record: Option<StartRecord>, job_id: i64) {
        let watched = record.as_ref().filter(|r| r.watch_end).cloned();
        // Boxed: the database's part is a large future, and inline it would grow every run-now.
        Box::pin(self.ledger.record_and_invalidate(record, job_id)).await;
        if let Some(record) = watched {
            self.run_ends.started(&record);
        }
    }

    /// `record` if its run is the job's, by a read of the run (which the watch that follows
    /// then finds cached): only for a token the caller gave.
    async fn owned_start(&self, id: &Identity, record: StartRecord) -> Option<StartRecord> {
        let run = Box::pin(self.cached_run(id, record.job_id, record.run_id))
            .await
            .ok()?;
        (run::job_id(&run) == Some(record.job_id)).then_some(record)
    }

    /// The parameters the job itself defines, for a job sending `job_parameters` with no params
    /// schema of its own (`None` for any other job): read with jobs/get through the read cache,
    /// so once per job and identity per TTL.
    pub async fn defined_parameters(
        &self,
        key: &str,
        id: &Identity,
    ) -> Result<Option<Vec<(String, String)>>> {
        let entry = self.registry.get(key)?;
        let config = &entry.config;
        if !config.job_parameters || config.params.is_some() || config.external_schema {
            return Ok(None);
        }
        let job = self.get_job(key, id).await?;
        Ok(Some(params::defined_parameters(&job)))
    }

    /// The params of a job whose parameters come from its definition, as a JSON Schema for a
    /// form (names, defaults, all optional); `None` for any other job.
    pub async fn defined_params_schema(&self, key: &str, id: &Identity) -> Result<Option<Value>> {
        Ok(self
            .defined_parameters(key, id)
            .await?
            .map(|defined| params::defined_schema(&defined)))
    }

    /// The newest run of the job, `None` when it never ran.
    pub async fn last_run(&self, key: &str, id: &Identity) -> Result<Option<Value>> {
        let (_, job_id) = self.entry(key)?;
        let runs = self.cached_list(id, job_id, "lastRun", 1).await?;
        Ok(match runs {
            Value::Array(mut items) if !items.is_empty() => Some(items.swap_remove(0)),
            _ => None,
        })
    }

    /// Runs of the job, newest first; `limit` clamped to 1..=100 (default 20), paged by 25.
    pub async fn list_runs(
        &self,
        key: &str,
        id: &Identity,
        limit: Option<i64>,
    ) -> Result<Vec<Value>> {
        let (_, job_id) = self.entry(key)?;
        let limit = clamp_limit(limit);
        match self.cached_list(id, job_id, "listRuns", limit).await? {
            Value::Array(items) => Ok(items),
            _ => Ok(Vec::new()),
        }
    }

    /// The job's runs that `who` started through the plugin (see `StartedBy::matches`), newest
    /// first, `limit` clamped as `list_runs`'s: from the ledger, each run read through the cache.
    /// A run the workspace no longer has is left out.
    pub async fn list_runs_started_by(
        &self,
        key: &str,
        id: &Identity,
        who: &str,
        limit: Option<i64>,
    ) -> Result<Vec<Value>> {
        let (_, job_id) = self.entry(key)?;
        let run_ids = self
            .ledger
            .runs_started_by(job_id, who, clamp_limit(limit))
            .await;
        let reads: Vec<BoxFuture<'_, Result<Value>>> = run_ids
            .into_iter()
            .map(|run_id| Box::pin(self.cached_run(id, job_id, run_id)) as BoxFuture<'_, _>)
            .collect();
        let found: Vec<Result<Value>> = stream::iter(reads)
            .buffered(OUTPUT_CONCURRENCY)
            .collect()
            .await;
        let mut runs = Vec::with_capacity(found.len());
        for run in found {
            match run {
                Ok(run) if run::job_id(&run) == Some(job_id) => runs.push(run),
                Ok(_) => {}
                // Gone from the workspace (its retention), or never this identity's to see.
                Err(JobsError::Api {
                    status: 400 | 403 | 404,
                    ..
                })
                | Err(JobsError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(runs)
    }

    async fn cached_list(
        &self,
        id: &Identity,
        job_id: i64,
        op: &'static str,
        limit: usize,
    ) -> Result<Value> {
        let key = CacheKey::of(id, op, job_id, limit as i64);
        let q = ListRuns {
            job_id,
            limit,
            ..ListRuns::default()
        };
        self.cached("listRuns", None, key, async {
            let mut runs = self
                .call("listRuns", None, &self.settings.read, || {
                    self.client.list_runs(id, q.clone())
                })
                .await?;
            self.attribute(&mut runs).await;
            Ok(Value::Array(runs))
        })
        .await
    }

    /// Writes `started_by` into each run: who started it through the plugin, or `null`.
    async fn attribute(&self, runs: &mut [Value]) {
        let ids: Vec<i64> = runs.iter().filter_map(run::run_id).collect();
        if ids.is_empty() {
            return;
        }
        let mut known = Box::pin(self.ledger.started_by_each(&ids)).await;
        for r in runs.iter_mut() {
            let who = run::run_id(r).and_then(|id| known.remove(&id));
            if let Value::Object(map) = r {
                map.insert(
                    "started_by".into(),
                    who.map(|w| serde_json::to_value(w).unwrap_or(Value::Null))
                        .unwrap_or(Value::Null),
                );
            }
        }
    }

    /// runs/get through the cache, keyed by the handle's job. Remembers the run's job.
    async fn cached_run(&self, id: &Identity, job_id: i64, run_id: i64) -> Result<Value> {
        let key = CacheKey::of(id, "getRun", job_id, run_id);
        let run = self
            .cached("getRun", Some(run_id), key, async {
                let run = self
                    .call("getRun", Some(run_id), &self.settings.read, || {
                        self.client.get_run(id, run_id)
                    })
                    .await?;
                let mut one = [run];
                self.attribute(&mut one).await;
                let [run] = one;
                Ok(run)
            })
            .await?;
        if let Some(owner) = run::job_id(&run) {
            self.remember_owner(id.partition(), run_id, owner);
        }
        Ok(run)
    }

    /// One logical Jobs API call under `policy` (retries included), measured for telemetry.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        run_id: Option<i64>,
        policy: &TierPolicy,
        f: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let Some(started) = self.telemetry.start() else {
            return exec::execute(policy, f).await;
        };
        let (result, attempts) = exec::execute_counted(policy, f).await;
        self.telemetry
            .finish(started, operation, run_id, attempts, None, &result);
        result
    }

    /// A read through the cache, its hit or miss measured for telemetry.
    async fn cached(
        &self,
        operation: &'static str,
        run_id: Option<i64>,
        key: CacheKey,
        fetch: impl Future<Output = Result<Value>>,
    ) -> Result<Value> {
        let Some(started) = self.telemetry.start() else {
            return self.cache.get_or_fetch(key, fetch).await;
        };
        let fetched = AtomicBool::new(false);
        let result = self
            .cache
            .get_or_fetch(key, async {
                fetched.store(true, Ordering::Relaxed);
                fetch.await
            })
            .await;
        let hit = !fetched.load(Ordering::Relaxed);
        self.telemetry
            .finish(started, operation, run_id, 0, Some(hit), &result);
        result
    }

    /// The telemetry of this instance (see `telemetry.rs`).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    fn remember_owner(&self, partition: u64, run_id: i64, job_id: i64) {
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition, run_id, job_id);
    }

    fn known_owner(&self, partition: u64, run_id: i64) -> Option<i64> {
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(partition, run_id)
    }

    /// The execution tiers (retries, timeouts, cache) of this instance.
    pub(crate) fn settings(&self) -> &ExecSettings {
        &self.settings
    }

    /// `key`'s job id, after checking the run id and that this identity never saw the run
    /// under another job (`NotFound`, nothing sent).
    pub(crate) fn check_known_owner(&self, key: &str, id: &Identity, run_id: i64) -> Result<i64> {
        let (_, job_id) = self.entry(key)?;
        Self::checked_run_id(run_id)?;
        if self
            .known_owner(id.partition(), run_id)
            .is_some_and(|o| o != job_id)
        {
            return Err(Self::not_found(key, run_id));
        }
        Ok(job_id)
    }

    pub(crate) fn not_found(key: &str, run_id: i64) -> JobsError {
        JobsError::NotFound(format!("Run {run_id} not found for job \"{key}\""))
    }

    fn checked_run_id(run_id: i64) -> Result<i64> {
        if run_id <= 0 {
            return Err(JobsError::InvalidRequest(format!(
                "Invalid run id {run_id}: expected a positive integer"
            )));
        }
        Ok(run_id)
    }

    /// The run, when it belongs to `key`'s job; `NotFound` otherwise (and nothing else is sent).
    async fn owned_run(&self, key: &str, id: &Identity, run_id: i64) -> Result<(i64, Value)> {
        let job_id = self.check_known_owner(key, id, run_id)?;
        let run = self.cached_run(id, job_id, run_id).await?;
        if run::job_id(&run) != Some(job_id) {
            return Err(Self::not_found(key, run_id));
        }
        Ok((job_id, run))
    }

    /// The job id when the run belongs to `key`'s job, read only when this identity never read
    /// the run before (a run's job never changes). `NotFound` otherwise. The read waits for a
    /// request turn of the poll engine (its rate limit and 429 pause) when `paced`.
    async fn check_owner(&self, key: &str, id: &Identity, run_id: i64, paced: bool) -> Result<i64> {
        let (_, job_id) = self.entry(key)?;
        Self::checked_run_id(run_id)?;
        let owner = match self.known_owner(id.partition(), run_id) {
            Some(owner) => Some(owner),
            // What the fleet knows (a run this app started, or one another instance polls for
            // this identity) spares a workspace read; a run's job never changes.
            None => match Box::pin(self.ledger.job_of(&id.fleet_partition(), run_id)).await {
                Some(owner) => {
                    self.remember_owner(id.partition(), run_id, owner);
                    Some(owner)
                }
                None => {
                    if paced {
                        self.poller.request_turn().await;
                    }
                    // Boxed: the read (cache, retries, paging) is some 10 KB of future, which
                    // would otherwise sit in every watch being started.
                    run::job_id(&Box::pin(self.cached_run(id, job_id, run_id)).await?)
                }
            },
        };
        if owner != Some(job_id) {
            return Err(Self::not_found(key, run_id));
        }
        Ok(job_id)
    }

    /// The run (pages merged), if it belongs to the job.
    pub async fn get_run(&self, key: &str, id: &Identity, run_id: i64) -> Result<Value> {
        self.owned_run(key, id, run_id).await.map(|(_, run)| run)
    }

    /// The run's output, if it belongs to the job. Multi-task parent runs: see the module docs.
    pub async fn get_run_output(&self, key: &str, id: &Identity, run_id: i64) -> Result<Value> {
        let (job_id, run) = self.owned_run(key, id, run_id).await?;
        let tasks: Vec<(String, i64)> = run
            .get("tasks")
            .and_then(Value::as_array)
            .map(|tasks| {
                tasks
                    .iter()
                    .filter_map(|t| {
                        let task_run = run::run_id(t)?;
                        let task_key = t.get("task_key").and_then(Value::as_str).unwrap_or("");
                        Some((task_key.to_string(), task_run))
                    })
                    .collect()
            })
            .unwrap_or_default();

        if tasks.len() <= 1 {
            // A single-task run: its own output (the API answers for the parent run or the task
            // run alike; the task run is what it documents, so prefer it when known).
            let target = tasks.first().map(|(_, r)| *r).unwrap_or(run_id);
            return self.cached_output(id, job_id, target).await;
        }

        // At most OUTPUT_CONCURRENCY task outputs in flight (a run may have hundreds of tasks),
        // results kept in task order.
        let fetches: Vec<BoxFuture<'_, Result<Value>>> = tasks
            .iter()
            .map(|(_, task_run)| self.cached_output(id, job_id, *task_run))
            .collect();
        let outputs: Vec<Result<Value>> = stream::iter(fetches)
            .buffered(OUTPUT_CONCURRENCY)
            .collect()
            .await;
        let mut items = Vec::with_capacity(tasks.len());
        for ((task_key, task_run), output) in tasks.into_iter().zip(outputs) {
            let mut item = Map::new();
            item.insert("task_key".into(), Value::String(task_key));
            item.insert("run_id".into(), Value::from(task_run));
            match output {
                Ok(Value::Object(fields)) => {
                    for (k, v) in fields {
                        // The task's own metadata would repeat the task entry; keep it.
                        if k != "task_key" && k != "run_id" {
                            item.insert(k, v);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    item.insert("error_status".into(), Value::from(e.status()));
                    item.insert(
                        "error".into(),
                        Value::String(status_text(e.status()).into()),
                    );
                }
            }
            items.push(Value::Object(item));
        }
        let mut out = Map::new();
        out.insert("metadata".into(), run);
        out.insert("tasks".into(), Value::Array(items));
        Ok(Value::Object(out))
    }

    fn cached_output<'a>(
        &'a self,
        id: &'a Identity,
        job_id: i64,
        run_id: i64,
    ) -> BoxFuture<'a, Result<Value>> {
        async move {
            let key = CacheKey::of(id, "getRunOutput", job_id, run_id);
            self.cached("getRunOutput", Some(run_id), key, async {
                self.call("getRunOutput", Some(run_id), &self.settings.read, || {
                    self.client.get_run_output(id, run_id)
                })
                .await
            })
            .await
        }
        .boxed()
    }

    /// The job definition (pages merged).
    pub async fn get_job(&self, key: &str, id: &Identity) -> Result<Value> {
        let (_, job_id) = self.entry(key)?;
        let cache_key = CacheKey::of(id, "getJob", job_id, ());
        self.cached("getJob", None, cache_key, async {
            self.call("getJob", None, &self.settings.read, || {
                self.client.get_job(id, job_id)
            })
            .await
        })
        .await
    }

    /// Cancels the run if it belongs to the job (retried: cancel is idempotent).
    pub async fn cancel_run(&self, key: &str, id: &Identity, run_id: i64) -> Result<()> {
        let job_id = self.check_owner(key, id, run_id, false).await?;
        let result = self
            .call("cancelRun", Some(run_id), &self.settings.write, || {
                self.client.cancel_run(id, run_id)
            })
            .await;
        self.cache.invalidate_job(job_id);
        Box::pin(self.ledger.invalidate(job_id)).await;
        result
    }

    /// Follows a run of the job until a terminal state (checks ownership first); the job's
    /// `waitTimeout` bounds the wait. Joins the shared poll of `(identity, run)`.
    /// Must be called within a Tokio runtime.
    pub async fn watch_run(&self, key: &str, id: &Identity, run_id: i64) -> Result<RunWatch> {
        self.check_owner(key, id, run_id, true).await?;
        self.watch_started_run(key, id, run_id)
    }

    /// Triggers the job (as `run_now`), then follows the run it started: `runAndWait` and the
    /// streaming run route. The watch's `run_id()` is the new run's. Must be called within a
    /// Tokio runtime.
    pub async fn start_and_watch(
        &self,
        key: &str,
        id: &Identity,
        params: Option<Value>,
    ) -> Result<RunWatch> {
        self.start_and_watch_by(key, id, params, None).await
    }

    /// `start_and_watch`, recorded as started by `by` (`None`: `default_started_by`).
    pub async fn start_and_watch_by(
        &self,
        key: &str,
        id: &Identity,
        params: Option<Value>,
        by: Option<StartedBy>,
    ) -> Result<RunWatch> {
        let prepared = self
            .prepare_run(key, id, params, None)
            .await?
            .started_by(by);
        self.send_and_watch(key, id, &prepared, false).await
    }

    /// Sends a prepared run-now, then follows the run it names. A run reached through a token
    /// that did not come from this call (`replayed`: a resumed stream) passes the ownership
    /// check of `watch_run`; a fresh token's run is this job's by construction.
    /// Must be called within a Tokio runtime.
    pub async fn send_and_watch(
        &self,
        key: &str,
        id: &Identity,
        prepared: &PreparedRun,
        replayed: bool,
    ) -> Result<RunWatch> {
        let started = self.send_run(id, prepared).await?;
        let run_id = run::run_id(&started).ok_or_else(|| {
            JobsError::InvalidResponse("run-now answered without a run_id".into())
        })?;
        if replayed {
            // Boxed: the ownership read is a large future, and inline it would grow every
            // run-now in flight (runAndWait's included) by several kilobytes.
            return Box::pin(self.watch_run(key, id, run_id)).await;
        }
        self.watch_started_run(key, id, run_id)
    }

    /// `watch_run` without the ownership check, for a run this service just started for `key`.
    /// Must be called within a Tokio runtime.
    pub fn watch_started_run(&self, key: &str, id: &Identity, run_id: i64) -> Result<RunWatch> {
        let entry = self.registry.get(key)?;
        Ok(self.poller.watch(
            id,
            run_id,
            WatchOptions {
                timeout: entry.wait_timeout(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Futures of calls many of which are in flight at once (10,000 runAndWait start together)
    /// stay small: a large read inlined in them (an ownership check, a definition read) once
    /// cost several kilobytes per watcher.
    #[test]
    fn futures_in_flight_by_the_thousand_stay_small() {
        let jobs = Jobs::new(PluginConfig::default(), HashMap::new());
        let id = Identity::ServicePrincipal;
        let sizes = [
            (
                "run_now",
                std::mem::size_of_val(&jobs.run_now("k", &id, None)),
            ),
            (
                "start_and_watch",
                std::mem::size_of_val(&jobs.start_and_watch("k", &id, None)),
            ),
            (
                "watch_run",
                std::mem::size_of_val(&jobs.watch_run("k", &id, 1)),
            ),
        ];
        for (name, size) in sizes {
            assert!(size <= 2048, "{name}: {size} bytes");
        }
        // Reads are made on the JS thread (the binding builds each call's future there): a
        // cached read once held its fetch twice, 18 KB, and inside a deep JS stack (a test
        // runner's) napi then rejected the call with `undefined`.
        let reads = [
            ("get_job", std::mem::size_of_val(&jobs.get_job("k", &id))),
            ("get_run", std::mem::size_of_val(&jobs.get_run("k", &id, 1))),
            ("last_run", std::mem::size_of_val(&jobs.last_run("k", &id))),
            (
                "list_runs",
                std::mem::size_of_val(&jobs.list_runs("k", &id, None)),
            ),
        ];
        for (name, size) in reads {
            assert!(size <= 8192, "{name}: {size} bytes");
        }
    }

    #[test]
    fn limits_and_tokens() {
        assert_eq!(clamp_limit(None), 20);
        assert_eq!(clamp_limit(Some(0)), 1);
        assert_eq!(clamp_limit(Some(-5)), 1);
        assert_eq!(clamp_limit(Some(55)), 55);
        assert_eq!(clamp_limit(Some(1000)), 100);
        let a = idempotency_token(i64::MAX);
        assert!(a.len() <= 64);
        assert_ne!(a, idempotency_token(i64::MAX));
        assert_eq!(token_job_id(&a), Some(i64::MAX));
        assert_eq!(token_job_id(&idempotency_token(1001)), Some(1001));
        for bad in [
            "",
            "1001",
            "1001-",
            "0-5b1f3c9e-8a2d-4c6b-9e7f-1a2b3c4d5e6f",
            "x-5b1f3c9e-8a2d-4c6b-9e7f-1a2b3c4d5e6f",
            "1001-5b1f3c9e8a2d4c6b9e7f1a2b3c4d5e6f",
            "1001-5b1f3c9e-8a2d-4c6b-9e7f-1a2b3c4d5e6g",
        ] {
            assert_eq!(token_job_id(bad), None, "{bad:?}");
        }
    }
}
