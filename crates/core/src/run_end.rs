//! Run-end handlers: `jobs({ jobs: { etl: { onRunEnd } } })` is called for each run the app
//! started or repaired, once its run (or repair) has ended, with the run's final state.
//!
//! - **Who watches.** The instance that starts (or repairs) a run watches for its end through the
//!   shared poller (so the run is polled even when nobody else watches it), and with a ledger
//!   database claims that watch in `appkit_jobs.run_ends` (in the statement that records the
//!   start). Claims are renewed in one statement per instance; a claim that lapses (its instance
//!   died, or was replaced by a deploy) is taken by another instance's sweep, every poll
//!   interval, which watches the run from then on.
//! - **Exactly once.** Firing moves the row from `waiting` to `firing` in one statement that only
//!   one instance can win (two instances that both watched the run race for it; one fires). An
//!   instance that dies inside the handler leaves `firing` with a claim that lapses; the sweep's
//!   instance fires again: at least once then, and the run id (and repair id) is the key a
//!   handler can use to tell.
//! - **Failures.** A handler that throws (or rejects) is retried with back-off, at most
//!   `MAX_ATTEMPTS` times, each attempt bounded by `ATTEMPT_TIMEOUT`; each failure goes to the
//!   app's log and to telemetry, and a handler that never succeeds ends `failed` with its last
//!   error.
//! - **Without a database**: once, in this process, for as long as it lives. **While it is
//!   away**: fired from here, and how it finished is written once it is back (until then another
//!   instance that adopts the end may fire it again: at least once).
//! - An end that can never fire (the run cannot be followed, or never shows its repair) is
//!   written `failed` with why, so that no instance adopts it again.
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::auth::Identity;
use crate::ledger::postgres::PgStore;
use crate::ledger::{Ledger, StartRecord};
use crate::poller::{Poller, RunUpdate, WatchOptions};
use crate::registry::Registry;

/// Attempts of a handler at most.
pub const MAX_ATTEMPTS: u32 = 5;
/// The first back-off between attempts (then x2).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How long one attempt may take before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a watch for a run's end may last (a run may take days).
const END_WATCH_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a repaired run may still show its previous end before the repair appears.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);
/// Ends fired in this process remembered at most (no database: exactly once per process).
const FIRED_REMEMBERED: usize = 100_000;
/// Orphaned ends taken per sweep at most.
const SWEEP_BATCH: i64 = 50;
/// The last error kept, in characters.
const ERROR_CHARS: usize = 200;

/// What a handler is given: the job, the run (and the repair, 0 for the run itself) and the
/// run's final state as JSON text (with `started_by`).
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub job_key: String,
    pub run_id: i64,
    pub repair_id: i64,
    pub run_json: Arc<str>,
}

/// The app's handlers (all jobs'): `Ok` when the handler succeeded, else its error's text.
pub type RunEndHandler =
    Arc<dyn Fn(RunEnd) -> BoxFuture<'static, std::result::Result<(), String>> + Send + Sync>;

/// Counters for telemetry.
#[derive(Debug, Default)]
pub struct RunEndCounters {
    /// Handlers that succeeded.
    pub fired: AtomicU64,
    /// Attempts that failed (thrown, rejected or timed out).
    pub failures: AtomicU64,
    /// Handlers given up after `MAX_ATTEMPTS`.
    pub given_up: AtomicU64,
}

/// A run's end: `(run_id, repair_id)`.
type EndKey = (i64, i64);

/// Ends fired in this process, the oldest forgotten first.
#[derive(Default)]
struct Fired {
    set: HashSet<EndKey>,
    order: VecDeque<EndKey>,
}

/// The run ends of one plugin instance.
pub struct RunEnds {
    poller: Poller,
    ledger: Arc<Ledger>,
    /// The jobs whose runs' ends the app handles (`onRunEnd`).
    jobs: HashSet<String>,
    handler: OnceLock<RunEndHandler>,
    lease: Duration,
    check: Duration,
    /// Ends watched in this process, and ends fired in it (bounded).
    watching: Mutex<HashSet<EndKey>>,
    fired: Mutex<Fired>,
    pub counters: RunEndCounters,
    logs: Mutex<VecDeque<(bool, String)>>,
    /// How ends finished here while the database could not say so (away, or their start not
    /// written yet): written by the sweep once it can.
    unrecorded: Mutex<Vec<Outcome>>,
}

/// How an end finished: `done`, or `failed` with why; and how many sweeps tried to write it.
struct Outcome {
    key: EndKey,
    state: &'static str,
    error: Option<String>,
    tries: u32,
}

/// Sweeps that try to write an outcome before it is dropped (its row never came).
const UNRECORDED_TRIES: u32 = 20;

impl std::fmt::Debug for RunEnds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunEnds").field("jobs", &self.jobs).finish()
    }
}

impl RunEnds {
    /// For the jobs of `registry` with `onRunEnd`; claims last `lease`, orphans are looked for
    /// every `check`.
    pub fn new(
        poller: Poller,
        ledger: Arc<Ledger>,
        registry: &Registry,
        lease: Duration,
        check: Duration,
    ) -> Arc<RunEnds> {
        let jobs = registry
            .keys()
            .into_iter()
            .filter(|k| registry.get(k).is_ok_and(|e| e.config.on_run_end))
            .map(str::to_string)
            .collect();
        if let Some(pg) = ledger.postgres() {
            pg.set_end_lease(lease);
        }
        Arc::new(RunEnds {
            poller,
            ledger,
            jobs,
            handler: OnceLock::new(),
            lease,
            check,
            watching: Mutex::default(),
            fired: Mutex::default(),
            counters: RunEndCounters::default(),
            logs: Mutex::default(),
            unrecorded: Mutex::default(),
        })
    }

    /// Whether the app handles `job_key`'s run ends (a handler is set and the job has one).
    pub fn handles(&self, job_key: &str) -> bool {
        self.handler.get().is_some() && self.jobs.contains(job_key)
    }

    /// The app's handlers; from then on the ends of runs started or repaired here are watched,
    /// and with a database this instance also takes over the ends other instances left.
    /// Within a Tokio runtime. Only the first call counts.
    pub fn set_handler(self: &Arc<Self>, handler: RunEndHandler) {
        if self.handler.set(handler).is_err() || self.jobs.is_empty() {
            return;
        }
        if let Some(pg) = self.ledger.postgres() {
            tokio::spawn(sweep(
                Arc::downgrade(self),
                pg.stopped(),
                self.check,
                self.lease,
            ));
        }
    }

    /// A start was recorded: watch for its end here (see the module docs).
    pub fn started(self: &Arc<Self>, record: &StartRecord) {
        if record.watch_end {
            self.watch(record.run_id, record.repair_id, record.job_key.clone());
        }
    }

    /// Log lines for the app's log since the last call: `(warn, message)`.
    pub fn take_logs(&self) -> Vec<(bool, String)> {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    fn log(&self, warn: bool, message: String) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if logs.len() >= 100 {
            logs.pop_front();
        }
        logs.push_back((warn, message));
    }

    /// Watches for the end of `(run_id, repair_id)` in a task of its own, once per process.
    fn watch(self: &Arc<Self>, run_id: i64, repair_id: i64, job_key: String) {
        if !self
            .watching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((run_id, repair_id))
        {
            return;
        }
        let ends = self.clone();
        tokio::spawn(async move {
            match ends.wait_for_end(run_id, repair_id, &job_key).await {
                Ok(last) => ends.fire(run_id, repair_id, &job_key, last).await,
                // Not fired, and no instance ever will: say so in the row, so none adopts it.
                Err(why) => {
                    ends.finished((run_id, repair_id), "failed", Some(why))
                        .await
                }
            }
            ends.watching
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(run_id, repair_id));
        });
    }

    /// The run's final update once the run (or the repair) has ended, following the shared
    /// poll (as the service principal); why not when the run cannot be followed (gone, or not
    /// this app's to read), or never shows the repair.
    async fn wait_for_end(
        &self,
        run_id: i64,
        repair_id: i64,
        job_key: &str,
    ) -> Result<RunUpdate, String> {
        let started = tokio::time::Instant::now();
        let mut retry = FIRST_BACKOFF;
        loop {
            let mut watch = self.poller.watch(
                &Identity::ServicePrincipal,
                run_id,
                WatchOptions {
                    timeout: END_WATCH_TIMEOUT,
                },
            );
            let mut last = None;
            let mut failed = None;
            while let Some(item) = watch.next().await {
                match item {
                    Ok(update) if update.terminal => last = Some(update),
                    Ok(_) => {}
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(update) = last {
                // A repair's end: the run must show the repair (it records one asynchronously).
                if repair_id == 0 || shows_repair(&update, repair_id) {
                    return Ok(update);
                }
                if started.elapsed() > SETTLE_LIMIT {
                    let why = format!("run {run_id} never showed repair {repair_id}");
                    self.log(
                        true,
                        format!("[jobs] onRunEnd({job_key}): {why}; not fired"),
                    );
                    return Err(why);
                }
            } else if let Some(e) = failed {
                if e.status() == 404
                    || e.status() == 403
                    || matches!(e, crate::JobsError::Api { status: 400, .. })
                {
                    let why = format!("run {run_id} cannot be followed ({})", e.code());
                    self.log(
                        true,
                        format!("[jobs] onRunEnd({job_key}): {why}; not fired"),
                    );
                    return Err(why);
                }
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(Duration::from_secs(30));
        }
    }

    /// Fires the handler once for the fleet (see the module docs), retrying with back-off.
    async fn fire(&self, run_id: i64, repair_id: i64, job_key: &str, last: RunUpdate) {
        let Some(handler) = self.handler.get().cloned() else {
            return;
        };
        let key = (run_id, repair_id);
        {
            let mut fired = self.fired.lock().unwrap_or_else(|e| e.into_inner());
            if !fired.set.insert(key) {
                return;
            }
            fired.order.push_back(key);
            while fired.order.len() > FIRED_REMEMBERED {
                if let Some(old) = fired.order.pop_front() {
                    fired.set.remove(&old);
                }
            }
        }
        // While the database is away this answers at once (an error): fired from here then.
        if let Some(pg) = self.ledger.postgres() {
            match begin_firing(pg, run_id, repair_id, self.lease, last.status.as_deref()).await {
                Ok(true) => {}
                // Another instance fires it (or has).
                Ok(false) => return,
                // The database went away: fire from here (at least once).
                Err(_) => {}
            }
        }
        let end = RunEnd {
            job_key: job_key.to_string(),
            run_id,
            repair_id,
            run_json: last.run_json.clone(),
        };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let outcome = match tokio::time::timeout(ATTEMPT_TIMEOUT, handler(end.clone())).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!(
                    "did not settle within {} s",
                    ATTEMPT_TIMEOUT.as_secs()
                )),
            };
            match outcome {
                Ok(()) => {
                    self.counters.fired.fetch_add(1, Ordering::Relaxed);
                    self.finished(key, "done", None).await;
                    return;
                }
                Err(error) => {
                    let error: String = error.chars().take(ERROR_CHARS).collect();
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    let last_try = attempt == MAX_ATTEMPTS;
                    self.log(
                        true,
                        format!(
                            "[jobs] onRunEnd({job_key}) failed for run {run_id}{} (attempt {attempt} of {MAX_ATTEMPTS}): {error}{}",
                            if repair_id > 0 { format!(" repair {repair_id}") } else { String::new() },
                            if last_try { "; giving up" } else { "" }
                        ),
                    );
                    if last_try {
                        self.counters.given_up.fetch_add(1, Ordering::Relaxed);
                        self.finished(key, "failed", Some(error)).await;
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
    }

    /// Records how an end finished; kept for the sweep when the database cannot take it now.
    async fn finished(&self, key: EndKey, state: &'static str, error: Option<String>) {
        let Some(pg) = self.ledger.postgres() else {
            return;
        };
        let outcome = Outcome {
            key,
            state,
            error,
            tries: 0,
        };
        if !matches!(finish(pg, &outcome).await, Ok(true)) {
            self.unrecorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(outcome);
        }
    }

    /// Writes the outcomes the database could not take when they came (see `finished`).
    async fn write_unrecorded(&self, pg: &PgStore) {
        let pending =
            std::mem::take(&mut *self.unrecorded.lock().unwrap_or_else(|e| e.into_inner()));
        let mut kept = Vec::new();
        for mut outcome in pending {
            outcome.tries += 1;
            if !matches!(finish(pg, &outcome).await, Ok(true)) && outcome.tries < UNRECORDED_TRIES {
                kept.push(outcome);
            }
        }
        self.unrecorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(kept);
    }

    /// Ends whose watcher is gone (its claim lapsed) of this app's jobs with a handler: taken
    /// here, watched from here.
    async fn adopt_orphans(self: &Arc<Self>, pg: &PgStore) {
        let (instance, lease) = (pg.instance().to_string(), self.lease.as_millis() as f64);
        let jobs: Vec<String> = self.jobs.iter().cloned().collect();
        let Ok(rows) = pg
            .run("ledger.adoptRunEnds", move |c| {
                Box::pin(async move {
                    c.query(
                        "UPDATE appkit_jobs.run_ends e
                         SET claimed_by = $1, claimed_until = now() + $2 * interval '1 millisecond'
                         FROM (SELECT run_id, repair_id FROM appkit_jobs.run_ends
                               WHERE state IN ('waiting', 'firing') AND claimed_until < now()
                                 AND job_key = ANY($4)
                               ORDER BY claimed_until LIMIT $3 FOR UPDATE SKIP LOCKED) o
                         WHERE e.run_id = o.run_id AND e.repair_id = o.repair_id
                         RETURNING e.run_id, e.repair_id, e.job_key",
                        &[&instance, &lease, &SWEEP_BATCH, &jobs],
                    )
                    .await
                })
            })
            .await
        else {
            return;
        };
        for row in rows {
            // Fired here before (the row still said otherwise): let this watch fire again.
            let key = (row.get(0), row.get(1));
            self.fired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set
                .remove(&key);
            self.watch(key.0, key.1, row.get(2));
        }
    }
}

/// Whether a run's update shows repair `repair_id` (its latest repair is that one or newer).
fn shows_repair(update: &RunUpdate, repair_id: i64) -> bool {
    crate::run::latest_repair_id(&update.run()).is_some_and(|latest| latest >= repair_id)
}

/// Moves an end to `firing` for this instance: true when it won (or already had it).
async fn begin_firing(
    pg: &PgStore,
    run_id: i64,
    repair_id: i64,
    lease: Duration,
    state: Option<&str>,
) -> Result<bool, crate::ledger::LedgerError> {
    let (instance, lease) = (pg.instance().to_string(), lease.as_millis() as f64);
    let state = state.map(str::to_string);
    pg.run("ledger.beginRunEnd", move |c| {
        Box::pin(async move {
            let row = c
                .query_opt(
                    "UPDATE appkit_jobs.run_ends
                     SET state = 'firing', claimed_by = $3,
                         claimed_until = now() + $4 * interval '1 millisecond',
                         attempts = attempts + 1, ended_state = $5
                     WHERE run_id = $1 AND repair_id = $2
                       AND (state = 'waiting' OR (state = 'firing' AND claimed_by = $3))
                     RETURNING attempts",
                    &[&run_id, &repair_id, &instance, &lease, &state],
                )
                .await?;
            Ok(row.is_some())
        })
    })
    .await
}

/// Records how an end finished here: `done`, or `failed` with the last error. False when its
/// row is not (yet) there or is another instance's.
async fn finish(pg: &PgStore, outcome: &Outcome) -> Result<bool, crate::ledger::LedgerError> {
    let instance = pg.instance().to_string();
    let ((run_id, repair_id), state, error) = (outcome.key, outcome.state, outcome.error.clone());
    pg.run("ledger.finishRunEnd", move |c| {
        Box::pin(async move {
            let n = c
                .execute(
                    "UPDATE appkit_jobs.run_ends
                     SET state = $4, last_error = $5, fired_at = now()
                     WHERE run_id = $1 AND repair_id = $2 AND claimed_by = $3",
                    &[&run_id, &repair_id, &instance, &state, &error],
                )
                .await?;
            Ok(n > 0)
        })
    })
    .await
}

/// Renews this instance's claims (every third of the lease) and adopts orphans (every
/// `check`), until the store stops.
async fn sweep(
    ends: std::sync::Weak<RunEnds>,
    stop: tokio_util::sync::CancellationToken,
    check: Duration,
    lease: Duration,
) {
    let renew_every = lease / 3;
    let mut since_renewal = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(check) => {}
        }
        let Some(ends) = ends.upgrade() else { return };
        let Some(pg) = ends.ledger.postgres().cloned() else {
            return;
        };
        if !pg.health.up() {
            continue;
        }
        since_renewal += check;
        if since_renewal >= renew_every {
            since_renewal = Duration::ZERO;
            let (instance, lease_ms) = (pg.instance().to_string(), lease.as_millis() as f64);
            let _ = pg
                .run("ledger.renewRunEnds", move |c| {
                    Box::pin(async move {
                        c.execute(
                            "UPDATE appkit_jobs.run_ends
                             SET claimed_until = now() + $2 * interval '1 millisecond'
                             WHERE claimed_by = $1 AND state IN ('waiting', 'firing')",
                            &[&instance, &lease_ms],
                        )
                        .await
                    })
                })
                .await;
        }
        ends.write_unrecorded(&pg).await;
        ends.adopt_orphans(&pg).await;
    }
}
