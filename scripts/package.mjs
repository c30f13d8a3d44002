#!/usr/bin/env node
// npm run package [-- --linux | --all | --platform P] [-- --out DIR]
//
// Writes npm tarballs to dist/ (or --out): the main package (JS, types, README, CHANGELOG, LICENSE,
// the AppKit plugin manifest; no Rust sources, no .node) and one platform package per binary,
// each holding only its `.node` (and the LICENSE).
//
// - Default: the platform package of this machine, from its release build (target/release). The
//   build is reused as it is; it is rebuilt (`npm run build`) only when a Rust source is newer.
// - --linux: the four Linux packages (x64/arm64, glibc/musl) from npm/<platform>/, where
//   scripts/build-linux.sh puts its cross builds (glibc builds pinned to 2.28).
// - --all: every platform of package.json `napi.targets`, from npm/<platform>/ (the release
//   workflow downloads each runner's build there).
// - --platform P: the one platform package P, from npm/P/.
//
// The main package's manifest gets `optionalDependencies` on every platform package of
// package.json `napi.targets`, at this version, as `napi pre-publish` would write them.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { placeManifest } from "./manifest.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const { platformName, supportedPlatforms, tripleToPlatform } = require("../lib/native.js");
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"));
const BINARY = pkg.napi.binaryName;
const LINUX = ["linux-x64-gnu", "linux-arm64-gnu", "linux-x64-musl", "linux-arm64-musl"];

const args = process.argv.slice(2);
const all = args.includes("--all");
const platformIndex = args.indexOf("--platform");
const only = platformIndex >= 0 ? args[platformIndex + 1] : undefined;
const linux = args.includes("--linux");
const outIndex = args.indexOf("--out");
const OUT = path.resolve(ROOT, outIndex >= 0 ? args[outIndex + 1] : "dist");
fs.mkdirSync(OUT, { recursive: true });

function run(cmd, cmdArgs, options = {}) {
  const r = spawnSync(cmd, cmdArgs, { cwd: ROOT, encoding: "utf8", ...options });
  if (r.status !== 0) throw new Error(`${cmd} ${cmdArgs.join(" ")} failed (${r.status}):\n${r.stdout ?? ""}${r.stderr ?? ""}`);
  return r.stdout;
}

/** The newest modification time among the Rust sources and build files. */
function newestSource() {
  let newest = 0;
  const visit = (p) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) visit(path.join(p, e));
    else newest = Math.max(newest, st.mtimeMs);
  };
  for (const p of ["Cargo.toml", "Cargo.lock", "build.rs", "src", "crates/core/src", "crates/core/Cargo.toml", "crates/emulator/src", "crates/emulator/Cargo.toml"]) {
    visit(path.join(ROOT, p));
  }
  return newest;
}

/** This machine's release build (`napi build --release` output, never a debug build), rebuilt only when missing or older than its sources. */
function hostBinary() {
  const lib = { darwin: "libappkit_jobs.dylib", win32: "appkit_jobs.dll" }[process.platform] ?? "libappkit_jobs.so";
  const triple = pkg.napi.targets.find((t) => tripleToPlatform(t) === platformName());
  if (!triple) throw new Error(`${platformName()} is not in package.json napi.targets`);
  const file = path.join(process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(ROOT, "target"), triple, "release", lib);
  if (fs.existsSync(file) && fs.statSync(file).mtimeMs >= newestSource()) {
    console.log(`reusing ${path.relative(ROOT, file)}`);
  } else {
    console.log("building the release addon (npm run build)...");
    run("npm", ["run", "build"], { stdio: "inherit" });
  }
  return file;
}

/** npm pack of `dir` into OUT; returns the tarball's path. */
function pack(dir) {
  const [info] = JSON.parse(run("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", OUT], { cwd: dir }));
  return path.join(OUT, info.filename);
}

/**
 * A platform package staged in a temporary folder: its own files, the license text (npm packs a
 * LICENSE wherever it lies) and the main package's `repository` once it names one (publishing
 * with provenance checks it in every package).
 */
function stagePlatform(dir) {
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), "appkit-jobs-platform-"));
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  for (const file of [...manifest.files, "README.md"]) {
    if (fs.existsSync(path.join(dir, file))) fs.copyFileSync(path.join(dir, file), path.join(stage, file));
  }
  fs.copyFileSync(path.join(ROOT, "LICENSE"), path.join(stage, "LICENSE"));
  fs.writeFileSync(path.join(stage, "package.json"), `${JSON.stringify({ ...manifest, repository: pkg.repository }, null, 2)}\n`);
  return stage;
}

/** The main package staged in a temporary folder: the `files` of package.json but binaries, and a manifest for consumers. */
function stageMain() {
  const [listing] = JSON.parse(run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"]));
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), "appkit-jobs-pack-"));
  for (const { path: file } of listing.files) {
    // The binaries go in the platform packages; a local `npm pack` keeps this machine's own.
    if (file === "package.json" || file.endsWith(".node")) continue;
    fs.mkdirSync(path.join(stage, path.dirname(file)), { recursive: true });
    fs.copyFileSync(path.join(ROOT, file), path.join(stage, file));
  }
  // Packed with --ignore-scripts: place AppKit's copy of the plugin manifest here.
  placeManifest(stage);
  const { scripts: _scripts, devDependencies: _dev, ...manifest } = pkg;
  manifest.optionalDependencies = Object.fromEntries(supportedPlatforms().map((p) => [`${pkg.name}-${p}`, pkg.version]));
  fs.writeFileSync(path.join(stage, "package.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  return stage;
}

const prebuilt = all || linux || only !== undefined;
const platforms = only ? [only] : all ? supportedPlatforms() : linux ? LINUX : [platformName()];
const tarballs = [];
for (const platform of platforms) {
  const dir = path.join(ROOT, "npm", platform);
  if (!fs.existsSync(path.join(dir, "package.json"))) throw new Error(`no npm/${platform}/package.json (run \`npx napi create-npm-dirs\`)`);
  const target = path.join(dir, `${BINARY}.${platform}.node`);
  if (!prebuilt) fs.copyFileSync(hostBinary(), target);
  else if (!fs.existsSync(target)) throw new Error(`npm/${platform}/${BINARY}.${platform}.node is missing (scripts/build-linux.sh builds the Linux ones)`);
  const stage = stagePlatform(dir);
  try {
    tarballs.push(pack(stage));
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}
const stage = stageMain();
try {
  tarballs.unshift(pack(stage));
} finally {
  fs.rmSync(stage, { recursive: true, force: true });
}
for (const t of tarballs) console.log(`${path.relative(ROOT, t)}  ${(fs.statSync(t).size / 1024).toFixed(0)} kB`);
