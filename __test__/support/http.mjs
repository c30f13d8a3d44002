// The HTTP side of the tests: a node:http server for the standalone routes, SSE parsing and
// reading, and a proxy that cuts a stream. Not a test file; everything it starts is closed
// when the test ends.
import http from "node:http";
import net from "node:net";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createJobsHandler } = require("appkit-jobs/http");

/** A node:http server on 127.0.0.1:0 serving `handler`; returns its base URL. Closed when `t` ends. */
export async function serve(t, handler) {
  const server = http.createServer((req, res) => handler(req, res));
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(
    () =>
      new Promise((resolve) => {
        handler.close?.();
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  );
  return `http://127.0.0.1:${server.address().port}`;
}

/** createJobsHandler + serve: `{ base, handler, plugin }`. */
export async function routes(t, config) {
  const handler = createJobsHandler(config);
  const base = await serve(t, handler);
  return { base, handler, plugin: handler.plugin };
}

/** Parses SSE text: `[{ id, event, data }]` (data JSON-parsed when it is JSON). */
export function sseEvents(text) {
  const events = [];
  for (const block of text.replace(/\r\n/g, "\n").split("\n\n")) {
    let id = null;
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":") || line === "") continue;
      if (line.startsWith("id: ")) id = line.slice(4);
      else if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    if (data.length === 0) continue;
    let parsed = data.join("\n");
    try {
      parsed = JSON.parse(parsed);
    } catch {
      // keep the text
    }
    events.push({ id, event, data: parsed });
  }
  return events;
}

/** The events that follow a run (updates and errors): the opening event of a stream left out. */
export function runEvents(events) {
  return events.filter((e) => e.data?.accepted === undefined);
}

/**
 * Opens an SSE response and reads it incrementally: `events()` are those seen so far,
 * `done` resolves to the full text when the server ends the response (or the reader is aborted).
 */
export async function openSse(url, init = {}) {
  const controller = new AbortController();
  const res = await fetch(url, { ...init, signal: controller.signal });
  let text = "";
  let cut = false;
  const decoder = new TextDecoder();
  const done = (async () => {
    try {
      for await (const chunk of res.body) text += decoder.decode(chunk, { stream: true });
    } catch {
      cut = true; // aborted by the test, or the connection was cut
    }
    return text;
  })();
  return {
    res,
    /** Whether the response stopped without a clean end (after `done`). */
    cut: () => cut,
    events: () => sseEvents(text),
    text: () => text,
    done,
    abort: () => controller.abort(),
  };
}

/**
 * A TCP proxy that cuts the first connection `ms` after the first SSE event (`event: message`)
 * passed through it, once. `cuts` counts the connections it cut; `connections` counts every
 * connection it took.
 */
export async function startTimedCutProxy(port, ms) {
  return proxyTo([port], { cutAfterFirstEventMs: ms });
}

/**
 * A load balancer in front of app instances: each new connection goes to the first of `ports`
 * that accepts it (an instance shutting down refuses new ones, so reconnects land elsewhere).
 * `state.routes` lists the index of the instance each connection reached.
 */
export async function startBalancer(ports) {
  return proxyTo(ports, {});
}

async function proxyTo(ports, { cutAfterFirstEventMs }) {
  const sockets = new Set();
  const state = { cuts: 0, connections: 0, routes: [], armed: cutAfterFirstEventMs !== undefined };
  const track = (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  };
  const server = net.createServer((client) => {
    track(client);
    state.connections++;
    client.pause();
    const attempt = (i) => {
      if (i >= ports.length) return client.destroy();
      const upstream = net.connect(ports[i], "127.0.0.1");
      upstream.once("error", () => (connected ? client.destroy() : attempt(i + 1)));
      let connected = false;
      upstream.once("connect", () => {
        connected = true;
        track(upstream);
        state.routes.push(i);
        client.on("error", () => upstream.destroy());
        upstream.on("error", () => client.destroy());
        client.pipe(upstream);
        client.resume();
        let cutting = false;
        upstream.on("data", (chunk) => {
          if (!client.destroyed) client.write(chunk);
          if (!state.armed || cutting || !chunk.toString("latin1").includes("event: message")) return;
          cutting = true;
          state.armed = false;
          setTimeout(() => {
            state.cuts++;
            client.destroy();
            upstream.destroy();
          }, cutAfterFirstEventMs);
        });
        let ended = false;
        upstream.on("end", () => {
          ended = true;
          client.end();
        });
        // An instance that cuts its connection (a reset, no end) cuts the client's too.
        upstream.on("close", () => ended || client.destroy());
      });
    };
    attempt(0);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    state,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * A TCP proxy to `port` on 127.0.0.1 that cuts every connection once its response has carried
 * `after` SSE events (`event: message`, default 1), `times` times in all (then it only
 * forwards; `state.armed = false` stops it early). The cut waits until the event was handed to
 * the client's socket, so each cut connection delivered its events. `state.cuts` counts them.
 */
export async function startRepeatingCutProxy(port, { after = 1, times = Infinity } = {}) {
  const sockets = new Set();
  // `times` may be raised later (state.times = state.cuts + 1: cut at the next event).
  const state = { cuts: 0, connections: 0, armed: true, times };
  const server = net.createServer((client) => {
    state.connections++;
    const upstream = net.connect(port, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    }
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.pipe(upstream);
    let events = 0;
    let cutting = false;
    upstream.on("data", (chunk) => {
      if (cutting || client.destroyed) return;
      const text = chunk.toString("latin1");
      events += text.split("event: message").length - 1;
      const cut = state.armed && state.cuts < state.times && events >= after;
      if (!cut) return void client.write(chunk);
      cutting = true;
      state.cuts++;
      client.write(chunk, () => {
        upstream.destroy();
        client.end();
        client.destroySoon?.();
      });
    });
    upstream.on("end", () => client.end());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    state,
    /** Stops accepting connections and drops the open ones: clients get ECONNREFUSED next. */
    refuse: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        if (server.listening) server.close(() => resolve());
        else resolve();
      }),
  };
}
