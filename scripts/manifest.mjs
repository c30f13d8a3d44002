#!/usr/bin/env node
// The AppKit plugin manifest's source is lib/manifest.json (the plugin loads it from there);
// AppKit's CLI (`appkit plugin sync`) looks for it at dist/plugins/jobs/manifest.json of an
// installed package. This puts a copy there: run by `prepare` and `prepack`, by
// scripts/package.mjs (which packs with --ignore-scripts) and by the tests that link the
// checkout. dist/plugins/ is generated, so `rm -rf dist` loses nothing.
//
//   node scripts/manifest.mjs [DIR]   (DIR: the package folder, default this checkout)
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** Writes `<dir>/dist/plugins/jobs/manifest.json` from this checkout's lib/manifest.json; returns its path. */
export function placeManifest(dir = ROOT) {
  const target = path.join(dir, "dist", "plugins", "jobs", "manifest.json");
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.copyFileSync(path.join(ROOT, "lib", "manifest.json"), target);
  return target;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  placeManifest(process.argv[2] ? path.resolve(process.argv[2]) : ROOT);
}
