// Requests and the SSE reader of appkit-jobs/react, over fetch. Not connectSSE: that one hides
// a 400's body, keeps a fixed budget of three reconnects for the whole stream and, aborted
// during its back-off, still fetches once more. Here an HTTP error answers with the server's
// `{ error, code }`, the budget starts again after every event, and an abort ends everything
// at once (the fetch, the read, the back-off timer).

/** `{ code, message, status?, fields? }` from a failed response (`{ error, code }` bodies). */
async function errorFromResponse(response) {
  let body = null;
  try {
    body = JSON.parse(await response.text());
  } catch {
    // not JSON: the status text stands for it
  }
  const message = typeof body?.error === "string" ? body.error : response.statusText || `Request failed (${response.status})`;
  const code = typeof body?.code === "string" ? body.code : codeForStatus(response.status);
  return { code, message, status: response.status };
}

function codeForStatus(status) {
  if (status === 400) return "INVALID_REQUEST";
  if (status === 401) return "UNAUTHENTICATED";
  if (status === 403) return "PERMISSION_DENIED";
  if (status === 404) return "NOT_FOUND";
  if (status === 429) return "RATE_LIMITED";
  return status >= 500 ? "UPSTREAM_ERROR" : "HTTP_ERROR";
}

/** A JobError for a request that got no answer. */
export function networkError(err) {
  return { code: "NETWORK_ERROR", message: err?.message ? `Connection failed: ${err.message}` : "Connection failed" };
}

/** Whether `err` is a JobError (as thrown by this module) rather than a fetch failure. */
export function isJobError(err) {
  return err != null && typeof err === "object" && typeof err.code === "string" && typeof err.message === "string" && !(err instanceof Error);
}

/**
 * One JSON request: the parsed body (null for 204), or throws a JobError. An abort rethrows
 * the AbortError, so callers can tell it apart.
 */
export async function requestJson(fetchImpl, url, { method = "GET", body, signal, headers } = {}) {
  let response;
  try {
    response = await fetchImpl(url, {
      method,
      signal,
      headers: { Accept: "application/json", ...(body !== undefined ? { "Content-Type": "application/json" } : {}), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (signal?.aborted) throw err;
    throw networkError(err);
  }
  if (!response.ok) throw await errorFromResponse(response);
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Waits `ms`, or less when `signal` aborts (the timer is cleared then). */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Splits SSE text into events; calls `onEvent({ id, event, data })`; returns the unparsed rest. */
export function parseEvents(buffer, onEvent) {
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop() ?? "";
  for (const block of blocks) {
    let id = null;
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue; // comments: heartbeats
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) onEvent({ id, event, data: data.join("\n") });
  }
  return rest;
}

const MAX_BUFFER = 8 * 1024 * 1024;

/**
 * Follows one run or repair stream to its end. `open(lastEventId, signal)` makes the request
 * (the same one again with `Last-Event-ID` on a resume). `onEvent({ id, event, data })` gets
 * each event with `data` parsed, and returns true for the stream's last one (a terminal state,
 * an error event): reading stops there.
 *
 * A cut connection, or an end before the last event, is resumed from the last event id after
 * a back-off; `maxRetries` counts failures since the last event, so a long run survives any
 * number of cuts. Resolves `"ended"` after the last event, `"aborted"` when `signal` aborts;
 * throws a JobError for an HTTP error (before anything was resumed, or a 4xx on a resume), or
 * for a drop with nothing to resume by (before the opening event), or when the budget is spent.
 */
export async function followStream({ open, signal, onEvent, onRetry, maxRetries = 5, retryDelayMs = 500, maxRetryDelayMs = 8000 }) {
  let lastEventId = null;
  let failures = 0;
  const backOff = async (err) => {
    if (lastEventId === null) throw isJobError(err) ? err : networkError(err);
    failures += 1;
    if (failures > maxRetries) throw isJobError(err) ? err : networkError(err);
    onRetry?.(failures, err);
    const base = Math.min(maxRetryDelayMs, retryDelayMs * 2 ** (failures - 1));
    await sleep(base * (1 + Math.random() * 0.2), signal);
  };
  for (;;) {
    if (signal.aborted) return "aborted";
    let response;
    try {
      response = await open(lastEventId, signal);
    } catch (err) {
      if (signal.aborted) return "aborted";
      await backOff(err);
      continue;
    }
    if (!response.ok) {
      const error = await errorFromResponse(response).catch(() => networkError(null));
      if (signal.aborted) return "aborted";
      // A 5xx on a resume is an instance going away (a deploy): try again. Anything else is final.
      if (lastEventId !== null && response.status >= 500) {
        await backOff(error);
        continue;
      }
      throw error;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let last = false;
    try {
      while (!last) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        if (buffer.length > MAX_BUFFER) throw new Error("SSE event too large");
        buffer = parseEvents(buffer, (ev) => {
          if (last) return;
          let data;
          try {
            data = JSON.parse(ev.data);
          } catch {
            return;
          }
          failures = 0;
          if (ev.id) lastEventId = ev.id;
          if (onEvent({ id: ev.id, event: ev.event, data })) last = true;
        });
      }
      if (last) {
        reader.cancel().catch(() => {});
        return "ended";
      }
      // The server ends a stream only after its last event: an early end is a cut.
      throw new Error("the stream ended early");
    } catch (err) {
      reader.cancel().catch(() => {});
      if (signal.aborted) return "aborted";
      if (last) return "ended";
      await backOff(err);
    }
  }
}
