// A PostgreSQL server for tests outside Node (the Rust ledger tests):
// `node __test__/support/postgres-proc.mjs` prints one line `POSTGRES {"port":..,"password":..}`
// once the server accepts connections, then serves until its stdin closes (the test ended, or
// died), then stops the server and removes its data. A line `stop` or `start` on stdin stops or
// starts the server (its data kept), answered by a line `stopped` or `started`.
import readline from "node:readline";
import { startPostgres } from "../../scripts/embedded-postgres.mjs";

const pg = await startPostgres();
process.stdout.write(`POSTGRES ${JSON.stringify({ port: pg.port, password: pg.password, user: pg.user })}\n`);
let done = false;
async function finish() {
  if (done) return;
  done = true;
  await pg.destroy().catch(() => {});
  process.exit(0);
}
const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  if (line.trim() === "stop") {
    await pg.stop();
    process.stdout.write("stopped\n");
  } else if (line.trim() === "start") {
    await pg.start();
    process.stdout.write("started\n");
  }
});
lines.on("close", finish);
process.on("SIGTERM", finish);
process.on("SIGINT", finish);
