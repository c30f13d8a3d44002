#!/usr/bin/env node
// node bench/schedule-sim.mjs
//
// The poll schedules on paper: when a run's end is seen, and how many polls it took, for the
// stock plugin's series (0, base, x1.5 per gap up to 6x, +-20 %) and for ours, which moves the
// poll that would come in the last gap before the expected end (the job's median duration) to
// that end, then starts the series again at base if the run is still going (poller.rs
// `aim_at_end`). Run durations are drawn around the median (log-normal, coefficient of
// variation `cv`); 0 is a job whose runs all take the same time, as the emulator's do. No
// network, no clock: a model of the schedule only, to show what aiming does when real runs do
// not end when their history says.

let seed = 1;
function random() {
  // A small deterministic PRNG (mulberry32), so that the table is the same on every run.
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function normal() {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** When the end of a run lasting `d` is seen, and after how many polls: [lag, polls]. */
function follow(d, base, expected, aim) {
  let t = 0;
  let interval = base;
  let polls = 1;
  let aimed = false;
  for (;;) {
    const gap = Math.min(interval * (0.8 + 0.4 * random()), 6 * base);
    interval = Math.min(interval * 1.5, 6 * base);
    let next = t + gap;
    if (aim && !aimed && t < expected && t + 2 * gap > expected) {
      next = expected;
      aimed = true;
      interval = base;
    }
    t = next;
    polls++;
    if (t >= d) return [t - d, polls];
  }
}

const rows = [];
for (const [base, median, cv] of [
  [100, 400, 0],
  [100, 400, 0.1],
  [100, 400, 0.3],
  [5000, 30_000, 0.1],
  [5000, 60_000, 0.2],
  [5000, 600_000, 0.1],
  [5000, 300_000, 0.5],
]) {
  const figures = [false, true].map((aim) => {
    seed = 1;
    const lags = [];
    let polls = 0;
    const n = 4000;
    for (let i = 0; i < n; i++) {
      const d = cv > 0 ? median * Math.exp(cv * normal()) : median;
      const [lag, p] = follow(d, base, median, aim);
      lags.push(lag);
      polls += p;
    }
    lags.sort((a, b) => a - b);
    return { p50: lags[n >> 1], p90: lags[Math.floor(n * 0.9)], polls: polls / n };
  });
  const [stock, ours] = figures;
  const f = (x) => (x >= 100 ? Math.round(x).toLocaleString("en-US") : x.toFixed(1));
  rows.push(
    `| ${base} | ${median.toLocaleString("en-US")} | ${cv} | ${f(stock.p50)} / ${f(ours.p50)} (${(ours.p50 / stock.p50 || 0).toFixed(2)}) | ${f(stock.p90)} / ${f(ours.p90)} | ${stock.polls.toFixed(2)} / ${ours.polls.toFixed(2)} (${(ours.polls / stock.polls).toFixed(2)}) |`,
  );
}
process.stdout.write(
  "| pollIntervalMs | median run ms | cv | end seen after, p50 ms: stock / ours (ratio) | p90 ms: stock / ours | polls per run: stock / ours (ratio) |\n| --- | --- | --- | --- | --- | --- |\n" +
    rows.join("\n") +
    "\n",
);
