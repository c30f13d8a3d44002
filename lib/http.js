"use strict";
// The /api/jobs routes without AppKit, for a plain node:http server or express.
//
//   const { createJobsHandler } = require("appkit-jobs/http");
//   const handler = createJobsHandler({ jobs: { etl: { taskType: "notebook" } } });
//
//   // node:http: requests under /api/jobs are served, anything else gets 404 (or your fallback)
//   http.createServer((req, res) => handler(req, res, () => { res.statusCode = 404; res.end(); })).listen(3000);
//
//   // express: mounted, or at the root (then only /api/jobs/* is handled, the rest goes to next())
//   app.use("/api/jobs", handler);
//   app.use(express.json(), handler);
//
// The handler also carries: `handler.jobs` (the `(jobKey) => JobHandle` callable),
// `handler.clientConfig()` (`{ jobs: { <key>: { params, taskType } } }` for a page),
// `handler.plugin` (the JobsPlugin instance) and `handler.close()` (a shutdown: cuts every open
// stream of an active run, so that its client resumes elsewhere; runs go on). Routes run as the service principal, exactly as under AppKit.

const { JobsPlugin } = require("./plugin.js");

const MAX_BODY_BYTES = 1024 * 1024;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        // Answer 413 (the handler does, with Connection: close) and drop the rest unread:
        // destroying the socket here would cut the client off before it gets the answer.
        reject(Object.assign(new Error("Payload Too Large"), { statusCode: 413 }));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function notFound(res) {
  if (res.headersSent) return;
  res.statusCode = 404;
  res.setHeader("Content-Type", "application/json; charset=utf-8");
  res.end(JSON.stringify({ error: "Not Found", code: "NOT_FOUND" }));
}

/**
 * @param {object | JobsPlugin} configOrPlugin the plugin config (`{ jobs, timeout, pollIntervalMs,
 *   heartbeatMs }`) or an existing JobsPlugin instance
 * @param {{ basePath?: string }} [options] where the routes live when the handler is not mounted
 *   by express (default "/api/jobs")
 * @returns {(req, res, next?) => Promise<void>}
 */
function createJobsHandler(configOrPlugin = {}, options = {}) {
  const plugin =
    configOrPlugin instanceof JobsPlugin ? configOrPlugin : new JobsPlugin({ ...configOrPlugin, name: "jobs" });
  const basePath = (options.basePath ?? "/api/jobs").replace(/\/+$/, "");

  async function handler(req, res, next) {
    const url = new URL(req.url ?? "/", "http://localhost");
    let path;
    if (typeof req.baseUrl === "string" && req.baseUrl !== "") {
      path = url.pathname; // express mounted the handler: req.url is already relative
    } else if (url.pathname === basePath || url.pathname.startsWith(`${basePath}/`)) {
      path = url.pathname.slice(basePath.length) || "/";
    } else {
      return next ? next() : notFound(res);
    }
    try {
      let body = req.body;
      if (body === undefined && req.method !== "GET" && req.method !== "HEAD" && !req.readableEnded) {
        body = await readBody(req);
      }
      await plugin.handleRequest({ method: req.method, url: req.url, headers: req.headers, body }, res, { path });
    } catch (err) {
      if (res.headersSent) {
        if (!res.writableEnded) res.end();
        return;
      }
      const status = err && err.statusCode === 413 ? 413 : 500;
      res.statusCode = status;
      res.setHeader("Content-Type", "application/json; charset=utf-8");
      if (status === 413) res.setHeader("Connection", "close");
      const [error, code] = status === 413 ? ["Payload Too Large", "PAYLOAD_TOO_LARGE"] : ["Internal Server Error", "INTERNAL_ERROR"];
      res.end(JSON.stringify({ error, code, plugin: plugin.name }));
    }
  }

  handler.plugin = plugin;
  handler.jobs = plugin.exports();
  handler.clientConfig = () => plugin.clientConfig();
  handler.loadClientConfig = () => plugin.loadClientConfig();
  handler.close = () => plugin.abortActiveOperations();
  return handler;
}

module.exports = { createJobsHandler };
