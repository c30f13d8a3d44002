// Runs the type test (__test__/types/usage.ts against index.d.ts) with the installed TypeScript.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

test("index.d.ts: the public types check with tsc --noEmit", () => {
  const tsc = path.join(path.dirname(require.resolve("typescript/package.json", { paths: [root] })), "bin", "tsc");
  const r = spawnSync(process.execPath, [tsc, "--noEmit", "-p", path.join(root, "__test__", "types")], {
    cwd: root,
    encoding: "utf8",
  });
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`);
});
