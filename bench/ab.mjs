// Interleaved A/B runs of the benchmark: `node bench/ab.mjs --a=DIR [--b=DIR] [--a-addon=F]
// [--b-addon=F] [--a-env=NAME=VALUE] [--b-env=NAME=VALUE] [--rounds=3] [--only=wait,waitmulti]
// [--pace=fast] [--quick]`. DIR is a checkout with its own release addon built
// (`npm run build`), e.g. a `git worktree` of an older commit; B defaults to this checkout. Each
// round runs A then B (then B then A in the next round, so neither side always goes first), with
// this checkout's bench/ copied into A and one emulator addon (B's) for both sides, and the
// medians of "ours" are printed per row: CPU ms per watched run, RSS per watcher KB, upstream
// requests per run, and updates per run. `--a-env`/`--b-env` add one variable to that side's
// environment, to compare a switch within one build (`--a=. --b=.`).
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const option = (name, fallback) => argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback;
const A = path.resolve(option("a", ""));
const B = path.resolve(option("b", path.join(HERE, "..")));
const ROUNDS = Number(option("rounds", "3"));
const ONLY = option("only", "wait,waitmulti");
/** `--a-env=NAME=VALUE`: that side's environment, with the one variable added. */
const envOf = (side) => {
  const spec = argv.find((a) => a.startsWith(`--${side}-env=`))?.slice(`--${side}-env=`.length);
  if (!spec) return process.env;
  const eq = spec.indexOf("=");
  return { ...process.env, [spec.slice(0, eq)]: spec.slice(eq + 1) };
};
if (!option("a")) {
  process.stderr.write("Usage: node bench/ab.mjs --a=DIR [--b=DIR] [--rounds=3] [--only=wait,waitmulti] [--quick]\n");
  process.exit(2);
}

const addonOf = (dir) => {
  const file = fs.readdirSync(path.join(dir, "lib")).find((f) => /^appkit-jobs\..+\.node$/.test(f));
  if (!file) throw new Error(`no addon in ${dir}/lib: run npm run build there`);
  return path.join(dir, "lib", file);
};
/** The addons measured (`--a-addon`, `--b-addon`: copies kept apart, so that builds meanwhile change nothing). */
const addons = { A: path.resolve(option("a-addon", "") || addonOf(A)), B: path.resolve(option("b-addon", "") || addonOf(B)) };
const emulatorAddon = addons.B;
if (A !== B) {
  fs.rmSync(path.join(A, "bench", "lib"), { recursive: true, force: true });
  execFileSync("cp", ["-r", path.join(B, "bench", "lib"), path.join(A, "bench", "lib")]);
  fs.copyFileSync(path.join(B, "bench", "run.mjs"), path.join(A, "bench", "run.mjs"));
}

function runOnce(dir, addon, env) {
  const args = [path.join(dir, "bench", "run.mjs"), `--only=${ONLY}`, "--sides=ours", `--addon=${addon}`, `--emulator-addon=${emulatorAddon}`];
  if (argv.includes("--quick")) args.push("--quick");
  if (option("pace")) args.push(`--pace=${option("pace")}`);
  const r = spawnSync(process.execPath, args, { cwd: dir, env, stdio: ["ignore", "ignore", "inherit"] });
  if (r.status !== 0) throw new Error(`bench in ${dir} failed (${r.status})`);
  const latest = JSON.parse(fs.readFileSync(path.join(dir, "bench", "results", "latest.json"), "utf8"));
  const rows = {};
  for (const row of [...(latest.results.wait ?? []), ...(latest.results.waitMulti ?? [])]) {
    const r = row.ours?.result;
    if (!r) continue;
    const label = `${row.jobKey ?? "bench"} x${row.n}`;
    rows[label] = {
      cpuMsPerRun: r.cpuMs / r.n,
      rssPerWatcherKb: (Math.max(r.peakRss, r.maxRss) - r.baselineRss) / 1024 / r.n,
      upstreamPerRun: row.ours.upstream.total / Math.max(1, r.started),
      updatesPerRun: r.updates / Math.max(1, r.started),
      cpuUsPerRequest: (r.cpuMs * 1000) / Math.max(1, row.ours.upstream.total),
      finished: `${r.finished}/${r.n}`,
    };
  }
  const rn = latest.results.runNow;
  if (rn) {
    const cpu = (m) => m.result.cpuMs / m.result.n;
    rows.runNow = { oursCpuMs: cpu(rn.ours), stockCpuMs: cpu(rn.stock), oursOverStock: cpu(rn.ours) / cpu(rn.stock) };
  }
  for (const row of latest.results.sse ?? []) {
    const per = (m) => m.result.cpuMs / row.count;
    const [o, st, f] = [per(row.ours), per(row.stock), per(row.floor)];
    rows[`sse x${row.count}`] = { oursCpuMs: o, stockCpuMs: st, floorCpuMs: f, oursOverStock: o / st, share: (o - f) / (st - f) };
  }
  return rows;
}

const samples = { A: [], B: [] };
for (let i = 0; i < ROUNDS; i++) {
  const order = i % 2 === 0 ? ["A", "B"] : ["B", "A"];
  for (const side of order) {
    process.stderr.write(`[ab] round ${i + 1}/${ROUNDS}: ${side}\n`);
    samples[side].push(runOnce(side === "A" ? A : B, addons[side], envOf(side.toLowerCase())));
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
const fmt = (x, d) => (Number.isFinite(x) ? x.toFixed(d) : "-");
const labels = Object.keys(samples.B[0] ?? {});
const lines = [
  `A = ${A}, B = ${B}, ${ROUNDS} interleaved rounds, medians (all samples in brackets)`,
  "",
  "| row | metric | A | B | B ÷ A |",
  "| --- | --- | --- | --- | --- |",
];
for (const label of labels) {
  const metrics = [["cpuMsPerRun", 3], ["rssPerWatcherKb", 2], ["upstreamPerRun", 2], ["updatesPerRun", 2], ["cpuUsPerRequest", 1], ["oursCpuMs", 3], ["stockCpuMs", 3], ["floorCpuMs", 3], ["oursOverStock", 2], ["share", 2]];
  for (const [metric, digits] of metrics.filter(([m]) => samples.B[0]?.[label]?.[m] !== undefined)) {
    const a = samples.A.map((s) => s[label]?.[metric]).filter(Number.isFinite);
    const b = samples.B.map((s) => s[label]?.[metric]).filter(Number.isFinite);
    const all = (xs) => xs.map((x) => fmt(x, digits)).join(", ");
    lines.push(`| ${label} | ${metric} | ${fmt(median(a), digits)} [${all(a)}] | ${fmt(median(b), digits)} [${all(b)}] | ${fmt(median(b) / median(a), 2)} |`);
  }
}
const out = lines.join("\n");
process.stdout.write(out + "\n");
fs.mkdirSync(path.join(B, "bench", "results"), { recursive: true });
fs.writeFileSync(path.join(B, "bench", "results", "ab.md"), out + "\n");
