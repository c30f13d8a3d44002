//! The shared polling engine behind `runAndWait`, `watchRun` and SSE streams.
//!
//! - One poll task per `(identity.partition(), run_id)`, however many watchers: each watcher holds
//!   a receiver of the poll's `tokio::sync::watch` channel (no task per watcher). A new watcher
//!   gets the latest state at once; every later state change reaches every watcher.
//! - The last watcher leaving (dropped, finished, or timed out) stops the poll task promptly,
//!   cancelling a fetch in flight.
//! - Pacing: the first poll at once, then gaps of `base_interval`, x1.5, x2.25, ... (capped at
//!   6x base), each jittered by +-20 %: the stock plugin's series. A state change does not reset
//!   it (as the stock plugin's loop): runs spend most of their life in long states, and
//!   resetting nearly doubled the requests per run.
//! - Aimed at the end: once the job's history says when the run should end (`expectedMs` of the
//!   progress summary) and the workspace's clock is known, the regular poll that would come in
//!   the last gap before that instant is moved to just after it (`aim_at_end`); if the run is
//!   still going there, the series starts again at `base_interval`.
//! - Errors: transient ones (`JobsError::is_transient`, and a fetch that ran past its timeout)
//!   are retried at the next tick, waiting at least their `Retry-After`; a 429 pauses the whole
//!   engine until its `Retry-After` (or one base interval); a permanent error ends the poll and
//!   every watcher gets it.
//! - Outages: when polls have failed (429s aside) for `max_outage` on end, the workspace is
//!   taken as lost: the poll ends with `JobsError::Unavailable`, naming the last network cause
//!   and HTTP status, instead of retrying silently until every watcher's timeout. During an
//!   outage the next poll is never later than that bound.
//! - `max_requests_per_second`: a FIFO slot scheduler shared by every poll of the engine. Each
//!   request takes the next free slot (`1 / rate` apart) in the order it became due, so when
//!   polling wants more than the limit every run's interval stretches by the same queueing delay;
//!   nothing fails and no run starves.
//!
//! The engine never talks HTTP: it calls the `fetch` closure it was built with (in the service,
//! an uncached `runs/get` with a timeout). The engine does its own retrying, so the closure
//! should make one attempt and return 429s as they come: a 429 swallowed by inner retries
//! cannot pause the engine.
//!
//! Delivery is "latest state wins": a watcher that has not called `next` for longer than a
//! poll interval skips to the newest state (a terminal state is never skipped: it is the last).
//!
//! `Poller::watch` spawns on the current Tokio runtime: call it from within one.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use rand::Rng;
use serde_json::Value;
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::auth::Identity;
use crate::error::{JobsError, Result};
use crate::history::History;
use crate::progress::{self, RunView};
use crate::run::{PolledRun, RunText};

/// How the engine reads a run: `runs/get` for `(identity, run_id)`.
pub type FetchRun =
    Arc<dyn Fn(Identity, i64) -> BoxFuture<'static, Result<PolledRun>> + Send + Sync>;

/// Called once per published update of a shared poll (not once per watcher), with the
/// identity partition and run id of the poll, before any watcher sees the update; and whether
/// this process read it (false for an update served from the fleet's holder, whose own call
/// already did what is done once for the whole fleet).
pub type OnUpdate = Arc<dyn Fn(u64, i64, &RunUpdate, bool) + Send + Sync>;

/// Who started a run, as the JSON text of `started_by` (`None`: nobody the ledger knows): asked
/// once per poll, before its first update, and written into every update's run.
pub type FetchAttribution =
    Arc<dyn Fn(&Identity, i64) -> BoxFuture<'static, Option<Arc<str>>> + Send + Sync>;

/// The fleet's poll of one run: which instances share it (`Identity::fleet_partition`, the same
/// on every instance) and the run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FleetKey {
    pub partition: Arc<str>,
    pub run_id: i64,
}

/// An update as the fleet's holder published it (`seq`: its order among the run's updates in the
/// fleet, given by the fleet; 0 when handed to `Fleet::publish`).
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub seq: i64,
    pub status: Option<String>,
    pub timestamp: i64,
    pub job_id: Option<i64>,
    pub terminal: bool,
    pub run_json: Arc<str>,
    pub meta_json: Arc<str>,
    pub beyond_js_numbers: bool,
    /// What the holder compares polls with (see `PolledRun::signature`), and whether the job's
    /// durations were known: a new holder resumes from it.
    pub signature: u64,
    pub history_known: bool,
    pub fraction: f64,
}

/// What `Fleet::claim` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// This instance holds the lease now (it polls for the fleet).
    pub holding: bool,
    /// The latest update published, if any.
    pub latest: Option<Published>,
}

/// Why a follower woke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetWake {
    /// The holder published (or may have: a check found a newer update).
    News,
    /// The holder's lease lapsed or was handed back: try to take it.
    Expired,
}

/// Counters a fleet bumps for one followed run (see `FleetSignal`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetNews {
    pub news: u64,
    pub expired: u64,
}

/// What wakes a follower: the fleet bumps the counters behind it.
pub struct FleetSignal {
    rx: watch::Receiver<FleetNews>,
    seen: FleetNews,
}

impl FleetSignal {
    pub fn new(rx: watch::Receiver<FleetNews>) -> FleetSignal {
        let seen = *rx.borrow();
        FleetSignal { rx, seen }
    }

    /// The next reason to look: an expired lease before news. A fleet that is gone reads as
    /// an expired lease (whoever follows then claims, or polls alone).
    pub async fn next(&mut self) -> FleetWake {
        loop {
            let now = *self.rx.borrow_and_update();
            if now.expired != self.seen.expired {
                self.seen = now;
                return FleetWake::Expired;
            }
            if now.news != self.seen.news {
                self.seen = now;
                return FleetWake::News;
            }
            if self.rx.changed().await.is_err() {
                return FleetWake::Expired;
            }
        }
    }
}

/// One poller per run for a whole fleet of instances (issue: many instances, one app): a lease
/// per run, held by the instance that polls and publishes; the others follow what it publishes
/// and take the lease over when it lapses. Implemented on the ledger's database
/// (`ledger::fleet`). Every method answers `None` when the fleet cannot be used now: the poll
/// then goes on by itself.
pub trait Fleet: Send + Sync {
    /// Takes the run's lease when it is free or lapsed (or already this instance's), or says
    /// who has it; with the latest update published.
    fn claim<'a>(&'a self, key: &'a FleetKey) -> BoxFuture<'a, Option<Claim>>;
    /// Publishes an update as the holder (and renews the lease): `Some(false)` when the lease
    /// is another instance's now.
    fn publish<'a>(
        &'a self,
        key: &'a FleetKey,
        update: &'a Published,
    ) -> BoxFuture<'a, Option<bool>>;
    /// The updates published after fleet seq `after`, oldest first.
    fn updates_after<'a>(
        &'a self,
        key: &'a FleetKey,
        after: i64,
    ) -> BoxFuture<'a, Option<Vec<Published>>>;
    /// Hands the lease back (nobody watches the run here any more, or it ended).
    fn release<'a>(&'a self, key: &'a FleetKey) -> BoxFuture<'a, ()>;
    /// What wakes this instance's follower of the run.
    fn follow(&self, key: &FleetKey) -> FleetSignal;
}

/// What the engine calls besides `fetch`, all optional.
#[derive(Clone, Default)]
pub struct PollHooks {
    /// Once per published update of a shared poll.
    pub on_update: Option<OnUpdate>,
    /// A job's typical durations, for `expectedMs` and the aimed poll.
    pub history: Option<FetchHistory>,
    /// Who started the run (`started_by` in every update's run).
    pub attribution: Option<FetchAttribution>,
    /// One poller per run for the whole fleet of instances.
    pub fleet: Option<Arc<dyn Fleet>>,
}

/// How the engine learns how long a run's job usually takes: `(identity, job_id)` answers at
/// once with the job's durations when they are known, and otherwise starts reading them in the
/// background (once per job and identity, however many polls ask) and answers `None`. A poll
/// asks after each read of its run until it gets them, so the first update never waits.
pub type FetchHistory = Arc<dyn Fn(&Identity, i64) -> Option<Arc<History>> + Send + Sync>;

/// The base poll interval when `pollIntervalMs` is not set.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest base interval: a shorter `pollIntervalMs` is raised to this.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long polls ride out a workspace that cannot be reached, by default.
pub const DEFAULT_MAX_OUTAGE: Duration = Duration::from_secs(30);

/// Growth of the poll interval per poll (state changes included).
const BACKOFF_FACTOR: f64 = 1.5;
/// Cap of the poll interval, in multiples of the base interval.
const MAX_INTERVAL_FACTOR: u32 = 6;
/// Jitter applied to every delay: +-20 %.
const JITTER: f64 = 0.2;
/// Polls holding a request at once. A poll waits for its turn here, before it builds the
/// request future (large: it holds the HTTP client's state), so that when thousands of polls
/// fall due together those waiting cost a few bytes each. Matches the client's default
/// connection cap, which still applies.
const FETCHES_IN_FLIGHT: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    /// `pollIntervalMs`: the gap between the immediate first poll and the second one; later
    /// gaps grow x1.5 each.
    pub base_interval: Duration,
    /// Client-side request limit of the engine (all runs, all identities). `None` or a
    /// non-positive value means no limit.
    pub max_requests_per_second: Option<f64>,
    /// Failing polls for this long end a poll with `JobsError::Unavailable`.
    pub max_outage: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings {
            base_interval: DEFAULT_POLL_INTERVAL,
            max_requests_per_second: None,
            max_outage: DEFAULT_MAX_OUTAGE,
        }
    }
}

/// What the engine has done since it started (cumulative, relaxed atomics: a few nanoseconds
/// each), read by telemetry when it collects.
#[derive(Debug, Default)]
pub struct PollCounters {
    /// `runs/get` requests the polls sent.
    pub polls: AtomicU64,
    /// 429 answers that paused every poll.
    pub rate_limit_pauses: AtomicU64,
    /// Updates handed to watchers: one per watcher of each published state change.
    pub updates_delivered: AtomicU64,
    /// Requests waiting for a turn under `max_requests_per_second` right now.
    pub waiting_for_turn: AtomicI64,
}

/// A run of failed polls: since when, and what was last seen.
struct Outage {
    since: Instant,
    cause: String,
    last_status: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// How long this watcher waits for a terminal state (the job's `waitTimeout`), counted from
    /// `Poller::watch`.
    pub timeout: Duration,
}

/// One state of a run, as every watcher receives it.
///
/// The run itself is kept only as JSON text (the response body's own, see `PolledRun`),
/// shared by every watcher: a parsed `Value` costs several times the text, and the poll of
/// each watched run keeps its last update for as long as the run is watched.
#[derive(Debug, Clone)]
pub struct RunUpdate {
    /// `state.life_cycle_state`, else the V2 `status.state`.
    pub status: Option<String>,
    /// When the state was read, in ms since the Unix epoch.
    pub timestamp: i64,
    /// Increases with every update of the shared poll.
    pub seq: u64,
    /// The run's `job_id`.
    pub job_id: Option<i64>,
    /// The run is over (a terminal state): this is the poll's last update.
    pub terminal: bool,
    /// The full run as last read, as JSON text.
    pub run_json: Arc<str>,
    /// The run holds an integer beyond +-(2^53 - 1), which `JSON.parse` would round: the Node
    /// binding then hands the run over as a value (such integers as `bigint`).
    pub beyond_js_numbers: bool,
    /// `{"changes":{...},"progress":{...}}` as JSON text: what moved since the poll's previous
    /// update, and the progress summary (see `progress.rs`).
    pub meta_json: Arc<str>,
}

impl RunUpdate {
    /// The update of a polled run, read at `timestamp` (ms since the Unix epoch), with its
    /// `meta_json` (see `progress::describe`).
    pub fn new(polled: &PolledRun, seq: u64, timestamp: i64, meta_json: Arc<str>) -> RunUpdate {
        RunUpdate::with_text(polled, polled.text(), seq, timestamp, meta_json)
    }

    /// `new`, with the run's text already taken from `polled`.
    fn with_text(
        polled: &PolledRun,
        run: RunText,
        seq: u64,
        timestamp: i64,
        meta_json: Arc<str>,
    ) -> RunUpdate {
        RunUpdate {
            status: polled.status.as_deref().map(str::to_string),
            timestamp,
            seq,
            job_id: polled.job_id,
            terminal: polled.terminal,
            run_json: run.text,
            beyond_js_numbers: run.beyond_js_numbers,
            meta_json,
        }
    }

    /// The run as a value, parsed from `run_json` (for the few callers that need one).
    pub fn run(&self) -> Value {
        serde_json::from_str(&self.run_json).unwrap_or(Value::Null)
    }
}

/// The shared engine. Cheap to clone; clones share the polls, the rate limit and the 429 pause.
#[derive(Clone)]
pub struct Poller {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("settings", &self.inner.settings)
            .field("active_polls", &self.active_polls())
            .finish()
    }
}

type PollKey = (u64, i64);

struct Inner {
    fetch: FetchRun,
    on_update: Option<OnUpdate>,
    history: Option<FetchHistory>,
    attribution: Option<FetchAttribution>,
    fleet: Option<Arc<dyn Fleet>>,
    settings: PollSettings,
    /// Minimum spacing of requests, from `max_requests_per_second`.
    spacing: Option<Duration>,
    polls: Mutex<HashMap<PollKey, watch::Sender<Snapshot>>>,
    gate: Mutex<Gate>,
    fetching: Semaphore,
    counters: PollCounters,
    clock: WorkspaceClock,
}

/// The workspace's clock, from the `Date` of poll answers: whole seconds only, so each answer
/// bounds the offset from the local clock to a 1 s window, and the windows of successive
/// answers narrow it down (to a few ms after a handful of polls). A window that contradicts the
/// others (a clock that jumped, or the emulator's virtual time running at another pace) starts
/// the estimate over.
///
/// Within the window, the estimate is the local clock itself when the window holds it (hosts
/// kept by NTP differ by milliseconds, far less than the window's width), else the window's
/// middle.
#[derive(Default)]
struct WorkspaceClock(Mutex<Option<ClockWindow>>);

/// Bounds of the offset (workspace - local, ms) that every answer since `since` agrees with.
#[derive(Clone, Copy)]
struct ClockWindow {
    lo: i64,
    hi: i64,
    /// Local time (ms) of the first answer of this window.
    since: i64,
    /// Local time (ms) of the latest answer.
    latest: i64,
}

/// How long (local ms) answers must have agreed before the workspace's clock is trusted to
/// time a poll by (see `WorkspaceClock::steady`). A clock running at another pace (the
/// emulator's scaled virtual time) contradicts itself well within it.
const STEADY_CLOCK_MS: i64 = 2_000;

impl WorkspaceClock {
    /// The workspace's time now, learning from `date` (an answer's `Date`, ms) when given;
    /// the local clock when no answer had one.
    fn now(&self, date: Option<i64>) -> i64 {
        let local = now_ms();
        let mut window = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(date) = date {
            let (lo, hi) = (date - local, date + 999 - local);
            *window = Some(match *window {
                Some(w) if w.lo.max(lo) <= w.hi.min(hi) => ClockWindow {
                    lo: w.lo.max(lo),
                    hi: w.hi.min(hi),
                    latest: local,
                    ..w
                },
                _ => ClockWindow {
                    lo,
                    hi,
                    since: local,
                    latest: local,
                },
            });
        }
        match *window {
            Some(w) if w.lo <= 0 && 0 <= w.hi => local,
            Some(w) => local + (w.lo + w.hi) / 2,
            None => local,
        }
    }

    /// True when the answers have agreed for `STEADY_CLOCK_MS`: the workspace's times can
    /// then be turned into local instants (to poll when a run is expected to end).
    fn steady(&self) -> bool {
        let window = self.0.lock().unwrap_or_else(|e| e.into_inner());
        window.is_some_and(|w| w.latest - w.since >= STEADY_CLOCK_MS)
    }
}

#[derive(Default)]
struct Gate {
    /// The next free request slot of the rate limit.
    next_slot: Option<Instant>,
    /// No request before this instant (set by a 429).
    paused_until: Option<Instant>,
}

/// What the poll publishes. `seq` grows with every publication. The updates of the last
/// moments are kept, not only the latest, so that a burst (a follower catching up on several
/// updates the fleet's holder published) reaches every watcher whole and in order; a watcher
/// slower than `RECENT_UPDATES_KEPT` skips to the newest kept.
#[derive(Default)]
struct Snapshot {
    seq: u64,
    /// `(when, update)`, oldest first (`update.seq` is its publication's); never empty once an
    /// update came.
    recent: VecDeque<(Instant, RunUpdate)>,
    /// The poll's end by an error (published as `seq`).
    error: Option<JobsError>,
}

/// How long a published update is kept for watchers that have not taken it yet (the newest is
/// always kept): watchers take theirs within microseconds; longer would keep run texts alive.
const RECENT_UPDATES_KEPT: Duration = Duration::from_millis(250);
/// Updates kept at most, whatever their age.
const RECENT_UPDATES_MAX: usize = 64;

impl Poller {
    pub fn new(fetch: FetchRun, settings: PollSettings) -> Poller {
        Poller::with_hooks(fetch, settings, PollHooks::default())
    }

    /// `new`, plus `hooks`: `on_update` once per published update of each shared poll (e.g. to
    /// drop stale cached reads once per state change rather than once per watcher), `history`
    /// to read a job's typical durations, `attribution` to say who started a run.
    pub fn with_hooks(fetch: FetchRun, settings: PollSettings, hooks: PollHooks) -> Poller {
        let PollHooks {
            on_update,
            history,
            attribution,
            fleet,
        } = hooks;
        let spacing = settings
            .max_requests_per_second
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        Poller {
            inner: Arc::new(Inner {
                fetch,
                on_update,
                history,
                attribution,
                fleet,
                settings,
                spacing,
                polls: Mutex::new(HashMap::new()),
                gate: Mutex::new(Gate::default()),
                fetching: Semaphore::new(FETCHES_IN_FLIGHT),
                counters: PollCounters::default(),
                clock: WorkspaceClock::default(),
            }),
        }
    }

    pub fn settings(&self) -> &PollSettings {
        &self.inner.settings
    }

    /// Follow `run_id` as `identity`: joins the shared poll of `(identity.partition(), run_id)` or
    /// starts it. Must be called within a Tokio runtime.
    pub fn watch(&self, identity: &Identity, run_id: i64, options: WatchOptions) -> RunWatch {
        let key = (identity.partition(), run_id);
        let rx = {
            let mut polls = self.inner.polls.lock().unwrap();
            match polls.get(&key) {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(Snapshot::default());
                    polls.insert(key, tx.clone());
                    tokio::spawn(poll_loop(self.inner.clone(), key, identity.clone(), tx));
                    rx
                }
            }
        };
        RunWatch {
            rx: Some(rx),
            seen: 0,
            run_id,
            timeout: options.timeout,
            deadline: Instant::now() + options.timeout,
        }
    }

    /// Waits for a request turn of the engine: past a 429 pause and for a slot of
    /// `max_requests_per_second`. For requests made beside the polls (e.g. the ownership read
    /// before a watch) so that they respect the same limit. Cancel-safe.
    pub async fn request_turn(&self) {
        self.inner.wait_turn(Instant::now()).await;
    }

    /// What the engine has done since it started.
    pub fn counters(&self) -> &PollCounters {
        &self.inner.counters
    }

    /// Number of poll tasks running (one per watched `(identity, run)`).
    pub fn active_polls(&self) -> usize {
        self.inner.polls.lock().unwrap().len()
    }

    /// Number of watchers across all polls.
    pub fn active_watchers(&self) -> usize {
        self.inner
            .polls
            .lock()
            .unwrap()
            .values()
            .map(|tx| tx.receiver_count())
            .sum()
    }
}

/// One watcher of a run. Dropping it leaves the shared poll (the last one leaving stops it).
/// `next` is cancel-safe: dropping its future loses no update.
pub struct RunWatch {
    rx: Option<watch::Receiver<Snapshot>>,
    seen: u64,
    run_id: i64,
    timeout: Duration,
    deadline: Instant,
}

impl std::fmt::Debug for RunWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunWatch")
            .field("run_id", &self.run_id)
            .field("seen", &self.seen)
            .field("finished", &self.rx.is_none())
            .finish()
    }
}

impl RunWatch {
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// The next state of the run: the current one at once when the poll already has one,
    /// then one per state change. After a terminal state (yielded), an error (a permanent
    /// poll error, or `PollTimeout` when this watcher's timeout passes) it yields `None`.
    pub async fn next(&mut self) -> Option<Result<RunUpdate>> {
        loop {
            let rx = self.rx.as_mut()?;
            let fresh = {
                let snap = rx.borrow_and_update();
                if snap.seq > self.seen {
                    // The first update after the last one taken, else the poll's error.
                    match snap.recent.iter().find(|(_, u)| u.seq > self.seen) {
                        Some((_, update)) => Some((update.seq, Ok(update.clone()))),
                        None => Some((snap.seq, Err(snap.error.clone()))),
                    }
                } else {
                    None
                }
            };
            if let Some((seq, item)) = fresh {
                self.seen = seq;
                match item {
                    Ok(update) => {
                        if update.terminal {
                            self.finish();
                        }
                        return Some(Ok(update));
                    }
                    Err(Some(e)) => {
                        self.finish();
                        return Some(Err(e));
                    }
                    Err(None) => {}
                }
            }
            match timeout_at(self.deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    // Every publication that ends a poll comes before the sender goes, so
                    // this only happens if the poll task died.
                    self.finish();
                    return Some(Err(JobsError::Internal(format!(
                        "the poll of run {} ended without a final state",
                        self.run_id
                    ))));
                }
                Err(_) => {
                    self.finish();
                    return Some(Err(JobsError::PollTimeout {
                        run_id: self.run_id,
                        ms: self.timeout.as_millis() as u64,
                    }));
                }
            }
        }
    }

    /// True once the watch has yielded its last item.
    pub fn is_finished(&self) -> bool {
        self.rx.is_none()
    }

    /// Leave the shared poll now.
    fn finish(&mut self) {
        self.rx = None;
    }
}

#[cfg(not(test))]
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// In unit tests, the local clock follows Tokio's (paused) clock, so that tests can reason
/// about the workspace's clock and the schedule together.
#[cfg(test)]
fn now_ms() -> i64 {
    static ANCHOR: std::sync::OnceLock<(Instant, i64)> = std::sync::OnceLock::new();
    let (at, epoch) = *ANCHOR.get_or_init(|| {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (Instant::now(), epoch)
    });
    epoch + Instant::now().saturating_duration_since(at).as_millis() as i64
}

/// The engine's coarse tick: 25 ms, or a tenth of the base interval when that is shorter.
fn tick(base: Duration) -> Duration {
    (base / 10).min(Duration::from_millis(25))
}

/// `due` rounded to the nearest tick (see `tick`), counted from one fixed instant: polls due
/// close together wake up together, so one timer wake-up of a worker sends a batch instead of
/// one request each (a worker's park/unpark costs more than the request itself when polls are
/// sparse). Rounding to the nearest tick, not up, keeps the schedule's mean where it is: a
/// poll moves by at most half a tick (a twentieth of its interval), either way.
fn on_tick(due: Instant, base: Duration) -> Instant {
    static ANCHOR: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let tick = tick(base).as_nanos();
    let anchor = *ANCHOR.get_or_init(Instant::now);
    let Some(since) = due.checked_duration_since(anchor) else {
        return due;
    };
    if tick == 0 {
        return due;
    }
    let nanos = since.as_nanos();
    let rounded = (nanos + tick / 2) / tick * tick;
    if rounded >= nanos {
        due + Duration::from_nanos((rounded - nanos) as u64)
    } else {
        due - Duration::from_nanos((nanos - rounded) as u64)
    }
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER)))
}

/// The poll of one `(partition, run)`. Ends on a terminal state, a permanent error, or when no
/// watcher is left. With a fleet, it first takes or joins the fleet's poll of the run (see
/// `Fleet`): the holder polls and publishes, a follower serves its watchers from what the holder
/// published and takes over when the holder's lease expires; without a usable fleet it polls
/// by itself.
async fn poll_loop(
    inner: Arc<Inner>,
    key: PollKey,
    identity: Identity,
    tx: watch::Sender<Snapshot>,
) {
    let mut poll = Poll::new(inner, key, identity, tx);
    poll.join_fleet().await;
    loop {
        let step = match poll.role {
            Role::Follower { .. } => poll.follow().await,
            Role::Local | Role::Holder { .. } => poll.poll().await,
        };
        if let Step::Done = step {
            poll.leave_fleet().await;
            return;
        }
    }
}

/// What a poll does next.
enum Step {
    Continue,
    Done,
}

/// The part of the fleet's poll this instance plays (see `Fleet`).
enum Role {
    /// No fleet, or it cannot be used now: this instance polls for itself.
    Local,
    /// This instance holds the run's lease: it polls and publishes for the fleet.
    Holder {
        fleet: Arc<dyn Fleet>,
        key: FleetKey,
    },
    /// Another instance holds it: this one serves what it publishes.
    Follower {
        fleet: Arc<dyn Fleet>,
        key: FleetKey,
        signal: FleetSignal,
        /// The fleet seq of the last update served.
        seen: i64,
    },
}

/// One shared poll: its pacing, what it published, and its role in the fleet.
struct Poll {
    inner: Arc<Inner>,
    key: PollKey,
    identity: Identity,
    tx: watch::Sender<Snapshot>,
    base: Duration,
    cap: Duration,
    /// The next regular gap: `pollIntervalMs` after the first poll, then x1.5 per poll.
    interval: Duration,
    due: Instant,
    /// When the run is expected to end (workspace ms, from its job's history), and whether a
    /// poll was already moved there (see `aim_at_end`).
    expected_end: Option<i64>,
    aimed: bool,
    last_signature: Option<(u64, bool)>,
    /// Publications so far (updates and errors).
    seq: u64,
    outage: Option<Outage>,
    /// The job's typical durations, once known (see `FetchHistory`).
    history: Option<Arc<History>>,
    /// The fraction of the previous update (a poll's fraction never goes down), and what the
    /// previous update showed (what the next one's `changes` compare with).
    fraction_floor: f64,
    digest: Option<progress::Digest>,
    /// Who started the run (`started_by` of every update), asked before the first update.
    attribution: Option<Option<Arc<str>>>,
    role: Role,
}

impl Poll {
    fn new(
        inner: Arc<Inner>,
        key: PollKey,
        identity: Identity,
        tx: watch::Sender<Snapshot>,
    ) -> Poll {
        let base = inner.settings.base_interval.max(Duration::from_millis(1));
        Poll {
            inner,
            key,
            identity,
            tx,
            base,
            cap: base * MAX_INTERVAL_FACTOR,
            interval: base,
            due: Instant::now(),
            expected_end: None,
            aimed: false,
            last_signature: None,
            seq: 0,
            outage: None,
            history: None,
            fraction_floor: 0.0,
            digest: None,
            attribution: None,
            role: Role::Local,
        }
    }

    /// Takes the fleet's lease of the run, or follows whoever has it; serves what was published
    /// already at once. Stays local when there is no fleet or it cannot answer.
    async fn join_fleet(&mut self) {
        let Some(fleet) = self.inner.fleet.clone() else {
            return;
        };
        let key = FleetKey {
            partition: self.identity.fleet_partition(),
            run_id: self.key.1,
        };
        let Some(claim) = fleet.claim(&key).await else {
            return;
        };
        self.take_role(fleet, key, claim);
    }

    /// Plays `claim`'s role: as holder, starting from the latest published update (its
    /// signature, digest and fraction, so that nothing is published twice); as follower,
    /// serving the latest published update at once.
    fn take_role(&mut self, fleet: Arc<dyn Fleet>, key: FleetKey, claim: Claim) {
        if claim.holding {
            if let Some(latest) = &claim.latest {
                if self.last_signature.is_none() {
                    self.serve(latest);
                }
                self.resume_from(latest);
            }
            self.role = Role::Holder { fleet, key };
        } else {
            let seen = match &claim.latest {
                Some(latest) => {
                    self.serve(latest);
                    latest.seq
                }
                None => 0,
            };
            let signal = fleet.follow(&key);
            self.role = Role::Follower {
                fleet,
                key,
                signal,
                seen,
            };
        }
    }

    /// Continues the holder's work after `latest`: a poll that finds the same signature
    /// publishes nothing; `changes` compare with it; the fraction never goes below it.
    fn resume_from(&mut self, latest: &Published) {
        self.last_signature = Some((latest.signature, latest.history_known));
        self.fraction_floor = self.fraction_floor.max(latest.fraction);
        if let Some(view) = RunView::parse(&latest.run_json) {
            let described = progress::describe(None, &view, now_ms(), None, 0.0, latest.terminal);
            self.digest = Some(described.digest);
        }
    }

    /// Publishes an update the fleet's holder published to this poll's watchers.
    fn serve(&mut self, published: &Published) {
        self.fraction_floor = self.fraction_floor.max(published.fraction);
        let update = RunUpdate {
            status: published.status.clone(),
            timestamp: published.timestamp,
            seq: self.seq + 1,
            job_id: published.job_id,
            terminal: published.terminal,
            run_json: published.run_json.clone(),
            beyond_js_numbers: published.beyond_js_numbers,
            meta_json: published.meta_json.clone(),
        };
        self.publish(update, false);
    }

    /// Hands `update` (read here, or served from the fleet) to every watcher (see `Snapshot`).
    fn publish(&mut self, mut update: RunUpdate, read_here: bool) {
        self.seq += 1;
        update.seq = self.seq;
        if let Some(on_update) = &self.inner.on_update {
            on_update(self.key.0, self.key.1, &update, read_here);
        }
        self.inner
            .counters
            .updates_delivered
            .fetch_add(self.tx.receiver_count() as u64, Ordering::Relaxed);
        let seq = self.seq;
        self.tx.send_modify(|snap| {
            let now = Instant::now();
            snap.seq = seq;
            snap.recent.push_back((now, update));
            while snap.recent.len() > 1
                && (snap.recent.len() > RECENT_UPDATES_MAX
                    || snap
                        .recent
                        .front()
                        .is_some_and(|(at, _)| now.duration_since(*at) > RECENT_UPDATES_KEPT))
            {
                snap.recent.pop_front();
            }
        });
    }

    /// Ends the poll for every watcher with `e`.
    fn fail(&mut self, e: JobsError) {
        self.seq += 1;
        let seq = self.seq;
        self.tx.send_modify(|snap| {
            snap.seq = seq;
            snap.error = Some(e);
        });
    }

    /// True when no watcher is left (the poll leaves the engine then).
    fn unwatched(&self) -> bool {
        self.inner.retire_if_unwatched(self.key, &self.tx)
    }

    /// As a follower: waits for news of the run (a notification, the periodic check), serves
    /// what the holder published since, and takes the lease when it expired.
    async fn follow(&mut self) -> Step {
        let Role::Follower {
            fleet,
            key,
            signal,
            seen,
        } = &mut self.role
        else {
            return Step::Continue;
        };
        let (fleet, key) = (fleet.clone(), key.clone());
        let woken = tokio::select! {
            biased;
            _ = self.tx.closed() => None,
            why = signal.next() => Some(why),
        };
        let Some(why) = woken else {
            return if self.unwatched() {
                Step::Done
            } else {
                Step::Continue
            };
        };
        let after = *seen;
        match fleet.updates_after(&key, after).await {
            Some(list) => {
                for published in &list {
                    self.serve(published);
                    if published.terminal {
                        self.inner.retire(self.key);
                        return Step::Done;
                    }
                }
                // Ready to take over from the newest (only it counts if this one ever polls).
                if let Some(last) = list.last() {
                    if let Role::Follower { seen, .. } = &mut self.role {
                        *seen = last.seq;
                    }
                    self.resume_from(last);
                }
            }
            // The fleet cannot answer: poll for ourselves (correct, if not shared).
            None => {
                self.role = Role::Local;
                self.due = Instant::now();
                return Step::Continue;
            }
        }
        if why == FleetWake::Expired {
            match fleet.claim(&key).await {
                Some(claim) if claim.holding => {
                    self.role = Role::Holder { fleet, key };
                    if let Some(latest) = &claim.latest {
                        self.resume_from(latest);
                    }
                    // Poll now: the run may have moved while nobody held it.
                    self.due = Instant::now();
                }
                Some(_) => {}
                None => {
                    self.role = Role::Local;
                    self.due = Instant::now();
                }
            }
        }
        Step::Continue
    }

    /// One poll of the run (alone, or as the fleet's holder): waits for its turn, reads the
    /// run, publishes what moved (to the fleet too, as holder), and schedules the next poll.
    async fn poll(&mut self) -> Step {
        let inner = self.inner.clone();
        tokio::select! {
            biased;
            _ = self.tx.closed() => {
                return if self.unwatched() { Step::Done } else { Step::Continue };
            }
            _ = inner.wait_turn(self.due) => {}
        }
        let fetched = tokio::select! {
            biased;
            _ = self.tx.closed() => {
                return if self.unwatched() { Step::Done } else { Step::Continue };
            }
            r = async {
                let _turn = inner.fetching.acquire().await;
                inner.counters.polls.fetch_add(1, Ordering::Relaxed);
                (inner.fetch)(self.identity.clone(), self.key.1).await
            } => r,
        };
        let base = self.base;
        let mut delay_floor = Duration::ZERO;
        // The local instant the run is expected to end, when a poll may still be moved there.
        let mut end_at: Option<Instant> = None;
        match fetched {
            Ok(polled) => {
                self.outage = None;
                let server_now = inner.clock.now(polled.server_time);
                if self.history.is_none() {
                    if let (Some(read), Some(job_id)) = (&inner.history, polled.job_id) {
                        self.history = read(&self.identity, job_id);
                    }
                }
                // Expected durations arriving is news too: they make an update of their own
                // (a history without a single figure changes nothing a user sees).
                let known = self
                    .history
                    .as_ref()
                    .is_some_and(|h| h.run_ms.is_some() || !h.task_ms.is_empty());
                let signature = (polled.signature, known);
                let terminal = polled.terminal;
                if self.last_signature != Some(signature) {
                    if let (None, Some(ask)) = (&self.attribution, &inner.attribution) {
                        self.attribution = Some(ask(&self.identity, self.key.1).await);
                    }
                    self.last_signature = Some(signature);
                    let mut text = polled.text();
                    let view = RunView::parse(&text.text).unwrap_or_default();
                    let described = progress::describe(
                        self.digest.as_ref(),
                        &view,
                        server_now,
                        self.history.as_deref(),
                        self.fraction_floor,
                        terminal,
                    );
                    drop(view);
                    if let Some(who) = &self.attribution {
                        text.text = with_started_by(&text.text, who.as_deref());
                    }
                    self.fraction_floor = described.fraction;
                    self.digest = Some(described.digest);
                    if described.expected_end != self.expected_end {
                        // A new expectation (history arrived, a repair began) earns its own
                        // aimed poll.
                        self.expected_end = described.expected_end;
                        self.aimed = false;
                    }
                    let meta = Arc::from(described.meta);
                    let update = RunUpdate::with_text(&polled, text, 0, now_ms(), meta);
                    let published = matches!(self.role, Role::Holder { .. }).then(|| Published {
                        seq: 0,
                        status: update.status.clone(),
                        timestamp: update.timestamp,
                        job_id: update.job_id,
                        terminal,
                        run_json: update.run_json.clone(),
                        meta_json: update.meta_json.clone(),
                        beyond_js_numbers: update.beyond_js_numbers,
                        signature: signature.0,
                        history_known: signature.1,
                        fraction: self.fraction_floor,
                    });
                    // This instance's watchers first; then the fleet's.
                    self.publish(update, true);
                    if let (Some(published), Role::Holder { fleet, key }) = (published, &self.role)
                    {
                        let (fleet, key) = (fleet.clone(), key.clone());
                        match fleet.publish(&key, &published).await {
                            Some(true) => {}
                            // Another instance took the lease (this one stalled): follow it.
                            Some(false) => {
                                if !terminal {
                                    if let Some(claim) = fleet.claim(&key).await {
                                        self.take_role(fleet, key, claim);
                                    }
                                }
                            }
                            // The database is away: go on alone (the lease will lapse, and
                            // whoever still can will poll too).
                            None => self.role = Role::Local,
                        }
                    }
                }
                if terminal {
                    inner.retire(self.key);
                    return Step::Done;
                }
                if let (false, Some(end)) = (self.aimed, self.expected_end) {
                    if inner.clock.steady() {
                        let margin = (base / 10).max(Duration::from_millis(10));
                        let ahead = end - server_now + margin.as_millis() as i64;
                        end_at = u64::try_from(ahead)
                            .ok()
                            .map(|ms| Instant::now() + Duration::from_millis(ms));
                    }
                }
            }
            // A poll that outlived its timeout is as transient as a 504: the next tick retries.
            Err(e) if e.is_transient() || matches!(e, JobsError::Timeout(_)) => {
                let retry_after = e.retry_after();
                if matches!(e, JobsError::Api { status: 429, .. }) {
                    inner.pause(retry_after.unwrap_or(base));
                } else {
                    let now = Instant::now();
                    let o = self.outage.get_or_insert(Outage {
                        since: now,
                        cause: String::new(),
                        last_status: None,
                    });
                    o.cause = e.cause_code().unwrap_or_else(|| e.code());
                    o.last_status = e.upstream_status().or(o.last_status);
                    if now.duration_since(o.since) >= inner.settings.max_outage {
                        let e = JobsError::Unavailable {
                            run_id: self.key.1,
                            for_ms: inner.settings.max_outage.as_millis() as u64,
                            cause: Some(o.cause.clone()),
                            last_status: o.last_status,
                        };
                        self.fail(e);
                        inner.retire(self.key);
                        return Step::Done;
                    }
                }
                delay_floor = retry_after.unwrap_or_default();
            }
            Err(e) => {
                self.fail(e);
                inner.retire(self.key);
                return Step::Done;
            }
        }
        let now = Instant::now();
        let gap = jittered(self.interval).max(delay_floor);
        self.interval = self.interval.mul_f64(BACKOFF_FACTOR).min(self.cap);
        self.due = on_tick(now + gap, base);
        if let Some(at) = end_at {
            if aim_at_end(now, gap, at) {
                self.due = at;
                self.aimed = true;
                self.interval = base;
            }
        }
        if let Some(o) = &self.outage {
            // The outage is judged at its bound, not a backed-off interval later.
            self.due = self.due.min(o.since + inner.settings.max_outage);
        }
        Step::Continue
    }

    /// The poll is over here: a holder hands the lease back at once (a follower may take over
    /// without waiting for it to lapse; after a terminal update nobody needs to).
    async fn leave_fleet(&mut self) {
        if let Role::Holder { fleet, key } = &self.role {
            fleet.release(key).await;
        }
    }
}

/// `run` (a JSON object's text) with `"started_by"` first: `who` (JSON text), or `null`.
fn with_started_by(run: &str, who: Option<&str>) -> Arc<str> {
    let who = who.unwrap_or("null");
    let Some(rest) = run.trim_start().strip_prefix('{') else {
        return Arc::from(run);
    };
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    Arc::from(format!("{{\"started_by\":{who}{sep}{rest}"))
}

/// Whether the poll after `now` should be moved to `at`, the instant the run is expected to end
/// (plus a margin): when the regular poll after the next one would already come after it. The
/// next regular poll, at most one gap before the end, would most likely find the run still
/// going; the poll at the end is the one that sees it end. After it, if the run is still going,
/// the series starts again at the base interval: the end is near. This spends no more requests
/// than the regular series when runs end when their history says, and sees their end a margin
/// after it instead of anywhere up to a whole (backed-off) interval after it.
fn aim_at_end(now: Instant, gap: Duration, at: Instant) -> bool {
    at > now && now + gap * 2 > at
}

impl Inner {
    /// Remove the poll from the map when nobody watches it any more (checked under the map's
    /// lock, which `Poller::watch` also holds while subscribing).
    fn retire_if_unwatched(&self, key: PollKey, tx: &watch::Sender<Snapshot>) -> bool {
        let mut polls = self.polls.lock().unwrap();
        if tx.receiver_count() == 0 {
            polls.remove(&key);
            true
        } else {
            false
        }
    }

    fn retire(&self, key: PollKey) {
        self.polls.lock().unwrap().remove(&key);
    }

    /// Pause every request of the engine for `d` (a 429).
    fn pause(&self, d: Duration) {
        self.counters
            .rate_limit_pauses
            .fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + d;
        let mut gate = self.gate.lock().unwrap();
        gate.paused_until = Some(gate.paused_until.map_or(until, |p| p.max(until)));
    }

    /// Wait until `due`, then past any 429 pause, then for a request slot of the rate limit.
    /// Cancel-safe: a reserved slot that is not used is given back when it is the last one.
    async fn wait_turn(&self, due: Instant) {
        sleep_until(due).await;
        loop {
            let now = Instant::now();
            let slot = {
                let mut gate = self.gate.lock().unwrap();
                match gate.paused_until {
                    Some(p) if p > now => Err(p),
                    _ => match self.spacing {
                        None => return,
                        Some(spacing) => {
                            let slot = gate.next_slot.map_or(now, |s| s.max(now));
                            gate.next_slot = Some(slot + spacing);
                            if slot <= now {
                                return;
                            }
                            Ok((slot, spacing))
                        }
                    },
                }
            };
            match slot {
                Err(paused_until) => {
                    // Spread the restart so that a pause does not end in a burst.
                    let spread = self.settings.base_interval.mul_f64(JITTER);
                    let extra = spread.mul_f64(rand::rng().random_range(0.0..=1.0));
                    sleep_until(paused_until + extra).await;
                }
                Ok((slot, spacing)) => {
                    let guard = SlotGuard {
                        gate: &self.gate,
                        slot,
                        spacing,
                        used: false,
                        waiting: &self.counters.waiting_for_turn,
                    };
                    guard.waiting.fetch_add(1, Ordering::Relaxed);
                    sleep_until(slot).await;
                    let mut guard = guard;
                    let paused = self
                        .gate
                        .lock()
                        .unwrap()
                        .paused_until
                        .is_some_and(|p| p > Instant::now());
                    if !paused {
                        guard.used = true;
                        return;
                    }
                }
            }
        }
    }
}

/// Gives a reserved rate-limit slot back when the waiter leaves without using it and nobody
/// reserved a later one.
struct SlotGuard<'a> {
    gate: &'a Mutex<Gate>,
    slot: Instant,
    spacing: Duration,
    used: bool,
    /// The engine's count of requests waiting for a turn, which this one leaves.
    waiting: &'a AtomicI64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if self.used {
            return;
        }
        if let Ok(mut gate) = self.gate.lock() {
            if gate.next_slot == Some(self.slot + self.spacing) {
                gate.next_slot = Some(self.slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A call the fake `runs/get` received.
    #[derive(Debug, Clone)]
    struct Call {
        partition: u64,
        run_id: i64,
        at: Instant,
    }

    type Script = dyn Fn(&Identity, i64, usize) -> Result<Value> + Send + Sync;

    /// A fake `runs/get`: `script(identity, run_id, n)` answers the n-th call (0-based) for
    /// that run and partition; every call is recorded.
    struct Fake {
        calls: Arc<Mutex<Vec<Call>>>,
        pending_forever: Arc<std::sync::atomic::AtomicBool>,
    }

    fn fake(
        script: impl Fn(&Identity, i64, usize) -> Result<Value> + Send + Sync + 'static,
    ) -> (Fake, FetchRun) {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let pending_forever = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (c, p) = (calls.clone(), pending_forever.clone());
        let counts: Mutex<HashMap<(u64, i64), usize>> = Mutex::default();
        let fetch: FetchRun = Arc::new(move |identity: Identity, run_id: i64| {
            let n = {
                let mut calls = c.lock().unwrap();
                let n = *counts
                    .lock()
                    .unwrap()
                    .entry((identity.partition(), run_id))
                    .and_modify(|n| *n += 1)
                    .or_insert(0);
                calls.push(Call {
                    partition: identity.partition(),
                    run_id,
                    at: Instant::now(),
                });
                n
            };
            let answer = script(&identity, run_id, n).map(|run| PolledRun::from_run(&run));
            let hang = p.load(Ordering::SeqCst);
            Box::pin(async move {
                if hang {
                    futures::future::pending::<()>().await;
                }
                answer
            })
        });
        (
            Fake {
                calls,
                pending_forever,
            },
            fetch,
        )
    }

    impl Fake {
        fn count(&self) -> usize {
            self.calls.lock().unwrap().len()
        }
        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn lcs(state: &str) -> Value {
        json!({"run_id": 1, "state": {"life_cycle_state": state}})
    }

    fn settings(base_ms: u64) -> PollSettings {
        PollSettings {
            base_interval: Duration::from_millis(base_ms),
            ..PollSettings::default()
        }
    }

    fn long() -> WatchOptions {
        WatchOptions {
            timeout: Duration::from_secs(24 * 3600),
        }
    }

    fn api(status: u16, retry_after: Option<Duration>) -> JobsError {
        JobsError::Api {
            status,
            error_code: None,
            upstream_message: "upstream says no".into(),
            retry_after,
        }
    }

    async fn collect(mut w: RunWatch) -> Vec<Result<RunUpdate>> {
        let mut out = Vec::new();
        while let Some(item) = w.next().await {
            out.push(item);
        }
        out
    }

    fn statuses(items: &[Result<RunUpdate>]) -> Vec<String> {
        items
            .iter()
            .map(|r| match r {
                Ok(u) => u.status.clone().unwrap_or_default(),
                Err(e) => format!("error: {e}"),
            })
            .collect()
    }

    /// Let every ready task run (paused clock: no time passes unless all are idle).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn engine_types_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Poller>();
        send_sync::<RunUpdate>();
        send::<RunWatch>();
        send_sync::<crate::registry::Registry>();
    }

    #[test]
    fn run_json_is_the_run_unless_an_integer_is_beyond_js_numbers() {
        let run = json!({"run_id": 9007199254740991u64, "neg": -9007199254740991i64,
                         "f": 1.5, "tasks": [{"run_id": 7}], "s": "x"});
        let update = RunUpdate::new(&PolledRun::from_run(&run), 1, 0, Arc::from("{}"));
        assert!(!update.beyond_js_numbers);
        assert_eq!(
            serde_json::from_str::<Value>(&update.run_json).unwrap(),
            run
        );
        assert_eq!(update.run(), run);
        for big in [
            json!({"run_id": 9007199254740992u64}),
            json!({"tasks": [{"run_id": 9007199254740993u64}]}),
            json!({"x": -9007199254740992i64}),
            json!({"x": u64::MAX}),
        ] {
            let update = RunUpdate::new(&PolledRun::from_run(&big), 1, 0, Arc::from("{}"));
            assert!(update.beyond_js_numbers, "{big}");
            // The text keeps every digit; only JS must not parse it with JSON.parse.
            assert_eq!(update.run(), big);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn on_update_runs_once_per_update_whatever_the_watcher_count() {
        let (_fake, fetch) = fake(|_, _, n| {
            Ok(lcs(
                ["PENDING", "PENDING", "RUNNING", "TERMINATED"][n.min(3)]
            ))
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let on_update: OnUpdate = Arc::new(move |partition, run_id, u: &RunUpdate, _| {
            assert!(!u.beyond_js_numbers);
            seen2
                .lock()
                .unwrap()
                .push((partition, run_id, u.status.clone().unwrap()));
        });
        let poller = Poller::with_hooks(
            fetch,
            settings(1000),
            PollHooks {
                on_update: Some(on_update),
                ..PollHooks::default()
            },
        );
        let watchers: Vec<_> = (0..25)
            .map(|_| {
                tokio::spawn(collect(poller.watch(
                    &Identity::ServicePrincipal,
                    5,
                    long(),
                )))
            })
            .collect();
        for w in watchers {
            assert_eq!(
                statuses(&w.await.unwrap()),
                ["PENDING", "RUNNING", "TERMINATED"]
            );
        }
        let seen = seen.lock().unwrap().clone();
        let want: Vec<_> = ["PENDING", "RUNNING", "TERMINATED"]
            .iter()
            .map(|s| (0u64, 5i64, s.to_string()))
            .collect();
        assert_eq!(seen, want);
    }

    #[tokio::test(start_paused = true)]
    async fn many_watchers_share_one_poll_and_all_get_every_update() {
        let states = ["PENDING", "RUNNING", "RUNNING", "RUNNING", "TERMINATED"];
        let (fake, fetch) = fake(move |_, _, n| Ok(lcs(states[n.min(4)])));
        let poller = Poller::new(fetch, settings(1000));
        let watchers: Vec<_> = (0..100)
            .map(|_| {
                tokio::spawn(collect(poller.watch(
                    &Identity::ServicePrincipal,
                    1,
                    long(),
                )))
            })
            .collect();
        assert_eq!(poller.active_polls(), 1);
        for w in watchers {
            let items = w.await.unwrap();
            assert_eq!(statuses(&items), ["PENDING", "RUNNING", "TERMINATED"]);
            let seqs: Vec<u64> = items.iter().map(|r| r.as_ref().unwrap().seq).collect();
            assert_eq!(seqs, [1, 2, 3]);
        }
        // One upstream request per poll, whatever the watcher count.
        assert_eq!(fake.count(), 5);
        assert_eq!(poller.active_polls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_watcher_gets_the_latest_state_at_once_without_a_fetch() {
        let (fake, fetch) = fake(|_, _, _| Ok(lcs("RUNNING")));
        let poller = Poller::new(fetch, settings(1000));
        let mut first = poller.watch(&Identity::ServicePrincipal, 1, long());
        let update = first.next().await.unwrap().unwrap();
        assert_eq!(update.status.as_deref(), Some("RUNNING"));
        assert_eq!(update.run()["run_id"], 1);
        assert!(update.timestamp > 1_600_000_000_000);
        let before = fake.count();
        let mut late = poller.watch(&Identity::ServicePrincipal, 1, long());
        let again = late.next().await.unwrap().unwrap();
        assert_eq!(again.seq, update.seq);
        assert!(Arc::ptr_eq(&again.run_json, &update.run_json));
        assert_eq!(fake.count(), before);
        assert_eq!(poller.active_watchers(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_watcher_leaving_stops_the_poll() {
        let (fake, fetch) = fake(|_, _, _| Ok(lcs("RUNNING")));
        let poller = Poller::new(fetch, settings(1000));
        let mut a = poller.watch(&Identity::ServicePrincipal, 1, long());
        let b = poller.watch(&Identity::ServicePrincipal, 1, long());
        a.next().await.unwrap().unwrap();
        drop(a);
        // One watcher left: the poll goes on.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let with_b = fake.count();
        assert!(with_b > 1, "{with_b}");
        drop(b);
        settle().await;
        assert_eq!(poller.active_polls(), 0);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(fake.count(), with_b);
    }

    #[tokio::test(start_paused = true)]
    async fn leaving_during_a_fetch_cancels_it() {
        let (fake, fetch) = fake(|_, _, _| Ok(lcs("RUNNING")));
        fake.pending_forever.store(true, Ordering::SeqCst);
        let poller = Poller::new(fetch, settings(1000));
        let mut w = poller.watch(&Identity::ServicePrincipal, 1, long());
        // The first fetch never answers; give up on it.
        let r = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
        assert!(r.is_err());
        assert_eq!(fake.count(), 1);
        drop(w);
        settle().await;
        assert_eq!(poller.active_polls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn terminal_states_end_the_watch() {
        let finals = [
            json!({"state": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}}),
            json!({"state": {"life_cycle_state": "SKIPPED"}}),
            json!({"state": {"life_cycle_state": "INTERNAL_ERROR"}}),
            json!({"status": {"state": "TERMINATED", "termination_details": {"code": "SUCCESS"}}}),
        ];
        for (i, last) in finals.into_iter().enumerate() {
            let last2 = last.clone();
            let (fake, fetch) = fake(move |_, _, n| {
                Ok(if n == 0 {
                    lcs("RUNNING")
                } else {
                    last2.clone()
                })
            });
            let poller = Poller::new(fetch, settings(1000));
            let items = collect(poller.watch(&Identity::ServicePrincipal, i as i64, long())).await;
            assert_eq!(items.len(), 2, "{last}");
            assert_eq!(items[1].as_ref().unwrap().run(), last);
            tokio::time::sleep(Duration::from_secs(120)).await;
            assert_eq!(fake.count(), 2, "{last}");
            assert_eq!(poller.active_polls(), 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_and_waiting_for_retry_states_do_not_end_it() {
        let states = [
            "WAITING_FOR_RETRY",
            "SOMETHING_NEW",
            "BLOCKED",
            "TERMINATED",
        ];
        let (_fake, fetch) = fake(move |_, _, n| Ok(lcs(states[n.min(3)])));
        let poller = Poller::new(fetch, settings(1000));
        let items = collect(poller.watch(&Identity::ServicePrincipal, 1, long())).await;
        assert_eq!(statuses(&items), states);
        // A run with no state block at all is not terminal either.
        let (_fake, fetch) = fake(move |_, _, n| {
            Ok(if n == 0 {
                json!({"run_id": 2})
            } else {
                lcs("TERMINATED")
            })
        });
        let poller = Poller::new(fetch, settings(1000));
        let items = collect(poller.watch(&Identity::ServicePrincipal, 2, long())).await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().status, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchers_timeout_ends_it_with_the_contract_message() {
        let (fake, fetch) = fake(|_, _, _| Ok(lcs("RUNNING")));
        let poller = Poller::new(fetch, settings(1000));
        let mut w = poller.watch(
            &Identity::ServicePrincipal,
            7,
            WatchOptions {
                timeout: Duration::from_millis(1500),
            },
        );
        assert_eq!(
            w.next().await.unwrap().unwrap().status.as_deref(),
            Some("RUNNING")
        );
        let err = w.next().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "Job run 7 polling timeout after 1500ms");
        assert!(matches!(
            err,
            JobsError::PollTimeout {
                run_id: 7,
                ms: 1500
            }
        ));
        assert!(w.next().await.is_none());
        assert!(w.is_finished());
        // The timed-out watcher left the poll even though it is not dropped yet.
        settle().await;
        assert_eq!(poller.active_polls(), 0);
        let n = fake.count();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(fake.count(), n);
    }

    #[tokio::test(start_paused = true)]
    async fn identical_states_are_deduplicated_and_the_interval_backs_off() {
        let (fake, fetch) = fake(|_, _, _| Ok(lcs("RUNNING")));
        let poller = Poller::new(fetch, settings(1000));
        let mut w = poller.watch(
            &Identity::ServicePrincipal,
            1,
            WatchOptions {
                timeout: Duration::from_secs(120),
            },
        );
        w.next().await.unwrap().unwrap();
        // Nothing changes for 120 s: the next item is the timeout.
        assert!(matches!(
            w.next().await,
            Some(Err(JobsError::PollTimeout { .. }))
        ));
        let calls = fake.calls();
        let gaps: Vec<f64> = calls
            .windows(2)
            .map(|p| (p[1].at - p[0].at).as_secs_f64())
            .collect();
        assert!(!gaps.is_empty());
        for g in &gaps {
            assert!(*g >= 0.8 - 1e-6 && *g <= 6.0 * 1.2 + 1e-6, "{gaps:?}");
        }
        // Capped at 6x base (+-20 %): the late gaps are all near 6 s.
        for g in gaps.iter().skip(8) {
            assert!(*g >= 6.0 * 0.8 - 1e-6, "{gaps:?}");
        }
        // Far fewer polls than one per base interval.
        assert!(calls.len() < 40, "{}", calls.len());
    }

    /// The gaps between the polls of a run that never changes: the regular series.
    async fn regular_gaps(base_ms: u64, polls: usize) -> Vec<f64> {
        let (fake, fetch) = fake(|_, _, _| Ok(lcs("RUNNING")));
        let poller = Poller::new(fetch, settings(base_ms));
        let _w = poller.watch(&Identity::ServicePrincipal, 1, long());
        while fake.count() < polls {
            tokio::time::sleep(Duration::from_millis(base_ms)).await;
        }
        let calls = fake.calls();
        calls
            .windows(2)
            .map(|p| (p[1].at - p[0].at).as_secs_f64() * 1000.0)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_gap_is_the_base_interval_then_each_grows_one_and_a_half_times() {
        // pollIntervalMs is the first gap (it was 1.5x: the interval grew before it was used);
        // then x1.5, x2.25, ... up to 6x, each +-20 % and within half a tick of it.
        for _ in 0..20 {
            let gaps = regular_gaps(100, 9).await;
            for (i, gap) in gaps.iter().enumerate() {
                let nominal = 100.0 * 1.5f64.powi(i as i32).min(6.0);
                let half_tick = 5.0;
                assert!(
                    *gap >= nominal * 0.8 - half_tick - 1e-6
                        && *gap <= nominal * 1.2 + half_tick + 1e-6,
                    "gap {i}: {gap} ms, nominal {nominal} ms: {gaps:?}"
                );
            }
        }
    }

    #[test]
    fn ticks_round_to_the_nearest_not_up() {
        let base = Duration::from_millis(100);
        let now = Instant::now();
        for ms in 0..200 {
            let due = now + Duration::from_micros(ms * 997);
            let rounded = on_tick(due, base);
            let moved = if rounded >= due {
                rounded - due
            } else {
                due - rounded
            };
            assert!(moved <= tick(base) / 2, "{moved:?}");
        }
    }

    /// History saying that the job's runs take `run_ms`.
    fn with_history(run_ms: i64) -> PollHooks {
        PollHooks {
            history: Some(Arc::new(move |_, _| {
                Some(Arc::new(History {
                    run_ms: Some(run_ms),
                    task_ms: Default::default(),
                }))
            })),
            ..PollHooks::default()
        }
    }

    /// A run that started at `start` (workspace ms) and ends `run_ms` later, read with the
    /// workspace's `Date` (whole seconds of the same clock): (the fetch, the local instants of
    /// its calls).
    fn timed_run(start: i64, run_ms: i64) -> (FetchRun, Arc<Mutex<Vec<Instant>>>) {
        let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let c = calls.clone();
        let fetch: FetchRun = Arc::new(move |_, run_id| {
            c.lock().unwrap().push(Instant::now());
            let now = now_ms();
            let ended = now >= start + run_ms;
            let mut run = json!({
                "run_id": run_id, "job_id": 7, "start_time": start,
                "state": {"life_cycle_state": if ended { "TERMINATED" } else { "RUNNING" }},
            });
            if ended {
                run["end_time"] = json!(start + run_ms);
                run["state"]["result_state"] = json!("SUCCESS");
            }
            let mut polled = PolledRun::from_run(&run);
            polled.server_time = Some(now / 1000 * 1000);
            Box::pin(async move { Ok(polled) })
        });
        (fetch, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn with_history_a_poll_is_moved_to_the_expected_end() {
        // The job's runs take 10 s. Regular series from 1 s: polls at 0, 1, 2.5, 4.75, 8.1,
        // 13.2 s (+-20 % each): the end would be seen ~3 s late, at the sixth poll. Aimed: the
        // poll that would come in the last gap before 10 s moves to 10 s + a tenth of the base
        // interval, which sees the end, in no more polls than the regular series.
        for _ in 0..10 {
            let start = now_ms();
            let began = Instant::now();
            let (fetch, calls) = timed_run(start, 10_000);
            let poller = Poller::with_hooks(fetch, settings(1000), with_history(10_000));
            let items = collect(poller.watch(&Identity::ServicePrincipal, 1, long())).await;
            assert_eq!(
                statuses(&items).last().map(String::as_str),
                Some("TERMINATED")
            );
            let calls = calls.lock().unwrap().clone();
            let last = (*calls.last().unwrap() - began).as_millis();
            assert!(
                (10_000..=10_100 + 1).contains(&last),
                "the end seen at {last} ms"
            );
            assert!(calls.len() <= 6, "{} polls", calls.len());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_past_its_expected_end_is_polled_from_the_base_interval_again() {
        // History says 10 s, the run takes 12 s: the aimed poll (~10.1 s) finds it running,
        // so the series starts again at 1 s: seen at ~12.1 s or so, not at a 6 s cap's gap.
        for _ in 0..10 {
            let start = now_ms();
            let began = Instant::now();
            let (fetch, calls) = timed_run(start, 12_000);
            let poller = Poller::with_hooks(fetch, settings(1000), with_history(10_000));
            collect(poller.watch(&Identity::ServicePrincipal, 1, long())).await;
            let calls: Vec<u128> = calls
                .lock()
                .unwrap()
                .iter()
                .map(|c| (*c - began).as_millis())
                .collect();
            assert!(
                calls.iter().any(|c| (10_100..=10_101).contains(c)),
                "{calls:?}"
            );
            // After 10.1 s: gaps of 1 s, 1.5 s (+-20 %, half a tick): the end by ~13.0 s.
            assert!(
                *calls.last().unwrap() <= 10_100 + 1_200 + 1_800 + 10,
                "{calls:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_steady_workspace_clock_nothing_is_aimed() {
        // A workspace whose Date runs ten times faster (the emulator's scaled virtual time)
        // contradicts itself: its times cannot be turned into local instants, so the regular
        // series is kept.
        let start = now_ms();
        let began = Instant::now();
        let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let c = calls.clone();
        let fetch: FetchRun = Arc::new(move |_, run_id| {
            c.lock().unwrap().push(Instant::now());
            let virtual_now = start + (now_ms() - start) * 10;
            let mut polled = PolledRun::from_run(&json!({
                "run_id": run_id, "job_id": 7, "start_time": start,
                "state": {"life_cycle_state": "RUNNING"},
            }));
            polled.server_time = Some(virtual_now / 1000 * 1000);
            Box::pin(async move { Ok(polled) })
        });
        let poller = Poller::with_hooks(fetch, settings(1000), with_history(100_000));
        let _w = poller.watch(&Identity::ServicePrincipal, 1, long());
        tokio::time::sleep(Duration::from_secs(30)).await;
        let calls: Vec<f64> = calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| (*c - began).as_secs_f64())
            .collect();
        // The regular series only: no gap shorter than 0.8 x its nominal.
        for (i, pair) in calls.windows(2).enumerate() {
            let nominal = 1.5f64.powi(i as i32).min(6.0);
            assert!(pair[1] - pair[0] >= nominal * 0.8 - 0.0051, "{calls:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_state_change_keeps_the_backoff() {
        // The interval no longer resets to base on a state change (it did before; the stock
        // plugin's loop never resets, and resetting nearly doubled the polls per run): after 10
        // polls the interval is at its 6x cap, and the poll after the change still waits about
        // 6x base (+-20 %), not 1x.
        let (fake, fetch) = fake(|_, _, n| Ok(lcs(if n < 10 { "PENDING" } else { "RUNNING" })));
        let poller = Poller::new(fetch, settings(1000));
        let mut w = poller.watch(&Identity::ServicePrincipal, 1, long());
        assert_eq!(
            w.next().await.unwrap().unwrap().status.as_deref(),
            Some("PENDING")
        );
        assert_eq!(
            w.next().await.unwrap().unwrap().status.as_deref(),
            Some("RUNNING")
        );
        tokio::time::sleep(Duration::from_secs(8)).await;
        let calls = fake.calls();
        assert!(calls.len() >= 12);
        let gap = (calls[11].at - calls[10].at).as_secs_f64();
        assert!(
            (6.0 * 0.8 - 1e-6..=6.0 * 1.2 + 1e-6).contains(&gap),
            "{gap}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_and_permanent_ones_end_every_watcher() {
        let (_fake, fetch) = fake(|_, _, n| match n {
            0 => Err(api(503, Some(Duration::from_secs(3)))),
            1 => Err(JobsError::network("ECONNRESET", "reset")),
            2 => Ok(lcs("RUNNING")),
            _ => Ok(lcs("TERMINATED")),
        });
        let poller = Poller::new(fetch, settings(1000));
        let items = collect(poller.watch(&Identity::ServicePrincipal, 1, long())).await;
        assert_eq!(statuses(&items), ["RUNNING", "TERMINATED"]);

        let (fake, fetch) = fake(|_, _, n| {
            if n == 0 {
                Ok(lcs("RUNNING"))
            } else {
                Err(api(403, None))
            }
        });
        let poller = Poller::new(fetch, settings(1000));
        let a = tokio::spawn(collect(poller.watch(
            &Identity::ServicePrincipal,
            1,
            long(),
        )));
        let b = tokio::spawn(collect(poller.watch(
            &Identity::ServicePrincipal,
            1,
            long(),
        )));
        for items in [a.await.unwrap(), b.await.unwrap()] {
            assert_eq!(items.len(), 2);
            assert!(matches!(items[1], Err(JobsError::Api { status: 403, .. })));
        }
        assert_eq!(fake.count(), 2);
        assert_eq!(poller.active_polls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_the_bound_ends_the_poll_naming_it() {
        // Connection refused, then a 503: the error names the last cause and HTTP status, and
        // it comes at the bound (2 s) although the backed-off interval would be 6 s by then.
        let (calls, fetch) = fake(|_, _, n| match n {
            0 => Ok(lcs("RUNNING")),
            1 => Err(JobsError::network("ECONNREFUSED", "refused")),
            _ => Err(api(503, None)),
        });
        let poller = Poller::new(
            fetch,
            PollSettings {
                base_interval: Duration::from_secs(1),
                max_outage: Duration::from_secs(2),
                ..PollSettings::default()
            },
        );
        let started = Instant::now();
        let items = collect(poller.watch(&Identity::ServicePrincipal, 7, long())).await;
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].as_ref().unwrap().status.as_deref(),
            Some("RUNNING")
        );
        match &items[1] {
            Err(JobsError::Unavailable {
                run_id: 7,
                for_ms: 2000,
                cause: Some(cause),
                last_status: Some(503),
            }) => assert_eq!(cause, "UPSTREAM_ERROR"),
            other => panic!("{other:?}"),
        }
        let outage_began = calls.calls()[1].at;
        let ended = outage_began + Duration::from_secs(2);
        assert!(
            Instant::now() - ended < Duration::from_millis(100),
            "ended at the bound"
        );
        assert!(started.elapsed() < Duration::from_secs(6));
        assert_eq!(poller.active_polls(), 0);

        // Failures shorter than the bound are ridden out.
        let (_fake, fetch) = fake(|_, _, n| match n {
            0 | 1 => Err(JobsError::network("ECONNREFUSED", "refused")),
            2 => Ok(lcs("RUNNING")),
            3 | 4 => Err(JobsError::network("ECONNRESET", "reset")),
            _ => Ok(lcs("TERMINATED")),
        });
        let poller = Poller::new(
            fetch,
            PollSettings {
                base_interval: Duration::from_millis(300),
                max_outage: Duration::from_secs(2),
                ..PollSettings::default()
            },
        );
        let items = collect(poller.watch(&Identity::ServicePrincipal, 8, long())).await;
        assert_eq!(statuses(&items), ["RUNNING", "TERMINATED"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_poll_of_the_engine() {
        let hit = Arc::new(Mutex::new(None::<Instant>));
        let hit2 = hit.clone();
        let (fake, fetch) = fake(move |_, run_id, n| {
            if run_id == 1 && n == 3 {
                *hit2.lock().unwrap() = Some(Instant::now());
                return Err(api(429, Some(Duration::from_secs(30))));
            }
            // A new state every poll: every poll publishes an update.
            Ok(lcs(&format!("S{n}")))
        });
        let poller = Poller::new(fetch, settings(1000));
        let watchers: Vec<_> = (1..=3)
            .map(|r| poller.watch(&Identity::ServicePrincipal, r, long()))
            .collect();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let t429 = hit.lock().unwrap().expect("the 429 was sent");
        let calls = fake.calls();
        let during: Vec<_> = calls
            .iter()
            .filter(|c| c.at > t429 && c.at < t429 + Duration::from_secs(30))
            .collect();
        assert!(during.is_empty(), "requests during the pause: {during:?}");
        for run in 1..=3 {
            assert!(
                calls.iter().any(|c| c.run_id == run && c.at < t429),
                "run {run} before"
            );
            assert!(
                calls
                    .iter()
                    .any(|c| c.run_id == run && c.at >= t429 + Duration::from_secs(30)),
                "run {run} after"
            );
        }
        drop(watchers);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_stretches_intervals_fairly() {
        let (fake, fetch) = fake(|_, _, n| Ok(lcs(&format!("S{n}"))));
        let poller = Poller::new(
            fetch,
            PollSettings {
                base_interval: Duration::from_millis(200),
                max_requests_per_second: Some(4.0),
                ..PollSettings::default()
            },
        );
        // 20 runs that each want a poll at least every 1.2 s (6x the 200 ms base, since the
        // interval keeps backing off across state changes): over 16 req/s against a limit of 4.
        let watchers: Vec<_> = (1..=20)
            .map(|r| poller.watch(&Identity::ServicePrincipal, r, long()))
            .collect();
        tokio::time::sleep(Duration::from_secs(100)).await;
        let calls = fake.calls();
        assert!(calls.len() <= 4 * 100 + 1, "{}", calls.len());
        assert!(calls.len() >= 4 * 100 * 9 / 10, "{}", calls.len());
        // Never faster than the limit over any window of one second.
        let mut times: Vec<Instant> = calls.iter().map(|c| c.at).collect();
        times.sort();
        for w in times.windows(5) {
            assert!(
                w[4] - w[0] >= Duration::from_millis(999),
                "5 requests within a second"
            );
        }
        // Fair: every run got about the same share.
        let per_run: Vec<usize> = (1..=20)
            .map(|r| calls.iter().filter(|c| c.run_id == r).count())
            .collect();
        let (min, max) = (
            *per_run.iter().min().unwrap(),
            *per_run.iter().max().unwrap(),
        );
        assert!(min > 0 && max - min <= 2, "{per_run:?}");
        drop(watchers);
    }

    #[tokio::test(start_paused = true)]
    async fn identities_never_share_a_poll() {
        let (fake, fetch) = fake(|identity, run_id, n| {
            Ok(json!({"run_id": run_id, "seen_by": identity.partition(),
                       "state": {"life_cycle_state": if n < 2 { "RUNNING" } else { "TERMINATED" }}}))
        });
        let poller = Poller::new(fetch, settings(1000));
        let alice = Identity::user("token-of-alice");
        let bob = Identity::user("token-of-bob");
        let ws = [
            (alice.partition(), poller.watch(&alice, 1, long())),
            (bob.partition(), poller.watch(&bob, 1, long())),
            (0, poller.watch(&Identity::ServicePrincipal, 1, long())),
            (alice.partition(), poller.watch(&alice, 1, long())),
        ];
        assert_eq!(poller.active_polls(), 3);
        let mut tasks = Vec::new();
        for (partition, w) in ws {
            tasks.push(tokio::spawn(async move { (partition, collect(w).await) }));
        }
        for t in tasks {
            let (partition, items) = t.await.unwrap();
            assert_eq!(statuses(&items), ["RUNNING", "TERMINATED"]);
            for item in &items {
                assert_eq!(item.as_ref().unwrap().run()["seen_by"], partition);
            }
        }
        // Two polls until terminal for each of the three identities.
        let calls = fake.calls();
        for partition in [alice.partition(), bob.partition(), 0] {
            assert_eq!(calls.iter().filter(|c| c.partition == partition).count(), 3);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn next_is_cancel_safe() {
        let (_fake, fetch) =
            fake(|_, _, n| Ok(lcs(["PENDING", "RUNNING", "TERMINATED"][n.min(2)])));
        let poller = Poller::new(fetch, settings(1000));
        let mut w = poller.watch(&Identity::ServicePrincipal, 1, long());
        let mut seen = Vec::new();
        loop {
            // Abandon `next` often; no update may be lost.
            match tokio::time::timeout(Duration::from_millis(300), w.next()).await {
                Err(_) => continue,
                Ok(Some(item)) => seen.push(item.unwrap().status.unwrap()),
                Ok(None) => break,
            }
        }
        assert_eq!(seen, ["PENDING", "RUNNING", "TERMINATED"]);
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_watched_runs() {
        let counter = Arc::new(AtomicUsize::new(0));
        let c = counter.clone();
        let (_fake, fetch) = fake(move |_, _, n| {
            c.fetch_add(1, Ordering::Relaxed);
            Ok(lcs(if n < 3 { "RUNNING" } else { "TERMINATED" }))
        });
        let poller = Poller::new(fetch, settings(5000));
        let watchers: Vec<_> = (0..10_000)
            .map(|r| poller.watch(&Identity::ServicePrincipal, r, long()))
            .collect();
        assert_eq!(poller.active_polls(), 10_000);
        let handles: Vec<_> = watchers
            .into_iter()
            .map(|w| tokio::spawn(collect(w)))
            .collect();
        for h in handles {
            assert_eq!(statuses(&h.await.unwrap()), ["RUNNING", "TERMINATED"]);
        }
        assert_eq!(counter.load(Ordering::Relaxed), 40_000);
        assert_eq!(poller.active_polls(), 0);
    }
}
