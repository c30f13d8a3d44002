// The React page of the demo, built on its first request (see server.mjs): demo/react/main.jsx bundled with
// esbuild (appkit-jobs/react, React and appkit-ui's primitives in one file), and the page's CSS
// compiled by Tailwind from appkit-ui's stylesheet, as an AppKit app's Vite build would do.
// Both tools are devDependencies: nothing here needs the network.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

/** `{ js, css }` of the page (strings). Throws when esbuild is missing; css is "" without Tailwind. */
export async function buildReactPage({ log = () => {} } = {}) {
  const esbuild = await import("esbuild");
  const result = await esbuild.build({
    entryPoints: [join(here, "main.jsx")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    jsx: "automatic",
    minify: true,
    write: false,
    logLevel: "silent",
    define: { "process.env.NODE_ENV": '"production"' },
  });
  const js = result.outputFiles[0].text;
  let css = "";
  try {
    css = await compileCss();
  } catch (err) {
    log(`appkit-jobs demo: the React page's CSS could not be built (${err.message}); serving it unstyled`);
  }
  return { js, css };
}

async function compileCss() {
  const { compile } = require("@tailwindcss/node");
  const { Scanner } = require("@tailwindcss/oxide");
  const input = await readFile(join(here, "styles.css"), "utf8");
  const compiler = await compile(input, { base: here, onDependency: () => {} });
  const root = compiler.root === "none" ? [] : compiler.root === null ? [{ base: here, pattern: "**/*", negated: false }] : [{ ...compiler.root, negated: false }];
  const scanner = new Scanner({ sources: [...root, ...compiler.sources] });
  return compiler.build(scanner.scan());
}
