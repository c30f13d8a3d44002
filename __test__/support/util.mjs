// Small helpers of the tests: waiting, draining run updates, seeded randomness. Not a test file.
import { STATUS_CODES } from "node:http";

export { STATUS_CODES };

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` holds (every 10 ms); throws after `ms` so a test never hangs. */
export async function until(cond, ms = 10_000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await sleep(10);
  }
}

/** Drains an async iterator of run updates: `{ updates, error }`. */
export async function drain(iterable) {
  const updates = [];
  try {
    for await (const u of iterable) updates.push(u);
    return { updates, error: null };
  } catch (error) {
    return { updates, error };
  }
}

/** Last life-cycle state of a list of updates or SSE message events. */
export function lastState(items) {
  const last = items.at(-1);
  const run = last?.run ?? last?.data?.run;
  return run?.state?.life_cycle_state ?? null;
}

/** A small seeded PRNG (mulberry32), so generated inputs are reproducible. */
export function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (items) => items[Math.floor(next() * items.length)],
    bool: (p = 0.5) => next() < p,
  };
}

/** Whether a run is in a terminal state (either state block). */
export function isTerminalRun(run) {
  const s = run?.state?.life_cycle_state;
  return s === "TERMINATED" || s === "SKIPPED" || s === "INTERNAL_ERROR" || run?.status?.state === "TERMINATED";
}
