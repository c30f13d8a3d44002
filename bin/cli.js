#!/usr/bin/env node
"use strict";
// npx appkit-jobs emulator [--port N] [--jobs FILE] [--time-scale X]
//
// Starts the local Jobs API 2.2 emulator in the foreground and prints the environment to
// export so an app (or `npm run demo`) talks to it. Ctrl-C stops it.

const USAGE = `Usage: appkit-jobs emulator [--port N] [--jobs FILE] [--time-scale X]

  --port N         listen on 127.0.0.1:N (default: a free port)
  --jobs FILE      JSON file with the jobs to serve (an array, or { "jobs": [...] });
                   without it a few sample jobs are served
  --time-scale X   virtual milliseconds per real millisecond (default 1)
`;

function parseArgs(argv) {
  const [command, ...rest] = argv;
  if (command === "--help" || command === "-h" || command === "help") return { help: true };
  if (command !== "emulator") throw new Error(command ? `Unknown command "${command}"` : "Missing command");
  const options = {};
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    const [flag, inline] = arg.includes("=") ? arg.split(/=(.*)/s, 2) : [arg, undefined];
    const value = () => {
      const v = inline ?? rest[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--port": {
        const port = Number(value());
        if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error("--port must be 0-65535");
        options.port = port;
        break;
      }
      case "--jobs":
        options.jobsFile = require("node:path").resolve(value());
        break;
      case "--time-scale": {
        const scale = Number(value());
        if (!Number.isFinite(scale) || scale < 0) throw new Error("--time-scale must be a number >= 0");
        options.timeScale = scale;
        break;
      }
      case "--help":
      case "-h":
        return { help: true };
      default:
        throw new Error(`Unknown option "${arg}"`);
    }
  }
  return { options };
}

async function main() {
  let parsed;
  try {
    parsed = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (parsed.help) {
    process.stdout.write(USAGE);
    return;
  }
  const { startEmulator } = require("../lib/emulator.js");
  const emu = await startEmulator(parsed.options);
  const env = emu.env();
  const lines = [
    `Databricks Jobs API emulator listening on ${emu.url}`,
    "",
    "Jobs:",
    ...emu.jobs().map((j) => `  ${String(j.id).padStart(6)}  ${j.name} (${j.taskType}, ${j.taskCount} task${j.taskCount === 1 ? "" : "s"})`),
    "",
    "Export these to point an app at it:",
    ...Object.entries(env).map(([k, v]) => `export ${k}=${v}`),
    "",
    `OAuth M2M: DATABRICKS_CLIENT_ID=${emu.clientId} DATABRICKS_CLIENT_SECRET=${emu.clientSecret}`,
    `Control API: ${emu.url}/__emulator/ (requests, faults, reset, runs/<id>/state, time)`,
    "Press Ctrl-C to stop.",
  ];
  process.stdout.write(lines.join("\n") + "\n");
  // The server does not keep Node alive by itself: hold the process until a signal.
  const keepAlive = setInterval(() => {}, 1 << 30);
  const shutdown = async () => {
    clearInterval(keepAlive);
    await emu.stop();
    process.exit(0);
  };
  process.once("SIGINT", shutdown);
  process.once("SIGTERM", shutdown);
}

main().catch((err) => {
  process.stderr.write(`appkit-jobs: ${err.message}\n`);
  process.exitCode = 1;
});
