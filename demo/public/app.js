// The demo page: plain browser JavaScript, no build step. It reads the jobs' client config,
// builds a form per job from its params JSON Schema, starts runs with
// POST /api/jobs/:key/run?stream=true and follows them over SSE (resuming with Last-Event-ID
// when the connection drops), lists recent runs, cancels active ones and repairs failed ones
// (POST /api/jobs/:key/runs/:id/repair?stream=true, followed live the same way).
import { isRepairable, isTerminal, lifeCycleState, resultOf, startedByLabel, startedByTitle, timelineModel } from "/shared/model.mjs";
import { parseEvents as parseSse } from "/shared/stream.mjs";

const API = "/api/jobs";
const LIFECYCLE = ["QUEUED", "PENDING", "RUNNING", "TERMINATING", "TERMINATED"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

/** An error message from a failed response: the JSON `error` field, else the status text. */
async function errorMessage(response) {
  let text = "";
  try {
    text = await response.text();
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return body.error;
  } catch {
    // not JSON
  }
  return response.statusText || `Request failed (${response.status})`;
}

// ---------------------------------------------------------------- who you are

// Databricks Apps forwards the signed-in person on every request (X-Forwarded-Email, ...); the
// demo has no such proxy, so the visitor names themselves and every request carries it. The
// server records it as who started a run: display data, never a permission.
const WHO_KEY = "appkit-jobs-demo-who";
const whoInput = document.getElementById("who");
whoInput.value = localStorage.getItem(WHO_KEY) ?? "";
whoInput.addEventListener("change", () => {
  localStorage.setItem(WHO_KEY, whoInput.value.trim());
  for (const view of views) view.refreshRuns();
});
const views = [];

function whoHeaders() {
  const who = whoInput.value.trim();
  if (!who) return {};
  return who.includes("@")
    ? { "X-Forwarded-Email": who, "X-Forwarded-Preferred-Username": who.split("@")[0] }
    : { "X-Forwarded-Preferred-Username": who };
}

const pageFetch = window.fetch.bind(window);
window.fetch = (url, init = {}) => pageFetch(url, { ...init, headers: { ...whoHeaders(), ...(init.headers ?? {}) } });

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`${API}${path}`, init);
  if (!response.ok) throw new Error(await errorMessage(response));
  if (response.status === 204) return null;
  return response.json();
}

// ---------------------------------------------------------------- forms from JSON Schema

function labelFor(name, prop) {
  return prop.title || name;
}

function buildField(name, prop, required) {
  const id = `f-${Math.random().toString(36).slice(2)}`;
  const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
  const hint = prop.description ? el("span", { class: "hint", text: ` ${prop.description}` }) : null;
  const label = el("label", { for: id, text: labelFor(name, prop) + (required ? " *" : "") }, hint);
  let input;
  if (Array.isArray(prop.enum)) {
    input = el("select", { id, name });
    if (!required) input.append(el("option", { value: "", text: "—" }));
    for (const option of prop.enum) input.append(el("option", { value: String(option), text: String(option) }));
    if (prop.default !== undefined) input.value = String(prop.default);
  } else if (type === "boolean") {
    input = el("input", { id, name, type: "checkbox" });
    input.checked = prop.default === true;
    const field = el("div", { class: "field checkbox", "data-field": name }, input, label);
    return { node: field, read: () => input.checked };
  } else if (type === "number" || type === "integer") {
    input = el("input", { id, name, type: "number", step: type === "integer" ? "1" : "any" });
    if (prop.minimum !== undefined) input.min = prop.minimum;
    if (prop.maximum !== undefined && Math.abs(prop.maximum) < 1e15) input.max = prop.maximum;
    if (prop.default !== undefined) input.value = String(prop.default);
  } else {
    input = el("input", { id, name, type: prop.format === "date" ? "date" : "text" });
    if (prop.default !== undefined) input.value = String(prop.default);
    if (prop.examples?.[0] !== undefined) input.placeholder = String(prop.examples[0]);
  }
  const field = el("div", { class: "field", "data-field": name }, label, input);
  const read = () => {
    const raw = input.value;
    if (raw === "") return undefined;
    if (type === "number" || type === "integer") {
      const n = Number(raw);
      return Number.isNaN(n) ? raw : n;
    }
    if (Array.isArray(prop.enum) && typeof prop.enum[0] === "number") return Number(raw);
    return raw;
  };
  return { node: field, read };
}

/** Fills `container` with inputs for the schema's properties; returns a reader of the params. */
function buildForm(container, schema) {
  const props = schema && typeof schema === "object" ? schema.properties ?? {} : {};
  const required = new Set(Array.isArray(schema?.required) ? schema.required : []);
  const readers = [];
  for (const [name, prop] of Object.entries(props)) {
    const { node, read } = buildField(name, prop ?? {}, required.has(name));
    container.append(node);
    readers.push([name, read]);
  }
  return {
    count: readers.length,
    read() {
      const params = {};
      for (const [name, read] of readers) {
        const value = read();
        if (value !== undefined) params[name] = value;
      }
      return params;
    },
  };
}

// ---------------------------------------------------------------- SSE over fetch

/** Opens a streaming POST, repeated with Last-Event-ID when resuming (see followStream). */
function streamPost(url, body) {
  return (lastEventId) =>
    fetch(url, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        ...(lastEventId ? { "Last-Event-ID": lastEventId } : {}),
      },
      body,
    });
}

/**
 * Follows a stream. `request(lastEventId)` opens it; on a dropped connection it is reopened
 * with the last event id (the server resumes the same run and never starts another).
 */
async function followStream(request, handlers, maxRetries = 3) {
  let lastEventId = null;
  let attempt = 0;
  for (;;) {
    let response;
    try {
      response = await request(lastEventId);
    } catch (err) {
      if (attempt++ >= maxRetries) throw err;
      await new Promise((r) => setTimeout(r, 500 * attempt));
      continue;
    }
    if (!response.ok) throw new Error(await errorMessage(response));
    handlers.onConnect?.(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        buffer = parseSse(buffer + decoder.decode(value, { stream: true }), (ev) => {
          if (ev.id) lastEventId = ev.id;
          handlers.onEvent(ev);
        });
      }
    } catch (err) {
      if (attempt++ >= maxRetries || lastEventId === null) throw err;
      handlers.onReconnect?.();
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
}

// ---------------------------------------------------------------- the run's timeline

/**
 * The run as a live timeline: one bar per task in graph order, placed by its own start and end
 * on the run's time axis, growing while it runs, coloured by state; above it an overall progress
 * bar with the expected end. Stable test ids: run-timeline, run-progress, run-progress-fill,
 * run-eta, task-bar (data-task, data-state, data-result), timeline-repair.
 */
class Timeline {
  constructor(root, onRepair) {
    this.root = root;
    this.fill = root.querySelector('[data-testid="run-progress-fill"]');
    this.bar = root.querySelector('[data-testid="run-progress"]');
    this.eta = root.querySelector('[data-testid="run-eta"]');
    this.list = root.querySelector(".tl-tasks");
    this.repairBtn = root.querySelector('[data-testid="timeline-repair"]');
    this.repairBtn.addEventListener("click", () => onRepair(this.run?.run_id));
    this.timer = null;
    this.bars = new Map();
  }

  reset() {
    this.stop();
    this.run = null;
    this.root.hidden = true;
    this.list.replaceChildren();
    this.bars.clear();
    this.shown = 0;
    this.repairBtn.hidden = true;
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  /** A new update: `{ status, run, progress }`. */
  update(update) {
    if (!update.run || !update.progress) return;
    this.run = update.run;
    this.progress = update.progress;
    this.receivedAt = performance.now();
    this.terminal = isTerminal(update.run);
    this.root.hidden = false;
    this.render();
    if (this.terminal) this.stop();
    else this.timer ??= setInterval(() => this.render(), 250);
  }

  render() {
    const m = timelineModel({ run: this.run, progress: this.progress, receivedAt: this.receivedAt, now: performance.now(), floor: this.shown ?? 0 });
    this.shown = m.fraction;
    this.fill.style.width = `${(m.fraction * 100).toFixed(1)}%`;
    this.bar.dataset.fraction = String(m.rawFraction);
    this.bar.setAttribute("aria-valuenow", String(Math.round(m.fraction * 100)));
    this.eta.textContent = m.eta;
    this.eta.dataset.expected = m.expectedMs == null ? "" : String(m.expectedMs);

    const rows = [];
    for (const b of m.bars) {
      let row = this.bars.get(b.key);
      if (!row) {
        const track = el("div", { class: "tl-track" }, el("div", { class: "tl-bar" }));
        row = el("li", { class: "tl-task", "data-testid": "task-bar", "data-task": b.key }, el("span", { class: "tl-name", text: b.key }), track, el("span", { class: "tl-state" }));
        this.bars.set(b.key, row);
      }
      row.dataset.state = b.state;
      row.dataset.result = b.result;
      // A task this repair does not run again keeps its old bar, faded, before the axis.
      row.classList.toggle("kept", b.kept);
      const bar = row.querySelector(".tl-bar");
      bar.style.left = `${b.left.toFixed(2)}%`;
      bar.style.width = `${b.width.toFixed(2)}%`;
      row.querySelector(".tl-state").textContent = b.label;
      rows.push(row);
    }
    this.list.replaceChildren(...rows);
    this.repairBtn.hidden = !m.repairable;
  }
}

// ---------------------------------------------------------------- one job card

function formatTime(ms) {
  if (!ms) return "";
  return new Date(ms).toLocaleTimeString();
}

function formatDuration(run) {
  const start = run.start_time;
  if (!start) return "";
  const end = run.end_time || (isTerminal(run) ? start : Date.now());
  const seconds = Math.max(0, Math.round((end - start) / 1000));
  return seconds < 60 ? `${seconds}s` : `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
}

class JobCard {
  constructor(key, config) {
    this.key = key;
    this.config = config;
    this.activeRunId = null;
    const node = document.getElementById("job-template").content.firstElementChild.cloneNode(true);
    node.dataset.job = key;
    this.node = node;
    node.querySelector(".job-key").textContent = key;
    node.querySelector(".task-type").textContent = config.taskType ? `task: ${config.taskType}` : "no task type";
    this.form = buildForm(node.querySelector(".fields"), config.params);
    const acceptsParams = this.form.count > 0;
    node.querySelector(".no-params").hidden = acceptsParams || Boolean(config.taskType);
    if (!acceptsParams && config.taskType) {
      node.querySelector(".no-params").hidden = false;
      node.querySelector(".no-params").textContent = "No params schema: the run starts with the job's defaults.";
    }
    this.runBtn = node.querySelector(".run-btn");
    this.cancelBtn = node.querySelector(".cancel-btn");
    this.repairBtn = node.querySelector(".repair-btn");
    this.lastEnded = null;
    this.message = node.querySelector(".message");
    this.progress = node.querySelector(".progress");
    this.statusEl = node.querySelector(".status");
    this.steps = node.querySelector(".steps");
    this.resultEl = node.querySelector(".result");
    this.timeline = new Timeline(node.querySelector('[data-testid="run-timeline"]'), (runId) => this.repair(runId));
    this.runLink = node.querySelector(".run-link");
    this.servedBy = node.querySelector(".served-by");
    this.tbody = node.querySelector(".runs tbody");
    this.mineOnly = node.querySelector(".mine-only");
    this.mineOnly.addEventListener("change", () => this.refreshRuns());
    views.push(this);
    node.querySelector(".run-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.run();
    });
    this.cancelBtn.addEventListener("click", () => this.cancel(this.activeRunId));
    this.repairBtn.addEventListener("click", () => this.repair(this.lastEnded));
  }

  say(text, isError = false) {
    this.message.hidden = !text;
    this.message.textContent = text ?? "";
    this.message.classList.toggle("error", isError);
  }

  resetProgress() {
    this.progress.hidden = false;
    this.steps.replaceChildren();
    this.resultEl.hidden = true;
    this.resultEl.className = "result";
    this.statusEl.textContent = "STARTING";
    this.statusEl.dataset.status = "";
    this.timeline.reset();
    this.runLink.textContent = "";
    this.runLink.removeAttribute("href");
  }

  showUpdate(update) {
    const run = update.run ?? {};
    const status = update.status ?? lifeCycleState(run) ?? "UNKNOWN";
    this.progress.hidden = false;
    if (run.run_id && !isTerminal(run)) this.setActive(run.run_id);
    this.runLink.textContent = run.run_id ? `#${run.run_id}` : "";
    if (run.run_page_url) this.runLink.href = run.run_page_url;
    this.statusEl.textContent = status;
    this.statusEl.dataset.status = status;
    this.timeline.update(update);
    const last = this.steps.lastElementChild;
    if (!last || last.dataset.state !== status) {
      if (last) {
        last.classList.remove("current");
        last.classList.add("done");
      }
      this.steps.append(el("li", { class: "current", "data-state": status, text: status }));
    }
    if (isTerminal(run)) {
      const { result, message } = resultOf(run);
      const good = result === "SUCCESS";
      const cls = good ? "ok" : result === "CANCELED" || result === "SKIPPED" ? "warn" : "bad";
      this.resultEl.hidden = false;
      this.resultEl.className = `result ${cls}`;
      this.resultEl.dataset.result = result ?? "";
      this.resultEl.replaceChildren(
        `Result: ${result ?? status}`,
        message ? ` — ${message}` : "",
        run.run_page_url ? " · " : "",
        run.run_page_url ? el("a", { href: run.run_page_url, target: "_blank", rel: "noopener", class: "result-link", text: "open run page" }) : "",
      );
      this.steps.lastElementChild?.classList.replace("current", "done");
      this.setActive(null);
      this.lastEnded = isRepairable(run) ? run.run_id : null;
      this.repairBtn.hidden = this.lastEnded == null;
    }
  }

  setActive(runId) {
    this.activeRunId = runId;
    this.cancelBtn.hidden = runId == null;
    this.cancelBtn.disabled = false;
    this.runBtn.disabled = runId != null;
    if (runId != null) this.repairBtn.hidden = true;
  }

  /** Reads one SSE stream to its end (a terminal state or an error event). */
  async follow(request) {
    await followStream(request, {
      onEvent: (ev) => {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (ev.event === "error") {
          this.say(`Run failed: ${data.error ?? "stream error"}`, true);
          this.setActive(null);
          return;
        }
        // The opening event: accepted, the write is on its way; no state yet.
        if (data.accepted) return;
        this.showUpdate(data);
        this.refreshRuns();
      },
      onReconnect: () => this.say("Connection lost, resuming the same run…"),
      // The fleet demo says which instance serves the stream (its proxy picks one per request).
      onConnect: (response) => {
        const instance = response.headers.get("x-demo-instance");
        this.servedBy.textContent = instance ? `via instance ${instance}` : "";
      },
    });
  }

  async run() {
    this.say("");
    this.repairBtn.hidden = true;
    this.resetProgress();
    this.runBtn.disabled = true;
    const params = this.form.count > 0 ? this.form.read() : undefined;
    const body = JSON.stringify(params === undefined ? {} : { params });
    try {
      await this.follow(streamPost(`${API}/${encodeURIComponent(this.key)}/run?stream=true`, body));
      if (this.message.textContent.startsWith("Connection lost")) this.say("");
    } catch (err) {
      this.progress.hidden = this.steps.childElementCount === 0;
      this.say(err.message, true);
    } finally {
      if (this.activeRunId == null) this.runBtn.disabled = false;
      this.refreshRuns();
    }
  }

  /** Re-runs the failed tasks of an ended run and follows it live to its new end. */
  async repair(runId) {
    if (runId == null) return;
    this.repairBtn.hidden = true;
    this.resetProgress();
    this.runBtn.disabled = true;
    this.say(`Repairing run #${runId}: running its failed tasks again…`);
    const body = JSON.stringify({ rerunAllFailedTasks: true });
    try {
      await this.follow(streamPost(`${API}/${encodeURIComponent(this.key)}/runs/${runId}/repair?stream=true`, body));
      if (!this.message.classList.contains("error")) this.say(`Run #${runId} repaired.`);
    } catch (err) {
      this.progress.hidden = this.steps.childElementCount === 0;
      this.say(`Could not repair run #${runId}: ${err.message}`, true);
    } finally {
      if (this.activeRunId == null) this.runBtn.disabled = false;
      this.refreshRuns();
    }
  }

  /** Re-attaches to a run in progress (after a page reload). */
  async reattach(runId) {
    this.resetProgress();
    this.setActive(runId);
    try {
      await this.follow((lastEventId) =>
        fetch(`${API}/${encodeURIComponent(this.key)}/runs/${runId}/stream`, {
          headers: { Accept: "text/event-stream", ...(lastEventId ? { "Last-Event-ID": lastEventId } : {}) },
        }),
      );
    } catch (err) {
      this.say(err.message, true);
    } finally {
      if (this.activeRunId === runId) this.setActive(null);
      this.runBtn.disabled = false;
    }
  }

  async cancel(runId) {
    if (runId == null) return;
    this.cancelBtn.disabled = true;
    try {
      await api("DELETE", `/${encodeURIComponent(this.key)}/runs/${runId}`);
      this.say(`Cancel requested for run #${runId}.`);
    } catch (err) {
      this.say(`Could not cancel run #${runId}: ${err.message}`, true);
      this.cancelBtn.disabled = false;
    }
    this.refreshRuns();
  }

  async refreshRuns() {
    if (this.refreshing) {
      this.refreshAgain = true;
      return;
    }
    this.refreshing = true;
    try {
      const mine = this.mineOnly.checked ? "&startedBy=me" : "";
      const { runs } = await api("GET", `/${encodeURIComponent(this.key)}/runs?limit=8${mine}`);
      const rows = (runs ?? []).map((run) => {
        const { result } = resultOf(run);
        const state = lifeCycleState(run) ?? "";
        const link = run.run_page_url
          ? el("a", { href: run.run_page_url, target: "_blank", rel: "noopener", text: `#${run.run_id}` })
          : `#${run.run_id}`;
        let action = "";
        if (!isTerminal(run)) {
          action = el("button", { type: "button", class: "row-cancel", "data-run-id": run.run_id, text: "Cancel" });
          action.addEventListener("click", () => this.cancel(run.run_id));
        } else if (isRepairable(run)) {
          action = el("button", { type: "button", class: "row-repair", "data-run-id": run.run_id, text: "Repair" });
          action.addEventListener("click", () => this.repair(run.run_id));
        }
        return el(
          "tr",
          { "data-run-id": run.run_id, "data-state": state },
          el("td", {}, link),
          el("td", { class: "state", text: state }),
          el("td", { class: "result-cell", text: result ?? "" }),
          el("td", { text: formatTime(run.start_time) }),
          el("td", { class: "started-by", "data-testid": "run-started-by", title: startedByTitle(run), text: startedByLabel(run) }),
          el("td", { text: formatDuration(run) }),
          el("td", {}, action),
        );
      });
      if (rows.length === 0) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 7, text: "No runs yet." })));
      this.tbody.replaceChildren(...rows);
    } catch (err) {
      this.tbody.replaceChildren(el("tr", {}, el("td", { class: "empty error", colspan: 7, text: err.message })));
    } finally {
      this.refreshing = false;
      if (this.refreshAgain) {
        this.refreshAgain = false;
        this.refreshRuns();
      }
    }
  }
}

// ---------------------------------------------------------------- boot

async function main() {
  const modeEl = document.getElementById("mode");
  const globalError = document.getElementById("global-error");
  let config;
  try {
    const response = await fetch("/config.json");
    if (!response.ok) throw new Error(await errorMessage(response));
    config = await response.json();
  } catch (err) {
    globalError.hidden = false;
    globalError.textContent = `Could not load the jobs configuration: ${err.message}`;
    modeEl.textContent = "";
    return;
  }
  modeEl.textContent =
    config.mode === "emulator"
      ? "Running against the bundled Jobs API emulator (sample jobs, simulated runs)."
      : `Running against the workspace ${config.host ?? ""}.`;
  const container = document.getElementById("jobs");
  const keys = Object.keys(config.jobs ?? {});
  if (keys.length === 0) {
    container.append(el("p", { class: "error", text: "No jobs configured: set DATABRICKS_JOB_<NAME>=<job id>." }));
    return;
  }
  const cards = keys.map((key) => new JobCard(key, config.jobs[key]));
  for (const card of cards) container.append(card.node);
  for (const card of cards) {
    card.refreshRuns();
    // A run still in progress (e.g. after a reload): follow it again.
    api("GET", `/${encodeURIComponent(card.key)}/status`)
      .then(({ run }) => {
        if (run && !isTerminal(run) && card.activeRunId == null) card.reattach(run.run_id);
      })
      .catch((err) => card.say(err.message, true));
  }
  setInterval(() => cards.forEach((c) => c.refreshRuns()), 4000);
  showFleet();
}

// ---------------------------------------------------------------- the fleet demo

/**
 * `npm run demo -- --instances 2` serves `/__demo/fleet`: the instances behind this page, which
 * one polls how many runs, the ledger's state, and Kill / Start for each. Nothing otherwise.
 */
async function showFleet() {
  const section = document.getElementById("fleet");
  const render = (instances) => {
    section.hidden = false;
    section.querySelector("tbody").replaceChildren(
      ...instances.map((it) => {
        const action = el("button", { type: "button", "data-testid": `fleet-${it.alive ? "kill" : "start"}-${it.n}`, text: it.alive ? "Kill (SIGKILL)" : "Start" });
        action.addEventListener("click", async () => {
          action.disabled = true;
          const res = await fetch(`/__demo/fleet/${it.n}/${it.alive ? "kill" : "start"}`, { method: "POST" });
          if (res.ok) render((await res.json()).instances);
        });
        const ledger = it.ledger ? `${it.ledger.store}${it.ledger.up ? "" : " (database away)"}` : "";
        return el(
          "tr",
          { "data-testid": "fleet-instance", "data-instance": it.n, "data-alive": String(it.alive) },
          el("td", { text: `#${it.n}` }),
          el("td", { text: it.pid ? String(it.pid) : "" }),
          el("td", { class: it.alive ? "" : "error", text: it.alive ? "running" : "killed" }),
          el("td", { text: it.alive ? String(it.runsWatched ?? "") : "" }),
          el("td", { text: ledger }),
          el("td", {}, action),
        );
      }),
    );
  };
  const refresh = async () => {
    try {
      const res = await fetch("/__demo/fleet");
      if (!res.ok) return false;
      render((await res.json()).instances);
      return true;
    } catch {
      return false;
    }
  };
  if (await refresh()) setInterval(refresh, 1500);
}

main();
