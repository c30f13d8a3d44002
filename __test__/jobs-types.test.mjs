// Type tests with the installed TypeScript: the public surface used as an app would
// (__test__/types/usage.ts), and the published declaration files checked line by line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const tsc = path.join(path.dirname(require.resolve("typescript/package.json", { paths: [root] })), "bin", "tsc");

function typecheck(project) {
  const r = spawnSync(process.execPath, [tsc, "--noEmit", "-p", path.join(root, "__test__", "types", project)], { cwd: root, encoding: "utf8" });
  assert.equal(r.status, 0, `tsc -p ${project} failed:\n${r.stdout}${r.stderr}`);
}

test("index.d.ts: the public types check with tsc --noEmit", () => typecheck("tsconfig.json"));

test("index.d.ts, lib/http.d.ts and lib/binding.d.ts check without skipLibCheck", () => typecheck("published.tsconfig.json"));

test("appkit-jobs/react: a TSX app type-checks (strict, jsx react-jsx, bundler resolution, no skipLibCheck, no @types/node)", () =>
  typecheck("react.tsconfig.json"));
