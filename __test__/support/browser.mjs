// Headless Chromium for the page tests (not a test file): the system's when there is one, else
// the build shipped in @sparticuz/chromium, launched with a throwaway profile.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

async function findChromium() {
  if (existsSync("/usr/bin/chromium")) return { executablePath: "/usr/bin/chromium", args: [] };
  const { default: bundled } = await import("@sparticuz/chromium");
  return { executablePath: await bundled.executablePath(), args: bundled.args };
}

/** A persistent Chromium context; `close()` ends it and removes its profile. */
export async function launchChromium({ viewport = { width: 1280, height: 1000 } } = {}) {
  const browser = await findChromium();
  const profileDir = mkdtempSync(join(tmpdir(), "appkit-jobs-chromium-"));
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: browser.executablePath,
    headless: true,
    viewport,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...browser.args,
    ],
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profileDir, { recursive: true, force: true });
    },
  };
}
