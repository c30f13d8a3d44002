//! `BindingJobs`: the core `Jobs` service of one plugin instance, seen from Node.
//! Built once (registry, client pool, cache, poller); every call only converts arguments.
//!
//! Crossing conventions (the JS runtime is the only caller):
//! - identity: `token: Option<String>`, a user's access token, or none for the service principal;
//! - run ids: `string | number | bigint` as the caller gave them, read by `ids` in the core;
//! - params: a JSON string (`JSON.stringify` keeps integers exact, napi's number conversion
//!   would turn integers above 2^32 into floats);
//! - results: `BindingOutcome` (errors as data); integers above 2^53 reach JS as `bigint`.
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use appkit_jobs_core::auth::Identity;
use appkit_jobs_core::ids;
use appkit_jobs_core::jobs::Jobs;
use appkit_jobs_core::ledger::StartedBy;
use appkit_jobs_core::poller::{RunUpdate, RunWatch};
use appkit_jobs_core::registry::PluginConfig;
use appkit_jobs_core::repair::RepairOptions;
use appkit_jobs_core::run_end::RunEnd;
use appkit_jobs_core::telemetry;
use appkit_jobs_core::JobsError;
use futures::FutureExt;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;
use std::sync::atomic::Ordering;
use tokio::sync::{Mutex, Notify};

use crate::delivery::{Delivery, Wake};
use crate::error::{
    binding_calls, catch_panic, guarded, BindingCallRecord, BindingOutcome, OutcomeData,
};
use crate::json_text::{BindingJsonText, LiveWatch};

fn identity(token: Option<String>) -> Identity {
    match token {
        Some(t) if !t.trim().is_empty() => Identity::user(&t),
        _ => Identity::ServicePrincipal,
    }
}

/// The `i64` of a run id from JS (decimal text, a number or a bigint), or the core's `InvalidRequest` for anything else.
pub fn run_id_of(id: Either3<String, f64, BigInt>) -> appkit_jobs_core::Result<i64> {
    match id {
        Either3::A(text) => ids::run_id(&text),
        Either3::B(n) => ids::from_f64(n).ok_or_else(|| ids::invalid_run_id(&n.to_string())),
        Either3::C(big) => match big.get_i64() {
            (n, true) if n > 0 => Ok(n),
            (n, _) => Err(ids::invalid_run_id(&format!("{n}n"))),
        },
    }
}

/// Keys of params a job without a schema takes from a request (`params::from_request`), for the
/// JSON Schema JS shows of such a job.
#[napi]
pub fn max_unvalidated_param_keys() -> u32 {
    appkit_jobs_core::params::MAX_UNVALIDATED_PARAM_KEYS as u32
}

/// Repair options from their JSON text (`{ rerunAllFailedTasks?, rerunTasks?, ...,
/// startedBy? }`).
fn parse_repair_options(options_json: Option<String>) -> appkit_jobs_core::Result<RepairOptions> {
    let value = match options_json {
        None => None,
        Some(text) => Some(serde_json::from_str::<Value>(&text).map_err(|e| {
            JobsError::InvalidRequest(format!("repair options are not valid JSON: {e}"))
        })?),
    };
    let mut options = RepairOptions::from_json(value.as_ref())?;
    options.started_by = value
        .as_ref()
        .and_then(|v| v.get("startedBy"))
        .and_then(StartedBy::from_json);
    Ok(options)
}

/// Who a call is recorded as starting a run: `{ email, user_id, user_name }` as JSON text (or a
/// string), from `asUser(req)`'s headers or the caller's `startedBy` option.
fn parse_started_by(json: Option<String>) -> Option<StartedBy> {
    let text = json?;
    StartedBy::from_json(&serde_json::from_str::<Value>(&text).ok()?)
}

fn parse_params(params_json: Option<String>) -> appkit_jobs_core::Result<Option<Value>> {
    match params_json {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| JobsError::InvalidRequest(format!("params are not valid JSON: {e}"))),
    }
}

/// What a watch delivers, tagged with the id JS gave it (`startAndWatch`/`watch`), as one
/// flat object: each update of the run (the terminal one included), then one event for the
/// end of the watch. An update (`update: true`) carries the run's `status`, `timestamp` and
/// `runJson`, the run's JSON text shared by every watcher of the update (updates.js parses it
/// on first read), or `run` instead when the run holds an integer beyond 2^53 (those cross as
/// `bigint`). Otherwise the watch is over: the run ended, or it failed (`error`, e.g.
/// POLL_TIMEOUT or NOT_FOUND). A cancelled watch (`cancelWatch`) delivers nothing more.
#[napi(object, object_from_js = false)]
pub struct BindingWatchEvent {
    pub watch: u32,
    pub update: bool,
    pub status: Option<String>,
    pub timestamp: Option<i64>,
    #[napi(ts_type = "string")]
    pub run_json: Option<BindingJsonText>,
    pub run: Option<Value>,
    /// `{"changes":{...},"progress":{...}}` as JSON text, shared by every watcher of the
    /// update: what moved since the previous update, and the progress summary.
    #[napi(ts_type = "string")]
    pub meta_json: Option<BindingJsonText>,
    pub error: Option<BindingOutcome>,
    /// The run's id as decimal text, on the first update.
    pub run_id: Option<String>,
    /// The repair's id as decimal text, on the first update of a repair's watch.
    pub repair_id: Option<String>,
    /// The Jobs API calls that started the watch, on its first event (telemetry on).
    pub calls: Option<Vec<BindingCallRecord>>,
}

impl BindingWatchEvent {
    fn update(watch: u32, update: &RunUpdate) -> Self {
        let (run_json, run) = if update.beyond_js_numbers {
            (None, Some(update.run()))
        } else {
            (Some(BindingJsonText::new(update.run_json.clone())), None)
        };
        BindingWatchEvent {
            watch,
            update: true,
            status: update.status.clone(),
            timestamp: Some(update.timestamp),
            run_json,
            run,
            meta_json: Some(BindingJsonText::new(update.meta_json.clone())),
            error: None,
            run_id: None,
            repair_id: None,
            calls: None,
        }
    }

    fn end(watch: u32, error: Option<BindingOutcome>) -> Self {
        BindingWatchEvent {
            watch,
            update: false,
            status: None,
            timestamp: None,
            run_json: None,
            run: None,
            meta_json: None,
            error,
            run_id: None,
            repair_id: None,
            calls: None,
        }
    }
}

/// A one-shot call started with an id (`startRunNow`) that has finished: its outcome, tagged
/// with the id JS gave it.
#[napi(object, object_from_js = false)]
#[derive(serde::Serialize)]
pub struct BindingCallDone {
    pub call: u32,
    pub outcome: BindingOutcome,
}

/// The jobs service of one plugin instance.
#[napi]
pub struct BindingJobs {
    core: Arc<Jobs>,
    delivery: Arc<Delivery<BindingWatchEvent>>,
    /// Finished one-shot calls (`startRunNow`), JS woken at once.
    done: Arc<Delivery<BindingCallDone>>,
    watches: Arc<Watches>,
}

/// The watches still going, by the id JS gave each (for `cancel_watch`). A watch leaves when
/// it ends or is cancelled. Ids rather than a JS object per watch: a napi class instance costs
/// each watch a wrapped object and a finalizer.
#[derive(Default)]
struct Watches(std::sync::Mutex<HashMap<u32, Arc<WatchInner>>>);

impl Watches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<WatchInner>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `inner` as `id` and starts delivering its events, tagged `id`.
    fn start(self: &Arc<Self>, id: u32, inner: WatchInner) {
        let inner = Arc::new(inner);
        if let Some(replaced) = self.lock().insert(id, inner.clone()) {
            // JS never reuses a live id; should it happen, the older watch must not go on
            // unreachable.
            replaced.cancel();
        }
        napi::bindgen_prelude::spawn(inner.drive(id, self.clone()));
    }

    /// Forgets `inner` as `id` (unless `id` is another watch's by now).
    fn remove(&self, id: u32, inner: &Arc<WatchInner>) {
        let mut watches = self.lock();
        if watches.get(&id).is_some_and(|w| Arc::ptr_eq(w, inner)) {
            watches.remove(&id);
        }
    }
}

impl BindingJobs {
    /// The shared core, for the other bindings over the same instance (routes).
    pub(crate) fn core(&self) -> Arc<Jobs> {
        self.core.clone()
    }

    /// One call on the core: its result as an outcome, a panic as `INTERNAL_ERROR`.
    /// With telemetry on, the outcome carries the Jobs API calls made (for spans).
    fn call<T, Fut>(&self, f: impl FnOnce(Arc<Jobs>) -> Fut) -> impl Future<Output = BindingOutcome>
    where
        T: OutcomeData,
        Fut: Future<Output = appkit_jobs_core::Result<T>>,
    {
        let traced = self.core.telemetry().enabled();
        // Boxed at once: each wrapper below (the telemetry scope, the panic guard, the task)
        // would otherwise hold the call's future inline and double it (~10 KB for a run-now,
        // ~1.2 KB boxed), copied by every move on the way to a Tokio task; and the call is built
        // on the JS thread, whose stack a test runner (or an app's framework) may already have
        // deep: a large future moved around on it made napi reject the call with `undefined`.
        let fut = Box::pin(traced_if(traced, f(self.core.clone())));
        guarded(async move {
            let (result, calls) = fut.await;
            with_calls(BindingOutcome::from(result), calls)
        })
    }
}

#[napi]
impl BindingJobs {
    /// `config`: the plugin config as JSON (camelCase; JS schemas replaced by `externalSchema: true`).
    /// `env`: the environment to read DATABRICKS_* from.
    /// A config mistake throws an error whose `code` is `CONFIG_ERROR`.
    #[napi(constructor, catch_unwind)]
    pub fn new(config: Value, env: HashMap<String, String>) -> napi::Result<Self, String> {
        let config = plugin_config(&config)?;
        let core = napi::bindgen_prelude::within_runtime_if_available(|| Jobs::new(config, env));
        Ok(BindingJobs {
            core: Arc::new(core),
            delivery: Arc::default(),
            done: Arc::new(Delivery::immediate()),
            watches: Arc::default(),
        })
    }

    /// Turns measuring on or off (JS turns it on when an OpenTelemetry SDK is registered).
    #[napi]
    pub fn set_telemetry(&self, on: bool) {
        self.core.telemetry().set_enabled(on);
    }

    /// The engine's gauges and cumulative counters, read when a metric reader collects.
    #[napi]
    pub fn engine_metrics(&self) -> BindingEngineMetrics {
        let poller = self.core.poller();
        let counters = poller.counters();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        BindingEngineMetrics {
            runs_watched: poller.active_polls() as f64,
            watchers: poller.active_watchers() as f64,
            polls: load(&counters.polls),
            updates_delivered: load(&counters.updates_delivered),
            rate_limit_pauses: load(&counters.rate_limit_pauses),
            waiting_for_turn: counters.waiting_for_turn.load(Ordering::Relaxed).max(0) as f64,
            retries: self.core.telemetry().retries() as f64,
        }
    }

    /// The Jobs API calls summed since the last take, for `jobs.api_call.*`, and the cache's
    /// hits and misses.
    #[napi]
    pub fn take_call_metrics(&self) -> BindingCallMetrics {
        let t = self.core.telemetry();
        BindingCallMetrics {
            calls: t
                .take_calls()
                .into_iter()
                .map(|(operation, success, sum)| BindingCallSum {
                    operation: operation.to_string(),
                    success,
                    count: sum.count as f64,
                    durations_ms: sum.durations_ms,
                })
                .collect(),
            cache: t
                .take_cache()
                .into_iter()
                .map(|(operation, hit, count)| BindingCacheCount {
                    operation: operation.to_string(),
                    hit,
                    count: count as f64,
                })
                .collect(),
        }
    }

    /// What the configuration got that works but is not what was asked for, to warn about.
    #[napi]
    pub fn warnings(&self) -> Vec<String> {
        self.core.warnings().to_vec()
    }

    /// Where watch events go: `wake()` is called (on the JS thread, without keeping Node alive)
    /// when events are waiting; JS then calls `takeEvents()`. Set once, before any watch.
    #[napi]
    pub fn deliver_to(&self, #[napi(ts_arg_type = "() => void")] wake: Wake) {
        self.delivery.wake_with(wake);
    }

    /// Every watch event delivered since the last call, in order.
    #[napi]
    pub fn take_events(&self) -> Vec<BindingWatchEvent> {
        self.delivery.take()
    }

    /// Every job key, sorted.
    #[napi]
    pub fn keys(&self) -> Vec<String> {
        self.core
            .registry()
            .keys()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// `{ ok: true }` for a known key, else the UNKNOWN_JOB outcome with the registry's message.
    #[napi]
    pub fn check(&self, key: String) -> BindingOutcome {
        match self.core.registry().get(&key) {
            Ok(_) => BindingOutcome::empty(),
            Err(e) => BindingOutcome::err(&e),
        }
    }

    /// Where finished one-shot calls go: `wake()` is called (on the JS thread, without keeping
    /// Node alive) as soon as one is waiting; JS then calls `takeDone()`. Set once, before any call.
    #[napi]
    pub fn deliver_done_to(&self, #[napi(ts_arg_type = "() => void")] wake: Wake) {
        self.done.wake_with(wake);
    }

    /// Every call finished since the last take, in order: as one JSON text (`[{ call, outcome }]`)
    /// unless an outcome holds an integer beyond 2^53 (then as objects, those integers as
    /// bigint). `JSON.parse` builds the batch for far less than N-API does key by key (each key
    /// interned again, each object reshaped as its properties are added one by one).
    #[napi(ts_return_type = "string | Array<BindingCallDone>")]
    pub fn take_done(&self) -> Either<String, Vec<BindingCallDone>> {
        let done = self.done.take();
        let safe = done.iter().all(|d| {
            d.outcome
                .data
                .as_ref()
                .is_none_or(appkit_jobs_core::run::js_safe)
        });
        if safe {
            if let Ok(text) = serde_json::to_string(&done) {
                return Either::A(text);
            }
        }
        Either::B(done)
    }

    /// Validates, maps and triggers, as call `call`: its outcome (data `{ run_id, number_in_job }`)
    /// comes back through `takeDone()`. `started_by_json`: who the ledger records (`{ email,
    /// user_id, user_name }`), else the service principal. A promise per call would cost a threadsafe function,
    /// an environment cleanup hook and a deferred each; here every call shares the service's
    /// one wake-up. JS keeps the process alive while the call is out.
    #[napi]
    pub fn start_run_now(
        &self,
        call: u32,
        key: String,
        token: Option<String>,
        params_json: Option<String>,
        started_by_json: Option<String>,
    ) {
        let run = self.call(move |core| async move {
            let params = parse_params(params_json)?;
            let by = parse_started_by(started_by_json);
            core.run_now_by(&key, &identity(token), params, by).await
        });
        let done = self.done.clone();
        napi::bindgen_prelude::spawn(async move {
            let outcome = run.await;
            done.push(BindingCallDone { call, outcome });
        });
    }

    /// data: the JSON Schema of a job whose parameters come from its definition (jobs/get
    /// `settings.parameters`), or undefined for any other job.
    #[napi(catch_unwind)]
    pub async fn defined_params_schema(
        &self,
        key: String,
        token: Option<String>,
    ) -> BindingOutcome {
        self.call(
            move |core| async move { core.defined_params_schema(&key, &identity(token)).await },
        )
        .await
    }

    /// data: the newest run, or undefined when there is none.
    #[napi(catch_unwind)]
    pub async fn last_run(&self, key: String, token: Option<String>) -> BindingOutcome {
        self.call(move |core| async move { core.last_run(&key, &identity(token)).await })
            .await
    }

    /// data: runs, newest first; `limit` clamped to 1..=100 (default 20). With `started_by`,
    /// only the runs the ledger says that person started (matched on email, user id or name).
    #[napi(catch_unwind)]
    pub async fn list_runs(
        &self,
        key: String,
        token: Option<String>,
        limit: Option<i64>,
        started_by: Option<String>,
    ) -> BindingOutcome {
        self.call(move |core| async move {
            let id = identity(token);
            match started_by {
                Some(who) => Box::pin(core.list_runs_started_by(&key, &id, &who, limit)).await,
                None => Box::pin(core.list_runs(&key, &id, limit)).await,
            }
        })
        .await
    }

    /// The routes' checks of a request's params (`params::from_request`), for other callers
    /// that take params from outside the app (the agent tools): `{ ok: true, data: params |
    /// undefined }` (`{}` is none), or `{ ok: false, code: "VALIDATION_ERROR", message }` with
    /// the 400's message.
    #[napi]
    pub fn check_request_params(&self, key: String, params_json: Option<String>) -> BindingOutcome {
        let checked = parse_params(params_json).and_then(|params| {
            let entry = self.core.registry().get(&key)?;
            appkit_jobs_core::params::from_request(entry, params).map_err(|detail| {
                JobsError::Validation {
                    key: key.clone(),
                    detail,
                }
            })
        });
        match checked {
            Ok(params) => BindingOutcome::from(Ok::<_, JobsError>(params)),
            Err(e) => BindingOutcome::err(&e),
        }
    }

    /// The ledger: where it lives, whether its database answers, its counters.
    #[napi]
    pub fn ledger_status(&self) -> BindingLedgerStatus {
        BindingLedgerStatus::from(self.core.ledger().status())
    }

    /// The ledger's log lines since the last call (the database going away, coming back).
    #[napi]
    pub fn take_ledger_logs(&self) -> Vec<BindingLogLine> {
        let ledger = self
            .core
            .ledger()
            .take_logs()
            .into_iter()
            .map(|l| BindingLogLine {
                warn: l.warn,
                message: l.message,
            });
        let ends = self
            .core
            .run_ends()
            .take_logs()
            .into_iter()
            .map(|(warn, message)| BindingLogLine { warn, message });
        ledger.chain(ends).collect()
    }

    /// The app's run-end handlers: `handler(end)` is called for each run started or repaired
    /// through the plugin whose job has `onRunEnd`, once it has ended (see `run_end.rs`); it
    /// resolves to null when the app's handler succeeded, else to the error's text. The
    /// function is held weakly (it never keeps Node alive); set once.
    #[napi(ts_args_type = "handler: (end: BindingRunEnd) => Promise<string | null>")]
    pub fn on_run_end(&self, handler: RunEndCallback) {
        let handler = Arc::new(handler);
        let run_ends = self.core.run_ends().clone();
        let handler: appkit_jobs_core::run_end::RunEndHandler = Arc::new(move |end: RunEnd| {
            let handler = handler.clone();
            async move {
                let arg = BindingRunEnd {
                    job_key: end.job_key,
                    run_id: end.run_id as f64,
                    repair_id: end.repair_id as f64,
                    run_json: end.run_json.to_string(),
                };
                let promise = handler
                    .call_async(arg)
                    .await
                    .map_err(|e| format!("the handler could not be called: {}", e.status))?;
                match promise.await {
                    Ok(None) => Ok(()),
                    Ok(Some(error)) => Err(error),
                    Err(e) => Err(e.reason.clone()),
                }
            }
            .boxed()
        });
        // Within the runtime: with a database, setting the handler starts the sweep's task.
        napi::bindgen_prelude::within_runtime_if_available(move || run_ends.set_handler(handler));
    }

    /// What the run-end handlers did since start: `{ fired, failures, givenUp }`.
    #[napi]
    pub fn run_end_metrics(&self) -> BindingRunEndMetrics {
        let c = &self.core.run_ends().counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        BindingRunEndMetrics {
            fired: load(&c.fired),
            failures: load(&c.failures),
            given_up: load(&c.given_up),
        }
    }

    /// Resolves true once the ledger's database is up, false after `within_ms` (or without a
    /// database). A start may wait for it a little; nothing depends on it.
    #[napi(catch_unwind)]
    pub async fn ledger_ready(&self, within_ms: u32) -> bool {
        let core = self.core.clone();
        core.ledger()
            .ready(std::time::Duration::from_millis(u64::from(within_ms)))
            .await
    }

    #[napi(catch_unwind)]
    pub async fn get_run(
        &self,
        key: String,
        token: Option<String>,
        run_id: Either3<String, f64, BigInt>,
    ) -> BindingOutcome {
        self.call(move |core| async move {
            core.get_run(&key, &identity(token), run_id_of(run_id)?)
                .await
        })
        .await
    }

    #[napi(catch_unwind)]
    pub async fn get_run_output(
        &self,
        key: String,
        token: Option<String>,
        run_id: Either3<String, f64, BigInt>,
    ) -> BindingOutcome {
        self.call(move |core| async move {
            core.get_run_output(&key, &identity(token), run_id_of(run_id)?)
                .await
        })
        .await
    }

    #[napi(catch_unwind)]
    pub async fn get_job(&self, key: String, token: Option<String>) -> BindingOutcome {
        self.call(move |core| async move { core.get_job(&key, &identity(token)).await })
            .await
    }

    #[napi(catch_unwind)]
    pub async fn cancel_run(
        &self,
        key: String,
        token: Option<String>,
        run_id: Either3<String, f64, BigInt>,
    ) -> BindingOutcome {
        self.call(move |core| async move {
            core.cancel_run(&key, &identity(token), run_id_of(run_id)?)
                .await
        })
        .await
    }

    /// data: `{ repair_id }`. `options_json`: `{ rerunAllFailedTasks?, rerunTasks?,
    /// rerunDependentTasks?, params? }` as JSON text.
    #[napi(catch_unwind)]
    pub async fn repair_run(
        &self,
        key: String,
        token: Option<String>,
        run_id: Either3<String, f64, BigInt>,
        options_json: Option<String>,
    ) -> BindingOutcome {
        self.call(move |core| async move {
            let options = parse_repair_options(options_json)?;
            core.repair_run(&key, &identity(token), run_id_of(run_id)?, options)
                .await
        })
        .await
    }

    /// `repairAndWait` as one cancellable watch, `id`: repairs the run (options as for
    /// `repairRun`), then follows it to its new end; the first update carries `repairId`.
    #[napi]
    pub fn start_repair_and_watch(
        &self,
        id: u32,
        key: String,
        token: Option<String>,
        run_id: Either3<String, f64, BigInt>,
        options_json: Option<String>,
    ) {
        let state = match (run_id_of(run_id), parse_repair_options(options_json)) {
            (Ok(run_id), Ok(options)) => WatchState::Repair {
                core: self.core.clone(),
                key,
                identity: identity(token),
                run_id,
                options,
            },
            (Err(e), _) | (_, Err(e)) => WatchState::Failed(e),
        };
        self.watches
            .start(id, WatchInner::new(state, self.delivery.clone()));
    }

    /// `runAndWait` as one cancellable watch, `id`: triggers the run (params as for
    /// `runNow`), then follows it, delivering events tagged `id`. `cancelWatch(id)` while the
    /// run-now is in flight drops it, so no retry is sent after an abort. A failed trigger's
    /// message is `JobsError::trigger_message`.
    #[napi]
    pub fn start_and_watch(
        &self,
        id: u32,
        key: String,
        token: Option<String>,
        params_json: Option<String>,
        started_by_json: Option<String>,
    ) {
        let state = WatchState::Start {
            core: self.core.clone(),
            key,
            identity: identity(token),
            params_json,
            started_by: parse_started_by(started_by_json),
        };
        self.watches
            .start(id, WatchInner::new(state, self.delivery.clone()));
    }

    /// A watch, `id`, over a run of `key`: verifies that the run belongs to the job, then
    /// joins the shared poll, delivering events tagged `id`.
    #[napi]
    pub fn watch(
        &self,
        id: u32,
        key: String,
        token: Option<String>,
        run_id: Either3<String, f64, BigInt>,
    ) {
        let state = match run_id_of(run_id) {
            Ok(run_id) => WatchState::Pending {
                core: self.core.clone(),
                key,
                identity: identity(token),
                run_id,
            },
            Err(e) => WatchState::Failed(e),
        };
        self.watches
            .start(id, WatchInner::new(state, self.delivery.clone()));
    }

    /// Ends watch `id`: nothing more is delivered for it (no end event), and its share of the
    /// poll is dropped. Unknown or finished ids are ignored.
    #[napi]
    pub fn cancel_watch(&self, id: u32) {
        let watch = self.watches.lock().remove(&id);
        if let Some(watch) = watch {
            watch.cancel();
        }
    }
}

enum WatchState {
    /// `start_and_watch`: run-now first, then `Active`.
    Start {
        core: Arc<Jobs>,
        key: String,
        identity: Identity,
        params_json: Option<String>,
        started_by: Option<StartedBy>,
    },
    /// `start_repair_and_watch`: runs/repair first, then `Active`.
    Repair {
        core: Arc<Jobs>,
        key: String,
        identity: Identity,
        run_id: i64,
        options: RepairOptions,
    },
    Pending {
        core: Arc<Jobs>,
        key: String,
        identity: Identity,
        run_id: i64,
    },
    Active {
        watch: RunWatch,
    },
    Failed(JobsError),
    Done,
}

struct WatchInner {
    state: Mutex<WatchState>,
    /// Counted among the live watches while it lives (whether run texts are lent or copied).
    _live: LiveWatch,
    /// Cancels the driver. `notify_one` keeps the wake-up for a driver that is not waiting on
    /// it yet, so a cancelled driver stops at its next step whenever the cancel came.
    on_cancel: Notify,
    delivery: Arc<Delivery<BindingWatchEvent>>,
}

/// How a watch started: its run, and the calls that started it.
struct Started {
    run_id: i64,
    repair_id: Option<i64>,
    calls: Option<Vec<BindingCallRecord>>,
}

/// One step of a watch.
enum Step {
    /// An update; the first one also names the run and (telemetry on) the Jobs API calls that
    /// started the watch.
    Update(RunUpdate, Option<Started>),
    /// The run ended (its terminal update was the last step).
    End,
    Failed(BindingOutcome),
}

/// `fut`'s output, and the Jobs API calls it made when `traced`.
async fn traced_if<F: Future>(traced: bool, fut: F) -> (F::Output, Option<Vec<BindingCallRecord>>) {
    if traced {
        let (out, calls) = telemetry::collect(fut).await;
        (out, binding_calls(calls))
    } else {
        (fut.await, None)
    }
}

fn with_calls(
    mut outcome: BindingOutcome,
    calls: Option<Vec<BindingCallRecord>>,
) -> BindingOutcome {
    outcome.calls = calls;
    outcome
}

impl WatchInner {
    fn new(state: WatchState, delivery: Arc<Delivery<BindingWatchEvent>>) -> WatchInner {
        WatchInner {
            state: Mutex::new(state),
            _live: LiveWatch::new(),
            on_cancel: Notify::new(),
            delivery,
        }
    }

    async fn step(&self) -> Step {
        // The lock is never contended (one driver per watch); cancellation does not need it
        // (the driver drops this future when `on_cancel` fires).
        let mut state = self.state.lock().await;
        let mut calls = None;
        let mut started_run = None;
        let mut repair_id = None;
        match std::mem::replace(&mut *state, WatchState::Done) {
            WatchState::Pending {
                core,
                key,
                identity,
                run_id,
            } => {
                // Boxed: the ownership read's future is large (HTTP client state) and would
                // otherwise stay inline in the watch's driver for the whole watch.
                let traced = core.telemetry().enabled();
                let checked = Box::pin(traced_if(traced, core.watch_run(&key, &identity, run_id)));
                let (checked, made) = checked.await;
                calls = made;
                match checked {
                    Ok(watch) => {
                        started_run = Some(watch.run_id());
                        *state = WatchState::Active { watch }
                    }
                    Err(e) => return Step::Failed(with_calls(BindingOutcome::err(&e), calls)),
                }
            }
            WatchState::Start {
                core,
                key,
                identity,
                params_json,
                started_by,
            } => {
                let traced = core.telemetry().enabled();
                let started = match parse_params(params_json) {
                    Ok(params) => {
                        let start = core.start_and_watch_by(&key, &identity, params, started_by);
                        let (started, made) = Box::pin(traced_if(traced, start)).await;
                        calls = made;
                        started
                    }
                    Err(e) => Err(e),
                };
                match started {
                    Ok(watch) => {
                        started_run = Some(watch.run_id());
                        *state = WatchState::Active { watch }
                    }
                    Err(e) => {
                        let mut outcome = BindingOutcome::err(&e);
                        outcome.message = Some(e.trigger_message());
                        return Step::Failed(with_calls(outcome, calls));
                    }
                }
            }
            WatchState::Repair {
                core,
                key,
                identity,
                run_id,
                options,
            } => {
                let traced = core.telemetry().enabled();
                let repair = core.repair_and_watch(&key, &identity, run_id, options);
                let (repaired, made) = Box::pin(traced_if(traced, repair)).await;
                calls = made;
                match repaired {
                    Ok((repair, watch)) => {
                        started_run = Some(watch.run_id());
                        repair_id = Some(repair);
                        *state = WatchState::Active { watch }
                    }
                    Err(e) => return Step::Failed(with_calls(BindingOutcome::err(&e), calls)),
                }
            }
            WatchState::Failed(e) => return Step::Failed(BindingOutcome::err(&e)),
            WatchState::Done => return Step::End,
            active => *state = active,
        }
        let WatchState::Active { watch, .. } = &mut *state else {
            return Step::End;
        };
        match watch.next().await {
            // The job's cached reads were dropped once for every watcher when the shared poll
            // published this update (see `Jobs::new`).
            Some(Ok(update)) => {
                let started = started_run.map(|run_id| Started {
                    run_id,
                    repair_id,
                    calls,
                });
                Step::Update(update, started)
            }
            Some(Err(e)) => {
                *state = WatchState::Done;
                Step::Failed(with_calls(BindingOutcome::err(&e), calls))
            }
            None => {
                *state = WatchState::Done;
                Step::End
            }
        }
    }

    /// Steps until the watch is over, delivering each step as an event tagged `id`. A cancelled
    /// watch stops at once and delivers nothing more (JS has already finished it).
    async fn drive(self: Arc<Self>, id: u32, watches: Arc<Watches>) {
        loop {
            let step = tokio::select! {
                biased;
                _ = self.on_cancel.notified() => break,
                step = catch_panic(self.step()) => step.unwrap_or_else(|p| Step::Failed(p.into())),
            };
            // After a terminal update the next step is the end (the poll is over).
            let (event, last) = match step {
                Step::Update(update, started) => {
                    let mut event = BindingWatchEvent::update(id, &update);
                    if let Some(started) = started {
                        event.run_id = Some(started.run_id.to_string());
                        event.repair_id = started.repair_id.map(|r| r.to_string());
                        event.calls = started.calls;
                    }
                    (event, false)
                }
                Step::End => (BindingWatchEvent::end(id, None), true),
                Step::Failed(outcome) => (BindingWatchEvent::end(id, Some(outcome)), true),
            };
            self.delivery.push(event);
            if last {
                break;
            }
        }
        watches.remove(id, &self);
        // Leave the shared poll now, also when `step` was dropped holding the lock.
        *self.state.lock().await = WatchState::Done;
    }

    /// Stops the watch at once: its driver delivers nothing more.
    fn cancel(&self) {
        self.on_cancel.notify_one();
        if let Ok(mut state) = self.state.try_lock() {
            *state = WatchState::Done;
        }
    }
}

/// What the ledger is doing (`ledger::LedgerStatus`); never a credential.
#[napi(object)]
pub struct BindingLedgerStatus {
    /// `"memory"` or `"postgres"`.
    pub store: String,
    pub up: bool,
    pub listening: bool,
    /// `host:port/database`.
    pub database: Option<String>,
    pub schema_version: i32,
    /// `"lakebase"`, `"password"` or `"none"`.
    pub credentials: String,
    pub credentials_minted: f64,
    pub operations: f64,
    pub errors: f64,
    pub last_error: Option<String>,
    pub backlog: u32,
    pub dropped: f64,
    pub remembered: u32,
    pub instance: String,
}

impl From<appkit_jobs_core::ledger::LedgerStatus> for BindingLedgerStatus {
    fn from(s: appkit_jobs_core::ledger::LedgerStatus) -> Self {
        BindingLedgerStatus {
            store: s.store.into(),
            up: s.up,
            listening: s.listening,
            database: s.database,
            schema_version: s.schema_version,
            credentials: s.credentials.into(),
            credentials_minted: s.credentials_minted as f64,
            operations: s.operations as f64,
            errors: s.errors as f64,
            last_error: s.last_error,
            backlog: s.backlog as u32,
            dropped: s.dropped as f64,
            remembered: s.remembered as u32,
            instance: s.instance,
        }
    }
}

/// A run that ended, for the app's `onRunEnd` handler: its job, the run, the repair (0 for the
/// run itself) and the run's final state as JSON text (parsed in JS).
#[napi(object)]
pub struct BindingRunEnd {
    pub job_key: String,
    pub run_id: f64,
    pub repair_id: f64,
    pub run_json: String,
}

/// What the run-end handlers did since start.
#[napi(object)]
pub struct BindingRunEndMetrics {
    pub fired: f64,
    pub failures: f64,
    pub given_up: f64,
}

/// `(end) => Promise<string | null>`, held weakly.
pub type RunEndCallback = napi::threadsafe_function::ThreadsafeFunction<
    BindingRunEnd,
    Promise<Option<String>>,
    BindingRunEnd,
    Status,
    false,
    true,
>;

/// A line for the app's log.
#[napi(object)]
pub struct BindingLogLine {
    pub warn: bool,
    pub message: String,
}

/// The engine's gauges (now) and counters (since start).
#[napi(object)]
pub struct BindingEngineMetrics {
    pub runs_watched: f64,
    pub watchers: f64,
    pub polls: f64,
    pub updates_delivered: f64,
    pub rate_limit_pauses: f64,
    pub waiting_for_turn: f64,
    pub retries: f64,
}

#[napi(object)]
pub struct BindingCallSum {
    pub operation: String,
    pub success: bool,
    pub count: f64,
    pub durations_ms: Vec<f64>,
}

#[napi(object)]
pub struct BindingCacheCount {
    pub operation: String,
    pub hit: bool,
    pub count: f64,
}

#[napi(object)]
pub struct BindingCallMetrics {
    pub calls: Vec<BindingCallSum>,
    pub cache: Vec<BindingCacheCount>,
}

/// A registered job as the registry sees it, for AppKit's static resource requirements and
/// the setup log (which run before, or without, a service).
#[napi(object)]
pub struct BindingDiscoveredJob {
    pub key: String,
    /// `DATABRICKS_JOB_<KEY>`, or `DATABRICKS_JOB_ID` for the single-job `default` key.
    pub env_var: String,
    /// The job id as a decimal string, or `null` when none valid is configured.
    pub job_id: Option<String>,
    /// The id comes from the config's `jobId`, so the env var is not needed.
    pub id_from_config: bool,
}

/// The plugin config from JS, or a `CONFIG_ERROR` naming the option that is wrong.
fn plugin_config(config: &Value) -> napi::Result<PluginConfig, String> {
    PluginConfig::from_json(config).map_err(|e| napi::Error::new(e.code(), e.to_string()))
}

/// Job discovery alone: the same rules as the service, without building a client or poller.
#[napi(catch_unwind)]
pub fn discover_jobs(
    config: Value,
    env: HashMap<String, String>,
) -> napi::Result<Vec<BindingDiscoveredJob>, String> {
    let config = plugin_config(&config)?;
    let registry = appkit_jobs_core::registry::Registry::new(&env, &config);
    Ok(registry
        .entries()
        .map(|entry| BindingDiscoveredJob {
            key: entry.key.clone(),
            env_var: entry.env_var.clone(),
            job_id: entry.job_id.map(|id| id.to_string()),
            id_from_config: entry.config.job_id.is_some(),
        })
        .collect())
}
