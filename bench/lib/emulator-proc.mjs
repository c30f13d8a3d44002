// The emulator in its own process for the benchmark: `node bench/lib/emulator-proc.mjs '<options JSON>'`.
// Prints one line `EMULATOR {"url":...,"token":...,"pid":...}` once it listens, then serves until
// SIGTERM/SIGINT or until its parent closes stdin. Loopback only (the emulator binds 127.0.0.1).
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { startEmulator } = require("appkit-jobs/emulator");

const options = JSON.parse(process.argv[2] ?? "{}");
const emu = await startEmulator({ port: 0, ...options });
process.stdout.write(`EMULATOR ${JSON.stringify({ url: emu.url, token: emu.token, pid: process.pid })}\n`);

// The server does not hold the event loop open by itself.
const keepAlive = setInterval(() => {}, 1 << 30);
let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  clearInterval(keepAlive);
  await emu.stop();
  process.exit(0);
}
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
