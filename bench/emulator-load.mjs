// Capacity of the bundled Jobs API emulator: memory per run in flight and requests per second.
//
//   node --expose-gc bench/emulator-load.mjs [--runs 10000] [--duration 10] [--connections 64]
//   node bench/emulator-load.mjs --serve [--runs 10000]     # keep it up for an external load generator
//
// 1. Starts the emulator in this process (the server runs on the addon's tokio threads), with a
//    job whose runs never finish, and records the process RSS.
// 2. Creates --runs runs over HTTP (run-now), so that many are in flight, and records RSS again:
//    the difference divided by the run count is the memory per run.
// 3. Drives a keep-alive load for --duration seconds over --connections connections: 70% runs/get
//    of a random run, 20% runs/list (active_only, limit 25), 10% run-now. Prints req/s, latency
//    percentiles and errors. The load generator shares the machine with the server, so the figure is
//    a floor; with --serve the script prints commands for autocannon (`npx autocannon`) or wrk
//    (`apt-get install wrk`) instead, and waits for Ctrl-C.
// Not a test: nothing here asserts on speed.
import http from "node:http";
import { startEmulator } from "appkit-jobs/emulator";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RUNS = opt("runs", 10_000);
const DURATION_S = opt("duration", 10);
const CONNECTIONS = opt("connections", 64);
const SERVE = args.includes("--serve");

const mb = (b) => (b / 1024 / 1024).toFixed(1);
const gc = () => globalThis.gc?.();

const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });

function request(emu, method, path, body) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        host: "127.0.0.1",
        port: emu.port,
        method,
        path,
        agent,
        headers: {
          authorization: `Bearer ${emu.token}`,
          ...(payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {}),
        },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString() }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

async function pool(n, concurrency, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : 0;
}

const JOB_ID = 42;
gc();
const rss0 = process.memoryUsage().rss;
const emu = await startEmulator({
  jobs: [{ id: JOB_ID, name: "long", taskType: "notebook", queueMs: 0, pendingMs: 0, durationMs: 1e12 }],
  requestLogLimit: 1000,
});
gc();
const rss1 = process.memoryUsage().rss;

const ids = new Array(RUNS);
const t0 = performance.now();
await pool(RUNS, 32, async (i) => {
  const r = await request(emu, "POST", "/api/2.2/jobs/run-now", { job_id: JOB_ID, notebook_params: { i: String(i) } });
  if (r.status !== 200) throw new Error(`run-now answered ${r.status}: ${r.text}`);
  ids[i] = JSON.parse(r.text).run_id;
});
const createS = (performance.now() - t0) / 1000;
gc();
const rss2 = process.memoryUsage().rss;
const active = await request(emu, "GET", `/api/2.2/jobs/runs/list?job_id=${JOB_ID}&active_only=true&limit=1`);

console.log(`emulator ${emu.url}`);
console.log(`runs created: ${RUNS} in ${createS.toFixed(2)} s (${Math.round(RUNS / createS)} run-now/s), all active: ${JSON.parse(active.text).has_more}`);
console.log(`RSS: ${mb(rss0)} MB before start, ${mb(rss1)} MB started, ${mb(rss2)} MB with ${RUNS} runs in flight`);
console.log(`memory per run in flight: ~${Math.round((rss2 - rss1) / RUNS)} bytes (RSS delta, includes the JS side's garbage)`);

if (SERVE) {
  const getUrl = `${emu.url}/api/2.2/jobs/runs/get?run_id=${ids[Math.floor(RUNS / 2)]}`;
  console.log("\nServing until Ctrl-C. Load it from another shell, e.g.:");
  console.log(`  npx autocannon -c ${CONNECTIONS} -d ${DURATION_S} -H "Authorization: Bearer ${emu.token}" "${getUrl}"`);
  console.log(`  wrk -t2 -c${CONNECTIONS} -d${DURATION_S}s -H "Authorization: Bearer ${emu.token}" "${getUrl}"`);
  const keepAlive = setInterval(() => {}, 1 << 30);
  process.once("SIGINT", async () => {
    clearInterval(keepAlive);
    await emu.stop();
    process.exit(0);
  });
} else {
  const latencies = [];
  const counts = { get: 0, list: 0, runNow: 0 };
  let errors = 0;
  const end = performance.now() + DURATION_S * 1000;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < end) {
        const roll = Math.random();
        const t = performance.now();
        let r;
        if (roll < 0.7) {
          counts.get++;
          r = await request(emu, "GET", `/api/2.2/jobs/runs/get?run_id=${ids[Math.floor(Math.random() * RUNS)]}`);
        } else if (roll < 0.9) {
          counts.list++;
          r = await request(emu, "GET", `/api/2.2/jobs/runs/list?job_id=${JOB_ID}&active_only=true&limit=25`);
        } else {
          counts.runNow++;
          r = await request(emu, "POST", "/api/2.2/jobs/run-now", { job_id: JOB_ID });
        }
        latencies.push(performance.now() - t);
        if (r.status !== 200) errors++;
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  const total = latencies.length;
  console.log(`\nload: ${CONNECTIONS} keep-alive connections for ${elapsed.toFixed(1)} s (generator in the same process)`);
  console.log(`  requests: ${total} (${counts.get} runs/get, ${counts.list} runs/list, ${counts.runNow} run-now), errors: ${errors}`);
  console.log(`  throughput: ${Math.round(total / elapsed)} req/s`);
  console.log(
    `  latency ms: p50 ${percentile(latencies, 50).toFixed(2)}, p90 ${percentile(latencies, 90).toFixed(2)}, p99 ${percentile(latencies, 99).toFixed(2)}, max ${latencies.at(-1)?.toFixed(2)}`,
  );
  console.log(`  process CPU: ${((cpu.user + cpu.system) / 1e6 / elapsed).toFixed(2)} cores (server + generator)`);
  gc();
  console.log(`  RSS after load: ${mb(process.memoryUsage().rss)} MB, runs: ${emu.runCount()}`);
  agent.destroy();
  await emu.stop();
}
