//! Execution tiers: timeouts over a whole call, retries of transient failures with exponential
//! backoff (or the server's `Retry-After`), and the per-identity read cache.
//!
//! | tier   | cache | attempts | backoff        | timeout |
//! |--------|-------|----------|----------------|---------|
//! | read   | 60 s  | 3        | 1 s, x2, <=10 s | 30 s    |
//! | write  | none  | 3        | 1 s, x2, <=10 s | 120 s   |
//! | stream | none  | 3        | 1 s, x2, <=10 s | 600 s   |
//!
//! Writes are retried only because they are safe to: `runNow` carries an `idempotency_token`
//! (the same on every attempt) and `cancelRun` is idempotent. The plugin's `timeout` option
//! replaces every tier's timeout.
//!
//! With a ledger database, the read cache has a second tier shared by every instance
//! ([`SharedTier`]): the same TTLs, per identity, behind this process's tier.
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::time::Instant;

use crate::auth::Identity;
use crate::{JobsError, Result};

/// Which execution policy a call follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    Read,
    Write,
    Stream,
}

/// Retry, timeout and cache settings of one tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierPolicy {
    /// Total attempts, the first included (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound of the computed backoff (not of a server's `Retry-After`).
    pub max_backoff: Duration,
    /// Budget of the whole call, retries and waits included.
    pub timeout: Duration,
    /// Time to live of cached results; `None` means the tier is not cached.
    pub cache_ttl: Option<Duration>,
}

impl TierPolicy {
    pub fn read() -> TierPolicy {
        TierPolicy {
            attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            cache_ttl: Some(Duration::from_secs(60)),
        }
    }

    pub fn write() -> TierPolicy {
        TierPolicy {
            timeout: Duration::from_secs(120),
            cache_ttl: None,
            ..TierPolicy::read()
        }
    }

    pub fn stream() -> TierPolicy {
        TierPolicy {
            timeout: Duration::from_secs(600),
            cache_ttl: None,
            ..TierPolicy::read()
        }
    }

    /// The backoff before retry number `retry` (1 = the first retry), without jitter:
    /// `initial * 2^(retry-1)`, capped at `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        std::cmp::min(
            self.initial_backoff.saturating_mul(factor),
            self.max_backoff,
        )
    }

    /// The backoff with jitter: `backoff(retry)` stretched by `jitter` in `[0, 1)` up to +25 %,
    /// still capped at `max_backoff`.
    pub fn backoff_with_jitter(&self, retry: u32, jitter: f64) -> Duration {
        let base = self.backoff(retry);
        let j = jitter.clamp(0.0, 1.0) * 0.25;
        std::cmp::min(
            base + base.mul_f64(j),
            std::cmp::max(self.max_backoff, base),
        )
    }
}

/// The three tiers of one plugin instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSettings {
    pub read: TierPolicy,
    pub write: TierPolicy,
    pub stream: TierPolicy,
}

impl ExecSettings {
    /// The spec's defaults; `timeout_override_ms` (the plugin's `timeout`, when > 0) replaces
    /// every tier's timeout.
    pub fn new(timeout_override_ms: Option<u64>) -> ExecSettings {
        let mut s = ExecSettings {
            read: TierPolicy::read(),
            write: TierPolicy::write(),
            stream: TierPolicy::stream(),
        };
        if let Some(ms) = timeout_override_ms.filter(|ms| *ms > 0) {
            let t = Duration::from_millis(ms);
            s.read.timeout = t;
            s.write.timeout = t;
            s.stream.timeout = t;
        }
        s
    }

    pub fn policy(&self, tier: Tier) -> &TierPolicy {
        match tier {
            Tier::Read => &self.read,
            Tier::Write => &self.write,
            Tier::Stream => &self.stream,
        }
    }
}

impl Default for ExecSettings {
    fn default() -> Self {
        ExecSettings::new(None)
    }
}

/// What to do after attempt `attempt` (1-based) failed with `err`, `remaining` before the
/// deadline: `Some(wait)` retries after `wait`, `None` gives up with `err`.
pub fn retry_decision(
    policy: &TierPolicy,
    attempt: u32,
    err: &JobsError,
    remaining: Duration,
    jitter: f64,
) -> Option<Duration> {
    if attempt >= policy.attempts || !err.is_transient() {
        return None;
    }
    let wait = match err.retry_after() {
        Some(ra) => ra,
        None => policy.backoff_with_jitter(attempt, jitter),
    };
    // Waiting past the deadline only turns the upstream answer into a timeout: give up now.
    if wait >= remaining {
        return None;
    }
    Some(wait)
}

/// Runs `f` under `policy`: the whole call (attempts and waits) is bounded by `policy.timeout`
/// (then `JobsError::Timeout(ms)`); transient errors (429, 503, 504, network) are retried up to
/// `policy.attempts` in total, after the server's `Retry-After` when given, else the jittered
/// exponential backoff. Dropping the returned future cancels the attempt in flight and every
/// retry after it.
pub async fn execute<T, F, Fut>(policy: &TierPolicy, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    execute_counted(policy, f).await.0
}

/// `execute`, also telling how many attempts were made.
pub async fn execute_counted<T, F, Fut>(policy: &TierPolicy, mut f: F) -> (Result<T>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + policy.timeout;
    let mut attempt = 0u32;
    let attempts = async {
        loop {
            attempt += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match retry_decision(policy, attempt, &e, remaining, rand::random::<f64>()) {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => return Err(e),
                    }
                }
            }
        }
    };
    let result = match tokio::time::timeout_at(deadline, attempts).await {
        Ok(r) => r,
        Err(_) => Err(JobsError::Timeout(policy.timeout.as_millis() as u64)),
    };
    (result, attempt)
}

// ---------------------------------------------------------------------------------------------
// Read cache
// ---------------------------------------------------------------------------------------------

/// The varying part of a cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CacheArg {
    None,
    Int(i64),
    Str(String),
}

impl From<i64> for CacheArg {
    fn from(v: i64) -> Self {
        CacheArg::Int(v)
    }
}
impl From<String> for CacheArg {
    fn from(v: String) -> Self {
        CacheArg::Str(v)
    }
}
impl From<&str> for CacheArg {
    fn from(v: &str) -> Self {
        CacheArg::Str(v.to_string())
    }
}
impl From<()> for CacheArg {
    fn from(_: ()) -> Self {
        CacheArg::None
    }
}

/// Identifies one cached read. `partition` is `Identity::partition()`, so one identity's data is never
/// served to another; `job_id` lets a write drop the job's stale entries. `fleet` is the same
/// identity's key across instances (`Identity::fleet_partition`), for the shared tier.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub partition: u64,
    pub fleet: Arc<str>,
    pub op: &'static str,
    pub job_id: i64,
    pub arg: CacheArg,
}

impl CacheKey {
    /// A key of the identity whose process-local partition is `partition` (tests).
    pub fn new(
        partition: u64,
        op: &'static str,
        job_id: i64,
        arg: impl Into<CacheArg>,
    ) -> CacheKey {
        CacheKey {
            partition,
            fleet: Arc::from(partition.to_string()),
            op,
            job_id,
            arg: arg.into(),
        }
    }

    /// `id`'s key of `op` on `job_id` with `arg`.
    pub fn of(id: &Identity, op: &'static str, job_id: i64, arg: impl Into<CacheArg>) -> CacheKey {
        CacheKey {
            partition: id.partition(),
            fleet: id.fleet_partition(),
            op,
            job_id,
            arg: arg.into(),
        }
    }

    /// The key in the shared tier: `<fleet partition>|<op>|<job>|<arg>`.
    fn shared(&self) -> String {
        let arg = match &self.arg {
            CacheArg::None => String::new(),
            CacheArg::Int(n) => n.to_string(),
            CacheArg::Str(s) => s.clone(),
        };
        format!("{}|{}|{}|{}", self.fleet, self.op, self.job_id, arg)
    }
}

/// What the shared tier holds for a key: the generation of its job now (0 for a read no run
/// changes), and the entry when there is one of that generation, with the time it has left.
#[derive(Debug, Clone)]
pub struct SharedHit {
    pub gen: i64,
    pub value: Option<(Value, Duration)>,
}

/// A second tier of the read cache, shared by every instance of an app (the ledger's
/// database): read on a miss of this process's tier, written after a fetch. It never fails a
/// read: `get` answers `None` when the tier cannot be used now, and then nothing is written.
pub trait SharedTier: Send + Sync {
    /// `gen_job`: the job whose generation the entry follows (`None` for reads no run changes).
    fn get<'a>(&'a self, key: &'a str, gen_job: Option<i64>) -> BoxFuture<'a, Option<SharedHit>>;
    /// Stores `value` read at generation `gen`, for `ttl`.
    fn put<'a>(
        &'a self,
        key: &'a str,
        gen_job: Option<i64>,
        gen: i64,
        value: &'a Value,
        ttl: Duration,
    ) -> BoxFuture<'a, ()>;
}

/// The cache operation of a job's run history (expected durations, see `history.rs`).
pub const HISTORY_OP: &str = "runHistory";

impl CacheKey {
    /// Whether the job's runs change what this read answers: all but the job's definition
    /// (`getJob`) and its history's durations (which one more run barely moves), kept for
    /// their TTL.
    fn follows_runs(&self) -> bool {
        self.op != "getJob" && self.op != HISTORY_OP
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StoredKey {
    key: CacheKey,
    /// Generation of the key's job (and of the whole cache) when the fetch started: a fetch that
    /// began before an invalidation stores under a generation no reader asks for any more.
    job_gen: u64,
    all_gen: u64,
}

/// A cached value and how long it is kept (the policy's TTL, or less for an entry of the shared
/// tier, which keeps its own expiry).
#[derive(Clone)]
struct Cached {
    value: Value,
    ttl: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<StoredKey, Cached> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _: &StoredKey,
        value: &Cached,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Cache of read results (moka), with one fetch in flight per key, and optionally a shared
/// tier behind it (see [`SharedTier`]). Errors are never cached.
pub struct ReadCache {
    cache: Option<moka::future::Cache<StoredKey, Cached>>,
    ttl: Duration,
    shared: Option<Arc<dyn SharedTier>>,
    job_gens: Mutex<HashMap<i64, u64>>,
    all_gen: AtomicU64,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("enabled", &self.cache.is_some())
            .finish()
    }
}

impl ReadCache {
    /// A cache following `policy.cache_ttl` (`None`: no caching, every call fetches), holding at
    /// most `max_entries` results.
    pub fn new(policy: &TierPolicy, max_entries: u64) -> ReadCache {
        ReadCache::with_shared(policy, max_entries, None)
    }

    /// `new`, with a shared tier behind this process's.
    pub fn with_shared(
        policy: &TierPolicy,
        max_entries: u64,
        shared: Option<Arc<dyn SharedTier>>,
    ) -> ReadCache {
        let ttl = policy.cache_ttl.filter(|t| !t.is_zero());
        let cache = ttl.map(|ttl| {
            moka::future::Cache::builder()
                .max_capacity(max_entries.max(1))
                .time_to_live(ttl)
                .expire_after(PerEntryTtl)
                .build()
        });
        ReadCache {
            cache,
            ttl: ttl.unwrap_or_default(),
            shared,
            job_gens: Mutex::new(HashMap::new()),
            all_gen: AtomicU64::new(0),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.cache.is_some()
    }

    fn stored_key(&self, key: CacheKey) -> StoredKey {
        let job_gen = if key.follows_runs() {
            *self
                .job_gens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key.job_id)
                .unwrap_or(&0)
        } else {
            0
        };
        StoredKey {
            key,
            job_gen,
            all_gen: self.all_gen.load(Ordering::Acquire),
        }
    }

    /// The cached value for `key`, or the result of `fetch` (cached when `Ok`). Concurrent
    /// callers with the same key share one fetch.
    pub async fn get_or_fetch<Fut>(&self, key: CacheKey, fetch: Fut) -> Result<Value>
    where
        Fut: Future<Output = Result<Value>>,
    {
        let Some(cache) = &self.cache else {
            return fetch.await;
        };
        let key = self.stored_key(key);
        let ttl = self.ttl;
        // One path with or without a shared tier, boxed: inline, the fetch (a large future)
        // would sit in the read's future more than once, and every read would carry it.
        let shared = self.shared.as_deref();
        let text_key = shared.map(|_| key.key.shared());
        let gen_job = key.key.follows_runs().then_some(key.key.job_id);
        cache
            .try_get_with(
                key,
                Box::pin(async move {
                    let hit = match (shared, &text_key) {
                        (Some(shared), Some(k)) => shared.get(k, gen_job).await,
                        _ => None,
                    };
                    if let Some(SharedHit {
                        value: Some((value, left)),
                        ..
                    }) = hit
                    {
                        return Ok::<_, JobsError>(Cached {
                            value,
                            ttl: left.min(ttl),
                        });
                    }
                    let value = fetch.await?;
                    if let (Some(shared), Some(k), Some(hit)) = (shared, &text_key, hit) {
                        shared.put(k, gen_job, hit.gen, &value, ttl).await;
                    }
                    Ok(Cached { value, ttl })
                }),
            )
            .await
            .map(|c| c.value)
            .map_err(|e: Arc<JobsError>| (*e).clone())
    }

    /// Drops every cached entry of `job_id` that its runs change, for every identity (after a
    /// run-now, a cancel or a repair, and when a watched run changes state): the job's
    /// generation moves on, so entries stored under the old one are never read again. They
    /// leave at their TTL or under capacity pressure; removing them here would register a
    /// predicate with the cache on every state change of every watched run, which moka then
    /// runs over its entries (seconds of CPU with 10,000 watched runs and anything cached).
    pub fn invalidate_job(&self, job_id: i64) {
        *self
            .job_gens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(job_id)
            .or_insert(0) += 1;
    }

    /// Drops everything.
    pub fn invalidate_all(&self) {
        self.all_gen.fetch_add(1, Ordering::AcqRel);
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    fn api(status: u16, retry_after: Option<u64>) -> JobsError {
        JobsError::Api {
            status,
            error_code: None,
            upstream_message: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn defaults_and_override() {
        let s = ExecSettings::new(None);
        assert_eq!(s.read.attempts, 3);
        assert_eq!(s.read.initial_backoff, Duration::from_secs(1));
        assert_eq!(s.read.timeout, Duration::from_secs(30));
        assert_eq!(s.read.cache_ttl, Some(Duration::from_secs(60)));
        assert_eq!(s.write.timeout, Duration::from_secs(120));
        assert_eq!(s.write.cache_ttl, None);
        assert_eq!(s.stream.timeout, Duration::from_secs(600));
        let s = ExecSettings::new(Some(5000));
        for t in [Tier::Read, Tier::Write, Tier::Stream] {
            assert_eq!(s.policy(t).timeout, Duration::from_secs(5));
        }
        assert_eq!(ExecSettings::new(Some(0)), ExecSettings::default());
    }

    #[test]
    fn backoff_math() {
        let p = TierPolicy::read();
        assert_eq!(p.backoff(1), Duration::from_secs(1));
        assert_eq!(p.backoff(2), Duration::from_secs(2));
        assert_eq!(p.backoff(3), Duration::from_secs(4));
        assert_eq!(p.backoff(5), Duration::from_secs(10));
        assert_eq!(p.backoff(60), Duration::from_secs(10));
        assert_eq!(p.backoff_with_jitter(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.backoff_with_jitter(1, 1.0), Duration::from_millis(1250));
        assert_eq!(p.backoff_with_jitter(2, 0.5), Duration::from_millis(2250));
        assert_eq!(p.backoff_with_jitter(9, 0.9), Duration::from_secs(10));
    }

    #[test]
    fn retry_decisions() {
        let p = TierPolicy::read();
        let lots = Duration::from_secs(30);
        assert_eq!(
            retry_decision(&p, 1, &api(503, None), lots, 0.0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            retry_decision(&p, 2, &api(504, None), lots, 0.0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_decision(&p, 3, &api(503, None), lots, 0.0),
            None,
            "attempts exhausted"
        );
        assert_eq!(
            retry_decision(&p, 1, &api(500, None), lots, 0.0),
            None,
            "500 is not transient"
        );
        assert_eq!(retry_decision(&p, 1, &api(400, None), lots, 0.0), None);
        assert_eq!(
            retry_decision(&p, 1, &JobsError::network("ECONNRESET", "reset"), lots, 0.0),
            Some(Duration::from_secs(1))
        );
        // Retry-After wins over the backoff, even above max_backoff
        assert_eq!(
            retry_decision(&p, 1, &api(429, Some(3)), lots, 0.9),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_decision(&p, 1, &api(429, Some(20)), lots, 0.0),
            Some(Duration::from_secs(20))
        );
        // ... but not past the deadline
        assert_eq!(
            retry_decision(&p, 1, &api(429, Some(20)), Duration::from_secs(5), 0.0),
            None
        );
        assert_eq!(
            retry_decision(&p, 1, &api(503, None), Duration::from_millis(500), 0.0),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn execute_retries_transient_then_succeeds() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let r = execute(&TierPolicy::read(), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(api(503, None)),
                1 => Err(api(429, Some(4))),
                _ => Ok(42),
            }
        })
        .await;
        assert_eq!(r.unwrap(), 42);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // 1 s (+ at most 25 % jitter) of backoff, then the 4 s Retry-After (virtual time)
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited <= Duration::from_millis(5250),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn execute_does_not_retry_permanent_errors_and_stops_after_attempts() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = execute(&TierPolicy::read(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(api(400, None))
        })
        .await;
        assert!(matches!(r, Err(JobsError::Api { status: 400, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let r: Result<()> = execute(&TierPolicy::write(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(api(503, None))
        })
        .await;
        assert!(matches!(r, Err(JobsError::Api { status: 503, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn execute_times_out_the_whole_call() {
        let policy = TierPolicy {
            timeout: Duration::from_millis(1500),
            ..TierPolicy::read()
        };
        let r: Result<()> = execute(&policy, || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .await;
        assert!(matches!(r, Err(JobsError::Timeout(1500))));

        // A Retry-After longer than what is left ends the call with the upstream error at once.
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let r: Result<()> = execute(&policy, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(api(429, Some(60)))
        })
        .await;
        assert!(matches!(r, Err(JobsError::Api { status: 429, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_execute_stops_retries() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let handle = tokio::spawn(async move {
            let _: Result<()> = execute(&TierPolicy::read(), || {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    Err(api(503, None))
                }
            })
            .await;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        handle.abort();
        let _ = handle.await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no retry after the future was dropped"
        );
    }

    #[tokio::test]
    async fn cache_is_per_scope_and_does_not_keep_errors() {
        let cache = ReadCache::new(&TierPolicy::read(), 1000);
        let fetches = AtomicU32::new(0);
        let fetch = |v: i64| {
            fetches.fetch_add(1, Ordering::SeqCst);
            async move { Ok(Value::from(v)) }
        };
        let a = cache
            .get_or_fetch(CacheKey::new(11, "get_run", 7, 99i64), fetch(1))
            .await
            .unwrap();
        let a2 = cache
            .get_or_fetch(CacheKey::new(11, "get_run", 7, 99i64), fetch(2))
            .await
            .unwrap();
        let sp = cache
            .get_or_fetch(CacheKey::new(0, "get_run", 7, 99i64), fetch(3))
            .await
            .unwrap();
        let b = cache
            .get_or_fetch(CacheKey::new(12, "get_run", 7, 99i64), fetch(4))
            .await
            .unwrap();
        assert_eq!(
            (a, a2, sp, b),
            (
                Value::from(1),
                Value::from(1),
                Value::from(3),
                Value::from(4)
            )
        );

        let err = cache
            .get_or_fetch(CacheKey::new(0, "get_job", 7, ()), async {
                Err(api(503, None))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, JobsError::Api { status: 503, .. }));
        let ok = cache
            .get_or_fetch(CacheKey::new(0, "get_job", 7, ()), async {
                Ok(Value::from("job"))
            })
            .await;
        assert_eq!(ok.unwrap(), Value::from("job"));
    }

    #[tokio::test]
    async fn cache_single_fetch_in_flight() {
        let cache = Arc::new(ReadCache::new(&TierPolicy::read(), 1000));
        let fetches = Arc::new(AtomicU32::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, fetches, gate) = (cache.clone(), fetches.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(CacheKey::new(0, "list_runs", 1, "limit=20"), async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok(Value::from("runs"))
                    })
                    .await
            }));
        }
        while fetches.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Value::from("runs"));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalidation() {
        let cache = ReadCache::new(&TierPolicy::read(), 1000);
        let get = |job: i64, v: i64| {
            cache.get_or_fetch(CacheKey::new(5, "last_run", job, ()), async move {
                Ok(Value::from(v))
            })
        };
        assert_eq!(get(1, 1).await.unwrap(), Value::from(1));
        assert_eq!(get(2, 1).await.unwrap(), Value::from(1));
        cache.invalidate_job(1);
        assert_eq!(get(1, 2).await.unwrap(), Value::from(2), "job 1 refetched");
        assert_eq!(
            get(2, 2).await.unwrap(),
            Value::from(1),
            "job 2 still cached"
        );
        cache.invalidate_all();
        assert_eq!(get(2, 3).await.unwrap(), Value::from(3));

        // A fetch that started before an invalidation does not serve stale data afterwards.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let slow = cache.get_or_fetch(CacheKey::new(5, "last_run", 9, ()), async move {
            let _ = rx.await;
            Ok(Value::from("stale"))
        });
        let invalidate_then_release = async {
            tokio::task::yield_now().await;
            cache.invalidate_job(9);
            let _ = tx.send(());
        };
        let (stale, _) = tokio::join!(slow, invalidate_then_release);
        assert_eq!(stale.unwrap(), Value::from("stale"));
        assert_eq!(get(9, 4).await.unwrap(), Value::from(4));

        let off = ReadCache::new(&TierPolicy::write(), 10);
        assert!(!off.is_enabled());
        let n = AtomicU32::new(0);
        for _ in 0..2 {
            off.get_or_fetch(CacheKey::new(0, "x", 1, ()), async {
                Ok(Value::from(n.fetch_add(1, Ordering::SeqCst)))
            })
            .await
            .unwrap();
        }
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }
}
