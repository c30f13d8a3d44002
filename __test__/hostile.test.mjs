// Hostile input over the HTTP routes: a seeded generator sends well over 1,000 requests with
// odd job keys and run ids, malformed/oversized/deeply nested JSON, wrong types, 10,000-key
// params, odd queries and headers. For every request: the server answers (no crash), never a
// 5xx, never echoes the hostile text it was sent, and an invalid request sends nothing
// upstream (the emulator's request log does not move).
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { z } from "zod";
import { API, at, emulator, patEnv } from "./support/emulator.mjs";
import { routes } from "./support/http.mjs";
import { rng } from "./support/util.mjs";

const SEED = Number(process.env.HOSTILE_SEED ?? 0x5eed);
const COUNT = Number(process.env.HOSTILE_COUNT ?? 1200);

/** Job keys nobody configured: each must give 404 without an upstream call. */
const ODD_KEYS = [
  "..",
  "../..",
  "..%2F..%2Fetc%2Fpasswd",
  "%2e%2e%2fsecret",
  "%00",
  "nul%00byte",
  "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
  "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
  "%E2%80%AEevil",
  "%F0%9F%92%A5",
  "%D0%BA%D0%BB%D1%8E%D1%87",
  "__proto__",
  "constructor",
  "toString",
  "hasOwnProperty",
  "ETL",
  "etl%20",
  "%20etl",
  "etl.",
  "e%25tl",
  "%",
  "%zz",
  "a".repeat(5_000),
  "${jndi:ldap://x}",
  "%7B%7B7*7%7D%7D",
  "'%20OR%201%3D1--",
  "1",
  "-1",
  "0x10",
];

/** Run ids the routes must refuse with 400 before any upstream call. */
const ODD_RUN_IDS = [
  "0",
  "-1",
  "-100000000001",
  "1.5",
  "1.0",
  "1e3",
  "1E3",
  "0x10",
  "0b101",
  "0o17",
  "+1",
  "%201",
  "1%20",
  "NaN",
  "Infinity",
  "-Infinity",
  "null",
  "undefined",
  "true",
  "9223372036854775808",
  "99999999999999999999999999999999",
  "9".repeat(400),
  "%D9%A1%D9%A2%D9%A3", // Arabic-Indic digits
  "%EF%BC%91", // fullwidth 1
  "1%00",
  "..",
  "%2e%2e",
  "..%2F1",
  "1%2F2",
  "%3Cscript%3E",
  "abc",
  "12a",
  "%E2%80%AE1",
  "[1]",
  "%7B%7D",
];

/** Strings whose echo in a response would be a reflection of hostile input. */
const ECHO_MARKERS = [
  "<script",
  "<img",
  "etc/passwd",
  "../",
  "\u202e",
  "\u0000",
  "${jndi",
  "{{7*7}}",
  "OR 1=1",
  "a".repeat(65), // keys are cut to 64 characters
  "zzzzzzzz-hostile-value",
  "\u0434\u043e\u043c", // a Cyrillic value
];

const HOSTILE_VALUES = [
  "<script>alert(1)</script>",
  "<img src=x onerror=alert(1)>",
  "../../etc/passwd",
  "\u202eevil",
  "nul\u0000byte",
  "${jndi:ldap://x}",
  "{{7*7}}",
  "' OR 1=1--",
  "zzzzzzzz-hostile-value",
  "\u0434\u043e\u043c",
  "a".repeat(20_000),
];

const CONFIG = {
  pollIntervalMs: 50,
  jobs: {
    // Zod, strict: the JS side validates.
    etl: { taskType: "notebook", params: z.object({ date: z.string().max(20), n: z.number().int().optional() }).strict() },
    // JSON Schema: the Rust side validates.
    sql: {
      taskType: "sql",
      params: {
        type: "object",
        properties: { limit: { type: "integer", minimum: 1 }, table: { type: "string", pattern: "^[a-z_]{1,30}$" } },
        additionalProperties: false,
      },
    },
    // No schema, no task type: accepts no params.
    plain: {},
    // No schema, a task type: at most 50 params.
    wheel: { taskType: "python_wheel" },
  },
};
const JOBS = { etl: 1001, sql: 1003, plain: 1002, wheel: 1002 };

function deep(depth, leaf = 1) {
  let text = JSON.stringify(leaf);
  for (let i = 0; i < depth; i++) text = i % 2 ? `[${text}]` : `{"k":${text}}`;
  return text;
}

function manyKeys(n, value = "v") {
  const o = {};
  for (let i = 0; i < n; i++) o[`k${i}`] = value;
  return o;
}

/**
 * One generated request: `{ method, path, headers, body, invalid, why }`. `invalid` requests
 * must be refused without any upstream call.
 */
function generate(r) {
  const key = () => r.pick(["etl", "sql", "plain", "wheel"]);
  const value = () => r.pick(HOSTILE_VALUES);
  const kind = r.int(14);
  switch (kind) {
    case 0: {
      const k = r.pick(ODD_KEYS);
      const [method, suffix] = r.pick([
        ["POST", "/run"],
        ["POST", "/run?stream=true"],
        ["GET", "/runs"],
        ["GET", "/status"],
        ["GET", "/runs/1"],
        ["DELETE", "/runs/1"],
        ["GET", "/runs/1/stream"],
      ]);
      return { method, path: `/${k}${suffix}`, invalid: true, why: "unknown key" };
    }
    case 1: {
      const id = r.pick(ODD_RUN_IDS);
      const [method, suffix] = r.pick([
        ["GET", ""],
        ["DELETE", ""],
        ["GET", "/stream"],
      ]);
      return { method, path: `/${key()}/runs/${id}${suffix}`, invalid: true, why: "bad run id" };
    }
    case 2: {
      const body = r.pick([
        "{",
        "}",
        "{'params': {}}",
        '{"params": {"date": "x"}',
        '{"params": {"date": "x"}}}',
        "undefined",
        "NaN",
        "\u0000",
        "\ufeff{}x",
        '{"params": {"date": "\\ud800"}}x',
        "[".repeat(5_000),
        '{"a":1,}',
        "<params><date>1</date></params>",
      ]);
      return { method: "POST", path: `/${key()}/run`, body, invalid: true, why: "malformed JSON" };
    }
    case 3: {
      const body = r.pick(["[]", '"params"', "42", "true", '[{"params":{}}]', "-1e999"]);
      return { method: "POST", path: `/${key()}/run`, body, invalid: true, why: "body not an object" };
    }
    case 4: {
      const params = r.pick([[], "x", 5, true, [value()], value()]);
      return { method: "POST", path: `/${key()}/run`, body: JSON.stringify({ params }), invalid: true, why: "params not an object" };
    }
    case 5: {
      // Schema violations, with hostile values and keys.
      const k = r.pick(["etl", "sql"]);
      const params =
        k === "etl"
          ? r.pick([{ date: 5 }, { date: value() }, { date: "2025", n: 1.5 }, { date: "2025", [value()]: 1 }, { n: value() }, {}])
          : r.pick([{ limit: value() }, { limit: -5 }, { table: value() }, { [value()]: 1 }, { limit: 1.5 }, { limit: "1" }]);
      // Values short enough for the schema's maxLength are not hostile to it: skip those.
      if (k === "etl" && typeof params.date === "string" && params.date.length <= 20 && Object.keys(params).length === 1) {
        params.n = value();
      }
      return { method: "POST", path: `/${k}/run`, body: JSON.stringify({ params }), invalid: true, why: "schema violation" };
    }
    case 6: {
      const k = key();
      const params = manyKeys(10_000, r.bool() ? "v" : value().slice(0, 30));
      return { method: "POST", path: `/${k}/run`, body: JSON.stringify({ params }), invalid: true, why: "10,000 params" };
    }
    case 7: {
      const depth = r.pick([200, 1_000, 20_000]);
      const body = `{"params":{"date":${deep(depth)}}}`;
      return { method: "POST", path: `/${key()}/run`, body, invalid: true, why: `nesting ${depth}` };
    }
    case 8: {
      // Params where the job takes none, or too many for a job without a schema.
      return r.bool()
        ? { method: "POST", path: "/plain/run", body: JSON.stringify({ params: { [value()]: value() } }), invalid: true, why: "no params accepted" }
        : { method: "POST", path: "/wheel/run", body: JSON.stringify({ params: manyKeys(51) }), invalid: true, why: "51 params, no schema" };
    }
    case 9: {
      const [method, suffix] = r.pick([
        ["PUT", "/run"],
        ["PATCH", "/runs/1"],
        ["OPTIONS", "/run"],
        ["GET", "/run"],
        ["DELETE", "/run"],
        ["POST", "/runs"],
        ["GET", ""],
        ["GET", "/"],
        ["GET", "/run/extra"],
        ["GET", "/runs/1/stream/x"],
        ["POST", "/cancel"],
        ["GET", "/runs/1/output"],
        ["TRACE", "/status"],
      ]);
      return { method, path: `/${key()}${suffix}`, invalid: true, why: "no such route" };
    }
    case 10: {
      // A bad Last-Event-ID on a stream re-attach.
      // (header values must be printable ASCII, or the HTTP client refuses to send them)
      const printable = value().slice(0, 40).replace(/[^\x20-\x7e]/g, "");
      const id = r.pick(["x", "1e3:1", "-1:1", "1:-1", ":", "1:", ":1", printable || "?", "0:0", "1:1:1", "99999999999999999999:1"]);
      return r.bool()
        ? { method: "POST", path: `/${key()}/run?stream=true`, headers: { "last-event-id": id }, invalid: true, why: "bad Last-Event-ID" }
        : { method: "GET", path: `/${key()}/runs/100000000001/stream`, headers: { "last-event-id": id }, invalid: true, why: "bad Last-Event-ID" };
    }
    case 11: {
      // Odd limits are clamped, not refused: these go upstream and succeed.
      const limit = r.pick(["-1", "0", "1e3", "0x10", "9".repeat(50), "%F0%9F%92%A5", "NaN", "1.9", "", "%3Cscript%3E", "101"]);
      return { method: "GET", path: `/${key()}/runs?limit=${limit}`, invalid: false, why: "odd limit" };
    }
    case 12: {
      // Valid requests in between: the server keeps serving them.
      return r.pick([
        { method: "GET", path: `/${key()}/status`, invalid: false, why: "valid status", expect: 200 },
        { method: "POST", path: "/etl/run", body: JSON.stringify({ params: { date: "2025-01-01" } }), invalid: false, why: "valid run", expect: 200 },
        { method: "POST", path: "/sql/run", body: JSON.stringify({ params: { limit: 3 } }), invalid: false, why: "valid run", expect: 200 },
        { method: "POST", path: "/plain/run", body: "", invalid: false, why: "valid run", expect: 200 },
      ]);
    }
    default: {
      // A run id of the right shape that does not exist (or is another job's): goes upstream, 4xx.
      const id = r.pick(["1", "123456789", "9223372036854775807", "100000000001"]);
      return { method: r.pick(["GET", "DELETE"]), path: `/${key()}/runs/${id}`, invalid: false, why: "unknown run" };
    }
  }
}

/** Raw HTTP (no URL normalisation), one request on a keep-alive agent. */
function send(agent, port, { method, path, headers = {}, body }) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(body, "utf8");
    const req = http.request(
      {
        agent,
        host: "127.0.0.1",
        port,
        method,
        path: `/api/jobs${path}`,
        headers: { ...(payload ? { "content-type": "application/json", "content-length": payload.length } : {}), ...headers },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

function checkNoEcho(req, res) {
  const lower = res.text.toLowerCase();
  for (const marker of ECHO_MARKERS) {
    assert.ok(!lower.includes(marker.toLowerCase()), `${req.why}: ${req.method} ${req.path.slice(0, 80)} echoed ${JSON.stringify(marker)}: ${res.text.slice(0, 300)}`);
  }
  // Error bodies carry our own short text only.
  if (res.status >= 400 && res.headers["content-type"]?.includes("json")) {
    const body = JSON.parse(res.text);
    assert.equal(typeof body.error, "string");
    assert.ok(body.error.length <= 1_200, `${req.why}: error text of ${body.error.length} chars`);
    assert.ok(!/[\u0000-\u001f\u2028\u2029\u202a-\u202e\u2066-\u2069]/.test(body.error), `${req.why}: control characters in ${JSON.stringify(body.error)}`);
  }
}

test(`${COUNT} generated hostile requests (seed ${SEED})`, { timeout: 300_000 }, async (t) => {
  const emu = await emulator(t);
  const { base, plugin } = await routes(t, { ...CONFIG, env: patEnv(emu, JOBS) });
  const port = Number(new URL(base).port);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.after(() => agent.destroy());
  const r = rng(SEED);
  const seen = {};
  const failures = [];
  for (let i = 0; i < COUNT; i++) {
    const req = generate(r);
    seen[req.why] = (seen[req.why] ?? 0) + 1;
    const before = emu.requests().length;
    const res = await send(agent, port, req);
    const label = `#${i} ${req.why}: ${req.method} ${req.path.slice(0, 120)}`;
    try {
      assert.ok(res.status < 500, `${label} -> ${res.status} ${res.text.slice(0, 300)}`);
      if (req.invalid) {
        assert.ok(res.status >= 400, `${label} -> ${res.status}`);
        assert.equal(emu.requests().length, before, `${label}: went upstream ${JSON.stringify(emu.requests().slice(before))}`);
      }
      if (req.expect) assert.equal(res.status, req.expect, `${label} -> ${res.text.slice(0, 300)}`);
      checkNoEcho(req, res);
    } catch (e) {
      failures.push(e.message.split("\n")[0].slice(0, 400));
    }
    if (emu.requests().length > 5_000) emu.clearRequests();
  }
  // All failures at once (deduplicated by kind), so one run shows every problem.
  assert.deepEqual([...new Set(failures.map((f) => f.replace(/^#\d+ /, "")))].slice(0, 30), []);
  // Every category was exercised.
  for (const why of ["unknown key", "bad run id", "malformed JSON", "10,000 params", "nesting 20000", "schema violation", "valid run"]) {
    assert.ok(seen[why] > 0, `no "${why}" request generated`);
  }
  assert.equal(plugin.activeStreamCount(), 0);
  t.diagnostic(JSON.stringify(seen));
});

test("oversized bodies get 413 and the server keeps serving", async (t) => {
  const emu = await emulator(t);
  const { base } = await routes(t, { ...CONFIG, env: patEnv(emu, JOBS) });
  const port = Number(new URL(base).port);
  const big = JSON.stringify({ params: { date: "x".repeat(2 * 1024 * 1024) } });
  for (const path of ["/etl/run", "/sql/run", "/plain/run", "/nope/run"]) {
    const res = await send(undefined, port, { method: "POST", path, body: big });
    assert.equal(res.status, 413, `${path}: ${res.text}`);
    assert.ok(!res.text.includes("xxxxxxxx"));
  }
  assert.deepEqual(emu.requests(), []);
  const ok = await send(undefined, port, { method: "GET", path: "/etl/status" });
  assert.equal(ok.status, 200);
});

test("params accepted by no schema are never sent: every refused run left run-now untouched", async (t) => {
  // The invariant of the fuzz, restated on run-now alone over many schema violations in a row.
  const emu = await emulator(t);
  const { base } = await routes(t, { ...CONFIG, env: patEnv(emu, JOBS) });
  const port = Number(new URL(base).port);
  const r = rng(SEED + 1);
  for (let i = 0; i < 200; i++) {
    const bad = r.pick([{ date: r.int(1000) }, { date: "x".repeat(21 + r.int(50)) }, { date: "ok", extra: r.int(9) }, { n: 1 }]);
    const res = await send(undefined, port, { method: "POST", path: "/etl/run", body: JSON.stringify({ params: bad }) });
    assert.equal(res.status, 400);
    assert.match(JSON.parse(res.text).error, /^Parameter validation failed for job "etl": /);
  }
  assert.deepEqual(at(emu, API.runNow), []);
  assert.equal(emu.runCount(), 0);
});
