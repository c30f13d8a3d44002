// The package as a consumer gets it: `npm run package` (scripts/package.mjs) packs the main
// package and this machine's platform package; they are installed into an empty project with no
// cargo on the PATH and no network (npm --offline), then the package is required and imported,
// a strict TypeScript consumer type-checks against it, and a job runs to its end on the bundled
// emulator. A package.json that breaks consumers (an install script that builds, a missing
// file, a wrong export) fails here. Then, with React, its types and appkit-ui beside it, a TSX
// page using appkit-jobs/react type-checks (strict, jsx react-jsx), bundles with esbuild, and
// renders on the server in Node.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const TSC = path.join(ROOT, "node_modules", "typescript", "bin", "tsc");

/** PATH without any folder that holds cargo or rustc: a consumer has no Rust toolchain. */
function pathWithoutRust() {
  return (process.env.PATH ?? "")
    .split(path.delimiter)
    .filter((dir) => dir && !["cargo", "rustc"].some((tool) => fs.existsSync(path.join(dir, tool))))
    .join(path.delimiter);
}

function run(cmd, args, options) {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 600_000, ...options });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test("packed tarballs install offline without Rust, load from CJS and ESM, type-check, run a job, and build a React page on appkit-jobs/react", async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "appkit-jobs-consumer-"));
  t.after(() => fs.rmSync(work, { recursive: true, force: true }));
  const dist = path.join(work, "dist");
  run(process.execPath, [path.join(ROOT, "scripts", "package.mjs"), "--out", dist], { cwd: ROOT });
  const tarballs = fs.readdirSync(dist).map((f) => path.join(dist, f));
  assert.equal(tarballs.length, 2, tarballs.join(", "));

  // The main package is JS and types only; the platform package is one .node.
  const listing = (tgz) => run("tar", ["-tzf", tgz]).trim().split("\n");
  const main = tarballs.find((f) => /appkit-jobs-\d/.test(path.basename(f)));
  const mainFiles = listing(main);
  assert.ok(mainFiles.includes("package/lib/index.js") && mainFiles.includes("package/index.d.ts"), mainFiles.join("\n"));
  for (const file of ["dist/plugins/jobs/manifest.json", "lib/manifest.json", "lib/react/index.mjs", "lib/react/hooks.mjs", "lib/react/index.d.mts", "lib/react/hooks.d.mts", "LICENSE", "CHANGELOG.md"]) {
    assert.ok(mainFiles.includes(`package/${file}`), `${file} in ${mainFiles.join("\n")}`);
  }
  assert.deepEqual(mainFiles.filter((f) => /\.(node|rs)$|Cargo\./.test(f)), []);
  const platform = tarballs.find((f) => f !== main);
  assert.deepEqual(listing(platform).filter((f) => f.endsWith(".node")).length, 1);
  // The license travels with every package (Apache-2.0 asks for its text to).
  assert.ok(listing(platform).includes("package/LICENSE"), listing(platform).join("\n"));
  // A plain `npm pack` of the clone keeps this machine's own binary, so it works on its own.
  const [plain] = JSON.parse(run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: ROOT }));
  assert.equal(plain.files.filter((f) => /^lib\/[^/]+\.node$/.test(f.path)).length, 1, plain.files.map((f) => f.path).join("\n"));
  assert.ok(plain.files.some((f) => f.path === "LICENSE"), "npm pack carries the LICENSE");

  const app = path.join(work, "app");
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "commonjs" }));
  const env = { ...process.env, PATH: pathWithoutRust(), npm_config_audit: "false", npm_config_fund: "false", npm_config_update_notifier: "false" };
  assert.equal(spawnSync("cargo", ["--version"], { env }).error?.code, "ENOENT", "cargo must not be reachable");
  const started = performance.now();
  run("npm", ["install", "--offline", "--no-package-lock", main, platform], { cwd: app, env });
  const installSeconds = (performance.now() - started) / 1000;
  t.diagnostic(`consumer install: ${installSeconds.toFixed(1)} s`);
  // Seconds in practice; anything near a minute means it compiled or went to the network.
  assert.ok(installSeconds < 60, `install took ${installSeconds.toFixed(1)} s`);
  const installed = JSON.parse(fs.readFileSync(path.join(app, "node_modules", "appkit-jobs", "package.json"), "utf8"));
  assert.equal(installed.scripts, undefined, "the published manifest runs nothing on install");

  // CommonJS and ESM, and a job run to its end on the bundled emulator.
  const cjs = `
    const { startEmulator, createJobs, jobs, JobsError } = require("appkit-jobs");
    const { createJobsHandler } = require("appkit-jobs/http");
    (async () => {
      if (typeof jobs !== "function" || typeof createJobsHandler !== "function" || typeof JobsError !== "function") throw new Error("exports");
      const emu = await startEmulator({ timeScale: 200 });
      const api = createJobs({}, { env: { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "1001" } });
      const states = [];
      for await (const u of api("etl").runAndWait()) states.push(u.status);
      await emu.stop();
      console.log(JSON.stringify(states));
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const states = JSON.parse(run(process.execPath, ["-e", cjs], { cwd: app, env }));
  assert.equal(states.at(-1), "TERMINATED");
  const esm = `
    import { startEmulator, createJobs } from "appkit-jobs";
    import { startEmulator as fromSubpath } from "appkit-jobs/emulator";
    const emu = await fromSubpath({ timeScale: 200 });
    const api = createJobs({}, { env: emu.env() });
    console.log(JSON.stringify({ same: startEmulator === fromSubpath, keys: api.keys.length > 0 }));
    await emu.stop();`;
  assert.deepEqual(JSON.parse(run(process.execPath, ["--input-type=module", "-e", esm], { cwd: app, env })), { same: true, keys: true });

  // A strict TypeScript consumer (module nodenext) against the installed declarations.
  fs.writeFileSync(
    path.join(app, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { strict: true, module: "nodenext", moduleResolution: "nodenext", target: "ES2022", noEmit: true, skipLibCheck: false, types: ["node"], typeRoots: [path.join(ROOT, "node_modules", "@types")] },
      files: ["main.ts"],
    }),
  );
  fs.writeFileSync(
    path.join(app, "main.ts"),
    `import { createJobs, jobs, startEmulator, type ExecutionResult, type RunNowResponse } from "appkit-jobs";
import { createJobsHandler } from "appkit-jobs/http";
async function main(): Promise<void> {
  const emu = await startEmulator({ timeScale: 200 });
  const api = createJobs({ jobs: { etl: { taskType: "notebook" } } }, { env: emu.env() });
  const started: ExecutionResult<RunNowResponse> = await api("etl").runNow({ day: "2025-01-01" });
  if (started.ok) console.log(started.data.run_id);
  for await (const u of api("etl").runAndWait()) console.log(u.status, u.run.run_id);
  const handler = createJobsHandler({ jobs: { etl: {} } });
  handler.close();
  const plugin = jobs({ pollIntervalMs: 1000 });
  console.log(plugin.name);
  await emu.stop();
}
void main();
`,
  );
  run(process.execPath, [TSC, "-p", app], { cwd: app, env });

  // The main entry loads no React (nor appkit-ui): a server never pays for the UI half.
  const loaded = run(process.execPath, ["-e", `require("appkit-jobs"); require("appkit-jobs/http"); console.log(JSON.stringify(Object.keys(require.cache).filter((f) => /node_modules[\\/](react|react-dom|@databricks)[\\/]/.test(f))))`], { cwd: app, env });
  assert.deepEqual(JSON.parse(loaded), []);

  // appkit-jobs/react in a React app. Its peers come from this checkout's node_modules, linked
  // into the app: \`npm ci\` caches tarballs but not the registry's metadata, so an offline
  // install could not resolve their dependencies' version ranges. Linked packages resolve their
  // own dependencies from where they really are, as tsc and esbuild follow links.
  for (const name of ["react", "react-dom", "@types/react", "@databricks/appkit-ui"]) {
    const target = path.join(app, "node_modules", name);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.symlinkSync(path.join(ROOT, "node_modules", name), target);
  }
  const web = path.join(app, "web");
  fs.mkdirSync(web);
  fs.writeFileSync(
    path.join(web, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { strict: true, jsx: "react-jsx", module: "esnext", moduleResolution: "bundler", target: "ES2022", lib: ["ES2022", "DOM", "DOM.Iterable"], noEmit: true, skipLibCheck: false, types: [] },
      files: ["app.tsx"],
    }),
  );
  fs.writeFileSync(
    path.join(web, "app.tsx"),
    `import { JobPanel, JobRunButton, JobRunTimeline, useJob, useJobRuns, type UseJobResult } from "appkit-jobs/react";
type Config = { jobs: { etl: { taskType: "notebook"; params: { readonly "~standard": { readonly version: 1; readonly vendor: "x"; readonly types?: { readonly input: { day: string }; readonly output: unknown }; readonly validate: (v: unknown) => { value: Record<string, unknown> } } } } } };
export function App() {
  const etl: UseJobResult<{ day: string }> = useJob<Config, "etl">("etl");
  const runs = useJobRuns("etl", { limit: 5 });
  // @ts-expect-error day is a string
  void etl.start({ day: 1 });
  return (
    <main>
      <JobRunButton job={etl} params={{ day: "2025-01-01" }} />
      <JobRunTimeline job={etl} />
      <p>{runs.runs.length} runs, {etl.progress ? Math.round(etl.progress.fraction * 100) : 0}%</p>
      <JobPanel jobKey="etl" limit={3} />
    </main>
  );
}
`,
  );
  run(process.execPath, [TSC, "-p", web], { cwd: web, env });

  // Bundled as a Vite app would take it (plain ESM, no JSX in the package), for the browser...
  const esbuild = await import("esbuild");
  const bundle = await esbuild.build({
    absWorkingDir: web,
    entryPoints: [path.join(web, "app.tsx")],
    bundle: true,
    format: "esm",
    platform: "browser",
    jsx: "automatic",
    write: false,
    logLevel: "silent",
    define: { "process.env.NODE_ENV": '"production"' },
  });
  assert.deepEqual(bundle.errors, []);
  const js = bundle.outputFiles[0].text;
  assert.match(js, /run-timeline/);
  assert.ok(js.length > 50_000, `${js.length} bytes`);
  // ...and for Node: the page imported without window or document, and rendered on the server
  // (appkit-ui's own files only load through a bundler, so it is bundled; React stays external).
  const ssr = path.join(web, "ssr.mjs");
  await esbuild.build({
    absWorkingDir: web,
    entryPoints: [path.join(web, "app.tsx")],
    bundle: true,
    format: "esm",
    platform: "node",
    jsx: "automatic",
    external: ["react", "react-dom"],
    banner: { js: 'import { createRequire } from "node:module"; const require = createRequire(import.meta.url);' },
    outfile: ssr,
    logLevel: "silent",
  });
  const html = run(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { createElement } from "react";
       import { renderToString } from "react-dom/server";
       const hooks = await import("appkit-jobs/react/hooks");
       if (typeof hooks.useJob !== "function") throw new Error("hooks");
       const { App } = await import("./ssr.mjs");
       if (typeof window !== "undefined" || typeof document !== "undefined") throw new Error("a DOM");
       console.log(renderToString(createElement(App)));`,
    ],
    { cwd: web, env },
  );
  assert.match(html, /data-testid="job-panel"/);
  assert.match(html, /data-job="etl"/);
});
