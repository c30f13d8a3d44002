"use strict";
// The async iterator behind runAndWait, watchRun and repairAndWait (`RunUpdates`), and the
// updates it yields.
const { errorFromOutcome } = require("./errors.js");

const DONE = Object.freeze({ done: true, value: undefined });

/** An id from its decimal text: a number, or a bigint beyond 2^53 (as run ids cross). */
function idValue(text) {
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : BigInt(text);
}

/**
 * `{ status, timestamp, run, progress, changes }` for one update. The run comes as JSON text
 * shared by every watcher of the update (V8's parser beats building it key by key through
 * N-API), or as a value when it holds integers beyond 2^53 (those arrive as bigint); `progress`
 * and `changes` come as one more shared text. Each text is parsed on first read: a consumer that
 * only looks at `status` never pays for them. The fields stay own enumerable properties
 * (spread, `JSON.stringify` and deep equality see them) and are writable.
 */
function runUpdate(update, repairId) {
  const value = { status: update.status ?? undefined, timestamp: update.timestamp, run: update.run, progress: undefined, changes: undefined };
  if (repairId !== undefined) value.repairId = repairId;
  const text = update.runJson;
  if (typeof text === "string") {
    Object.defineProperty(value, RUN_TEXT, { value: text, writable: true });
    Object.defineProperty(value, "run", LAZY_RUN);
  }
  if (typeof update.metaJson === "string") {
    Object.defineProperty(value, META_TEXT, { value: update.metaJson, writable: true });
    Object.defineProperty(value, "progress", LAZY_META.progress);
    Object.defineProperty(value, "changes", LAZY_META.changes);
  }
  return value;
}

/** The run's JSON text of an update whose `run` is not parsed yet (not enumerable: spread and deep equality do not see it). */
const RUN_TEXT = Symbol("runText");
/** The `{ changes, progress }` JSON text of an update, until one of them is read. */
const META_TEXT = Symbol("metaText");

/**
 * One accessor pair shared by every update (per-update closures would cost each update its own
 * functions, context and hidden class): it reads the text from the update it is called on.
 */
const LAZY_RUN = {
  enumerable: true,
  configurable: true,
  get() {
    const run = JSON.parse(this[RUN_TEXT]);
    settle(this, "run", run);
    this[RUN_TEXT] = undefined; // the text is no longer needed
    return run;
  },
  set(run) {
    settle(this, "run", run);
    this[RUN_TEXT] = undefined;
  },
};

/** `progress` and `changes`: reading either parses the text once and settles both. */
function lazyMeta(name) {
  return {
    enumerable: true,
    configurable: true,
    get() {
      const meta = settleMeta(this);
      return meta[name];
    },
    set(value) {
      settleMeta(this);
      settle(this, name, value);
    },
  };
}

const LAZY_META = { progress: lazyMeta("progress"), changes: lazyMeta("changes") };

function settleMeta(update) {
  const meta = JSON.parse(update[META_TEXT]);
  settle(update, "progress", meta.progress);
  settle(update, "changes", meta.changes);
  update[META_TEXT] = undefined;
  return meta;
}

function settle(update, name, value) {
  Object.defineProperty(update, name, { value, writable: true, enumerable: true, configurable: true });
}

/**
 * The iterators following each AbortSignal, under one "abort" listener per signal: an
 * EventTarget scans its listeners on every add and remove, so a listener per iterator would
 * make N iterators sharing one signal (an app-wide shutdown signal) cost O(N^2).
 */
const abortFollowers = new WeakMap();

function onAbort(signal, updates) {
  let followers = abortFollowers.get(signal);
  if (followers === undefined) {
    const set = new Set();
    const listener = () => {
      abortFollowers.delete(signal);
      for (const follower of set) follower._abort();
    };
    followers = { set, listener };
    abortFollowers.set(signal, followers);
    signal.addEventListener("abort", listener, { once: true });
  }
  followers.set.add(updates);
}

function offAbort(signal, updates) {
  const followers = abortFollowers.get(signal);
  if (followers === undefined || !followers.set.delete(updates) || followers.set.size > 0) return;
  // The last follower left: a long-lived signal keeps no listener of ours.
  abortFollowers.delete(signal);
  signal.removeEventListener("abort", followers.listener);
}

/**
 * The async iterator of runAndWait/watchRun (an AsyncGenerator look-alike). `prepare()` does
 * what must happen in JS before the native side may act (params validated by a JS schema) and
 * resolves to `launch(id)`, which starts native watch `id` (or to null: nothing to start). The
 * first `next()` prepares, then launches unless the iterator finished meanwhile: a `return()`
 * or abort while params are validated sends nothing. From then on the native watch's from then on its events (each update, then the end or an error)
 * are pushed here in order and handed to `next()` calls, first come first served. Unlike a
 * native async generator, `return()` does not wait behind a pending `next()`: it cancels the
 * native watch and resolves every pending `next()` with `{ done: true }` at once. An aborted
 * `signal` does the same. Errors (trigger failure, POLL_TIMEOUT, NOT_FOUND) reject `next()`
 * once; the iterator is then done.
 */
class RunUpdates {
  #rt;
  #prepare;
  #signal;
  #started = false;
  #done = false;
  /**
   * The id of this iterator's registration in the runtime and of its native watch, from the
   * first next() until the watch ends or is cancelled; 0 otherwise.
   */
  #id = 0;
  /** An error to reject the next next() with, once (the instance shut down between reads). */
  #error = null;
  /** Events delivered before a next() asked for them. */
  #events = [];
  /** next() calls waiting for an event: `{ resolve, reject }`. */
  #waiters = [];
  /** The repair a repairAndWait follows (from its first update), else undefined. */
  #repairId = undefined;
  /** With telemetry on: `{ operation, attributes, parent, wait }` (the wait's span); else null. */
  #trace = null;

  /** `traceAs`: `{ operation, attributes }` naming the wait for telemetry. */
  constructor(rt, prepare, signal, traceAs) {
    this.#rt = rt;
    this.#prepare = prepare;
    this.#signal = signal ?? undefined;
    // The wait's span belongs where runAndWait()/watchRun() was called, not where next() is.
    const parent = traceAs ? rt.telemetry.currentContext() : undefined;
    if (parent !== undefined) this.#trace = { ...traceAs, parent, wait: null };
    if (this.#signal) {
      if (this.#signal.aborted) this.#done = true;
      else onAbort(this.#signal, this);
    }
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  next() {
    if (this.#events.length > 0) {
      const event = this.#events.shift();
      return new Promise((resolve, reject) => this.#answer(event, resolve, reject));
    }
    if (this.#error !== null) {
      const error = this.#error;
      this.#error = null;
      return Promise.reject(error);
    }
    if (this.#done) return Promise.resolve(DONE);
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      this.#rt._hold();
      if (!this.#started) this.#begin();
    });
  }

  async return(value) {
    this.#finish();
    return { done: true, value };
  }

  async throw(error) {
    this.#finish();
    throw error;
  }

  /** The signal aborted. */
  _abort() {
    this.#finish();
  }

  /**
   * The instance shuts down: a waiting next() rejects with `error`, or else the next one does;
   * the iterator is done after that.
   */
  _shutDown(error) {
    if (this.#done) return;
    if (this.#waiters.length > 0) return this.#fail(error);
    this.#trace?.wait?.end(error);
    this.#finish();
    this.#error = error;
  }

  /** An event of the native watch (from the runtime's dispatch). */
  _receive(event) {
    if (this.#done) return;
    if (event.repairId != null) this.#repairId = idValue(event.repairId);
    const wait = this.#trace?.wait;
    if (wait) {
      if (event.calls) wait.started(event.calls);
      if (event.runId) wait.runId(event.runId, event.repairId);
      if (event.update) wait.update(event.status);
      else wait.end(event.error == null ? null : errorFromOutcome(event.error));
    }
    // The native watch is over: forget it now, so that an iterator nobody reads to its end is
    // not kept alive by the runtime.
    if (!event.update) this.#leave(false);
    if (this.#waiters.length === 0) {
      this.#events.push(event);
      return;
    }
    const waiter = this.#waiters.shift();
    this.#rt._release();
    this.#answer(event, waiter.resolve, waiter.reject);
  }

  async #begin() {
    this.#started = true;
    if (this.#trace) this.#trace.wait = this.#rt.telemetry.wait(this.#trace.operation, this.#trace.attributes, this.#trace.parent);
    // Registered while preparing already, so that the runtime's close() reaches it.
    this.#id = this.#rt._register(this);
    let launch;
    try {
      launch = await this.#prepare();
    } catch (error) {
      return this.#fail(error);
    }
    // return(), an abort or a shutdown came while preparing: nothing is sent.
    if (this.#done) return;
    if (launch == null) return this.#finish();
    launch(this.#id);
  }

  /** Forgets the native watch, cancelling it first when it may still be going. */
  #leave(cancel) {
    if (this.#id === 0) return;
    if (cancel) this.#rt.native.cancelWatch(this.#id);
    this.#rt._unregister(this.#id);
    this.#id = 0;
  }

  /** Settles one next() with `event`; an error or the end finishes the iterator. */
  #answer(event, resolve, reject) {
    if (event.update) return resolve({ done: false, value: runUpdate(event, this.#repairId) });
    this.#finish();
    if (event.error != null) reject(errorFromOutcome(event.error));
    else resolve(DONE);
  }

  /** Rejects the oldest waiting next() with `error` and finishes. */
  #fail(error) {
    this.#trace?.wait?.end(error);
    const waiter = this.#waiters.shift();
    if (waiter) this.#rt._release();
    this.#finish();
    waiter?.reject(error);
  }

  #finish() {
    if (this.#done && this.#id === 0 && this.#waiters.length === 0) return;
    this.#done = true;
    this.#trace?.wait?.end(null);
    this.#events.length = 0;
    if (this.#signal) offAbort(this.#signal, this);
    this.#leave(true);
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) {
      this.#rt._release();
      waiter.resolve(DONE);
    }
  }
}

if (typeof Symbol.asyncDispose === "symbol") {
  RunUpdates.prototype[Symbol.asyncDispose] = async function () {
    await this.return();
  };
}

module.exports = { RunUpdates };
