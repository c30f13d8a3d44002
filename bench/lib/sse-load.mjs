// The HTTP side of the SSE scenario, run in the orchestrator (so its CPU is not the app's):
// `count` concurrent `POST /api/jobs/<key>/run?stream=true`, each read to its end.
import http from "node:http";

/**
 * Opens `count` streamed runs against 127.0.0.1:`port` at once and reads each to its end.
 * Resolves `{ ok, failed, events, terminal, wallMs, firstError }`; every stream still open after
 * `timeoutMs` is destroyed and counted as failed.
 */
export async function sseLoad({ port, jobKey, count, timeoutMs, record = false }) {
  // With `record`: each stream's chunks as received, `[ms since its request, text]`, for the
  // floor to replay at the same pace.
  const scripts = [];
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const sockets = new Set();
  let ok = 0;
  let failed = 0;
  let events = 0;
  let terminal = 0;
  let firstError;
  const t0 = Date.now();
  const one = () =>
    new Promise((resolve) => {
      const body = "{}";
      const req = http.request(
        {
          host: "127.0.0.1",
          port,
          path: `/api/jobs/${encodeURIComponent(jobKey)}/run?stream=true`,
          method: "POST",
          agent,
          headers: { "content-type": "application/json", "content-length": body.length, accept: "text/event-stream" },
        },
        (res) => {
          let text = "";
          const t0 = performance.now();
          const script = record ? [] : null;
          if (script) scripts.push(script);
          res.setEncoding("utf8");
          res.on("data", (c) => {
            text += c;
            script?.push([Math.round(performance.now() - t0), c]);
          });
          res.on("end", () => {
            const data = text.split("\n").filter((l) => l.startsWith("data:"));
            events += data.length;
            const sawTerminal = /TERMINATED|SKIPPED|INTERNAL_ERROR/.test(data[data.length - 1] ?? "");
            if (res.statusCode === 200 && sawTerminal) {
              ok++;
              terminal++;
            } else {
              failed++;
              firstError ??= `status ${res.statusCode}, last event ${String(data[data.length - 1] ?? "none").slice(0, 160)}`;
            }
            resolve();
          });
          res.on("error", (err) => {
            failed++;
            firstError ??= err.message;
            resolve();
          });
        },
      );
      req.on("socket", (s) => {
        sockets.add(s);
        s.once("close", () => sockets.delete(s));
      });
      req.on("error", (err) => {
        failed++;
        firstError ??= err.message;
        resolve();
      });
      req.end(body);
    });
  const all = Promise.all(Array.from({ length: count }, one));
  let timer;
  const timedOut = await Promise.race([
    all.then(() => false),
    new Promise((r) => {
      timer = setTimeout(() => r(true), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    for (const s of sockets) s.destroy();
    await all;
    firstError ??= `timed out after ${timeoutMs} ms`;
  }
  agent.destroy();
  return { ok, failed, events, terminal, wallMs: Date.now() - t0, firstError, scripts: record ? scripts : undefined };
}
